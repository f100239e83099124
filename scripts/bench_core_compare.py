"""Runs the core-op benchmark (ferrox) and the NumPy/mlx reference back to back and prints
one merged markdown table, as recorded in docs/PERF.md.

    cargo build --release -p ferrox --example bench_core
    python scripts/bench_core_compare.py [--bin PATH] [FILTER]

The ferrox binary defaults to target/release/examples/bench_core (or $CARGO_TARGET_DIR's).
"% bw" is the ferrox rate as a share of the measured bandwidth: the all-threads read probe for
reductions and attention decode (which read, and write little), the all-threads copy probe
for everything else that moves memory.
"""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
READ_ONLY = ("sum ", "max ", "argmax ", "sdpa decode")


def parse(text):
    """{library name: {(op, shape, dtype): (ms, rate, unit)}} from the printed tables."""
    tables, name = {}, "ferrox"
    for line in text.splitlines():
        if not line.startswith("|"):
            if line.strip() and not line[0].isdigit():
                name = line.split()[0].rstrip(",:")
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != 6 or cells[0] in ("op", "---") or cells[0].startswith("-"):
            continue
        op, shape, dtype, ms, rate, unit = cells
        tables.setdefault(name, {})[(op, shape, dtype)] = (float(ms), float(rate), unit)
    return tables


def main():
    args = sys.argv[1:]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(HERE, "..", "target"))
    binary = os.path.join(target, "release", "examples", "bench_core")
    if "--bin" in args:
        i = args.index("--bin")
        binary = args[i + 1]
        del args[i : i + 2]
    ferrox = subprocess.run([binary, *args], check=True, capture_output=True, text=True).stdout
    ref = subprocess.run(
        [sys.executable, os.path.join(HERE, "bench_core_ref.py"), *args], check=True, capture_output=True, text=True
    ).stdout
    tables = parse(ferrox)
    tables.update(parse(ref))
    fx = tables["ferrox"]
    npy = next((t for n, t in tables.items() if n == "numpy"), {})
    mlx = next((t for n, t in tables.items() if n == "mlx"), {})
    read_bw = fx.get(("bw rust read all threads", "64M", "f32"), (0, 0, ""))[1]
    copy_bw = fx.get(("bw rust copy all threads", "64M", "f32"), (0, 0, ""))[1]
    print(f"measured bandwidth: read {read_bw} GB/s, copy {copy_bw} GB/s (all threads)")
    print("| op | shape | dtype | ferrox ms | NumPy ms | mlx ms | ferrox rate | % bw |")
    print("|---|---|---|---:|---:|---:|---:|---:|")

    def ms(table, key):
        return f"{table[key][0]:.3f}" if key in table else "–"

    for key, (t, rate, unit) in fx.items():
        op = key[0]
        if op.startswith("bw "):
            continue
        share = "–"
        if unit == "GB/s":
            bw = read_bw if op.startswith(READ_ONLY) else copy_bw
            share = f"{100 * rate / bw:.0f}%" if bw else "–"
        print(f"| {op} | {key[1]} | {key[2]} | {t:.3f} | {ms(npy, key)} | {ms(mlx, key)} | {rate:.1f} {unit} | {share} |")


if __name__ == "__main__":
    main()
