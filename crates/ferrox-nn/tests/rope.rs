//! The RoPE variants against mlx-lm's own `rope_utils` (scripts/make_nn_fixtures.py →
//! fixtures/rope_mlx_lm.safetensors): the frequency tables and the rotated outputs at offset 3.

mod support;

use ferrox::Array;
use ferrox_nn::layers::{yarn_attention_scale, Rope, RopeScaling};
use support::{assert_close, fixture, get};

fn variants() -> Vec<(&'static str, usize, f32, bool, RopeScaling, usize)> {
    vec![
        ("default", 16, 10000.0, false, RopeScaling::Default, 2048),
        ("traditional", 16, 500.0, true, RopeScaling::Default, 2048),
        ("partial", 8, 10000.0, false, RopeScaling::Default, 2048),
        ("linear", 16, 10000.0, false, RopeScaling::Linear { factor: 4.0 }, 2048),
        ("dynamic", 16, 10000.0, false, RopeScaling::Dynamic { factor: 2.0 }, 4),
        (
            "llama3",
            16,
            500000.0,
            false,
            RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192,
            },
            131072,
        ),
        (
            "yarn",
            16,
            10000.0,
            false,
            RopeScaling::Yarn {
                factor: 4.0,
                original_max_position_embeddings: 4096,
                beta_fast: 32.0,
                beta_slow: 1.0,
                mscale: 1.0,
                mscale_all_dim: 0.5,
            },
            16384,
        ),
        (
            "yarn_partial",
            8,
            10000.0,
            true,
            RopeScaling::Yarn {
                factor: 2.0,
                original_max_position_embeddings: 2048,
                beta_fast: 32.0,
                beta_slow: 1.0,
                mscale: 1.0,
                mscale_all_dim: 0.0,
            },
            4096,
        ),
        (
            "longrope",
            16,
            10000.0,
            false,
            RopeScaling::LongRope {
                original_max_position_embeddings: 4096,
                short_factor: (0..8).map(|i| 1.0 + 0.1 * i as f32).collect(),
                long_factor: (0..8).map(|i| 1.0 + 0.5 * i as f32).collect(),
                long_mscale: None,
            },
            131072,
        ),
    ]
}

#[test]
fn rope_variants_match_mlx_lm() {
    let f = fixture("rope_mlx_lm.safetensors");
    let x = get(&f, "x");
    for (name, dims, base, traditional, scaling, max_pos) in variants() {
        let rope = Rope::from_scaling(dims, base, traditional, &scaling, max_pos).unwrap();
        if let Some(want) = f.get(&format!("{name}.freqs")) {
            assert_close(rope.freqs().expect("a frequency table"), want, 1e-5, &format!("{name} freqs"));
        }
        let out = rope.forward(&x, 3usize).unwrap();
        assert_close(&out, &get(&f, &format!("{name}.out")), 1e-4, name);
    }
}

#[test]
fn rope_offset_array_and_errors() {
    let f = fixture("rope_mlx_lm.safetensors");
    let x = get(&f, "x");
    let rope = Rope::new(16, false, 10000.0, 1.0).unwrap();
    let by_array = rope.forward(&x, &Array::scalar(3i32)).unwrap();
    assert_close(&by_array, &get(&f, "default.out"), 1e-4, "array offset");
    assert!(Rope::new(7, false, 10000.0, 1.0).is_err());
    let dynamic = Rope::from_scaling(16, 10000.0, false, &RopeScaling::Dynamic { factor: 2.0 }, 4).unwrap();
    assert!(dynamic.forward(&x, &Array::scalar(3i32)).is_err(), "dynamic NTK needs a known offset");
    let long = RopeScaling::LongRope {
        original_max_position_embeddings: 4096,
        short_factor: vec![1.0; 3],
        long_factor: vec![1.0; 3],
        long_mscale: None,
    };
    assert!(Rope::from_scaling(16, 10000.0, false, &long, 8192).is_err());
}

#[test]
fn yarn_attention_scale_folds_mscale_all_dim() {
    let yarn = RopeScaling::Yarn {
        factor: 4.0,
        original_max_position_embeddings: 4096,
        beta_fast: 32.0,
        beta_slow: 1.0,
        mscale: 1.0,
        mscale_all_dim: 0.5,
    };
    // mlx-lm: scale * (0.1 * mscale_all_dim * ln(factor) + 1)^2
    let s = 0.1 * 0.5 * 4f32.ln() + 1.0;
    assert!((yarn_attention_scale(0.125, &yarn) - 0.125 * s * s).abs() < 1e-7);
    assert_eq!(yarn_attention_scale(0.125, &RopeScaling::Default), 0.125);
}

#[test]
fn rope_scaling_from_config() {
    let configs = [
        ("default", serde_json::Value::Null),
        ("linear", serde_json::json!({"type": "linear", "factor": 4.0})),
        ("dynamic", serde_json::json!({"type": "dynamic", "factor": 2.0})),
        (
            "llama3",
            serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
        ),
        (
            "yarn",
            serde_json::json!({"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096,
                               "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 0.5}),
        ),
        ("yarn_partial", serde_json::json!({"type": "yarn", "factor": 2.0, "original_max_position_embeddings": 2048})),
        (
            "longrope",
            serde_json::json!({"type": "longrope", "original_max_position_embeddings": 4096,
                               "short_factor": [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7],
                               "long_factor": [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5]}),
        ),
    ];
    let expected = variants();
    for (name, cfg) in configs {
        let want = &expected.iter().find(|v| v.0 == name).unwrap().4;
        let got = RopeScaling::from_config(&cfg).unwrap();
        match (&got, want) {
            (RopeScaling::LongRope { long_factor: a, .. }, RopeScaling::LongRope { long_factor: b, .. }) => {
                assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6), "{name}")
            }
            _ => assert_eq!(&got, want, "{name}"),
        }
    }
    assert!(RopeScaling::from_config(&serde_json::json!({"type": "linear"})).is_err(), "factor is required");
    assert!(RopeScaling::from_config(&serde_json::json!({"type": "warp"})).is_err());
    // A scalar long factor applies to every pair.
    let scalar = RopeScaling::from_config(&serde_json::json!({"type": "longrope",
        "original_max_position_embeddings": 4096, "short_factor": 1.0, "long_factor": 2.0}))
    .unwrap();
    let r = Rope::from_scaling(16, 10000.0, false, &scalar, 4096).unwrap();
    let plain: Vec<f32> = (0..8).map(|i| 2.0 * 10000f32.powf(2.0 * i as f32 / 16.0)).collect();
    assert_close(r.freqs().unwrap(), &Array::from_vec(plain), 1e-6, "scalar long factor");
    assert_eq!(r.input_scale(), 1.0, "no stretch, no input scale");
}
