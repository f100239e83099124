#!/usr/bin/env python3
"""NumPy float64 references for the indexing, sorting, fused (`fast`) and einsum ops.

Writes crates/ferrox/tests/fixtures/indexing_fast.json, read by
crates/ferrox/tests/ops_numpy_indexing.rs. Deterministic (fixed seeds); run from the repo root:

    python3 scripts/make_indexing_fast_fixtures.py

Every reference is computed here in float64 from the exact input values (inputs are first
rounded to the dtype under test, so only the op's own rounding is left to the tolerance).

Each case is {name, op, dtype, inputs: {name: tensor id}, params, expected: [tensor, ...], check};
the input tensors are stored once each, in the top-level list "tensors". `check` is "close"
(per dtype tolerance; exact for integer outputs), "exact", "partition" (expected holds the value a
full sort puts at kth, per line; the test checks the partition property around it) or
"sorted_along_axis" (topk: the test sorts each output line before comparing).
A tensor is {dtype, shape, data (row-major), layout}; the layout tells the test how to build
the *same logical values* as a non-contiguous array:
  "contig"     row-major;
  "transpose"  stored with its axes reversed, viewed through a transpose;
  "slice"      stored with the last axis doubled (junk in between), viewed with step 2;
  "broadcast"  `data` has shape `stored`, broadcast to `shape`.
Non-finite floats are written as the strings "nan", "inf", "-inf" (JSON has no literal for them).

If mlx is importable, the references of rope, rms_norm, layer_norm, scaled_dot_product_attention,
put_along_axis and sort are also compared with MLX here, and any mismatch is printed (MLX's
outputs are never written to the fixture).
"""

import json
import os
import sys

import numpy as np

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "ferrox", "tests", "fixtures", "indexing_fast.json")

FLOATS = ["float32", "float16", "bfloat16", "float64"]
CASES = []
MLX_MISMATCHES = []


# ---------------------------------------------------------------------------------------------
# values and encoding


def round_bf16(x):
    """Round float64 values to the nearest bfloat16 (ties to even), as float64."""
    f = np.asarray(x, dtype=np.float32)
    u = f.view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    out = u.astype(np.uint32).view(np.float32).astype(np.float64)
    return np.where(np.isnan(f), np.nan, out)


def round_to(x, dtype):
    """The values of `x` as stored in `dtype`, as float64 (ints for integer dtypes)."""
    x = np.asarray(x, dtype=np.float64)
    if dtype == "float64":
        return x.copy()
    if dtype == "float32":
        return x.astype(np.float32).astype(np.float64)
    if dtype == "float16":
        return x.astype(np.float16).astype(np.float64)
    if dtype == "bfloat16":
        return round_bf16(x)
    if dtype in ("int32", "int64", "uint32"):
        return np.round(x).astype(np.int64)
    raise ValueError(dtype)


def enc_list(v):
    out = []
    for x in np.asarray(v).ravel().tolist():
        if isinstance(x, float):
            if np.isnan(x):
                out.append("nan")
            elif np.isinf(x):
                out.append("inf" if x > 0 else "-inf")
            else:
                # json writes the shortest repr that round-trips float64; integral values as ints.
                out.append(int(x) if x == int(x) and abs(x) < 2**53 else x)
        else:
            out.append(int(x))
    return out


def tensor(values, dtype, layout="contig", stored=None):
    """A fixture tensor: logical values (already rounded to dtype), dtype and layout."""
    v = np.asarray(values)
    t = {"dtype": dtype, "shape": list(v.shape), "layout": layout}
    if layout == "broadcast":
        t["stored"] = list(stored)
        # The broadcast source: the first element along each broadcast axis.
        idx = tuple(slice(0, 1) if s == 1 and n != 1 else slice(None) for s, n in zip(stored, v.shape))
        src = v[idx].reshape(stored)
        assert np.array_equal(np.broadcast_to(src, v.shape), v, equal_nan=True)
        t["data"] = enc_list(src)
    else:
        if layout == "transpose":
            assert v.ndim >= 2
        if layout == "slice":
            assert v.ndim >= 1
        t["data"] = enc_list(v)
    return t


def out_tensor(values, dtype):
    v = np.asarray(values)
    if v.dtype.kind == "f":
        # Values the dtype holds exactly (those moved by indexing and sorting ops) are kept
        # exact; computed ones are cut to significant digits far below the test's tolerance.
        digits = {"float64": 14, "float32": 8}.get(dtype, 5)
        flat = v.ravel()
        exact = round_to(flat, dtype) if dtype in FLOATS else flat
        v = np.array(
            [x if (x == e or np.isnan(x)) else float(f"{x:.{digits}g}") for x, e in zip(flat, exact)]
        ).reshape(v.shape)
    return {"dtype": dtype, "shape": list(v.shape), "data": enc_list(v)}


def rng_for(name):
    return np.random.default_rng(abs(hash_str(name)) % (2**32))


def hash_str(s):
    h = 1469598103934665603
    for c in s.encode():
        h = ((h ^ c) * 1099511628211) % (2**64)
    return h


def rand(rng, shape, dtype, low=-2.0, high=2.0):
    """Values exactly representable in `dtype`."""
    if dtype in ("int32", "int64", "uint32"):
        lo = 0 if dtype == "uint32" else int(low * 10)
        return rng.integers(lo, int(high * 10) + 1, size=shape).astype(np.int64)
    # On a grid of 1/32: exact in every float dtype, and short in the JSON.
    return round_to(np.round(rng.uniform(low, high, size=shape) * 32) / 32, dtype)


def add(name, op, dtype, inputs, params, expected, check="close", out_dtype=None):
    """Records one case; `expected` is a list of arrays (or one array)."""
    if not isinstance(expected, (list, tuple)):
        expected = [expected]
    odt = out_dtype or dtype
    CASES.append(
        {
            "name": name,
            "op": op,
            "dtype": dtype,
            "inputs": inputs,
            "params": params,
            "expected": [out_tensor(e, odt) for e in expected],
            "check": check,
        }
    )


def layouts(dtype):
    """Every layout for float32 and int32; one non-contiguous layout besides row-major for the
    other dtypes (the fixture stays small, and the strided paths are dtype-independent)."""
    if dtype in ("float32", "int32"):
        return ["contig", "transpose", "slice"]
    return ["contig", "slice" if dtype == "float16" else "transpose"]


