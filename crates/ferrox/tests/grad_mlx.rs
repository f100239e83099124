//! Losses and gradients of small models against MLX itself (tests/fixtures/grad_mlx.json,
//! made by scripts/make_grad_fixtures.py with `mx.value_and_grad`): an MLP with GELU or ReLU
//! and cross-entropy, single- and multi-head (grouped key/value) attention blocks with
//! normalization and a residual, cross-entropy through logsumexp / log_softmax, and a small
//! conv1d / conv2d network. Each model is rebuilt here from ferrox ops, run in float32 on the
//! same inputs, and differentiated as a parameter tree with `value_and_grad_tree`. Also causal
//! attention on the CPU with more queries than keys (L > S), whose first L − S query rows see
//! no key: its forward output and its vjp for q, k and v.

use std::collections::BTreeMap;
use std::f64::consts::SQRT_2;

use ferrox::fast::{self, SdpaMask};
use ferrox::{self as fx, Array, Device, Dtype, Result, Tree};
use serde_json::Value;

/// One case of the fixture: float inputs (differentiated), integer inputs, MLX's loss and
/// gradients.
struct Case {
    params: Tree,
    ints: BTreeMap<String, Array>,
    value: f64,
    grads: BTreeMap<String, (Vec<usize>, Vec<f64>)>,
}

fn shape(v: &Value) -> Vec<usize> {
    v["shape"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap() as usize).collect()
}

fn floats(v: &Value) -> (Vec<usize>, Vec<f64>) {
    (shape(v), v["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
}

/// Reads case `name` of the fixture (at run time, so regenerating it needs no rebuild).
fn load(name: &str) -> Case {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/grad_mlx.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let all: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not valid JSON: {e}"));
    let case = &all["cases"][name];
    assert!(case.is_object(), "no case {name:?} in {path}");
    let (mut params, mut ints) = (BTreeMap::new(), BTreeMap::new());
    for (k, v) in case["inputs"].as_object().unwrap() {
        if v.get("ints").is_some() {
            let data: Vec<i32> = v["ints"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap() as i32).collect();
            ints.insert(k.clone(), Array::from_slice(&data, &shape(v)).unwrap());
        } else {
            let (s, data) = floats(v);
            let a = fx::astype(&Array::from_slice(&data, &s).unwrap(), Dtype::F32).unwrap();
            params.insert(k.clone(), Tree::Leaf(a));
        }
    }
    let grads = case["grads"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), floats(v))).collect();
    Case { params: Tree::Dict(params), ints, value: case["value"].as_f64().unwrap(), grads }
}

/// Parameter `name` of a dictionary tree.
fn p(t: &Tree, name: &str) -> Array {
    match t {
        Tree::Dict(m) => match m.get(name) {
            Some(Tree::Leaf(a)) => a.clone(),
            _ => panic!("no parameter {name:?}"),
        },
        _ => panic!("parameters must be a dictionary"),
    }
}

/// Runs `f` on case `name` and compares the loss and every gradient with MLX's: within 1e-4
/// relative, measured against the larger of the element and a tenth of the gradient's
/// largest element (so elements that cancel to near zero are judged on the array's scale).
fn check(name: &str, f: impl Fn(&Tree, &BTreeMap<String, Array>) -> Result<Array>) {
    check_within(name, 1e-4, f)
}

/// [`check`] with the gradients' relative bound `tol`.
fn check_within(name: &str, tol: f64, f: impl Fn(&Tree, &BTreeMap<String, Array>) -> Result<Array>) {
    let case = load(name);
    let ((value, _), grads) = fx::value_and_grad_tree(|t| Ok((f(t, &case.ints)?, vec![])), &case.params).unwrap();
    assert_eq!(value.dtype(), Dtype::F32, "{name}: loss dtype");
    let v = value.item::<f32>().unwrap() as f64;
    assert!((v - case.value).abs() <= 1e-5 * case.value.abs(), "{name}: loss {v}, mlx {}", case.value);
    let got = grads.flatten();
    assert_eq!(got.len(), case.grads.len(), "{name}: number of gradients");
    for (k, g) in got {
        let (want_shape, want) = &case.grads[&k];
        assert_eq!(g.shape(), want_shape.as_slice(), "{name}: shape of d/d{k}");
        assert_eq!(g.dtype(), Dtype::F32, "{name}: dtype of d/d{k}");
        let g: Vec<f64> = fx::astype(&g, Dtype::F64).unwrap().to_vec().unwrap();
        let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs())) * 0.1;
        for (i, (a, b)) in g.iter().zip(want).enumerate() {
            assert!((a - b).abs() <= tol * b.abs().max(scale), "{name}: d/d{k}[{i}] = {a}, mlx {b}");
        }
    }
}

