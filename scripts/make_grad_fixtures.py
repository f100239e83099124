#!/usr/bin/env python3
"""Gradient references from MLX itself, for ferrox's reverse mode on whole models.

Writes crates/ferrox/tests/fixtures/grad_mlx.json, read by crates/ferrox/tests/grad_mlx.rs,
which builds the same functions from ferrox ops and compares the loss and every gradient.
Needs mlx (run with 0.32.4) and numpy; deterministic (seeded); run from anywhere:

    python3 scripts/make_grad_fixtures.py

Every case is a scalar loss of float32 arrays computed on MLX's CPU device with
mx.value_and_grad over all of its float inputs:

  mlp_gelu, mlp_relu   x @ w1 + b1, GELU (erf) or ReLU, @ w2 + b2, mean cross-entropy over
                       class indices (mlx.nn.losses.cross_entropy);
  attention_1head      pre-norm block: rms_norm, q/k/v projections, causal
                       mx.fast.scaled_dot_product_attention, output projection, residual;
  attention_4head      the same with layer_norm (weight and bias), 4 query heads sharing 2
                       key/value heads, and a fixed additive term in the loss;
  cross_entropy        logsumexp and log_softmax on their own: hard-label cross-entropy, a
                       soft-target loss and a logsumexp over the first axis;
  conv_net             conv1d (padding, stride) -> GELU -> conv1d (dilation, groups) and a
                       conv2d (stride, padding) -> ReLU -> grouped conv2d branch, pooled, a
                       linear head and a mean-squared-error loss;
  sdpa_causal_*        causal mx.fast.scaled_dot_product_attention with more queries than
                       keys (L > S), whose first L - S query rows see no key (MLX: the mean of
                       all values, no gradient into q or k): the loss is sum(out * ct), so the
                       gradients of q, k, v are the vjp for the cotangent ct, and the gradient
                       of ct is the forward output itself. l4_s2: 1 head, L=4, S=2 (the
                       example of docs/STATUS.md); l7_s5_gqa: 2 batches, 4 query heads over 2
                       key/value heads, L=7, S=5; l10_s3: L=10, S=3, 2 heads (more than 8 rows
                       a key/value head: ferrox's blocked CPU path rather than its direct one).

The file holds, per case: the inputs ({shape, data} for floats; class indices as int lists),
the loss value and the gradient of every float input. Floats are written with the fewest
digits that round back to the same float32.
"""

import json
import math
import os

import mlx.core as mx
import mlx.nn as nn
import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "ferrox", "tests", "fixtures",
                   "grad_mlx.json")

rng = np.random.default_rng(20250101)


def normal(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def glorot(fan_in, *shape):
    return normal(*shape, scale=1.0 / math.sqrt(fan_in))


# ---------------------------------------------------------------------------------------------
# The functions. Each takes a dict of mx arrays (floats and int labels) and returns a scalar.


def mlp(act):
    def f(p):
        h = act(p["x"] @ p["w1"] + p["b1"])
        logits = h @ p["w2"] + p["b2"]
        return nn.losses.cross_entropy(logits, p["labels"], reduction="mean")

    return f


def attention(norm, heads, kv_heads):
    def f(p):
        x = p["x"]
        b, l, d = x.shape
        dh = d // heads
        if norm == "rms":
            h = mx.fast.rms_norm(x, p["norm_w"], 1e-5)
        else:
            h = mx.fast.layer_norm(x, p["norm_w"], p["norm_b"], 1e-5)
        q = (h @ p["wq"]).reshape(b, l, heads, dh).transpose(0, 2, 1, 3)
        k = (h @ p["wk"]).reshape(b, l, kv_heads, dh).transpose(0, 2, 1, 3)
        v = (h @ p["wv"]).reshape(b, l, kv_heads, dh).transpose(0, 2, 1, 3)
        o = mx.fast.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(dh), mask="causal")
        o = o.transpose(0, 2, 1, 3).reshape(b, l, heads * dh)
        y = x + o @ p["wo"]
        loss = mx.mean(mx.square(y))
        if "target" in p:
            loss = loss + mx.mean(y * p["target"])
        return loss

    return f


def cross_entropy(p):
    logits, soft = p["logits"], p["soft"]
    hard = mx.mean(mx.logsumexp(logits, axis=-1) - mx.take_along_axis(logits, p["labels"][:, None], axis=-1)[:, 0])
    log_p = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    probs = mx.softmax(soft, axis=-1)
    soft_loss = -mx.mean(mx.sum(probs * log_p, axis=-1))
    col = mx.sum(mx.logsumexp(logits * 0.5, axis=0))
    return hard + soft_loss + 0.1 * col


def conv_net(p):
    # 1-D branch: x1 [N, L, C].
    h = nn.gelu(mx.conv1d(p["x1"], p["c1_w"], stride=2, padding=1) + p["c1_b"])
    h = mx.conv1d(h, p["c2_w"], padding=2, dilation=2, groups=2)
    f1 = mx.mean(h, axis=1)
    # 2-D branch: x2 [N, H, W, C].
    g = nn.relu(mx.conv2d(p["x2"], p["d1_w"], stride=(2, 1), padding=(1, 1)) + p["d1_b"])
    g = mx.conv2d(g, p["d2_w"], padding=(0, 1), groups=3)
    f2 = mx.mean(g, axis=(1, 2))
    feats = mx.concatenate([f1, f2], axis=-1)
    y = feats @ p["head_w"] + p["head_b"]
    return mx.mean(mx.square(y - p["target"]))