# ---------------------------------------------------------------------------------------------
# references


def ref_gather(a, indices, axes, slice_sizes):
    idx = np.broadcast_arrays(*indices) if indices else []
    ishape = idx[0].shape if idx else ()
    out = np.empty(ishape + tuple(slice_sizes), dtype=a.dtype)
    for pos in np.ndindex(*ishape):
        starts = [0] * a.ndim
        for ix, ax in zip(idx, axes):
            v = int(ix[pos])
            starts[ax] = v + a.shape[ax] if v < 0 else v
        sl = tuple(slice(s, s + z) for s, z in zip(starts, slice_sizes))
        out[pos] = a[sl]
    return out


def ref_scatter(a, indices, updates, axes, mode):
    out = a.copy()
    idx = np.broadcast_arrays(*indices)
    ishape = idx[0].shape
    slice_shape = updates.shape[len(ishape):]
    for pos in np.ndindex(*ishape):
        starts = [0] * a.ndim
        for ix, ax in zip(idx, axes):
            v = int(ix[pos])
            starts[ax] = v + a.shape[ax] if v < 0 else v
        sl = tuple(slice(s, s + z) for s, z in zip(starts, slice_shape))
        u = updates[pos]
        if mode == "assign":
            out[sl] = u
        elif mode == "add":
            out[sl] = out[sl] + u
        elif mode == "prod":
            out[sl] = out[sl] * u
        elif mode == "max":
            out[sl] = np.maximum(out[sl], u)
        elif mode == "min":
            out[sl] = np.minimum(out[sl], u)
    return out


def ref_scatter_along(a, idx, vals, axis, mode):
    """put_along_axis with `mode`; indices and values broadcast against `a` off the axis."""
    if axis is None:
        a2, idx, vals = a.ravel(), idx.ravel(), np.asarray(vals).ravel()
        return ref_scatter_along(a2, idx, vals, 0, mode).reshape(a.shape)
    out = a.copy()
    # Broadcast shape of idx, vals, and a off the axis (the axis length from idx/vals).
    shp = list(np.broadcast_shapes(idx.shape, vals.shape))
    off = list(a.shape)
    off[axis] = 1
    full = list(np.broadcast_shapes(tuple(shp[:axis] + [1] + shp[axis + 1 :]), tuple(off)))
    full[axis] = shp[axis]
    ib = np.broadcast_to(idx, full)
    vb = np.broadcast_to(vals, full)
    for pos in np.ndindex(*full):
        j = int(ib[pos])
        j = j + a.shape[axis] if j < 0 else j
        dst = pos[:axis] + (j,) + pos[axis + 1 :]
        if mode == "assign":
            out[dst] = vb[pos]
        elif mode == "add":
            out[dst] += vb[pos]
    return out


def ref_softmax(x, axes):
    m = np.max(x, axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axes, keepdims=True)


def ref_logsumexp(x, axes, keepdims):
    m = np.max(x, axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    r = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    if not keepdims:
        r = np.squeeze(r, axis=axes) if axes is not None else r.reshape(())
    return r


def f32(v):
    return float(np.float32(v))


def ref_rms_norm(x, w, eps):
    r = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + f32(eps))
    return r * w if w is not None else r


def ref_layer_norm(x, w, b, eps):
    mu = np.mean(x, axis=-1, keepdims=True)
    var = np.mean((x - mu) ** 2, axis=-1, keepdims=True)
    r = (x - mu) / np.sqrt(var + f32(eps))
    if w is not None:
        r = r * w
    if b is not None:
        r = r + b
    return r


def ref_rope(x, dims, traditional, base, scale, offset, freqs):
    """positions p = offset + l (axis -2); theta_i = p*scale*base^(-2i/dims) or p*scale/freqs[i]."""
    L = x.shape[-2]
    half = dims // 2
    p = (offset + np.arange(L, dtype=np.float64)) * f32(scale)
    if freqs is None:
        inv = f32(base) ** (-2.0 * np.arange(half) / dims)
    else:
        inv = 1.0 / np.asarray(freqs, dtype=np.float64)
    th = p[:, None] * inv[None, :]
    c, s = np.cos(th), np.sin(th)
    out = x.copy()
    if traditional:
        a, b = x[..., 0:dims:2], x[..., 1:dims:2]
        out[..., 0:dims:2] = a * c - b * s
        out[..., 1:dims:2] = a * s + b * c
    else:
        a, b = x[..., :half], x[..., half:dims]
        out[..., :half] = a * c - b * s
        out[..., half:dims] = a * s + b * c
    return out


def ref_sdpa(q, k, v, scale, mask):
    """mask: None, "causal", or an array (bool keep/drop, or additive float)."""
    B, Hq, L, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    rep = Hq // Hkv
    k = np.repeat(k, rep, axis=1)
    v = np.repeat(v, rep, axis=1)
    s = np.einsum("bhld,bhsd->bhls", q, k) * f32(scale)
    if isinstance(mask, str) and mask == "causal":
        keep = np.arange(S)[None, :] <= np.arange(L)[:, None] + (S - L)
        s = np.where(keep, s, -np.inf)
    elif mask is not None:
        if mask.dtype == bool:
            s = np.where(mask, s, -np.inf)
        else:
            s = s + mask
    m = np.max(s, axis=-1, keepdims=True)
    e = np.exp(s - m)
    p = e / np.sum(e, axis=-1, keepdims=True)
    return np.einsum("bhls,bhsd->bhld", p, v)


# ---------------------------------------------------------------------------------------------
# cases

IDX_DTYPES = ["float32", "int32", "float16", "bfloat16", "float64"]


