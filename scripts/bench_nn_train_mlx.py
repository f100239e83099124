#!/usr/bin/env python3
"""Times the training step of crates/ferrox-nn/examples/bench_train_step.rs in real MLX (CPU):
the same character-level transformer (token + position embeddings, pre-norm encoder layers
with a causal mask, final LayerNorm, linear head), cross-entropy, plain SGD. Prints tokens/s.

Usage: python3 scripts/bench_nn_train_mlx.py [layers] [dims] [batch] [seq]
"""

import sys
import time

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map

mx.set_default_device(mx.cpu)
layers, dims, batch, seq = ([int(a) for a in sys.argv[1:]] + [2, 128, 8, 64][len(sys.argv) - 1:])[:4]
vocab = 96


class CharLm(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dims)
        self.pos = nn.Embedding(seq, dims)
        self.layers = [nn.TransformerEncoderLayer(dims, 4, 4 * dims, 0.0, norm_first=True) for _ in range(layers)]
        self.ln = nn.LayerNorm(dims)
        self.out_proj = nn.Linear(dims, vocab, bias=False)

    def __call__(self, x, mask):
        h = self.embedding(x) + self.pos(mx.arange(x.shape[1]))
        for layer in self.layers:
            h = layer(h, mask)
        return self.out_proj(self.ln(h))


mx.random.seed(0)
model = CharLm()
mask = nn.MultiHeadAttention.create_additive_causal_mask(seq)
tokens = mx.random.randint(0, vocab, (batch, seq + 1))
x, y = tokens[:, :-1], tokens[:, 1:]


def loss_fn(m):
    return nn.losses.cross_entropy(m(x, mask), y, reduction="mean")


vg = nn.value_and_grad(model, loss_fn)


def step():
    loss, grads = vg(model)
    model.update(tree_map(lambda p, g: p - 1e-2 * g, model.parameters(), grads))
    mx.eval(model.parameters(), loss)
    return loss.item()


for _ in range(3):
    step()
iters = 10
t = time.perf_counter()
for _ in range(iters):
    last = step()
secs = (time.perf_counter() - t) / iters
nparams = sum(v.size for _, v in tree_flatten(model.parameters()))
print(f"mlx     layers={layers} dims={dims} batch={batch} seq={seq} params={nparams}  step {secs * 1e3:.1f} ms  "
      f"{batch * seq / secs:.0f} tokens/s  (loss {last:.3f})")
