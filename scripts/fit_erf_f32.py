"""Fits the rational approximation of erf used by ferrox's f32 kernels (backend/cpu/math.rs).

erf(x) ~ x P(x^2) / Q(x^2) on [0, 3.92] (erf rounds to 1 in f32 beyond), P of degree 6 and Q
of degree 5 with Q(0) = 1, for minimal relative error: linearized least squares
(x P - erf Q = 0, weighted by 1 / erf) reweighted towards the worst points (Lawson's method).
Prints the coefficients rounded to f32, the fit's relative error, and the f32 evaluation's
worst error in ulp (Horner with fused multiply-adds, emulated in f64).

    python3 scripts/fit_erf_f32.py
"""

from math import erf

import numpy as np

CLAMP = 3.92


def fit(deg_p, deg_q, iters=100):
    xs = np.linspace(1e-4, CLAMP, 20000)
    y = np.array([erf(v) for v in xs])
    t = xs * xs
    w = np.ones_like(xs)
    for _ in range(iters):
        a = np.concatenate([xs[:, None] * t[:, None] ** np.arange(deg_p + 1), -(y[:, None] * t[:, None] ** np.arange(1, deg_q + 1))], axis=1)
        scale = w / y
        sol, *_ = np.linalg.lstsq(a * scale[:, None], y * scale, rcond=None)
        p, q = sol[: deg_p + 1], np.concatenate([[1.0], sol[deg_p + 1 :]])
        err = np.abs(xs * np.polyval(p[::-1], t) / np.polyval(q[::-1], t) - y) / y
        w = w * np.sqrt(err / err.max()) + 1e-12
        w /= w.max()
    return p, q, err.max()


def f32_eval(x, p, q):
    """x P(x^2) / Q(x^2) in f32 with fused multiply-adds (products exact in f64)."""
    a = np.minimum(np.abs(x), np.float32(CLAMP)).astype(np.float32)
    t = (a.astype(np.float64) ** 2).astype(np.float32)

    def horner(c):
        acc = np.full_like(t, c[-1])
        for v in c[-2::-1]:
            acc = (acc.astype(np.float64) * t + np.float64(v)).astype(np.float32)
        return acc

    r = ((a * horner(p)).astype(np.float32) / horner(q)).astype(np.float32)
    return np.copysign(np.minimum(r, np.float32(1.0)), x)


def main():
    p, q, rel = fit(6, 5)
    p32, q32 = p.astype(np.float32), q.astype(np.float32)
    print(f"relative error of the fit: {rel:.3g}")
    print("P:", ", ".join(repr(float(v)) for v in p32))
    print("Q:", ", ".join(repr(float(v)) for v in q32))
    grid = np.concatenate([np.linspace(0, 12, 400001), 1e-30 * 1.002 ** np.arange(40000)]).astype(np.float32)
    grid = grid[grid < 12]
    want = np.array([erf(float(v)) for v in grid]).astype(np.float32)
    got = f32_eval(grid, p32, q32)
    ulps = np.abs(got.view(np.int32).astype(np.int64) - want.view(np.int32).astype(np.int64))
    print(f"f32 evaluation: max {ulps.max()} ulp")


if __name__ == "__main__":
    main()
