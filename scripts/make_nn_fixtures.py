#!/usr/bin/env python3
"""Makes the reference fixtures for ferrox-nn's layers.

Writes crates/ferrox-nn/tests/fixtures/nn_torch.safetensors (forward and backward of each
layer, by PyTorch in float64) and crates/ferrox-nn/tests/fixtures/rope_mlx_lm.safetensors
(the RoPE variants, by mlx-lm's own rope_utils). crates/ferrox-nn/tests/layers.rs and
rope.rs replay them. Deterministic (seeded): rerunning gives the same files.

Layer fixtures, per case `c`:

  c.x, c.<input>       inputs (float32; ids int32)
  c.p.<path>           the layer's parameters, under ferrox-nn's names (`query_proj.weight`)
  c.cot                a fixed cotangent of the output
  c.out                the forward output
  c.gx, c.g<input>     d(sum(out * cot)) / d input
  c.g.<path>           d(sum(out * cot)) / d parameter

Layouts are MLX's (channels last; conv weight [C_out, K..., C_in]); the script transposes to
PyTorch's layouts to compute and back. Where PyTorch has no module with MLX's semantics
(MLX-style GroupNorm grouping, the MLX transformer layers, gelu_fast) the computation is
written out with torch ops, still differentiated by torch.autograd.

Usage: python3 scripts/make_nn_fixtures.py
"""

import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "crates", "ferrox-nn", "tests", "fixtures")
rng = np.random.default_rng(20261126)
tensors = {}


def rand(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def f32(a):
    """A C-contiguous float32 copy (safetensors writes the buffer as it lies)."""
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def t(a):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)


def case(name, fn, inputs, params):
    """Runs fn(inputs, params) in float64 with autograd and records everything."""
    ti = {k: t(v) for k, v in inputs.items()}
    tp = {k: t(v) for k, v in params.items()}
    out = fn(ti, tp)
    cot = rand(*out.shape)
    (out * torch.tensor(cot, dtype=torch.float64)).sum().backward()
    for k, v in inputs.items():
        tensors[f"{name}.{k}"] = f32(v)
        tensors[f"{name}.g{k}"] = f32(ti[k].grad.numpy())
    for k, v in params.items():
        tensors[f"{name}.p.{k}"] = f32(v)
        tensors[f"{name}.g.{k}"] = f32(tp[k].grad.numpy())
    tensors[f"{name}.cot"] = cot
    tensors[f"{name}.out"] = f32(out.detach().numpy())


# ---- linear, embedding ---------------------------------------------------------------------

case("linear", lambda i, p: F.linear(i["x"], p["weight"], p["bias"]),
     {"x": rand(2, 4, 5)}, {"weight": rand(3, 5), "bias": rand(3)})
case("linear_nobias", lambda i, p: F.linear(i["x"], p["weight"]), {"x": rand(4, 5)}, {"weight": rand(3, 5)})

ids = rng.integers(0, 10, size=(2, 3)).astype(np.int32)
w = t(rand(10, 4))
out = F.embedding(torch.tensor(ids, dtype=torch.long), w)
cot = rand(*out.shape)
(out * torch.tensor(cot, dtype=torch.float64)).sum().backward()
tensors.update({"embedding.ids": ids, "embedding.p.weight": f32(w.detach().numpy()), "embedding.cot": cot,
                "embedding.out": f32(out.detach().numpy()), "embedding.g.weight": f32(w.grad.numpy())})
case("embedding_as_linear", lambda i, p: i["x"] @ p["weight"].T, {"x": rand(2, 4)}, {"weight": rand(10, 4)})

# ---- norms ---------------------------------------------------------------------------------


def rms(i, p):
    x = i["x"]
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-5) * p["weight"]


case("rms_norm", rms, {"x": rand(2, 3, 6)}, {"weight": rand(6)})
case("layer_norm", lambda i, p: F.layer_norm(i["x"], (6,), p["weight"], p["bias"], 1e-5),
     {"x": rand(2, 3, 6)}, {"weight": rand(6), "bias": rand(6)})
case("layer_norm_noaffine", lambda i, p: F.layer_norm(i["x"], (6,), None, None, 1e-5), {"x": rand(2, 3, 6)}, {})


def group_norm_pt(i, p):
    x = i["x"]  # [N, H, W, C] -> torch [N, C, H, W]
    y = F.group_norm(x.permute(0, 3, 1, 2), 2, p["weight"], p["bias"], 1e-5)
    return y.permute(0, 2, 3, 1)


