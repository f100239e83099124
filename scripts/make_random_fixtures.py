#!/usr/bin/env python3
"""Writes crates/ferrox/tests/fixtures/random.json: MLX's random numbers for fixed keys.

The reference is MLX itself (`pip install "mlx[cpu]"`), so the tests check that ferrox's
Threefry stream and samplers reproduce MLX's numbers for the same key.

Raw bits of every width are not exposed to Python (`mx.random.bits` is C++ only), so this
script compiles a few lines of C++ against the headers and library that the mlx wheel ships
(needs a C++20 compiler, `c++`). Everything else comes from the Python API.

Run from the repository root:  python3 scripts/make_random_fixtures.py
"""

import json
import os
import subprocess
import tempfile

import mlx.core as mx

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "ferrox", "tests", "fixtures", "random.json")

SEEDS = [0, 1, 42, (1 << 40) + 7]

# (shape, width) of the raw-bits cases: partial last words, odd and even word counts, and one
# large case that takes the parallel path (its values are summarized by sum and xor).
BITS_CASES = [
    ([1], 1), ([3], 1), ([5], 1), ([9], 1), ([13], 1), ([4, 3], 1),
    ([1], 2), ([3], 2), ([5], 2), ([7], 2), ([2, 3], 2),
    ([1], 4), ([2], 4), ([3], 4), ([5], 4), ([8], 4), ([17], 4), ([3, 4], 4),
]
BIG_CASES = [([40001], 4), ([70003], 1)]

CPP = r"""
#include <mlx/mlx.h>
#include <cstdio>
#include <cstdlib>
using namespace mlx::core;
// argv: seed width n d0 d1 ... ; prints the values (as unsigned integers) one per line.
int main(int argc, char** argv) {
  uint64_t seed = std::strtoull(argv[1], nullptr, 10);
  int width = std::atoi(argv[2]);
  int nd = std::atoi(argv[3]);
  Shape shape;
  for (int i = 0; i < nd; ++i) shape.push_back(std::atoi(argv[4 + i]));
  auto b = astype(random::bits(shape, width, random::key(seed)), uint32);
  eval(b);
  auto p = b.data<uint32_t>();
  for (size_t i = 0; i < b.size(); ++i) std::printf("%u\n", p[i]);
  return 0;
}
"""


def build_bits_helper(tmp):
    import mlx

    base = list(mlx.__path__)[0]
    src = os.path.join(tmp, "bits.cpp")
    exe = os.path.join(tmp, "bits")
    with open(src, "w") as f:
        f.write(CPP)
    inc, lib = os.path.join(base, "include"), os.path.join(base, "lib")
    subprocess.check_call(
        ["c++", "-std=c++20", "-O1", f"-I{inc}", src, f"-L{lib}", "-lmlx", f"-Wl,-rpath,{lib}", "-o", exe]
    )
    return exe


def raw_bits(exe, seed, shape, width):
    args = [exe, str(seed), str(width), str(len(shape))] + [str(d) for d in shape]
    return [int(v) for v in subprocess.check_output(args).split()]


def floats(a):
    return [float(v) for v in a.astype(mx.float32).reshape(-1).tolist()]


def ints(a):
    return [int(v) for v in a.reshape(-1).tolist()]


def main():
    fixture = {"mlx_version": mx.__version__, "bits": [], "big_bits": [], "split": [], "samplers": []}
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_bits_helper(tmp)
        for seed in SEEDS:
            for shape, width in BITS_CASES:
                fixture["bits"].append(
                    {"seed": seed, "shape": shape, "width": width, "values": raw_bits(exe, seed, shape, width)}
                )
        for shape, width in BIG_CASES:
            v = raw_bits(exe, 3, shape, width)
            x = 0
            for e in v:
                x ^= e
            fixture["big_bits"].append(
                {"seed": 3, "shape": shape, "width": width, "sum": sum(v), "xor": x, "head": v[:8], "tail": v[-8:]}
            )

    for seed in SEEDS:
        for num in [1, 2, 3, 5]:
            k = mx.random.split(mx.random.key(seed), num=num)
            fixture["split"].append({"seed": seed, "num": num, "values": ints(k)})

    s = fixture["samplers"]

    def add(name, seed, values, **params):
        s.append({"name": name, "seed": seed, "params": params, "values": values})

    for seed in SEEDS[:3]:
        k = mx.random.key(seed)
        add("uniform", seed, floats(mx.random.uniform(shape=(11,), key=k)), low=0.0, high=1.0, dtype="float32")
        add("uniform", seed, floats(mx.random.uniform(-2.0, 3.0, (2, 5), key=k)), low=-2.0, high=3.0, dtype="float32")
        for dt, name in [(mx.float16, "float16"), (mx.bfloat16, "bfloat16")]:
            add("uniform", seed, floats(mx.random.uniform(shape=(9,), dtype=dt, key=k)), low=0.0, high=1.0, dtype=name)
        add("normal", seed, floats(mx.random.normal((13,), key=k)), loc=0.0, scale=1.0, dtype="float32")
        add("normal", seed, floats(mx.random.normal((6,), loc=1.5, scale=0.5, key=k)), loc=1.5, scale=0.5, dtype="float32")
        add("normal", seed, floats(mx.random.normal((6,), dtype=mx.float16, key=k)), loc=0.0, scale=1.0, dtype="float16")
        add("randint", seed, ints(mx.random.randint(0, 10, (15,), key=k)), low=0, high=10, dtype="int32")
        add("randint", seed, ints(mx.random.randint(-5, 5, (7,), key=k)), low=-5, high=5, dtype="int32")
        add(
            "randint", seed, ints(mx.random.randint(0, 1000000, (5,), dtype=mx.uint32, key=k)),
            low=0, high=1000000, dtype="uint32",
        )
        add("bernoulli", seed, ints(mx.random.bernoulli(0.3, (20,), key=k)), p=0.3)
        add("gumbel", seed, floats(mx.random.gumbel((8,), key=k)), dtype="float32")
        add(
            "truncated_normal", seed, floats(mx.random.truncated_normal(-1.0, 2.0, (10,), key=k)),
            lower=-1.0, upper=2.0, dtype="float32",
        )
        add("laplace", seed, floats(mx.random.laplace((7,), key=k)), loc=0.0, scale=1.0, dtype="float32")
        logits1 = [0.5, -1.0, 2.0, 0.0, 1.0]
        add(
            "categorical", seed,
            ints(mx.random.categorical(mx.array(logits1), num_samples=20, key=k)),
            logits=logits1, shape=[5], num_samples=20,
        )
        logits2 = [[0.1, 0.2, 3.0, -1.0], [2.0, 2.0, -3.0, 0.5], [0.0, 0.0, 0.0, 0.0]]
        add(
            "categorical", seed, ints(mx.random.categorical(mx.array(logits2), key=k)),
            logits=[v for r in logits2 for v in r], shape=[3, 4], num_samples=None,
        )
        add(
            "categorical", seed, ints(mx.random.categorical(mx.array(logits2), num_samples=6, key=k)),
            logits=[v for r in logits2 for v in r], shape=[3, 4], num_samples=6,
        )
        add("permutation", seed, ints(mx.random.permutation(10, key=k)), n=10)
        add("permutation", seed, ints(mx.random.permutation(7, key=k)), n=7)

    # The default key sequence after seeding.
    mx.random.seed(7)
    seq = floats(mx.random.uniform(shape=(3,))) + floats(mx.random.uniform(shape=(3,))) + floats(mx.random.normal((2,)))
    fixture["seeded_sequence"] = {"seed": 7, "values": seq}

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
