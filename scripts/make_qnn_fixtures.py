#!/usr/bin/env python3
"""Makes the fixtures of ferrox-nn's quantized layers from real mlx (CPU).

Writes crates/ferrox-nn/tests/fixtures/quantized_layers.safetensors, which
crates/ferrox-nn/tests/quantized.rs replays. Deterministic (seeded).

For each case `{tag}`:
* linear: `{tag}.dense.weight` / `{tag}.dense.bias` (an nn.Linear), `{tag}.q.*` the parameters
  of nn.QuantizedLinear.from_linear(...) under MLX's names (weight, scales, biases, bias),
  `{tag}.x` an input and `{tag}.y` the quantized layer's output.
* embedding: `{tag}.dense.weight`, `{tag}.q.*` of nn.QuantizedEmbedding.from_embedding(...),
  `{tag}.ids` / `{tag}.y` a lookup, `{tag}.x` / `{tag}.lin` its as_linear product.
* `quantize.*`: a small model after nn.quantize with a class predicate (one layer skipped, one
  with its own bits): `quantize.dense.*` before, `quantize.q.*` after (every parameter name
  MLX gives the quantized model), and `quantize.x` / `quantize.y` its output.

Usage: python3 scripts/make_qnn_fixtures.py   (needs `pip install "mlx[cpu]"`)
"""

import os

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "crates", "ferrox-nn", "tests", "fixtures", "quantized_layers.safetensors")

LINEAR = [
    # tag, group_size, bits, mode, dtype, bias
    ("lin_a4g64", 64, 4, "affine", mx.float32, True),
    ("lin_a3g32", 32, 3, "affine", mx.float32, False),
    ("lin_a8g128", 128, 8, "affine", mx.float32, True),
    ("lin_a6g64", 64, 6, "affine", mx.float32, False),
    ("lin_a2g64", 64, 2, "affine", mx.float32, True),
    ("lin_mxfp4", 32, 4, "mxfp4", mx.float32, True),
    ("lin_nvfp4", 16, 4, "nvfp4", mx.float32, False),
    ("lin_mxfp8", 32, 8, "mxfp8", mx.float32, True),
    ("lin_a4g64_bf16", 64, 4, "affine", mx.bfloat16, True),
]

EMBEDDING = [
    ("emb_a4g64", 64, 4, "affine"),
    ("emb_a8g32", 32, 8, "affine"),
    ("emb_mxfp4", 32, 4, "mxfp4"),
]


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(40, 64)
        self.up = nn.Linear(64, 128, bias=False)
        self.down = nn.Linear(128, 64, bias=True)
        self.head = nn.Linear(64, 40, bias=False)

    def __call__(self, ids):
        h = self.emb(ids)
        h = self.down(nn.silu(self.up(h)))
        return self.head(h)


def main():
    mx.random.seed(7)
    out = {}
    for tag, gs, bits, mode, dtype, bias in LINEAR:
        lin = nn.Linear(128, 24, bias=bias)
        lin.set_dtype(dtype)
        q = nn.QuantizedLinear.from_linear(lin, gs, bits, mode)
        x = mx.random.normal((2, 3, 128)).astype(dtype)
        out[f"{tag}.dense.weight"] = lin.weight
        if bias:
            out[f"{tag}.dense.bias"] = lin.bias
        for k, v in tree_flatten(q.parameters()):
            out[f"{tag}.q.{k}"] = v
        out[f"{tag}.x"] = x
        out[f"{tag}.y"] = q(x)
    for tag, gs, bits, mode in EMBEDDING:
        emb = nn.Embedding(30, 64)
        q = nn.QuantizedEmbedding.from_embedding(emb, gs, bits, mode)
        ids = mx.array([[3, 0, 29, 7, 7], [12, 25, 1, 2, 20]], dtype=mx.int32)
        x = mx.random.normal((4, 64))
        out[f"{tag}.dense.weight"] = emb.weight
        for k, v in tree_flatten(q.parameters()):
            out[f"{tag}.q.{k}"] = v
        out[f"{tag}.ids"] = ids
        out[f"{tag}.y"] = q(ids)
        out[f"{tag}.x"] = x
        out[f"{tag}.lin"] = q.as_linear(x)

    model = Small()
    for k, v in tree_flatten(model.parameters()):
        out[f"quantize.dense.{k}"] = v

    def predicate(path, module):
        if path == "emb":
            return False
        if path == "down":
            return {"group_size": 32, "bits": 8}
        return True

    nn.quantize(model, 64, 4, class_predicate=predicate)
    for k, v in tree_flatten(model.parameters()):
        out[f"quantize.q.{k}"] = v
    ids = mx.array([[1, 5, 39, 0]], dtype=mx.int32)
    out["quantize.ids"] = ids
    out["quantize.y"] = model(ids)

    mx.eval(out)
    mx.save_safetensors(OUT, out)
    print(f"wrote {len(out)} arrays to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
