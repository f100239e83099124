//! `ferrox convert`: a Hugging Face model (directory or hub id) → an MLX-format directory,
//! optionally quantized (uniformly or with a mixed recipe), cast, or dequantized
//! (mlx_lm.convert's flags).

use std::path::PathBuf;

use clap::Args;
use ferrox::QuantMode;
use ferrox_lm::config::parse_dtype;
use ferrox_lm::convert::{convert, ConvertOptions, Recipe};
use ferrox_lm::Result;
use indicatif::{ProgressBar, ProgressStyle};

/// Convert a model to MLX format, optionally quantizing it.
#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// The model to convert: a local directory or a Hugging Face hub id.
    #[arg(long = "hf-path", visible_alias = "model")]
    pub hf_path: String,
    /// The directory to write (must not exist).
    #[arg(long = "mlx-path", default_value = "mlx_model")]
    pub mlx_path: PathBuf,
    /// Quantize the linear layers and embeddings.
    #[arg(short = 'q', long)]
    pub quantize: bool,
    /// Group size for quantization (default: the mode's, 64 for affine).
    #[arg(long)]
    pub q_group_size: Option<usize>,
    /// Bits per weight for quantization (default: the mode's, 4 for affine).
    #[arg(long)]
    pub q_bits: Option<usize>,
    /// The quantization mode: affine, mxfp4, nvfp4 or mxfp8.
    #[arg(long)]
    pub q_mode: Option<String>,
    /// A mixed-precision recipe: mixed_2_6, mixed_3_4, mixed_3_6 or mixed_4_6.
    #[arg(long)]
    pub quant_predicate: Option<String>,
    /// The dtype of the floating-point parameters: float16, bfloat16 or float32 (default:
    /// config.json's).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Dequantize a quantized model.
    #[arg(short = 'd', long)]
    pub dequantize: bool,
}

pub fn run(args: ConvertArgs) -> Result<()> {
    let opts = ConvertOptions {
        quantize: args.quantize,
        group_size: args.q_group_size,
        bits: args.q_bits,
        mode: args.q_mode.as_deref().map(QuantMode::parse).transpose()?,
        recipe: args.quant_predicate.as_deref().map(Recipe::parse).transpose()?,
        dtype: args.dtype.as_deref().map(parse_dtype).transpose()?,
        dequantize: args.dequantize,
        max_shard_bytes: None,
    };
    eprintln!("[INFO] Loading {}", args.hf_path);
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {bytes}/{total_bytes} ({eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message("Writing");
    let report = convert(&args.hf_path, &args.mlx_path, &opts, &mut |done, total, _| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish();
    if report.quantized_layers > 0 {
        eprintln!("[INFO] Quantized {} layers: {:.3} bits per weight", report.quantized_layers, report.bits_per_weight);
    }
    eprintln!("[INFO] Wrote {} file(s) to {}", report.shards.len(), args.mlx_path.display());
    Ok(())
}
