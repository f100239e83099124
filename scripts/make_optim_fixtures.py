#!/usr/bin/env python3
"""Makes the real-mlx reference fixtures for ferrox-nn's losses, initializers, optimizers and
learning-rate schedules.

Writes, under crates/ferrox-nn/tests/fixtures/ (replayed by crates/ferrox-nn/tests/*.rs):

* losses.safetensors — for each case `<c>`: the inputs `<c>.in.<i>`, the loss
  `<c>.out` from mlx.nn.losses, a cotangent `<c>.cot` of the loss's shape, and for each
  floating-point input i the vector-Jacobian product `<c>.grad.<i>` (mx.vjp). The call each
  case makes is written in CASES below and mirrored in tests/losses.rs.
* init.safetensors — `<c>`: the array mlx.nn.init returns right after mx.random.seed(seed of
  the case), for the initializers in INITS.
* optim.safetensors — the fixed problem (`problem.param.<k>`, `problem.target.<k>`,
  `problem.scale.<k>`; the gradient is scale * (param - target)), and for each optimizer
  config `<c>` in OPTIMIZERS the parameters after each of STEPS updates, `<c>.<step>.<k>`
  (step 1..STEPS); `bf16.<c>.<step>.<k>` the same for three steps in bfloat16 (stored as
  float32) for the configs in BF16_OPTIMIZERS.
  `clip.<max_norm>.<k>` and `clip.<max_norm>.norm`: optim.clip_grad_norm of the problem's
  first gradient.
* schedules.safetensors — `<s>`: the schedule's value at steps 0..N-1 (float32).

Needs mlx (CPU is enough). Deterministic: rerunning gives the same files.
"""

import math
import os

import mlx.core as mx
import mlx.nn.init as init
import mlx.nn.losses as L
import mlx.optimizers as optim
import numpy as np
from safetensors.numpy import save_file
from mlx.utils import tree_flatten, tree_unflatten

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "ferrox-nn", "tests", "fixtures")
rng = np.random.default_rng(1234)


def save(path, arrays):
    # safetensors.numpy writes tensors in a fixed order, so reruns give identical bytes.
    save_file({k: np.array(v) for k, v in arrays.items()}, path)


def f32(*shape, scale=1.0):
    return mx.array((rng.standard_normal(shape) * scale).astype(np.float32))


def log_softmax(x, axis=-1):
    return x - mx.logsumexp(x, axis=axis, keepdims=True)


def ints(high, *shape):
    return mx.array(rng.integers(0, high, size=shape).astype(np.int32))


def signs(*shape):
    return mx.array(np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32))


def probs(*shape):
    return mx.softmax(f32(*shape), axis=-1)


