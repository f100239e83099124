#!/usr/bin/env python3
"""Makes the fixtures of ferrox's quantized ops from real mlx (CPU) and a NumPy reference.

Writes crates/ferrox/tests/fixtures/quant.safetensors, which crates/ferrox/tests/quantized.rs
replays through ferrox. Deterministic (seeded): rerunning gives the same file.

Tensors, for each case tag `{mode}_b{bits}_g{group}_{dtype}`:

* `{tag}/w`: the matrix quantized, [rows, 256]: random normal rows, plus rows that stress the
  rounding (a zero group, a constant group, a huge and a tiny group, negative-dominated rows).
* `{tag}/wq`, `{tag}/scales`, `{tag}/biases`: mx.quantize's outputs (compared bit for bit).
* `{tag}/deq`: mx.dequantize's output; `{tag}/deq_np`: the NumPy float64 dequantization of the
  same packed data (an independent decoder of the bit stream and of the FP4 / FP8 / E8M0
  codes), in float32.
* `{tag}/x{m}`, `{tag}/y{m}`, `{tag}/y{m}_np`: x of m rows, mx.quantized_matmul(x, w, ...,
  transpose=True) and NumPy's x @ deq_np.T in float64 (for m = 1, 3 and 12: decode and
  prefill kernels).
* `{tag}/xn`, `{tag}/yn`, `{tag}/yn_np`: the product without transpose, x [5, rows].

Gather cases (`gather_*`): experts w [4, 64, 128] quantized (affine 4-bit, group 64, and
mxfp4), x [3, 2, 128], index pairs (lhs, rhs), outputs of mx.gather_qmm and the NumPy
reference; and the MoE shape x [6, 1, 128] with rhs only, sorted.

Gradients (`grad/*`): mx.vjp of quantized_matmul (affine 4-bit g64, float32) with respect to
x, scales and biases for a fixed cotangent.

Usage: python3 scripts/make_quant_fixtures.py   (needs `pip install "mlx[cpu]" numpy`)
"""

import os

import mlx.core as mx
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "crates", "ferrox", "tests", "fixtures", "quant.safetensors")
K = 256
FP4 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], np.float64)
DTYPES = {"f32": mx.float32, "f16": mx.float16, "bf16": mx.bfloat16}


def fp8_e4m3(codes):
    """Float64 values of E4M3 codes (bias 7, subnormals; MLX reads 0x7f as 480)."""
    c = codes.astype(np.int64)
    e, m = (c >> 3) & 15, (c & 7).astype(np.float64)
    mag = np.where(e == 0, m / 512.0, (1 + m / 8.0) * np.exp2(e.astype(np.float64) - 7))
    return np.where(c & 128, -mag, mag)


def unpack(wq, bits, cols):
    """Codes of `bits` bits from the little-endian bit stream of each row of uint32 words."""
    rows = wq.shape[0]
    stream = np.unpackbits(wq.astype("<u4").view(np.uint8).reshape(rows, -1), axis=1, bitorder="little")
    stream = stream[:, : cols * bits].reshape(rows, cols, bits).astype(np.int64)
    return (stream << np.arange(bits)).sum(-1)


def dequant_np(wq, scales, biases, gs, bits, mode):
    """NumPy float64 dequantization."""
    wq, scales = np.array(wq), np.array(scales.astype(mx.float32) if mode == "affine" else scales)
    cols = wq.shape[-1] * 32 // bits
    codes = unpack(wq, bits, cols)
    if mode == "affine":
        vals = codes.astype(np.float64)
        s = np.repeat(scales.astype(np.float64), gs, axis=1)
        b = np.repeat(np.array(biases.astype(mx.float32)).astype(np.float64), gs, axis=1)
        return vals * s + b
    vals = FP4[codes] if bits == 4 else fp8_e4m3(codes)
    if mode == "nvfp4":
        s = fp8_e4m3(scales)
    else:
        s = np.exp2(scales.astype(np.float64) - 127)
    return vals * np.repeat(s, gs, axis=1)


def matrix(rows, cols, rng):
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    w[1, :32] = 0.0  # a zero group (for every group size of at least 32 the start is zero)
    w[2, 32:64] = 0.75  # a constant group
    w[3] *= 100.0  # large values
    w[4] *= 1e-4  # tiny values
    w[5] = -np.abs(w[5])  # negative-dominated
    w[6, 7] = -9.0  # one outlier per row
    return w