def sdpa_causal(scale):
    def f(p):
        o = mx.fast.scaled_dot_product_attention(p["q"], p["k"], p["v"], scale=scale, mask="causal")
        return mx.sum(o * p["ct"])

    return f


def cases():
    n, din, hid, classes = 8, 6, 16, 5
    mlp_in = {
        "x": normal(n, din),
        "w1": glorot(din, din, hid),
        "b1": normal(hid, scale=0.1),
        "w2": glorot(hid, hid, classes),
        "b2": normal(classes, scale=0.1),
        "labels": rng.integers(0, classes, n).astype(np.int32),
    }
    yield "mlp_gelu", mlp(nn.gelu), mlp_in
    yield "mlp_relu", mlp(nn.relu), dict(mlp_in, w1=glorot(din, din, hid))

    b, l, d = 2, 6, 16
    yield "attention_1head", attention("rms", 1, 1), {
        "x": normal(b, l, d),
        "norm_w": 1.0 + normal(d, scale=0.1),
        "wq": glorot(d, d, d),
        "wk": glorot(d, d, d),
        "wv": glorot(d, d, d),
        "wo": glorot(d, d, d),
    }
    heads, kv = 4, 2
    yield "attention_4head", attention("layer", heads, kv), {
        "x": normal(b, l, d),
        "norm_w": 1.0 + normal(d, scale=0.1),
        "norm_b": normal(d, scale=0.1),
        "wq": glorot(d, d, d),
        "wk": glorot(d, d, d // heads * kv),
        "wv": glorot(d, d, d // heads * kv),
        "wo": glorot(d, d, d),
        "target": normal(b, l, d),
    }

    yield "cross_entropy", cross_entropy, {
        "logits": normal(10, 7, scale=2.0),
        "soft": normal(10, 7),
        "labels": rng.integers(0, 7, 10).astype(np.int32),
    }

    yield "conv_net", conv_net, {
        "x1": normal(2, 11, 3),
        "c1_w": glorot(9, 4, 3, 3),
        "c1_b": normal(4, scale=0.1),
        "c2_w": glorot(6, 6, 3, 2),
        "x2": normal(2, 7, 6, 2),
        "d1_w": glorot(18, 6, 3, 3, 2),
        "d1_b": normal(6, scale=0.1),
        "d2_w": glorot(8, 3, 2, 2, 2),
        "head_w": glorot(9, 9, 4),
        "head_b": normal(4, scale=0.1),
        "target": normal(2, 4),
    }

    # (name, B, Hq, Hkv, L, S, D, Dv), all with L > S.
    for name, b, hq, hkv, l, s, dk, dv in [
        ("sdpa_causal_l4_s2", 1, 1, 1, 4, 2, 3, 2),
        ("sdpa_causal_l7_s5_gqa", 2, 4, 2, 7, 5, 4, 3),
        ("sdpa_causal_l10_s3", 1, 2, 2, 10, 3, 4, 4),
    ]:
        yield name, sdpa_causal(0.5), {
            "q": normal(b, hq, l, dk),
            "k": normal(b, hkv, s, dk),
            "v": normal(b, hkv, s, dv),
            "ct": normal(b, hq, l, dv),
        }


# ---------------------------------------------------------------------------------------------
# Encoding.


def enc_floats(a):
    a = np.asarray(a, dtype=np.float32)
    return {"shape": list(a.shape), "data": [float(str(v)) for v in a.reshape(-1)]}


def main():
    mx.set_default_device(mx.cpu)
    out = {"generator": "scripts/make_grad_fixtures.py", "mlx_version": mx.__version__, "cases": {}}
    for name, fn, inputs in cases():
        floats = sorted(k for k, v in inputs.items() if v.dtype == np.float32)
        fixed = {k: mx.array(v) for k, v in inputs.items() if k not in floats}

        def loss(*args, fn=fn, fixed=fixed, floats=floats):
            return fn(dict(fixed, **dict(zip(floats, args))))

        value, grads = mx.value_and_grad(loss, argnums=list(range(len(floats))))(*[mx.array(inputs[k])
                                                                                   for k in floats])
        mx.eval(value, grads)
        out["cases"][name] = {
            "inputs": {k: enc_floats(v) if k in floats else {"shape": list(v.shape), "ints": v.tolist()}
                       for k, v in inputs.items()},
            "value": float(str(np.float32(value.item()))),
            "grads": {k: enc_floats(np.array(g)) for k, g in zip(floats, grads)},
        }
    text = json.dumps(out, separators=(",", ":"))
    with open(OUT, "w") as fh:
        fh.write(text + "\n")
    print(f"wrote {len(out['cases'])} cases, {len(text)} bytes to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
