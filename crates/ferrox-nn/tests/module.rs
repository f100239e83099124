//! The Module tree: derive naming, freezing, update errors, train/eval, checkpoints,
//! value_and_grad over trainable parameters.

use ferrox::{self as fx, Array, Dtype};
use ferrox_nn::layers::{Dropout, Embedding, Linear, RmsNorm};
use ferrox_nn::{path_matches, Module, ModuleState, Params};

#[derive(Module)]
struct Attention {
    q_proj: Linear,
    o_proj: Linear,
    #[module(skip)]
    heads: usize,
}

#[derive(Module)]
struct Block {
    self_attn: Attention,
    norm: RmsNorm,
    gate: Option<Linear>,
    dropout: Dropout,
}

#[derive(Module)]
struct Model {
    embed: Embedding,
    layers: Vec<Block>,
    head: Option<Linear>,
    scales: Vec<Array>,
    temperature: Array,
    state: ModuleState,
}

fn model() -> Model {
    let block = |gate: bool| Block {
        self_attn: Attention {
            q_proj: Linear::new(4, 4, true).unwrap(),
            o_proj: Linear::new(4, 4, false).unwrap(),
            heads: 2,
        },
        norm: RmsNorm::new(4, 1e-5).unwrap(),
        gate: gate.then(|| Linear::new(4, 4, false).unwrap()),
        dropout: Dropout::new(0.1).unwrap(),
    };
    Model {
        embed: Embedding::new(10, 4).unwrap(),
        layers: vec![block(false), block(true)],
        head: None,
        scales: vec![fx::ones(&[4], Dtype::F32).unwrap(), fx::ones(&[2], Dtype::F32).unwrap()],
        temperature: Array::scalar(1.0f32),
        state: ModuleState::new(),
    }
}

fn keys(p: &Params) -> Vec<&str> {
    p.keys().map(|k| k.as_str()).collect()
}

#[test]
fn derive_names_parameters_by_path() {
    let m = model();
    assert_eq!(m.layers[0].self_attn.heads, 2);
    assert_eq!(
        keys(&m.parameters()),
        [
            "embed.weight",
            "layers.0.norm.weight",
            "layers.0.self_attn.o_proj.weight",
            "layers.0.self_attn.q_proj.bias",
            "layers.0.self_attn.q_proj.weight",
            "layers.1.gate.weight",
            "layers.1.norm.weight",
            "layers.1.self_attn.o_proj.weight",
            "layers.1.self_attn.q_proj.bias",
            "layers.1.self_attn.q_proj.weight",
            "scales.0",
            "scales.1",
            "temperature",
        ]
    );
    assert_eq!(m.num_parameters(), 40 + 2 * (4 + 16 + 4 + 16) + 16 + 4 + 2 + 1);
    let mut paths = Vec::new();
    m.apply_to_modules(&mut |p, _| paths.push(p.to_string()));
    assert!(paths.contains(&"layers.1.self_attn.q_proj".to_string()));
    assert!(paths.contains(&"layers.0.dropout".to_string()));
    assert_eq!(paths[0], "");
}

#[test]
fn freeze_whole_by_key_and_by_pattern() {
    let mut m = model();
    m.freeze();
    assert!(m.trainable_parameters().is_empty());
    m.unfreeze();
    assert_eq!(m.trainable_parameters().len(), m.parameters().len());

    m.freeze_keys(&["bias"]).unwrap();
    assert!(m.trainable_parameters().keys().all(|k| !k.ends_with("bias")));
    assert!(m.freeze_keys(&["nonexistent"]).is_err());
    m.unfreeze_keys(&["bias"]).unwrap();

    assert_eq!(m.freeze_matching("layers.*.self_attn.*").unwrap(), 6);
    let t = m.trainable_parameters();
    assert!(t.contains_key("layers.0.norm.weight") && !t.contains_key("layers.1.self_attn.q_proj.weight"));
    assert!(m.freeze_matching("layer.*").is_err(), "a pattern matching nothing is an error");
    m.unfreeze_matching("layers.1.*").unwrap();
    assert!(m.trainable_parameters().contains_key("layers.1.self_attn.q_proj.weight"));
    assert!(!m.trainable_parameters().contains_key("layers.0.self_attn.q_proj.weight"));

    // Freezing a submodule through its own handle.
    m.unfreeze();
    m.layers[0].freeze();
    assert_eq!(m.trainable_parameters().keys().filter(|k| k.starts_with("layers.0.")).count(), 0);
    m.temperature = Array::scalar(2.0f32);
    m.freeze_keys(&["temperature"]).unwrap();
    assert!(!m.trainable_parameters().contains_key("temperature"));
}

