#!/usr/bin/env python3
"""Where one decode step's GPU time goes, kernel by kernel (run on the GPU machine).

Reads the CSV that Nsight Compute writes for a `ferrox bench` run, e.g.

    ncu --clock-control none --metrics gpu__time_duration.sum --csv \\
        ferrox bench --model M -p 512 -g 6 -n 1 > ncu.csv
    python3 gpu-profile-step.py ncu.csv

Each decode step ends in the greedy pick (an `argreduce_join` kernel); the script takes the
last whole step (between the last two picks), and prints each kernel name's launches, summed
time and share of the step, then the step's total. With `--prefill` (a run like `ferrox bench
-p 2048 -g 1`) it takes the longest stretch that ends in a pick instead: a whole prompt. ncu runs kernels one at a time, so the sum
leaves out the gaps between kernels that a CUDA graph replay has.
"""
import csv
import sys
from collections import defaultdict


def rows(path):
    with open(path, newline="") as f:
        lines = [l for l in f if l.startswith('"')]
    for r in csv.DictReader(lines):
        if r.get("Metric Name") == "gpu__time_duration.sum":
            unit = r.get("Metric Unit", "ns")
            scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}.get(unit, 1e-3)
            yield r["Kernel Name"], r.get("Grid Size", ""), float(r["Metric Value"].replace(",", "")) * scale


def main():
    args = [a for a in sys.argv[1:] if a != "--prefill"]
    prefill = "--prefill" in sys.argv[1:]
    ks = list(rows(args[0]))
    picks = [i for i, (name, _, _) in enumerate(ks) if name.startswith("argreduce_join")]
    if len(picks) < 2:
        print(f"{len(ks)} kernels, fewer than two greedy picks: no whole step")
        return
    spans = [ks[a + 1 : b + 1] for a, b in zip(picks, picks[1:])]
    step = max(spans, key=lambda s: sum(t for _, _, t in s)) if prefill else spans[-1]
    total = sum(t for _, _, t in step)
    by = defaultdict(lambda: [0, 0.0])
    for name, grid, t in step:
        key = name.split("(")[0] + (f" {grid}" if name.startswith("gemv") else "")
        by[key][0] += 1
        by[key][1] += t
    print(f"{'kernel':60} {'launches':>8} {'us':>9} {'share':>6}")
    for key, (n, t) in sorted(by.items(), key=lambda kv: -kv[1][1]):
        print(f"{key[:60]:60} {n:8d} {t:9.1f} {100 * t / total:5.1f}%")
    print(f"{'one prompt' if prefill else 'one decode step':60} {len(step):8d} {total:9.1f}")


if __name__ == "__main__":
    main()
