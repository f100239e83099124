//! `compile(f)` against `f`: identical outputs on many random elementwise compositions (with
//! broadcasting and mixed dtypes, where fusion applies), trace caching, shapeless replay,
//! composition with grad and vmap, random state, declared state, and errors.

use ferrox::{self as fx, Array, Dtype, Result, StateCell};

fn rand(shape: &[usize], dtype: Dtype, seed: u64) -> Array {
    let a = fx::random::normal(shape, Dtype::F32, 0.0, 1.0, Some(&fx::random::key(seed))).unwrap();
    fx::astype(&a, dtype).unwrap()
}

/// Bitwise equality (NaNs equal), after converting to f64.
fn assert_identical(name: &str, a: &Array, b: &Array) {
    assert_eq!(a.shape(), b.shape(), "{name}: shape");
    assert_eq!(a.dtype(), b.dtype(), "{name}: dtype");
    let x: Vec<f64> = a.to_vec().unwrap();
    let y: Vec<f64> = b.to_vec().unwrap();
    for (i, (p, q)) in x.iter().zip(&y).enumerate() {
        assert!(p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()), "{name}[{i}]: {p} vs {q}");
    }
}

/// A tiny deterministic generator for the random programs.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

/// A random elementwise program over the inputs: a list of (op code, operand, operand).
fn program(seed: u64, n_inputs: usize, len: usize) -> Vec<(usize, usize, usize)> {
    let mut r = Lcg(seed);
    (0..len).map(|i| (r.next(16), r.next(n_inputs + i), r.next(n_inputs + i))).collect()
}

fn run_program(prog: &[(usize, usize, usize)], inputs: &[Array]) -> Result<Vec<Array>> {
    let mut vals: Vec<Array> = inputs.to_vec();
    for &(op, a, b) in prog {
        let (x, y) = (&vals[a], &vals[b]);
        let v = match op {
            0 => fx::add(x, y)?,
            1 => fx::multiply(x, y)?,
            2 => fx::subtract(x, 0.5)?,
            3 => fx::exp(&fx::minimum(x, 3.0)?)?,
            4 => fx::tanh(x)?,
            5 => fx::maximum(x, y)?,
            6 => fx::where_(&fx::greater(x, y)?, x, y)?,
            7 => fx::astype(x, Dtype::Bf16)?,
            8 => fx::astype(x, Dtype::F32)?,
            9 => fx::sigmoid(x)?,
            10 => fx::divide(x, &fx::add(&fx::abs(y)?, 1.0)?)?,
            11 => fx::sqrt(&fx::abs(x)?)?,
            12 => fx::erf(x)?,
            13 => fx::square(x)?,
            14 => fx::negative(x)?,
            _ => fx::multiply(x, 2.0)?,
        };
        vals.push(v);
    }
    // The last value and one intermediate (an output read elsewhere too).
    let mid = vals[inputs.len() + prog.len() / 2].clone();
    Ok(vec![vals.pop().unwrap(), mid])
}

#[test]
fn random_compositions_are_identical() {
    for seed in 0..40u64 {
        let prog = program(seed, 3, 6 + (seed as usize % 10));
        let dt = [Dtype::F32, Dtype::Bf16, Dtype::F64, Dtype::F16][seed as usize % 4];
        let inputs = vec![
            rand(&[3, 70, 300], dt, seed * 3),
            rand(&[70, 1], Dtype::F32, seed * 3 + 1),
            rand(&[300], dt, seed * 3 + 2),
        ];
        let p = prog.clone();
        let f = move |a: &[Array]| run_program(&p, a);
        let want = f(&inputs).unwrap();
        let compiled = fx::compile(f);
        for _ in 0..2 {
            let got = compiled.call(&inputs).unwrap();
            for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_identical(&format!("program {seed} output {j}"), g, w);
            }
        }
        assert_eq!(compiled.cached_traces(), 1);
    }
}

