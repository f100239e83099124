//! Optimizers' first steps, schedules and clip_grad_norm against real mlx.optimizers
//! (fixtures from scripts/make_optim_fixtures.py); frozen keys; save → load → continue.

mod common;

use std::collections::HashMap;

use common::{assert_close, fixture, get};
use ferrox::{self as fx, Array};
use ferrox_nn::optim::schedules::*;
use ferrox_nn::optim::*;
use ferrox_nn::Params;

const KEYS: [&str; 3] = ["conv.w", "layer.bias", "layer.weight"];
const STEPS: usize = 5;

fn warmup_cosine() -> Schedule {
    join_schedules(vec![linear_schedule(0.0, 0.1, 2).unwrap(), cosine_decay(0.1, 10, 0.01).unwrap()], &[2]).unwrap()
}

/// The optimizers of OPTIMIZERS in the fixture script.
fn make(name: &str) -> Box<dyn Optimizer> {
    fn b<O: Optimizer + 'static>(o: ferrox::Result<O>) -> Box<dyn Optimizer> {
        Box::new(o.unwrap())
    }
    match name {
        "sgd" => b(Sgd::new(0.1, SgdConfig::default())),
        "sgd_momentum" => {
            b(Sgd::new(0.1, SgdConfig { momentum: 0.9, weight_decay: 0.01, dampening: 0.1, nesterov: false }))
        }
        "sgd_nesterov" => b(Sgd::new(0.1, SgdConfig { momentum: 0.8, nesterov: true, ..Default::default() })),
        "rmsprop" => b(RmsProp::new(0.01, RmsPropConfig { alpha: 0.9, ..Default::default() })),
        "adagrad" => b(Adagrad::new(0.1, AdagradConfig::default())),
        "adadelta" => b(AdaDelta::new(1.0, AdaDeltaConfig { rho: 0.95, ..Default::default() })),
        "adam" => b(Adam::new(0.01, AdamConfig::default())),
        "adam_bias" => {
            b(Adam::new(0.01, AdamConfig { betas: (0.8, 0.99), bias_correction: true, ..Default::default() }))
        }
        "adamw" => b(AdamW::new(0.01, AdamWConfig { weight_decay: 0.1, ..Default::default() })),
        "adamax" => b(Adamax::new(0.02, AdamaxConfig::default())),
        "lion" => b(Lion::new(0.01, LionConfig { weight_decay: 0.1, ..Default::default() })),
        "adafactor" => b(Adafactor::new(0.0, AdafactorConfig::default())),
        "adafactor_lr" => b(Adafactor::new(
            0.05,
            AdafactorConfig {
                relative_step: false,
                beta_1: Some(0.9),
                weight_decay: 0.01,
                scale_parameter: false,
                ..Default::default()
            },
        )),
        "adafactor_warmup" => b(Adafactor::new(0.0, AdafactorConfig { warmup_init: true, ..Default::default() })),
        "adam_schedule" => b(Adam::new(warmup_cosine(), AdamConfig { bias_correction: true, ..Default::default() })),
        "multi" => Box::new(
            MultiOptimizer::new(
                vec![make_sgd_momentum(), b(Adam::new(0.01, AdamConfig::default()))],
                vec![Box::new(|path: &str, _: &Array| path.contains("bias"))],
            )
            .unwrap(),
        ),
        "muon" => b(Muon::new(0.02, MuonConfig::default())),
        "muon_plain" => {
            b(Muon::new(0.02, MuonConfig { momentum: 0.9, weight_decay: 0.0, nesterov: false, ns_steps: 3 }))
        }
        _ => unreachable!("no optimizer {name}"),
    }
}

fn make_sgd_momentum() -> Box<dyn Optimizer> {
    Box::new(Sgd::new(0.05, SgdConfig { momentum: 0.9, ..Default::default() }).unwrap())
}

const NAMES: [&str; 18] = [
    "sgd",
    "sgd_momentum",
    "sgd_nesterov",
    "rmsprop",
    "adagrad",
    "adadelta",
    "adam",
    "adam_bias",
    "adamw",
    "adamax",
    "lion",
    "adafactor",
    "adafactor_lr",
    "adafactor_warmup",
    "adam_schedule",
    "multi",
    "muon",
    "muon_plain",
];

struct Problem {
    start: Params,
    target: Params,
    scale: Params,
}

fn problem(f: &HashMap<String, Array>) -> Problem {
    let part = |what: &str| KEYS.iter().map(|k| (k.to_string(), get(f, &format!("problem.{what}.{k}")))).collect();
    Problem { start: part("param"), target: part("target"), scale: part("scale") }
}

