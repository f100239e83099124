//! Times one optimizer update (eager and compiled) over a model-sized parameter map; the
//! same problem in real mlx is scripts/bench_optim_mlx.py. Run with
//! `cargo run --release -p ferrox-nn --example bench_optim [-- one]` (`one`: a single array
//! of the same size instead of 96).

use std::cell::RefCell;
use std::time::Instant;

use ferrox::{self as fx, Array, Dtype};
use ferrox_nn::optim::{AdamW, AdamWConfig, Optimizer, Sgd, SgdConfig};
use ferrox_nn::Params;

/// Twelve blocks of 4 matrices of 512×512 and 4 vectors (about 12.6M parameters), or with
/// `one`, a single 4096×3078 matrix of the same size.
fn model(one: bool) -> fx::Result<Params> {
    let mut p = Params::new();
    let key = fx::random::key(0);
    if one {
        p.insert("w".into(), fx::random::normal(&[4096, 3078], Dtype::F32, 0.0, 0.02, Some(&key))?);
    }
    for b in 0..if one { 0 } else { 12 } {
        for m in ["q", "k", "v", "o"] {
            p.insert(
                format!("layers.{b}.{m}.weight"),
                fx::random::normal(&[512, 512], Dtype::F32, 0.0, 0.02, Some(&key))?,
            );
            p.insert(format!("layers.{b}.{m}.bias"), fx::zeros(&[512], Dtype::F32)?);
        }
    }
    let all: Vec<&Array> = p.values().collect();
    fx::eval(&all)?;
    Ok(p)
}

fn eval_all(p: &Params, o: &dyn Optimizer) -> fx::Result<()> {
    let state = o.state();
    fx::eval(&p.values().chain(state.values()).collect::<Vec<_>>())
}

/// Median seconds of `iters` calls of `f`, after two warm-up calls.
fn time(iters: usize, mut f: impl FnMut() -> fx::Result<()>) -> fx::Result<f64> {
    f()?;
    f()?;
    let mut t: Vec<f64> = (0..iters)
        .map(|_| {
            let s = Instant::now();
            f().map(|_| s.elapsed().as_secs_f64())
        })
        .collect::<fx::Result<_>>()?;
    t.sort_by(f64::total_cmp);
    Ok(t[iters / 2])
}

fn bench(name: &str, make: impl Fn() -> Box<dyn Optimizer>, params: &Params, grads: &Params) -> fx::Result<()> {
    let mut opt = make();
    let mut p = params.clone();
    let eager = time(20, || {
        opt.update(&mut p, grads)?;
        eval_all(&p, opt.as_ref())
    })?;

    let opt = RefCell::new(make());
    opt.borrow_mut().init(params)?;
    let keys: Vec<String> = params.keys().cloned().collect();
    let state_keys: Vec<String> = opt.borrow().state().keys().cloned().collect();
    let cell = fx::StateCell::new(opt.borrow().state().values().cloned().collect());
    let n = keys.len();
    let step = fx::compile(|inputs: &[Array]| {
        let mut p: Params = keys.iter().cloned().zip(inputs[..n].iter().cloned()).collect();
        let g: Params = keys.iter().cloned().zip(inputs[n..].iter().cloned()).collect();
        let mut o = opt.borrow_mut();
        o.load_state(&state_keys.iter().cloned().zip(cell.get()).collect())?;
        o.update(&mut p, &g)?;
        cell.set(o.state().values().cloned().collect());
        Ok(p.into_values().collect())
    })
    .with_state(&cell);
    let mut values: Vec<Array> = params.values().cloned().collect();
    let compiled = time(20, || {
        let inputs: Vec<Array> = values.iter().chain(grads.values()).cloned().collect();
        values = step.call(&inputs)?;
        let state = cell.get();
        fx::eval(&values.iter().chain(state.iter()).collect::<Vec<_>>())
    })?;
    println!("| {name} | {:.2} | {:.2} |", eager * 1e3, compiled * 1e3);
    Ok(())
}

fn main() -> fx::Result<()> {
    let one = std::env::args().any(|a| a == "one");
    let params = model(one)?;
    let key = fx::random::key(1);
    let grads: Params = params
        .iter()
        .map(|(k, v)| Ok((k.clone(), fx::random::normal(v.shape(), Dtype::F32, 0.0, 1e-3, Some(&key))?)))
        .collect::<fx::Result<_>>()?;
    fx::eval(&grads.values().collect::<Vec<_>>())?;
    let n: usize = params.values().map(|a| a.size()).sum();
    println!("ferrox: one update of {n} float32 parameters in {} arrays (median of 20)", params.len());
    println!("| optimizer | eager ms | compiled ms |\n|---|---|---|");
    bench(
        "SGD momentum",
        || Box::new(Sgd::new(0.1, SgdConfig { momentum: 0.9, ..Default::default() }).unwrap()),
        &params,
        &grads,
    )?;
    bench("AdamW", || Box::new(AdamW::new(1e-3, AdamWConfig::default()).unwrap()), &params, &grads)?;
    Ok(())
}
