#!/usr/bin/env python3
"""Makes the NumPy-float64 reference fixtures for ferrox's core ops.

Writes crates/ferrox/tests/fixtures/ops_numpy.json, which crates/ferrox/tests/ops_numpy.rs
replays through ferrox. Deterministic (seeded): rerunning gives the same file.

Each case names an op, its parameters, its inputs and the expected outputs:

  {"name": "add/int8+uint8/transposed", "op": "add", "args": {...},
   "inputs": [{"dtype": "int8", "shape": [3, 2], "data": [...],
               "layout": [["transpose", [1, 0]]]}, {"scalar": 2.5}, null],
   "outputs": [{"dtype": "int16", "shape": [2, 3], "data": [...]}],
   "rtol": 1e-5, "atol": 1e-6, "sum_output": [0]}

* An input's `data` holds `shape` (the stored, contiguous base) row-major; both sides build
  it in float64 / int64 / bool and cast to `dtype` (values are chosen representable in the
  dtype, so the cast is exact), then apply `layout` in order: `transpose` (permutation),
  `slice` (start, stop, step per axis, Python semantics) or `broadcast` (target shape). So
  the kernel sees transposed, strided (also reversed) and broadcast views.
* `{"scalar": v}` is a Rust/Python number passed to the op (MLX's weak typing); `null` is an
  absent optional operand (clip's bounds).
* `gen` instead of `data` makes large inputs without storing them:
  value[i] = ((i * mul) % mod) * scale + offset.
* Expected values are computed in float64 from the exact input values (after casting to the
  dtype MLX computes in), then rounded to the output dtype as MLX produces it (its promotion
  rules, weak scalars, integer ops staying integer, comparisons giving bool). Floats are
  written with the fewest digits that round back to the same value in the output dtype;
  NaN and infinities are the strings "nan", "inf", "-inf".
* `sum_output`: the test sums the output (in float64) over these axes before comparing;
  used for large inputs so the fixture stays small.

bfloat16 is not a NumPy dtype: values are rounded to bfloat16 here (float32, then round to
nearest even on the top 16 bits) and stored as numbers; ferrox casts them exactly.

Usage: python3 scripts/make_op_fixtures.py
"""

import json
import os
import sys

import numpy as np
import scipy.special as sp

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "ferrox", "tests", "fixtures",
                   "ops_numpy.json")

rng = np.random.default_rng(20240611)

