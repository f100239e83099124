#!/usr/bin/env python3
"""LLM speed side by side: `ferrox bench` against the real mlx-lm (`python -m mlx_lm benchmark`)
and, when a built llama.cpp is given, llama.cpp's `llama-bench`, in one run on the same machine,
with the ratios. Every generation figure is taken after the prompt (llama-bench's `-d`), so
attention reads the same context in each tool. Random-weight models shaped like SmolLM2-135M and Qwen2.5-0.5B
(../shared/bench/make_shapes.py makes them, bf16), batch 1, 512-token prompt, 128 generated
tokens by default. Three precisions: bf16 and f32 (mlx-lm runs bf16 only) and 4-bit (ferrox on
`ferrox convert -q` output, affine 4-bit g64, beside llama.cpp's Q4_0; mlx-lm's 4-bit CPU path
takes minutes a token at these lengths, so it runs only with --mlx-4bit). Each generation
figure is also given as a fraction of the memory roofline: the weight bytes a token reads
times tokens/s over the all-threads read bandwidth that ferrox's bench_core example measures
(`cargo build --release -p ferrox --example bench_core`; the column is left out without it).

Usage:
  cargo build --release -p ferrox-cli
  python3 scripts/bench_lm_compare.py [--shapes DIR] [--only smollm2-135m] [--trials 3]
         [--llama-cpp DIR]   # a llama.cpp checkout built with GGML_NATIVE (build/bin/llama-bench);
                             # its convert_hf_to_gguf.py makes the GGUFs (needs torch)
         [--skip-mlx] [--mlx-4bit] [--batch 1]

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


def read_bandwidth():
    """All-threads read bandwidth (GB/s) from bench_core, or None when it is not built."""
    exe = os.path.join(ROOT, "target", "release", "examples", "bench_core")
    if not os.path.exists(exe):
        return None
    m = re.search(r"\| bw rust read all threads \|[^|]*\|[^|]*\|[^|]*\| ([\d.]+) \|", run([exe, "bw rust read"]))
    return float(m.group(1)) if m else None


def weight_bytes(model_dir):
    """Bytes of the safetensors weights of a model directory (what a decode step reads)."""
    return sum(os.path.getsize(os.path.join(model_dir, f)) for f in os.listdir(model_dir) if f.endswith(".safetensors"))


def quantized_dir(ferrox, model_dir):
    """`model_dir` converted to affine 4-bit, group 64 by `ferrox convert -q` (made once)."""
    out = model_dir + "-4bit"
    if not os.path.exists(os.path.join(out, "config.json")):
        run([ferrox, "convert", "--hf-path", model_dir, "--mlx-path", out, "-q"])
    return out


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
            # The shapes carry a tokenizer the converter's pre-tokenizer table does not know;
            # for a speed test its default pre-tokenizer does.
            script = os.path.join(llama_dir, "convert_hf_to_gguf.py")
            shim = ("import runpy, sys; sys.path.insert(0, sys.argv[1]); import conversion.base as b; "
                    "b.TextModel.get_vocab_base_pre = lambda self, tok: 'default'; "
                    "script = sys.argv[2]; sys.argv = sys.argv[2:]; runpy.run_path(script, run_name='__main__')")
            run([sys.executable, "-c", shim, llama_dir, script, model_dir, "--outtype", convert_type, "--outfile", src])
        if outtype == "q4_0":
            run([os.path.join(llama_dir, "build", "bin", "llama-quantize"), src, gguf, "q4_0"])
    def bench(*args):
        text = run([os.path.join(llama_dir, "build", "bin", "llama-bench"), "-m", gguf, "-t", "2", "-o", "json",
                    *args])
        return json.loads(text[text.index("["):text.rindex("]") + 1])[0]["avg_ts"]

    # llama-bench generates from an empty context unless told a depth; ferrox bench and
    # mlx_lm.benchmark generate after the prompt, so the generation test runs at depth p.
    return bench("-p", str(p), "-n", "0"), bench("-p", "0", "-n", str(g), "-d", str(p))


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
    ap.add_argument("--mlx-4bit", action="store_true")
    args = ap.parse_args()
    if not os.path.exists(os.path.join(args.shapes, "smollm2-135m", "model.safetensors")):
        run([sys.executable, SHAPES_SCRIPT, args.shapes, TOKENIZER])
    names = args.only or ["smollm2-135m", "qwen2.5-0.5b"]
    common = ["-p", str(args.p), "-g", str(args.g), "-b", str(args.batch), "-n", str(args.trials)]
    bw = read_bandwidth()
    rows = []
    for name in names:
        d = os.path.join(args.shapes, name)
        for dtype, ll_type in [("bfloat16", "bf16"), ("float32", "f32"), ("4-bit", "q4_0")]:
            if dtype == "4-bit":
                model, cast = quantized_dir(args.ferrox, d), []
                token_bytes = weight_bytes(model)
            else:
                model, cast = d, ["--dtype", dtype]
                token_bytes = weight_bytes(d) * (2 if dtype == "float32" else 1)
            fx = averages(run([args.ferrox, "bench", "--model", model] + cast + common))
            mlx = None
            if not args.skip_mlx and (dtype == "bfloat16" or (dtype == "4-bit" and args.mlx_4bit)):
                mlx = averages(run([sys.executable, "-m", "mlx_lm", "benchmark", "--model", model] + common))
            ll = llama_bench(args.llama_cpp, d, ll_type, args.p, args.g) if args.llama_cpp and args.batch == 1 else None
            roof = bw and token_bytes * fx[1] * args.batch / 1e9 / bw
            rows.append((name, dtype, fx, mlx, ll, roof))
    print(f"\n-p {args.p} -g {args.g} -b {args.batch}, {args.trials} trials; tokens/s (ratio = ferrox / other)")
    if bw:
        print(f"read bandwidth (bench_core, all threads): {bw:.1f} GB/s; roofline = weight bytes x gen tok/s / that")
    print()
    print("| model | dtype | ferrox prompt | ferrox gen | roofline | mlx-lm prompt | mlx-lm gen | llama.cpp prompt | llama.cpp gen |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")

    def cell(v, base):
        return "–" if v is None else f"{v:.1f} ({base / v:.2f}×)"

    for name, dtype, fx, mlx, ll, roof in rows:
        print(
            f"| {name} | {dtype} | {fx[0]:.1f} | {fx[1]:.1f} | {'–' if roof is None else f'{100 * roof:.0f}%'} | "
            f"{cell(mlx and mlx[0], fx[0])} | {cell(mlx and mlx[1], fx[1])} | {cell(ll and ll[0], fx[0])} | "
            f"{cell(ll and ll[1], fx[1])} |"
        )

if __name__ == "__main__":
    main()
