//! An MLP classifier on a synthetic set: three interleaved spirals in the plane.
//!
//! Shows a model defined with `#[derive(Module)]`, the loss and its gradients with respect to
//! the trainable parameters (`ferrox_nn::value_and_grad`), a plain SGD step through
//! `Module::update`, and a checkpoint round trip.
//!
//! `cargo run --release -p ferrox-nn --example mlp_classifier`

use ferrox::{self as fx, Array, Dtype};
use ferrox_nn::layers::{activations::relu, Linear};
use ferrox_nn::{Module, Params};

#[derive(Module)]
struct Mlp {
    layers: Vec<Linear>,
}

impl Mlp {
    fn new(dims: &[usize]) -> fx::Result<Mlp> {
        let layers = dims.windows(2).map(|w| Linear::new(w[0], w[1], true)).collect::<fx::Result<_>>()?;
        Ok(Mlp { layers })
    }

    /// Logits `[N, classes]` for points `[N, 2]`.
    fn forward(&self, x: &Array) -> fx::Result<Array> {
        let mut h = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h)?;
            if i + 1 < self.layers.len() {
                h = relu(&h)?;
            }
        }
        Ok(h)
    }
}

/// `n` points per class on `classes` noisy spiral arms, and their labels.
fn spirals(n: usize, classes: usize) -> fx::Result<(Array, Array)> {
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    let noise =
        fx::random::normal(&[n * classes, 2], Dtype::F32, 0.0, 0.08, Some(&fx::random::key(1)))?.to_vec::<f32>()?;
    for c in 0..classes {
        for i in 0..n {
            let r = i as f32 / n as f32;
            let t = c as f32 * 2.0 * std::f32::consts::PI / classes as f32 + 4.0 * r;
            let k = 2 * (c * n + i);
            xs.push(r * t.cos() + noise[k]);
            xs.push(r * t.sin() + noise[k + 1]);
            ys.push(c as i32);
        }
    }
    Ok((Array::from_slice(&xs, &[n * classes, 2])?, Array::from_slice(&ys, &[n * classes])?))
}

/// Mean cross-entropy of `logits` `[N, C]` against integer `labels` `[N]`.
fn cross_entropy(logits: &Array, labels: &Array) -> fx::Result<Array> {
    let logp = fx::subtract(logits, &fx::logsumexp(logits, Some(&[-1]), true)?)?;
    let picked = fx::take_along_axis(&logp, &fx::expand_dims(labels, &[-1])?, Some(-1))?;
    fx::negative(&fx::mean(&picked, None, false)?)
}

fn accuracy(model: &Mlp, x: &Array, y: &Array) -> fx::Result<f32> {
    let pred = fx::argmax(&model.forward(x)?, Some(-1), false)?;
    fx::mean(&fx::astype(&fx::equal(&fx::astype(&pred, Dtype::I32)?, y)?, Dtype::F32)?, None, false)?.item::<f32>()
}

fn main() -> fx::Result<()> {
    fx::random::seed(0);
    let (x, y) = spirals(200, 3)?;
    let mut model = Mlp::new(&[2, 64, 64, 3])?;
    println!("{} parameters: {:?}", model.num_parameters(), model.parameters().keys().collect::<Vec<_>>());

    let (steps, lr) = (1500, 0.5);
    for step in 0..=steps {
        let (loss, grads) = ferrox_nn::value_and_grad(&mut model, |m| cross_entropy(&m.forward(&x)?, &y))?;
        let params = model.parameters();
        let new: Params = grads
            .iter()
            .map(|(k, g)| Ok((k.clone(), fx::subtract(&params[k], &fx::multiply(g, lr)?)?)))
            .collect::<fx::Result<_>>()?;
        model.update(&new)?;
        let values: Vec<&Array> = new.values().collect();
        fx::eval(&values)?;
        if step % 250 == 0 {
            println!("step {step:5}  loss {:.4}  accuracy {:.3}", loss.item::<f32>()?, accuracy(&model, &x, &y)?);
        }
    }

    let path = std::env::temp_dir().join("ferrox_mlp_classifier.safetensors");
    model.save_weights(&path)?;
    let mut restored = Mlp::new(&[2, 64, 64, 3])?;
    restored.load_weights(&path, true)?;
    println!("restored from {}: accuracy {:.3}", path.display(), accuracy(&restored, &x, &y)?);
    Ok(())
}
