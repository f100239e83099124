//! gather_mm against real mlx and a NumPy float64 reference (scripts/make_gather_mm_fixtures.py):
//! general lhs/rhs gathers, the mixture-of-experts call, sorted indices, bfloat16, gradients;
//! plus forward mode, vmap and the errors for bad arguments.

use std::collections::HashMap;
use std::sync::OnceLock;

use ferrox::{self as fx, Array, Dtype};

fn fixtures() -> &'static HashMap<String, Array> {
    static F: OnceLock<HashMap<String, Array>> = OnceLock::new();
    F.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gather_mm.safetensors");
        fx::load_safetensors(path).unwrap().0
    })
}

fn get(key: &str) -> Array {
    fixtures().get(key).unwrap_or_else(|| panic!("fixture {key} missing")).clone()
}

fn f32s(a: &Array) -> Vec<f32> {
    fx::astype(a, Dtype::F32).unwrap().to_vec::<f32>().unwrap()
}

/// Asserts `got` within `tol · max|want|` of `want`, elementwise.
fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * scale, "{what}[{i}]: got {g}, want {w} (scale {scale})");
    }
}

fn run_case(case: &str, sorted: bool) -> Array {
    let lhs = fixtures().get(&format!("{case}/lhs")).cloned();
    let rhs = get(&format!("{case}/rhs"));
    fx::gather_mm(&get(&format!("{case}/a")), &get(&format!("{case}/b")), lhs.as_ref(), Some(&rhs), sorted).unwrap()
}

#[test]
fn matches_mlx_and_numpy() {
    for (case, sorted, tol) in
        [("general", false, 1e-5), ("moe", false, 1e-5), ("sorted", true, 1e-5), ("moe_bf16", false, 1e-2)]
    {
        let out = run_case(case, sorted);
        let want = get(&format!("{case}/out"));
        assert_eq!(out.shape(), want.shape(), "{case}: shape");
        assert_close(&f32s(&out), &f32s(&want), tol, &format!("{case} vs mlx"));
        assert_close(&f32s(&out), &f32s(&get(&format!("{case}/out_np"))), tol, &format!("{case} vs numpy"));
    }
    assert_eq!(run_case("moe_bf16", false).dtype(), Dtype::Bf16);
}

#[test]
fn gradients_match_mlx() {
    let (a, b) = (get("general/a"), get("general/b"));
    let (lhs, rhs) = (get("general/lhs"), get("general/rhs"));
    let f = |p: &[Array]| -> fx::Result<Vec<Array>> {
        Ok(vec![fx::gather_mm(&p[0], &p[1], Some(&lhs), Some(&rhs), false)?])
    };
    let (_, grads) = fx::vjp(f, &[a, b], &[get("grad/cot")]).unwrap();
    assert_close(&f32s(&grads[0]), &f32s(&get("grad/ga")), 1e-5, "ga");
    assert_close(&f32s(&grads[1]), &f32s(&get("grad/gb")), 1e-5, "gb");
}

#[test]
fn forward_mode_is_the_sum_of_both_products() {
    let (a, b) = (get("general/a"), get("general/b"));
    let (lhs, rhs) = (get("general/lhs"), get("general/rhs"));
    let (ta, tb) = (fx::multiply(&a, 0.5).unwrap(), fx::negative(&b).unwrap());
    let f = |p: &[Array]| -> fx::Result<Vec<Array>> {
        Ok(vec![fx::gather_mm(&p[0], &p[1], Some(&lhs), Some(&rhs), false)?])
    };
    let (_, t) = fx::jvp(f, &[a.clone(), b.clone()], &[ta.clone(), tb.clone()]).unwrap();
    let want = fx::add(
        fx::gather_mm(&ta, &b, Some(&lhs), Some(&rhs), false).unwrap(),
        fx::gather_mm(&a, &tb, Some(&lhs), Some(&rhs), false).unwrap(),
    )
    .unwrap();
    // Bilinear: the tangent is 0.5·out (from a) − out (from b) = −0.5·out.
    assert_close(&f32s(&t[0]), &f32s(&want), 1e-6, "jvp");
    let scaled: Vec<f32> = f32s(&get("general/out_np")).iter().map(|v| -0.5 * v).collect();
    assert_close(&f32s(&t[0]), &scaled, 1e-5, "jvp vs numpy");
}

#[test]
fn vmap_over_examples_equals_a_loop() {
    // Two examples of the MoE call, batched over the token activations and the experts.
    let x = get("moe/a");
    let w = get("moe/b");
    let rhs = get("moe/rhs");
    let xs = fx::stack(&[x.clone(), fx::multiply(&x, 2.0).unwrap()], 0).unwrap();
    let ws = fx::stack(&[w.clone(), fx::negative(&w).unwrap()], 0).unwrap();
    let f = |p: &[Array]| -> fx::Result<Vec<Array>> { Ok(vec![fx::gather_mm(&p[0], &p[1], None, Some(&rhs), false)?]) };
    let out = fx::vmap(f, &[Some(0), Some(0)], &[Some(0)])(&[xs, ws]).unwrap();
    let base = f32s(&get("moe/out_np"));
    let want: Vec<f32> = base.iter().map(|v| 2.0 * v).collect::<Vec<_>>();
    let got = f32s(&out[0]);
    let n = base.len();
    assert_close(&got[..n], &base, 1e-5, "example 0");
    let neg: Vec<f32> = want.iter().map(|v| -v).collect();
    assert_close(&got[n..], &neg, 1e-5, "example 1");
}

#[test]
fn bad_arguments_are_errors() {
    let a = fx::zeros(&[2, 3, 4], Dtype::F32).unwrap();
    let b = fx::zeros(&[3, 5, 6], Dtype::F32).unwrap();
    let idx = Array::from_slice(&[0u32, 1], &[2]).unwrap();
    let e = fx::gather_mm(&a, &b, Some(&idx), Some(&idx), false).unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");
    let b = fx::zeros(&[3, 4, 6], Dtype::F32).unwrap();
    let far = Array::from_slice(&[0u32, 7], &[2]).unwrap();
    let e = fx::gather_mm(&a, &b, Some(&idx), Some(&far), false).and_then(|o| o.eval().map(|_| o)).unwrap_err();
    assert!(e.to_string().contains("out of range"), "{e}");
    let fidx = fx::zeros(&[2], Dtype::F32).unwrap();
    assert!(fx::gather_mm(&a, &b, Some(&fidx), None, false).is_err());
}