def gen_take():
    for dt in IDX_DTYPES:
        for lay in layouts(dt):
            r = rng_for(f"take{dt}{lay}")
            a = rand(r, (4, 5), dt)
            ia = tensor(a, dt, lay)
            idx = np.array([[0, -1, 2], [3, 1, -4]])
            it = tensor(idx, "int32")
            add(f"take axis=0 2-d idx {dt} {lay}", "take", dt, {"a": ia, "idx": it}, {"axis": 0}, np.take(a, idx, 0))
            idx1 = np.array([4, -5, 0, 0, 2])
            add(
                f"take axis=-1 {dt} {lay}",
                "take",
                dt,
                {"a": ia, "idx": tensor(idx1, "int32")},
                {"axis": -1},
                np.take(a, idx1, -1),
            )
            idxf = np.array([[19, -20], [7, 0]])
            add(
                f"take flat {dt} {lay}",
                "take",
                dt,
                {"a": ia, "idx": tensor(idxf, "int32", "transpose")},
                {"axis": None},
                np.take(a, idxf),
            )
    r = rng_for("take3")
    a = rand(r, (2, 3, 4), "float32")
    idx = np.array([[[2, 0]], [[-1, 1]]])
    add(
        "take axis=1 3-d idx uint32/int64 idx",
        "take",
        "float32",
        {"a": tensor(a, "float32", "transpose"), "idx": tensor(np.abs(idx), "uint32")},
        {"axis": 1},
        np.take(a, np.abs(idx), 1),
    )
    add(
        "take scalar index",
        "take",
        "float32",
        {"a": tensor(a, "float32"), "idx": tensor(np.array(-2), "int64")},
        {"axis": 2},
        np.take(a, -2, 2),
    )
    add(
        "take from broadcast input",
        "take",
        "float32",
        {"a": tensor(np.broadcast_to(a[:, :1], (2, 3, 4)), "float32", "broadcast", (2, 1, 4)), "idx": tensor(idx, "int32")},
        {"axis": 2},
        np.take(np.broadcast_to(a[:, :1], (2, 3, 4)), idx, 2),
    )
    add(
        "take empty index",
        "take",
        "float32",
        {"a": tensor(a, "float32"), "idx": tensor(np.zeros((0, 2), np.int64), "int32")},
        {"axis": 1},
        np.take(a, np.zeros((0, 2), np.int64), 1),
    )
    e = np.zeros((0, 3))
    add(
        "take from empty outer axis",
        "take",
        "float32",
        {"a": tensor(e, "float32"), "idx": tensor(np.array([1, 2]), "int32")},
        {"axis": 1},
        np.take(e, [1, 2], 1),
    )


def gen_gather():
    for dt in ["float32", "int32", "bfloat16"]:
        for lay in ["contig", "transpose"]:
            r = rng_for(f"gather{dt}{lay}")
            a = rand(r, (4, 5, 3), dt)
            i0 = np.array([[0, 3], [-1, 2]])
            i2 = np.array([2, -3])
            ins = {"a": tensor(a, dt, lay), "i0": tensor(i0, "int32"), "i1": tensor(i2, "int32")}
            add(
                f"gather two axes broadcast idx {dt} {lay}",
                "gather",
                dt,
                ins,
                {"axes": [0, 2], "slice_sizes": [1, 3, 1]},
                ref_gather(a, [i0, i2], [0, 2], [1, 3, 1]),
            )
            add(
                f"gather one axis full slices {dt} {lay}",
                "gather",
                dt,
                {"a": ins["a"], "i0": tensor(np.array([[1], [4], [-2]]), "int32")},
                {"axes": [1], "slice_sizes": [4, 1, 3]},
                ref_gather(a, [np.array([[1], [4], [-2]])], [1], [4, 1, 3]),
            )
            add(
                f"gather partial slices {dt} {lay}",
                "gather",
                dt,
                {"a": ins["a"], "i0": tensor(np.array([3, 0, 1]), "int32")},
                {"axes": [1], "slice_sizes": [2, 1, 2]},
                ref_gather(a, [np.array([3, 0, 1])], [1], [2, 1, 2]),
            )
    r = rng_for("gather-empty")
    a = rand(r, (3, 4), "float32")
    add(
        "gather empty index",
        "gather",
        "float32",
        {"a": tensor(a, "float32"), "i0": tensor(np.zeros((0,), np.int64), "int32")},
        {"axes": [0], "slice_sizes": [1, 4]},
        ref_gather(a, [np.zeros((0,), np.int64)], [0], [1, 4]),
    )
    add(
        "gather zero slice",
        "gather",
        "float32",
        {"a": tensor(a, "float32"), "i0": tensor(np.array([1, 2]), "int32")},
        {"axes": [0], "slice_sizes": [1, 0]},
        ref_gather(a, [np.array([1, 2])], [0], [1, 0]),
    )


def gen_scatter():
    for dt in IDX_DTYPES:
        for lay in ["contig", "transpose"]:
            r = rng_for(f"scatter{dt}{lay}")
            a = rand(r, (5, 4), dt, 0.5, 2.0)
            at = tensor(a, dt, lay)
            # Repeated indices: every update counts for add/prod/max/min.
            idx = np.array([1, -1, 1, 3, 1])
            upd = rand(r, (5, 1, 4), dt, 0.5, 2.0)
            for mode in ["add", "prod", "max", "min"]:
                add(
                    f"scatter_{mode} repeated rows {dt} {lay}",
                    "scatter_" + mode,
                    dt,
                    {"a": at, "i0": tensor(idx, "int32"), "updates": tensor(upd, dt, "slice")},
                    {"axes": [0]},
                    ref_scatter(a, [idx], upd, [0], mode),
                )
            uidx = np.array([[4, 0], [2, -4]])
            upd2 = rand(r, (2, 2, 1, 4), dt)
            add(
                f"scatter assign unique rows {dt} {lay}",
                "scatter",
                dt,
                {"a": at, "i0": tensor(uidx, "int32"), "updates": tensor(upd2, dt, "transpose")},
                {"axes": [0]},
                ref_scatter(a, [uidx], upd2, [0], "assign"),
            )
            i0, i1 = np.array([0, 4, 2, 0]), np.array([3, 1, 0, 3])
            upd3 = rand(r, (4, 1, 1), dt, 0.5, 2.0)
            add(
                f"scatter_add points two axes {dt} {lay}",
                "scatter_add",
                dt,
                {"a": at, "i0": tensor(i0, "int32"), "i1": tensor(i1, "int32"), "updates": tensor(upd3, dt)},
                {"axes": [0, 1]},
                ref_scatter(a, [i0, i1], upd3, [0, 1], "add"),
            )
    r = rng_for("scatter-bcast")
    a = rand(r, (3, 4), "float32")
    u = np.broadcast_to(rand(r, (1, 1, 4), "float32"), (2, 1, 4))
    add(
        "scatter broadcast updates",
        "scatter",
        "float32",
        {"a": tensor(a, "float32"), "i0": tensor(np.array([2, 0]), "int32"), "updates": tensor(u, "float32", "broadcast", (1, 1, 4))},
        {"axes": [0]},
        ref_scatter(a, [np.array([2, 0])], u, [0], "assign"),
    )
    add(
        "scatter_add empty index",
        "scatter_add",
        "float32",
        {"a": tensor(a, "float32"), "i0": tensor(np.zeros((0,), np.int64), "int32"), "updates": tensor(np.zeros((0, 1, 4)), "float32")},
        {"axes": [0]},
        a,
    )
    add(
        "scatter_add partial slice",
        "scatter_add",
        "float32",
        {"a": tensor(a, "float32"), "i0": tensor(np.array([1, 1]), "int32"), "updates": tensor(np.ones((2, 2, 1)), "float32")},
        {"axes": [1]},
        ref_scatter(a, [np.array([1, 1])], np.ones((2, 2, 1)), [1], "add"),
    )


