//! Every loss, value and gradient, against real mlx.nn.losses (fixtures from
//! scripts/make_optim_fixtures.py).

mod common;

use common::{assert_close, fixture, get};
use ferrox::{self as fx, Array, Result};
use ferrox_nn::losses::*;

type LossFn = fn(&[Array]) -> Result<Array>;

fn ce(opts: CrossEntropyOptions) -> impl Fn(&Array, &Array) -> Result<Array> {
    move |x, t| cross_entropy(x, t, &opts)
}

/// The calls of CASES in the fixture script.
const CASES: &[(&str, LossFn)] = &[
    ("ce_idx", |a| cross_entropy(&a[0], &a[1], &Default::default())),
    ("ce_idx_smooth_mean", |a| {
        ce(CrossEntropyOptions { label_smoothing: 0.1, reduction: Reduction::Mean, ..Default::default() })(&a[0], &a[1])
    }),
    ("ce_probs_sum", |a| ce(CrossEntropyOptions { reduction: Reduction::Sum, ..Default::default() })(&a[0], &a[1])),
    ("ce_axis0_weights", |a| {
        let opts = CrossEntropyOptions {
            weights: Some(a[2].clone()),
            axis: 0,
            reduction: Reduction::Mean,
            ..Default::default()
        };
        cross_entropy(&a[0], &a[1], &opts)
    }),
    ("ce_3d_smooth", |a| ce(CrossEntropyOptions { label_smoothing: 0.2, ..Default::default() })(&a[0], &a[1])),
    ("bce_logits", |a| binary_cross_entropy(&a[0], &a[1], &Default::default())),
    ("bce_logits_weights", |a| {
        let opts =
            BinaryCrossEntropyOptions { weights: Some(a[2].clone()), reduction: Reduction::None, ..Default::default() };
        binary_cross_entropy(&a[0], &a[1], &opts)
    }),
    ("bce_probs", |a| {
        let opts = BinaryCrossEntropyOptions { with_logits: false, reduction: Reduction::Sum, ..Default::default() };
        binary_cross_entropy(&a[0], &a[1], &opts)
    }),
    ("nll_mean", |a| nll_loss(&a[0], &a[1], -1, Reduction::Mean)),
    ("nll_axis0", |a| nll_loss(&a[0], &a[1], 0, Reduction::None)),
    ("mse_mean", |a| mse_loss(&a[0], &a[1], Reduction::Mean)),
    ("l1_sum", |a| l1_loss(&a[0], &a[1], Reduction::Sum)),
    ("smooth_l1", |a| smooth_l1_loss(&a[0], &a[1], 0.5, Reduction::Mean)),
    ("huber", |a| huber_loss(&a[0], &a[1], 0.7, Reduction::None)),
    ("kl_div", |a| kl_div_loss(&a[0], &a[1], -1, Reduction::None)),
    ("kl_div_axis0_sum", |a| kl_div_loss(&a[0], &a[1], 0, Reduction::Sum)),
    ("cosine", |a| cosine_similarity_loss(&a[0], &a[1], 1, 1e-8, Reduction::None)),
    ("cosine_last_mean", |a| cosine_similarity_loss(&a[0], &a[1], -1, 1e-8, Reduction::Mean)),
    ("hinge", |a| hinge_loss(&a[0], &a[1], Reduction::None)),
    ("log_cosh_mean", |a| log_cosh_loss(&a[0], &a[1], Reduction::Mean)),
    ("margin_ranking", |a| margin_ranking_loss(&a[0], &a[1], &a[2], 0.3, Reduction::None)),
    ("gaussian_nll", |a| gaussian_nll_loss(&a[0], &a[1], &a[2], &Default::default())),
    ("gaussian_nll_full_sum", |a| {
        let opts = GaussianNllOptions { full: true, reduction: Reduction::Sum, ..Default::default() };
        gaussian_nll_loss(&a[0], &a[1], &a[2], &opts)
    }),
    ("triplet", |a| triplet_loss(&a[0], &a[1], &a[2], &Default::default())),
    ("triplet_p1_axis0_mean", |a| {
        let opts = TripletOptions { axis: 0, p: 1, margin: 0.5, reduction: Reduction::Mean, ..Default::default() };
        triplet_loss(&a[0], &a[1], &a[2], &opts)
    }),
];

