#!/usr/bin/env python3
"""Checks that files ferrox writes load in the `safetensors` Python package and NumPy with the
exact values (the other direction, Python-written files loading in ferrox, is
crates/ferrox/tests/io.rs with the fixtures of scripts/make_io_fixtures.py).

    pip install -q numpy safetensors
    cargo run -p ferrox --example io_interop -- /tmp/ferrox-interop
    python3 scripts/check_io_interop.py /tmp/ferrox-interop
"""
import os
import sys

import numpy as np
import safetensors
import safetensors.numpy

NUMPY_DTYPES = ["bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
                "float16", "float32", "float64"]


def expected(with_bf16: bool) -> dict:
    """The arrays examples/io_interop.rs writes, recomputed from their formulas."""
    i = np.arange(12, dtype=np.float64).reshape(3, 4)
    out = {}
    for d in NUMPY_DTYPES + (["bfloat16"] if with_bf16 else []):
        if d == "bool":
            out[f"x_{d}"] = (np.arange(12).reshape(3, 4) % 3 == 0)
        elif d.startswith("uint"):
            out[f"x_{d}"] = (3 * i).astype(d)
        elif d.startswith("int"):
            out[f"x_{d}"] = (3 * i - 10).astype(d)
        elif d == "bfloat16":
            out[f"x_{d}"] = (0.75 * i - 4).astype(np.float32)  # compared after widening
        else:
            out[f"x_{d}"] = (0.75 * i - 4).astype(d)
    out["t"] = (0.25 * i).astype(np.float32).T
    out["scalar"] = np.array(-1.5)
    out["empty"] = np.zeros((0, 5), dtype=np.int32)
    return out


ST_TO_NUMPY = {"BOOL": "?", "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8", "I8": "i1",
               "I16": "<i2", "I32": "<i4", "I64": "<i8", "F16": "<f2", "F32": "<f4", "F64": "<f8"}

failures = []


def check(where: str, name: str, got: np.ndarray, want: np.ndarray) -> None:
    if got.dtype != want.dtype or got.shape != want.shape or not np.array_equal(got, want):
        failures.append(f"{where}:{name}: got {got.dtype}{got.shape} {got.ravel()[:6]}, "
                        f"want {want.dtype}{want.shape} {want.ravel()[:6]}")


def check_dict(where: str, got: dict, want: dict) -> None:
    if set(got) != set(want):
        failures.append(f"{where}: names {sorted(got)} != {sorted(want)}")
    for name in want.keys() & got.keys():
        check(where, name, got[name], want[name])


def main() -> None:
    d = sys.argv[1] if len(sys.argv) > 1 else "ferrox-interop"
    meta = {"format": "mlx", "author": "ferrox \u2713"}

    # safetensors, numpy front end (no bfloat16 in NumPy).
    path = os.path.join(d, "ferrox_nobf16.safetensors")
    check_dict("safetensors.numpy.load_file", safetensors.numpy.load_file(path), expected(False))
    with safetensors.safe_open(path, framework="np") as f:
        if f.metadata() != meta:
            failures.append(f"metadata {f.metadata()} != {meta}")

    # safetensors with bfloat16: the package's own deserializer gives dtype, shape, bytes.
    raw = open(os.path.join(d, "ferrox.safetensors"), "rb").read()
    got = {}
    for name, t in safetensors.deserialize(raw):
        if t["dtype"] == "BF16":
            bits = np.frombuffer(bytes(t["data"]), dtype="<u2").astype(np.uint32) << 16
            got[name] = bits.view(np.float32).reshape(t["shape"])
        else:
            got[name] = np.frombuffer(bytes(t["data"]), dtype=ST_TO_NUMPY[t["dtype"]]).reshape(t["shape"])
    check_dict("safetensors.deserialize", got, expected(True))

    # npz, compressed and stored.
    for f in ["ferrox.npz", "ferrox_stored.npz"]:
        with np.load(os.path.join(d, f)) as z:
            check_dict(f, {k: z[k] for k in z.files}, expected(False))

    # npy, one file per array.
    for name, want in expected(False).items():
        check(f"{name}.npy", name, np.load(os.path.join(d, f"{name}.npy")), want)

    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    n = len(expected(True)) + 3 * len(expected(False)) + len(expected(False))
    print(f"OK: {n} arrays in ferrox-written safetensors/npz/npy files match in safetensors "
          f"{safetensors.__version__} and NumPy {np.__version__}; metadata matches")


if __name__ == "__main__":
    main()
