//! Convolutions against NumPy float64 references (scripts/make_conv_fixtures.py, cross-checked
//! there against MLX), in every float dtype and on contiguous and transposed (non-contiguous)
//! inputs; plus the errors for inputs that do not fit together.

use ferrox::{self as fx, Array, Dtype};
use serde_json::Value;

const FIXTURE: &str = include_str!("fixtures/conv_numpy.json");

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

fn isizes(v: &Value) -> Vec<isize> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap() as isize).collect()
}

fn pair(v: &[usize]) -> (usize, usize) {
    (v[0], v[1])
}

fn triple(v: &[usize]) -> (usize, usize, usize) {
    (v[0], v[1], v[2])
}

/// An input's values (row-major) and shape, from `data` or the `gen` formula.
fn values(t: &Value) -> (Vec<f64>, Vec<usize>) {
    let shape = usizes(&t["shape"]);
    let n: usize = shape.iter().product();
    let data: Vec<f64> = if let Some(d) = t.get("data") {
        d.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
    } else {
        let g = usizes(&t["gen"]);
        let (mul, modulo) = (g[0] as i64, g[1] as i64);
        (0..n as i64).map(|i| (((i * mul) % modulo) - modulo / 2) as f64 / 32.0).collect()
    };
    assert_eq!(data.len(), n);
    (data, shape)
}

/// The array in `dtype`: row-major, or (`transposed`) stored channels-first and viewed
/// channels-last through a transpose, so that no axis has unit stride where the kernel
/// expects it.
fn build(data: &[f64], shape: &[usize], dtype: Dtype, transposed: bool) -> Array {
    if !transposed {
        return fx::astype(&Array::from_slice(data, shape).unwrap(), dtype).unwrap();
    }
    let nd = shape.len();
    // Stored shape [shape[0], shape[nd-1], shape[1..nd-1]...].
    let mut perm: Vec<usize> = vec![0, nd - 1];
    perm.extend(1..nd - 1);
    let stored: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let base = fx::transpose(&Array::from_slice(data, shape).unwrap(), &perm).unwrap();
    let base = Array::from_slice(&base.to_vec::<f64>().unwrap(), &stored).unwrap();
    // Inverse permutation views it as `shape` again.
    let mut inv = vec![0; nd];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    let view = fx::transpose(&fx::astype(&base, dtype).unwrap(), &inv).unwrap();
    assert_eq!(view.shape(), shape);
    view
}

fn run_case(case: &Value, x: &Array, w: &Array) -> fx::Result<Array> {
    let a = &case["args"];
    let g = a["groups"].as_u64().unwrap() as usize;
    let u = |k: &str| usizes(&a[k]);
    match case["op"].as_str().unwrap() {
        "conv1d" => fx::conv1d(x, w, u("stride")[0], u("padding")[0], u("dilation")[0], g),
        "conv2d" => fx::conv2d(x, w, pair(&u("stride")), pair(&u("padding")), pair(&u("dilation")), g),
        "conv3d" => fx::conv3d(x, w, triple(&u("stride")), triple(&u("padding")), triple(&u("dilation")), g),
        "conv_transpose1d" => {
            fx::conv_transpose1d(x, w, u("stride")[0], u("padding")[0], u("dilation")[0], u("output_padding")[0], g)
        }
        "conv_transpose2d" => fx::conv_transpose2d(
            x,
            w,
            pair(&u("stride")),
            pair(&u("padding")),
            pair(&u("dilation")),
            pair(&u("output_padding")),
            g,
        ),
        "conv_transpose3d" => fx::conv_transpose3d(
            x,
            w,
            triple(&u("stride")),
            triple(&u("padding")),
            triple(&u("dilation")),
            triple(&u("output_padding")),
            g,
        ),
        "conv_general" => fx::conv_general(
            x,
            w,
            &u("stride"),
            &isizes(&a["padding_lo"]),
            &isizes(&a["padding_hi"]),
            &u("kernel_dilation"),
            &u("input_dilation"),
            g,
            a["flip"].as_bool().unwrap(),
        ),
        op => panic!("unknown op {op}"),
    }
}

