//! Writes safetensors, npy and npz files for scripts/check_io_interop.py, which reads them with
//! the `safetensors` Python package and NumPy and checks every value.
//!
//! ```text
//! cargo run -p ferrox --example io_interop -- /tmp/ferrox-interop
//! python3 scripts/check_io_interop.py /tmp/ferrox-interop
//! ```
//!
//! The values follow simple formulas the script recomputes (for i = 0..12, shape [3, 4]):
//! unsigned `3i`, signed `3i - 10`, float `0.75i - 4`, bool `i % 3 == 0`; plus `t`, the
//! transpose of `0.25i` (float32, so a non-contiguous array), a float64 scalar `-1.5` and an
//! empty int32 array of shape [0, 5].

use std::collections::HashMap;
use std::path::PathBuf;

use ferrox::{self as fx, Array, Dtype};

fn arrays() -> fx::Result<Vec<(String, Array)>> {
    let mut out = Vec::new();
    for d in Dtype::ALL {
        let values: Vec<f64> = (0..12)
            .map(|i| {
                let i = i as f64;
                match d {
                    Dtype::Bool => (i as i64 % 3 == 0) as i64 as f64,
                    Dtype::U8 | Dtype::U16 | Dtype::U32 | Dtype::U64 => 3.0 * i,
                    Dtype::I8 | Dtype::I16 | Dtype::I32 | Dtype::I64 => 3.0 * i - 10.0,
                    _ => 0.75 * i - 4.0,
                }
            })
            .collect();
        let x = fx::astype(&Array::from_slice(&values, &[3, 4])?, d)?;
        out.push((format!("x_{}", d.name()), x));
    }
    let base = fx::reshape(&fx::arange(0.0, 12.0, 1.0, Dtype::F32)?, &[3, 4])?;
    out.push(("t".to_string(), fx::multiply(&base, 0.25)?.t()));
    out.push(("scalar".to_string(), Array::scalar(-1.5f64)));
    out.push(("empty".to_string(), fx::zeros(&[0, 5], Dtype::I32)?));
    Ok(out)
}

fn main() -> fx::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "ferrox-interop".into()));
    std::fs::create_dir_all(&dir)?;
    let all = arrays()?;
    let no_bf16: Vec<&(String, Array)> = all.iter().filter(|(_, a)| a.dtype() != Dtype::Bf16).collect();
    let meta: HashMap<String, String> =
        [("format".to_string(), "mlx".to_string()), ("author".to_string(), "ferrox \u{2713}".to_string())].into();

    fx::save_safetensors(dir.join("ferrox.safetensors"), all.iter().map(|(k, v)| (k, v)), Some(&meta))?;
    fx::save_safetensors(dir.join("ferrox_nobf16.safetensors"), no_bf16.iter().map(|(k, v)| (k, v)), Some(&meta))?;
    fx::save_npz(dir.join("ferrox.npz"), no_bf16.iter().map(|(k, v)| (k, v)), true)?;
    fx::save_npz(dir.join("ferrox_stored.npz"), no_bf16.iter().map(|(k, v)| (k, v)), false)?;
    for (name, a) in &no_bf16 {
        fx::save_npy(dir.join(format!("{name}.npy")), a)?;
    }
    println!("wrote {} arrays to {}", all.len(), dir.display());
    Ok(())
}