# name -> (inputs, function of the inputs). Mirrored in tests/losses.rs.
CASES = {
    "ce_idx": ([f32(4, 5), ints(5, 4)], lambda x, t: L.cross_entropy(x, t)),
    "ce_idx_smooth_mean": (
        [f32(4, 5), ints(5, 4)],
        lambda x, t: L.cross_entropy(x, t, label_smoothing=0.1, reduction="mean"),
    ),
    "ce_probs_sum": ([f32(4, 5), probs(4, 5)], lambda x, t: L.cross_entropy(x, t, reduction="sum")),
    "ce_axis0_weights": (
        [f32(5, 4), ints(5, 4), mx.abs(f32(4))],
        lambda x, t, w: L.cross_entropy(x, t, weights=w, axis=0, reduction="mean"),
    ),
    "ce_3d_smooth": ([f32(2, 3, 5), ints(5, 2, 3)], lambda x, t: L.cross_entropy(x, t, label_smoothing=0.2)),
    "bce_logits": ([f32(3, 4), mx.array(rng.random((3, 4)).astype(np.float32))], lambda x, t: L.binary_cross_entropy(x, t)),
    "bce_logits_weights": (
        [f32(6), mx.array(rng.random(6).astype(np.float32)), mx.abs(f32(6))],
        lambda x, t, w: L.binary_cross_entropy(x, t, weights=w, reduction="none"),
    ),
    "bce_probs": (
        [mx.sigmoid(f32(3, 4)), mx.array(rng.random((3, 4)).astype(np.float32))],
        lambda p, t: L.binary_cross_entropy(p, t, with_logits=False, reduction="sum"),
    ),
    "nll_mean": ([log_softmax(f32(4, 6)), ints(6, 4)], lambda x, t: L.nll_loss(x, t, reduction="mean")),
    "nll_axis0": ([log_softmax(f32(5, 3), axis=0), ints(5, 3)], lambda x, t: L.nll_loss(x, t, axis=0)),
    "mse_mean": ([f32(3, 4), f32(3, 4)], lambda p, t: L.mse_loss(p, t)),
    "l1_sum": ([f32(3, 4), f32(3, 4)], lambda p, t: L.l1_loss(p, t, reduction="sum")),
    "smooth_l1": ([f32(20), f32(20)], lambda p, t: L.smooth_l1_loss(p, t, beta=0.5)),
    "huber": ([f32(20), f32(20)], lambda p, t: L.huber_loss(p, t, delta=0.7)),
    "kl_div": ([log_softmax(f32(3, 5)), log_softmax(f32(3, 5))], lambda x, t: L.kl_div_loss(x, t)),
    "kl_div_axis0_sum": (
        [log_softmax(f32(4, 2), axis=0), log_softmax(f32(4, 2), axis=0)],
        lambda x, t: L.kl_div_loss(x, t, axis=0, reduction="sum"),
    ),
    "cosine": ([f32(3, 4), f32(3, 4)], lambda a, b: L.cosine_similarity_loss(a, b)),
    "cosine_last_mean": ([f32(2, 3, 4), f32(2, 3, 4)], lambda a, b: L.cosine_similarity_loss(a, b, axis=-1, reduction="mean")),
    "hinge": ([f32(10), signs(10)], lambda x, t: L.hinge_loss(x, t)),
    "log_cosh_mean": ([f32(10, scale=3.0), f32(10)], lambda x, t: L.log_cosh_loss(x, t, reduction="mean")),
    "margin_ranking": (
        [f32(10), f32(10), signs(10)],
        lambda a, b, t: L.margin_ranking_loss(a, b, t, margin=0.3),
    ),
    "gaussian_nll": (
        [f32(3, 4), f32(3, 4), mx.abs(f32(3, 4)) + 0.05],
        lambda x, t, v: L.gaussian_nll_loss(x, t, v),
    ),
    "gaussian_nll_full_sum": (
        [f32(6), f32(6), mx.abs(f32(6)) + 0.05],
        lambda x, t, v: L.gaussian_nll_loss(x, t, v, full=True, reduction="sum"),
    ),
    "triplet": ([f32(4, 5), f32(4, 5), f32(4, 5)], lambda a, p, n: L.triplet_loss(a, p, n)),
    "triplet_p1_axis0_mean": (
        [f32(5, 3), f32(5, 3), f32(5, 3)],
        lambda a, p, n: L.triplet_loss(a, p, n, axis=0, p=1, margin=0.5, reduction="mean"),
    ),
}


