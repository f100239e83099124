"""Writes the GGUF reader's test fixture with the `gguf` package (pip install gguf numpy safetensors).

crates/ferrox/tests/fixtures/io/tiny.gguf: metadata of every value type (arrays too) and one
tensor of each supported type: f32, f16, bf16, q8_0, q4_0, q4_1 (quantized by gguf.quants from
known values), q4_k, q5_k, q6_k (random blocks with finite scales: gguf-py cannot quantize these
types, but it dequantizes them), plus a 3-D and a 1-D tensor for the axis order.
crates/ferrox/tests/fixtures/io/tiny_gguf_expected.safetensors: each tensor dequantized by
gguf.quants.dequantize (float32, in the shape numpy gives it: GGUF's dimensions reversed).
"""

from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T
from safetensors.numpy import save_file

OUT = Path(__file__).resolve().parent.parent / "crates/ferrox/tests/fixtures/io"


def k_blocks(rng, qtype, rows, cols):
    """Random K-quant blocks whose f16 scales are finite and modest."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
    half = lambda n: rng.uniform(0.001, 0.05, size=(rows, cols // block, n)).astype(np.float16).view(np.uint8)
    if qtype in (T.Q4_K, T.Q5_K):
        raw[..., 0:4] = half(2)  # d, dmin
    else:  # Q6_K: ql, qh, scales (int8), then d
        raw[..., size - 2 : size] = half(1)
    return raw.reshape(rows, -1)


def main():
    rng = np.random.default_rng(7)
    w = gguf.GGUFWriter(str(OUT / "tiny.gguf"), "llama")
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 0.125)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo gguf")
    w.add_uint64("test.u64", 2**63 + 5)
    w.add_int64("test.i64", -(2**62))
    w.add_float64("test.f64", -2.5e-300)
    w.add_array("test.tokens", ["<s>", "</s>", "▁the", ""])
    w.add_array("test.ints", [1, -2, 3])
    w.add_array("test.floats", [0.5, -1.5])
    w.add_array("test.nested", [[1, 2], [3]])
    w.add_context_length(128)

    expected = {}
    values = rng.standard_normal((4, 256)).astype(np.float32)

    def add(name, data, qtype, shape=None):
        w.add_tensor(name, data, raw_dtype=qtype)
        deq = gguf.quants.dequantize(data, qtype).astype(np.float32)
        expected[name] = deq.reshape(shape) if shape is not None else deq

    add("t.f32", values.copy(), T.F32)
    add("t.f16", values.astype(np.float16), T.F16)
    add("t.bf16", gguf.quants.quantize(values, T.BF16), T.BF16)
    for qtype in (T.Q8_0, T.Q4_0, T.Q4_1):
        add(f"t.{qtype.name.lower()}", gguf.quants.quantize(values, qtype), qtype)
    for qtype in (T.Q4_K, T.Q5_K, T.Q6_K):
        add(f"t.{qtype.name.lower()}", k_blocks(rng, qtype, 3, 512), qtype)
    cube = rng.standard_normal((2, 3, 32)).astype(np.float32)
    add("t.q8_0_3d", gguf.quants.quantize(cube, T.Q8_0), T.Q8_0)
    add("t.vec", np.arange(5, dtype=np.float32), T.F32)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    save_file(expected, str(OUT / "tiny_gguf_expected.safetensors"))
    print({k: v.shape for k, v in expected.items()})


if __name__ == "__main__":
    main()