fn linear(x: &Array, w: &Array, b: &Array) -> Result<Array> {
    fx::add(&fx::matmul(x, w)?, b)
}

/// GELU with the exact (erf) Gaussian CDF, as `mlx.nn.gelu`.
fn gelu(x: &Array) -> Result<Array> {
    fx::divide(&fx::multiply(x, &fx::add(&fx::erf(&fx::divide(x, SQRT_2)?)?, 1.0)?)?, 2.0)
}

fn relu(x: &Array) -> Result<Array> {
    fx::maximum(x, 0.0)
}

/// Mean cross-entropy of `logits` [N, C] against class indices [N], as
/// `mlx.nn.losses.cross_entropy` (with the max subtracted first).
fn cross_entropy(logits: &Array, labels: &Array) -> Result<Array> {
    let logits = fx::subtract(logits, &fx::stop_gradient(&fx::max(logits, Some(&[-1]), true)?)?)?;
    let score = fx::squeeze(&fx::take_along_axis(&logits, &fx::expand_dims(labels, &[-1])?, Some(-1))?, Some(&[-1]))?;
    fx::mean(&fx::subtract(&fx::logsumexp(&logits, Some(&[-1]), false)?, &score)?, None, false)
}

fn mlp(t: &Tree, ints: &BTreeMap<String, Array>, act: fn(&Array) -> Result<Array>) -> Result<Array> {
    let h = act(&linear(&p(t, "x"), &p(t, "w1"), &p(t, "b1"))?)?;
    cross_entropy(&linear(&h, &p(t, "w2"), &p(t, "b2"))?, &ints["labels"])
}

#[test]
fn mlp_gelu() {
    check("mlp_gelu", |t, ints| mlp(t, ints, gelu));
}

#[test]
fn mlp_relu() {
    check("mlp_relu", |t, ints| mlp(t, ints, relu));
}

/// A pre-norm causal attention block, `x + attention(norm(x)) @ wo`, with `heads` query heads
/// sharing `kv_heads` key/value heads; the loss is `mean(y²)` (plus `mean(y · target)` if
/// the case has a target).
fn attention_block(t: &Tree, heads: usize, kv_heads: usize) -> Result<Array> {
    let x = p(t, "x");
    let (b, l, d) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    let dh = d / heads;
    let flat = t.flatten();
    let has = |k: &str| flat.iter().any(|(n, _)| n == k);
    let h = if has("norm_b") {
        fast::layer_norm(&x, Some(&p(t, "norm_w")), Some(&p(t, "norm_b")), 1e-5)?
    } else {
        fast::rms_norm(&x, Some(&p(t, "norm_w")), 1e-5)?
    };
    let split = |w: &str, n: usize| -> Result<Array> {
        let y = fx::reshape_usize(&fx::matmul(&h, &p(t, w))?, &[b, l, n, dh])?;
        fx::transpose(&y, &[0, 2, 1, 3])
    };
    let (q, k, v) = (split("wq", heads)?, split("wk", kv_heads)?, split("wv", kv_heads)?);
    let o = fast::scaled_dot_product_attention(&q, &k, &v, 1.0 / (dh as f32).sqrt(), SdpaMask::Causal)?;
    let o = fx::reshape_usize(&fx::transpose(&o, &[0, 2, 1, 3])?, &[b, l, heads * dh])?;
    let y = fx::add(&x, &fx::matmul(&o, &p(t, "wo"))?)?;
    let loss = fx::mean(&fx::square(&y)?, None, false)?;
    if has("target") {
        fx::add(&loss, &fx::mean(&fx::multiply(&y, p(t, "target"))?, None, false)?)
    } else {
        Ok(loss)
    }
}