def make_losses():
    out = {}
    for name, (inputs, fn) in CASES.items():
        value = fn(*inputs)
        cot = mx.array(rng.standard_normal(value.shape).astype(np.float32))
        diff = [i for i, a in enumerate(inputs) if mx.issubdtype(a.dtype, mx.floating)]

        def f(*xs):
            args = list(inputs)
            for i, x in zip(diff, xs):
                args[i] = x
            return [fn(*args)]

        _, vjps = mx.vjp(f, [inputs[i] for i in diff], [cot])
        for i, a in enumerate(inputs):
            out[f"{name}.in.{i}"] = a
        out[f"{name}.out"] = value
        out[f"{name}.cot"] = cot
        for i, g in zip(diff, vjps):
            out[f"{name}.grad.{i}"] = g
    # Probabilities of exactly 0 and 1: each log is clipped at -100.
    p = mx.array([0.0, 1.0, 0.5], dtype=mx.float32)
    t = mx.array([1.0, 0.0, 1.0], dtype=mx.float32)
    out["bce_probs_edge.in.0"], out["bce_probs_edge.in.1"] = p, t
    out["bce_probs_edge.out"] = L.binary_cross_entropy(p, t, with_logits=False, reduction="none")
    save(os.path.join(OUT, "losses.safetensors"), out)


# name -> (seed, thunk). Mirrored in tests/init.rs.
INITS = {
    "constant": (0, lambda: init.constant(0.25)(mx.zeros((2, 3)))),
    "normal": (1, lambda: init.normal(mean=0.5, std=2.0)(mx.zeros((3, 4)))),
    "uniform": (2, lambda: init.uniform(low=-1.0, high=3.0)(mx.zeros((5,)))),
    "identity": (3, lambda: init.identity()(mx.zeros((3, 3)))),
    "glorot_normal": (4, lambda: init.glorot_normal()(mx.zeros((8, 6)))),
    "glorot_uniform": (5, lambda: init.glorot_uniform()(mx.zeros((4, 3, 5)), gain=2.0)),
    "he_normal": (6, lambda: init.he_normal()(mx.zeros((6, 2, 3)), mode="fan_out")),
    "he_uniform": (7, lambda: init.he_uniform()(mx.zeros((7, 5)), gain=math.sqrt(2.0))),
    "sparse": (8, lambda: init.sparse(0.3, mean=0.1, std=0.5)(mx.zeros((6, 9)))),
}


def make_init():
    out = {}
    for name, (seed, thunk) in INITS.items():
        mx.random.seed(seed)
        out[name] = thunk()
    save(os.path.join(OUT, "init.safetensors"), out)


STEPS = 5


def multi():
    return optim.MultiOptimizer(
        [optim.SGD(0.05, momentum=0.9), optim.Adam(0.01)], [lambda path, g: "bias" in path]
    )


def warmup_cosine():
    return optim.join_schedules([optim.linear_schedule(0.0, 0.1, 2), optim.cosine_decay(0.1, 10, 0.01)], [2])


# name -> constructor. Mirrored in tests/optim.rs.
OPTIMIZERS = {
    "sgd": lambda: optim.SGD(0.1),
    "sgd_momentum": lambda: optim.SGD(0.1, momentum=0.9, weight_decay=0.01, dampening=0.1),
    "sgd_nesterov": lambda: optim.SGD(0.1, momentum=0.8, nesterov=True),
    "rmsprop": lambda: optim.RMSprop(0.01, alpha=0.9),
    "adagrad": lambda: optim.Adagrad(0.1),
    "adadelta": lambda: optim.AdaDelta(1.0, rho=0.95),
    "adam": lambda: optim.Adam(0.01),
    "adam_bias": lambda: optim.Adam(0.01, betas=[0.8, 0.99], bias_correction=True),
    "adamw": lambda: optim.AdamW(0.01, weight_decay=0.1),
    "adamax": lambda: optim.Adamax(0.02),
    "lion": lambda: optim.Lion(0.01, weight_decay=0.1),
    "adafactor": lambda: optim.Adafactor(),
    "adafactor_lr": lambda: optim.Adafactor(
        learning_rate=0.05, relative_step=False, beta_1=0.9, weight_decay=0.01, scale_parameter=False
    ),
    "adafactor_warmup": lambda: optim.Adafactor(warmup_init=True),
    "adam_schedule": lambda: optim.Adam(warmup_cosine(), bias_correction=True),
    "multi": multi,
    "muon": lambda: optim.Muon(0.02),
    "muon_plain": lambda: optim.Muon(0.02, momentum=0.9, weight_decay=0.0, nesterov=False, ns_steps=3),
}