#[test]
fn frozen_parameters_get_no_gradient() {
    let mut m = model();
    m.freeze_matching("embed.*").unwrap();
    m.layers[1].self_attn.freeze();
    let ids = Array::from_slice(&[1i32, 2, 3], &[1, 3]).unwrap();
    let before = m.parameters();
    let (loss, grads) = ferrox_nn::value_and_grad(&mut m, |m| {
        let mut h = m.embed.forward(&ids)?;
        for b in &m.layers {
            h = b.self_attn.o_proj.forward(&b.self_attn.q_proj.forward(&b.norm.forward(&h)?)?)?;
        }
        fx::sum(&fx::multiply(&h, &m.temperature)?, None, false)
    })
    .unwrap();
    assert_eq!(loss.size(), 1);
    assert_eq!(keys(&grads), keys(&m.trainable_parameters()));
    assert!(!grads.contains_key("embed.weight") && !grads.contains_key("layers.1.self_attn.q_proj.weight"));
    assert!(grads.contains_key("layers.1.norm.weight"));
    // A trainable parameter that the loss uses gets a nonzero gradient.
    let g = grads["layers.0.self_attn.q_proj.weight"].to_vec::<f32>().unwrap();
    assert!(g.iter().any(|&v| v != 0.0));
    // The model holds its original arrays again afterwards.
    for (k, a) in m.parameters() {
        assert!(a.same(&before[&k]), "{k} was not restored");
    }
}

#[test]
fn value_and_grad_matches_finite_differences() {
    let mut lin = Linear::from_weights(
        Array::from_slice(&[0.5f32, -1.0, 2.0, 0.25, 1.5, -0.5], &[2, 3]).unwrap(),
        Some(Array::from_slice(&[0.1f32, -0.2], &[2]).unwrap()),
    )
    .unwrap();
    let x = Array::from_slice(&[1.0f32, 2.0, -1.0, 0.5, 0.0, 3.0], &[2, 3]).unwrap();
    let loss = |m: &mut Linear| fx::sum(&fx::square(&m.forward(&x)?)?, None, false);
    let (v, g) = ferrox_nn::value_and_grad(&mut lin, loss).unwrap();
    let v = v.item::<f32>().unwrap() as f64;
    let w = lin.weight.to_vec::<f32>().unwrap();
    let gw = g["weight"].to_vec::<f32>().unwrap();
    for i in 0..6 {
        let mut wp: Vec<f64> = w.iter().map(|&a| a as f64).collect();
        wp[i] += 1e-3;
        let mut l2 = lin.clone();
        l2.update(&Params::from([("weight".into(), Array::from_slice(&wp, &[2, 3]).unwrap())])).unwrap();
        let v2 = fx::sum(&fx::square(&l2.forward(&fx::astype(&x, Dtype::F64).unwrap()).unwrap()).unwrap(), None, false)
            .unwrap()
            .item::<f64>()
            .unwrap();
        let fd = (v2 - v) / 1e-3;
        assert!((fd - gw[i] as f64).abs() < 2e-2 * fd.abs().max(1.0), "w[{i}]: fd {fd} vs {}", gw[i]);
    }
}

#[test]
fn update_checks_keys_and_shapes() {
    let mut m = model();
    let w = fx::zeros(&[4, 4], Dtype::F32).unwrap();
    m.update(&Params::from([("layers.0.self_attn.q_proj.weight".into(), w.clone())])).unwrap();
    assert!(m.layers[0].self_attn.q_proj.weight.same(&w));

    let unknown = Params::from([("layers.0.self_attn.k_proj.weight".into(), w.clone())]);
    let e = m.update(&unknown).unwrap_err().to_string();
    assert!(e.contains("k_proj"), "{e}");
    let report = m.update_lenient(&unknown).unwrap();
    assert_eq!(report.unexpected, ["layers.0.self_attn.k_proj.weight"]);
    assert!(report.missing.contains(&"embed.weight".to_string()));

    let bad = Params::from([
        ("layers.0.norm.weight".into(), fx::zeros(&[4], Dtype::F32).unwrap()),
        ("layers.1.norm.weight".into(), fx::zeros(&[5], Dtype::F32).unwrap()),
    ]);
    let e = m.update(&bad).unwrap_err().to_string();
    assert!(e.contains("layers.1.norm.weight") && e.contains("[5]"), "{e}");
    // Nothing was assigned: the update is all or nothing.
    assert_eq!(m.layers[0].norm.weight.to_vec::<f32>().unwrap(), [1.0; 4]);
    assert!(m.update_lenient(&bad).is_err(), "shapes are checked leniently too");
}