def gen_along_axis():
    for dt in IDX_DTYPES:
        for lay in layouts(dt):
            r = rng_for(f"along{dt}{lay}")
            a = rand(r, (3, 5), dt)
            at = tensor(a, dt, lay)
            idx = np.array([[0, 4, -1], [2, 2, 1], [-5, 3, 0]])
            add(
                f"take_along_axis axis=1 {dt} {lay}",
                "take_along_axis",
                dt,
                {"a": at, "idx": tensor(idx, "int32", lay)},
                {"axis": 1},
                np.take_along_axis(a, idx, 1),
            )
            idxb = np.array([[1, 0, 2, 2, -1]])
            add(
                f"take_along_axis axis=0 broadcast rows {dt} {lay}",
                "take_along_axis",
                dt,
                {"a": at, "idx": tensor(idxb, "int32")},
                {"axis": 0},
                np.take_along_axis(a, idxb, 0),
            )
            idxc = np.array([[3], [0], [-2]])
            add(
                f"take_along_axis idx broadcast cols {dt} {lay}",
                "take_along_axis",
                dt,
                {"a": tensor(a[:1], dt, "contig"), "idx": tensor(idxc, "int32")},
                {"axis": 1},
                np.take_along_axis(np.broadcast_to(a[:1], (3, 5)), idxc, 1),
            )
            idxf = np.array([14, 0, -1, 7])
            add(
                f"take_along_axis flat {dt} {lay}",
                "take_along_axis",
                dt,
                {"a": at, "idx": tensor(idxf, "int32")},
                {"axis": None},
                np.take_along_axis(a.ravel(), idxf, 0),
            )
            # put: unique indices per line.
            pidx = np.array([[4, 0], [1, -1], [2, 3]])
            vals = rand(r, (3, 2), dt)
            add(
                f"put_along_axis axis=1 {dt} {lay}",
                "put_along_axis",
                dt,
                {"a": at, "idx": tensor(pidx, "int32"), "values": tensor(vals, dt, lay)},
                {"axis": 1},
                ref_scatter_along(a, pidx, vals, 1, "assign"),
            )
            # Index broadcast over the rows of a, values a scalar.
            pidx2 = np.array([[1, 3]])
            add(
                f"put_along_axis idx broadcast rows {dt} {lay}",
                "put_along_axis",
                dt,
                {"a": at, "idx": tensor(pidx2, "int32"), "values": tensor(np.array(round_to(1.5, dt) if dt != "int32" else 7), dt)},
                {"axis": 1},
                ref_scatter_along(a, pidx2, np.array(1.5 if dt != "int32" else 7), 1, "assign"),
            )
            vals3 = rand(r, (1, 5), dt)
            pidx3 = np.array([[2, 0, 1, 2, 0]])
            add(
                f"put_along_axis axis=0 broadcast vals {dt} {lay}",
                "put_along_axis",
                dt,
                {"a": at, "idx": tensor(pidx3, "int32"), "values": tensor(vals3, dt)},
                {"axis": 0},
                ref_scatter_along(a, pidx3, vals3, 0, "assign"),
            )
            aidx = np.array([[0, 0, 4], [1, 1, 1], [2, -3, 2]])
            avals = rand(r, (3, 3), dt, 0.5, 2.0)
            add(
                f"scatter_add_along_axis repeated {dt} {lay}",
                "scatter_add_along_axis",
                dt,
                {"a": at, "idx": tensor(aidx, "int32"), "values": tensor(avals, dt)},
                {"axis": 1},
                ref_scatter_along(a, aidx, avals, 1, "add"),
            )
            add(
                f"put_along_axis flat {dt} {lay}",
                "put_along_axis",
                dt,
                {"a": at, "idx": tensor(np.array([13, -1, 0]), "int32"), "values": tensor(vals[0, :1].repeat(3), dt)},
                {"axis": None},
                ref_scatter_along(a, np.array([13, -1, 0]), vals[0, :1].repeat(3), None, "assign"),
            )
    e = np.zeros((2, 0))
    add(
        "take_along_axis empty",
        "take_along_axis",
        "float32",
        {"a": tensor(np.zeros((2, 3)), "float32"), "idx": tensor(np.zeros((2, 0), np.int64), "int32")},
        {"axis": 1},
        e,
    )


