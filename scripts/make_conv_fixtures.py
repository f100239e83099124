#!/usr/bin/env python3
"""Makes the NumPy-float64 reference fixture for ferrox's convolutions.

Writes crates/ferrox/tests/fixtures/conv_numpy.json, which crates/ferrox/tests/conv.rs replays
through ferrox. Deterministic (seeded): rerunning gives the same file.

Layouts are MLX's, channels last: input [N, spatial..., C_in], weight
[C_out, kernel..., C_in / groups], output [N, out..., C_out], for plain and transposed
convolutions alike.

Each case:

  {"name": "conv2d/stride-pad-dil", "op": "conv2d",
   "args": {"stride": [2, 1], "padding": [1, 0], "dilation": [1, 2], "groups": 1},
   "x": {"shape": [...], "data": [...]}, "w": {"shape": [...], "data": [...]},
   "out": {"shape": [...], "data": [...]}}

* `op` is conv1d / conv2d / conv3d (args stride, padding, dilation, groups),
  conv_transpose1d / 2d / 3d (plus output_padding), or conv_general (stride, padding_lo,
  padding_hi — negative values crop —, kernel_dilation, input_dilation, groups, flip).
* Inputs are multiples of 1/32 below 4 in magnitude, exact in bfloat16, float16, float32.
* `gen` instead of `data` makes a large input without storing it:
  value[i] = (((i * mul) % mod) - mod // 2) / 32 (row-major flat index i).
* A large output stores `samples` ([[flat index, value], ...]) instead of `data`.

The references are two independent float64 implementations written for this script: the
general convolution dilates, pads / crops and slides the (dilated, flipped) kernel over the
input explicitly; a transposed convolution is computed by its definition, each input element
scattering `weight[:, k, :]` to output position i * stride + k * dilation - padding (so the
test also checks ferrox's rewriting of it into a general convolution).

If mlx is installed, some cases are cross-checked against mx.conv1d / conv2d / conv3d /
conv_transpose1d / conv_transpose2d / conv_general, to be sure the layouts and semantics match
MLX's. The one known difference: MLX crops an input-dilated axis with negative padding wrongly
(it slices the undilated input by the padding amount), so a transposed convolution with
padding > dilation * (k - 1) gives a shorter, shifted output in MLX; ferrox follows the
definition above (PyTorch's). Those cases are not cross-checked.

Usage: python3 scripts/make_conv_fixtures.py
"""

import itertools
import json
import os

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "ferrox", "tests", "fixtures",
                   "conv_numpy.json")

rng = np.random.default_rng(20240612)


def rand(shape):
    return np.round(rng.uniform(-3.9, 3.9, size=shape) * 32) / 32


