//! `ferrox bench`: prompt and generation speed over trials (mlx_lm.benchmark's flags).

use clap::Args;
use ferrox::{self as fx};
use ferrox_lm::generate::{stream_generate, GenerateOptions};
use ferrox_lm::{batch_generate, Error, Result};

use crate::common::{load_model, ModelArgs};

/// Measure prompt and generation speed.
///
/// With FERROX_PROFILE=1 in the environment, also prints the time each kind of op took over the
/// timed trials (prompt and generation together; use a short -p to see the decode step).
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt length in tokens (random ids).
    #[arg(short = 'p', long = "prompt-tokens", default_value_t = 512)]
    pub prompt_tokens: usize,
    /// Tokens to generate.
    #[arg(short = 'g', long = "generation-tokens", default_value_t = 1024)]
    pub generation_tokens: usize,
    /// Batch size: this many prompts generated together (batch_generate) when above 1.
    #[arg(short = 'b', long = "batch-size", default_value_t = 1)]
    pub batch_size: usize,
    /// Number of timed trials (after one warm-up).
    #[arg(short = 'n', long = "num-trials", default_value_t = 5)]
    pub num_trials: usize,
    /// Tokens per forward pass while processing the prompt.
    #[arg(long, default_value_t = 2048)]
    pub prefill_step_size: usize,
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.prompt_tokens == 0 || args.generation_tokens == 0 || args.batch_size == 0 {
        return Err(Error::Invalid("bench: -p, -g and -b must be at least 1".into()));
    }
    let mut loaded = load_model(&args.model)?;
    loaded.tokenizer.eos_token_ids.clear(); // always generate -g tokens
    let vocab = loaded.tokenizer.vocab_size().max(1) as u64;
    // A fixed pseudo-random prompt (any ids work for timing).
    let mut x = 0x2545F4914F6CDD1Du64;
    let mut random_prompt = || -> Vec<u32> {
        (0..args.prompt_tokens)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % vocab) as u32
            })
            .collect()
    };
    let prompts: Vec<Vec<u32>> = (0..args.batch_size).map(|_| random_prompt()).collect();
    let prompt = &prompts[0];
    let trial = || -> Result<(f64, f64, f64)> {
        fx::reset_peak_memory();
        let options = GenerateOptions {
            max_tokens: args.generation_tokens,
            prefill_step_size: args.prefill_step_size,
            ..Default::default()
        };
        if args.batch_size > 1 {
            let r = batch_generate(loaded.model.as_ref(), &loaded.tokenizer, &prompts, &options)?;
            return Ok((r.stats.prompt_tps, r.stats.generation_tps, r.stats.peak_memory));
        }
        let mut last = None;
        for r in stream_generate(loaded.model.as_ref(), &loaded.tokenizer, prompt, options)? {
            last = Some(r?);
        }
        let r = last.ok_or_else(|| Error::Invalid("bench: nothing generated".into()))?;
        Ok((r.prompt_tps, r.generation_tps, r.peak_memory))
    };
    trial()?; // warm-up
    fx::profile::report(true); // time only the trials
    let mut sums = (0.0, 0.0, 0.0);
    for i in 0..args.num_trials {
        let (p, g, m) = trial()?;
        println!("Trial {}:  prompt_tps={p:.3}, generation_tps={g:.3}, peak_memory={m:.3}", i + 1);
        sums = (sums.0 + p, sums.1 + g, sums.2 + m);
    }
    let n = args.num_trials.max(1) as f64;
    println!("Averages: prompt_tps={:.3}, generation_tps={:.3}, peak_memory={:.3}", sums.0 / n, sums.1 / n, sums.2 / n);
    if fx::profile::enabled() {
        eprint!("{}", fx::profile::format_report(&fx::profile::report(true)));
    }
    Ok(())
}
