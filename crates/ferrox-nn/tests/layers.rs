//! Each layer's forward pass and its gradients (input and every parameter) against PyTorch in
//! float64 (scripts/make_nn_fixtures.py → fixtures/nn_torch.safetensors).

mod support;

use ferrox::{self as fx, Array, Dtype};
use ferrox_nn::layers::{activations as act, *};
use ferrox_nn::Module;
use support::{assert_close, check_case, fixture, get};

const TOL: f64 = 2e-4;

#[test]
fn linear() {
    let f = fixture("nn_torch.safetensors");
    check_case(&f, "linear", &mut Linear::new(5, 3, true).unwrap(), &["x"], |m, x| m.forward(&x[0]), TOL);
    check_case(&f, "linear_nobias", &mut Linear::new(5, 3, false).unwrap(), &["x"], |m, x| m.forward(&x[0]), TOL);
    // With a residual joined in (one product without a bias): less the residual, the same
    // output and gradients.
    let less_residual = |m: &mut Linear, x: &[Array]| {
        let r = fx::full_like(&m.forward(&x[0])?, 0.75f32)?;
        fx::subtract(&m.forward_add(&x[0], &r)?, &r)
    };
    check_case(&f, "linear", &mut Linear::new(5, 3, true).unwrap(), &["x"], less_residual, TOL);
    check_case(&f, "linear_nobias", &mut Linear::new(5, 3, false).unwrap(), &["x"], less_residual, TOL);
}

#[test]
fn embedding() {
    let f = fixture("nn_torch.safetensors");
    let ids = get(&f, "embedding.ids");
    check_case(&f, "embedding", &mut Embedding::new(10, 4).unwrap(), &[], |m, _| m.forward(&ids), TOL);
    check_case(&f, "embedding_as_linear", &mut Embedding::new(10, 4).unwrap(), &["x"], |m, x| m.as_linear(&x[0]), TOL);
    let e = Embedding::new(10, 4).unwrap();
    assert!(e.forward(&fx::ones(&[2], Dtype::F32).unwrap()).is_err(), "float ids must be refused");
}

#[test]
fn norms() {
    let f = fixture("nn_torch.safetensors");
    check_case(&f, "rms_norm", &mut RmsNorm::new(6, 1e-5).unwrap(), &["x"], |m, x| m.forward(&x[0]), TOL);
    check_case(
        &f,
        "layer_norm",
        &mut LayerNorm::new(6, 1e-5, true, true).unwrap(),
        &["x"],
        |m, x| m.forward(&x[0]),
        TOL,
    );
    let mut plain = LayerNorm::new(6, 1e-5, false, false).unwrap();
    assert!(plain.parameters().is_empty());
    check_case(&f, "layer_norm_noaffine", &mut plain, &["x"], |m, x| m.forward(&x[0]), TOL);
    let mut gn = GroupNorm::new(2, 6, 1e-5, true, true).unwrap();
    check_case(&f, "group_norm_pt", &mut gn, &["x"], |m, x| m.forward(&x[0]), TOL);
    let mut gn = GroupNorm::new(3, 6, 1e-5, true, false).unwrap();
    check_case(&f, "group_norm", &mut gn, &["x"], |m, x| m.forward(&x[0]), TOL);
    assert!(GroupNorm::new(4, 6, 1e-5, true, false).is_err());
}

#[test]
fn batch_norm_training_updates_running_stats() {
    let f = fixture("nn_torch.safetensors");
    let mut bn = BatchNorm::new(5, 1e-5, 0.1, true, true).unwrap();
    // The fixture holds weight and bias only; the running statistics start at 0 and 1.
    let mut params = support::under(&f, "batch_norm_train.p.");
    params.insert("running_mean".into(), fx::zeros(&[5], Dtype::F32).unwrap());
    params.insert("running_var".into(), fx::ones(&[5], Dtype::F32).unwrap());
    bn.load_params(params, true).unwrap();
    let x = get(&f, "batch_norm_train.x");
    let out = bn.forward(&x).unwrap();
    assert_close(&out, &get(&f, "batch_norm_train.out"), TOL, "batch norm out");
    let p = bn.parameters();
    assert_close(&p["running_mean"], &get(&f, "batch_norm_train.running_mean"), TOL, "running mean");
    assert_close(&p["running_var"], &get(&f, "batch_norm_train.running_var"), TOL, "running var");
    // Running statistics are buffers: never trainable, even after unfreeze.
    bn.unfreeze();
    let trainable: Vec<String> = bn.trainable_parameters().into_keys().collect();
    assert_eq!(trainable, ["bias", "weight"]);
    // Gradients in training mode (the statistics depend on the batch).
    let cot = get(&f, "batch_norm_train.cot");
    let (_, grads) =
        ferrox_nn::value_and_grad(&mut bn, |m| fx::sum(&fx::multiply(&m.forward(&x)?, &cot)?, None, false)).unwrap();
    assert_close(&grads["weight"], &get(&f, "batch_norm_train.g.weight"), TOL, "d/dweight");
    assert_close(&grads["bias"], &get(&f, "batch_norm_train.g.bias"), TOL, "d/dbias");
    let gx = fx::grad(
        |a| fx::sum(&fx::multiply(&bn.clone().forward(&a[0])?, &cot)?, None, false),
        std::slice::from_ref(&x),
        &[0],
    )
    .unwrap();
    assert_close(&gx[0], &get(&f, "batch_norm_train.gx"), TOL, "d/dx");
}

