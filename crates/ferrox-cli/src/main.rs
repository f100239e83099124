//! The `ferrox` command-line tool.
//!
//! Until the LLM toolkit lands, the main job is `ferrox demo`: a short tour of the array API.

use clap::{Parser, Subcommand};
use ferrox::{self as fx, Array, Dtype};

#[derive(Parser)]
#[command(name = "ferrox", version, about = "MLX and mlx-lm, in Rust")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
        Command::Demo => demo(),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
