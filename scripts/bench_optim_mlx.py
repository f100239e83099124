#!/usr/bin/env python3
"""Times one optimizer update (eager and mx.compile) in real mlx on the CPU, over the same
parameter map as crates/ferrox-nn/examples/bench_optim.rs (12 blocks of 4 × 512×512
matrices and 4 × 512 vectors; with the argument `one`, a single 4096×3078 matrix)."""

import sys
import time
from functools import partial

import mlx.core as mx
import mlx.optimizers as optim


def timed(iters, f):
    f()
    f()
    t = []
    for _ in range(iters):
        s = time.perf_counter()
        f()
        t.append(time.perf_counter() - s)
    return sorted(t)[iters // 2]


def bench(name, make, params, grads):
    opt = make()
    state = {"p": params}

    def eager():
        state["p"] = opt.apply_gradients(grads, state["p"])
        mx.eval(state["p"], opt.state)

    e = timed(20, eager)
    opt = make()
    opt.init(params)
    cstate = {"p": params}

    @partial(mx.compile, inputs=opt.state, outputs=opt.state)
    def step(p, g):
        return opt.apply_gradients(g, p)

    def compiled():
        cstate["p"] = step(cstate["p"], grads)
        mx.eval(cstate["p"], opt.state)

    c = timed(20, compiled)
    print(f"| {name} | {e * 1e3:.2f} | {c * 1e3:.2f} |")


def main():
    mx.set_default_device(mx.cpu)
    key = mx.random.key(0)
    params = {}
    if "one" in sys.argv:
        params["w"] = mx.random.normal((4096, 3078), key=key) * 0.02
    for b in range(0 if "one" in sys.argv else 12):
        for m in "qkvo":
            params[f"layers.{b}.{m}.weight"] = mx.random.normal((512, 512), key=key) * 0.02
            params[f"layers.{b}.{m}.bias"] = mx.zeros((512,))
    grads = {k: mx.random.normal(v.shape, key=mx.random.key(1)) * 1e-3 for k, v in params.items()}
    mx.eval(params, grads)
    n = sum(v.size for v in params.values())
    print(f"mlx {mx.__version__}: one update of {n} float32 parameters in {len(params)} arrays (median of 20)")
    print("| optimizer | eager ms | compiled ms |\n|---|---|---|")
    bench("SGD momentum", lambda: optim.SGD(0.1, momentum=0.9), params, grads)
    bench("AdamW", lambda: optim.AdamW(1e-3), params, grads)


if __name__ == "__main__":
    main()
