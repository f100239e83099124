"""Reference timings for crates/ferrox/examples/bench_core.rs: the same cases with NumPy and
with the real mlx (CPU), printed in the same table format (one table per library).

    pip install -q numpy "mlx[cpu]"
    python scripts/bench_core_ref.py [FILTER] [--lib numpy|mlx]

Median of N runs after warm-up; mlx runs are forced with mx.eval each run. Rates count the
bytes each op must read and write once (GB/s, 1e9) or its flops (GFLOP/s), as bench_core does.
"""

import os
import sys
import time

import numpy as np

ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
FILTER = ARGS[0] if ARGS else ""
LIBS = ["numpy", "mlx"]
if "--lib" in sys.argv:
    LIBS = [sys.argv[sys.argv.index("--lib") + 1]]
    FILTER = "" if FILTER == LIBS[0] else FILTER


def median_ms(warm, iters, f):
    for _ in range(warm):
        f()
    t = []
    for _ in range(iters):
        s = time.perf_counter()
        f()
        t.append((time.perf_counter() - s) * 1e3)
    t.sort()
    return t[iters // 2]


def row(op, shape, dtype, iters, amount, unit, f):
    if FILTER and FILTER not in op:
        return
    f()  # surface errors once
    ms = median_ms(1 if iters <= 3 else 2, iters, f)
    print(f"| {op} | {shape} | {dtype} | {ms:.3f} | {amount / ms / 1e6:.1f} | {unit} |", flush=True)


def header(name):
    print(name)
    print("| op | shape | dtype | ms | rate | unit |")
    print("|---|---|---|---:|---:|---|")


def data(shape, seed):
    return np.random.default_rng(seed).uniform(-1, 1, size=shape).astype(np.float32)


FUSED = [((4096, 4096), "f32"), ((1, 32, 512, 512), "f32"), ((1, 32, 512, 512), "bf16"), ((1, 512, 4096), "bf16")]
SIZES = {"f32": 4, "f16": 2, "bf16": 2}
QUANT_SHAPES = [(576, 1536), (1536, 576), (896, 4864), (4864, 896)]


def shape_str(s):
    return "x".join(str(v) for v in s)


def bench_numpy():
    header(f"numpy {np.__version__}")
    n = 64 << 20
    src = np.arange(n, dtype=np.float32)
    dst = np.ones(n, dtype=np.float32)
    b = n * 4
    row("bw numpy copyto 1 thread", "64M", "f32", 7, 2 * b, "GB/s", lambda: np.copyto(dst, src))
    row("bw numpy read 1 thread", "64M", "f32", 7, b, "GB/s", lambda: src.sum())
    del src, dst
    for n in (1024, 2048, 4096):
        a, bb = data((n, n), 1), data((n, n), 2)
        iters = {1024: 10, 2048: 5, 4096: 3}[n]
        row("matmul", f"{n}x{n}x{n}", "f32", iters, 2 * n**3, "GFLOP/s", lambda: a @ bb)
    # NumPy has no bf16 and its f16 matmul is a scalar loop: not timed.
    x, y = data((4096, 4096), 1), data((4096, 4096), 2)
    n = x.size
    row("add", "16M", "f32", 10, 12 * n, "GB/s", lambda: x + y)
    row("multiply scalar", "16M", "f32", 10, 8 * n, "GB/s", lambda: x * np.float32(2))
    row("exp", "16M", "f32", 10, 8 * n, "GB/s", lambda: np.exp(x))
    row("transpose copy", "4096x4096", "f32", 5, 8 * n, "GB/s", lambda: np.ascontiguousarray(x.T))
    row("sum all", "4096x4096", "f32", 10, 4 * n, "GB/s", lambda: x.sum())
    row("sum axis 0", "4096x4096", "f32", 10, 4 * n, "GB/s", lambda: x.sum(axis=0))
    row("sum axis 1", "4096x4096", "f32", 10, 4 * n, "GB/s", lambda: x.sum(axis=1))
    row("max all", "4096x4096", "f32", 10, 4 * n, "GB/s", lambda: x.max())
    row("argmax all", "4096x4096", "f32", 5, 4 * n, "GB/s", lambda: x.argmax())
    row("argmax axis 1", "4096x4096", "f32", 5, 4 * n, "GB/s", lambda: x.argmax(axis=1))

    def softmax(v):
        e = np.exp(v - v.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def rms_norm(v, w):
        return v / np.sqrt(np.mean(v * v, axis=-1, keepdims=True) + 1e-5) * w

    def layer_norm(v, w, bias):
        m = v.mean(axis=-1, keepdims=True)
        c = v - m
        return c / np.sqrt(np.mean(c * c, axis=-1, keepdims=True) + 1e-5) * w + bias

    for shape, dt in FUSED:
        if dt != "f32":
            continue
        v = data(shape, 1)
        w, bias = data(shape[-1:], 2), data(shape[-1:], 3)
        nb = 2 * v.size * 4
        s = shape_str(shape)
        row("softmax", s, dt, 10, nb, "GB/s", lambda: softmax(v))
        row("rms_norm", s, dt, 10, nb, "GB/s", lambda: rms_norm(v, w))
        row("layer_norm", s, dt, 10, nb, "GB/s", lambda: layer_norm(v, w, bias))


def bench_mlx():
    import mlx.core as mx

    mx.set_default_device(mx.cpu)
    header(f"mlx {mx.__version__}")
    dts = {"f32": mx.float32, "f16": mx.float16, "bf16": mx.bfloat16}

    def arr(shape, dt, seed):
        a = mx.array(data(shape, seed)).astype(dts[dt])
        mx.eval(a)
        return a

    def ev(f):
        return lambda: mx.eval(f())

    n = 64 << 20
    src = mx.arange(n, dtype=mx.float32)
    mx.eval(src)
    # (mx.contiguous of a row slice is a no-op view in mlx, so there is no copy probe here.)
    row("bw mlx read", "64M", "f32", 7, n * 4, "GB/s", ev(lambda: src.sum()))
    del src
    for dt in ("f32", "f16", "bf16"):
        for n in (1024, 2048, 4096):
            if FILTER and FILTER not in "matmul":
                continue
            a, b = arr((n, n), dt, 1), arr((n, n), dt, 2)
            iters = {1024: 10, 2048: 5, 4096: 3}[n]
            row("matmul", f"{n}x{n}x{n}", dt, iters, 2 * n**3, "GFLOP/s", ev(lambda: a @ b))
    x, y = arr((4096, 4096), "f32", 1), arr((4096, 4096), "f32", 2)
    n = x.size
    row("add", "16M", "f32", 10, 12 * n, "GB/s", ev(lambda: x + y))
    row("multiply scalar", "16M", "f32", 10, 8 * n, "GB/s", ev(lambda: x * 2.0))
    row("exp", "16M", "f32", 10, 8 * n, "GB/s", ev(lambda: mx.exp(x)))
    row("astype f32->bf16", "16M", "f32", 10, 6 * n, "GB/s", ev(lambda: x.astype(mx.bfloat16)))
    xb, yb = arr((4096, 4096), "bf16", 3), arr((4096, 4096), "bf16", 4)
    row("add", "16M", "bf16", 10, 6 * n, "GB/s", ev(lambda: xb + yb))
    row("transpose copy", "4096x4096", "f32", 5, 8 * n, "GB/s", ev(lambda: mx.contiguous(x.T)))
    row("sum all", "4096x4096", "f32", 10, 4 * n, "GB/s", ev(lambda: x.sum()))
    row("sum axis 0", "4096x4096", "f32", 10, 4 * n, "GB/s", ev(lambda: x.sum(axis=0)))
    row("sum axis 1", "4096x4096", "f32", 10, 4 * n, "GB/s", ev(lambda: x.sum(axis=1)))
    row("max all", "4096x4096", "f32", 10, 4 * n, "GB/s", ev(lambda: x.max()))
    row("argmax all", "4096x4096", "f32", 5, 4 * n, "GB/s", ev(lambda: mx.argmax(x)))
    row("argmax axis 1", "4096x4096", "f32", 5, 4 * n, "GB/s", ev(lambda: mx.argmax(x, axis=1)))
    row("sum all", "4096x4096", "bf16", 10, 2 * n, "GB/s", ev(lambda: xb.sum()))
    for shape, dt in FUSED:
        v = arr(shape, dt, 1)
        w, bias = arr(shape[-1:], dt, 2), arr(shape[-1:], dt, 3)
        nb = 2 * v.size * SIZES[dt]
        s = shape_str(shape)
        row("softmax", s, dt, 10, nb, "GB/s", ev(lambda: mx.softmax(v, axis=-1, precise=True)))
        row("rms_norm", s, dt, 10, nb, "GB/s", ev(lambda: mx.fast.rms_norm(v, w, 1e-5)))
        row("layer_norm", s, dt, 10, nb, "GB/s", ev(lambda: mx.fast.layer_norm(v, w, bias, 1e-5)))
    for dt in ("f32", "bf16"):
        shape = (1, 32, 512, 128)
        v = arr(shape, dt, 1)
        nb = 2 * v.size * SIZES[dt]
        row("rope", shape_str(shape), dt, 10, nb, "GB/s",
            ev(lambda: mx.fast.rope(v, 128, traditional=False, base=10000.0, scale=1.0, offset=0)))
    for dt in ("f32", "bf16"):
        b, h, l, d = 1, 32, 512, 128
        q, k, vv = arr((b, h, l, d), dt, 1), arr((b, h, l, d), dt, 2), arr((b, h, l, d), dt, 3)
        scale = 1.0 / d**0.5
        row("sdpa prefill causal", "B1 H32 L512 S512 D128", dt, 5, 4 * b * h * l * l * d, "GFLOP/s",
            ev(lambda: mx.fast.scaled_dot_product_attention(q, k, vv, scale=scale, mask="causal")))
        hkv, s = 8, 2048
        q, k, vv = arr((b, h, 1, d), dt, 4), arr((b, hkv, s, d), dt, 5), arr((b, hkv, s, d), dt, 6)
        row("sdpa decode", "B1 Hq32 Hkv8 L1 S2048 D128", dt, 20, 2 * b * hkv * s * d * SIZES[dt], "GB/s",
            ev(lambda: mx.fast.scaled_dot_product_attention(q, k, vv, scale=scale)))
    # Quantized matmul (affine, group 64), as bench_core's quantized cases.
    for bits, dt in ((4, "bf16"), (4, "f32"), (8, "bf16")):
        for k, n in QUANT_SHAPES:
            if FILTER and FILTER not in "qmv qmm":
                continue
            wq, s, bq = mx.quantize(arr((n, k), dt, 1), group_size=64, bits=bits)
            mx.eval(wq, s, bq)
            nbytes = n * k * bits // 8 + 2 * (n * k // 64) * SIZES[dt]
            x1 = arr((1, k), dt, 2)
            row(f"qmv {bits}-bit g64", f"K{k} N{n}", dt, 50, nbytes, "GB/s",
                ev(lambda: mx.quantized_matmul(x1, wq, s, bq, transpose=True, group_size=64, bits=bits)))
            if bits == 4 and dt == "bf16":
                m = 512
                x = arr((m, k), dt, 3)
                row(f"qmm {bits}-bit g64", f"M{m} K{k} N{n}", dt, 3, 2 * m * n * k, "GFLOP/s",
                    ev(lambda: mx.quantized_matmul(x, wq, s, bq, transpose=True, group_size=64, bits=bits)))


if __name__ == "__main__":
    print(f"{os.cpu_count()} cpus")
    if "numpy" in LIBS:
        bench_numpy()
    if "mlx" in LIBS:
        bench_mlx()
