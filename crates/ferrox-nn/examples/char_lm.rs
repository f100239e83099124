//! A character-level transformer language model trained on a real English corpus: Debian's
//! `fortunes` (`apt-get install fortunes`; the text lies under /usr/share/games/fortunes).
//!
//! A decoder-only transformer (pre-norm blocks of causal self-attention and a GELU MLP,
//! learned positions, a linear head) over the corpus's bytes, trained with AdamW on random
//! windows; it prints the loss and tokens/s as it trains and samples text at the end.
//! `--bench N` instead times N training steps after warm-up; scripts/bench_char_lm_mlx.py is
//! the same model, data and optimizer in real mlx and prints the same line.
//!
//! `cargo run --release -p ferrox-nn --example char_lm -- [CORPUS] [--steps N] [--layers N]
//! [--dims N] [--heads N] [--context N] [--batch N] [--lr X] [--sample N] [--temperature X]
//! [--bench N]`
//!
//! CORPUS is a text file or a directory of them (default /usr/share/games/fortunes; `.dat`
//! index files and `.u8` duplicates are skipped).

use std::path::{Path, PathBuf};
use std::time::Instant;

use ferrox::fast::SdpaMask;
use ferrox::{self as fx, Array, Dtype};
use ferrox_nn::layers::{activations::gelu, Embedding, LayerNorm, Linear};
use ferrox_nn::losses::{cross_entropy, CrossEntropyOptions, Reduction};
use ferrox_nn::optim::{AdamW, AdamWConfig, Optimizer};
use ferrox_nn::Module;

const DEFAULT_CORPUS: &str = "/usr/share/games/fortunes";

/// Command-line settings.
#[derive(Debug)]
struct Config {
    corpus: PathBuf,
    steps: usize,
    layers: usize,
    dims: usize,
    heads: usize,
    context: usize,
    batch: usize,
    lr: f64,
    sample: usize,
    temperature: f32,
    bench: Option<usize>,
}

impl Config {
    fn parse() -> Result<Config, String> {
        let mut c = Config {
            corpus: PathBuf::from(DEFAULT_CORPUS),
            steps: 1000,
            layers: 4,
            dims: 128,
            heads: 4,
            context: 64,
            batch: 32,
            lr: 1e-3,
            sample: 400,
            temperature: 0.8,
            bench: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            if !a.starts_with("--") {
                c.corpus = PathBuf::from(a);
                continue;
            }
            let v = args.next().ok_or_else(|| format!("{a} needs a value"))?;
            let bad = |e: &dyn std::fmt::Display| format!("{a} {v}: {e}");
            match a.as_str() {
                "--steps" => c.steps = v.parse().map_err(|e| bad(&e))?,
                "--layers" => c.layers = v.parse().map_err(|e| bad(&e))?,
                "--dims" => c.dims = v.parse().map_err(|e| bad(&e))?,
                "--heads" => c.heads = v.parse().map_err(|e| bad(&e))?,
                "--context" => c.context = v.parse().map_err(|e| bad(&e))?,
                "--batch" => c.batch = v.parse().map_err(|e| bad(&e))?,
                "--lr" => c.lr = v.parse().map_err(|e| bad(&e))?,
                "--sample" => c.sample = v.parse().map_err(|e| bad(&e))?,
                "--temperature" => c.temperature = v.parse().map_err(|e| bad(&e))?,
                "--bench" => c.bench = Some(v.parse().map_err(|e| bad(&e))?),
                _ => return Err(format!("unknown flag {a}")),
            }
        }
        if c.heads == 0 || !c.dims.is_multiple_of(c.heads) {
            return Err(format!("--dims {} must be a multiple of --heads {}", c.dims, c.heads));
        }
        if c.context < 2 || c.batch == 0 || c.layers == 0 || c.temperature.is_nan() || c.temperature <= 0.0 {
            return Err("--context must be at least 2, --batch and --layers positive, --temperature > 0".into());
        }
        Ok(c)
    }
}

