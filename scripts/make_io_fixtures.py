#!/usr/bin/env python3
"""Writes the I/O test fixtures for crates/ferrox/tests/io.rs with NumPy and the
`safetensors` Python package (the independent writers ferrox must read).

    pip install -q numpy safetensors
    python3 scripts/make_io_fixtures.py

Outputs, in crates/ferrox/tests/fixtures/io/:
  mixed.safetensors   every dtype ferrox has (bf16 included), metadata, a scalar, an empty tensor
  *.npy               several dtypes, Fortran order, big-endian, format versions 1.0/2.0/3.0
  stored.npz          np.savez
  compressed.npz      np.savez_compressed
  expected.json       for every array: dtype, shape and the row-major little-endian bytes (hex)

The expected bytes are NumPy's own (`np.ascontiguousarray(x).astype('<...').tobytes()`), so a
comparison is exact to the bit, NaN and -0.0 included.
"""
import json
import os

import numpy as np
import safetensors

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "ferrox", "tests", "fixtures", "io")
rng = np.random.default_rng(1234)

DTYPE_NAMES = {
    "bool": "bool", "uint8": "uint8", "uint16": "uint16", "uint32": "uint32", "uint64": "uint64",
    "int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64",
    "float16": "float16", "float32": "float32", "float64": "float64",
}


def le_hex(x: np.ndarray) -> str:
    x = np.ascontiguousarray(x)
    return x.astype(x.dtype.newbyteorder("<")).tobytes().hex()


def entry(x: np.ndarray, dtype: str | None = None, data_hex: str | None = None) -> dict:
    return {
        "dtype": dtype or DTYPE_NAMES[x.dtype.name],
        "shape": list(x.shape),
        "hex": data_hex if data_hex is not None else le_hex(x),
    }


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns of float32 values that bfloat16 represents exactly."""
    bits = x.astype("<f4").view("<u4")
    assert np.all(bits & 0xFFFF == 0), "fixture values must be exact in bfloat16"
    return (bits >> 16).astype("<u2")


def safetensors_fixture(expected: dict) -> None:
    f32 = rng.standard_normal((3, 4)).astype(np.float32)
    f32[0, 0] = np.nan
    f32[0, 1] = -0.0
    f16 = np.array([[1.5, -2.25, np.inf], [-np.inf, 65504.0, 6.1e-5]], dtype=np.float16)
    tensors = {
        "flag": np.array([True, False, True, True, False]),
        "u8": np.arange(12, dtype=np.uint8).reshape(3, 4) * 20,
        "i8": np.array([[-128, -1, 0], [1, 64, 127]], dtype=np.int8),
        "u16": np.array([0, 1, 65535, 40000], dtype=np.uint16),
        "i16": np.array([[-32768, 32767], [-5, 5]], dtype=np.int16),
        "u32": np.array([0, 4294967295, 123456789], dtype=np.uint32),
        "i32": rng.integers(-(2**31), 2**31 - 1, size=(2, 3), dtype=np.int32),
        "u64": np.array([2**64 - 1, 2**53 + 1], dtype=np.uint64),
        "i64": np.array([-(2**63), 2**63 - 1, -7], dtype=np.int64),
        "f16": f16,
        "f32": f32,
        "f64": rng.standard_normal((2, 2)),
        "scalar": np.array(3.25, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "model.layers.0.weight": rng.standard_normal((4, 2)).astype(np.float32),
    }
    # 1e-3 and 3e38 are not exact in bfloat16: truncate them to the bfloat16 below.
    bf16_vals = np.array([[1.0, -2.5, 0.15625], [3.0e38, -0.0, 1e-3]], dtype=np.float32)
    bf16_vals = (bf16_vals.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
    bf16_bits = f32_to_bf16_bits(bf16_vals)

    keep = []
    specs = {}
    for name, x in tensors.items():
        x = np.ascontiguousarray(x)
        keep.append(x)
        specs[name] = safetensors.TensorSpec(dtype=x.dtype.name, shape=list(x.shape), data_ptr=x.ctypes.data, data_len=x.nbytes)
        expected[f"mixed.safetensors/{name}"] = entry(x)
    keep.append(bf16_bits)
    specs["bf16"] = safetensors.TensorSpec(dtype="bfloat16", shape=list(bf16_bits.shape), data_ptr=bf16_bits.ctypes.data, data_len=bf16_bits.nbytes)
    expected["mixed.safetensors/bf16"] = {"dtype": "bfloat16", "shape": list(bf16_bits.shape), "hex": bf16_bits.tobytes().hex()}
    metadata = {"format": "pt", "note": "ferrox fixture \u2713", "quote": 'a "quoted" value'}
    safetensors.serialize_file(specs, os.path.join(OUT, "mixed.safetensors"), metadata=metadata)
    expected["mixed.safetensors/__metadata__"] = metadata
    del keep


def npy_fixtures(expected: dict) -> None:
    from numpy.lib import format as npformat

    def save(name: str, x: np.ndarray, version=None) -> None:
        path = os.path.join(OUT, name)
        if version is None:
            np.save(path, x)
        else:
            with open(path, "wb") as f:
                npformat.write_array(f, x, version=version)
        back = np.load(path)
        assert back.dtype == x.dtype and back.shape == x.shape
        expected[name] = entry(x)

    save("f32.npy", rng.standard_normal((3, 4)).astype(np.float32))
    save("f64_fortran.npy", np.asfortranarray(rng.standard_normal((3, 4, 2))))
    save("i16_fortran_be.npy", np.asfortranarray(np.arange(-6, 6, dtype=">i2").reshape(3, 4)))
    save("i32_be.npy", np.array([1, -2, 70000, -(2**31), 2**31 - 1], dtype=">i4"))
    save("f64_be.npy", np.array([[1.5, -0.0], [np.inf, 1e-300]], dtype=">f8"))
    save("f16.npy", np.array([0.5, -1.0, 65504.0, np.nan], dtype=np.float16))
    save("bool.npy", np.array([[True, False], [False, True]]))
    save("u8.npy", np.arange(10, dtype=np.uint8))
    save("i8.npy", np.array([-128, 0, 127], dtype=np.int8))
    save("u32.npy", np.array([0, 4294967295], dtype=np.uint32))
    save("u64.npy", np.array([[2**64 - 1], [5]], dtype=np.uint64))
    save("i64.npy", np.array([-(2**63), 2**63 - 1], dtype="<i8"))
    save("scalar_u16.npy", np.array(65000, dtype=np.uint16))
    save("empty.npy", np.zeros((2, 0), dtype=np.float32))
    save("v2.npy", np.arange(6, dtype=np.int32).reshape(2, 3), version=(2, 0))
    save("v3.npy", np.arange(4, dtype=np.float32), version=(3, 0))


def npz_fixtures(expected: dict) -> None:
    arrays = {
        "a": rng.standard_normal((4, 3)).astype(np.float32),
        "b": np.arange(7, dtype=np.int64),
        "mask": np.array([True, False, True]),
        "half": np.array([[1.0, 2.0], [3.0, 4.5]], dtype=np.float16),
    }
    np.savez(os.path.join(OUT, "stored.npz"), **arrays)
    np.savez_compressed(os.path.join(OUT, "compressed.npz"), **arrays)
    for name, x in arrays.items():
        expected[f"stored.npz/{name}"] = entry(x)
        expected[f"compressed.npz/{name}"] = entry(x)


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    expected: dict = {}
    safetensors_fixture(expected)
    npy_fixtures(expected)
    npz_fixtures(expected)
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
