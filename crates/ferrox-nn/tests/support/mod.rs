//! Fixture loading and comparison shared by the layer tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use ferrox::{self as fx, Array};
use ferrox_nn::{Module, Params};

/// The arrays of `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> HashMap<String, Array> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    fx::load_safetensors(path).unwrap().0
}

/// `f[key]`, with a clear panic if absent.
pub fn get(f: &HashMap<String, Array>, key: &str) -> Array {
    f.get(key).unwrap_or_else(|| panic!("fixture has no {key}")).clone()
}

/// The entries under `prefix`, keyed by the rest of their names.
pub fn under(f: &HashMap<String, Array>, prefix: &str) -> Params {
    f.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|r| (r.to_string(), v.clone()))).collect()
}

/// Asserts `got` ≈ `want` elementwise: |got − want| ≤ tol · max(1, |want|).
pub fn assert_close(got: &Array, want: &Array, tol: f64, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let g = fx::astype(got, fx::Dtype::F64).unwrap().to_vec::<f64>().unwrap();
    let w = fx::astype(want, fx::Dtype::F64).unwrap().to_vec::<f64>().unwrap();
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!((a - b).abs() <= tol * b.abs().max(1.0), "{what}[{i}]: got {a}, want {b}");
    }
}

/// Loads case `c`'s parameters into `model` (strictly: the fixture's names must be exactly the
/// model's), then checks the forward output and the gradients of `sum(out · cot)` with respect
/// to the named float inputs and to every parameter.
pub fn check_case<M: Module>(
    f: &HashMap<String, Array>,
    c: &str,
    model: &mut M,
    inputs: &[&str],
    forward: impl Fn(&mut M, &[Array]) -> ferrox::Result<Array>,
    tol: f64,
) {
    let params = under(f, &format!("{c}.p."));
    model.load_params(params.clone(), true).unwrap_or_else(|e| panic!("{c}: {e}"));
    let xs: Vec<Array> = inputs.iter().map(|k| get(f, &format!("{c}.{k}"))).collect();
    let cot = get(f, &format!("{c}.cot"));
    let out = forward(model, &xs).unwrap();
    assert_close(&out, &get(f, &format!("{c}.out")), tol, &format!("{c} out"));

    // Parameter gradients through ferrox_nn::value_and_grad.
    let (loss, grads) =
        ferrox_nn::value_and_grad(model, |m| fx::sum(&fx::multiply(&forward(m, &xs)?, &cot)?, None, false)).unwrap();
    let want_loss = fx::sum(&fx::multiply(&out, &cot).unwrap(), None, false).unwrap();
    assert_close(&loss, &want_loss, tol, &format!("{c} loss"));
    let trainable = model.trainable_parameters();
    assert_eq!(grads.keys().collect::<Vec<_>>(), trainable.keys().collect::<Vec<_>>(), "{c}: gradient keys");
    for (k, g) in &grads {
        assert_close(g, &get(f, &format!("{c}.g.{k}")), tol, &format!("{c} d/d{k}"));
    }

    // Input gradients through fx::grad, with the parameters fixed.
    if !inputs.is_empty() {
        let argnums: Vec<usize> = (0..xs.len()).collect();
        let cell = std::cell::RefCell::new(&mut *model);
        let gx = fx::grad(
            |a| fx::sum(&fx::multiply(&forward(&mut cell.borrow_mut(), a)?, &cot)?, None, false),
            &xs,
            &argnums,
        )
        .unwrap();
        for (k, g) in inputs.iter().zip(&gx) {
            assert_close(g, &get(f, &format!("{c}.g{k}")), tol, &format!("{c} d/d{k}"));
        }
    }
}