#[test]
fn conv_matches_numpy() {
    let fixture: Value = serde_json::from_str(FIXTURE).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let (xd, xs) = values(&case["x"]);
        let (wd, ws) = values(&case["w"]);
        let out_shape = usizes(&case["out"]["shape"]);
        let expected: Vec<(usize, f64)> = if let Some(d) = case["out"].get("data") {
            d.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).enumerate().collect()
        } else {
            case["out"]["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| (s[0].as_u64().unwrap() as usize, s[1].as_f64().unwrap()))
                .collect()
        };
        let scale = expected.iter().fold(0f64, |m, &(_, v)| m.max(v.abs())).max(1e-30);
        for (dtype, tol) in [(Dtype::F32, 1e-5), (Dtype::F64, 1e-12), (Dtype::Bf16, 1e-2), (Dtype::F16, 1e-2)] {
            for transposed in [false, true] {
                let x = build(&xd, &xs, dtype, transposed);
                let w = build(&wd, &ws, dtype, transposed);
                let label = format!("{name} {dtype:?} transposed={transposed}");
                let y = match run_case(case, &x, &w) {
                    Ok(y) => y,
                    Err(e) => {
                        failures.push(format!("{label}: error {e}"));
                        continue;
                    }
                };
                assert_eq!(y.dtype(), dtype, "{label}");
                if y.shape() != out_shape.as_slice() {
                    failures.push(format!("{label}: shape {:?}, expected {out_shape:?}", y.shape()));
                    continue;
                }
                let got = y.to_vec::<f64>().unwrap();
                let err = expected.iter().fold(0f64, |m, &(i, v)| m.max((got[i] - v).abs())) / scale;
                if err.is_nan() || err > tol {
                    failures.push(format!("{label}: relative error {err:.3e} > {tol:e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn conv_strided_slice_input() {
    // A spatially strided view (every other column) equals the same values made contiguous.
    let x = fx::astype(&fx::arange(0.0, 2.0 * 6.0 * 10.0 * 3.0, 1.0, Dtype::F32).unwrap(), Dtype::F32).unwrap();
    let x = fx::reshape(&fx::divide(&x, 100.0).unwrap(), &[2, 6, 10, 3]).unwrap();
    let view = fx::slice(&x, &[0, 0, 0, 0], &[2, 6, 10, 3], &[1, 1, 2, 1]).unwrap();
    let dense = fx::contiguous(&view).unwrap();
    let w = fx::reshape(&fx::arange(-6.0, 6.0, 0.5, Dtype::F32).unwrap(), &[2, 2, 2, 3]).unwrap();
    for groups in [1, 3] {
        let w = if groups == 1 { w.clone() } else { fx::reshape(&w, &[6, 2, 2, 1]).unwrap() };
        let a = fx::conv2d(&view, &w, (1, 2), (1, 0), (1, 1), groups).unwrap();
        let b = fx::conv2d(&dense, &w, (1, 2), (1, 0), (1, 1), groups).unwrap();
        assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    }
}

#[test]
fn conv_promotes_dtypes() {
    let x = fx::ones(&[1, 4, 2], Dtype::F16).unwrap();
    let w = fx::ones(&[3, 2, 2], Dtype::F32).unwrap();
    let y = fx::conv1d(&x, &w, 1, 0, 1, 1).unwrap();
    assert_eq!(y.dtype(), Dtype::F32);
    assert_eq!(y.shape(), &[1, 3, 3]);
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![4.0; 9]);
    // A weight of integers promotes with a float input, as in MLX.
    let wi = fx::ones(&[3, 2, 2], Dtype::I32).unwrap();
    assert_eq!(fx::conv1d(&x, &wi, 1, 0, 1, 1).unwrap().dtype(), Dtype::F16);
}

#[test]
fn conv_empty_batch_and_channels() {
    let x = fx::zeros(&[0, 5, 2], Dtype::F32).unwrap();
    let w = fx::ones(&[3, 2, 2], Dtype::F32).unwrap();
    let y = fx::conv1d(&x, &w, 1, 0, 1, 1).unwrap();
    assert_eq!(y.shape(), &[0, 4, 3]);
    assert!(y.to_vec::<f32>().unwrap().is_empty());
    let x = fx::ones(&[1, 5, 0], Dtype::F32).unwrap();
    let w = fx::ones(&[3, 2, 0], Dtype::F32).unwrap();
    assert_eq!(fx::conv1d(&x, &w, 1, 0, 1, 1).unwrap().to_vec::<f32>().unwrap(), vec![0.0; 12]);
}

fn err_text(r: fx::Result<Array>) -> String {
    match r {
        Ok(a) => panic!("expected an error, got an array of shape {:?}", a.shape()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn conv_errors() {
    let f = |s: &[usize]| fx::ones(s, Dtype::F32).unwrap();
    // Channel mismatch.
    let e = err_text(fx::conv2d(&f(&[1, 5, 5, 3]), &f(&[4, 3, 3, 2]), (1, 1), (0, 0), (1, 1), 1));
    assert!(e.contains("[conv2d]") && e.contains("[1, 5, 5, 3]") && e.contains("[4, 3, 3, 2]"), "{e}");
    // Groups not dividing the input channels, or the output channels.
    let e = err_text(fx::conv1d(&f(&[1, 8, 6]), &f(&[4, 3, 1]), 1, 0, 1, 4));
    assert!(e.contains("[conv1d]") && e.contains("4 groups do not divide the 6 input channels"), "{e}");
    let e = err_text(fx::conv1d(&f(&[1, 8, 6]), &f(&[4, 3, 2]), 1, 0, 1, 3));
    assert!(e.contains("3 groups do not divide the 4 output channels"), "{e}");
    let e = err_text(fx::conv1d(&f(&[1, 8, 6]), &f(&[4, 3, 2]), 1, 0, 1, 0));
    assert!(e.contains("groups must be at least 1"), "{e}");
    // Wrong ranks.
    let e = err_text(fx::conv1d(&f(&[1, 8, 8, 6]), &f(&[4, 3, 6]), 1, 0, 1, 1));
    assert!(e.contains("[conv1d]") && e.contains("[N, L, C_in]"), "{e}");
    let e = err_text(fx::conv2d(&f(&[1, 8, 8, 6]), &f(&[4, 3, 6]), (1, 1), (0, 0), (1, 1), 1));
    assert!(e.contains("[C_out, KH, KW, C_in]"), "{e}");
    let e = err_text(fx::conv_general(&f(&[8, 6]), &f(&[4, 6]), &[], &[], &[], &[], &[], 1, false));
    assert!(e.contains("at least 3 dimensions"), "{e}");
    // Kernel longer than the padded input.
    let e = err_text(fx::conv1d(&f(&[1, 4, 2]), &f(&[1, 3, 2]), 1, 0, 2, 1));
    assert!(e.contains("shorter than the dilated kernel"), "{e}");
    // Zero stride / dilation, parameter lists of the wrong length.
    let e = err_text(fx::conv1d(&f(&[1, 4, 2]), &f(&[1, 3, 2]), 0, 0, 1, 1));
    assert!(e.contains("stride must be at least 1"), "{e}");
    let e = err_text(fx::conv_transpose1d(&f(&[1, 4, 2]), &f(&[1, 3, 2]), 1, 0, 0, 0, 1));
    assert!(e.contains("[conv_transpose1d]") && e.contains("dilation"), "{e}");
    let e = err_text(fx::conv_general(&f(&[1, 4, 4, 2]), &f(&[1, 3, 3, 2]), &[1, 1, 1], &[], &[], &[], &[], 1, false));
    assert!(e.contains("stride [1, 1, 1] needs 1 or 2 values"), "{e}");
    // Integer input.
    let xi = fx::ones(&[1, 4, 2], Dtype::I32).unwrap();
    let e = err_text(fx::conv1d(&xi, &f(&[1, 3, 2]), 1, 0, 1, 1));
    assert!(e.contains("floating-point"), "{e}");
    // Empty kernel axis.
    let e = err_text(fx::conv1d(&f(&[1, 4, 2]), &f(&[1, 0, 2]), 1, 0, 1, 1));
    assert!(e.contains("empty kernel axis"), "{e}");
}
