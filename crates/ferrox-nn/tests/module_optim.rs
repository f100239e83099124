//! Modules and optimizers together: a derived module trained with an optimizer, one layer
//! frozen.

use ferrox::{self as fx, Dtype};
use ferrox_nn::layers::Linear;
use ferrox_nn::losses::{cross_entropy, CrossEntropyOptions, Reduction};
use ferrox_nn::optim::{AdamW, AdamWConfig, Optimizer};
use ferrox_nn::Module;

#[derive(Module)]
struct Mlp {
    layers: Vec<Linear>,
}

#[test]
fn a_module_trains_with_an_optimizer_and_frozen_layers_stay() {
    fx::random::seed(0);
    let mut mlp = Mlp { layers: vec![Linear::new(8, 16, true).unwrap(), Linear::new(16, 3, true).unwrap()] };
    mlp.freeze_matching("layers.0.*").unwrap();
    let frozen = mlp.parameters()["layers.0.weight"].clone();
    let x = fx::random::normal(&[32, 8], Dtype::F32, 0.0, 1.0, Some(&fx::random::key(1))).unwrap();
    let y = fx::random::randint(0, 3, &[32], Dtype::I32, Some(&fx::random::key(2))).unwrap();
    let ce = CrossEntropyOptions { reduction: Reduction::Mean, ..Default::default() };
    let mut opt = AdamW::new(1e-2, AdamWConfig::default()).unwrap();
    let mut losses = vec![];
    for _ in 0..50 {
        let (loss, grads) = ferrox_nn::value_and_grad(&mut mlp, |m| {
            let h = fx::maximum(&m.layers[0].forward(&x)?, 0.0)?;
            cross_entropy(&m.layers[1].forward(&h)?, &y, &ce)
        })
        .unwrap();
        let new = opt.apply_gradients(&grads, &mlp.parameters()).unwrap();
        mlp.update(&new).unwrap();
        let (params, state) = (mlp.parameters(), opt.state());
        fx::eval(&params.values().chain(state.values()).chain([&loss]).collect::<Vec<_>>()).unwrap();
        losses.push(loss.item::<f32>().unwrap());
    }
    assert!(losses[49] < 0.7 * losses[0], "{losses:?}");
    assert!(mlp.parameters()["layers.0.weight"].same(&frozen));
    assert!(opt.state().keys().all(|k| !k.starts_with("layers.0.")));
}