def gen_roll_diag_trace_meshgrid():
    for dt in IDX_DTYPES:
        for lay in layouts(dt):
            r = rng_for(f"roll{dt}{lay}")
            a = rand(r, (2, 3, 4), dt)
            at = tensor(a, dt, lay)
            shifts = [(2, 0), (-3, 2), (7, 1), (0, 1), (5, None), (-13, None)]
            for shift, axis in shifts if dt in ("float32", "int32") else shifts[1:3]:
                add(f"roll shift={shift} axis={axis} {dt} {lay}", "roll", dt, {"a": at}, {"shift": shift, "axis": axis}, np.roll(a, shift, axis))
            diags = [(0, 0, 1), (1, 1, 2), (-2, 2, 0), (3, 0, 2), (-1, -1, -2), (9, 0, 1)]
            for off, a1, a2 in diags if dt in ("float32", "int32") else diags[1:3]:
                add(
                    f"diagonal offset={off} axes=({a1},{a2}) {dt} {lay}",
                    "diagonal",
                    dt,
                    {"a": at},
                    {"offset": off, "axis1": a1, "axis2": a2},
                    np.diagonal(a, off, a1, a2),
                )
            if dt in ("float32", "int32", "float64"):
                for off, a1, a2 in [(0, 1, 2), (1, 0, 2), (-1, 2, 1)]:
                    add(
                        f"trace offset={off} axes=({a1},{a2}) {dt} {lay}",
                        "trace",
                        dt,
                        {"a": at},
                        {"offset": off, "axis1": a1, "axis2": a2},
                        np.trace(a, off, a1, a2),
                    )
    r = rng_for("diag2")
    m = rand(r, (4, 4), "float32")
    add("trace 2-d", "trace", "float32", {"a": tensor(m, "float32", "transpose")}, {"offset": 0, "axis1": 0, "axis2": 1}, np.trace(m))
    add("diagonal empty", "diagonal", "float32", {"a": tensor(np.zeros((0, 3)), "float32")}, {"offset": 0, "axis1": 0, "axis2": 1}, np.zeros((0,)))
    add("trace empty", "trace", "float32", {"a": tensor(np.zeros((0, 3)), "float32")}, {"offset": 0, "axis1": 0, "axis2": 1}, np.array(0.0))
    add("roll empty", "roll", "float32", {"a": tensor(np.zeros((0, 3)), "float32")}, {"shift": 2, "axis": 0}, np.zeros((0, 3)))
    add("roll scalar", "roll", "float32", {"a": tensor(np.array(2.5), "float32")}, {"shift": 3, "axis": None}, np.array(2.5))
    add(
        "roll broadcast input",
        "roll",
        "float32",
        {"a": tensor(np.broadcast_to(m[:1], (4, 4)), "float32", "broadcast", (1, 4))},
        {"shift": 1, "axis": 1},
        np.roll(np.broadcast_to(m[:1], (4, 4)), 1, 1),
    )
    for dt in ["float32", "int32"]:
        x, y, z = np.arange(3.0), np.arange(4.0) * 2 - 1, np.array([5.0, 6.0])
        for idxing in ["xy", "ij"]:
            for sparse in [False, True]:
                for arrs in [(x, y), (x, y, z), (x,)]:
                    n = len(arrs)
                    add(
                        f"meshgrid n={n} {idxing} sparse={sparse} {dt}",
                        "meshgrid",
                        dt,
                        {f"x{i}": tensor(v, dt, "slice") for i, v in enumerate(arrs)},
                        {"indexing": idxing, "sparse": sparse},
                        list(np.meshgrid(*arrs, indexing=idxing, sparse=sparse)),
                    )
    add(
        "meshgrid empty",
        "meshgrid",
        "float32",
        {"x0": tensor(np.zeros((0,)), "float32"), "x1": tensor(np.arange(2.0), "float32")},
        {"indexing": "xy", "sparse": False},
        list(np.meshgrid(np.zeros((0,)), np.arange(2.0))),
    )


def gen_sort():
    for dt in IDX_DTYPES:
        for lay in layouts(dt):
            r = rng_for(f"sort{dt}{lay}")
            # Few distinct values: ties test stability.
            a = round_to(r.integers(-3, 4, size=(4, 6)) * (0.5 if dt != "int32" else 1), dt)
            at = tensor(a, dt, lay)
            for axis in [-1, 0, None]:
                add(f"sort axis={axis} {dt} {lay}", "sort", dt, {"a": at}, {"axis": axis}, np.sort(a, axis=axis, kind="stable"))
                add(
                    f"argsort axis={axis} {dt} {lay}",
                    "argsort",
                    dt,
                    {"a": at},
                    {"axis": axis},
                    np.argsort(a, axis=axis, kind="stable"),
                    check="exact",
                    out_dtype="uint32",
                )
            b = rand(r, (3, 7), dt)
            bt = tensor(b, dt, lay)
            for kth, axis in [(0, 1), (3, 1), (6, 1), (2, 0), (-1, 1), (10, None)]:
                n = b.size if axis is None else b.shape[axis]
                k = kth % n
                ax = axis
                srt = np.sort(b, axis=ax) if ax is not None else np.sort(b.ravel())
                # The value a full sort puts at kth (per line); the test checks the partition
                # property around it, since the order within each side is unspecified.
                kth_vals = np.take(srt, [k], axis=0 if ax is None else ax)
                for op in ["partition", "argpartition"]:
                    add(
                        f"{op} kth={kth} axis={axis} {dt} {lay}",
                        op,
                        dt,
                        {"a": bt},
                        {"kth": k, "axis": axis},
                        kth_vals,
                        check="partition",
                        out_dtype=dt,
                    )
            for k, axis in [(1, 1), (3, 1), (7, 1), (2, 0), (0, 1), (5, None)]:
                src = b.ravel() if axis is None else b
                ax = 0 if axis is None else axis
                top = np.flip(np.sort(src, axis=ax), axis=ax).take(np.arange(k), axis=ax)
                add(
                    f"topk k={k} axis={axis} {dt} {lay}",
                    "topk",
                    dt,
                    {"a": bt},
                    {"k": k, "axis": axis},
                    np.sort(top, axis=ax),
                    check="sorted_along_axis",
                )
    for dt in ["float32", "float16", "float64"]:
        v = np.array([[3.0, np.nan, 1.0, -np.inf, np.inf, 1.0], [np.nan, np.nan, 0.0, -2.0, 0.0, np.nan]])
        v = round_to(v, dt)
        add(f"sort NaN last {dt}", "sort", dt, {"a": tensor(v, dt)}, {"axis": -1}, np.sort(v, axis=-1, kind="stable"))
        add(
            f"argsort NaN last {dt}",
            "argsort",
            dt,
            {"a": tensor(v, dt, "transpose")},
            {"axis": -1},
            np.argsort(v, axis=-1, kind="stable"),
            check="exact",
            out_dtype="uint32",
        )
    add("sort empty axis", "sort", "float32", {"a": tensor(np.zeros((3, 0)), "float32")}, {"axis": 1}, np.zeros((3, 0)))
    add(
        "argsort empty rows",
        "argsort",
        "float32",
        {"a": tensor(np.zeros((0, 4)), "float32")},
        {"axis": 1},
        np.zeros((0, 4), np.int64),
        check="exact",
        out_dtype="uint32",
    )
    add("sort scalar flat", "sort", "float32", {"a": tensor(np.array(4.0), "float32")}, {"axis": None}, np.array([4.0]))
    add(
        "sort broadcast input",
        "sort",
        "float32",
        {"a": tensor(np.broadcast_to(np.array([[3.0], [1.0], [2.0]]), (3, 4)), "float32", "broadcast", (3, 1))},
        {"axis": 0},
        np.sort(np.broadcast_to(np.array([[3.0], [1.0], [2.0]]), (3, 4)), axis=0),
    )
    add("topk empty k", "topk", "float32", {"a": tensor(np.arange(4.0), "float32")}, {"k": 0, "axis": 0}, np.zeros((0,)), check="sorted_along_axis")