#[test]
fn batch_norm_eval_uses_running_stats() {
    let f = fixture("nn_torch.safetensors");
    let mut bn = BatchNorm::new(5, 1e-5, 0.1, true, true).unwrap();
    bn.eval_mode();
    assert!(!bn.training());
    check_case(&f, "batch_norm_eval", &mut bn, &["x"], |m, x| m.forward(&x[0]), TOL);
    // Evaluation leaves the running statistics alone.
    assert_close(&bn.parameters()["running_mean"], &get(&f, "batch_norm_eval.p.running_mean"), 0.0, "running mean");
}

#[test]
fn convolutions() {
    let f = fixture("nn_torch.safetensors");
    let mut c1 = Conv1d::new(3, 4, 3, 2, 1, 1, 1, true).unwrap();
    check_case(&f, "conv1d", &mut c1, &["x"], |m, x| m.forward(&x[0]), TOL);
    let mut c2 = Conv2d::new(4, 6, (3, 2), (1, 2), (1, 0), (2, 1), 1, true).unwrap();
    check_case(&f, "conv2d", &mut c2, &["x"], |m, x| m.forward(&x[0]), TOL);
    let mut cg = Conv2d::new(4, 6, (3, 3), (1, 1), (0, 0), (1, 1), 2, false).unwrap();
    check_case(&f, "conv2d_groups", &mut cg, &["x"], |m, x| m.forward(&x[0]), TOL);
    assert!(Conv2d::new(3, 6, (3, 3), (1, 1), (0, 0), (1, 1), 2, false).is_err());
}

#[test]
fn multi_head_attention() {
    let f = fixture("nn_torch.safetensors");
    let mask = get(&f, "mha.mask");
    let mut mha = MultiHeadAttention::new(8, 2, false).unwrap();
    check_case(&f, "mha", &mut mha, &["x", "keys", "values"], |m, x| m.forward(&x[0], &x[1], &x[2], Some(&mask)), TOL);
    assert!(MultiHeadAttention::new(8, 3, false).is_err());
}

#[test]
fn causal_mask() {
    let m = MultiHeadAttention::create_additive_causal_mask(3, Dtype::F32).unwrap();
    let v = m.to_vec::<f32>().unwrap();
    assert_eq!(&v[..4], &[0.0, f32::MIN, f32::MIN, 0.0]);
    assert_eq!(v[8], 0.0);
}

#[test]
fn transformer_layers() {
    let f = fixture("nn_torch.safetensors");
    let mask = get(&f, "causal3");
    for (case, norm_first) in [("encoder_pre", true), ("encoder_post", false)] {
        let mut layer = TransformerEncoderLayer::new(8, 2, Some(16), 0.0, norm_first).unwrap();
        check_case(&f, case, &mut layer, &["x"], |m, x| m.forward(&x[0], Some(&mask)), TOL);
    }
    for (case, norm_first) in [("decoder_pre", true), ("decoder_post", false)] {
        let mut layer = TransformerDecoderLayer::new(8, 2, Some(16), 0.0, norm_first).unwrap();
        check_case(&f, case, &mut layer, &["x", "memory"], |m, x| m.forward(&x[0], &x[1], Some(&mask), None), TOL);
    }
    let enc = TransformerEncoder::new(2, 8, 2, None, 0.1, true).unwrap();
    let names: Vec<String> = enc.parameters().into_keys().collect();
    assert!(names.contains(&"layers.1.attention.query_proj.weight".to_string()));
    assert!(names.contains(&"ln.bias".to_string()));
    assert_eq!(enc.layers[0].linear1.weight.shape(), [32, 8]);
}

