"""References from the real mlx-lm for ferrox-lm's sampling and prompt-cache tests.

  crates/ferrox-lm/tests/fixtures/sampling.json        logits and what mlx-lm's filters and
                                                       logits processors make of them
  crates/ferrox-lm/tests/fixtures/mlx_prompt_cache.safetensors
                                                       a prompt cache saved by mlx_lm (a KVCache,
                                                       a RotatingKVCache that wrapped, an empty KVCache)
  crates/ferrox-lm/tests/fixtures/mlx_prompt_cache.json its contents, for the test to compare

Run: python3 scripts/make_lm_fixtures.py   (mlx, mlx-lm, numpy)
"""

import json
import os

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import KVCache, RotatingKVCache, save_prompt_cache
from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p, apply_xtc, make_logits_processors

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates/ferrox-lm/tests/fixtures")


def listed(a):
    return [None if not np.isfinite(v) else float(v) for v in np.array(a, dtype=np.float64).reshape(-1)]


def sampling():
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal(64) * 2.0).astype(np.float32)
    x = mx.array(logits)[None]
    lp = x - mx.logsumexp(x, axis=-1, keepdims=True)
    history = [3, 5, 5, 9, 3, 3, 40, 63, 5]
    cases = {
        "top_p_0.9": apply_top_p(lp, 0.9),
        "top_p_0.3": apply_top_p(lp, 0.3),
        "min_p_0.1_keep1": apply_min_p(lp, 0.1, 1),
        "min_p_0.9_keep3": apply_min_p(lp, 0.9, 3),
        "top_k_5": apply_top_k(lp, 5),
        "xtc_0.05": apply_xtc(lp, 1.0, 0.05, [7]),
    }
    procs = {
        "repetition_1.3_ctx4": make_logits_processors(repetition_penalty=1.3, repetition_context_size=4),
        "presence_0.7_ctx20": make_logits_processors(presence_penalty=0.7),
        "frequency_0.4_ctx6": make_logits_processors(frequency_penalty=0.4, frequency_context_size=6),
        "bias": make_logits_processors(logit_bias={2: 5.0, 10: -3.0}),
    }
    out = {"logits": listed(logits), "logprobs": listed(lp), "history": history, "filters": {}, "processors": {}}
    for k, v in cases.items():
        out["filters"][k] = listed(v)
    for k, ps in procs.items():
        y = mx.array(logits)[None]  # fresh: mlx-lm's processors write into their input
        for p in ps:
            y = p(mx.array(history), y)
        out["processors"][k] = listed(y)
    with open(os.path.join(FIX, "sampling.json"), "w") as f:
        json.dump(out, f)


def prompt_cache():
    rng = np.random.default_rng(1)
    std = KVCache()
    k, v = rng.standard_normal((1, 2, 5, 4)).astype(np.float32), rng.standard_normal((1, 2, 5, 3)).astype(np.float32)
    std.update_and_fetch(mx.array(k), mx.array(v))
    rot = RotatingKVCache(max_size=6, keep=2)
    rk, rv = [], []
    for _ in range(9):  # one token at a time: wraps around the 4 non-sink slots
        a, b = rng.standard_normal((1, 2, 1, 4)).astype(np.float32), rng.standard_normal((1, 2, 1, 4)).astype(np.float32)
        rk.append(a), rv.append(b)
        ko, vo = rot.update_and_fetch(mx.array(a), mx.array(b))
    mx.eval(ko, vo)
    save_prompt_cache(os.path.join(FIX, "mlx_prompt_cache.safetensors"), [std, rot, KVCache()], {"model": "tiny", "chat_template": "x"})
    ref = {
        "std_keys": listed(k), "std_values": listed(v), "std_offset": 5,
        "rot_keys": listed(ko), "rot_values": listed(vo), "rot_offset": 9, "rot_shape": list(ko.shape),
    }
    with open(os.path.join(FIX, "mlx_prompt_cache.json"), "w") as f:
        json.dump(ref, f)


if __name__ == "__main__":
    sampling()
    prompt_cache()