#[test]
fn attention_single_head() {
    check("attention_1head", |t, _| attention_block(t, 1, 1));
}

#[test]
fn attention_multi_head() {
    check("attention_4head", |t, _| attention_block(t, 4, 2));
}

#[test]
fn cross_entropy_logsumexp_log_softmax() {
    check("cross_entropy", |t, ints| {
        let (logits, soft, labels) = (p(t, "logits"), p(t, "soft"), &ints["labels"]);
        let picked = fx::take_along_axis(&logits, &fx::expand_dims(labels, &[1])?, Some(-1))?;
        let hard = fx::subtract(&fx::logsumexp(&logits, Some(&[-1]), false)?, &fx::squeeze(&picked, Some(&[1]))?)?;
        let hard = fx::mean(&hard, None, false)?;
        let log_p = fx::subtract(&logits, &fx::logsumexp(&logits, Some(&[-1]), true)?)?;
        let probs = fx::softmax(&soft, Some(&[-1]), false)?;
        let soft_loss =
            fx::negative(&fx::mean(&fx::sum(&fx::multiply(&probs, &log_p)?, Some(&[-1]), false)?, None, false)?)?;
        let col = fx::sum(&fx::logsumexp(&fx::multiply(&logits, 0.5)?, Some(&[0]), false)?, None, false)?;
        fx::add(&fx::add(&hard, &soft_loss)?, &fx::multiply(&col, 0.1)?)
    });
}

#[test]
fn conv_network() {
    check("conv_net", |t, _| {
        let h = gelu(&fx::add(&fx::conv1d(&p(t, "x1"), &p(t, "c1_w"), 2, 1, 1, 1)?, p(t, "c1_b"))?)?;
        let h = fx::conv1d(&h, &p(t, "c2_w"), 1, 2, 2, 2)?;
        let f1 = fx::mean(&h, Some(&[1]), false)?;
        let g = fx::conv2d(&p(t, "x2"), &p(t, "d1_w"), (2, 1), (1, 1), (1, 1), 1)?;
        let g = relu(&fx::add(&g, p(t, "d1_b"))?)?;
        let g = fx::conv2d(&g, &p(t, "d2_w"), (1, 1), (0, 1), (1, 1), 3)?;
        let f2 = fx::mean(&g, Some(&[1, 2]), false)?;
        let y = linear(&fx::concatenate(&[f1, f2], -1)?, &p(t, "head_w"), &p(t, "head_b"))?;
        fx::mean(&fx::square(&fx::subtract(&y, p(t, "target"))?)?, None, false)
    });
}

/// Causal attention with more queries than keys (L > S) on the CPU: query i sees keys
/// j ≤ i + S − L, so the first L − S rows see none and, as in MLX, give the mean of all values
/// and pass no gradient to q or k. The loss is `sum(out · ct)`: the gradients of q, k and v
/// are attention's vjp for the cotangent `ct`, and the gradient of `ct` is the output itself.
fn causal_more_queries_than_keys(name: &str) {
    fx::with_device(Device::Cpu, || {
        check_within(name, 1e-5, |t, _| {
            let o = fast::scaled_dot_product_attention(&p(t, "q"), &p(t, "k"), &p(t, "v"), 0.5, SdpaMask::Causal)?;
            fx::sum(&fx::multiply(&o, p(t, "ct"))?, None, false)
        })
    })
    .unwrap();
}

#[test]
fn attention_causal_l4_s2() {
    causal_more_queries_than_keys("sdpa_causal_l4_s2");
}

#[test]
fn attention_causal_l7_s5_grouped_heads() {
    causal_more_queries_than_keys("sdpa_causal_l7_s5_gqa");
}

#[test]
fn attention_causal_l10_s3_blocked() {
    causal_more_queries_than_keys("sdpa_causal_l10_s3");
}