impl Problem {
    /// The gradient of the fixed problem: scale * (param - target), for `keys`.
    fn grads(&self, params: &Params, keys: &[&str]) -> Params {
        keys.iter()
            .map(|&k| {
                let g = fx::multiply(&self.scale[k], fx::subtract(&params[k], &self.target[k]).unwrap()).unwrap();
                (k.to_string(), g)
            })
            .collect()
    }
}

/// One update, then an eval of the parameters and the state (as a training loop does).
fn step(opt: &mut dyn Optimizer, prob: &Problem, params: &mut Params, keys: &[&str]) {
    let grads = prob.grads(params, keys);
    opt.update(params, &grads).unwrap();
    let state = opt.state();
    fx::eval(&params.values().chain(state.values()).collect::<Vec<_>>()).unwrap();
}

#[test]
fn first_steps_match_mlx() {
    let f = fixture("optim.safetensors");
    let prob = problem(&f);
    for name in NAMES {
        let mut opt = make(name);
        let mut params = prob.start.clone();
        for s in 1..=STEPS {
            step(opt.as_mut(), &prob, &mut params, &KEYS);
            for k in KEYS {
                let want = get(&f, &format!("{name}.{s}.{k}"));
                assert_close(&format!("{name} step {s} {k}"), &params[k], &want, 2e-5, 2e-6);
            }
        }
        assert_eq!(opt.step().item::<u64>().unwrap(), STEPS as u64, "{name}");
    }
}

#[test]
fn schedules_match_mlx() {
    let f = fixture("schedules.safetensors");
    let schedules: Vec<(&str, Schedule)> = vec![
        ("exponential_decay", exponential_decay(0.1, 0.9)),
        ("step_decay", step_decay(0.1, 0.5, 7).unwrap()),
        ("cosine_decay", cosine_decay(0.1, 20, 0.0).unwrap()),
        ("cosine_decay_end", cosine_decay(0.1, 20, 0.01).unwrap()),
        ("linear_schedule", linear_schedule(0.0, 0.2, 12).unwrap()),
        (
            "join_warmup_cosine",
            join_schedules(vec![linear_schedule(0.0, 0.1, 5).unwrap(), cosine_decay(0.1, 20, 0.0).unwrap()], &[5])
                .unwrap(),
        ),
        (
            "join_three",
            join_schedules(
                vec![
                    linear_schedule(0.0, 0.1, 4).unwrap(),
                    exponential_decay(0.1, 0.8),
                    step_decay(0.05, 0.5, 3).unwrap(),
                ],
                &[4, 15],
            )
            .unwrap(),
        ),
    ];
    for (name, s) in schedules {
        let want = get(&f, name);
        let got: Vec<Array> = (0..want.shape()[0] as u64).map(|i| s(&Array::scalar(i)).unwrap()).collect();
        assert_close(name, &fx::stack(&got, 0).unwrap(), &want, 1e-6, 1e-9);
    }
    assert!(step_decay(0.1, 0.5, 0).is_err());
    assert!(cosine_decay(0.1, 0, 0.0).is_err());
    assert!(linear_schedule(0.1, 0.0, 0).is_err());
    let err = join_schedules(vec![exponential_decay(0.1, 0.9)], &[3]).err().unwrap().to_string();
    assert!(err.contains("boundaries"), "{err}");
}

#[test]
fn clip_grad_norm_matches_mlx() {
    let f = fixture("optim.safetensors");
    let prob = problem(&f);
    let grads = prob.grads(&prob.start, &KEYS);
    for max_norm in [1.0, 100.0] {
        let (clipped, norm) = clip_grad_norm(&grads, max_norm).unwrap();
        assert_close("norm", &norm, &get(&f, &format!("clip.{max_norm}.norm")), 1e-6, 0.0);
        for k in KEYS {
            assert_close(k, &clipped[k], &get(&f, &format!("clip.{max_norm}.{k}")), 1e-6, 1e-7);
        }
    }
    assert!(clip_grad_norm(&grads, -1.0).unwrap_err().to_string().contains("max_norm"));
}

#[test]
fn frozen_parameters_are_untouched_and_get_no_state() {
    let f = fixture("optim.safetensors");
    let prob = problem(&f);
    let trainable = ["conv.w", "layer.weight"];
    for name in NAMES {
        let mut opt = make(name);
        let mut params = prob.start.clone();
        for _ in 0..3 {
            step(opt.as_mut(), &prob, &mut params, &trainable);
        }
        assert!(params["layer.bias"].same(&prob.start["layer.bias"]), "{name}: the frozen bias was replaced");
        assert!(opt.state().keys().all(|k| !k.contains("layer.bias")), "{name}: state for the frozen bias");
        assert!(opt.state().keys().any(|k| k.contains("layer.weight")), "{name}: no state for the weight");
        let unchanged = fx::array_equal(&params["layer.weight"], &prob.start["layer.weight"], false).unwrap();
        assert!(!unchanged.item::<bool>().unwrap(), "{name}: the trainable weight did not move");
    }
}

