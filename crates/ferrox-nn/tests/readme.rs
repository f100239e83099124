//! The README's ferrox-nn example, compiled and run as written (keep the two in sync).

use ferrox::{self as fx, Array};
use ferrox_nn::layers::{activations::relu, Linear, RmsNorm};
use ferrox_nn::{Module, ModuleState};

#[derive(Module)]
struct Mlp {
    layers: Vec<Linear>, // layers.0.weight, layers.0.bias, layers.1.weight, ...
    norm: RmsNorm,       // norm.weight
    temperature: Array,  // a parameter of its own: needs a ModuleState field
    #[module(skip)]
    hidden: usize, // configuration, not a parameter
    state: ModuleState,  // frozen flags and train/eval mode
}

#[test]
fn readme_example() -> fx::Result<()> {
    let dir = std::env::temp_dir().join(format!("ferrox-nn-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::env::set_current_dir(&dir)?;
    let mut model = Mlp {
        layers: vec![Linear::new(4, 16, true)?, Linear::new(16, 3, true)?],
        norm: RmsNorm::new(16, 1e-5)?,
        temperature: Array::scalar(1.0f32),
        hidden: 16,
        state: ModuleState::new(),
    };
    let (x, y) = (fx::random::normal(&[8, 4], fx::Dtype::F32, 0.0, 1.0, None)?, fx::zeros(&[8, 3], fx::Dtype::F32)?);
    model.freeze_matching("norm.*")?; // also freeze(), freeze_keys(&["bias"])
    let (loss, grads) = ferrox_nn::value_and_grad(&mut model, |m| {
        let h = m.norm.forward(&relu(&m.layers[0].forward(&x)?)?)?;
        let out = fx::multiply(&m.layers[1].forward(&h)?, &m.temperature)?;
        fx::mean(&fx::square(&fx::subtract(&out, &y)?)?, None, false)
    })?; // grads: trainable parameters only
    let lr = 0.1;
    let step: ferrox_nn::Params = grads
        .iter()
        .map(|(k, g)| Ok((k.clone(), fx::subtract(&model.parameters()[k], &fx::multiply(g, lr)?)?)))
        .collect::<fx::Result<_>>()?;
    model.update(&step)?; // unknown keys or shapes are errors
    model.save_weights("mlp.safetensors")?; // load_weights(path, strict)
    assert!(!grads.contains_key("norm.weight") && grads.contains_key("temperature"));
    assert!(loss.item::<f32>()? > 0.0);
    assert_eq!(model.hidden, 16);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
