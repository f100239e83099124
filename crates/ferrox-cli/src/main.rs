//! The `ferrox` command-line tool: mlx-lm's commands (`generate`, ...) over ferrox-lm, and
//! `ferrox demo`, a short tour of the array API.

mod bench;
mod cache_prompt;
mod chat;
mod common;
mod convert;
mod generate;

use clap::{Parser, Subcommand};
use ferrox::{self as fx, Array, Dtype};

/// mimalloc serves the many small allocations of building and evaluating each decode step's
/// graph faster than the system allocator (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "ferrox", version, about = "MLX and mlx-lm, in Rust")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt (mlx_lm.generate).
    Generate(generate::GenerateArgs),
    /// Chat interactively, keeping the conversation (mlx_lm.chat).
    Chat(chat::ChatArgs),
    /// Run a prompt once and save its KV cache for `generate --prompt-cache-file` (mlx_lm.cache_prompt).
    CachePrompt(cache_prompt::CachePromptArgs),
    /// Measure prompt and generation speed (mlx_lm.benchmark).
    Bench(bench::BenchArgs),
    /// Convert a model to MLX format, optionally quantized (mlx_lm.convert).
    Convert(convert::ConvertArgs),
    /// A short tour of the array API: lazy ops, evaluation, printing, memory.
    Demo,
}

fn demo() -> fx::Result<()> {
    let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    println!("a = {a}");
    let b = fx::matmul(&a, &a.t())?; // lazy: nothing computed yet
    println!("a @ a.T (evaluated = {}) ...", b.is_evaluated());
    fx::eval(&[&b])?;
    println!("  = {b}");
    println!("softmax(a) = {}", fx::softmax(&a, None, false)?);
    let x = fx::arange(0.0, 1.0, 0.25, Dtype::F32)?;
    println!("exp({x}) = {}", fx::exp(&x)?);
    println!("sum over axis 1 = {}", fx::sum(&a, Some(&[1]), false)?);
    let big = fx::ones(&[1024, 1024], Dtype::F32)?;
    let total = fx::sum(&fx::matmul(&big, &big)?, None, false)?;
    println!("sum(ones(1024,1024) @ ones(1024,1024)) = {}", total.item::<f64>()?);
    println!("memory: active {} B, peak {} B, cache {} B", fx::active_memory(), fx::peak_memory(), fx::cache_memory());
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => generate::run(args).map_err(|e| e.to_string()),
        Command::Chat(args) => chat::run(args).map_err(|e| e.to_string()),
        Command::CachePrompt(args) => cache_prompt::run(args).map_err(|e| e.to_string()),
        Command::Bench(args) => bench::run(args).map_err(|e| e.to_string()),
        Command::Convert(args) => convert::run(args).map_err(|e| e.to_string()),
        Command::Demo => demo().map_err(|e| e.to_string()),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