def group_norm_mlx(i, p):
    # MLX's default grouping: channel c is in group c % num_groups.
    x = i["x"]
    n = x.shape[0]
    g = x.reshape(n, -1, 3)
    mean = g.mean(1, keepdim=True)
    var = ((g - mean) ** 2).mean(1, keepdim=True)
    y = ((g - mean) * torch.rsqrt(var + 1e-5)).reshape(x.shape)
    return p["weight"] * y + p["bias"]


case("group_norm_pt", group_norm_pt, {"x": rand(2, 3, 2, 6)}, {"weight": rand(6), "bias": rand(6)})
case("group_norm", group_norm_mlx, {"x": rand(2, 4, 6)}, {"weight": rand(6), "bias": rand(6)})


def batch_norm_train(i, p):
    x = i["x"]  # [N, L, C] -> torch [N, C, L]
    rm = torch.zeros(5, dtype=torch.float64)
    rv = torch.ones(5, dtype=torch.float64)
    y = F.batch_norm(x.permute(0, 2, 1), rm, rv, p["weight"], p["bias"], True, 0.1, 1e-5)
    tensors["batch_norm_train.running_mean"] = f32(rm.numpy())
    tensors["batch_norm_train.running_var"] = f32(rv.numpy())
    return y.permute(0, 2, 1)


case("batch_norm_train", batch_norm_train, {"x": rand(4, 3, 5)}, {"weight": rand(5), "bias": rand(5)})
rm, rv = rand(5), np.abs(rand(5)) + 0.5
tensors["batch_norm_eval.p.running_mean"], tensors["batch_norm_eval.p.running_var"] = rm, rv
case("batch_norm_eval", lambda i, p: F.batch_norm(i["x"].permute(0, 2, 1), torch.tensor(rm, dtype=torch.float64),
                                                  torch.tensor(rv, dtype=torch.float64), p["weight"], p["bias"],
                                                  False, 0.1, 1e-5).permute(0, 2, 1),
     {"x": rand(4, 3, 5)}, {"weight": rand(5), "bias": rand(5)})

# ---- convolutions (MLX layout in the fixture) ------------------------------------------------

case("conv1d", lambda i, p: F.conv1d(i["x"].permute(0, 2, 1), p["weight"].permute(0, 2, 1), p["bias"],
                                     stride=2, padding=1).permute(0, 2, 1),
     {"x": rand(2, 7, 3)}, {"weight": rand(4, 3, 3), "bias": rand(4)})
case("conv2d", lambda i, p: F.conv2d(i["x"].permute(0, 3, 1, 2), p["weight"].permute(0, 3, 1, 2), p["bias"],
                                     stride=(1, 2), padding=(1, 0), dilation=(2, 1)).permute(0, 2, 3, 1),
     {"x": rand(2, 5, 6, 4)}, {"weight": rand(6, 3, 2, 4), "bias": rand(6)})
# groups=2: weight's last axis is C_in / groups
case("conv2d_groups", lambda i, p: F.conv2d(i["x"].permute(0, 3, 1, 2), p["weight"].permute(0, 3, 1, 2),
                                            None, groups=2).permute(0, 2, 3, 1),
     {"x": rand(1, 4, 4, 4)}, {"weight": rand(6, 3, 3, 2)})

# transposed: MLX weight [C_out, K..., C_in] is PyTorch's [C_in, C_out, K...]
case("conv_transpose1d", lambda i, p: F.conv_transpose1d(i["x"].permute(0, 2, 1), p["weight"].permute(2, 0, 1),
                                                         p["bias"], stride=2, padding=1, output_padding=1,
                                                         dilation=2).permute(0, 2, 1),
     {"x": rand(2, 5, 3)}, {"weight": rand(4, 3, 3), "bias": rand(4)})
case("conv_transpose2d", lambda i, p: F.conv_transpose2d(i["x"].permute(0, 3, 1, 2), p["weight"].permute(3, 0, 1, 2),
                                                         p["bias"], stride=(2, 1), padding=(1, 0)).permute(0, 2, 3, 1),
     {"x": rand(2, 3, 4, 2)}, {"weight": rand(3, 3, 2, 2), "bias": rand(3)})

# ---- pooling (channels last; PyTorch pads max pooling with -inf and counts padding in averages)

case("max_pool1d", lambda i, p: F.max_pool1d(i["x"].permute(0, 2, 1), 3, 2, 1).permute(0, 2, 1),
     {"x": rand(2, 7, 3)}, {})
case("max_pool2d", lambda i, p: F.max_pool2d(i["x"].permute(0, 3, 1, 2), (2, 2)).permute(0, 2, 3, 1),
     {"x": rand(2, 4, 6, 3)}, {})