#[test]
fn losses_and_gradients_match_mlx() {
    let f = fixture("losses.safetensors");
    for &(name, loss) in CASES {
        let inputs: Vec<Array> = (0..).map_while(|i| f.get(&format!("{name}.in.{i}")).cloned()).collect();
        assert!(!inputs.is_empty(), "{name}: no inputs in the fixture");
        let want = get(&f, &format!("{name}.out"));
        assert_close(&format!("{name} value"), &loss(&inputs).unwrap(), &want, 1e-5, 1e-6);

        let diff: Vec<usize> = (0..inputs.len()).filter(|i| inputs[*i].dtype().is_float()).collect();
        let call = |xs: &[Array]| -> Result<Vec<Array>> {
            let mut args = inputs.clone();
            for (&i, x) in diff.iter().zip(xs) {
                args[i] = x.clone();
            }
            Ok(vec![loss(&args)?])
        };
        let primals: Vec<Array> = diff.iter().map(|&i| inputs[i].clone()).collect();
        let (_, vjps) = fx::vjp(call, &primals, &[get(&f, &format!("{name}.cot"))]).unwrap();
        for (&i, g) in diff.iter().zip(&vjps) {
            assert_close(&format!("{name} grad of input {i}"), g, &get(&f, &format!("{name}.grad.{i}")), 1e-4, 1e-6);
        }
    }
}

#[test]
fn binary_cross_entropy_clips_log_of_zero_like_mlx() {
    let f = fixture("losses.safetensors");
    let opts = BinaryCrossEntropyOptions { with_logits: false, reduction: Reduction::None, ..Default::default() };
    let got = binary_cross_entropy(&get(&f, "bce_probs_edge.in.0"), &get(&f, "bce_probs_edge.in.1"), &opts).unwrap();
    assert_close("bce edge", &got, &get(&f, "bce_probs_edge.out"), 1e-6, 0.0);
    assert_eq!(got.to_vec::<f32>().unwrap()[..2], [100.0, 100.0]);
}

#[test]
fn bad_arguments_are_errors_naming_the_problem() {
    let x = Array::from_slice(&[0.0f32; 6], &[2, 3]).unwrap();
    let t = Array::from_slice(&[0i32, 1, 2], &[3]).unwrap();
    let err = cross_entropy(&x, &t, &Default::default()).unwrap_err().to_string();
    assert!(err.contains("cross_entropy") && err.contains("[3]"), "{err}");
    let t2 = Array::from_slice(&[0i32, 1], &[2]).unwrap();
    let smooth = CrossEntropyOptions { label_smoothing: 1.0, ..Default::default() };
    assert!(cross_entropy(&x, &t2, &smooth).unwrap_err().to_string().contains("label_smoothing"));
    let w = CrossEntropyOptions { weights: Some(Array::from_slice(&[1.0f32; 3], &[3]).unwrap()), ..Default::default() };
    assert!(cross_entropy(&x, &t2, &w).unwrap_err().to_string().contains("weights"));
    let y = Array::from_slice(&[0.0f32; 3], &[3]).unwrap();
    assert!(mse_loss(&x, &y, Reduction::Mean).unwrap_err().to_string().contains("mse_loss"));
    assert!(smooth_l1_loss(&x, &x, 0.0, Reduction::Mean).unwrap_err().to_string().contains("beta"));
    assert!(nll_loss(&x, &t2, 2, Reduction::None).unwrap_err().to_string().contains("axis 2"));
}