FLOATS = ["float32", "float16", "bfloat16", "float64"]
INTS = ["int32", "int8", "uint8", "uint32", "int64"]
SIGNED = ["int8", "int16", "int32", "int64"]
UNSIGNED = ["uint8", "uint16", "uint32", "uint64"]
SIZE = {"bool": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "int32": 4, "uint32": 4, "int64": 8,
        "uint64": 8, "float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}
# Default comparison tolerances per output dtype (relative, absolute); the test has the same
# defaults, cases override them where error grows with size (reductions, matmul).
RTOL = {"float64": 1e-10, "float32": 1e-5, "float16": 1e-2, "bfloat16": 1e-2}
ATOL = {"float64": 1e-12, "float32": 1e-6, "float16": 1e-3, "bfloat16": 1e-2}


def is_float(d):
    return d in FLOATS


def is_int(d):
    return d in SIGNED or d in UNSIGNED


# ---------------------------------------------------------------------------------------------
# MLX dtype rules (mlx/dtype.cpp promotion table, weak Python scalars as in mlx/ops.cpp).

def promote(a, b):
    if a == b:
        return a
    if a == "bool":
        return b
    if b == "bool":
        return a
    if is_float(a) and is_float(b):
        if SIZE[a] == 2 and SIZE[b] == 2:
            return "float32"
        return a if SIZE[a] >= SIZE[b] else b
    if is_float(a):
        return a
    if is_float(b):
        return b
    if (a in SIGNED) == (b in SIGNED):
        return a if SIZE[a] >= SIZE[b] else b
    u, s = (a, b) if a in UNSIGNED else (b, a)
    if SIZE[u] < SIZE[s]:
        return s
    if u == "uint64":
        return "float32"
    return {1: "int16", 2: "int32", 4: "int64"}[SIZE[u]]


def to_float(d):
    return d if is_float(d) else "float32"


def scalar_dtype(v):
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int32"
    return "float32"


def unify(ops):
    """The dtype operands (Inp or Sc) are computed in: arrays promote, scalars are weak."""
    arrays = [o.dtype for o in ops if isinstance(o, Inp)]
    if not arrays:
        d = scalar_dtype(ops[0].v)
        for o in ops[1:]:
            d = promote(d, scalar_dtype(o.v))
        return d
    d = arrays[0]
    for x in arrays[1:]:
        d = promote(d, x)
    for o in ops:
        if isinstance(o, Sc):
            if isinstance(o.v, float) and not is_float(d):
                d = "float32"
            elif isinstance(o.v, int) and not isinstance(o.v, bool) and d == "bool":
                d = "int32"
    return d


# ---------------------------------------------------------------------------------------------
# Rounding to a dtype. Values travel as float64 (floats), int64 (integers) or bool arrays.

def bf16(x):
    x = np.asarray(x, dtype=np.float64)
    f = np.atleast_1d(x.astype(np.float32))
    b = f.view(np.uint32).astype(np.uint64)
    r = (((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16).astype(np.uint32)
    out = r.view(np.float32).astype(np.float64)
    out[np.isnan(f)] = np.nan
    return out.reshape(x.shape)


NP = {"bool": np.bool_, "int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16,
      "int32": np.int32, "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64, "float16": np.float16,
      "float32": np.float32, "float64": np.float64}


def round_to(x, d):
    """x (any numeric array) as the values dtype d holds, in the travelling representation."""
    x = np.asarray(x)
    with np.errstate(all="ignore"):
        if d == "bool":
            return x != 0
        if is_int(d):
            if x.dtype.kind == "f":
                x = np.trunc(x)
            return x.astype(np.int64).astype(NP[d]).astype(np.int64)
        x = x.astype(np.float64)
        if d == "bfloat16":
            return bf16(x)
        return x.astype(NP[d]).astype(np.float64)


def enc_value(v, d):
    if d == "bool":
        return bool(v)
    if is_int(d):
        return int(v)
    v = float(v)
    if np.isnan(v):
        return "nan"
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    if d == "float64":
        return v
    for p in range(1, 18):
        s = float("%.*g" % (p, v))
        if float(round_to(np.array(s), d)) == v:
            return s
    return v


def enc(x, d):
    return [enc_value(v, d) for v in np.asarray(x).reshape(-1)]


# ---------------------------------------------------------------------------------------------
# Inputs.

class Sc:
    """A scalar operand (weakly typed)."""

    def __init__(self, v):
        self.v = v

    def spec(self):
        return {"scalar": self.v}

    def values(self, d):
        return round_to(np.array(float(self.v) if not isinstance(self.v, bool) else self.v)
                        if not is_int(d) else np.array(int(self.v)), d)


def apply_layout(x, layout):
    for step in layout:
        if step[0] == "transpose":
            x = x.transpose(step[1])
        elif step[0] == "slice":
            x = x[tuple(slice(a, b, c) for a, b, c in zip(step[1], step[2], step[3]))]
        elif step[0] == "broadcast":
            x = np.broadcast_to(x, step[1])
        else:
            raise ValueError(step)
    return x


class Inp:
    """An array operand: base values (exact in dtype), layout, and the logical values."""

    def __init__(self, dtype, base, layout=(), gen=None):
        self.dtype = dtype
        self.base = round_to(base, dtype)
        self.layout = [list(s) for s in layout]
        self.gen = gen
        self.x = apply_layout(self.base, self.layout)

    @property
    def shape(self):
        return self.x.shape

    def spec(self):
        s = {"dtype": self.dtype, "shape": list(self.base.shape)}
        if self.gen is not None:
            s["gen"] = self.gen
        else:
            s["data"] = enc(self.base, self.dtype)
        if self.layout:
            s["layout"] = self.layout
        return s

    def values(self, d):
        return round_to(self.x, d)


def layout_for(shape, kind):
    """(base shape, layout) so that the layout applied to the base has `shape`."""
    shape = tuple(shape)
    if kind == "c" or (kind == "t" and len(shape) < 2) or (kind in "sb" and len(shape) == 0):
        return shape, []
    if kind == "t":
        perm = list(range(len(shape)))[::-1]
        return shape[::-1], [["transpose", perm]]
    if kind == "s":
        base, start, stop, step = [], [], [], []
        for i, n in enumerate(shape):
            base.append(2 * n + 1)
            if i % 2 == 1 and n > 0:
                start.append(2 * n - 1)
                stop.append(-(2 * n + 3))
                step.append(-2)
            else:
                start.append(1)
                stop.append(2 * n + 1)
                step.append(2)
        return tuple(base), [["slice", start, stop, step]]
    if kind == "b":
        big = [i for i, n in enumerate(shape) if n > 1]
        if not big:
            return shape, []
        base = list(shape)
        base[big[0]] = 1
        return tuple(base), [["broadcast", list(shape)]]
    raise ValueError(kind)


def rand_values(dtype, shape, dom="normal"):
    shape = tuple(shape)
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if is_int(dtype):
        lo, hi = {"normal": (-20, 21), "small": (-4, 5), "pos": (1, 20), "unit": (-1, 2), "ge1": (1, 6),
                  "nonneg": (0, 20), "shift": (0, 7), "exp": (0, 5), "cmp": (-2, 3)}.get(dom, (-20, 21))
        if dtype in UNSIGNED:
            lo = max(lo, 0)
            hi = max(hi, lo + 2)
        return rng.integers(lo, hi, size=shape).astype(np.int64)
    if dom == "normal":
        v = rng.standard_normal(shape) * 2
    elif dom == "pos":
        v = rng.uniform(0.05, 5, shape)
    elif dom == "nonneg":
        v = rng.uniform(0, 5, shape)
    elif dom == "unit":
        v = rng.uniform(-0.95, 0.95, shape)
    elif dom == "ge1":
        v = rng.uniform(1, 5, shape)
    elif dom == "tan":
        v = rng.uniform(-1.2, 1.2, shape)
    elif dom == "gt-1":
        v = rng.uniform(-0.9, 4, shape)
    elif dom == "small":
        v = rng.uniform(-4, 4, shape)
    elif dom == "cmp":
        v = rng.integers(-2, 3, shape) * 0.5
    elif dom == "half":
        v = rng.integers(-8, 9, shape) * 0.5
    elif dom == "quarter":
        v = rng.integers(-24, 25, shape) * 0.25
    elif dom == "round3":
        v = rng.uniform(-5, 5, shape)
        return np.round(v, 3) + 0.0004
    else:
        raise ValueError(dom)
    return np.round(v, 2)


def arr(dtype, shape, kind="c", dom="normal", values=None):
    """An input of logical `shape`, stored with layout `kind`: c(ontiguous), t(ransposed),
    s(trided: every other element, odd axes reversed) or b(roadcast)."""
    base_shape, layout = layout_for(shape, kind)
    if values is not None:
        values = np.asarray(values)
        if layout:
            # Place the given logical values into a base the layout maps back onto them.
            if layout[0][0] == "transpose":
                inv = np.argsort(layout[0][1])
                base = values.transpose(inv)
            elif layout[0][0] == "slice":
                base = np.zeros(base_shape, dtype=values.dtype)
                apply_layout(base, layout)[...] = values
            else:
                base_shape, layout = tuple(shape), []
                base = values
        else:
            base = values
    else:
        base = rand_values(dtype, base_shape, dom)
    inp = Inp(dtype, base, layout)
    assert inp.shape == tuple(shape), (inp.shape, shape, layout)
    return inp


def gen_input(dtype, base_shape, mul, mod, scale, offset, layout=()):
    n = int(np.prod(base_shape))
    i = np.arange(n, dtype=np.int64)
    v = ((i * mul) % mod).astype(np.float64) * scale + offset
    if is_int(dtype):
        v = v.astype(np.int64)
    base = v.reshape(base_shape)
    return Inp(dtype, base, layout, gen={"mul": mul, "mod": mod, "scale": scale, "offset": offset})


# ---------------------------------------------------------------------------------------------
# Cases.

CASES = []
NAMES = set()


def out(values, dtype):
    v = round_to(values, dtype)
    return {"dtype": dtype, "shape": list(np.shape(v)), "data": enc(v, dtype)}


def add_case(name, op, inputs, outputs, args=None, rtol=None, atol=None, sum_output=None, note=None):
    base = name
    k = 2
    while name in NAMES:
        name = "%s#%d" % (base, k)
        k += 1
    NAMES.add(name)
    c = {"name": name, "op": op}
    if args:
        c["args"] = args
    c["inputs"] = [None if i is None else i.spec() for i in inputs]
    if sum_output is not None:
        outputs = [dict(o) for o in outputs]
        for o in outputs:
            vals = np.array([np.nan if v == "nan" else np.inf if v == "inf" else -np.inf if v == "-inf" else v
                             for v in o["data"]], dtype=np.float64).reshape(o["shape"])
            s = vals.sum(axis=tuple(sum_output))
            o["shape"] = list(s.shape)
            o["data"] = enc(s, "float64")
    c["outputs"] = outputs
    if rtol is not None:
        c["rtol"] = float(rtol)
    if atol is not None:
        c["atol"] = float(atol)
    if sum_output is not None:
        c["sum_output"] = list(sum_output)
    if note:
        c["note"] = note
    CASES.append(c)


def add_error_case(name, op, inputs, args=None, note=None):
    """Inputs MLX refuses: ferrox must return an error."""
    NAMES.add(name)
    c = {"name": name, "op": op, "error": True}
    if args:
        c["args"] = args
    c["inputs"] = [None if i is None else i.spec() for i in inputs]
    c["outputs"] = []
    if note:
        c["note"] = note
    CASES.append(c)


def error_cases():
    add_error_case("argmax/empty_axis", "argmax", [arr("float32", (0, 3))], {"axis": 0, "keepdims": False})
    add_error_case("argmin/empty", "argmin", [arr("int32", (0,))], {"axis": None, "keepdims": False})
    add_error_case("matmul/int", "matmul", [arr("int32", (2, 3)), arr("int32", (3, 2))],
                   note="MLX's matmul supports floating-point types only")
    add_error_case("matmul/inner_mismatch", "matmul", [arr("float32", (2, 3)), arr("float32", (4, 2))])
    add_error_case("matmul/batch_mismatch", "matmul", [arr("float32", (2, 2, 3)), arr("float32", (3, 3, 2))])
    add_error_case("matmul/scalar", "matmul", [arr("float32", ()), arr("float32", (3, 2))])
    add_error_case("add/bad_broadcast", "add", [arr("float32", (2, 3)), arr("float32", (2,))])
    add_error_case("reshape/bad_size", "reshape", [arr("float32", (2, 3))], {"shape": [4, 2]})
    add_error_case("reshape/two_minus_one", "reshape", [arr("float32", (2, 3))], {"shape": [-1, -1]})
    add_error_case("broadcast_to/bad", "broadcast_to", [arr("float32", (3, 2))], {"shape": [3, 3]})
    add_error_case("concatenate/mismatch", "concatenate", [arr("float32", (2, 3)), arr("float32", (3, 2))], {"axis": 0})
    add_error_case("stack/mismatch", "stack", [arr("float32", (2, 3)), arr("float32", (3, 2))], {"axis": 0})
    add_error_case("sum/bad_axis", "sum", [arr("float32", (2, 3))], {"axes": [2], "keepdims": False})
    add_error_case("sum/duplicate_axis", "sum", [arr("float32", (2, 3))], {"axes": [1, -1], "keepdims": False})
    add_error_case("squeeze/not_one", "squeeze", [arr("float32", (2, 1))], {"axes": [0]})
    add_error_case("transpose/not_permutation", "transpose", [arr("float32", (2, 3))], {"perm": [0, 0]})
    add_error_case("split/unequal", "split", [arr("float32", (5, 2))], {"sections": 2, "axis": 0})
    add_error_case("bitwise_and/float", "bitwise_and", [arr("float32", (3,)), arr("float32", (3,))])
    add_error_case("left_shift/float", "left_shift", [arr("float16", (3,)), arr("int32", (3,))])
    add_error_case("bitwise_invert/float", "bitwise_invert", [arr("float32", (3,))])
    add_error_case("negative/bool", "negative", [arr("bool", (3,))], note="MLX refuses negative of bool")
    add_error_case("slice/zero_step", "slice", [arr("float32", (4,))], {"start": [0], "stop": [4], "step": [0]})
    add_error_case("tril/1d", "tril", [arr("float32", (4,))], {"k": 0})
    add_error_case("norm/fro_vector", "norm", [arr("float32", (4,))], {"ord": "fro", "axes": [0], "keepdims": False})
    add_error_case("norm/3_axes", "norm", [arr("float32", (2, 2, 2))], {"ord": 1.0, "axes": [0, 1, 2], "keepdims": False})
    add_error_case("arange/zero_step", "arange", [], {"start": 0, "stop": 3, "step": 0, "dtype": "float32"})


def dname(d):
    return {"float32": "f32", "float16": "f16", "bfloat16": "bf16", "float64": "f64", "int32": "i32", "int8": "i8",
            "uint8": "u8", "uint32": "u32", "int64": "i64", "bool": "bool", "int16": "i16", "uint16": "u16"}[d]


def mag_atol(dtype, magnitude, factor=1.0):
    """An absolute tolerance for results accumulated from terms of total size `magnitude`."""
    if not is_float(dtype):
        return None
    return max(ATOL[dtype], RTOL[dtype] * float(magnitude) * factor)


SHAPES = [(2, 3), (3, 4, 2), (5,), (), (0,), (2, 0)]
LAYOUTS_BY_SHAPE = lambda s: ["c"] + (["t", "s", "b"] if len(s) >= 2 else ["s", "b"] if len(s) == 1 else [])


# ----- creation -----

def creation_cases():
    for d in ["float32", "int32", "bool", "float16", "bfloat16", "uint8", "int64", "float64"]:
        for shape in [(2, 3), (), (0, 4)]:
            add_case("zeros/%s/%s" % (dname(d), shape), "zeros", [], [out(np.zeros(shape), d)],
                     {"shape": list(shape), "dtype": d})
            add_case("ones/%s/%s" % (dname(d), shape), "ones", [], [out(np.ones(shape), d)],
                     {"shape": list(shape), "dtype": d})
    for d, v in [("float32", 2.5), ("int32", 7), ("int8", -3), ("float16", -1.25), ("bfloat16", 3.140625),
                 ("uint32", 9), ("bool", True), ("float64", 0.1), ("float32", 3)]:
        add_case("full/%s" % dname(d), "full", [], [out(np.full((2, 2, 3), v, dtype=np.float64)
                                                        if not isinstance(v, bool) else np.full((2, 2, 3), v), d)],
                 {"shape": [2, 2, 3], "value": v, "dtype": d})
    # full from an array value broadcast to the shape
    v = arr("float32", (3,))
    add_case("full/array_value", "full", [v], [out(np.broadcast_to(v.x, (2, 3)), "float32")],
             {"shape": [2, 3], "dtype": "float32"})
    x = arr("int8", (2, 3), "t")
    add_case("zeros_like/i8", "zeros_like", [x], [out(np.zeros((2, 3)), "int8")])
    add_case("ones_like/i8", "ones_like", [x], [out(np.ones((2, 3)), "int8")])
    x = arr("float16", (3, 2), "s")
    add_case("full_like/f16", "full_like", [x, Sc(0.5)], [out(np.full((3, 2), 0.5), "float16")])

    for start, stop, step, d in [(0, 10, 1, "int32"), (0, 10, 3, "int32"), (5, -4, -2, "int32"), (0, 1, 0.1, "float32"),
                                 (-3, 5, 0.5, "float16"), (2, 2, 1, "float32"), (10, 0, 1, "int64"),
                                 (0, 5, 0.25, "float64"), (1.5, 7, 1.5, "bfloat16"), (0, 200, 7, "uint8")]:
        n = int(np.ceil((stop - start) / step)) if (stop - start) / step > 0 else 0
        vals = start + np.arange(n) * step
        add_case("arange/%s/%s,%s,%s" % (dname(d), start, stop, step), "arange", [], [out(vals, d)],
                 {"start": start, "stop": stop, "step": step, "dtype": d})
    for start, stop, num, d in [(0, 1, 5, "float32"), (-2, 3, 11, "float64"), (1, -1, 4, "float16"), (0, 10, 1, "float32"),
                                (0, 10, 0, "float32"), (0, 9, 4, "int32"), (3.5, 3.5, 3, "bfloat16")]:
        add_case("linspace/%s/%s,%s,%s" % (dname(d), start, stop, num), "linspace", [],
                 [out(np.linspace(start, stop, num), d)], {"start": start, "stop": stop, "num": num, "dtype": d})
    for n, m, k, d in [(3, None, 0, "float32"), (3, 5, 1, "int32"), (4, 2, -1, "float16"), (3, 3, 5, "float32"),
                       (0, None, 0, "float32"), (2, 4, -3, "bool"), (4, None, -2, "bfloat16")]:
        add_case("eye/%s/%s,%s,%s" % (dname(d), n, m, k), "eye", [], [out(np.eye(n, m, k), d)],
                 {"n": n, "m": m, "k": k, "dtype": d})
    for n, d in [(1, "float32"), (4, "int8"), (3, "float64")]:
        add_case("identity/%s/%d" % (dname(d), n), "identity", [], [out(np.identity(n), d)], {"n": n, "dtype": d})
    for n, m, k, d in [(3, None, 0, "float32"), (3, 5, 1, "int32"), (4, 2, -1, "float16"), (3, 4, -5, "float32"),
                       (2, 3, 7, "bool")]:
        add_case("tri/%s/%s,%s,%s" % (dname(d), n, m, k), "tri", [], [out(np.tri(n, m, k), d)],
                 {"n": n, "m": m, "k": k, "dtype": d})
    for op, f in [("tril", np.tril), ("triu", np.triu)]:
        for d, shape, kind, k in [("float32", (4, 4), "c", 0), ("int32", (3, 5), "t", 1), ("float16", (2, 3, 4), "s", -1),
                                  ("bool", (4, 3), "c", 0), ("bfloat16", (3, 3), "b", 2), ("uint8", (2, 4, 3), "t", -2),
                                  ("float64", (0, 3), "c", 0), ("int64", (3, 3), "c", 10)]:
            x = arr(d, shape, kind)
            add_case("%s/%s/%s/%s/k=%d" % (op, dname(d), shape, kind, k), op, [x], [out(f(x.x, k), d)], {"k": k})


# ----- unary -----

def sigmoid(x):
    return sp.expit(x)


UNARY = [
    # name, reference, float domain, int domain, applies to ints, keeps int dtype
    ("abs", np.abs, "normal", "normal", True, True),
    ("negative", np.negative, "normal", "normal", True, True),
    ("sign", np.sign, "normal", "small", True, True),
    ("exp", np.exp, "small", "small", True, False),
    ("expm1", np.expm1, "small", "small", True, False),
    ("log", np.log, "pos", "pos", True, False),
    ("log1p", np.log1p, "gt-1", "nonneg", True, False),
    ("log2", np.log2, "pos", "pos", True, False),
    ("log10", np.log10, "pos", "pos", True, False),
    ("sqrt", np.sqrt, "nonneg", "nonneg", True, False),
    ("rsqrt", lambda x: 1 / np.sqrt(x), "pos", "pos", True, False),
    ("square", np.square, "normal", "normal", True, True),
    ("reciprocal", lambda x: 1 / x, "pos", "pos", True, False),
    ("sin", np.sin, "normal", "normal", True, False),
    ("cos", np.cos, "normal", "normal", True, False),
    ("tan", np.tan, "tan", "unit", True, False),
    ("arcsin", np.arcsin, "unit", "unit", True, False),
    ("arccos", np.arccos, "unit", "unit", True, False),
    ("arctan", np.arctan, "normal", "normal", True, False),
    ("sinh", np.sinh, "small", "small", True, False),
    ("cosh", np.cosh, "small", "small", True, False),
    ("tanh", np.tanh, "normal", "normal", True, False),
    ("arcsinh", np.arcsinh, "normal", "normal", True, False),
    ("arccosh", np.arccosh, "ge1", "ge1", True, False),
    ("arctanh", np.arctanh, "unit", "unit", True, False),
    ("sigmoid", sigmoid, "normal", "small", True, False),
    ("erf", sp.erf, "small", "small", True, False),
    ("erfinv", sp.erfinv, "unit", "unit", True, False),
    ("floor", np.floor, "round3", "normal", True, True),
    ("ceil", np.ceil, "round3", "normal", True, True),
    ("round", np.round, "half", "normal", True, True),
    ("logical_not", lambda x: x == 0, "cmp", "cmp", True, None),
    ("isnan", np.isnan, "normal", "normal", True, None),
    ("isinf", np.isinf, "normal", "normal", True, None),
    ("isfinite", np.isfinite, "normal", "normal", True, None),
    ("bitwise_invert", None, None, "normal", True, True),
]

SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, 1e-30, -3.0]


def unary_out_dtype(name, d, keeps):
    if keeps is None:
        return "bool"
    if keeps:
        return d
    return to_float(d)


def ref_unary(name, f, x, d):
    if name == "bitwise_invert":
        if d == "bool":
            return ~x.astype(bool)
        return ~x.astype(np.int64)
    with np.errstate(all="ignore"):
        return f(x)


def unary_cases():
    for name, f, fdom, idom, ints, keeps in UNARY:
        dtypes = ([] if fdom is None else FLOATS) + (INTS if ints else [])
        if name == "bitwise_invert":
            dtypes = INTS + ["bool"]
        if name in ("abs", "logical_not", "isnan", "isinf", "isfinite"):
            dtypes = dtypes + ["bool"]
        for i, d in enumerate(dtypes):
            shape = [(2, 3), (3, 4, 2), (7,), (4, 5)][i % 4]
            kind = ["c", "t", "s", "b"][i % 4]
            dom = fdom if is_float(d) else idom
            od = unary_out_dtype(name, d, keeps)
            for shp, knd in [(shape, kind), ((3, 4) if i % 2 else (5,), "c")][:2 if i % 3 == 0 else 1]:
                x = arr(d, shp, knd, dom)
                cd = d if keeps is not False else od  # MLX casts to float first
                xv = x.values(cd)
                y = ref_unary(name, f, xv, d)
                add_case("%s/%s/%s/%s" % (name, dname(d), shp, knd), name, [x], [out(y, od)])
        # Empty and 0-d inputs.
        d0 = "float32" if fdom is not None else "int32"
        for shp in [(), (0,), (3, 0)]:
            x = arr(d0, shp, "c", fdom if fdom is not None else idom)
            od = unary_out_dtype(name, d0, keeps)
            add_case("%s/%s/%s" % (name, dname(d0), shp or "scalar"), name, [x],
                     [out(ref_unary(name, f, x.values(d0 if keeps is not False else od), d0), od)])
        # NaN, infinities, signed zeros.
        if fdom is not None:
            for d in ["float32", "float16", "float64"]:
                x = arr(d, (len(SPECIALS),), "c", values=np.array(SPECIALS))
                od = unary_out_dtype(name, d, keeps)
                add_case("%s/%s/specials" % (name, dname(d)), name, [x], [out(ref_unary(name, f, x.values(d), d), od)])
    # round with decimals (MLX: round(x * 10^d) / 10^d; values kept away from ties).
    for d, dec in [("float32", 1), ("float32", 2), ("float64", 2), ("float32", -1), ("int32", 2)]:
        x = arr(d, (3, 4), "t", "round3")
        if d == "int32":
            x = arr(d, (3, 4), "t", "normal")
        xv = x.values(d)
        y = xv if not is_float(d) else np.round(xv, dec)
        add_case("round/%s/decimals=%d" % (dname(d), dec), "round", [x], [out(y, d)], {"decimals": dec})


# ----- binary -----

def ref_binary(name, a, b, cd):
    """a, b already cast to the compute dtype cd (float64 / int64 / bool arrays)."""
    fl = is_float(cd)
    with np.errstate(all="ignore"):
        if name == "add":
            return np.logical_or(a, b) if cd == "bool" else a + b
        if name == "subtract":
            return a - b
        if name == "multiply":
            return np.logical_and(a, b) if cd == "bool" else a * b
        if name == "divide":
            return a.astype(np.float64) / b.astype(np.float64)
        if name == "floor_divide":
            return np.floor(a / b) if fl else np.floor_divide(a, b)
        if name == "remainder":
            return np.remainder(a, b)
        if name == "power":
            if fl:
                return np.power(a, b)
            return np.power(a.astype(np.int64), b.astype(np.int64))
        if name == "maximum":
            return np.logical_or(a, b) if cd == "bool" else np.maximum(a, b)
        if name == "minimum":
            return np.logical_and(a, b) if cd == "bool" else np.minimum(a, b)
        if name == "logaddexp":
            return np.logaddexp(a, b)
        if name == "arctan2":
            return np.arctan2(a, b)
        if name == "equal":
            return a == b
        if name == "not_equal":
            return a != b
        if name == "less":
            return a < b
        if name == "less_equal":
            return a <= b
        if name == "greater":
            return a > b
        if name == "greater_equal":
            return a >= b
        if name == "logical_and":
            return np.logical_and(a, b)
        if name == "logical_or":
            return np.logical_or(a, b)
        if name == "bitwise_and":
            return a & b
        if name == "bitwise_or":
            return a | b
        if name == "bitwise_xor":
            return a ^ b
        if name == "left_shift":
            return np.left_shift(a, b)
        if name == "right_shift":
            return np.right_shift(a, b)
    raise ValueError(name)


COMPARISONS = {"equal", "not_equal", "less", "less_equal", "greater", "greater_equal", "logical_and", "logical_or"}


def binary_out(name, ops):
    cd = unify(ops)
    if name in ("divide", "arctan2", "logaddexp") and not is_float(cd):
        cd = "float32"
    od = "bool" if name in COMPARISONS else cd
    return cd, od


def add_binary(name, a, b, label, **kw):
    cd, od = binary_out(name, [a, b])
    av, bv = a.values(cd), b.values(cd)
    y = ref_binary(name, av, bv, cd)
    add_case("%s/%s" % (name, label), name, [a, b], [out(y, od)], **kw)


BINARY = [
    # name, float domains (a, b), int domains, dtypes
    ("add", ("normal", "normal"), ("normal", "normal"), FLOATS + INTS + ["bool"]),
    ("subtract", ("normal", "normal"), ("normal", "normal"), FLOATS + INTS),
    ("multiply", ("normal", "normal"), ("normal", "normal"), FLOATS + INTS + ["bool"]),
    ("divide", ("normal", "pos"), ("normal", "pos"), FLOATS + INTS),
    ("floor_divide", ("quarter", "divisor"), ("normal", "divisor"), FLOATS + INTS),
    ("remainder", ("quarter", "divisor"), ("normal", "divisor"), FLOATS + INTS),
    ("power", ("pos", "small"), ("small", "exp"), FLOATS + INTS),
    ("maximum", ("cmp", "cmp"), ("cmp", "cmp"), FLOATS + INTS + ["bool"]),
    ("minimum", ("cmp", "cmp"), ("cmp", "cmp"), FLOATS + INTS + ["bool"]),
    ("logaddexp", ("normal", "normal"), ("small", "small"), FLOATS + INTS),
    ("arctan2", ("normal", "normal"), ("small", "small"), FLOATS + INTS),
    ("equal", ("cmp", "cmp"), ("cmp", "cmp"), FLOATS + INTS + ["bool"]),
    ("not_equal", ("cmp", "cmp"), ("cmp", "cmp"), FLOATS + INTS + ["bool"]),
    ("less", ("cmp", "cmp"), ("cmp", "cmp"), FLOATS + INTS + ["bool"]),
    ("less_equal", ("cmp", "cmp"), ("cmp", "cmp"), FLOATS + INTS + ["bool"]),
    ("greater", ("cmp", "cmp"), ("cmp", "cmp"), FLOATS + INTS + ["bool"]),
    ("greater_equal", ("cmp", "cmp"), ("cmp", "cmp"), FLOATS + INTS + ["bool"]),
    ("logical_and", ("cmp", "cmp"), ("cmp", "cmp"), FLOATS + INTS + ["bool"]),
    ("logical_or", ("cmp", "cmp"), ("cmp", "cmp"), FLOATS + INTS + ["bool"]),
    ("bitwise_and", None, ("normal", "normal"), INTS + ["bool"]),
    ("bitwise_or", None, ("normal", "normal"), INTS + ["bool"]),
    ("bitwise_xor", None, ("normal", "normal"), INTS + ["bool"]),
    ("left_shift", None, ("small", "shift"), INTS),
    ("right_shift", None, ("normal", "shift"), INTS),
]


def divisor_values(d, shape):
    if is_float(d):
        v = rng.choice([-2.0, -1.5, -0.5, 0.5, 1.0, 1.5, 2.0, 4.0, -4.0, 0.25], size=shape)
    else:
        v = rng.choice([-5, -3, -2, -1, 1, 2, 3, 7] if d in SIGNED else [1, 2, 3, 5, 7], size=shape)
    return v


def binary_cases():
    # (shape a, shape b, layout a, layout b)
    geoms = [((2, 3), (2, 3), "c", "c"), ((3, 4), (3, 4), "t", "s"), ((2, 3, 4), (3, 4), "s", "t"),
             ((4, 1), (1, 5), "c", "c"), ((3, 4), (4,), "b", "s"), ((2, 3), (), "t", "c"), ((), (), "c", "c"),
             ((0, 3), (3,), "c", "c"), ((2, 0), (2, 1), "c", "c")]
    for name, fdoms, idoms, dtypes in BINARY:
        for i, d in enumerate(dtypes):
            picks = [geoms[i % len(geoms)], geoms[(i + 3) % len(geoms)]]
            if i == 0:
                picks = geoms
            for (sa, sb, ka, kb) in picks:
                doms = fdoms if is_float(d) else idoms
                da, db = doms
                a = arr(d, sa, ka, da) if da != "divisor" else arr(d, sa, ka, values=divisor_values(d, sa))
                if db == "divisor":
                    b = arr(d, sb, kb, values=divisor_values(d, sb))
                else:
                    b = arr(d, sb, kb, db)
                if name == "power" and d in ("float16", "bfloat16"):
                    b = arr(d, sb, kb, "half")
                    a = arr(d, sa, ka, "pos")
                add_binary(name, a, b, "%s/%s%s,%s%s" % (dname(d), sa, ka, sb, kb))
    # Mixed dtypes: MLX promotion.
    pairs = [("int8", "uint8"), ("int32", "float16"), ("uint32", "int32"), ("float16", "bfloat16"), ("bool", "int8"),
             ("float32", "float64"), ("uint8", "int64"), ("int32", "bfloat16"), ("bool", "float32"),
             ("uint8", "uint32"), ("int8", "int32"), ("float16", "float32")]
    for name in ["add", "subtract", "multiply", "divide", "maximum", "less", "equal", "floor_divide", "remainder",
                 "power", "logaddexp", "arctan2"]:
        for da, db in pairs:
            if "bool" in (da, db) and name in ("subtract", "floor_divide", "remainder", "power"):
                continue
            dom = {"floor_divide": "pos", "remainder": "pos", "power": "exp", "maximum": "cmp", "less": "cmp",
                   "equal": "cmp"}.get(name, "small")
            a = arr(da, (2, 3), "t", "small" if name != "power" else "pos")
            if name == "power" and not is_float(da):
                a = arr(da, (2, 3), "t", "small")
            b = arr(db, (3,), "c", dom if not (is_float(db) and dom == "exp") else "half")
            add_binary(name, a, b, "mixed/%s,%s" % (dname(da), dname(db)))
    for name in ["bitwise_and", "bitwise_or", "bitwise_xor", "left_shift", "right_shift"]:
        for da, db in [("int8", "uint8"), ("uint8", "uint32"), ("bool", "int32"), ("int8", "int64")]:
            a = arr(da, (2, 3), "t", "small" if "shift" in name else "normal")
            b = arr(db, (3,), "c", "shift" if "shift" in name else "normal")
            add_binary(name, a, b, "mixed/%s,%s" % (dname(da), dname(db)))
    # Weak scalars.
    scal = [("float16", 2.5), ("int8", 3), ("uint8", 2.5), ("bool", 2), ("int32", True), ("bfloat16", -1.5),
            ("float32", 3), ("uint32", 7), ("int64", -2), ("bool", 0.5), ("float64", 0.1)]
    for name in ["add", "subtract", "multiply", "divide", "maximum", "minimum", "less", "equal", "power",
                 "floor_divide", "remainder"]:
        for d, s in scal:
            if d == "bool" and name in ("subtract", "power", "floor_divide", "remainder") and not isinstance(s, float):
                continue
            if name == "power" and isinstance(s, int) and not isinstance(s, bool) and s < 0:
                continue
            if name in ("floor_divide", "remainder") and (isinstance(s, bool) or s == 0):
                continue
            if name == "power" and is_float(d):
                a = arr(d, (2, 3), "s", "pos")
            elif name == "power" and s == 7:
                a = arr(d, (2, 3), "s", "unit")
            else:
                a = arr(d, (2, 3), "s", "small")
            add_binary(name, a, Sc(s), "scalar/%s,%r" % (dname(d), s))
            if name in ("subtract", "divide", "less", "power") and d != "bool":
                if name == "power" and not is_float(d):
                    b = arr(d, (2, 3), "s", "exp")
                elif name == "power":
                    b = arr(d, (2, 3), "s", "half")
                elif name == "divide":
                    b = arr(d, (2, 3), "s", "pos")
                else:
                    b = arr(d, (2, 3), "s", "small")
                sv = abs(s) if name == "power" and not isinstance(s, bool) else s
                add_binary(name, Sc(sv), b, "scalar/%r,%s" % (sv, dname(d)))
    add_binary("add", Sc(2), Sc(3), "scalar/2,3")
    add_binary("multiply", Sc(2), Sc(1.5), "scalar/2,1.5")
    # NaN handling.
    for name in ["maximum", "minimum", "add", "equal", "not_equal", "less", "logaddexp", "arctan2", "power",
                 "remainder", "floor_divide", "divide"]:
        for d in ["float32", "float16"]:
            vals = np.array(SPECIALS)
            a = arr(d, (len(vals), 1), "c", values=vals[:, None])
            b = arr(d, (1, len(vals)), "c", values=vals[None, :])
            add_binary(name, a, b, "%s/specials" % dname(d))
    # Large inputs: the parallel paths of the elementwise kernels (checked through row sums).
    for name, d in [("add", "float32"), ("multiply", "int32"), ("maximum", "float16"), ("less", "float32")]:
        a = gen_input(d, (180, 200), 7919, 97, 1 if not is_float(d) else 0.125, -40 if not is_float(d) else -6,
                      layout=[["transpose", [1, 0]]])
        b = gen_input(d, (180,), 31, 17, 1 if not is_float(d) else 0.5, -8)
        cd, od = binary_out(name, [a, b])
        y = round_to(ref_binary(name, a.values(cd), b.values(cd), cd), od)
        add_case("%s/%s/large_transposed_bcast" % (name, dname(d)), name, [a, b], [out(y, od)], sum_output=[1],
                 atol=mag_atol("float64", 1) if not is_float(od) else mag_atol(od, np.abs(y).sum(axis=1).max()))


# ----- where, clip, isclose, allclose, array_equal -----

def select_cases():
    for i, (dx, dy, kx, ky) in enumerate([("float32", "float32", "c", "t"), ("int8", "uint8", "s", "b"),
                                           ("float16", "bfloat16", "t", "c"), ("bool", "bool", "c", "s"),
                                           ("int32", "float32", "b", "c"), ("float64", "float64", "s", "s")]):
        cond = arr("bool", (3, 4), ["t", "c", "s", "b"][i % 4])
        x = arr(dx, (3, 4), kx)
        y = arr(dy, (4,), "c")
        cd = unify([x, y])
        add_case("where/%s,%s" % (dname(dx), dname(dy)), "where", [cond, x, y],
                 [out(np.where(cond.x, x.values(cd), y.values(cd)), cd)])
    cond = arr("int32", (2, 1, 3), "c", "cmp")
    x = arr("float32", (4, 1), "c")
    add_case("where/int_cond_bcast_scalar", "where", [cond, x, Sc(0.5)],
             [out(np.where(cond.x != 0, x.x, 0.5), "float32")])
    cond = arr("bool", (3,), "c")
    add_case("where/scalars", "where", [cond, Sc(1), Sc(2)], [out(np.where(cond.x, 1, 2), "int32")])
    add_case("where/empty", "where", [arr("bool", (0, 2)), arr("float32", (0, 2)), arr("float32", (2,))],
             [out(np.zeros((0, 2)), "float32")])

    for d, lo, hi in [("float32", Sc(-1.0), Sc(1.0)), ("int8", Sc(-3), Sc(4)), ("float16", None, Sc(0.5)),
                      ("int32", Sc(-2.5), None), ("uint8", Sc(3), Sc(10))]:
        x = arr(d, (3, 4), "t", "normal")
        cd = unify([x] + [v for v in (lo, hi) if v is not None])
        v = x.values(cd)
        if lo is not None:
            v = np.maximum(v, lo.values(cd))
        if hi is not None:
            v = np.minimum(v, hi.values(cd))
        add_case("clip/%s/%s,%s" % (dname(d), lo and lo.v, hi and hi.v), "clip", [x, lo, hi], [out(v, cd)])
    x = arr("float32", (3, 4), "s")
    lo = arr("float32", (4,), "c")
    hi = arr("float64", (3, 1), "c", "pos")
    add_case("clip/array_bounds", "clip", [x, lo, hi], [out(np.minimum(np.maximum(x.x, lo.x), hi.x), "float64")])

    for d in ["float32", "float64", "float16"]:
        a = np.array([1.0, 1.0, 0.0, np.nan, np.inf, np.inf, -np.inf, 100.0, 1e-9, 2.0, np.nan, 5.0])
        b = np.array([1.0, 1.5, 1e-3, np.nan, np.inf, -np.inf, -np.inf, 100.5, 0.0, 2.0, 1.0, 6.0])
        for rtol, atol, eq in [(1e-5, 1e-8, False), (1e-2, 1e-2, True), (0.5, 0.0, False)]:
            if d == "float16" and rtol < 1e-3:
                continue
            x = arr(d, a.shape, "c", values=a)
            y = arr(d, b.shape, "c", values=b)
            ref = np.isclose(x.x, y.x, rtol=rtol, atol=atol, equal_nan=eq)
            args = {"rtol": rtol, "atol": atol, "equal_nan": eq}
            add_case("isclose/%s/%g,%g,%s" % (dname(d), rtol, atol, eq), "isclose", [x, y], [out(ref, "bool")], args)
            add_case("allclose/%s/%g,%g,%s" % (dname(d), rtol, atol, eq), "allclose", [x, y],
                     [out(np.allclose(x.x, y.x, rtol=rtol, atol=atol, equal_nan=eq), "bool")], args)
            m = ~np.isnan(a) & ~np.isnan(b) & (np.abs(a - b) < 0.6)
            x2 = arr(d, (int(m.sum()),), "c", values=a[m])
            y2 = arr(d, (int(m.sum()),), "c", values=b[m])
            add_case("allclose/%s/subset/%g,%g,%s" % (dname(d), rtol, atol, eq), "allclose", [x2, y2],
                     [out(np.allclose(x2.x, y2.x, rtol=rtol, atol=atol, equal_nan=eq), "bool")], args)
    x = arr("float32", (3, 4), "t")
    y = arr("float32", (4,), "c")
    add_case("isclose/f32/bcast", "isclose", [x, y], [out(np.isclose(x.x, y.x, 0.5, 0.5), "bool")],
             {"rtol": 0.5, "atol": 0.5, "equal_nan": False})
    for eq in [False, True]:
        v = np.array([1.0, np.nan, 3.0])
        add_case("array_equal/nan/%s" % eq, "array_equal",
                 [arr("float32", (3,), "c", values=v), arr("float32", (3,), "c", values=v)],
                 [out(np.array_equal(v, v, equal_nan=eq), "bool")], {"equal_nan": eq})
    x = arr("int32", (3, 4), "t")
    y = Inp("float32", np.ascontiguousarray(x.x).astype(np.float64))
    add_case("array_equal/int_vs_float_equal", "array_equal", [x, y], [out(True, "bool")], {"equal_nan": False})
    z = Inp("int32", np.where(np.arange(12).reshape(3, 4) == 5, 99, x.x))
    add_case("array_equal/differs", "array_equal", [x, z], [out(False, "bool")], {"equal_nan": False})
    add_case("array_equal/shape_differs", "array_equal", [arr("int32", (3,)), arr("int32", (1, 3))],
             [out(False, "bool")], {"equal_nan": False})
    add_case("array_equal/empty", "array_equal", [arr("float32", (0, 2)), arr("float16", (0, 2))],
             [out(True, "bool")], {"equal_nan": False})


# ----- reductions -----

RED_GEOMS = [((3, 4), None, "c"), ((3, 4), [0], "t"), ((3, 4), [1], "s"), ((2, 3, 4), [0, 2], "t"), ((2, 3, 4), [1], "s"),
             ((2, 3, 4), [-1], "b"), ((2, 3, 4), None, "s"), ((5,), [0], "c"), ((), None, "c"), ((0, 3), [0], "c"),
             ((0, 3), [1], "c"), ((2, 3, 4), [], "c"), ((4, 6), [0, 1], "t")]


def red_ref(op, x, axes, keepdims, d, ddof=0):
    ax = None if axes is None else tuple(axes)
    with np.errstate(all="ignore"):
        if op == "sum":
            od = "int32" if d == "bool" else d
            return np.sum(x.astype(np.float64) if is_float(d) else x.astype(np.int64), axis=ax, keepdims=keepdims), od
        if op == "prod":
            od = "int32" if d == "bool" else d
            return np.prod(x.astype(np.float64) if is_float(d) else x.astype(np.int64), axis=ax, keepdims=keepdims), od
        if op == "max":
            return np.max(x, axis=ax, keepdims=keepdims), d
        if op == "min":
            return np.min(x, axis=ax, keepdims=keepdims), d
        if op == "all":
            return np.all(x, axis=ax, keepdims=keepdims), "bool"
        if op == "any":
            return np.any(x, axis=ax, keepdims=keepdims), "bool"
        if op == "mean":
            return np.mean(x.astype(np.float64), axis=ax, keepdims=keepdims), to_float(d)
        if op in ("var", "std"):
            v = np.var(x.astype(np.float64), axis=ax, keepdims=keepdims, ddof=ddof)
            return (v if op == "var" else np.sqrt(v)), to_float(d)
        if op == "logsumexp":
            xv = x.astype(np.float64)
            m = np.max(xv, axis=ax, keepdims=True)
            m = np.where(np.isfinite(m), m, 0)
            y = np.log(np.sum(np.exp(xv - m), axis=ax, keepdims=True)) + m
            if not keepdims:
                y = y.reshape(np.sum(xv, axis=ax).shape)
            return y, to_float(d)
    raise ValueError(op)


def reduction_cases():
    ops = [("sum", FLOATS + INTS + ["bool"]), ("prod", FLOATS + INTS + ["bool"]), ("max", FLOATS + INTS + ["bool"]),
           ("min", FLOATS + INTS + ["bool"]), ("all", ["bool", "float32", "int32"]), ("any", ["bool", "float32", "int8"]),
           ("mean", FLOATS + INTS + ["bool"]), ("var", FLOATS + ["int32", "uint8"]), ("std", FLOATS + ["int8"]),
           ("logsumexp", FLOATS + ["int32"])]
    for op, dtypes in ops:
        for i, d in enumerate(dtypes):
            geoms = RED_GEOMS if i == 0 else [RED_GEOMS[(i + k) % len(RED_GEOMS)] for k in (0, 4, 8)]
            for j, (shape, axes, kind) in enumerate(geoms):
                if op in ("max", "min", "logsumexp") and 0 in shape and (axes is None or any(shape[a] == 0 for a in axes)):
                    if i == 0:
                        add_error_case("%s/%s/%s/%s/empty_axis" % (op, dname(d), shape, axes), op, [arr(d, shape)],
                                       {"axes": axes, "keepdims": False}, "MLX cannot max/min-reduce an empty axis")
                    continue
                dom = "small" if op in ("prod",) else ("cmp" if op in ("all", "any") else "normal")
                if op == "prod" and is_int(d):
                    dom = "cmp"
                x = arr(d, shape, kind, dom)
                keepdims = (j % 3 == 1)
                ddofs = [0, 1] if op in ("var", "std") else [0]
                for ddof in ddofs:
                    if op in ("var", "std") and ddof >= max(1, int(np.prod([shape[a] for a in axes]) if axes is not None
                                                                   else np.prod(shape))):
                        continue
                    y, od = red_ref(op, x.values(d), axes, keepdims, d, ddof)
                    n = int(np.prod([shape[a] for a in axes])) if axes is not None else int(np.prod(shape))
                    mag = (np.abs(x.values(d)).max() if x.x.size else 1) * max(n, 1)
                    atol = None
                    if op in ("sum", "mean", "var", "std") and is_float(od):
                        # Rounding errors of a sum of n terms grow like sqrt(n) (random walk).
                        atol = mag_atol(od, mag / max(n, 1) * (4 * np.sqrt(n) if op == "sum" else 2))
                        if op == "var":
                            atol = mag_atol(od, (np.abs(x.values(d)).max() if x.x.size else 1) ** 2 * 4)
                    if op == "prod" and is_float(od):
                        atol = mag_atol(od, np.abs(y).max() if np.size(y) else 1, 4)
                    args = {"axes": axes, "keepdims": keepdims}
                    if op in ("var", "std"):
                        args["ddof"] = ddof
                    add_case("%s/%s/%s/%s/%s%s%s" % (op, dname(d), shape, axes, kind, "/keep" if keepdims else "",
                                                     "/ddof=%d" % ddof if ddof else ""),
                             op, [x], [out(y, od)], args, atol=atol)
    # NaN propagation and infinities.
    v = np.array([[1.0, np.nan, 3.0], [np.inf, 2.0, -1.0], [-np.inf, -np.inf, -np.inf], [0.5, 0.25, 4.0]])
    for op in ["sum", "max", "min", "prod", "mean", "logsumexp", "all", "any"]:
        for d in ["float32", "float16"]:
            for axes in [[1], [0]]:
                x = arr(d, v.shape, "c", values=v)
                y, od = red_ref(op, x.x, axes, False, d)
                add_case("%s/%s/specials/%s" % (op, dname(d), axes), op, [x], [out(y, od)], {"axes": axes, "keepdims": False})
    # Large: one long contiguous reduction, column reductions, many small rows.
    big = [((200000,), None, [], "sum", "float32"), ((200000,), None, [], "max", "float32"), ((300, 400), [0], [], "sum", "float32"),
           ((300, 400), [1], [["transpose", [1, 0]]], "sum", "float64"), ((40, 30, 50), [0, 2], [], "sum", "int32"),
           ((300, 400), [0], [], "min", "float16"), ((50000,), None, [], "mean", "bfloat16"), ((400, 300), [0], [], "all", "bool"),
           ((200, 300), [1], [["transpose", [1, 0]]], "max", "int8"), ((160, 250), None, [["transpose", [1, 0]]], "sum", "float32")]
    for shape, axes, layout, op, d in big:
        if d == "bool":
            x = gen_input("int32", shape, 7, 1001, 1, 0, layout)
            x = Inp("bool", x.base != 0, layout, gen=x.gen)
        else:
            x = gen_input(d, shape, 7919, 257 if d != "int8" else 101, 0.0078125 if is_float(d) else 1,
                          -0.25 if is_float(d) else -50, layout)
        y, od = red_ref(op, x.values(d), axes, False, d)
        n = x.x.size if axes is None else int(np.prod([x.shape[a] for a in axes]))
        atol = mag_atol(od, 4 * np.sqrt(n) / (n if op == "mean" else 1)) if op in ("sum", "mean") else None
        add_case("%s/%s/large%s/%s" % (op, dname(d), list(shape), axes), op, [x], [out(y, od)],
                 {"axes": axes, "keepdims": False}, atol=atol)

    # argmax / argmin
    for op, f in [("argmax", np.argmax), ("argmin", np.argmin)]:
        for i, d in enumerate(FLOATS + INTS + ["bool"]):
            for shape, axis, kind, keep in [((3, 4), 1, "c", False), ((3, 4), 0, "t", True), ((2, 3, 4), None, "s", False),
                                            ((2, 3, 4), -2, "b", False), ((5,), 0, "c", True), ((3, 4), None, "t", True),
                                            ((0, 3), 1, "c", False)][i % 3::3] if i else \
                    [((3, 4), 1, "c", False), ((3, 4), 0, "t", True), ((2, 3, 4), None, "s", False),
                     ((2, 3, 4), -2, "b", False), ((5,), 0, "c", True), ((3, 4), None, "t", True), ((0, 3), 1, "c", False),
                     ((), None, "c", False)]:
                x = arr(d, shape, kind, "cmp")  # ties: the first index wins
                y = f(x.x, axis=axis, keepdims=keep) if x.x.size or axis is not None else None
                if y is None:
                    continue
                add_case("%s/%s/%s/%s/%s%s" % (op, dname(d), shape, axis, kind, "/keep" if keep else ""), op, [x],
                         [out(y, "uint32")], {"axis": axis, "keepdims": keep})
        x = arr("float32", (3, 4), "c", values=np.array([[1, np.nan, 3, np.nan], [2, 5, 5, 1], [np.inf, 0, np.inf, -np.inf]]))
        add_case("%s/f32/nan_first_wins" % op, op, [x], [out(f(x.x, axis=1), "uint32")], {"axis": 1, "keepdims": False})
        x = gen_input("float32", (300, 250), 7919, 1009, 0.25, -100.0, [["transpose", [1, 0]]])
        add_case("%s/f32/large" % op, op, [x], [out(f(x.x, axis=1), "uint32")], {"axis": 1, "keepdims": False})

    # softmax
    for i, d in enumerate(FLOATS + ["int32"]):
        for shape, axes, kind, precise in [((3, 5), None, "c", False), ((3, 5), [0], "t", False), ((2, 3, 4), [1], "s", True),
                                           ((2, 3, 4), [0, 2], "b", False), ((2, 3, 4), None, "t", True), ((6,), None, "s", False),
                                           ((0, 4), None, "c", False), ((2, 3, 4), [-1, 0], "c", False)]:
            x = arr(d, shape, kind, "normal")
            xv = x.values(to_float(d))
            ax = tuple(axes) if axes else (-1,)
            m = np.max(xv, axis=ax, keepdims=True) if xv.size else 0
            e = np.exp(xv - m)
            y = e / np.sum(e, axis=ax, keepdims=True)
            add_case("softmax/%s/%s/%s/%s%s" % (dname(d), shape, axes, kind, "/precise" if precise else ""), "softmax", [x],
                     [out(y, to_float(d))], {"axes": axes, "precise": precise})
    x = arr("float32", (3, 3), "c", values=np.array([[0, -np.inf, 1], [-np.inf, -np.inf, 2], [1000, 1000, -1000]]))
    e = np.exp(x.x - x.x.max(axis=-1, keepdims=True))
    add_case("softmax/f32/inf_and_large", "softmax", [x], [out(e / e.sum(-1, keepdims=True), "float32")],
             {"axes": None, "precise": False})


# ----- scans -----

def scan_ref(op, x, axis, reverse, inclusive, d):
    od = "int32" if d == "bool" and op in ("cumsum", "cumprod") else d
    if axis is None:
        x = x.reshape(-1)
        axis = 0
    xv = x.astype(np.float64) if is_float(d) else (x.astype(np.int64) if d != "bool" else x)
    if d == "bool" and op in ("cumsum", "cumprod"):
        xv = x.astype(np.int64)
    if reverse:
        xv = np.flip(xv, axis)
    with np.errstate(all="ignore"):
        f = {"cumsum": np.cumsum, "cumprod": np.cumprod, "cummax": np.maximum.accumulate, "cummin": np.minimum.accumulate}[op]
        if xv.shape[axis] == 0:
            y = xv.copy()
        else:
            y = f(xv, axis=axis)
    if not inclusive and y.shape[axis] > 0:
        if op == "cumsum":
            init = 0
        elif op == "cumprod":
            init = 1
        elif d == "bool":
            init = op == "cummin"
        elif is_float(d):
            init = -np.inf if op == "cummax" else np.inf
        else:
            info = np.iinfo(NP[d])
            init = info.min if op == "cummax" else info.max
        y = np.moveaxis(y, axis, 0)
        y = np.concatenate([np.full((1,) + y.shape[1:], init, dtype=y.dtype), y[:-1]], axis=0)
        y = np.moveaxis(y, 0, axis)
    if reverse:
        y = np.flip(y, axis)
    return y, od


def scan_cases():
    geoms = [((3, 4), 1, "c"), ((3, 4), 0, "t"), ((2, 3, 4), 1, "s"), ((2, 3, 4), None, "b"), ((6,), 0, "c"),
             ((2, 5), -1, "t"), ((0, 3), 0, "c")]
    for op in ["cumsum", "cumprod", "cummax", "cummin"]:
        for i, d in enumerate(FLOATS + INTS + ["bool"]):
            gs = geoms if i == 0 else [geoms[i % len(geoms)], geoms[(i + 2) % len(geoms)]]
            for j, (shape, axis, kind) in enumerate(gs):
                for reverse, inclusive in [(False, True), (True, True), (False, False), (True, False)]:
                    if i and (j + int(reverse) + int(inclusive)) % 2:
                        continue
                    x = arr(d, shape, kind, "small" if op != "cumprod" else ("cmp" if is_int(d) else "small"))
                    y, od = scan_ref(op, x.values(d), axis, reverse, inclusive, d)
                    atol = None
                    if op == "cumsum" and is_float(od):
                        atol = mag_atol(od, 4 * np.sqrt(x.x.size) * (np.abs(x.x).max() if x.x.size else 1))
                    if op == "cumprod" and is_float(od):
                        atol = mag_atol(od, np.abs(y).max() if y.size else 1, 4)
                    add_case("%s/%s/%s/%s/%s%s%s" % (op, dname(d), shape, axis, kind, "/rev" if reverse else "",
                                                     "/excl" if not inclusive else ""), op, [x], [out(y, od)],
                             {"axis": axis, "reverse": reverse, "inclusive": inclusive}, atol=atol)
    v = np.array([[1.0, np.nan, 3.0, 0.5], [np.inf, 2.0, -np.inf, 1.0]])
    for op in ["cumsum", "cumprod", "cummax", "cummin"]:
        x = arr("float32", v.shape, "c", values=v)
        y, od = scan_ref(op, x.x, 1, False, True, "float32")
        add_case("%s/f32/specials" % op, op, [x], [out(y, od)], {"axis": 1, "reverse": False, "inclusive": True})


# ----- linalg -----

def matmul_cases():
    geoms = [((3, 4), (4, 5), "c", "c"), ((3, 4), (4, 5), "t", "t"), ((3, 4), (4, 5), "s", "c"), ((4,), (4, 5), "c", "t"),
             ((3, 4), (4,), "t", "s"), ((4,), (4,), "c", "c"), ((2, 3, 4), (2, 4, 5), "c", "s"), ((2, 1, 3, 4), (3, 4, 5), "c", "t"),
             ((3, 4), (2, 4, 5), "t", "c"), ((2, 3, 4), (4, 5), "b", "c"), ((3, 0), (0, 4), "c", "c"), ((0, 4), (4, 5), "c", "c"),
             ((1, 4), (4, 1), "c", "c"), ((2, 3, 4), (2, 4, 5), "t", "b")]
    for d in FLOATS:
        for sa, sb, ka, kb in (geoms if d in ("float32", "float16") else geoms[::2]):
            if ka == "t" and len(sa) > 2:
                # transpose only the last two axes
                pass
            a = arr(d, sa, ka, "small")
            b = arr(d, sb, kb, "small")
            y = np.matmul(a.x.astype(np.float64), b.x.astype(np.float64))
            mag = np.matmul(np.abs(a.x.astype(np.float64)), np.abs(b.x.astype(np.float64)))
            add_case("matmul/%s/%s%s@%s%s" % (dname(d), sa, ka, sb, kb), "matmul", [a, b], [out(y, d)],
                     atol=mag_atol(d, mag.max() / np.sqrt(sa[-1] or 1) * 2 if mag.size else 1))
        a = gen_input(d, (70, 33), 7919, 97, 0.0625, -3, [["transpose", [1, 0]]])
        b = gen_input(d, (70, 19), 31, 61, 0.125, -3.75)
        y = a.x.astype(np.float64) @ b.x.astype(np.float64)
        mag = np.abs(a.x.astype(np.float64)) @ np.abs(b.x.astype(np.float64))
        add_case("matmul/%s/large_transposed" % dname(d), "matmul", [a, b], [out(y, d)],
                 atol=mag_atol(d, mag.max() / np.sqrt(70) * 2))
    a = arr("float16", (3, 4), "c", "small")
    b = arr("float32", (4, 2), "c", "small")
    add_case("matmul/mixed_f16_f32", "matmul", [a, b], [out(a.x @ b.x, "float32")], atol=1e-4)

    for d in ["float32", "float16", "float64", "bfloat16"]:
        for sc, sa, sb, alpha, beta in [((3, 5), (3, 4), (4, 5), 1.0, 1.0), ((5,), (3, 4), (4, 5), 2.0, 0.5),
                                        ((2, 3, 5), (2, 3, 4), (4, 5), 0.5, -1.0), ((3, 1), (3, 4), (4, 5), 1.0, 0.0),
                                        ((), (3, 4), (4, 5), 1.5, 2.0), ((3, 5), (4,), (4, 5), 1.0, 1.0)]:
            c = arr(d, sc, "t" if len(sc) == 2 else "c", "small")
            a = arr(d, sa, "s", "small")
            b = arr(d, sb, "t", "small")
            y = alpha * np.matmul(a.x, b.x) + beta * c.x
            mag = abs(alpha) * np.matmul(np.abs(a.x), np.abs(b.x)) + abs(beta) * np.abs(c.x)
            add_case("addmm/%s/%s,%s,%s/%g,%g" % (dname(d), sc, sa, sb, alpha, beta), "addmm", [c, a, b],
                     [out(y, d)], {"alpha": alpha, "beta": beta}, atol=mag_atol(d, mag.max(), 2))

    for d in ["float32", "float16", "float64"]:
        for sa, sb, ka, kb in [((3, 4), (5, 4), "c", "t"), ((4,), (4,), "s", "c"), ((2, 3, 4), (4,), "t", "c"),
                               ((), (3, 2), "c", "s"), ((2, 4), (3, 2, 4), "b", "c")]:
            a = arr(d, sa, ka, "small")
            b = arr(d, sb, kb, "small")
            y = np.inner(a.x, b.x)
            mag = np.inner(np.abs(a.x), np.abs(b.x))
            add_case("inner/%s/%s%s,%s%s" % (dname(d), sa, ka, sb, kb), "inner", [a, b], [out(y, d)],
                     atol=mag_atol(d, np.max(mag) if np.size(mag) else 1))
        for sa, sb, ka, kb in [((3,), (4,), "c", "s"), ((2, 3), (2, 2), "t", "c"), ((0,), (3,), "c", "c"), ((), (3,), "c", "c")]:
            a = arr(d, sa, ka, "small")
            b = arr(d, sb, kb, "small")
            add_case("outer/%s/%s%s,%s%s" % (dname(d), sa, ka, sb, kb), "outer", [a, b], [out(np.outer(a.x, b.x), d)])
        for sa, sb, axa, axb in [((2, 3, 4), (4, 3, 5), [1, 2], [1, 0]), ((3, 4), (4, 5), [1], [0]), ((2, 3), (3, 2), [0, 1], [1, 0]),
                                 ((2, 3), (4, 5), [], [])]:
            a = arr(d, sa, "t", "small")
            b = arr(d, sb, "c", "small")
            y = np.tensordot(a.x, b.x, axes=(axa, axb))
            mag = np.tensordot(np.abs(a.x), np.abs(b.x), axes=(axa, axb))
            add_case("tensordot/%s/%s,%s/%s,%s" % (dname(d), sa, sb, axa, axb), "tensordot", [a, b], [out(y, d)],
                     {"axes_a": axa, "axes_b": axb}, atol=mag_atol(d, np.max(mag)))

    # norm
    for d in ["float32", "float16", "float64", "int32", "bfloat16"]:
        x3 = arr(d, (2, 3, 4), "t", "small")
        x2 = arr(d, (3, 4), "s", "small")
        x1 = arr(d, (6,), "s", "small")
        od = to_float(d)
        for x, ord_, axes, keep in [(x3, None, None, False), (x2, None, None, True), (x1, None, None, False),
                                    (x3, None, [1], False), (x3, None, [0, 2], True), (x2, "fro", None, False),
                                    (x3, "fro", [0, 1], False), (x1, 1.0, None, False), (x3, 3.0, [2], True),
                                    (x3, 0.5, [1], False), (x3, 0.0, [0], False), (x1, "inf", None, False),
                                    (x3, "-inf", [2], False), (x2, 1.0, None, False), (x2, "inf", None, False),
                                    (x2, -1.0, None, True), (x2, "-inf", [1, 0], False), (x3, 1.0, [0, 2], False),
                                    (x1, 2.0, [0], False), (x1, -1.0, None, False)]:
            xv = x.values(od)
            o = {"inf": np.inf, "-inf": -np.inf}.get(ord_, ord_) if isinstance(ord_, str) and ord_ != "fro" else ord_
            ax = None if axes is None else tuple(axes)
            with np.errstate(all="ignore"):
                if ord_ is None and axes is None:
                    y = np.sqrt(np.sum(xv ** 2))
                    if keep:
                        y = np.reshape(y, [1] * xv.ndim)
                else:
                    y = np.linalg.norm(xv, ord=o, axis=ax, keepdims=keep)
            add_case("norm/%s/%s/%s/%s%s" % (dname(d), x.shape, ord_, axes, "/keep" if keep else ""), "norm", [x],
                     [out(y, od)], {"ord": ord_, "axes": axes, "keepdims": keep},
                     atol=mag_atol(od, np.sum(np.abs(xv)) + 1))


# ----- shape ops and astype -----

def shape_cases():
    dts = ["float32", "int8", "bool", "float16", "bfloat16", "uint32", "int64", "float64"]
    for i, d in enumerate(dts):
        k = ["c", "t", "s", "b"][i % 4]
        x = arr(d, (2, 3, 4), k)
        e = arr(d, (0, 3), "c")
        s0 = arr(d, (), "c")
        # The view-only ops are dtype-blind: the first five dtypes cover them.
        full = i < 5
        for shape in [[4, 6], [-1, 2], [24], [2, 3, 2, 2], [1, 24, 1]][:5 if full else 1]:
            add_case("reshape/%s/%s/%s" % (dname(d), k, shape), "reshape", [x], [out(x.x.reshape(shape), d)], {"shape": shape})
        add_case("reshape/%s/empty" % dname(d), "reshape", [e], [out(e.x.reshape(3, 0, 1), d)], {"shape": [3, 0, 1]})
        add_case("reshape/%s/scalar" % dname(d), "reshape", [s0], [out(s0.x.reshape(1, 1), d)], {"shape": [1, 1]})
        for st, en in [(0, -1), (1, 2), (0, 1), (2, 2)][:4 if full else 1]:
            sh = x.shape[:st] + (int(np.prod(x.shape[st:en % 3 + 1])),) + x.shape[en % 3 + 1:]
            add_case("flatten/%s/%s/%d,%d" % (dname(d), k, st, en), "flatten", [x], [out(x.x.reshape(sh), d)],
                     {"start": st, "end": en})
        add_case("flatten/%s/scalar" % dname(d), "flatten", [s0], [out(s0.x.reshape(1), d)], {"start": 0, "end": -1})
        for ax, shape in [(1, [3, 1]), (-1, [2, -1]), (0, [1, 2])][:3 if full else 1]:
            sh = list(x.shape)
            a = ax % 3
            n = sh[a]
            sub = [n // int(np.prod([v for v in shape if v != -1])) if v == -1 else v for v in shape]
            sh = sh[:a] + sub + sh[a + 1:]
            add_case("unflatten/%s/%s/%d,%s" % (dname(d), k, ax, shape), "unflatten", [x], [out(x.x.reshape(sh), d)],
                     {"axis": ax, "shape": shape})
        y = arr(d, (1, 3, 1, 2), k)
        for axes in [None, [0], [-2], [0, 2]][:4 if full else 1]:
            add_case("squeeze/%s/%s/%s" % (dname(d), k, axes), "squeeze", [y],
                     [out(np.squeeze(y.x, axis=None if axes is None else tuple(axes)), d)], {"axes": axes})
        for axes in [[0], [-1], [1, 3], [0, 4]][:4 if full else 1]:
            add_case("expand_dims/%s/%s/%s" % (dname(d), k, axes), "expand_dims", [x],
                     [out(np.expand_dims(x.x, tuple(axes)), d)], {"axes": axes})
        add_case("expand_dims/%s/scalar" % dname(d), "expand_dims", [s0], [out(np.expand_dims(s0.x, 0), d)], {"axes": [0]})
        for perm in [[2, 0, 1], [1, 0, 2], [0, 1, 2], [2, 1, 0]][:4 if full else 1]:
            add_case("transpose/%s/%s/%s" % (dname(d), k, perm), "transpose", [x], [out(x.x.transpose(perm), d)],
                     {"perm": perm})
        for a1, a2 in [(0, 2), (-1, 1)][:2 if full else 1]:
            add_case("swapaxes/%s/%s/%d,%d" % (dname(d), k, a1, a2), "swapaxes", [x], [out(np.swapaxes(x.x, a1, a2), d)],
                     {"axis1": a1, "axis2": a2})
        for s, t in [(0, 2), (-1, 0), (1, 1)][:3 if full else 1]:
            add_case("moveaxis/%s/%s/%d,%d" % (dname(d), k, s, t), "moveaxis", [x], [out(np.moveaxis(x.x, s, t), d)],
                     {"source": s, "destination": t})
        # concatenate / stack
        a = arr(d, (2, 3), k)
        b = arr(d, (2, 5), "c")
        c = arr(d, (2, 0), "c")
        add_case("concatenate/%s/axis1" % dname(d), "concatenate", [a, b, c], [out(np.concatenate([a.x, b.x, c.x], 1), d)],
                 {"axis": 1})
        b2 = arr(d, (4, 3), "t")
        add_case("concatenate/%s/axis0" % dname(d), "concatenate", [a, b2], [out(np.concatenate([a.x, b2.x], 0), d)],
                 {"axis": -2})
        a3 = arr(d, (2, 3), "s")
        for ax in [0, 1, 2, -1][:4 if full else 1]:
            add_case("stack/%s/%d" % (dname(d), ax), "stack", [a, a3, a], [out(np.stack([a.x, a3.x, a.x], ax), d)],
                     {"axis": ax})
        add_case("stack/%s/scalars" % dname(d), "stack", [s0, s0], [out(np.stack([s0.x, s0.x]), d)], {"axis": 0})
        # split
        z = arr(d, (6, 4), k)
        for at, ax in [(3, 0), (2, 1), ([1, 4], 0), ([0, 2, 2, 7], 0), ([3], -1)]:
            parts = np.split(z.x, at, axis=ax) if isinstance(at, int) else np.split(z.x, at, axis=ax)
            args = {"axis": ax}
            args["sections" if isinstance(at, int) else "indices"] = at
            add_case("split/%s/%s/%s,%d" % (dname(d), k, at, ax), "split", [z], [out(p, d) for p in parts], args)
        # repeat / tile
        for r, ax in [(2, 0), (3, 1), (2, None), (0, 1), (1, -1)]:
            add_case("repeat/%s/%s/%d,%s" % (dname(d), k, r, ax), "repeat", [a], [out(np.repeat(a.x, r, axis=ax), d)],
                     {"repeats": r, "axis": ax})
        for reps in [[2], [2, 1], [1, 2, 3], [3, 1, 1, 2]]:
            add_case("tile/%s/%s/%s" % (dname(d), k, reps), "tile", [a], [out(np.tile(a.x, reps), d)], {"reps": reps})
        # pad
        for widths, mode, value in [([[1, 2], [0, 1]], "constant", 0), ([[0, 0], [2, 2]], "edge", 0),
                                    ([[2, 1], [1, 3]], "edge", 0), ([[1, 1], [1, 1]], "constant", 1)]:
            if mode == "constant":
                y = np.pad(a.x, widths, mode="constant", constant_values=value)
            else:
                y = np.pad(a.x, widths, mode="edge")
            add_case("pad/%s/%s/%s/%s" % (dname(d), k, mode, widths), "pad", [a], [out(y, d)],
                     {"widths": widths, "mode": mode, "value": value})
        # broadcast_to
        v = arr(d, (3, 1), k if k != "b" else "c")
        for shape in [[3, 4], [2, 3, 5], [3, 1], [0, 3, 2]]:
            add_case("broadcast_to/%s/%s/%s" % (dname(d), k, shape), "broadcast_to", [v],
                     [out(np.broadcast_to(v.x, shape), d)], {"shape": shape})
        # slice (negative steps, clamping, empty)
        big = arr(d, (5, 6), k)
        for st, sp_, stp in [([0, 0], [5, 6], [2, 3]), ([4, 5], [-6, -7], [-1, -2]), ([-2, 1], [100, -1], [1, 2]),
                             ([3, 2], [1, 2], [1, 1]), ([1, -1], [4, 0], [2, -1]), ([-100, 100], [100, -100], [1, -3])]:
            y = big.x[slice(st[0], sp_[0], stp[0]), slice(st[1], sp_[1], stp[1])]
            add_case("slice/%s/%s/%s:%s:%s" % (dname(d), k, st, sp_, stp), "slice", [big], [out(y, d)],
                     {"start": st, "stop": sp_, "step": stp})
        # slice_update
        for st, sp_, stp, ushape in [([1, 0], [3, 6], [1, 2], (2, 3)), ([4, 5], [0, 0], [-2, -3], (2, 2)),
                                     ([0, 1], [5, 2], [1, 1], (1,)), ([2, 2], [2, 4], [1, 1], (0, 2))]:
            u = arr(d, ushape, "t" if len(ushape) == 2 else "c")
            y = big.x.copy()
            y[slice(st[0], sp_[0], stp[0]), slice(st[1], sp_[1], stp[1])] = u.x
            add_case("slice_update/%s/%s/%s:%s:%s" % (dname(d), k, st, sp_, stp), "slice_update", [big, u], [out(y, d)],
                     {"start": st, "stop": sp_, "step": stp})
        # as_strided over the row-major data
        flat = np.ascontiguousarray(x.x).reshape(-1)
        for shape, strides, off in [([3, 4], [4, 1], 2), ([4, 3], [1, 4], 0), ([5, 3], [2, 1], 1), ([2, 2, 2], [12, 0, 1], 3)]:
            y = np.lib.stride_tricks.as_strided(flat[off:], shape=shape, strides=[s * flat.itemsize for s in strides])
            add_case("as_strided/%s/%s/%s,%s,%d" % (dname(d), k, shape, strides, off), "as_strided", [x], [out(y, d)],
                     {"shape": shape, "strides": strides, "offset": off})

    # astype across dtypes (values in range of both; floats to ints truncate toward zero)
    src_vals = {"float32": np.array([-3.75, -1.5, -0.5, 0.0, 0.25, 1.0, 2.5, 7.0, 100.0, 1e-3]),
                "int32": np.array([-100, -3, -1, 0, 1, 2, 7, 100, 127, 50])}
    for sd in FLOATS + INTS + ["bool"]:
        for td in FLOATS + INTS + ["bool"]:
            if sd == td:
                continue
            if is_float(sd):
                v = src_vals["float32"]
            elif sd == "bool":
                v = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 1])
            else:
                v = src_vals["int32"]
            if td in UNSIGNED or sd in UNSIGNED:
                v = np.abs(v)
            if td == "int8" or sd == "int8":
                v = np.clip(v, -128, 127)
            x = arr(sd, (2, 5), "t", values=round_to(v, sd).reshape(2, 5))
            y = round_to(x.x, td) if not (is_int(td) and is_float(sd)) else round_to(np.trunc(x.x), td)
            add_case("astype/%s->%s" % (dname(sd), dname(td)), "astype", [x], [out(y, td)], {"dtype": td})
    x = arr("float32", (2, 3), "s", values=np.array([[1.0, -2.0, 0.5], [np.inf, -0.0, 3.0]]))
    add_case("view/f32->u32", "view", [x], [out(x.x.astype(np.float32).view(np.uint32).astype(np.int64), "uint32")],
             {"dtype": "uint32"})
    x = arr("int32", (2, 2), "c", values=np.array([[1, -1], [256, 65535]]))
    add_case("view/i32->u8", "view", [x],
             [out(x.x.astype(np.int32).view(np.uint8).astype(np.int64), "uint8")], {"dtype": "uint8"})


def large_cases():
    """Inputs past the kernels' parallel threshold (32K elements), checked through row sums."""
    t = [["transpose", [1, 0]]]
    x = gen_input("float32", (220, 180), 7919, 97, 0.0625, -3.0, t)
    y = round_to(np.exp(x.values("float32")), "float32")
    add_case("exp/f32/large_transposed", "exp", [x], [out(y, "float32")], sum_output=[1],
             atol=mag_atol("float32", np.abs(y).sum(axis=1).max()))
    x = gen_input("int8", (300, 150), 31, 61, 1, -30, [["slice", [0, 149], [300, -151], [1, -1]]])
    add_case("astype/i8->f16/large_reversed", "astype", [x], [out(x.x, "float16")], {"dtype": "float16"},
             sum_output=[0], atol=1e-9)
    for op, d, rev in [("cumsum", "float32", False), ("cummax", "int32", True), ("cumprod", "float64", False)]:
        x = gen_input(d, (250, 160), 7919, 13 if op != "cumprod" else 7,
                      0.25 if is_float(d) else 1, -1.5 if op == "cumsum" else (0.5 if op == "cumprod" else -6), t)
        xv = x.values(d)
        y, od = scan_ref(op, xv, 1, rev, True, d)
        y = round_to(y, od)
        add_case("%s/%s/large_transposed%s" % (op, dname(d), "/rev" if rev else ""), op, [x], [out(y, od)],
                 {"axis": 1, "reverse": rev, "inclusive": True}, sum_output=[1],
                 atol=mag_atol(od, np.abs(y).sum(axis=1).max() * 10) if is_float(od) else 1e-9)
    x = gen_input("float32", (200, 170), 7919, 101, 0.05, -2.5, t)
    xv = x.values("float32")
    e = np.exp(xv - xv.max(axis=-1, keepdims=True))
    add_case("softmax/f32/large_transposed", "softmax", [x], [out(e / e.sum(-1, keepdims=True), "float32")],
             {"axes": None, "precise": False}, sum_output=[0], atol=1e-4)
    y, od = red_ref("logsumexp", xv, [1], False, "float32")
    add_case("logsumexp/f32/large_transposed", "logsumexp", [x], [out(y, od)], {"axes": [1], "keepdims": False})
    a = gen_input("float32", (180, 190), 7919, 97, 0.125, -6, t)
    b = gen_input("float32", (150, 180), 31, 17, 0.5, -4)
    add_case("concatenate/f32/large", "concatenate", [a, b], [out(np.concatenate([a.x, b.x], 0), "float32")],
             {"axis": 0}, sum_output=[1], atol=1e-3)


def main():
    creation_cases()
    unary_cases()
    binary_cases()
    select_cases()
    reduction_cases()
    scan_cases()
    matmul_cases()
    shape_cases()
    error_cases()
    large_cases()
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    doc = {"generator": "scripts/make_op_fixtures.py", "numpy": np.__version__, "cases": CASES}
    with open(OUT, "w") as f:
        json.dump(doc, f, separators=(",", ":"), allow_nan=False)
        f.write("\n")
    print("%d cases, %d bytes -> %s" % (len(CASES), os.path.getsize(OUT), os.path.relpath(OUT)), file=sys.stderr)


if __name__ == "__main__":
    main()
