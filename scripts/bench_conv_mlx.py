#!/usr/bin/env python3
"""Times mx.conv2d (mlx[cpu]) on the shapes of crates/ferrox/examples/bench_conv.rs.

Usage: python3 scripts/bench_conv_mlx.py
"""

import time

import mlx.core as mx

mx.set_default_device(mx.cpu)

# (name, N, H, W, C_in, C_out, K, stride, padding, groups, dtype)
CASES = [
    ("conv2d N=8 32x32x64->64 3x3 p1", 8, 32, 32, 64, 64, 3, 1, 1, 1, mx.float32),
    ("conv2d N=8 32x32x64->64 3x3 p1 bf16", 8, 32, 32, 64, 64, 3, 1, 1, 1, mx.bfloat16),
    ("conv2d N=8 32x32x64->128 1x1", 8, 32, 32, 64, 128, 1, 1, 0, 1, mx.float32),
    ("conv2d N=8 32x32x64 depthwise 3x3 p1", 8, 32, 32, 64, 64, 3, 1, 1, 64, mx.float32),
    ("conv2d N=4 64x64x32->64 3x3 s2 p1", 4, 64, 64, 32, 64, 3, 2, 1, 1, mx.float32),
]


def median_ms(f, iters=20):
    for _ in range(2):
        mx.eval(f())
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        mx.eval(f())
        ts.append((time.perf_counter() - t0) * 1e3)
    return sorted(ts)[iters // 2]


print(f"mlx {mx.__version__}, device {mx.default_device()}")
print(f"{'case':<44} {'ms':>10} {'GFLOP/s':>10}")
for name, n, h, w, cin, cout, k, s, p, g, dt in CASES:
    x = mx.random.uniform(-1, 1, (n, h, w, cin)).astype(dt)
    wt = mx.random.uniform(-1, 1, (cout, k, k, cin // g)).astype(dt)
    mx.eval(x, wt)
    y = mx.conv2d(x, wt, stride=s, padding=p, groups=g)
    _, ho, wo, _ = y.shape
    flops = 2.0 * n * ho * wo * cout * k * k * (cin // g)
    ms = median_ms(lambda: mx.conv2d(x, wt, stride=s, padding=p, groups=g))
    print(f"{name:<44} {ms:>10.3f} {flops / ms / 1e6:>10.1f}")
