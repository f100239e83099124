"""The character LM of crates/ferrox-nn/examples/char_lm.rs in real mlx, timing training.

Same corpus reading, byte vocabulary, SplitMix64 batch offsets, model (pre-norm blocks of
causal attention with a fused bias-free qkv projection and a GELU MLP, learned positions,
linear head), AdamW and loss as the Rust example; prints the same `bench` line:

    python3 scripts/bench_char_lm_mlx.py --bench 30 [--compile] [CORPUS] [--layers N] ...
"""

import argparse
import os
import time

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim

MASK64 = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.state = seed

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)


def read_corpus(path):
    if os.path.isdir(path):
        names = sorted(os.listdir(path))
        files = [
            os.path.join(path, n)
            for n in names
            if os.path.isfile(os.path.join(path, n)) and not n.endswith((".dat", ".u8"))
        ]
    else:
        files = [path]
    return b"".join(open(f, "rb").read() for f in files)


class Attention(nn.Module):
    def __init__(self, dims, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dims, 3 * dims, bias=False)
        self.out = nn.Linear(dims, dims, bias=False)

    def __call__(self, x):
        b, l, d = x.shape
        q, k, v = mx.split(self.qkv(x), 3, axis=-1)
        q, k, v = (a.reshape(b, l, self.heads, -1).transpose(0, 2, 1, 3) for a in (q, k, v))
        o = mx.fast.scaled_dot_product_attention(q, k, v, scale=(d // self.heads) ** -0.5, mask="causal")
        return self.out(o.transpose(0, 2, 1, 3).reshape(b, l, d))


class Block(nn.Module):
    def __init__(self, dims, heads):
        super().__init__()
        self.ln1 = nn.LayerNorm(dims, eps=1e-5)
        self.attn = Attention(dims, heads)
        self.ln2 = nn.LayerNorm(dims, eps=1e-5)
        self.up = nn.Linear(dims, 4 * dims)
        self.down = nn.Linear(4 * dims, dims)

    def __call__(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.down(nn.gelu(self.up(self.ln2(x))))


class CharLm(nn.Module):
    def __init__(self, vocab, a):
        super().__init__()
        self.tokens = nn.Embedding(vocab, a.dims)
        self.positions = nn.Embedding(a.context, a.dims)
        self.blocks = [Block(a.dims, a.heads) for _ in range(a.layers)]
        self.norm = nn.LayerNorm(a.dims, eps=1e-5)
        self.head = nn.Linear(a.dims, vocab)

    def __call__(self, ids):
        h = self.tokens(ids) + self.positions(mx.arange(ids.shape[1]))
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("corpus", nargs="?", default="/usr/share/games/fortunes")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--dims", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--bench", type=int, default=30)
    p.add_argument("--compile", action="store_true", help="mx.compile the training step")
    a = p.parse_args()

    text = read_corpus(a.corpus)
    vocab = sorted(set(text))
    index = {b: i for i, b in enumerate(vocab)}
    ids = [index[b] for b in text]
    mx.random.seed(0)
    model = CharLm(len(vocab), a)
    opt = optim.AdamW(learning_rate=a.lr)
    rng = SplitMix64(0)
    span = len(ids) - a.context - 1

    def batch():
        xs, ys = [], []
        for _ in range(a.batch):
            o = rng.next() % span
            xs.append(ids[o : o + a.context])
            ys.append(ids[o + 1 : o + a.context + 1])
        return mx.array(xs, dtype=mx.int32), mx.array(ys, dtype=mx.int32)

    def loss_fn(model, x, y):
        return nn.losses.cross_entropy(model(x), y, reduction="mean")

    loss_and_grad = nn.value_and_grad(model, loss_fn)

    def step(x, y):
        loss, grads = loss_and_grad(model, x, y)
        opt.update(model, grads)
        return loss

    if a.compile:
        state = [model.state, opt.state]
        step = mx.compile(step, inputs=state, outputs=state)

    def train_step():
        x, y = batch()
        loss = step(x, y)
        mx.eval(model.parameters(), opt.state, loss)
        return loss.item()

    for _ in range(3):
        train_step()
    start = time.perf_counter()
    for _ in range(a.bench):
        loss = train_step()
    secs = time.perf_counter() - start
    name = "mlx (compiled)" if a.compile else "mlx"
    print(
        f"bench {name}: {a.bench} steps in {secs:.2f} s: {a.bench * a.batch * a.context / secs:.0f} tokens/s "
        f"({1e3 * secs / a.bench:.1f} ms/step, loss {loss:.3f})"
    )

    if not a.compile:
        profile(model, opt, loss_fn, loss_and_grad, batch, a.bench)


def profile(model, opt, loss_fn, loss_and_grad, batch, n):
    """ms per step of the forward pass, forward and backward, and the whole step, each evaluated alone."""
    batches = [batch() for _ in range(n)]

    def ms(f):
        start = time.perf_counter()
        for x, y in batches:
            f(x, y)
        return 1e3 * (time.perf_counter() - start) / n

    forward = ms(lambda x, y: mx.eval(loss_fn(model, x, y)))
    backward = ms(lambda x, y: mx.eval(loss_and_grad(model, x, y)))

    def step(x, y):
        loss, grads = loss_and_grad(model, x, y)
        opt.update(model, grads)
        mx.eval(model.parameters(), opt.state, loss)

    total = ms(step)
    print(
        f"profile mlx (ms/step): forward {forward:.1f}, backward {backward - forward:.1f}, "
        f"AdamW update {total - backward:.1f}, step {total:.1f}"
    )


if __name__ == "__main__":
    main()