#[test]
fn sequential() {
    let f = fixture("nn_torch.safetensors");
    let mut seq =
        Sequential::new().with(Linear::new(4, 6, true).unwrap()).with(Relu).with(Linear::new(6, 2, true).unwrap());
    check_case(&f, "sequential", &mut seq, &["x"], |m, x| m.forward(&x[0]), TOL);
}

#[test]
fn activations() {
    let f = fixture("nn_torch.safetensors");
    type Act = fn(&Array) -> ferrox::Result<Array>;
    let cases: Vec<(&str, Act)> = vec![
        ("relu", act::relu),
        ("relu6", act::relu6),
        ("leaky_relu", |x| act::leaky_relu(x, 0.01)),
        ("elu", |x| act::elu(x, 1.0)),
        ("selu", act::selu),
        ("celu", |x| act::celu(x, 1.0)),
        ("gelu", act::gelu),
        ("gelu_approx", act::gelu_approx),
        ("gelu_fast_approx", act::gelu_fast_approx),
        ("silu", act::silu),
        ("mish", act::mish),
        ("softplus", act::softplus),
        ("softsign", act::softsign),
        ("hardswish", act::hardswish),
        ("hard_tanh", |x| act::hard_tanh(x, -1.0, 1.0)),
        ("sigmoid", act::sigmoid),
        ("tanh", act::tanh),
        ("log_sigmoid", act::log_sigmoid),
        ("softmax", |x| act::softmax(x, -1)),
        ("log_softmax", |x| act::log_softmax(x, -1)),
        ("glu", |x| act::glu(x, -1)),
    ];
    for (name, func) in cases {
        check_case(&f, &format!("act.{name}"), &mut Relu, &["x"], |_, x| func(&x[0]), TOL);
    }
    // The module forms agree with the functions.
    let x = get(&f, "act.gelu.x");
    let pairs: Vec<(Box<dyn ferrox_nn::UnaryModule>, &str)> = vec![
        (Box::new(Gelu { approx: GeluApprox::Precise }), "act.gelu_approx.out"),
        (Box::new(LeakyRelu::default()), "act.leaky_relu.out"),
        (Box::new(Glu::default()), "act.glu.out"),
        (Box::new(Mish), "act.mish.out"),
        (Box::new(HardTanh), "act.hard_tanh.out"),
    ];
    for (mut m, key) in pairs {
        assert_close(&m.call(&x).unwrap(), &get(&f, key), TOL, key);
    }
    assert!(act::glu(&fx::ones(&[2, 3], Dtype::F32).unwrap(), -1).is_err());

    // swiglu (compiled: one fused program): silu(gate) · x against torch's silu, bit for bit
    // the unfused ops, and its gradient with respect to x (silu(gate) again).
    let g = get(&f, "act.silu.x");
    let silu_ref = get(&f, "act.silu.out");
    let ones = fx::ones(g.shape(), Dtype::F32).unwrap();
    assert_close(&act::swiglu(&g, &ones).unwrap(), &silu_ref, TOL, "swiglu");
    for dtype in [Dtype::F32, Dtype::Bf16] {
        let gd = fx::astype(&g, dtype).unwrap();
        let u = fx::astype(&fx::sin(&fx::multiply(&g, 3.0).unwrap()).unwrap(), dtype).unwrap();
        let fused = fx::astype(&act::swiglu(&gd, &u).unwrap(), Dtype::F32).unwrap().to_vec::<f32>().unwrap();
        let plain = fx::multiply(act::silu(&gd).unwrap(), &u).unwrap();
        let plain = fx::astype(&plain, Dtype::F32).unwrap().to_vec::<f32>().unwrap();
        assert!(
            fused.iter().zip(&plain).all(|(a, b)| a.to_bits() == b.to_bits()),
            "swiglu {dtype} differs from silu(g) * x"
        );
    }
    let gx =
        fx::grad(|a: &[Array]| fx::sum(&act::swiglu(&a[0], &a[1])?, None, false), &[g.clone(), ones], &[1]).unwrap();
    assert_close(&gx[0], &silu_ref, TOL, "swiglu gradient");
}

#[test]
fn sinusoidal_positional_encoding() {
    let f = fixture("nn_torch.safetensors");
    let pe = SinusoidalPositionalEncoding::new(8, 1e-4, 1.0, None, false, false).unwrap();
    assert_close(&pe.forward(&get(&f, "sinusoidal.x")).unwrap(), &get(&f, "sinusoidal.out"), TOL, "sinusoidal");
    assert!(SinusoidalPositionalEncoding::new(7, 1e-4, 1.0, None, false, false).is_err());
}