/// `steps` updates of `opt` from `params`, returning the parameters after each.
fn run(opt: &mut dyn Optimizer, prob: &Problem, params: &mut Params, steps: usize) -> Vec<Vec<f32>> {
    (0..steps)
        .map(|_| {
            step(opt, prob, params, &KEYS);
            KEYS.iter().flat_map(|k| params[*k].to_vec::<f32>().unwrap()).collect()
        })
        .collect()
}

#[test]
fn save_load_continue_equals_an_uninterrupted_run_bit_for_bit() {
    let f = fixture("optim.safetensors");
    let prob = problem(&f);
    let dir = std::env::temp_dir().join(format!("ferrox-nn-optim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in NAMES {
        let mut straight = make(name);
        let mut p = prob.start.clone();
        let want = run(straight.as_mut(), &prob, &mut p, 7);

        let mut first = make(name);
        let mut p = prob.start.clone();
        run(first.as_mut(), &prob, &mut p, 3);
        let path = dir.join(format!("{name}.safetensors"));
        first.save(&path).unwrap();
        let params_path = dir.join(format!("{name}.params.safetensors"));
        fx::save_safetensors(&params_path, &p, None).unwrap();
        drop(first);

        let mut resumed = make(name);
        resumed.load(&path).unwrap();
        assert_eq!(resumed.step().item::<u64>().unwrap(), 3, "{name}");
        let mut p: Params = fx::load_safetensors(&params_path).unwrap().0.into_iter().collect();
        let got = run(resumed.as_mut(), &prob, &mut p, 4);
        for (i, (g, w)) in got.iter().zip(&want[3..]).enumerate() {
            let same = g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{name}: resumed step {} differs from the uninterrupted run", i + 4);
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn loading_state_of_another_optimizer_or_config_is_an_error() {
    let f = fixture("optim.safetensors");
    let prob = problem(&f);
    let dir = std::env::temp_dir().join(format!("ferrox-nn-optim-mismatch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("adam.safetensors");
    let mut adam = make("adam");
    run(adam.as_mut(), &prob, &mut prob.start.clone(), 2);
    adam.save(&path).unwrap();

    let err = make("sgd").load(&path).unwrap_err().to_string();
    assert!(err.contains("Adam state") && err.contains("SGD"), "{err}");
    let mut other = Adam::new(0.01, AdamConfig { eps: 1e-6, ..Default::default() }).unwrap();
    let err = other.load(&path).unwrap_err().to_string();
    assert!(err.contains("eps") && err.contains("1e-8") && err.contains("1e-6"), "{err}");
    let mut bad = Params::new();
    bad.insert("step".into(), Array::scalar(1u64));
    bad.insert("w.q".into(), Array::scalar(1.0f32));
    let err = make("adam").load_state(&bad).unwrap_err().to_string();
    assert!(err.contains("\"w.q\""), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_gradients_and_configs_are_errors() {
    let mut params = Params::new();
    params.insert("w".into(), Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap());
    let mut opt = Sgd::new(0.1, SgdConfig::default()).unwrap();
    let mut grads = Params::new();
    grads.insert("v".into(), Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap());
    assert!(opt.update(&mut params, &grads).unwrap_err().to_string().contains("\"v\""));
    let mut grads = Params::new();
    grads.insert("w".into(), Array::from_slice(&[1.0f32; 3], &[3]).unwrap());
    assert!(opt.update(&mut params, &grads).unwrap_err().to_string().contains("shape"));

    assert!(Sgd::new(0.1, SgdConfig { nesterov: true, ..Default::default() }).is_err());
    assert!(Adam::new(0.1, AdamConfig { betas: (0.9, 1.0), ..Default::default() }).is_err());
    assert!(RmsProp::new(0.1, RmsPropConfig { eps: 0.0, ..Default::default() }).is_err());
    assert!(Lion::new(0.1, LionConfig { betas: (-0.1, 0.9), ..Default::default() }).is_err());
    let one: Vec<Box<dyn Optimizer>> = vec![make("sgd")];
    assert!(MultiOptimizer::new(one, vec![Box::new(|_: &str, _: &Array| true)]).is_err());
}

#[test]
fn learning_rate_follows_the_schedule_and_can_be_replaced() {
    let mut opt = Sgd::new(exponential_decay(1.0, 0.5), SgdConfig::default()).unwrap();
    let mut params: Params = [("w".to_string(), Array::scalar(0.0f32))].into();
    let grads: Params = [("w".to_string(), Array::scalar(1.0f32))].into();
    let mut lrs = vec![];
    for _ in 0..3 {
        opt.update(&mut params, &grads).unwrap();
        lrs.push(opt.learning_rate().item::<f32>().unwrap());
    }
    // The update at step t uses schedule(t - 1): 1, 0.5, 0.25.
    assert_eq!(lrs, [1.0, 0.5, 0.25]);
    assert_eq!(params["w"].item::<f32>().unwrap(), -1.75);
    opt.set_learning_rate(LearningRate::Constant(2.0)).unwrap();
    opt.update(&mut params, &grads).unwrap();
    assert_eq!(params["w"].item::<f32>().unwrap(), -3.75);
}

#[test]
fn init_creates_state_up_front_without_changing_the_trajectory() {
    let f = fixture("optim.safetensors");
    let prob = problem(&f);
    for name in NAMES {
        let mut lazy = make(name);
        let want = run(lazy.as_mut(), &prob, &mut prob.start.clone(), 3);
        let mut eager = make(name);
        eager.init(&prob.start).unwrap();
        assert_eq!(eager.step().item::<u64>().unwrap(), 0, "{name}");
        let state = eager.state();
        assert!(KEYS.iter().all(|k| state.keys().any(|s| s.contains(k))), "{name}: {:?}", state.keys());
        assert_eq!(run(eager.as_mut(), &prob, &mut prob.start.clone(), 3), want, "{name}");
    }
}

#[test]
fn bfloat16_parameters_keep_their_dtype_and_match_mlx() {
    let f = fixture("optim.safetensors");
    let prob = problem(&f);
    let half = |p: &Params| -> Params {
        p.iter().map(|(k, v)| (k.clone(), fx::astype(v, fx::Dtype::Bf16).unwrap())).collect()
    };
    let prob = Problem { start: half(&prob.start), target: half(&prob.target), scale: half(&prob.scale) };
    for name in ["sgd_momentum", "adam_bias", "adamw", "lion", "adafactor"] {
        let mut opt = make(name);
        let mut params = prob.start.clone();
        for s in 1..=3 {
            step(opt.as_mut(), &prob, &mut params, &KEYS);
            for k in KEYS {
                assert_eq!(params[k].dtype(), fx::Dtype::Bf16, "{name} {k}");
                let want = get(&f, &format!("bf16.{name}.{s}.{k}"));
                // One bfloat16 ulp (2⁻⁸ relative) of slack for a different rounding order.
                assert_close(&format!("{name} bf16 step {s} {k}"), &params[k], &want, 1.0 / 128.0, 1e-3);
            }
        }
        for (k, v) in opt.state() {
            if !k.ends_with("step") && !k.ends_with("learning_rate") {
                assert_eq!(v.dtype(), fx::Dtype::Bf16, "{name} state {k}");
            }
        }
    }
}

#[test]
fn loaded_state_that_does_not_fit_the_parameters_is_an_error() {
    let mut params: Params = [("w".to_string(), Array::from_slice(&[1.0f32, 2.0, 3.0], &[3]).unwrap())].into();
    let grads: Params = [("w".to_string(), Array::from_slice(&[0.1f32, 0.2, 0.3], &[3]).unwrap())].into();
    let mut state = Params::new();
    state.insert("step".into(), Array::scalar(4u64));
    state.insert("w.m".into(), Array::from_slice(&[0.0f32], &[1]).unwrap());
    state.insert("w.v".into(), Array::from_slice(&[0.0f32], &[1]).unwrap());
    let mut adam = Adam::new(0.1, AdamConfig::default()).unwrap();
    adam.load_state(&state).unwrap();
    let err = adam.update(&mut params, &grads).unwrap_err().to_string();
    assert!(err.contains("slot m") && err.contains("[1]") && err.contains("[3]"), "{err}");
    state.remove("w.v");
    let mut adam = Adam::new(0.1, AdamConfig::default()).unwrap();
    adam.load_state(&state).unwrap();
    let err = adam.update(&mut params, &grads).unwrap_err().to_string();
    assert!(err.contains("slots [\"m\"]"), "{err}");
    // Nothing was applied by the failed updates.
    assert_eq!(params["w"].to_vec::<f32>().unwrap(), [1.0, 2.0, 3.0]);
}