BF16_OPTIMIZERS = ["sgd_momentum", "adam_bias", "adamw", "lion", "adafactor"]

SHAPES = {"layer.weight": (4, 3), "layer.bias": (3,), "conv.w": (2, 3, 4)}


def make_optim():
    out = {}
    problem = {}
    for k, shape in SHAPES.items():
        problem[k] = (f32(*shape), f32(*shape), mx.abs(f32(*shape)) + 0.1)
        out[f"problem.param.{k}"], out[f"problem.target.{k}"], out[f"problem.scale.{k}"] = problem[k]
    for name, make in OPTIMIZERS.items():
        opt = make()
        params = tree_unflatten([(k, v[0]) for k, v in problem.items()])
        for step in range(1, STEPS + 1):
            flat = dict(tree_flatten(params))
            grads = tree_unflatten([(k, problem[k][2] * (flat[k] - problem[k][1])) for k in flat])
            params = opt.apply_gradients(grads, params)
            mx.eval(params, opt.state)
            for k, v in tree_flatten(params):
                out[f"{name}.{step}.{k}"] = v
    # bfloat16 parameters and gradients: state and updates stay bfloat16.
    half = {k: tuple(a.astype(mx.bfloat16) for a in v) for k, v in problem.items()}
    for name in BF16_OPTIMIZERS:
        opt = OPTIMIZERS[name]()
        params = tree_unflatten([(k, v[0]) for k, v in half.items()])
        for step in range(1, 4):
            flat = dict(tree_flatten(params))
            grads = tree_unflatten([(k, half[k][2] * (flat[k] - half[k][1])) for k in flat])
            params = opt.apply_gradients(grads, params)
            mx.eval(params, opt.state)
            for k, v in tree_flatten(params):
                out[f"bf16.{name}.{step}.{k}"] = v.astype(mx.float32)
    grads = {k: problem[k][2] * (problem[k][0] - problem[k][1]) for k in problem}
    for max_norm in (1.0, 100.0):
        clipped, norm = optim.clip_grad_norm(grads, max_norm)
        out[f"clip.{max_norm:g}.norm"] = norm
        for k, g in clipped.items():
            out[f"clip.{max_norm:g}.{k}"] = g
    save(os.path.join(OUT, "optim.safetensors"), out)


N = 30
# name -> schedule. Mirrored in tests/optim.rs.
SCHEDULES = {
    "exponential_decay": optim.exponential_decay(0.1, 0.9),
    "step_decay": optim.step_decay(0.1, 0.5, 7),
    "cosine_decay": optim.cosine_decay(0.1, 20),
    "cosine_decay_end": optim.cosine_decay(0.1, 20, end=0.01),
    "linear_schedule": optim.linear_schedule(0.0, 0.2, 12),
    "join_warmup_cosine": optim.join_schedules([optim.linear_schedule(0.0, 0.1, 5), optim.cosine_decay(0.1, 20)], [5]),
    "join_three": optim.join_schedules(
        [optim.linear_schedule(0.0, 0.1, 4), optim.exponential_decay(0.1, 0.8), optim.step_decay(0.05, 0.5, 3)],
        [4, 15],
    ),
}


def make_schedules():
    out = {}
    for name, s in SCHEDULES.items():
        vals = [s(mx.array(i, dtype=mx.uint64)) for i in range(N)]
        out[name] = mx.stack(vals).astype(mx.float32)
    save(os.path.join(OUT, "schedules.safetensors"), out)


if __name__ == "__main__":
    mx.set_default_device(mx.cpu)
    os.makedirs(OUT, exist_ok=True)
    make_losses()
    make_init()
    make_optim()
    make_schedules()
    print("wrote", sorted(os.listdir(OUT)))