def gen_softmax_logsumexp():
    for dt in FLOATS:
        for lay in layouts(dt):
            r = rng_for(f"softmax{dt}{lay}")
            x = rand(r, (2, 4, 5), dt, -4, 4)
            x[0, 1, 2] = -np.inf
            x[1, 3, :3] = -np.inf
            xt = tensor(x, dt, lay)
            for axes in [None, [-1], [1], [0, 2]] if dt == "float32" else [None, [1]]:
                ax = -1 if axes is None else tuple(axes)
                add(f"softmax axes={axes} {dt} {lay}", "softmax", dt, {"a": xt}, {"axes": axes, "precise": False}, ref_softmax(x, ax))
            add(f"softmax precise {dt} {lay}", "softmax", dt, {"a": xt}, {"axes": [-1], "precise": True}, ref_softmax(x, -1))
            lse = [(None, False), ([-1], False), ([-1], True), ([1], False), ([0, 2], True)]
            for axes, keep in lse if dt == "float32" else [([-1], False), ([0, 2], True)]:
                ax = None if axes is None else tuple(axes)
                add(
                    f"logsumexp axes={axes} keepdims={keep} {dt} {lay}",
                    "logsumexp",
                    dt,
                    {"a": xt},
                    {"axes": axes, "keepdims": keep},
                    ref_logsumexp(x, ax, keep),
                )
    r = rng_for("softmax-large")
    x = rand(r, (2, 300), "float32", -30, 30)
    x[1, 100:] = -np.inf
    add("softmax large row", "softmax", "float32", {"a": tensor(x, "float32")}, {"axes": None, "precise": False}, ref_softmax(x, -1))
    add("logsumexp large row", "logsumexp", "float32", {"a": tensor(x, "float32")}, {"axes": [-1], "keepdims": False}, ref_logsumexp(x, (-1,), False))
    add("softmax empty", "softmax", "float32", {"a": tensor(np.zeros((0, 4)), "float32")}, {"axes": None, "precise": False}, np.zeros((0, 4)))
    add("softmax scalar", "softmax", "float32", {"a": tensor(np.array(2.0), "float32")}, {"axes": None, "precise": False}, np.array(1.0))
    b = np.broadcast_to(np.array([[1.0, 2.0, -1.0]]), (2, 3))
    add(
        "softmax broadcast input",
        "softmax",
        "float32",
        {"a": tensor(b, "float32", "broadcast", (1, 3))},
        {"axes": [-1], "precise": False},
        ref_softmax(b, -1),
    )
    add(
        "logsumexp all -inf row",
        "logsumexp",
        "float32",
        {"a": tensor(np.array([[-np.inf, -np.inf], [0.0, 1.0]]), "float32")},
        {"axes": [-1], "keepdims": False},
        np.array([-np.inf, np.log(1 + np.e)]),
    )


def gen_norms():
    for dt in FLOATS:
        for lay in layouts(dt):
            r = rng_for(f"norm{dt}{lay}")
            x = rand(r, (2, 3, 8), dt)
            w = rand(r, (8,), dt)
            b = rand(r, (8,), dt)
            xt = tensor(x, dt, lay)
            for eps in [1e-5, 0.5] if dt == "float32" else [1e-5]:
                add(f"rms_norm eps={eps} {dt} {lay}", "rms_norm", dt, {"x": xt}, {"eps": eps}, ref_rms_norm(x, None, eps))
                add(
                    f"rms_norm weight eps={eps} {dt} {lay}",
                    "rms_norm",
                    dt,
                    {"x": xt, "weight": tensor(w, dt, "slice")},
                    {"eps": eps},
                    ref_rms_norm(x, w, eps),
                )
                add(f"layer_norm eps={eps} {dt} {lay}", "layer_norm", dt, {"x": xt}, {"eps": eps}, ref_layer_norm(x, None, None, eps))
                add(
                    f"layer_norm weight {dt} {lay} eps={eps}",
                    "layer_norm",
                    dt,
                    {"x": xt, "weight": tensor(w, dt)},
                    {"eps": eps},
                    ref_layer_norm(x, w, None, eps),
                )
                add(
                    f"layer_norm bias {dt} {lay} eps={eps}",
                    "layer_norm",
                    dt,
                    {"x": xt, "bias": tensor(b, dt)},
                    {"eps": eps},
                    ref_layer_norm(x, None, b, eps),
                )
                add(
                    f"layer_norm weight+bias {dt} {lay} eps={eps}",
                    "layer_norm",
                    dt,
                    {"x": xt, "weight": tensor(w, dt), "bias": tensor(b, dt, "slice")},
                    {"eps": eps},
                    ref_layer_norm(x, w, b, eps),
                )
    r = rng_for("norm-big")
    x = rand(r, (2, 256), "float32", -3, 3) + 5.0
    w = rand(r, (256,), "float32")
    add("rms_norm long rows", "rms_norm", "float32", {"x": tensor(x, "float32")}, {"eps": 1e-6}, ref_rms_norm(x, None, 1e-6))
    add("layer_norm long rows offset mean", "layer_norm", "float32", {"x": tensor(x, "float32"), "weight": tensor(w, "float32")}, {"eps": 1e-5}, ref_layer_norm(x, w, None, 1e-5))
    add("rms_norm empty", "rms_norm", "float32", {"x": tensor(np.zeros((0, 8)), "float32")}, {"eps": 1e-5}, np.zeros((0, 8)))
    add("layer_norm empty", "layer_norm", "float32", {"x": tensor(np.zeros((0, 8)), "float32")}, {"eps": 1e-5}, np.zeros((0, 8)))
    bx = np.broadcast_to(np.array([[1.0, -2.0, 3.0, 0.5]]), (3, 4))
    add(
        "rms_norm broadcast input",
        "rms_norm",
        "float32",
        {"x": tensor(bx, "float32", "broadcast", (1, 4))},
        {"eps": 1e-5},
        ref_rms_norm(bx, None, 1e-5),
    )


