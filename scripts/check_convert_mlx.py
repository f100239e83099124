#!/usr/bin/env python3
"""Checks `ferrox convert` against the real mlx-lm, and records mlx-lm's view of its output.

For each case below it runs `ferrox convert` and `mlx_lm.convert` with the same flags on one of
the repo's tiny models, then
* compares the two outputs tensor by tensor (names, dtypes, bytes) and their quantization
  sections (mlx-lm writes `"group_size": null` for "the mode's default"; ferrox writes the number);
* loads ferrox's output in mlx-lm and compares its logits with those of mlx-lm's own output;
* writes mlx-lm's logits and 16 greedy tokens of ferrox's output to
  crates/ferrox-lm/tests/fixtures/ferrox_convert/<case>.safetensors, which
  crates/ferrox-lm/tests/quantized.rs checks after converting the same model in the test.
The source is the tiny model with the config.json mlx-lm reads as ferrox does
(make_mlx_quant_fixtures.mlx_lm_readable), saved as ferrox_convert/<case>.config.json for the
test.
It prints one line per case and exits non-zero if any check fails.

Usage: cargo build -p ferrox-cli && python3 scripts/check_convert_mlx.py [path/to/ferrox]
(the binary defaults to $CARGO_TARGET_DIR/debug/ferrox, else target/debug/ferrox; needs
`pip install "mlx[cpu]" mlx-lm`)
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import mlx.core as mx
import numpy as np
from mlx_lm import load

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_mlx_quant_fixtures import mlx_lm_readable, reference  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
FIX = os.path.join(ROOT, "crates", "ferrox-lm", "tests", "fixtures")
OUT = os.path.join(FIX, "ferrox_convert")

# case, source model, flags (the same for both tools)
CASES = [
    ("tiny-llama-4bit", "tiny-llama", ["-q"]),
    ("tiny-qwen3-mixed_3_6", "tiny-qwen3", ["-q", "--quant-predicate", "mixed_3_6"]),
    ("tiny-qwen2-mixed_2_6-g32", "tiny-qwen2", ["-q", "--quant-predicate", "mixed_2_6", "--q-group-size", "32"]),
    ("tiny-gemma2-mxfp4", "tiny-gemma2", ["-q", "--q-mode", "mxfp4"]),
    ("tiny-phi3-swa-8bit", "tiny-phi3-swa", ["-q", "--q-bits", "8", "--q-group-size", "32"]),
    ("tiny-phi3-nvfp4", "tiny-phi3", ["-q", "--q-mode", "nvfp4"]),
    ("tiny-llama-bf16", "tiny-llama", ["--dtype", "bfloat16"]),
    # Mixtures of experts: the stacked experts (SwitchLinear) quantized too; Qwen3-MoE's routers
    # at 8 bits (mlx-lm's per-model predicate).
    ("tiny-mixtral-4bit", "tiny-mixtral", ["-q"]),
    ("tiny-qwen3-moe-4bit", "tiny-qwen3-moe", ["-q", "--q-group-size", "32"]),
]


def ferrox_bin():
    if len(sys.argv) > 1:
        return sys.argv[1]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "debug", "ferrox")


def tensors(path):
    out = {}
    for f in sorted(os.listdir(path)):
        if f.endswith(".safetensors"):
            out.update(mx.load(os.path.join(path, f)))
    return out


def normalized(section):
    if section is None:
        return None
    defaults = {"affine": (64, 4), "mxfp4": (32, 4), "nvfp4": (16, 4), "mxfp8": (32, 8)}

    def fill(s):
        mode = s.get("mode", "affine")
        g, b = defaults[mode]
        return {"group_size": s.get("group_size") or g, "bits": s.get("bits") or b, "mode": mode}

    out = {}
    top = fill(section)
    for k, v in section.items():
        if k in ("group_size", "bits", "mode"):
            continue
        out[k] = fill(v) if isinstance(v, dict) else v
    return top, out


def main():
    os.makedirs(OUT, exist_ok=True)
    failed = False
    print(f"{'case':28} {'tensors':>8} {'identical':>9} {'config':>6} {'logit rel diff':>15}")
    for case, source, flags in CASES:
        prompt = json.load(open(os.path.join(FIX, f"{source}.json")))["prompt_ids"]
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "source")
            mlx_lm_readable(source, src)
            shutil.copy(os.path.join(src, "config.json"), os.path.join(OUT, f"{case}.config.json"))
            fdir, mdir = os.path.join(tmp, "ferrox"), os.path.join(tmp, "mlx")
            subprocess.run([ferrox_bin(), "convert", "--hf-path", src, "--mlx-path", fdir, *flags], check=True, stderr=subprocess.DEVNULL)
            subprocess.run([sys.executable, "-m", "mlx_lm", "convert", "--hf-path", src, "--mlx-path", mdir, *flags], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ft, mt = tensors(fdir), tensors(mdir)
            same_names = sorted(ft) == sorted(mt)
            identical = same_names and all(
                ft[k].dtype == mt[k].dtype and ft[k].shape == mt[k].shape and np.array_equal(np.array(ft[k].view(mx.uint8)), np.array(mt[k].view(mx.uint8)))
                for k in ft
            )
            fc, mc = (json.load(open(os.path.join(d, "config.json"))) for d in (fdir, mdir))
            same_config = normalized(fc.get("quantization")) == normalized(mc.get("quantization")) and fc.get("quantization") == fc.get("quantization_config")
            fmodel, _ = load(fdir)
            mmodel, _ = load(mdir)
            logits, greedy, gaps = reference(fmodel, prompt)
            want = mmodel(mx.array([prompt], dtype=mx.int32))[0].astype(mx.float32)
            rel = (mx.abs(logits - want).max() / mx.abs(want).max()).item()
        ok = same_names and identical and same_config and rel < 1e-5
        failed |= not ok
        print(f"{case:28} {len(ft):>8} {str(identical):>9} {str(same_config):>6} {rel:>15.2e}{'' if ok else '  FAILED'}")
        mx.save_safetensors(
            os.path.join(OUT, f"{case}.safetensors"),
            {"logits": logits, "greedy": mx.array(greedy, dtype=mx.int32), "gaps": mx.array(gaps, dtype=mx.float32), "prompt": mx.array(prompt, dtype=mx.int32)},
        )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