#[test]
fn dropout_statistics_and_eval() {
    fx::random::seed(7);
    let mut d = Dropout::new(0.25).unwrap();
    let x = fx::ones(&[200, 100], Dtype::F32).unwrap();
    let y = d.forward(&x).unwrap().to_vec::<f32>().unwrap();
    let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / y.len() as f64;
    assert!((kept - 0.75).abs() < 0.02, "kept fraction {kept}");
    assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
    d.train(false);
    assert_eq!(d.forward(&x).unwrap().to_vec::<f32>().unwrap(), vec![1.0; 20000]);
    assert!(Dropout::new(1.0).is_err());
}

#[test]
fn layers_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Linear>();
    check::<Sequential>();
    check::<TransformerEncoder>();
    check::<Rope>();
    check::<BatchNorm>();
}

#[test]
fn transposed_convolutions() {
    let f = fixture("nn_torch.safetensors");
    let mut c1 = ConvTranspose1d::new(3, 4, 3, 2, 1, 2, 1, 1, true).unwrap();
    check_case(&f, "conv_transpose1d", &mut c1, &["x"], |m, x| m.forward(&x[0]), TOL);
    let mut c2 = ConvTranspose2d::new(2, 3, (3, 2), (2, 1), (1, 0), (1, 1), (0, 0), 1, true).unwrap();
    check_case(&f, "conv_transpose2d", &mut c2, &["x"], |m, x| m.forward(&x[0]), TOL);
}

#[test]
fn pooling() {
    let f = fixture("nn_torch.safetensors");
    check_case(&f, "max_pool1d", &mut MaxPool1d::new(3, Some(2), 1).unwrap(), &["x"], |m, x| m.forward(&x[0]), TOL);
    check_case(
        &f,
        "max_pool2d",
        &mut MaxPool2d::new((2, 2), None, (0, 0)).unwrap(),
        &["x"],
        |m, x| m.forward(&x[0]),
        TOL,
    );
    check_case(&f, "avg_pool1d", &mut AvgPool1d::new(2, None, 0).unwrap(), &["x"], |m, x| m.forward(&x[0]), TOL);
    let mut avg = AvgPool2d::new((3, 2), Some((1, 2)), (1, 1)).unwrap();
    check_case(&f, "avg_pool2d", &mut avg, &["x"], |m, x| m.forward(&x[0]), TOL);
    assert!(MaxPool1d::new(0, None, 0).is_err());
    assert!(MaxPool2d::new((2, 2), None, (0, 0)).unwrap().forward(&fx::ones(&[2, 3], Dtype::F32).unwrap()).is_err());
    assert!(MaxPool1d::new(9, None, 0).unwrap().forward(&fx::ones(&[1, 4, 1], Dtype::F32).unwrap()).is_err());
}

#[test]
fn identity() {
    let x = fx::ones(&[2, 3], Dtype::F32).unwrap();
    assert!(Identity.forward(&x).unwrap().same(&x));
    assert!(Identity.parameters().is_empty());
}

#[test]
fn instance_norm_and_prelu() {
    let f = fixture("nn_torch.safetensors");
    let mut inorm = InstanceNorm::new(5, 1e-5, true).unwrap();
    check_case(&f, "instance_norm", &mut inorm, &["x"], |m, x| m.forward(&x[0]), TOL);
    assert!(InstanceNorm::new(5, 1e-5, false).unwrap().parameters().is_empty());
    let mut p = Prelu::new(4, 0.25).unwrap();
    assert_eq!(p.weight.to_vec::<f32>().unwrap(), [0.25; 4]);
    check_case(&f, "prelu", &mut p, &["x"], |m, x| m.forward(&x[0]), TOL);
}

#[test]
fn recurrent_layers() {
    let f = fixture("nn_torch.safetensors");
    check_case(&f, "rnn", &mut Rnn::new(3, 5, true).unwrap(), &["x"], |m, x| m.forward(&x[0], None), TOL);
    let h0 = get(&f, "rnn_h0.h0");
    check_case(&f, "rnn_h0", &mut Rnn::new(3, 5, true).unwrap(), &["x"], |m, x| m.forward(&x[0], Some(&h0)), TOL);
    check_case(&f, "gru", &mut Gru::new(3, 5, true).unwrap(), &["x"], |m, x| m.forward(&x[0], None), TOL);
    let h0 = get(&f, "gru_h0.h0");
    check_case(&f, "gru_h0", &mut Gru::new(3, 5, true).unwrap(), &["x"], |m, x| m.forward(&x[0], Some(&h0)), TOL);
    check_case(
        &f,
        "lstm",
        &mut Lstm::new(3, 5, true).unwrap(),
        &["x"],
        |m, x| Ok(m.forward(&x[0], None, None)?.0),
        TOL,
    );
    assert!(Rnn::new(3, 5, true).unwrap().forward(&fx::ones(&[2, 4, 4], Dtype::F32).unwrap(), None).is_err());
}

