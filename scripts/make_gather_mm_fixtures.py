#!/usr/bin/env python3
"""Makes the fixtures of ferrox's gather_mm from real mlx (CPU) and a NumPy reference.

Writes crates/ferrox/tests/fixtures/gather_mm.safetensors, which
crates/ferrox/tests/gather_mm.rs replays. Deterministic (seeded).

Cases (tensors `{case}/a`, `{case}/b`, `{case}/lhs`, `{case}/rhs`, `{case}/out` from
mx.gather_mm, `{case}/out_np` from NumPy in float64; an absent lhs means "all, in order"):

* `general`: a [3, 2, 4, 16], b [5, 16, 8], lhs and rhs [7] (both gathered, repeats).
* `moe`: the mixture-of-experts call of mlx-lm's SwitchGLU: a [6, 1, 1, 32], b = experts
  [4, 48, 32] transposed, rhs [6, 2] (top-2 routing), no lhs.
* `moe_bf16`: the same in bfloat16 (mlx's CPU gather_mm runs in float32 only, so `out` is
  its product of the bfloat16 values upcast).
* `sorted`: tokens sorted by expert (mlx-lm's path for many tokens), a [10, 1, 32], rhs [10]
  sorted, sorted_indices=True.

Gradients (`grad/*`): mx.vjp of the `general` case for a fixed cotangent: `grad/ga`,
`grad/gb`.

Usage: python3 scripts/make_gather_mm_fixtures.py   (needs `pip install "mlx[cpu]" numpy`)
"""

import os

import mlx.core as mx
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "crates", "ferrox", "tests", "fixtures", "gather_mm.safetensors")


def reference(a, b, lhs, rhs):
    """NumPy float64 gather_mm."""
    a64, b64 = np.array(a.astype(mx.float32), np.float64), np.array(b.astype(mx.float32), np.float64)
    af = a64.reshape(-1, *a64.shape[-2:])
    bf = b64.reshape(-1, *b64.shape[-2:])
    if lhs is None:
        lhs = np.arange(af.shape[0]).reshape(a64.shape[:-2])
    lhs, rhs = np.broadcast_arrays(np.array(lhs), np.array(rhs))
    out = np.stack([af[i] @ bf[j] for i, j in zip(lhs.ravel(), rhs.ravel())])
    return out.reshape(*lhs.shape, af.shape[1], bf.shape[2]).astype(np.float32)


def main():
    rng = np.random.default_rng(7)
    t = {}

    def case(name, a, b, lhs, rhs, sorted_indices=False):
        # mlx's CPU gather_mm computes in float32 only: half inputs are upcast for it.
        a32, b32 = a.astype(mx.float32), b.astype(mx.float32)
        out = mx.gather_mm(a32, b32, lhs_indices=lhs, rhs_indices=rhs, sorted_indices=sorted_indices)
        t[f"{name}/a"], t[f"{name}/b"] = a, b
        if lhs is not None:
            t[f"{name}/lhs"] = lhs
        t[f"{name}/rhs"] = rhs
        t[f"{name}/out"] = out
        t[f"{name}/out_np"] = mx.array(reference(a, b, None if lhs is None else np.array(lhs), np.array(rhs)))

    a = mx.array(rng.standard_normal((3, 2, 4, 16)).astype(np.float32))
    b = mx.array(rng.standard_normal((5, 16, 8)).astype(np.float32))
    lhs = mx.array(np.array([0, 5, 2, 2, 3, 1, 4], np.uint32))
    rhs = mx.array(np.array([4, 0, 0, 3, 1, 4, 2], np.uint32))
    case("general", a, b, lhs, rhs)

    experts = mx.array(rng.standard_normal((4, 48, 32)).astype(np.float32))
    x = mx.array(rng.standard_normal((6, 1, 1, 32)).astype(np.float32))
    top2 = mx.array(np.array([[0, 3], [1, 3], [2, 0], [3, 1], [1, 2], [0, 2]], np.uint32))
    case("moe", x, experts.swapaxes(-1, -2), None, top2)
    case("moe_bf16", x.astype(mx.bfloat16), experts.astype(mx.bfloat16).swapaxes(-1, -2), None, top2)

    xs = mx.array(rng.standard_normal((10, 1, 32)).astype(np.float32))
    rs = mx.array(np.sort(rng.integers(0, 4, 10)).astype(np.uint32))
    case("sorted", xs, experts.swapaxes(-1, -2), None, rs, sorted_indices=True)

    cot = mx.array(rng.standard_normal((7, 4, 8)).astype(np.float32))
    _, (ga, gb) = mx.vjp(lambda a, b: mx.gather_mm(a, b, lhs_indices=lhs, rhs_indices=rhs), [a, b], [cot])
    t["grad/cot"], t["grad/ga"], t["grad/gb"] = cot, ga, gb

    # The CPU reference in ferrox tests reads contiguous arrays.
    t = {k: mx.contiguous(v) for k, v in t.items()}
    mx.save_safetensors(OUT, t)
    print(f"wrote {OUT}: {len(t)} tensors")


if __name__ == "__main__":
    main()
