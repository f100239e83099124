#!/usr/bin/env python3
"""LLM speed side by side: `ferrox bench` against the real mlx-lm (`python -m mlx_lm benchmark`)
and, when a built llama.cpp is given, llama.cpp's `llama-bench`, in one run on the same machine,
with the ratios. Random-weight models shaped like SmolLM2-135M and Qwen2.5-0.5B
(../shared/bench/make_shapes.py makes them, bf16), batch 1, 512-token prompt, 128 generated
tokens by default.

Usage:
  cargo build --release -p ferrox-cli
  python3 scripts/bench_lm_compare.py [--shapes DIR] [--only smollm2-135m] [--trials 3]
         [--llama-cpp DIR]   # a llama.cpp checkout built with GGML_NATIVE (build/bin/llama-bench);
                             # its convert_hf_to_gguf.py makes the GGUFs (needs torch)
         [--skip-mlx] [--batch 1]

Needs `pip install "mlx[cpu]" mlx-lm` (for the shapes and the mlx-lm column). Prints a
Markdown table: prompt and generation tokens/s of each tool and ferrox's ratio to each.
"""

import argparse
import json
import os
import re
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SHAPES_SCRIPT = os.path.join(ROOT, "..", "shared", "bench", "make_shapes.py")
TOKENIZER = os.path.join(ROOT, "models", "tiny-llama")


def run(cmd, **kw):
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if out.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out.stdout + out.stderr


def averages(text):
    """(prompt_tps, generation_tps, peak_memory) from mlx_lm.benchmark / ferrox bench output."""
    m = re.search(r"Averages: prompt_tps=([\d.]+), generation_tps=([\d.]+), peak_memory=([\d.]+)", text)
    if not m:
        sys.exit(f"no averages in:\n{text}")
    return tuple(float(x) for x in m.groups())


def llama_bench(llama_dir, model_dir, outtype, p, g):
    """llama-bench's (prompt, generation) tokens/s for a GGUF of `model_dir` in `outtype`."""
    gguf = os.path.join(model_dir, f"model-{outtype}.gguf")
    if not os.path.exists(gguf):
        cfg_path = os.path.join(model_dir, "config.json")
        cfg = json.load(open(cfg_path))
        if "architectures" not in cfg:  # the converter picks its model class by this
            arch = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[cfg["model_type"]]
            json.dump(dict(cfg, architectures=[arch]), open(cfg_path, "w"), indent=1)
        convert_type = "f16" if outtype == "q4_0" else outtype
        src = gguf if outtype != "q4_0" else os.path.join(model_dir, "model-f16.gguf")
        if not os.path.exists(src):
            run([sys.executable, os.path.join(llama_dir, "convert_hf_to_gguf.py"), model_dir, "--outtype",
                 convert_type, "--outfile", src])
        if outtype == "q4_0":
            run([os.path.join(llama_dir, "build", "bin", "llama-quantize"), src, gguf, "q4_0"])
    text = run([os.path.join(llama_dir, "build", "bin", "llama-bench"), "-m", gguf, "-p", str(p), "-n", str(g),
                "-t", "2", "-o", "json"])
    rows = json.loads(text[text.index("["):text.rindex("]") + 1])
    pp = next(r["avg_ts"] for r in rows if r["n_prompt"] > 0)
    tg = next(r["avg_ts"] for r in rows if r["n_gen"] > 0)
    return pp, tg


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="/tmp/ferrox-shapes")
    ap.add_argument("--only", action="append")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("-p", type=int, default=512)
    ap.add_argument("-g", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--ferrox", default=os.path.join(ROOT, "target", "release", "ferrox"))
    ap.add_argument("--llama-cpp")
    ap.add_argument("--skip-mlx", action="store_true")
    args = ap.parse_args()
    if not os.path.exists(os.path.join(args.shapes, "smollm2-135m", "model.safetensors")):
        run([sys.executable, SHAPES_SCRIPT, args.shapes, TOKENIZER])
    names = args.only or ["smollm2-135m", "qwen2.5-0.5b"]
    common = ["-p", str(args.p), "-g", str(args.g), "-b", str(args.batch), "-n", str(args.trials)]
    rows = []
    for name in names:
        d = os.path.join(args.shapes, name)
        for dtype, ll_type in [("bfloat16", "bf16"), ("float32", "f32")]:
            fx = averages(run([args.ferrox, "bench", "--model", d, "--dtype", dtype] + common))
            mlx = None
            if dtype == "bfloat16" and not args.skip_mlx:
                mlx = averages(run([sys.executable, "-m", "mlx_lm", "benchmark", "--model", d] + common))
            ll = llama_bench(args.llama_cpp, d, ll_type, args.p, args.g) if args.llama_cpp and args.batch == 1 else None
            rows.append((name, dtype, fx, mlx, ll))
    print(f"\n-p {args.p} -g {args.g} -b {args.batch}, {args.trials} trials; tokens/s (ratio = ferrox / other)\n")
    print("| model | dtype | ferrox prompt | ferrox gen | mlx-lm prompt | mlx-lm gen | llama.cpp prompt | llama.cpp gen |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")

    def cell(v, base):
        return "–" if v is None else f"{v:.1f} ({base / v:.2f}×)"

    for name, dtype, fx, mlx, ll in rows:
        print(
            f"| {name} | {dtype} | {fx[0]:.1f} | {fx[1]:.1f} | {cell(mlx and mlx[0], fx[0])} | "
            f"{cell(mlx and mlx[1], fx[1])} | {cell(ll and ll[0], fx[0])} | {cell(ll and ll[1], fx[1])} |"
        )


if __name__ == "__main__":
    main()