/// The corpus's bytes: a file, or the files of a directory in name order.
fn read_corpus(path: &Path) -> Result<Vec<u8>, String> {
    let missing = || {
        format!(
            "corpus {} not found: install Debian's fortunes (`apt-get install fortunes`) or pass a text file",
            path.display()
        )
    };
    let meta = std::fs::metadata(path).map_err(|_| missing())?;
    let files = if meta.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && !matches!(p.extension().and_then(|e| e.to_str()), Some("dat" | "u8")))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut text = Vec::new();
    for f in &files {
        text.extend(std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?);
    }
    if text.len() < 2 {
        return Err(format!("corpus {} holds no text", path.display()));
    }
    Ok(text)
}

/// SplitMix64: the batch offsets, reproduced bit for bit by the mlx script.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The corpus as token ids, with the byte ↔ id tables.
struct Data {
    ids: Vec<i32>,
    vocab: Vec<u8>,
}

impl Data {
    fn new(text: &[u8]) -> Data {
        let mut seen = [false; 256];
        text.iter().for_each(|&b| seen[b as usize] = true);
        let vocab: Vec<u8> = (0..=255u8).filter(|&b| seen[b as usize]).collect();
        let mut index = [0i32; 256];
        vocab.iter().enumerate().for_each(|(i, &b)| index[b as usize] = i as i32);
        Data { ids: text.iter().map(|&b| index[b as usize]).collect(), vocab }
    }

    /// `batch` random windows: inputs and next-token targets, both `[batch, context]`.
    fn batch(&self, rng: &mut SplitMix64, batch: usize, context: usize) -> fx::Result<(Array, Array)> {
        let span = (self.ids.len() - context - 1) as u64;
        let (mut x, mut y) = (Vec::with_capacity(batch * context), Vec::with_capacity(batch * context));
        for _ in 0..batch {
            let o = (rng.next() % span) as usize;
            x.extend_from_slice(&self.ids[o..o + context]);
            y.extend_from_slice(&self.ids[o + 1..o + context + 1]);
        }
        Ok((Array::from_slice(&x, &[batch, context])?, Array::from_slice(&y, &[batch, context])?))
    }
}

/// Causal multi-head self-attention without biases.
#[derive(Module)]
struct Attention {
    qkv: Linear,
    out: Linear,
    #[module(skip)]
    heads: usize,
}

impl Attention {
    fn forward(&self, x: &Array) -> fx::Result<Array> {
        let (b, l, d) = (x.shape()[0] as isize, x.shape()[1] as isize, x.shape()[2] as isize);
        // [B, L, 3D] -> 3 × [B, H, L, D/H]
        let qkv = fx::split(&self.qkv.forward(x)?, fx::SplitAt::Sections(3), -1)?;
        let heads = |a: &Array| fx::transpose(&fx::reshape(a, &[b, l, self.heads as isize, -1])?, &[0, 2, 1, 3]);
        let (q, k, v) = (heads(&qkv[0])?, heads(&qkv[1])?, heads(&qkv[2])?);
        let scale = 1.0 / ((d / self.heads as isize) as f32).sqrt();
        let o = fx::fast::scaled_dot_product_attention(&q, &k, &v, scale, SdpaMask::Causal)?;
        self.out.forward(&fx::reshape(&fx::transpose(&o, &[0, 2, 1, 3])?, &[b, l, d])?)
    }
}

/// A pre-norm transformer block: `x + attn(ln(x))`, then `x + mlp(ln(x))`.
#[derive(Module)]
struct Block {
    ln1: LayerNorm,
    attn: Attention,
    ln2: LayerNorm,
    up: Linear,
    down: Linear,
}

impl Block {
    fn new(dims: usize, heads: usize) -> fx::Result<Block> {
        Ok(Block {
            ln1: LayerNorm::new(dims, 1e-5, true, true)?,
            attn: Attention { qkv: Linear::new(dims, 3 * dims, false)?, out: Linear::new(dims, dims, false)?, heads },
            ln2: LayerNorm::new(dims, 1e-5, true, true)?,
            up: Linear::new(dims, 4 * dims, true)?,
            down: Linear::new(4 * dims, dims, true)?,
        })
    }