/// Programs wholly in bf16 or f16 (no casts) over rows long enough for the CPU's block
/// interpreter, a SwiGLU-sized 1536 among them: each fused step computes in f32 and rounds to
/// the dtype as the unfused op does, so the outputs are identical.
#[test]
fn half_precision_compositions_are_identical() {
    for seed in 0..16u64 {
        let dt = [Dtype::Bf16, Dtype::F16][seed as usize % 2];
        // Ops 7 and 8 cast: made doublings instead.
        let prog: Vec<(usize, usize, usize)> = program(seed + 500, 3, 6 + seed as usize % 8)
            .into_iter()
            .map(|(op, a, b)| (if op == 7 || op == 8 { 15 } else { op }, a, b))
            .collect();
        let inputs =
            vec![rand(&[4, 1536], dt, seed * 7), rand(&[4, 1], dt, seed * 7 + 1), rand(&[1536], dt, seed * 7 + 2)];
        let p = prog.clone();
        let f = move |a: &[Array]| run_program(&p, a);
        let want = f(&inputs).unwrap();
        let got = fx::compile(f).call(&inputs).unwrap();
        for (j, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.dtype(), dt, "program {seed} output {j}: dtype");
            assert_identical(&format!("program {seed} output {j}"), g, w);
        }
    }
}

/// Random programs with reductions among the elementwise steps (kept dims, so every value
/// still broadcasts against the others): reductions over trailing axes take their elementwise
/// producers as fused prologues, others reduce a fused prologue computed whole.
#[test]
fn random_compositions_with_reductions_are_identical() {
    for seed in 0..24u64 {
        let mut r = Lcg(seed + 1000);
        let len = 8 + seed as usize % 8;
        let dt = [Dtype::F32, Dtype::F64, Dtype::Bf16][seed as usize % 3];
        let inputs = vec![rand(&[3, 40, 260], dt, seed * 5), rand(&[40, 1], dt, seed * 5 + 1)];
        let prog: Vec<(usize, usize, usize)> =
            (0..len).map(|i| (r.next(8), r.next(inputs.len() + i), r.next(inputs.len() + i))).collect();
        let f = move |a: &[Array]| -> Result<Vec<Array>> {
            let mut vals: Vec<Array> = a.to_vec();
            for &(op, i, j) in &prog {
                let (x, y) = (&vals[i], &vals[j]);
                let v = match op {
                    0 => fx::sum(&fx::multiply(x, y)?, Some(&[-1]), true)?,
                    1 => fx::max(&fx::subtract(x, y)?, Some(&[-2, -1]), true)?,
                    2 => fx::mean(&fx::square(x)?, Some(&[0]), true)?,
                    3 => fx::subtract(x, &fx::mean(x, Some(&[-1]), true)?)?,
                    4 => fx::sum(&fx::exp(&fx::minimum(x, 2.0)?)?, None, true)?,
                    5 => fx::add(x, y)?,
                    6 => fx::tanh(&fx::multiply(x, y)?)?,
                    _ => fx::multiply(x, 0.75)?,
                };
                vals.push(v);
            }
            Ok(vec![vals.pop().unwrap()])
        };
        let want = f(&inputs).unwrap();
        let got = fx::compile(f).call(&inputs).unwrap();
        assert_identical(&format!("program {seed}"), &got[0], &want[0]);
    }
}

fn gelu_and_norm(a: &[Array]) -> Result<Vec<Array>> {
    let x = &a[0];
    let g = fx::multiply(
        &fx::multiply(x, 0.5)?,
        &fx::add(&fx::erf(&fx::multiply(x, std::f32::consts::FRAC_1_SQRT_2)?)?, 1.0)?,
    )?;
    let mu = fx::mean(&g, Some(&[-1]), true)?;
    let c = fx::subtract(&g, &mu)?;
    let var = fx::mean(&fx::square(&c)?, Some(&[-1]), true)?;
    let y = fx::multiply(&fx::multiply(&c, &fx::rsqrt(&fx::add(&var, 1e-5)?)?)?, &a[1])?;
    Ok(vec![fx::add(&y, &a[2])?])
}

