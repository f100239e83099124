//! Helpers shared by the ferrox-nn integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use ferrox::{self as fx, Array};

/// The arrays of `tests/fixtures/<name>` (made by scripts/make_optim_fixtures.py).
pub fn fixture(name: &str) -> HashMap<String, Array> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    fx::load_safetensors(&path).unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display())).0
}

/// `fixture[key]`, with a clear panic if it is missing.
pub fn get(f: &HashMap<String, Array>, key: &str) -> Array {
    f.get(key).unwrap_or_else(|| panic!("fixture has no {key:?}")).clone()
}

/// Asserts equal shapes and `|a - b| <= atol + rtol |b|` elementwise.
pub fn assert_close(what: &str, got: &Array, want: &Array, rtol: f32, atol: f32) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let g = fx::astype(got, fx::Dtype::F32).unwrap().to_vec::<f32>().unwrap();
    let w = fx::astype(want, fx::Dtype::F32).unwrap().to_vec::<f32>().unwrap();
    for (i, (x, y)) in g.iter().zip(&w).enumerate() {
        assert!((x - y).abs() <= atol + rtol * y.abs(), "{what}[{i}]: got {x}, want {y}\n got {g:?}\nwant {w:?}");
    }
}