    fn forward(&self, x: &Array) -> fx::Result<Array> {
        let x = fx::add(x, &self.attn.forward(&self.ln1.forward(x)?)?)?;
        fx::add(&x, &self.down.forward(&gelu(&self.up.forward(&self.ln2.forward(&x)?)?)?)?)
    }
}

/// The language model: token and position embeddings, blocks, a final norm and a head.
#[derive(Module)]
struct CharLm {
    tokens: Embedding,
    positions: Embedding,
    blocks: Vec<Block>,
    norm: LayerNorm,
    head: Linear,
}

impl CharLm {
    fn new(vocab: usize, c: &Config) -> fx::Result<CharLm> {
        Ok(CharLm {
            tokens: Embedding::new(vocab, c.dims)?,
            positions: Embedding::new(c.context, c.dims)?,
            blocks: (0..c.layers).map(|_| Block::new(c.dims, c.heads)).collect::<fx::Result<_>>()?,
            norm: LayerNorm::new(c.dims, 1e-5, true, true)?,
            head: Linear::new(c.dims, vocab, true)?,
        })
    }

    /// Logits `[B, L, vocab]` for ids `[B, L]` (L at most the context).
    fn forward(&self, ids: &Array) -> fx::Result<Array> {
        let l = ids.shape()[1];
        let pos = fx::arange(0.0, l as f64, 1.0, Dtype::I32)?;
        let mut h = fx::add(&self.tokens.forward(ids)?, &self.positions.forward(&pos)?)?;
        for block in &self.blocks {
            h = block.forward(&h)?;
        }
        self.head.forward(&self.norm.forward(&h)?)
    }

    fn loss(&self, x: &Array, y: &Array) -> fx::Result<Array> {
        let opts = CrossEntropyOptions { reduction: Reduction::Mean, ..Default::default() };
        cross_entropy(&self.forward(x)?, y, &opts)
    }
}

/// One AdamW step on a batch; returns the (evaluated) loss.
fn train_step(model: &mut CharLm, opt: &mut AdamW, x: &Array, y: &Array) -> fx::Result<f32> {
    let (loss, grads) = ferrox_nn::value_and_grad(model, |m| m.loss(x, y))?;
    let mut params = model.trainable_parameters();
    opt.update(&mut params, &grads)?;
    model.update(&params)?;
    let state = opt.state();
    fx::eval(&params.values().chain(state.values()).chain([&loss]).collect::<Vec<_>>())?;
    loss.item::<f32>()
}