#[test]
fn channel_dropout_drops_whole_channels() {
    fx::random::seed(11);
    let d = Dropout2d::new(0.5).unwrap();
    let x = fx::ones(&[8, 3, 4, 16], Dtype::F32).unwrap();
    let y = d.forward(&x).unwrap().to_vec::<f32>().unwrap();
    // Each (sample, channel) is all 0 or all 2 over the 3 × 4 positions.
    let mut dropped = 0;
    for n in 0..8 {
        for c in 0..16 {
            let vals: Vec<f32> = (0..12).map(|p| y[n * 192 + p * 16 + c]).collect();
            assert!(vals.iter().all(|&v| v == vals[0]) && (vals[0] == 0.0 || vals[0] == 2.0), "{vals:?}");
            dropped += (vals[0] == 0.0) as usize;
        }
    }
    assert!((32..=96).contains(&dropped), "dropped {dropped} of 128 channels");
    let mut d3 = Dropout3d::new(0.5).unwrap();
    d3.eval_mode();
    let x3 = fx::ones(&[2, 2, 2, 2, 3], Dtype::F32).unwrap();
    assert_eq!(d3.forward(&x3).unwrap().to_vec::<f32>().unwrap(), vec![1.0; 48]);
    assert!(Dropout2d::new(0.5).unwrap().forward(&fx::ones(&[4, 3], Dtype::F32).unwrap()).is_err());
}

#[test]
fn transformer_composes_encoder_and_decoder() {
    let t = Transformer::new(8, 2, 1, 2, Some(16), 0.0, true).unwrap();
    let p = t.parameters();
    assert!(p.contains_key("encoder.layers.0.attention.key_proj.weight"));
    assert!(p.contains_key("decoder.layers.1.cross_attention.out_proj.weight"));
    assert!(p.contains_key("encoder.ln.weight") && p.contains_key("decoder.ln.bias"));
    let src = fx::random::normal(&[2, 5, 8], Dtype::F32, 0.0, 1.0, None).unwrap();
    let tgt = fx::random::normal(&[2, 3, 8], Dtype::F32, 0.0, 1.0, None).unwrap();
    let mask = MultiHeadAttention::create_additive_causal_mask(3, Dtype::F32).unwrap();
    let out = t.forward(&src, &tgt, None, Some(&mask), None).unwrap();
    let memory = t.encoder.forward(&src, None).unwrap();
    let want = t.decoder.forward(&tgt, &memory, Some(&mask), None).unwrap();
    assert_close(&out, &want, 0.0, "transformer = decoder(encoder)");
    assert_eq!(out.shape(), [2, 3, 8]);
}

#[test]
fn checkpointed_stacks_give_the_same_gradients() {
    fx::random::seed(3);
    let x = fx::random::normal(&[2, 3, 8], Dtype::F32, 0.0, 1.0, None).unwrap();
    let mem = fx::random::normal(&[2, 4, 8], Dtype::F32, 0.0, 1.0, None).unwrap();
    let mask = MultiHeadAttention::create_additive_causal_mask(3, Dtype::F32).unwrap();
    let enc = TransformerEncoder::new(2, 8, 2, Some(16), 0.0, true).unwrap();
    let dec = TransformerDecoder::new(2, 8, 2, Some(16), 0.0, false).unwrap();
    let loss_enc = |m: &mut TransformerEncoder| fx::sum(&fx::square(&m.forward(&x, Some(&mask))?)?, None, false);
    let loss_dec =
        |m: &mut TransformerDecoder| fx::sum(&fx::square(&m.forward(&x, &mem, Some(&mask), None)?)?, None, false);
    let (v0, g0) = ferrox_nn::value_and_grad(&mut enc.clone(), loss_enc).unwrap();
    let (v1, g1) = ferrox_nn::value_and_grad(&mut enc.with_checkpoint(true), loss_enc).unwrap();
    assert_close(&v1, &v0, 1e-5, "encoder loss");
    assert_eq!(g0.len(), g1.len());
    for (k, g) in &g0 {
        assert_close(&g1[k], g, 1e-4, k);
    }
    let (v0, g0) = ferrox_nn::value_and_grad(&mut dec.clone(), loss_dec).unwrap();
    let (v1, g1) = ferrox_nn::value_and_grad(&mut dec.with_checkpoint(true), loss_dec).unwrap();
    assert_close(&v1, &v0, 1e-5, "decoder loss");
    for (k, g) in &g0 {
        assert_close(&g1[k], g, 1e-4, k);
    }
}