#[test]
fn caching_per_signature_and_shapeless() {
    let compiled = fx::compile(gelu_and_norm);
    let args = |n: usize, d: usize, s: u64| {
        vec![rand(&[n, d], Dtype::F32, s), rand(&[d], Dtype::F32, s + 1), rand(&[d], Dtype::F32, s + 2)]
    };
    for (n, s) in [(4, 1), (4, 2), (9, 3)] {
        let a = args(n, 16, s);
        assert_identical("gelu_and_norm", &compiled.call(&a).unwrap()[0], &gelu_and_norm(&a).unwrap()[0]);
    }
    assert_eq!(compiled.cached_traces(), 2);
    // Shapeless: one trace serves every row count (the mean's 1/n is over the fixed last axis).
    let shapeless = fx::compile(gelu_and_norm).shapeless(true);
    for (n, s) in [(4, 1), (9, 3), (1, 5)] {
        let a = args(n, 16, s);
        assert_identical("shapeless", &shapeless.call(&a).unwrap()[0], &gelu_and_norm(&a).unwrap()[0]);
    }
    assert_eq!(shapeless.cached_traces(), 1);
    // An op with a fixed shape cannot follow a new input shape.
    let reshaping = fx::compile(|a: &[Array]| Ok(vec![fx::reshape(&fx::exp(&a[0])?, &[6])?])).shapeless(true);
    reshaping.call(&[rand(&[2, 3], Dtype::F32, 1)]).unwrap();
    let e = reshaping.call(&[rand(&[3, 3], Dtype::F32, 1)]).unwrap_err();
    assert!(e.to_string().contains("shapeless"), "{e}");
}

#[test]
fn common_subexpressions_and_constants() {
    // The same expression twice, and a captured pending constant: results match the plain call.
    let c = fx::exp(&rand(&[5], Dtype::F32, 9)).unwrap();
    let f = move |a: &[Array]| {
        let u = fx::sin(&fx::multiply(&a[0], 3.0)?)?;
        let v = fx::sin(&fx::multiply(&a[0], 3.0)?)?;
        Ok(vec![fx::add(&fx::add(&u, &v)?, &c)?, u])
    };
    let x = rand(&[4, 5], Dtype::F32, 1);
    let want = f(std::slice::from_ref(&x)).unwrap();
    let got = fx::compile(f).call(&[x]).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert_identical("cse", g, w);
    }
}

#[test]
fn composes_with_grad_and_vmap() {
    let f = |a: &[Array]| gelu_and_norm(a).map(|v| v.into_iter().next().unwrap());
    let loss = move |a: &[Array]| fx::sum(&fx::square(&f(a)?)?, None, false);
    let args = vec![rand(&[3, 8], Dtype::F64, 1), rand(&[8], Dtype::F64, 2), rand(&[8], Dtype::F64, 3)];
    let want = fx::grad(loss, &args, &[0, 1, 2]).unwrap();
    // grad of a compiled function.
    let compiled = fx::compile(move |a: &[Array]| Ok(vec![loss(a)?]));
    let got = fx::grad(|a: &[Array]| Ok(compiled.call(a)?.remove(0)), &args, &[0, 1, 2]).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!(fx::allclose(g, w, 1e-12, 1e-12, false).unwrap().item::<bool>().unwrap());
    }
    // compile of a gradient.
    let compiled_grad = fx::compile(move |a: &[Array]| fx::grad(loss, a, &[0, 1, 2]));
    for (g, w) in compiled_grad.call(&args).unwrap().iter().zip(&want) {
        assert_identical("compile(grad)", g, w);
    }
    // vmap of a compiled function and compile of a vmapped one.
    let xs = rand(&[5, 3, 8], Dtype::F32, 4);
    let (w, b) = (rand(&[8], Dtype::F32, 5), rand(&[8], Dtype::F32, 6));
    let inputs = [xs, w, b];
    let axes = [Some(0), None, None];
    let plain = fx::vmap_call(&gelu_and_norm, &inputs, &axes, &[Some(0)]).unwrap();
    let c = fx::compile(gelu_and_norm);
    let vm = fx::vmap_call(&|a: &[Array]| c.call(a), &inputs, &axes, &[Some(0)]).unwrap();
    assert_identical("vmap(compile)", &vm[0], &plain[0]);
    let cv = fx::compile(move |a: &[Array]| fx::vmap_call(&gelu_and_norm, a, &axes, &[Some(0)]));
    assert_identical("compile(vmap)", &cv.call(&inputs).unwrap()[0], &plain[0]);
}

