#!/usr/bin/env python3
"""Checks that prompt-cache files move between ferrox and the real mlx-lm, both ways.

For each case below (a tiny model of the repo and cache flags: a standard KVCache, a
RotatingKVCache through --max-kv-size, a QuantizedKVCache through --kv-bits) it
* caches the same prompt with `ferrox cache-prompt` and with `mlx_lm cache_prompt` (for the
  rotating case, its steps with the RotatingKVCache mlx-lm makes for --max-kv-size), and
  compares the two files: cache classes, offsets and other scalars, tensor names, shapes and
  dtypes, and the cached keys and values (quantized ones dequantized, within one step);
* continues each tool's file with the same follow-up prompt in both tools (greedy): mlx-lm's
  tokens (mlx_lm.models.cache.load_prompt_cache, then generate_step) must read as the text
  `ferrox generate --prompt-cache-file` prints (`tokenizers`' decode, which ferrox's streaming
  detokenizer follows) and as the text the real `mlx_lm generate --prompt-cache-file` prints
  (mlx-lm's streaming detokenizer, which drops a leading space and keeps byte-level symbols);
* writes mlx-lm's file with the token ids mlx-lm caches and feeds after it and its 24 greedy
  tokens to crates/ferrox-lm/tests/fixtures/mlx_cache_prompt/<case>.{safetensors,json}, which
  crates/ferrox-lm/tests/prompt_cache_mlx.rs checks without Python.
It prints one line per case and exits non-zero if any check fails.

Usage: cargo build -p ferrox-cli && python3 scripts/check_prompt_cache_mlx.py [path/to/ferrox]
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
from mlx_lm.generate import generate_step
from mlx_lm.models.cache import QuantizedKVCache, RotatingKVCache, load_prompt_cache, save_prompt_cache
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_mlx_quant_fixtures import mlx_lm_readable  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
OUT = os.path.join(ROOT, "crates", "ferrox-lm", "tests", "fixtures", "mlx_cache_prompt")

PROMPT = "Once upon a time, in a quiet village by the river, there lived an old fox"
QUERY = "and what did the fox do next?"
GREEDY = 24

# case, model, cache flags (given to both tools' cache_prompt and generate)
CASES = [
    ("kvcache", "tiny-llama", []),
    # 16 positions with 4 sink tokens: the cached prompt (33 tokens) has already rotated.
    ("rotating", "tiny-llama", ["--max-kv-size", "16"]),
    # Quantized from the first position; tiny-qwen3-moe's heads (32) hold one group of 32.
    ("quantized", "tiny-qwen3-moe", ["--kv-bits", "4", "--kv-group-size", "32", "--quantized-kv-start", "0"]),
]

CACHE_FLAGS = {"--max-kv-size", "--kv-bits", "--kv-group-size", "--quantized-kv-start"}


def ferrox_bin():
    if len(sys.argv) > 1:
        return sys.argv[1]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "debug", "ferrox")


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stdout}\n{p.stderr}")
    return p.stdout


def generate_flags(flags):
    # mlx_lm generate ignores --max-kv-size for a loaded cache; the kv flags must match it.
    return [f for i, f in enumerate(flags) if f != "--max-kv-size" and (i == 0 or flags[i - 1] != "--max-kv-size")]


def compare_files(ours, theirs):
    """Problems found comparing two prompt-cache files (an empty list if they agree)."""
    a, ma = mx.load(ours, return_metadata=True)
    b, mb = mx.load(theirs, return_metadata=True)
    problems = []
    skip = {"0.model"}  # the model's path as each tool was given it
    for k in sorted(set(ma) | set(mb)):
        if k not in skip and ma.get(k) != mb.get(k):
            problems.append(f"metadata {k}: ferrox {ma.get(k)!r}, mlx-lm {mb.get(k)!r}")
    if set(a) != set(b):
        problems.append(f"tensors: only ferrox {sorted(set(a) - set(b))}, only mlx-lm {sorted(set(b) - set(a))}")
    for k in sorted(set(a) & set(b)):
        x, y = a[k], b[k]
        if x.shape != y.shape or x.dtype != y.dtype:
            problems.append(f"{k}: ferrox {x.dtype}{x.shape}, mlx-lm {y.dtype}{y.shape}")
        elif x.ndim == 0 and x.item() != y.item():
            problems.append(f"{k}: ferrox {x.item()}, mlx-lm {y.item()}")
    if problems:
        return problems
    # The cached keys and values (quantized ones dequantized; one quantization step apart at most).
    ca, cb = load_prompt_cache(ours), load_prompt_cache(theirs)
    for layer, (x, y) in enumerate(zip(ca, cb)):
        for name, s, t in [("keys", x.keys, y.keys), ("values", x.values, y.values)]:
            if isinstance(x, QuantizedKVCache):
                step = mx.max(mx.abs(t[1])).item()
                s = mx.dequantize(*s, group_size=x.group_size, bits=x.bits)
                t = mx.dequantize(*t, group_size=y.group_size, bits=y.bits)
            else:
                step = 0.0
            diff = mx.max(mx.abs(s - t)).item()
            if diff > 1e-4 + 1.01 * step:
                problems.append(f"layer {layer} {name}: max difference {diff:.3g}")
    return problems


def kv_args(flags):
    kv = dict(zip(flags[::2], flags[1::2]))
    if "--kv-bits" not in kv:
        return {}
    return dict(kv_bits=int(kv["--kv-bits"]), kv_group_size=int(kv["--kv-group-size"]),
                quantized_kv_start=int(kv["--quantized-kv-start"]))


def mlx_ids(tok):
    """The token ids mlx-lm caches for PROMPT, and those mlx_lm.generate feeds after the cache
    for QUERY (the steps of mlx_lm.cache_prompt's and mlx_lm.generate's main functions)."""
    cached = tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=False,
                                     continue_final_message=True)
    full = tok.apply_chat_template([{"role": "user", "content": QUERY}], add_generation_prompt=True, tokenize=False)
    probe = tok.apply_chat_template([{"role": "user", "content": "<query>"}], add_generation_prompt=True, tokenize=False)
    return cached, tok.encode(full[probe.index("<query>"):], add_special_tokens=False)


def mlx_rotating_cache_prompt(model, tok, model_dir, out, flags):
    """mlx_lm.cache_prompt's steps with the cache mlx_lm.make_prompt_cache builds for
    --max-kv-size (RotatingKVCache, 4 sink tokens). The command itself ignores --max-kv-size
    for models with their own make_cache, which in mlx-lm 0.32 includes llama."""
    size = int(flags[flags.index("--max-kv-size") + 1])
    cache = [RotatingKVCache(max_size=size, keep=4) for _ in model.layers]
    cached, _ = mlx_ids(tok)
    for _ in generate_step(mx.array(cached), model, max_tokens=0, prompt_cache=cache):
        pass
    save_prompt_cache(out, cache, {"model": model_dir, "tokenizer_config": json.dumps({"trust_remote_code": False})})


def mlx_greedy(model, cache_file, suffix, flags):
    """mlx-lm's greedy continuation of `cache_file` (end ids ignored)."""
    cache = load_prompt_cache(cache_file)
    return [int(t) for t, _ in generate_step(mx.array(suffix), model, max_tokens=GREEDY, prompt_cache=cache,
                                            sampler=lambda lp: mx.argmax(lp, -1), **kv_args(flags))]