/// `n` bytes sampled after `prompt` at `temperature`.
fn sample(
    model: &CharLm,
    data: &Data,
    prompt: &[u8],
    n: usize,
    temperature: f32,
    context: usize,
) -> fx::Result<String> {
    let mut index = [0i32; 256];
    data.vocab.iter().enumerate().for_each(|(i, &b)| index[b as usize] = i as i32);
    let mut ids: Vec<i32> = prompt.iter().map(|&b| index[b as usize]).collect();
    for i in 0..n {
        let window = &ids[ids.len().saturating_sub(context)..];
        let logits = model.forward(&Array::from_slice(window, &[1, window.len()])?)?;
        let last = fx::slice(
            &logits,
            &[0, window.len() as isize - 1, 0],
            &[1, window.len() as isize, data.vocab.len() as isize],
            &[1; 3],
        )?;
        let k = fx::random::key(7 + i as u64);
        let next = fx::random::categorical(&fx::divide(&last, temperature)?, -1, None, Some(&k))?;
        ids.push(fx::astype(&next, Dtype::I32)?.to_vec::<i32>()?[0]);
    }
    let bytes: Vec<u8> = ids.iter().map(|&i| data.vocab[i as usize]).collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Where a training step's time goes: the forward pass (loss only), forward and backward
/// (loss and gradients), and the whole step with the AdamW update, each evaluated on its own,
/// in ms per step over `n` batches.
fn profile(model: &mut CharLm, data: &Data, c: &Config, n: usize) -> fx::Result<()> {
    let mut opt = AdamW::new(c.lr, AdamWConfig::default())?;
    let mut rng = SplitMix64(1);
    let batches: Vec<(Array, Array)> =
        (0..n).map(|_| data.batch(&mut rng, c.batch, c.context)).collect::<fx::Result<_>>()?;
    let mut ms = |f: &mut dyn FnMut(&mut CharLm, &Array, &Array) -> fx::Result<()>| -> fx::Result<f64> {
        let start = Instant::now();
        for (x, y) in &batches {
            f(model, x, y)?;
        }
        Ok(1e3 * start.elapsed().as_secs_f64() / n as f64)
    };
    let forward = ms(&mut |m, x, y| fx::eval(&[&m.loss(x, y)?]))?;
    let backward = ms(&mut |m, x, y| {
        let (loss, grads) = ferrox_nn::value_and_grad(m, |m| m.loss(x, y))?;
        fx::eval(&grads.values().chain([&loss]).collect::<Vec<_>>())
    })?;
    let step = ms(&mut |m, x, y| train_step(m, &mut opt, x, y).map(|_| ()))?;
    println!(
        "profile ferrox (ms/step): forward {forward:.1}, backward {:.1}, AdamW update {:.1}, step {step:.1}",
        backward - forward,
        step - backward
    );
    Ok(())
}

fn run(c: &Config) -> Result<(), String> {
    let text = read_corpus(&c.corpus)?;
    let data = Data::new(&text);
    if data.ids.len() <= c.context + 1 {
        return Err(format!("corpus of {} bytes is shorter than the context {}", data.ids.len(), c.context));
    }
    fx::random::seed(0);
    let mut model = CharLm::new(data.vocab.len(), c).map_err(|e| e.to_string())?;
    let mut opt = AdamW::new(c.lr, AdamWConfig::default()).map_err(|e| e.to_string())?;
    println!(
        "corpus {}: {} bytes, vocab {}; model {} layers × {} dims, {} heads, context {}: {} parameters; batch {}",
        c.corpus.display(),
        text.len(),
        data.vocab.len(),
        c.layers,
        c.dims,
        c.heads,
        c.context,
        model.num_parameters(),
        c.batch
    );
    let mut rng = SplitMix64(0);
    let tokens_per_step = (c.batch * c.context) as f64;
    let mut step = |model: &mut CharLm| -> fx::Result<f32> {
        let (x, y) = data.batch(&mut rng, c.batch, c.context)?;
        train_step(model, &mut opt, &x, &y)
    };
    let e = |e: fx::Error| e.to_string();
    if let Some(n) = c.bench {
        for _ in 0..3 {
            step(&mut model).map_err(e)?;
        }
        let start = Instant::now();
        let mut loss = 0.0;
        for _ in 0..n {
            loss = step(&mut model).map_err(e)?;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "bench ferrox: {n} steps in {secs:.2} s: {:.0} tokens/s ({:.1} ms/step, loss {loss:.3})",
            n as f64 * tokens_per_step / secs,
            1e3 * secs / n as f64
        );
        profile(&mut model, &data, c, n).map_err(e)?;
        return Ok(());
    }
    let (mut start, mut window_loss, mut window_steps) = (Instant::now(), 0.0, 0);
    for i in 1..=c.steps {
        window_loss += step(&mut model).map_err(e)?;
        window_steps += 1;
        if i % 50 == 0 || i == c.steps {
            let secs = start.elapsed().as_secs_f64();
            println!(
                "step {i:5}  loss {:.3}  {:.0} tokens/s",
                window_loss / window_steps as f32,
                window_steps as f64 * tokens_per_step / secs
            );
            (start, window_loss, window_steps) = (Instant::now(), 0.0, 0);
        }
    }
    let text = sample(&model, &data, b"\n", c.sample, c.temperature, c.context).map_err(e)?;
    println!("--- sample (temperature {}) ---{text}", c.temperature);
    Ok(())
}

fn main() {
    let result = Config::parse().and_then(|c| run(&c));
    if let Err(msg) = result {
        eprintln!("char_lm: {msg}");
        std::process::exit(1);
    }
}