#[test]
fn random_state_and_keys() {
    let f = |a: &[Array]| Ok(vec![fx::add(&a[0], &fx::random::normal(&[4], Dtype::F32, 0.0, 1.0, None)?)?]);
    let x = fx::zeros(&[4], Dtype::F32).unwrap();
    fx::random::seed(11);
    let want: Vec<Vec<f32>> = (0..3).map(|_| f(std::slice::from_ref(&x)).unwrap()[0].to_vec().unwrap()).collect();
    let compiled = fx::compile(f);
    fx::random::seed(11);
    let got: Vec<Vec<f32>> =
        (0..3).map(|_| compiled.call(std::slice::from_ref(&x)).unwrap()[0].to_vec().unwrap()).collect();
    assert_eq!(got, want);
    assert_ne!(got[0], got[1], "each call draws fresh numbers");
    // An explicit key is an input like any other.
    let g = fx::compile(|a: &[Array]| Ok(vec![fx::random::uniform(0.0, 1.0, &[3], Dtype::F32, Some(&a[0]))?]));
    let k = fx::random::key(3);
    let a: Vec<f32> = g.call(std::slice::from_ref(&k)).unwrap()[0].to_vec().unwrap();
    let b: Vec<f32> = fx::random::uniform(0.0, 1.0, &[3], Dtype::F32, Some(&k)).unwrap().to_vec().unwrap();
    assert_eq!(a, b);
    let c: Vec<f32> = g.call(&[fx::random::key(4)]).unwrap()[0].to_vec().unwrap();
    assert_ne!(a, c);
}

#[test]
fn declared_state_is_read_and_written_each_call() {
    // An SGD step on state the function owns: w <- w - 0.1 * grad of sum((w * x)^2).
    let state = StateCell::new(vec![Array::from_slice(&[1.0f32, -2.0], &[2]).unwrap()]);
    let cell = state.clone();
    let step = fx::compile(move |a: &[Array]| {
        let w = cell.get().remove(0);
        let loss = |p: &[Array]| fx::sum(&fx::square(&fx::multiply(&p[0], &p[1])?)?, None, false);
        let (l, g) = fx::value_and_grad(loss, &[w.clone(), a[0].clone()], &[0])?;
        cell.set(vec![fx::subtract(&w, &fx::multiply(&g[0], 0.1)?)?]);
        Ok(vec![l])
    })
    .with_state(&state);
    let x = Array::from_slice(&[0.5f32, 1.0], &[2]).unwrap();
    let (mut w0, mut w1) = (1.0f32, -2.0f32);
    for _ in 0..3 {
        let l = step.call(std::slice::from_ref(&x)).unwrap()[0].item::<f32>().unwrap();
        assert!((l - ((w0 * 0.5).powi(2) + w1.powi(2))).abs() < 1e-6);
        w0 -= 0.1 * 2.0 * w0 * 0.25;
        w1 -= 0.1 * 2.0 * w1;
        let w: Vec<f32> = state.get()[0].to_vec().unwrap();
        assert!((w[0] - w0).abs() < 1e-6 && (w[1] - w1).abs() < 1e-6, "{w:?} vs {w0}, {w1}");
    }
    assert_eq!(step.cached_traces(), 1);
}

#[test]
fn reading_values_inside_is_an_error() {
    let f = fx::compile(|a: &[Array]| {
        let s = fx::sum(&a[0], None, false)?.item::<f32>()?;
        Ok(vec![fx::multiply(&a[0], s)?])
    });
    let e = f.call(&[rand(&[3], Dtype::F32, 1)]).unwrap_err();
    assert!(e.to_string().contains("compile"), "{e}");
    let v = fx::vmap(|a: &[Array]| Ok(vec![fx::multiply(&a[0], a[0].to_vec::<f32>()?[0])?]), &[Some(0)], &[Some(0)]);
    let e = v(&[rand(&[2, 3], Dtype::F32, 1)]).unwrap_err();
    assert!(e.to_string().contains("vmap"), "{e}");
}