#[test]
fn save_load_round_trip() {
    let dir = std::env::temp_dir().join(format!("ferrox-nn-module-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    let a = model();
    a.save_weights(&path).unwrap();
    let mut b = model();
    assert!(
        b.parameters()["embed.weight"].to_vec::<f32>().unwrap()
            != a.parameters()["embed.weight"].to_vec::<f32>().unwrap()
    );
    let report = b.load_weights(&path, true).unwrap();
    assert_eq!(report, ferrox_nn::LoadReport::default());
    for (k, v) in a.parameters() {
        assert_eq!(v.to_vec::<f32>().unwrap(), b.parameters()[&k].to_vec::<f32>().unwrap(), "{k}");
    }

    // Strict loading refuses a checkpoint of another shape of model; lenient loading reports.
    let mut c = model();
    c.layers.pop();
    c.head = Some(Linear::new(4, 10, false).unwrap());
    let e = c.load_weights(&path, true).unwrap_err().to_string();
    assert!(e.contains("head.weight") && e.contains("layers.1.gate.weight"), "{e}");
    let report = c.load_weights(&path, false).unwrap();
    assert_eq!(report.missing, ["head.weight"]);
    assert_eq!(report.unexpected.len(), 5);
    assert_eq!(
        c.parameters()["layers.0.norm.weight"].to_vec::<f32>().unwrap(),
        a.parameters()["layers.0.norm.weight"].to_vec::<f32>().unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn train_and_eval_mode_reach_every_layer() {
    let mut m = model();
    assert!(m.training());
    m.eval_mode();
    assert!(!m.training() && !m.layers[1].dropout.training() && !m.layers[0].training());
    m.train(true);
    assert!(m.layers[1].dropout.training());
}

/// A replaceable layer: the enum keeps the field's path whichever variant it holds.
#[derive(Module)]
enum AnyProj {
    Dense(Linear),
    Scaled(Scaled),
}

#[derive(Module)]
struct Scaled {
    inner: Linear,
    scale: Array,
    state: ModuleState,
}

#[derive(Module)]
struct Holder {
    proj: AnyProj,
    extra: Box<dyn Module>,
}

#[test]
fn enums_and_boxes_delegate() {
    let mut h = Holder {
        proj: AnyProj::Dense(Linear::new(2, 2, true).unwrap()),
        extra: Box::new(RmsNorm::new(2, 1e-5).unwrap()),
    };
    assert_eq!(keys(&h.parameters()), ["extra.weight", "proj.bias", "proj.weight"]);
    h.proj.freeze();
    let AnyProj::Dense(old) = std::mem::replace(&mut h.proj, AnyProj::Dense(Linear::new(1, 1, false).unwrap())) else {
        unreachable!()
    };
    h.proj = AnyProj::Scaled(Scaled { inner: old, scale: Array::scalar(1.0f32), state: ModuleState::new() });
    assert_eq!(keys(&h.parameters()), ["extra.weight", "proj.inner.bias", "proj.inner.weight", "proj.scale"]);
    assert_eq!(keys(&h.trainable_parameters()), ["extra.weight", "proj.scale"]);
    let mut names = Vec::new();
    h.apply_to_modules(&mut |p, m| names.push(format!("{p}:{}", m.type_name().rsplit("::").next().unwrap())));
    assert!(names.contains(&"proj.inner:Linear".to_string()), "{names:?}");
}

#[test]
fn glob_patterns() {
    assert!(path_matches("layers.*.mlp.*", "layers.10.mlp.up_proj.weight"));
    assert!(path_matches("*.bias", "a.b.bias"));
    assert!(!path_matches("*.bias", "a.b.weight"));
    assert!(path_matches("embed.weight", "embed.weight"));
    assert!(!path_matches("embed", "embed.weight"));
    assert!(path_matches("*", ""));
}

#[test]
fn map_parameters_and_set_dtype() {
    let mut m = model();
    m.set_dtype(Dtype::Bf16).unwrap();
    assert!(m.parameters().values().all(|a| a.dtype() == Dtype::Bf16));
    let mut seen = Vec::new();
    m.map_parameters(&mut |p, a| {
        seen.push(p.to_string());
        fx::multiply(a, 0.0)
    })
    .unwrap();
    seen.sort();
    assert_eq!(seen, keys(&m.parameters()));
    for (k, a) in m.parameters() {
        assert!(fx::astype(&a, Dtype::F32).unwrap().to_vec::<f32>().unwrap().iter().all(|&v| v == 0.0), "{k}");
    }
}

#[test]
fn value_and_grad_restores_the_model_when_the_loss_fails() {
    let mut m = model();
    let before = m.parameters();
    let r = ferrox_nn::value_and_grad(&mut m, |m| fx::add(&m.layers[0].norm.weight, &fx::ones(&[3], Dtype::F32)?));
    assert!(r.is_err());
    for (k, a) in m.parameters() {
        assert!(a.same(&before[&k]), "{k} was not restored");
    }
}

#[test]
fn value_and_grad_with_aux_passes_aux_through() {
    let mut lin = Linear::from_weights(Array::from_slice(&[2.0f32, -1.0], &[1, 2]).unwrap(), None).unwrap();
    let x = Array::from_slice(&[1.0f32, 3.0, 2.0, 0.5], &[2, 2]).unwrap();
    let ((loss, aux), grads) = ferrox_nn::value_and_grad_with_aux(&mut lin, |m| {
        let y = m.forward(&x)?;
        Ok((fx::sum(&y, None, false)?, vec![fx::max(&y, None, false)?]))
    })
    .unwrap();
    // y = [2 - 3, 4 - 0.5] = [-1, 3.5]; d sum / dW = column sums of x = [3, 3.5].
    assert_eq!(loss.item::<f32>().unwrap(), 2.5);
    assert_eq!(aux[0].item::<f32>().unwrap(), 3.5);
    assert_eq!(grads["weight"].to_vec::<f32>().unwrap(), [3.0, 3.5]);
}
