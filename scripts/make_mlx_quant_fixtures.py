#!/usr/bin/env python3
"""Quantizes the repo's tiny models with the real `mlx_lm.convert` and records what mlx-lm
computes with them, for crates/ferrox-lm/tests/quantized.rs.

For each case below, writes crates/ferrox-lm/tests/fixtures/mlx_quant/<case>/: the
config.json and model.safetensors that mlx_lm.convert wrote (the tokenizer files are left out:
the test feeds token ids), and reference.safetensors with
* `logits`: mlx-lm's logits at every position of the tiny model's reference prompt
  (its `prompt_ids` in crates/ferrox-lm/tests/fixtures/<model>.json), float32 [L, V];
* `greedy`: 16 greedy tokens generated with mlx-lm's KV cache (int32), and `gaps`: the
  top-1/top-2 log-probability gap at each step (near-ties may flip between implementations).

Usage: python3 scripts/make_mlx_quant_fixtures.py [case ...]   (needs `pip install "mlx[cpu]" mlx-lm`;
       no case: all)
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import mlx.core as mx
from mlx_lm import load
from mlx_lm.generate import generate_step

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
FIX = os.path.join(ROOT, "crates", "ferrox-lm", "tests", "fixtures")
OUT = os.path.join(FIX, "mlx_quant")

# case name, source model, mlx_lm.convert flags
CASES = [
    ("tiny-llama-4bit", "tiny-llama", ["-q"]),
    ("tiny-qwen3-mixed_3_6", "tiny-qwen3", ["-q", "--quant-predicate", "mixed_3_6"]),
    ("tiny-qwen2-mixed_4_6", "tiny-qwen2", ["-q", "--quant-predicate", "mixed_4_6", "--q-group-size", "32"]),
    ("tiny-llama-mixed_2_6-bf16", "tiny-llama", ["-q", "--quant-predicate", "mixed_2_6", "--dtype", "bfloat16"]),
    ("tiny-gemma2-mxfp4", "tiny-gemma2", ["-q", "--q-mode", "mxfp4"]),
    ("tiny-phi3-8bit", "tiny-phi3", ["-q", "--q-bits", "8", "--q-group-size", "32"]),
    ("tiny-phi3-swa-nvfp4", "tiny-phi3-swa", ["-q", "--q-mode", "nvfp4"]),
    # Mixtures of experts: experts stacked and quantized under switch_mlp, routers quantized.
    ("tiny-mixtral-4bit", "tiny-mixtral", ["-q", "--q-group-size", "32"]),
    ("tiny-qwen3-moe-8bit", "tiny-qwen3-moe", ["-q", "--q-bits", "8", "--q-group-size", "32"]),
]

GREEDY = 16


def mlx_lm_readable(source, dst):
    """Copies models/<source> to `dst` with a config.json mlx-lm reads as ferrox does: the rope
    settings in transformers 4's layout (`rope_theta`, `rope_scaling`, a top-level
    `original_max_position_embeddings`; mlx-lm 0.32 does not read transformers 5's
    `rope_parameters`) and sliding windows wider than the prompt and the generated tokens (mlx-lm's
    gemma2 and phi3 attend globally). The quantized checkpoints carry this config."""
    shutil.copytree(os.path.join(ROOT, "models", source), dst)
    path = os.path.join(dst, "config.json")
    config = json.load(open(path))
    rope = config.pop("rope_parameters", None)
    if rope:
        rope = dict(rope)
        config["rope_theta"] = rope.pop("rope_theta", 10000.0)
        config.pop("partial_rotary_factor", None)
        if "partial_rotary_factor" in rope:
            config["partial_rotary_factor"] = rope.pop("partial_rotary_factor")
        if "original_max_position_embeddings" in rope:
            config["original_max_position_embeddings"] = rope["original_max_position_embeddings"]
        if rope.get("rope_type", "default") != "default":
            rope["type"] = rope["rope_type"]
            config["rope_scaling"] = rope
    if config.get("sliding_window"):
        config["sliding_window"] = 64
    json.dump(config, open(path, "w"), indent=2)


def reference(model, prompt):
    x = mx.array([prompt], dtype=mx.int32)
    logits = model(x)[0].astype(mx.float32)
    greedy, gaps = [], []
    for tok, logprobs in generate_step(mx.array(prompt), model, max_tokens=GREEDY, sampler=lambda lp: mx.argmax(lp, -1)):
        top = mx.sort(logprobs.astype(mx.float32))[-2:]
        gaps.append((top[1] - top[0]).item())
        greedy.append(int(tok))
    return logits, greedy, gaps


def main():
    os.makedirs(OUT, exist_ok=True)
    chosen = sys.argv[1:]
    for case, source, flags in CASES:
        if chosen and case not in chosen:
            continue
        prompt = json.load(open(os.path.join(FIX, f"{source}.json")))["prompt_ids"]
        with tempfile.TemporaryDirectory() as tmp:
            dst, src = os.path.join(tmp, case), os.path.join(tmp, "source")
            mlx_lm_readable(source, src)
            cmd = [sys.executable, "-m", "mlx_lm", "convert", "--hf-path", src, "--mlx-path", dst, *flags]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            model, _ = load(dst)
            logits, greedy, gaps = reference(model, prompt)
            case_dir = os.path.join(OUT, case)
            os.makedirs(case_dir, exist_ok=True)
            for f in ["config.json", "model.safetensors"]:
                shutil.copy(os.path.join(dst, f), case_dir)
        mx.save_safetensors(
            os.path.join(case_dir, "reference.safetensors"),
            {"logits": logits, "greedy": mx.array(greedy, dtype=mx.int32), "gaps": mx.array(gaps, dtype=mx.float32), "prompt": mx.array(prompt, dtype=mx.int32)},
        )
        print(f"{case}: greedy {greedy}, smallest gap {min(gaps):.3f}")


if __name__ == "__main__":
    main()