case("avg_pool1d", lambda i, p: F.avg_pool1d(i["x"].permute(0, 2, 1), 2).permute(0, 2, 1),
     {"x": rand(2, 6, 3)}, {})
case("avg_pool2d", lambda i, p: F.avg_pool2d(i["x"].permute(0, 3, 1, 2), (3, 2), (1, 2), (1, 1)).permute(0, 2, 3, 1),
     {"x": rand(2, 5, 6, 3)}, {})

# ---- attention and transformer layers ------------------------------------------------------


def mha(q, k, v, p, pre, heads, mask=None):
    def proj(x, name):
        y = F.linear(x, p[f"{pre}{name}.weight"])
        return y.reshape(*y.shape[:-1], heads, -1).transpose(1, 2)

    qh, kh, vh = proj(q, "query_proj"), proj(k, "key_proj"), proj(v, "value_proj")
    s = qh @ kh.transpose(-1, -2) / math.sqrt(qh.shape[-1])
    if mask is not None:
        s = s + mask
    o = torch.softmax(s, -1) @ vh
    o = o.transpose(1, 2).reshape(q.shape[0], q.shape[1], -1)
    return F.linear(o, p[f"{pre}out_proj.weight"])


def mha_params(pre, dims):
    return {f"{pre}{n}.weight": rand(dims, dims, scale=0.4) for n in ["query_proj", "key_proj", "value_proj", "out_proj"]}


MASK = np.triu(np.full((3, 4), -1e9, dtype=np.float32), k=2)
tensors["mha.mask"] = MASK
case("mha", lambda i, p: mha(i["x"], i["keys"], i["values"], p, "", 2, torch.tensor(MASK, dtype=torch.float64)),
     {"x": rand(2, 3, 8), "keys": rand(2, 4, 8), "values": rand(2, 4, 8)}, mha_params("", 8))

CAUSAL = np.triu(np.full((3, 3), -1e9, dtype=np.float32), k=1)


def ln(x, p, name):
    return F.layer_norm(x, (x.shape[-1],), p[f"{name}.weight"], p[f"{name}.bias"], 1e-5)


def mlp(x, p):
    return F.linear(torch.relu(F.linear(x, p["linear1.weight"], p["linear1.bias"])), p["linear2.weight"],
                    p["linear2.bias"])


def block_params(attn, norms):
    p = {}
    for a in attn:
        p.update(mha_params(f"{a}.", 8))
    for n in norms:
        p[f"{n}.weight"], p[f"{n}.bias"] = 1 + rand(8, scale=0.2), rand(8, scale=0.2)
    p.update({"linear1.weight": rand(16, 8, scale=0.3), "linear1.bias": rand(16, scale=0.1),
              "linear2.weight": rand(8, 16, scale=0.3), "linear2.bias": rand(8, scale=0.1)})
    return p


def encoder(norm_first):
    def f(i, p):
        x, m = i["x"], torch.tensor(CAUSAL, dtype=torch.float64)
        if norm_first:
            y = ln(x, p, "ln1")
            x = x + mha(y, y, y, p, "attention.", 2, m)
            return x + mlp(ln(x, p, "ln2"), p)
        x = ln(x + mha(x, x, x, p, "attention.", 2, m), p, "ln1")
        return ln(x + mlp(x, p), p, "ln2")
    return f


def decoder(norm_first):
    def f(i, p):
        x, mem, m = i["x"], i["memory"], torch.tensor(CAUSAL, dtype=torch.float64)
        if norm_first:
            y = ln(x, p, "ln1")
            x = x + mha(y, y, y, p, "self_attention.", 2, m)
            y = ln(x, p, "ln2")
            x = x + mha(y, mem, mem, p, "cross_attention.", 2)
            return x + mlp(ln(x, p, "ln3"), p)
        x = ln(x + mha(x, x, x, p, "self_attention.", 2, m), p, "ln1")
        x = ln(x + mha(x, mem, mem, p, "cross_attention.", 2), p, "ln2")
        return ln(x + mlp(x, p), p, "ln3")
    return f


tensors["causal3"] = CAUSAL
case("encoder_pre", encoder(True), {"x": rand(2, 3, 8)}, block_params(["attention"], ["ln1", "ln2"]))
case("encoder_post", encoder(False), {"x": rand(2, 3, 8)}, block_params(["attention"], ["ln1", "ln2"]))
case("decoder_pre", decoder(True), {"x": rand(2, 3, 8), "memory": rand(2, 4, 8)},
     block_params(["self_attention", "cross_attention"], ["ln1", "ln2", "ln3"]))