ROPE_CONFIGS = [
    # (name, shape, dims, traditional, base, scale, offset, freqs)
    ("full", (1, 2, 5, 8), 8, False, 10000.0, 1.0, 0, None),
    ("full traditional", (1, 2, 5, 8), 8, True, 10000.0, 1.0, 0, None),
    ("dims<D", (2, 1, 4, 12), 6, False, 10000.0, 1.0, 3, None),
    ("dims<D traditional", (2, 1, 4, 12), 6, True, 10000.0, 1.0, 3, None),
    ("offset scale base", (1, 2, 4, 16), 16, False, 500.0, 0.25, 17, None),
    ("offset scale base traditional", (1, 2, 4, 16), 16, True, 500.0, 0.25, 17, None),
    ("custom freqs", (1, 2, 5, 8), 8, False, None, 1.0, 2, [1.0, 3.0, 7.0, 20.0]),
    ("custom freqs traditional dims<D", (1, 2, 5, 10), 8, True, None, 0.5, 4, [1.0, 3.0, 7.0, 20.0]),
    ("3-d input", (3, 7, 4), 4, False, 10000.0, 1.0, 1, None),
    ("decode L=1", (2, 4, 1, 8), 8, False, 10000.0, 1.0, 41, None),
]

# The configurations also run in the dtypes other than float32.
ROPE_CORE = ["full", "dims<D traditional", "offset scale base", "custom freqs traditional dims<D"]


def gen_rope():
    for dt in FLOATS:
        for lay in layouts(dt):
            for name, shape, dims, trad, base, scale, off, freqs in ROPE_CONFIGS:
                if (dt != "float32" or lay != "contig") and name not in ROPE_CORE:
                    continue
                r = rng_for(f"rope{name}{dt}{lay}")
                x = rand(r, shape, dt)
                ins = {"x": tensor(x, dt, lay)}
                if freqs is not None:
                    ins["freqs"] = tensor(np.array(freqs), "float32")
                add(
                    f"rope {name} {dt} {lay}",
                    "rope",
                    dt,
                    ins,
                    {"dims": dims, "traditional": trad, "base": base, "scale": scale, "offset": off},
                    ref_rope(x, dims, trad, base, scale, off, freqs),
                )
    add(
        "rope empty",
        "rope",
        "float32",
        {"x": tensor(np.zeros((0, 3, 4)), "float32")},
        {"dims": 4, "traditional": False, "base": 10000.0, "scale": 1.0, "offset": 0},
        np.zeros((0, 3, 4)),
    )


SDPA_CONFIGS = [
    # (name, B, Hq, Hkv, L, S, D, Dv, mask)
    ("no mask", 1, 2, 2, 4, 4, 8, 8, None),
    ("causal L=S", 2, 2, 2, 5, 5, 4, 4, "causal"),
    ("causal L<S", 1, 2, 2, 3, 7, 4, 4, "causal"),
    ("additive mask", 1, 2, 2, 4, 6, 4, 4, "float"),
    ("bool mask", 2, 2, 2, 3, 5, 4, 4, "bool"),
    ("gqa Hq=2Hkv", 1, 4, 2, 3, 6, 4, 4, None),
    ("gqa Hq=2Hkv causal", 1, 4, 2, 4, 6, 4, 4, "causal"),
    ("decode L=1", 2, 4, 2, 1, 9, 4, 4, None),
    ("decode L=1 causal", 1, 2, 1, 1, 9, 4, 4, "causal"),
    ("Dv != D", 1, 2, 2, 3, 5, 8, 4, None),
    ("large gemm path", 1, 1, 1, 32, 32, 16, 16, "causal"),
]

# The configurations also run in the dtypes other than float32.
SDPA_CORE = ["causal L<S", "additive mask", "bool mask", "gqa Hq=2Hkv causal", "decode L=1"]


def gen_sdpa():
    for dt in FLOATS:
        for lay in ["contig", "transpose"] if dt in ("float32", "float16") else ["contig"]:
            for name, B, Hq, Hkv, L, S, D, Dv, mk in SDPA_CONFIGS:
                if (dt != "float32" or lay != "contig") and name not in SDPA_CORE:
                    continue
                if name == "large gemm path" and lay != "contig":
                    continue
                r = rng_for(f"sdpa{name}{dt}{lay}")
                q = rand(r, (B, Hq, L, D), dt)
                k = rand(r, (B, Hkv, S, D), dt)
                v = rand(r, (B, Hkv, S, Dv), dt)
                scale = 1.0 / np.sqrt(D)
                ins = {"q": tensor(q, dt, lay), "k": tensor(k, dt, lay), "v": tensor(v, dt, "slice" if lay == "transpose" else lay)}
                params = {"scale": scale, "mask": mk if mk in (None, "causal") else "array"}
                mask = mk
                if mk == "float":
                    m = rand(r, (1, Hq, L, S), dt, -2, 2)
                    m[0, 0, 1, 2] = -np.inf
                    ins["mask"] = tensor(m, dt)
                    mask = m
                elif mk == "bool":
                    m = r.integers(0, 2, size=(L, S)).astype(bool)
                    m[:, 0] = True  # every query sees something
                    ins["mask"] = tensor(m.astype(np.int64), "bool")
                    mask = m
                add(f"sdpa {name} {dt} {lay}", "sdpa", dt, ins, params, ref_sdpa(q, k, v, scale, mask))


