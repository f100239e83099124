//! Initializers against real mlx.nn.init after the same seed (fixtures from
//! scripts/make_optim_fixtures.py), and their moments on large draws.

mod common;

use common::{assert_close, fixture, get};
use ferrox::{self as fx, Array, Dtype, Result};
use ferrox_nn::init::{self, FanMode};

type InitFn = fn() -> Result<Array>;

/// The initializers of INITS in the fixture script, with their seeds.
const INITS: &[(&str, u64, InitFn)] = &[
    ("constant", 0, || init::constant(&[2, 3], 0.25, Dtype::F32)),
    ("normal", 1, || init::normal(&[3, 4], 0.5, 2.0, Dtype::F32, None)),
    ("uniform", 2, || init::uniform(&[5], -1.0, 3.0, Dtype::F32, None)),
    ("identity", 3, || init::identity(&[3, 3], Dtype::F32)),
    ("glorot_normal", 4, || init::glorot_normal(&[8, 6], 1.0, Dtype::F32, None)),
    ("glorot_uniform", 5, || init::glorot_uniform(&[4, 3, 5], 2.0, Dtype::F32, None)),
    ("he_normal", 6, || init::he_normal(&[6, 2, 3], FanMode::FanOut, 1.0, Dtype::F32, None)),
    ("he_uniform", 7, || init::he_uniform(&[7, 5], FanMode::FanIn, std::f64::consts::SQRT_2, Dtype::F32, None)),
    ("sparse", 8, || init::sparse(&[6, 9], 0.3, 0.1, 0.5, Dtype::F32, None)),
];

#[test]
fn initializers_match_mlx_after_the_same_seed() {
    let f = fixture("init.safetensors");
    for &(name, seed, make) in INITS {
        fx::random::seed(seed);
        assert_close(name, &make().unwrap(), &get(&f, name), 1e-6, 1e-7);
    }
}

/// Mean and standard deviation of `a`'s elements.
fn moments(a: &Array) -> (f64, f64) {
    let v = a.to_vec::<f32>().unwrap();
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn moments_and_bounds_follow_the_fans() {
    let key = fx::random::key(42);
    // Shape [out=64, 3, 3, in=32]: fan_in = 32·9 = 288, fan_out = 64·9 = 576.
    let shape = [64, 3, 3, 32];
    assert_eq!(init::fans(&shape).unwrap(), (288, 576));
    let cases: Vec<(&str, Array, f64)> = vec![
        ("glorot_normal", init::glorot_normal(&shape, 1.0, Dtype::F32, Some(&key)).unwrap(), (2.0 / 864.0f64).sqrt()),
        ("glorot_uniform", init::glorot_uniform(&shape, 1.0, Dtype::F32, Some(&key)).unwrap(), (2.0 / 864.0f64).sqrt()),
        (
            "he_normal in",
            init::he_normal(&shape, FanMode::FanIn, 2.0, Dtype::F32, Some(&key)).unwrap(),
            2.0 / 288f64.sqrt(),
        ),
        (
            "he_uniform out",
            init::he_uniform(&shape, FanMode::FanOut, 1.0, Dtype::F32, Some(&key)).unwrap(),
            1.0 / 576f64.sqrt(),
        ),
        ("normal", init::normal(&shape, 0.0, 0.3, Dtype::F32, Some(&key)).unwrap(), 0.3),
    ];
    for (name, a, std) in cases {
        assert_eq!(a.shape(), shape, "{name}");
        let (m, s) = moments(&a);
        // Five standard errors of the mean of 18432 samples.
        assert!(m.abs() < 5.0 * std / (a.size() as f64).sqrt(), "{name}: mean {m}");
        assert!((s / std - 1.0).abs() < 0.03, "{name}: std {s}, want {std}");
    }
    let limit = (6.0f32 / 864.0).sqrt();
    let u = init::glorot_uniform(&shape, 1.0, Dtype::F32, Some(&key)).unwrap().to_vec::<f32>().unwrap();
    assert!(u.iter().all(|x| x.abs() <= limit));
    // The same key gives the same array; bf16 works.
    let a = init::he_normal(&[4, 4], FanMode::FanIn, 1.0, Dtype::Bf16, Some(&key)).unwrap();
    let b = init::he_normal(&[4, 4], FanMode::FanIn, 1.0, Dtype::Bf16, Some(&key)).unwrap();
    assert_eq!(a.dtype(), Dtype::Bf16);
    assert!(fx::array_equal(&a, &b, false).unwrap().item::<bool>().unwrap());
}

#[test]
fn sparse_zeroes_the_fraction_of_each_row() {
    let key = fx::random::key(5);
    let a = init::sparse(&[50, 10], 0.25, 0.0, 1.0, Dtype::F32, Some(&key)).unwrap();
    for row in a.to_vec::<f32>().unwrap().chunks(10) {
        assert_eq!(row.iter().filter(|x| **x == 0.0).count(), 3, "{row:?}");
    }
    let b = init::sparse(&[50, 10], 0.25, 0.0, 1.0, Dtype::F32, Some(&key)).unwrap();
    assert!(fx::array_equal(&a, &b, false).unwrap().item::<bool>().unwrap());
}

#[test]
fn bad_shapes_are_errors() {
    assert!(init::glorot_uniform(&[5], 1.0, Dtype::F32, None).unwrap_err().to_string().contains("2 dimensions"));
    assert!(init::he_normal(&[], FanMode::FanIn, 1.0, Dtype::F32, None).is_err());
    assert!(init::identity(&[2, 3], Dtype::F32).unwrap_err().to_string().contains("square"));
    assert!(init::sparse(&[2, 3, 4], 0.5, 0.0, 1.0, Dtype::F32, None).unwrap_err().to_string().contains("2-D"));
    assert!(init::sparse(&[2, 3], 1.5, 0.0, 1.0, Dtype::F32, None).unwrap_err().to_string().contains("sparsity"));
}