case("decoder_post", decoder(False), {"x": rand(2, 3, 8), "memory": rand(2, 4, 8)},
     block_params(["self_attention", "cross_attention"], ["ln1", "ln2", "ln3"]))

# ---- sequential ----------------------------------------------------------------------------

case("sequential", lambda i, p: F.linear(torch.relu(F.linear(i["x"], p["layers.0.weight"], p["layers.0.bias"])),
                                         p["layers.2.weight"], p["layers.2.bias"]),
     {"x": rand(3, 4)}, {"layers.0.weight": rand(6, 4), "layers.0.bias": rand(6),
                         "layers.2.weight": rand(2, 6), "layers.2.bias": rand(2)})

# ---- activations ---------------------------------------------------------------------------

SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
ACTS = {
    "relu": torch.relu,
    "relu6": F.relu6,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.01),
    "elu": lambda x: F.elu(x, 1.0),
    "selu": lambda x: SELU_SCALE * torch.where(x > 0, x, SELU_ALPHA * (torch.exp(x) - 1)),
    "celu": lambda x: F.celu(x, 1.0),
    "gelu": lambda x: F.gelu(x),
    "gelu_approx": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast_approx": lambda x: x * torch.sigmoid(1.702 * x),
    "silu": F.silu,
    "mish": F.mish,
    "softplus": F.softplus,
    "softsign": F.softsign,
    "hardswish": F.hardswish,
    "hard_tanh": F.hardtanh,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "log_sigmoid": F.logsigmoid,
    "softmax": lambda x: torch.softmax(x, -1),
    "log_softmax": lambda x: torch.log_softmax(x, -1),
    "glu": lambda x: F.glu(x, -1),
}
# Values spread over [-7, 7], away from the kinks at 0, ±1, ±3 and 6.
xa = (np.linspace(-7, 7, 32) + 0.0371).astype(np.float32).reshape(4, 8)
for name, f in ACTS.items():
    case(f"act.{name}", lambda i, p, f=f: f(i["x"]), {"x": xa}, {})

# ---- sinusoidal positional encoding (MLX's formula, float64 NumPy) ---------------------------

pos = np.arange(7, dtype=np.float32) * 1.5
dims = 8
sig = np.exp((1 - np.arange(dims // 2) / (dims // 2 - 1)) * (math.log(1.0) - math.log(1e-4)) + math.log(1e-4))
y = pos.astype(np.float64)[:, None] * sig
tensors["sinusoidal.x"] = pos
tensors["sinusoidal.out"] = f32(np.concatenate([np.sin(y), np.cos(y)], -1) * math.sqrt(2 / dims))

os.makedirs(OUT_DIR, exist_ok=True)
save_file(tensors, os.path.join(OUT_DIR, "nn_torch.safetensors"))
print(f"nn_torch.safetensors: {len(tensors)} tensors")

# ---- RoPE variants by mlx-lm ---------------------------------------------------------------

import mlx.core as mx  # noqa: E402
from mlx_lm.models.rope_utils import initialize_rope  # noqa: E402

ROPES = {
    "default": (16, 10000.0, False, None, 2048),
    "traditional": (16, 500.0, True, None, 2048),
    "partial": (8, 10000.0, False, None, 2048),
    "linear": (16, 10000.0, False, {"type": "linear", "factor": 4.0}, 2048),
    "dynamic": (16, 10000.0, False, {"type": "dynamic", "factor": 2.0}, 4),
    "llama3": (16, 500000.0, False, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}, 131072),
    "yarn": (16, 10000.0, False, {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096,
                                  "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 0.5}, 16384),
    "yarn_partial": (8, 10000.0, True, {"type": "yarn", "factor": 2.0, "original_max_position_embeddings": 2048},
                     4096),
    "longrope": (16, 10000.0, False, {"type": "longrope", "original_max_position_embeddings": 4096,
                                      "short_factor": [1.0 + 0.1 * i for i in range(8)],
                                      "long_factor": [1.0 + 0.5 * i for i in range(8)]}, 131072),
}
rope = {}
x = rand(1, 2, 5, 16)
for name, (d, base, trad, cfg, maxpos) in ROPES.items():
    r = initialize_rope(d, base, trad, cfg, maxpos)
    out = r(mx.array(x), offset=3)
    rope[f"{name}.out"] = f32(np.array(out))
    if getattr(r, "_freqs", None) is not None:
        rope[f"{name}.freqs"] = f32(np.array(r._freqs))
rope["x"] = x
save_file(rope, os.path.join(OUT_DIR, "rope_mlx_lm.safetensors"))
print(f"rope_mlx_lm.safetensors: {len(rope)} tensors")