def texts(tok, model_dir, tokens):
    """What each CLI prints for `tokens` (up to the first end id): `tokenizers`' decode, which
    ferrox's streaming detokenizer reproduces, and mlx-lm's own streaming detokenizer."""
    eos = set(tok.eos_token_ids)
    tokens = tokens[: next((i for i, t in enumerate(tokens) if t in eos), len(tokens))]
    decoded = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json")).decode(tokens, skip_special_tokens=False)
    d = tok.detokenizer
    d.reset()
    for t in tokens:
        d.add_token(t)
    d.finalize()
    return decoded, d.text


def main():
    ferrox = ferrox_bin()
    if not os.path.exists(ferrox):
        sys.exit(f"{ferrox} not found; run `cargo build -p ferrox-cli` first or pass the binary")
    os.makedirs(OUT, exist_ok=True)
    failed = 0
    for case, source, flags in CASES:
        tmp = tempfile.mkdtemp(prefix=f"ferrox-pc-{case}-")
        try:
            model_dir = os.path.join(tmp, source)
            mlx_lm_readable(source, model_dir)
            model, tok = load(model_dir)
            cached, suffix = mlx_ids(tok)
            ours, theirs = os.path.join(tmp, "ferrox.safetensors"), os.path.join(tmp, "mlx.safetensors")
            run([ferrox, "cache-prompt", "--model", model_dir, "--prompt", PROMPT, "--prompt-cache-file", ours] + flags)
            if "--max-kv-size" in flags:
                mlx_rotating_cache_prompt(model, tok, model_dir, theirs, flags)
            else:
                run([sys.executable, "-m", "mlx_lm", "cache_prompt", "--model", model_dir, "--prompt", PROMPT,
                     "--prompt-cache-file", theirs] + flags)
            problems = compare_files(ours, theirs)
            gen = ["--prompt", QUERY, "--max-tokens", str(GREEDY), "--temp", "0"] + generate_flags(flags)
            shown = ""
            for who, f in [("ferrox", ours), ("mlx-lm", theirs)]:
                want_fx, want_mlx = texts(tok, model_dir, mlx_greedy(model, f, suffix, flags))
                fx_text = run([ferrox, "generate", "--model", model_dir, "--prompt-cache-file", f, "--verbose", "false"] + gen)
                mlx_text = run([sys.executable, "-m", "mlx_lm", "generate", "--model", model_dir, "--prompt-cache-file", f,
                                "--verbose", "False"] + gen)
                fx_text, mlx_text = fx_text.removesuffix("\n"), mlx_text.removesuffix("\n")
                if fx_text != want_fx:
                    problems.append(f"ferrox continues {who}'s file with {fx_text!r}; mlx-lm's tokens read {want_fx!r}")
                if mlx_text != want_mlx:
                    problems.append(f"mlx_lm generate continues {who}'s file with {mlx_text!r}, expected {want_mlx!r}")
                shown = shown or fx_text
            if len(shown) < 10:
                problems.append(f"the continuation {shown!r} is too short to tell anything")
            # The fixture names the repo's model rather than this run's temporary copy of it.
            arrays, meta = mx.load(theirs, return_metadata=True)
            mx.save_safetensors(os.path.join(OUT, f"{case}.safetensors"), arrays, {**meta, "0.model": source})
            fixture = {"model": source, "flags": flags, "prompt": PROMPT, "query": QUERY,
                       "cached_ids": cached, "suffix_ids": suffix, "greedy": mlx_greedy(model, theirs, suffix, flags)}
            with open(os.path.join(OUT, f"{case}.json"), "w") as f:
                json.dump(fixture, f, indent=1)
            status = "ok" if not problems else "FAILED"
            print(f"{case:10s} {source:15s} {' '.join(flags):55s} {status}: {len(cached)} cached tokens, "
                  f"{len(suffix)} more, continued with {shown[:30]!r}...")
            for p in problems:
                print(f"    {p}")
            failed += bool(problems)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