def main():
    rng = np.random.default_rng(7)
    mx.set_default_device(mx.cpu)
    out = {}
    cases = [("affine", b, g, "f32") for b in (1, 2, 3, 4, 5, 6, 8) for g in (32, 64, 128)]
    cases += [("affine", b, 64, dt) for b in (3, 4, 8) for dt in ("f16", "bf16")]
    cases += [(m, b, g, dt) for (m, b, g) in (("mxfp4", 4, 32), ("nvfp4", 4, 16), ("mxfp8", 8, 32))
              for dt in ("f32", "f16", "bf16")]
    for mode, bits, gs, dt in cases:
        tag = f"{mode}_b{bits}_g{gs}_{dt}"
        w = mx.array(matrix(8, K, rng)).astype(DTYPES[dt])
        res = mx.quantize(w, group_size=gs, bits=bits, mode=mode)
        wq, scales = res[0], res[1]
        biases = res[2] if mode == "affine" else None
        deq = mx.dequantize(wq, scales, biases, group_size=gs, bits=bits, mode=mode)
        deq_np = dequant_np(wq, scales, biases, gs, bits, mode)
        # The two decoders agree (up to the rounding of MLX's output dtype).
        tol = 1e-6 if dt == "f32" else 1e-2
        assert np.allclose(np.array(deq.astype(mx.float32)), deq_np, rtol=tol, atol=tol * np.abs(deq_np).max()), tag
        out[f"{tag}/w"], out[f"{tag}/wq"], out[f"{tag}/scales"] = w, wq, scales
        if biases is not None:
            out[f"{tag}/biases"] = biases
        out[f"{tag}/deq"] = deq
        out[f"{tag}/deq_np"] = mx.array(deq_np.astype(np.float32))
        for m in (1, 3, 12):
            x = mx.array(rng.standard_normal((m, K)).astype(np.float32)).astype(DTYPES[dt])
            y = mx.quantized_matmul(x, wq, scales, biases, transpose=True, group_size=gs, bits=bits, mode=mode)
            y_np = np.array(x.astype(mx.float32)).astype(np.float64) @ deq_np.T
            out[f"{tag}/x{m}"], out[f"{tag}/y{m}"] = x, y
            out[f"{tag}/y{m}_np"] = mx.array(y_np.astype(np.float32))
        xn = mx.array(rng.standard_normal((5, 8)).astype(np.float32)).astype(DTYPES[dt])
        yn = mx.quantized_matmul(xn, wq, scales, biases, transpose=False, group_size=gs, bits=bits, mode=mode)
        out[f"{tag}/xn"], out[f"{tag}/yn"] = xn, yn
        out[f"{tag}/yn_np"] = mx.array((np.array(xn.astype(mx.float32)).astype(np.float64) @ deq_np).astype(np.float32))

    for mode, bits, gs in (("affine", 4, 64), ("mxfp4", 4, 32)):
        tag = f"gather_{mode}"
        we = mx.array(rng.standard_normal((4, 64, 128)).astype(np.float32))
        res = mx.quantize(we, group_size=gs, bits=bits, mode=mode)
        wq, scales = res[0], res[1]
        biases = res[2] if mode == "affine" else None
        deq = np.stack([dequant_np(wq[e], scales[e], None if biases is None else biases[e], gs, bits, mode)
                        for e in range(4)])
        x = mx.array(rng.standard_normal((3, 2, 128)).astype(np.float32))
        lhs = mx.array(np.array([0, 2, 1, 2, 0], np.uint32))
        rhs = mx.array(np.array([3, 3, 0, 1, 2], np.uint32))
        y = mx.gather_qmm(x, wq, scales, biases, lhs, rhs, transpose=True, group_size=gs, bits=bits, mode=mode)
        xn = np.array(x).astype(np.float64)
        y_np = np.stack([xn[l] @ deq[r].T for l, r in zip(np.array(lhs), np.array(rhs))])
        out.update({f"{tag}/wq": wq, f"{tag}/scales": scales, f"{tag}/x": x, f"{tag}/lhs": lhs, f"{tag}/rhs": rhs,
                    f"{tag}/y": y, f"{tag}/y_np": mx.array(y_np.astype(np.float32))})
        if biases is not None:
            out[f"{tag}/biases"] = biases
        # MoE decode/prefill shape: one row per token, experts sorted.
        xt = mx.array(rng.standard_normal((6, 1, 128)).astype(np.float32))
        rt = mx.array(np.array([0, 0, 1, 3, 3, 3], np.uint32))
        yt = mx.gather_qmm(xt, wq, scales, biases, rhs_indices=rt, transpose=True, group_size=gs, bits=bits,
                           mode=mode, sorted_indices=True)
        yt_np = np.stack([np.array(xt[i]).astype(np.float64) @ deq[r].T for i, r in enumerate(np.array(rt))])
        out.update({f"{tag}/xt": xt, f"{tag}/rt": rt, f"{tag}/yt": yt,
                    f"{tag}/yt_np": mx.array(yt_np.astype(np.float32))})

    # Gradients of quantized_matmul (affine 4-bit, group 64) for a fixed cotangent.
    w = mx.array(rng.standard_normal((48, 128)).astype(np.float32))
    wq, scales, biases = mx.quantize(w, group_size=64, bits=4)
    x = mx.array(rng.standard_normal((3, 128)).astype(np.float32))
    ct = mx.array(rng.standard_normal((3, 48)).astype(np.float32))

    def f(x, s, b):
        return mx.quantized_matmul(x, wq, s, b, transpose=True, group_size=64, bits=4)

    _, (gx, gs_, gb) = mx.vjp(f, [x, scales, biases], [ct])
    out.update({"grad/wq": wq, "grad/scales": scales, "grad/biases": biases, "grad/x": x, "grad/ct": ct,
                "grad/gx": gx, "grad/gscales": gs_, "grad/gbiases": gb})

    mx.save_safetensors(OUT, out)
    print(f"wrote {len(out)} tensors to {os.path.relpath(OUT)} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
