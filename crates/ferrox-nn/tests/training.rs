//! The pieces together: a training loop (the README's) that learns, and an optimizer update
//! inside `fx::compile` that equals the eager one.

use std::cell::RefCell;

use ferrox::{self as fx, Array, Dtype};
use ferrox_nn::losses::{cross_entropy, CrossEntropyOptions, Reduction};
use ferrox_nn::optim::{clip_grad_norm, schedules, Adam, AdamConfig, AdamW, AdamWConfig, Optimizer};
use ferrox_nn::{init, Params};

/// Three Gaussian blobs in 16 dimensions, labelled by blob.
fn blobs(n: usize, key: u64) -> (Array, Array) {
    let (k0, k1) = (fx::random::key(2 * key), fx::random::key(2 * key + 1));
    let labels = fx::random::randint(0, 3, &[n], Dtype::I32, Some(&k0)).unwrap();
    let centers =
        fx::multiply(fx::random::normal(&[3, 16], Dtype::F32, 0.0, 1.0, Some(&fx::random::key(7))).unwrap(), 2.0)
            .unwrap();
    let noise = fx::random::normal(&[n, 16], Dtype::F32, 0.0, 1.0, Some(&k1)).unwrap();
    (fx::add(fx::take(&centers, &labels, Some(0)).unwrap(), &noise).unwrap(), labels)
}

#[test]
fn the_readme_training_loop_learns() {
    let mut params = Params::new();
    let key = fx::random::key(3);
    params.insert("w".into(), init::glorot_uniform(&[16, 3], 1.0, Dtype::F32, Some(&key)).unwrap());
    params.insert("b".into(), init::constant(&[3], 0.0, Dtype::F32).unwrap());
    let warmup = schedules::linear_schedule(0.0, 5e-2, 10).unwrap();
    let decay = schedules::cosine_decay(5e-2, 90, 1e-3).unwrap();
    let lr = schedules::join_schedules(vec![warmup, decay], &[10]).unwrap();
    let mut opt = AdamW::new(lr, AdamWConfig::default()).unwrap();

    let keys: Vec<String> = params.keys().cloned().collect();
    let ce = CrossEntropyOptions { reduction: Reduction::Mean, ..Default::default() };
    let mut losses = vec![];
    for i in 0..100 {
        let (x, y) = blobs(64, i);
        let loss_of = |p: &[Array]| cross_entropy(&fx::add(&fx::matmul(&x, &p[1])?, &p[0])?, &y, &ce);
        let values: Vec<Array> = params.values().cloned().collect();
        let (loss, g) = fx::value_and_grad(loss_of, &values, &[0, 1]).unwrap();
        let grads: Params = keys.iter().cloned().zip(g).collect();
        let (grads, _norm) = clip_grad_norm(&grads, 1.0).unwrap();
        opt.update(&mut params, &grads).unwrap();
        let state = opt.state();
        fx::eval(&params.values().chain(state.values()).chain([&loss]).collect::<Vec<_>>()).unwrap();
        losses.push(loss.item::<f32>().unwrap());
    }
    let first: f32 = losses[..5].iter().sum::<f32>() / 5.0;
    let last: f32 = losses[95..].iter().sum::<f32>() / 5.0;
    assert!(last < 0.2 * first && last < 0.2, "loss went from {first} to {last}: {losses:?}");
}

#[test]
fn a_compiled_update_equals_the_eager_one() {
    let key = fx::random::key(11);
    let mut start = Params::new();
    start.insert("a".into(), fx::random::normal(&[4, 5], Dtype::F32, 0.0, 1.0, Some(&key)).unwrap());
    start.insert("b".into(), fx::random::normal(&[5], Dtype::F32, 0.0, 1.0, Some(&key)).unwrap());
    let keys: Vec<String> = start.keys().cloned().collect();
    // The gradient of sum(p³)/3: p², so the steps depend on the parameters.
    let grads_of = |p: &Params| -> Params { p.iter().map(|(k, v)| (k.clone(), fx::square(v).unwrap())).collect() };
    let config = AdamConfig { bias_correction: true, ..Default::default() };
    let lr = || schedules::exponential_decay(0.1, 0.9);

    let mut eager = Adam::new(lr(), config.clone()).unwrap();
    let mut params = start.clone();
    let mut want = vec![];
    for _ in 0..4 {
        let g = grads_of(&params);
        eager.update(&mut params, &g).unwrap();
        let state = eager.state();
        fx::eval(&params.values().chain(state.values()).collect::<Vec<_>>()).unwrap();
        want.push(params.clone());
    }

    // The optimizer state lives in a StateCell, in the key order of `state()`.
    let opt = RefCell::new(Adam::new(lr(), config).unwrap());
    opt.borrow_mut().init(&start).unwrap();
    let state_keys = RefCell::new(opt.borrow().state().keys().cloned().collect::<Vec<_>>());
    let cell = fx::StateCell::new(opt.borrow().state().values().cloned().collect());
    let n = keys.len();
    let step = fx::compile(|inputs: &[Array]| {
        let mut p: Params = keys.iter().cloned().zip(inputs[..n].iter().cloned()).collect();
        let g: Params = keys.iter().cloned().zip(inputs[n..].iter().cloned()).collect();
        let mut o = opt.borrow_mut();
        o.load_state(&state_keys.borrow().iter().cloned().zip(cell.get()).collect())?;
        o.update(&mut p, &g)?;
        let st = o.state();
        *state_keys.borrow_mut() = st.keys().cloned().collect();
        cell.set(st.values().cloned().collect());
        Ok(p.into_values().collect())
    })
    .with_state(&cell);
    let mut params = start;
    for (i, w) in want.iter().enumerate() {
        let g = grads_of(&params);
        let inputs: Vec<Array> = params.values().chain(g.values()).cloned().collect();
        let out = step.call(&inputs).unwrap();
        params = keys.iter().cloned().zip(out).collect();
        for k in &keys {
            let (got, exp) = (params[k].to_vec::<f32>().unwrap(), w[k].to_vec::<f32>().unwrap());
            assert_eq!(got, exp, "step {} {k}", i + 1);
        }
    }
    // One trace (the state was created up front), replayed by the later calls.
    assert_eq!(step.cached_traces(), 1);
}