def gen(shape, mul, mod):
    i = np.arange(int(np.prod(shape)), dtype=np.int64)
    return ((((i * mul) % mod) - mod // 2) / 32.0).reshape(shape)


def conv_general_ref(x, w, stride, lo, hi, kdil, idil, groups, flip):
    """Cross-correlation of x [N, S..., C] with w [O, K..., C/groups], explicitly."""
    nsp = x.ndim - 2
    n, cin = x.shape[0], x.shape[-1]
    cout = w.shape[0]
    # Dilate the input.
    dshape = [n] + [(s - 1) * d + 1 if s > 0 else 0 for s, d in zip(x.shape[1:-1], idil)] + [cin]
    xd = np.zeros(dshape)
    xd[(slice(None),) + tuple(slice(None, None, d) for d in idil) + (slice(None),)] = x
    # Pad (or crop, for negative padding) each spatial axis.
    for i in range(nsp):
        ax = i + 1
        if lo[i] >= 0:
            widths = [(0, 0)] * xd.ndim
            widths[ax] = (lo[i], 0)
            xd = np.pad(xd, widths)
        else:
            xd = np.take(xd, range(-lo[i], xd.shape[ax]), axis=ax)
        if hi[i] >= 0:
            widths = [(0, 0)] * xd.ndim
            widths[ax] = (0, hi[i])
            xd = np.pad(xd, widths)
        else:
            xd = np.take(xd, range(0, xd.shape[ax] + hi[i]), axis=ax)
    # Flip, then dilate the kernel.
    wk = w[(slice(None),) + (slice(None, None, -1),) * nsp] if flip else w
    kshape = [cout] + [(k - 1) * d + 1 for k, d in zip(w.shape[1:-1], kdil)] + [w.shape[-1]]
    wd = np.zeros(kshape)
    wd[(slice(None),) + tuple(slice(None, None, d) for d in kdil) + (slice(None),)] = wk
    osz = [(xd.shape[i + 1] - kshape[i + 1]) // stride[i] + 1 for i in range(nsp)]
    assert all(o > 0 for o in osz), (x.shape, w.shape, osz)
    cg, og = cin // groups, cout // groups
    out = np.zeros([n] + osz + [cout])
    for pos in itertools.product(*[range(o) for o in osz]):
        win = xd[(slice(None),) + tuple(slice(p * s, p * s + k) for p, s, k in zip(pos, stride, kshape[1:-1]))]
        for g in range(groups):
            a = win[..., g * cg:(g + 1) * cg].reshape(n, -1)
            b = wd[g * og:(g + 1) * og].reshape(og, -1)
            out[(slice(None),) + pos + (slice(g * og, (g + 1) * og),)] = a @ b.T
    return out


def conv_transpose_ref(x, w, stride, padding, dilation, output_padding, groups):
    """Transposed convolution by its definition: every input element scatters the kernel."""
    nsp = x.ndim - 2
    n, cin = x.shape[0], x.shape[-1]
    cout = w.shape[0]
    ks = w.shape[1:-1]
    osz = [(l - 1) * s - 2 * p + d * (k - 1) + op + 1
           for l, s, p, d, k, op in zip(x.shape[1:-1], stride, padding, dilation, ks, output_padding)]
    full_sz = [max((l - 1) * s + d * (k - 1) + 1, p + o)
               for l, s, d, k, p, o in zip(x.shape[1:-1], stride, dilation, ks, padding, osz)]
    full = np.zeros([n] + full_sz + [cout])
    cg, og = cin // groups, cout // groups
    for ipos in itertools.product(*[range(l) for l in x.shape[1:-1]]):
        for kpos in itertools.product(*[range(k) for k in ks]):
            opos = tuple(i * s + k * d for i, s, k, d in zip(ipos, stride, kpos, dilation))
            for g in range(groups):
                xv = x[(slice(None),) + ipos + (slice(g * cg, (g + 1) * cg),)]
                wv = w[(slice(g * og, (g + 1) * og),) + kpos]
                full[(slice(None),) + opos + (slice(g * og, (g + 1) * og),)] += xv @ wv.T
    return full[(slice(None),) + tuple(slice(p, p + o) for p, o in zip(padding, osz))]


CASES = []
MLX_CHECKED = []


def tup(v, nsp):
    return list(v) if isinstance(v, (list, tuple)) else [v] * nsp


def add(name, op, x_shape, w_shape, args, big=None, mlx=True):
    nsp = len(x_shape) - 2
    if big:
        x = gen(x_shape, *big[0])
        w = gen(w_shape, *big[1])
    else:
        x, w = rand(x_shape), rand(w_shape)
    groups = args.get("groups", 1)
    if op.startswith("conv_transpose"):
        full = dict(stride=tup(args.get("stride", 1), nsp), padding=tup(args.get("padding", 0), nsp),
                    dilation=tup(args.get("dilation", 1), nsp),
                    output_padding=tup(args.get("output_padding", 0), nsp), groups=groups)
        out = conv_transpose_ref(x, w, full["stride"], full["padding"], full["dilation"], full["output_padding"],
                                 groups)
    elif op == "conv_general":
        full = dict(stride=tup(args.get("stride", 1), nsp), padding_lo=tup(args["padding_lo"], nsp),
                    padding_hi=tup(args["padding_hi"], nsp), kernel_dilation=tup(args.get("kernel_dilation", 1), nsp),
                    input_dilation=tup(args.get("input_dilation", 1), nsp), groups=groups,
                    flip=args.get("flip", False))
        out = conv_general_ref(x, w, full["stride"], full["padding_lo"], full["padding_hi"], full["kernel_dilation"],
                               full["input_dilation"], groups, full["flip"])
    else:
        full = dict(stride=tup(args.get("stride", 1), nsp), padding=tup(args.get("padding", 0), nsp),
                    dilation=tup(args.get("dilation", 1), nsp), groups=groups)
        p = full["padding"]
        out = conv_general_ref(x, w, full["stride"], p, p, full["dilation"], [1] * nsp, groups, False)
    case = {"name": f"{op}/{name}", "op": op, "args": full}
    if big:
        case["x"] = {"shape": list(x_shape), "gen": list(big[0])}
        case["w"] = {"shape": list(w_shape), "gen": list(big[1])}
        flat = out.ravel()
        idx = sorted(set(rng.choice(flat.size, size=min(400, flat.size), replace=False).tolist()) | {0, flat.size - 1})
        case["out"] = {"shape": list(out.shape), "samples": [[i, float(flat[i])] for i in idx]}
    else:
        case["x"] = {"shape": list(x_shape), "data": [float(v) for v in x.ravel()]}
        case["w"] = {"shape": list(w_shape), "data": [float(v) for v in w.ravel()]}
        case["out"] = {"shape": list(out.shape), "data": [float(v) for v in out.ravel()]}
    CASES.append(case)
    if mlx:
        MLX_CHECKED.append((case, x, w, out))


# conv1d: direct path (C_in/g * C_out/g <= 16) and im2col + GEMM path.
add("basic", "conv1d", (2, 9, 3), (4, 3, 3), {})
add("stride2-pad1-dil2", "conv1d", (2, 16, 6), (8, 3, 6), {"stride": 2, "padding": 1, "dilation": 2})
add("groups2-direct", "conv1d", (1, 10, 8), (6, 2, 4), {"padding": 2, "groups": 2})
add("groups2-gemm", "conv1d", (2, 12, 12), (12, 3, 6), {"stride": 3, "padding": 1, "groups": 2})
add("depthwise", "conv1d", (2, 11, 5), (5, 3, 1), {"padding": 1, "groups": 5})
add("depthwise-multiplier", "conv1d", (2, 9, 4), (8, 3, 1), {"stride": 2, "padding": 1, "groups": 4})
add("kernel1-stride2", "conv1d", (3, 7, 9), (5, 1, 9), {"stride": 2})
# conv2d
add("basic-pad1", "conv2d", (2, 7, 6, 3), (5, 3, 3, 3), {"padding": 1})
add("stride-pad-dil", "conv2d", (2, 9, 8, 8), (16, 3, 2, 8), {"stride": [2, 1], "padding": [1, 0], "dilation": [1, 2]})
add("groups2-gemm", "conv2d", (1, 6, 7, 12), (12, 3, 3, 6), {"padding": 1, "groups": 2})
add("groups3-direct", "conv2d", (2, 5, 5, 6), (9, 2, 2, 2), {"stride": 2, "padding": 1, "groups": 3})
add("depthwise", "conv2d", (2, 8, 7, 6), (6, 3, 3, 1), {"stride": 2, "padding": 1, "groups": 6})
add("pointwise", "conv2d", (2, 5, 5, 16), (8, 1, 1, 16), {})
add("pointwise-stride2", "conv2d", (2, 5, 6, 16), (8, 1, 1, 16), {"stride": 2})
add("batch3", "conv2d", (3, 10, 10, 4), (8, 3, 3, 4), {})
add("parallel-gemm", "conv2d", (4, 16, 16, 8), (16, 3, 3, 8), {"padding": 1}, big=((7, 61), (13, 97)))
add("parallel-depthwise", "conv2d", (2, 32, 32, 32), (32, 3, 3, 1), {"padding": 1, "groups": 32},
    big=((11, 53), (5, 37)))
add("parallel-pointwise", "conv2d", (2, 32, 32, 32), (48, 1, 1, 32), {}, big=((3, 41), (7, 29)))
# conv3d
add("direct", "conv3d", (1, 4, 5, 4, 2), (3, 2, 2, 2, 2), {"padding": 1})
add("gemm-stride2", "conv3d", (2, 5, 4, 5, 6), (4, 3, 2, 3, 6), {"stride": 2, "padding": [1, 0, 1], "dilation": [1, 2, 1]})
# transposed
add("s2-p1-op1", "conv_transpose1d", (2, 5, 3), (4, 3, 3), {"stride": 2, "padding": 1, "output_padding": 1})
add("s3-d2", "conv_transpose1d", (2, 6, 6), (8, 2, 6), {"stride": 3, "dilation": 2})
add("groups2", "conv_transpose1d", (1, 5, 4), (6, 3, 2), {"stride": 2, "groups": 2})
add("pad-beyond-kernel", "conv_transpose1d", (1, 5, 2), (3, 2, 2), {"stride": 2, "padding": 2}, mlx=False)
add("s2-p1-op10", "conv_transpose2d", (2, 4, 5, 3), (4, 3, 3, 3), {"stride": 2, "padding": 1, "output_padding": [1, 0]})
add("gemm-d2", "conv_transpose2d", (1, 3, 4, 8), (8, 2, 3, 8),
    {"stride": [1, 2], "padding": [0, 1], "dilation": [2, 1], "output_padding": [0, 1]})
add("groups2", "conv_transpose2d", (2, 3, 3, 8), (10, 3, 3, 4), {"stride": 2, "padding": 1, "groups": 2})
add("s2", "conv_transpose3d", (1, 3, 2, 3, 4), (5, 2, 3, 2, 4), {"stride": [2, 1, 2], "padding": [0, 1, 1]})
# conv_general: asymmetric and negative padding, input dilation, flip.
add("asym-idil-flip", "conv_general", (2, 5, 7, 6), (8, 3, 2, 6),
    {"stride": [1, 2], "padding_lo": [2, 0], "padding_hi": [0, 1], "kernel_dilation": [1, 2],
     "input_dilation": [2, 1], "flip": True})
add("asym-direct", "conv_general", (2, 9, 2), (3, 3, 2), {"padding_lo": 0, "padding_hi": 3, "stride": 2})
add("negative-pad", "conv_general", (2, 10, 3), (2, 3, 3), {"padding_lo": -1, "padding_hi": -2})
add("negative-pad-idil", "conv_general", (1, 6, 2), (3, 2, 2),
    {"padding_lo": -2, "padding_hi": -1, "input_dilation": 3}, mlx=False)
add("groups-flip-3d", "conv_general", (1, 3, 4, 3, 4), (4, 2, 2, 2, 2),
    {"padding_lo": [1, 0, 0], "padding_hi": [0, 1, 1], "groups": 2, "flip": True}, mlx=False)


def mlx_cross_check():
    try:
        import mlx.core as mx
    except ImportError:
        print("mlx not installed: skipping the cross-check against MLX")
        return
    checked = 0
    for case, x, w, ref in MLX_CHECKED:
        a = case["args"]
        xm, wm = mx.array(x.astype(np.float32)), mx.array(w.astype(np.float32))
        nsp = x.ndim - 2
        op = case["op"]
        pair = (lambda v: tuple(v)) if nsp > 1 else (lambda v: v[0])
        if op in ("conv1d", "conv2d", "conv3d"):
            got = getattr(mx, op)(xm, wm, stride=pair(a["stride"]), padding=pair(a["padding"]),
                                  dilation=pair(a["dilation"]), groups=a["groups"])
        elif op.startswith("conv_transpose"):
            got = getattr(mx, op)(xm, wm, stride=pair(a["stride"]), padding=pair(a["padding"]),
                                  dilation=pair(a["dilation"]), output_padding=pair(a["output_padding"]),
                                  groups=a["groups"])
        else:
            got = mx.conv_general(xm, wm, stride=a["stride"], padding=(a["padding_lo"], a["padding_hi"]),
                                  kernel_dilation=a["kernel_dilation"], input_dilation=a["input_dilation"],
                                  groups=a["groups"], flip=a["flip"])
        got = np.array(got, dtype=np.float64)
        assert got.shape == ref.shape, (case["name"], got.shape, ref.shape)
        err = np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30)
        assert err < 1e-5, (case["name"], err)
        checked += 1
    print(f"mlx {mx.__version__}: {checked} cases agree with the NumPy references")


mlx_cross_check()
os.makedirs(os.path.dirname(OUT), exist_ok=True)
with open(OUT, "w") as f:
    json.dump({"cases": CASES}, f, separators=(",", ":"))
print(f"wrote {len(CASES)} cases to {os.path.relpath(OUT)} ({os.path.getsize(OUT) // 1024} KiB)")
