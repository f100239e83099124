"""Reference timings for crates/ferrox/examples/bench_transforms.rs with the real mlx (CPU):
the same elementwise chains plain and under mx.compile, and the same MLP training step.

    pip install -q numpy "mlx[cpu]"
    python scripts/bench_transforms_ref.py
"""

import math
import time

import mlx.core as mx


def median_ms(iters, f):
    f()
    f()
    t = []
    for _ in range(iters):
        s = time.perf_counter()
        f()
        t.append((time.perf_counter() - s) * 1e3)
    t.sort()
    return t[iters // 2]


def gelu(x):
    return x * 0.5 * (1 + mx.erf(x * (1 / math.sqrt(2))))


def gelu_tanh(x):
    return 0.5 * x * (1 + mx.tanh(0.7978846 * (x + 0.044715 * x**3)))


def layer_norm_like(x, w, b):
    mu = mx.mean(x, axis=-1, keepdims=True)
    c = x - mu
    var = mx.mean(c * c, axis=-1, keepdims=True)
    return c * mx.rsqrt(var + 1e-5) * w + b


def row(name, shape, plain, compiled):
    print(f"| {name} | {shape} | {plain:.2f} | {compiled:.2f} | {plain / compiled:.2f}x |", flush=True)


def main():
    mx.set_default_device(mx.cpu)
    print(f"mlx {mx.__version__}")
    print("| case | shape | plain ms | compiled ms | speed-up |")
    print("|---|---|---:|---:|---:|")
    x = mx.random.normal((1 << 24,), key=mx.random.key(0))
    mx.eval(x)
    for name, f in [("gelu (erf)", gelu), ("gelu (tanh)", gelu_tanh)]:
        c = mx.compile(f)
        row(name, "16M", median_ms(9, lambda: mx.eval(f(x))), median_ms(9, lambda: mx.eval(c(x))))
    xs = x.reshape(4096, 4096)
    w = mx.random.normal((4096,), key=mx.random.key(1))
    b = mx.random.normal((4096,), key=mx.random.key(2))
    mx.eval(xs, w, b)
    c = mx.compile(layer_norm_like)
    row(
        "layer-norm-like",
        "4096x4096",
        median_ms(9, lambda: mx.eval(layer_norm_like(xs, w, b))),
        median_ms(9, lambda: mx.eval(c(xs, w, b))),
    )

    batch, d_in, hidden, classes = 256, 1024, 1024, 10
    inputs = mx.random.normal((batch, d_in), key=mx.random.key(3))
    labels = mx.random.randint(0, classes, (batch,), key=mx.random.key(4))
    params = [
        mx.random.normal((d_in, hidden), key=mx.random.key(5)) * 0.03,
        mx.zeros((hidden,)),
        mx.random.normal((hidden, classes), key=mx.random.key(6)) * 0.03,
        mx.zeros((classes,)),
    ]

    def loss(p):
        h = mx.maximum(inputs @ p[0] + p[1], 0)
        logits = h @ p[2] + p[3]
        picked = mx.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
        return mx.mean(mx.logsumexp(logits, axis=-1) - picked)

    vg = mx.value_and_grad(loss)
    state = {"p": params}

    def step():
        l, g = vg(state["p"])
        state["p"] = [p - 0.1 * gi for p, gi in zip(state["p"], g)]
        mx.eval(state["p"], l)

    print()
    print("| case | shape | ms |")
    print("|---|---|---:|")
    print(f"| mlp value_and_grad + sgd step | batch {batch}, {d_in}-{hidden}-{classes} | {median_ms(9, step):.2f} |")

    cot = mx.random.normal((4096, 4096), key=mx.random.key(7))
    mx.eval(cot)
    cases = [
        ("rms_norm vjp (x, w)", lambda x, w: mx.fast.rms_norm(x, w, 1e-5), [xs, w]),
        ("layer_norm vjp (x, w, b)", lambda x, w, b: mx.fast.layer_norm(x, w, b, 1e-5), [xs, w, b]),
    ]
    for name, f, primals in cases:
        ms = median_ms(9, lambda: mx.eval(mx.vjp(f, primals, [cot])[1]))
        print(f"| {name} | 4096x4096 | {ms:.2f} |")

    hq, hkv, length, d = 8, 2, 512, 64
    q, k, v = (mx.random.normal((1, h, length, d), key=mx.random.key(seed)) for h, seed in [(hq, 10), (hkv, 11), (hkv, 12)])
    cot = mx.random.normal((1, hq, length, d), key=mx.random.key(13))
    mx.eval(q, k, v, cot)

    def sdpa(q, k, v):
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=0.125, mask="causal")

    ms = median_ms(9, lambda: mx.eval(mx.vjp(sdpa, [q, k, v], [cot])[1]))
    print(f"| sdpa vjp (q, k, v), causal | 1x{hq}x{length}x{d}, {hkv} kv heads | {ms:.2f} |")


if __name__ == "__main__":
    main()
