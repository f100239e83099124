//! Times a training step (forward, backward, SGD update) of a small character-level
//! transformer built from ferrox-nn layers; scripts/bench_nn_train_mlx.py times the same model
//! in real MLX. Prints tokens per second.
//!
//! `cargo run --release -p ferrox-nn --example bench_train_step -- [layers] [dims] [batch] [seq]`

use std::time::Instant;

use ferrox::{self as fx, Array, Dtype};
use ferrox_nn::layers::{Embedding, LayerNorm, Linear, MultiHeadAttention, TransformerEncoderLayer};
use ferrox_nn::{Module, Params};

#[derive(Module)]
struct CharLm {
    embedding: Embedding,
    pos: Embedding,
    layers: Vec<TransformerEncoderLayer>,
    ln: LayerNorm,
    out_proj: Linear,
}

impl CharLm {
    fn new(vocab: usize, dims: usize, layers: usize, ctx: usize) -> fx::Result<CharLm> {
        Ok(CharLm {
            embedding: Embedding::new(vocab, dims)?,
            pos: Embedding::new(ctx, dims)?,
            layers: (0..layers)
                .map(|_| TransformerEncoderLayer::new(dims, 4, Some(4 * dims), 0.0, true))
                .collect::<fx::Result<_>>()?,
            ln: LayerNorm::new(dims, 1e-5, true, true)?,
            out_proj: Linear::new(dims, vocab, false)?,
        })
    }

    fn loss(&self, x: &Array, y: &Array, mask: &Array) -> fx::Result<Array> {
        let l = x.shape()[1] as i32;
        let positions = fx::arange(0.0, l as f64, 1.0, Dtype::I32)?;
        let mut h = fx::add(&self.embedding.forward(x)?, &self.pos.forward(&positions)?)?;
        for layer in &self.layers {
            h = layer.forward(&h, Some(mask))?;
        }
        let logits = self.out_proj.forward(&self.ln.forward(&h)?)?;
        let logp = fx::subtract(&logits, &fx::logsumexp(&logits, Some(&[-1]), true)?)?;
        let picked = fx::take_along_axis(&logp, &fx::expand_dims(y, &[-1])?, Some(-1))?;
        fx::negative(&fx::mean(&picked, None, false)?)
    }
}

fn main() -> fx::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("numbers")).collect();
    let arg = |i: usize, d: usize| args.get(i).copied().unwrap_or(d);
    let (layers, dims, batch, seq) = (arg(0, 2), arg(1, 128), arg(2, 8), arg(3, 64));
    let vocab = 96;
    fx::random::seed(0);
    let mut model = CharLm::new(vocab, dims, layers, seq)?;
    let mask = MultiHeadAttention::create_additive_causal_mask(seq, Dtype::F32)?;
    let tokens = fx::random::randint(0, vocab as i64, &[batch, seq + 1], Dtype::I32, None)?;
    let x = fx::slice_axis(&tokens, 1, 0, seq as isize)?;
    let y = fx::slice_axis(&tokens, 1, 1, seq as isize + 1)?;
    fx::eval(&[&x, &y, &mask])?;
    let lr = 1e-2;
    let step = |model: &mut CharLm| -> fx::Result<f32> {
        let (loss, grads) = ferrox_nn::value_and_grad(model, |m| m.loss(&x, &y, &mask))?;
        let params = model.parameters();
        let new: Params = grads
            .iter()
            .map(|(k, g)| Ok((k.clone(), fx::subtract(&params[k], &fx::multiply(g, lr)?)?)))
            .collect::<fx::Result<_>>()?;
        model.update(&new)?;
        let mut outs: Vec<&Array> = new.values().collect();
        outs.push(&loss);
        fx::eval(&outs)?;
        loss.item::<f32>()
    };
    for _ in 0..3 {
        step(&mut model)?;
    }
    let iters = 10;
    let t = Instant::now();
    let mut last = 0.0;
    for _ in 0..iters {
        last = step(&mut model)?;
    }
    let secs = t.elapsed().as_secs_f64() / iters as f64;
    println!(
        "ferrox  layers={layers} dims={dims} batch={batch} seq={seq} params={}  step {:.1} ms  {:.0} tokens/s  (loss {last:.3})",
        model.num_parameters(),
        secs * 1e3,
        (batch * seq) as f64 / secs
    );
    Ok(())
}