EINSUM_CASES = [
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 2)]),
    ("ii", [(4, 4)]),
    ("ii->i", [(4, 4)]),
    ("i,j->ij", [(3,), (4,)]),
    ("ij->ji", [(3, 4)]),
    ("ij->", [(3, 4)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
    ("ij,jk", [(3, 4), (4, 2)]),
    ("ba,ab", [(3, 4), (4, 3)]),
    ("bhld,bhsd->bhls", [(1, 2, 3, 4), (1, 2, 5, 4)]),
    ("i,i->", [(5,), (5,)]),
    ("ij,j->i", [(3, 4), (4,)]),
    ("ij,kj->ikj", [(2, 3), (4, 3)]),
    ("ij,jk->ik", [(3, 0), (0, 2)]),
]


def gen_einsum():
    for dt in ["float32", "float16", "bfloat16", "float64", "int32"]:
        for lay in ["contig", "transpose"] if dt in ("float32", "float16") else ["contig"]:
            for spec, shapes in EINSUM_CASES:
                r = rng_for(f"einsum{spec}{dt}{lay}")
                ops = [rand(r, s, dt, -2, 2) if dt != "int32" else r.integers(-4, 5, size=s) for s in shapes]
                ins = {f"x{i}": tensor(o, dt, lay if o.ndim >= 2 else "slice") for i, o in enumerate(ops)}
                expected = np.einsum(spec, *[o.astype(np.float64) for o in ops])
                add(f"einsum {spec} {shapes} {dt} {lay}", "einsum", dt, ins, {"spec": spec}, expected)


# ---------------------------------------------------------------------------------------------
# cross-check of the formulas against MLX


def check_mlx():
    try:
        import mlx.core as mx
    except ImportError:
        print("mlx not importable: skipping the cross-check", file=sys.stderr)
        return

    def cmp(what, ours, theirs, tol=2e-5):
        err = float(np.max(np.abs(np.asarray(ours, np.float64) - np.asarray(theirs, np.float64)), initial=0.0))
        status = "ok" if err <= tol else "MISMATCH"
        print(f"  mlx {what}: max abs diff {err:.2e} {status}")
        if err > tol:
            MLX_MISMATCHES.append((what, err))

    r = np.random.default_rng(7)
    for name, shape, dims, trad, base, scale, off, freqs in ROPE_CONFIGS:
        x = round_to(r.uniform(-2, 2, size=shape), "float32")
        y = mx.fast.rope(
            mx.array(x.astype(np.float32)),
            dims,
            traditional=trad,
            base=base,
            scale=scale,
            offset=off,
            freqs=None if freqs is None else mx.array(np.array(freqs, np.float32)),
        )
        cmp(f"rope {name}", ref_rope(x, dims, trad, base, scale, off, freqs), np.array(y))
    x = round_to(r.uniform(-2, 2, size=(3, 8)), "float32")
    w = round_to(r.uniform(-2, 2, size=(8,)), "float32")
    b = round_to(r.uniform(-2, 2, size=(8,)), "float32")
    X, W, Bb = (mx.array(v.astype(np.float32)) for v in (x, w, b))
    cmp("rms_norm", ref_rms_norm(x, w, 1e-5), np.array(mx.fast.rms_norm(X, W, 1e-5)))
    cmp("layer_norm", ref_layer_norm(x, w, b, 0.5), np.array(mx.fast.layer_norm(X, W, Bb, 0.5)))
    cmp("layer_norm no affine", ref_layer_norm(x, None, None, 1e-5), np.array(mx.fast.layer_norm(X, None, None, 1e-5)))
    for name, B, Hq, Hkv, L, S, D, Dv, mk in SDPA_CONFIGS:
        q = round_to(r.uniform(-2, 2, size=(B, Hq, L, D)), "float32")
        k = round_to(r.uniform(-2, 2, size=(B, Hkv, S, D)), "float32")
        v = round_to(r.uniform(-2, 2, size=(B, Hkv, S, Dv)), "float32")
        mask, mmx = None, None
        if mk == "causal":
            mask, mmx = "causal", "causal"
        elif mk == "float":
            mask = round_to(r.uniform(-2, 2, size=(1, Hq, L, S)), "float32")
            mmx = mx.array(mask.astype(np.float32))
        elif mk == "bool":
            mask = r.integers(0, 2, size=(L, S)).astype(bool)
            mask[:, 0] = True
            mmx = mx.array(mask)
        scale = 1.0 / np.sqrt(D)
        y = mx.fast.scaled_dot_product_attention(
            *(mx.array(t.astype(np.float32)) for t in (q, k, v)), scale=float(scale), mask=mmx
        )
        cmp(f"sdpa {name}", ref_sdpa(q, k, v, scale, mask), np.array(y), 1e-4)
    a = np.arange(12.0).reshape(3, 4)
    pidx = np.array([[1, 3]])
    cmp(
        "put_along_axis broadcast rows",
        ref_scatter_along(a, pidx, np.array(1.5), 1, "assign"),
        np.array(mx.put_along_axis(mx.array(a.astype(np.float32)), mx.array(pidx), mx.array(1.5), axis=1)),
    )
    v = np.array([3.0, np.nan, 1.0, -np.inf, np.inf, 1.0])
    ours = np.argsort(v, kind="stable")
    theirs = np.array(mx.argsort(mx.array(v.astype(np.float32))))
    cmp("argsort NaN last", ours, theirs, 0)


def main():
    gen_take()
    gen_gather()
    gen_scatter()
    gen_along_axis()
    gen_roll_diag_trace_meshgrid()
    gen_sort()
    gen_softmax_logsumexp()
    gen_norms()
    gen_rope()
    gen_sdpa()
    gen_einsum()
    # Inputs shared by several cases are stored once, in "tensors"; cases name them by index.
    tensors, ids = [], {}
    for c in CASES:
        for k, t in c["inputs"].items():
            key = json.dumps(t, sort_keys=True)
            if key not in ids:
                ids[key] = len(tensors)
                tensors.append(t)
            c["inputs"][k] = ids[key]
    names = [c["name"] for c in CASES]
    dup = {n for n in names if names.count(n) > 1}
    assert not dup, f"duplicate case names: {sorted(dup)[:5]}"
    text = json.dumps({"generator": "scripts/make_indexing_fast_fixtures.py", "tensors": tensors, "cases": CASES}, separators=(",", ":"))
    with open(OUT, "w") as f:
        f.write(text)
    print(f"wrote {len(CASES)} cases, {len(text) / 1024:.0f} KiB to {os.path.normpath(OUT)}")
    check_mlx()
    if MLX_MISMATCHES:
        print(f"{len(MLX_MISMATCHES)} MLX mismatches: {MLX_MISMATCHES}")


if __name__ == "__main__":
    main()
