//! Random ops: MLX's numbers for fixed keys (fixture from scripts/make_random_fixtures.py),
//! reproducibility, moments, chi-square and Kolmogorov–Smirnov goodness of fit.
//!
//! Every statistical test uses a fixed key, so it is deterministic; thresholds sit at a
//! two-sided tail probability of about 1e-4, tight enough to catch a biased sampler.

use ferrox::{self as fx, random, Array, Dtype};
use serde_json::Value;

/// Standard-normal quantile of the 1 - 1e-4/2 two-sided bound.
const Z: f64 = 3.89;

fn key(seed: u64) -> Array {
    random::key(seed)
}

fn f64s(a: &Array) -> Vec<f64> {
    a.to_vec::<f64>().unwrap()
}

fn mean_var(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let v = x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n;
    (m, v)
}

/// Upper (and lower) 1e-4 quantiles of chi-square with `df` degrees of freedom
/// (Wilson–Hilferty).
fn chi2_bounds(df: usize) -> (f64, f64) {
    let k = df as f64;
    let c = 2.0 / (9.0 * k);
    let q = |z: f64| k * (1.0 - c + z * c.sqrt()).powi(3);
    (q(-3.719), q(3.719))
}

/// Pearson's statistic of `counts` against `expected` (same length).
fn chi2(counts: &[u64], expected: &[f64]) -> f64 {
    counts.iter().zip(expected).map(|(&o, &e)| (o as f64 - e) * (o as f64 - e) / e).sum()
}

fn assert_chi2(name: &str, counts: &[u64], probs: &[f64]) {
    let n: u64 = counts.iter().sum();
    let expected: Vec<f64> = probs.iter().map(|p| p * n as f64).collect();
    let stat = chi2(counts, &expected);
    let (lo, hi) = chi2_bounds(counts.len() - 1);
    assert!(stat > lo && stat < hi, "{name}: chi-square {stat:.2} outside ({lo:.2}, {hi:.2}), counts {counts:?}");
}

fn histogram(values: &[i64], k: usize) -> Vec<u64> {
    let mut c = vec![0u64; k];
    for &v in values {
        c[v as usize] += 1;
    }
    c
}

fn normal_cdf(x: f64) -> f64 {
    0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

/// Kolmogorov–Smirnov: the largest gap between the empirical CDF of `x` and `cdf`, checked
/// against the 1e-4 critical value.
fn assert_ks(name: &str, mut x: Vec<f64>, cdf: impl Fn(f64) -> f64) {
    x.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = x.len() as f64;
    let mut d: f64 = 0.0;
    for (i, &v) in x.iter().enumerate() {
        let f = cdf(v);
        d = d.max((f - i as f64 / n).abs()).max(((i + 1) as f64 / n - f).abs());
    }
    let crit = (-0.5 * (1e-4f64 / 2.0).ln()).sqrt() / n.sqrt();
    assert!(d < crit, "{name}: KS statistic {d:.5} >= {crit:.5}");
}

// ---------------------------------------------------------------- MLX's numbers

fn fixture() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/random.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

fn i64s_of(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

fn f64s_of(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

#[test]
fn bits_match_mlx() {
    let fx_ = fixture();
    for case in fx_["bits"].as_array().unwrap() {
        let k = key(case["seed"].as_u64().unwrap());
        let shape = usizes(&case["shape"]);
        let width = case["width"].as_u64().unwrap() as usize;
        let b = random::bits(&shape, width, Some(&k)).unwrap();
        assert_eq!(b.shape(), &shape[..]);
        assert_eq!(b.dtype().size(), width);
        let got: Vec<i64> = b.to_vec::<i64>().unwrap();
        assert_eq!(got, i64s_of(&case["values"]), "bits {case}");
    }
    for case in fx_["big_bits"].as_array().unwrap() {
        let k = key(case["seed"].as_u64().unwrap());
        let shape = usizes(&case["shape"]);
        let width = case["width"].as_u64().unwrap() as usize;
        let got: Vec<i64> = random::bits(&shape, width, Some(&k)).unwrap().to_vec::<i64>().unwrap();
        let sum: i64 = got.iter().sum();
        let xor = got.iter().fold(0i64, |a, &b| a ^ b);
        assert_eq!(sum, case["sum"].as_i64().unwrap());
        assert_eq!(xor, case["xor"].as_i64().unwrap());
        assert_eq!(got[..8], i64s_of(&case["head"])[..]);
        assert_eq!(got[got.len() - 8..], i64s_of(&case["tail"])[..]);
    }
}

#[test]
fn split_matches_mlx_and_jax() {
    for case in fixture()["split"].as_array().unwrap() {
        let k = key(case["seed"].as_u64().unwrap());
        let num = case["num"].as_u64().unwrap() as usize;
        let s = random::split(&k, num).unwrap();
        assert_eq!(s.shape(), &[num, 2]);
        assert_eq!(s.to_vec::<i64>().unwrap(), i64s_of(&case["values"]), "split {case}");
    }
    // JAX's documented split of PRNGKey(0).
    let s = random::split(&key(0), 2).unwrap().to_vec::<u32>().unwrap();
    assert_eq!(s, vec![4146024105, 967050713, 2718843009, 1272950319]);
}

fn dtype_of(name: &str) -> Dtype {
    Dtype::from_name(name).unwrap_or_else(|| panic!("dtype {name}"))
}

#[test]
fn samplers_match_mlx() {
    for case in fixture()["samplers"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let k = key(case["seed"].as_u64().unwrap());
        let p = &case["params"];
        let n = case["values"].as_array().unwrap().len();
        let f = |s: &str| p[s].as_f64().unwrap();
        // (result, tolerance): None compares exactly as integers.
        let (got, tol): (Array, Option<f64>) = match name {
            "uniform" => {
                let dt = dtype_of(p["dtype"].as_str().unwrap());
                let shape = if f("low") == 0.0 { vec![n] } else { vec![2, n / 2] };
                (random::uniform(f("low"), f("high"), &shape, dt, Some(&k)).unwrap(), Some(0.0))
            }
            "normal" => {
                let dt = dtype_of(p["dtype"].as_str().unwrap());
                let tol = if dt == Dtype::F32 { 2e-6 } else { 2e-3 };
                (random::normal(&[n], dt, f("loc"), f("scale"), Some(&k)).unwrap(), Some(tol))
            }
            "randint" => {
                let dt = dtype_of(p["dtype"].as_str().unwrap());
                let (lo, hi) = (p["low"].as_i64().unwrap(), p["high"].as_i64().unwrap());
                (random::randint(lo, hi, &[n], dt, Some(&k)).unwrap(), None)
            }
            "bernoulli" => (random::bernoulli(f("p"), Some(&[n]), Some(&k)).unwrap(), None),
            "gumbel" => (random::gumbel(&[n], Dtype::F32, Some(&k)).unwrap(), Some(2e-6)),
            "truncated_normal" => (
                random::truncated_normal(f("lower"), f("upper"), Some(&[n]), Dtype::F32, Some(&k)).unwrap(),
                Some(2e-6),
            ),
            "laplace" => (random::laplace(&[n], Dtype::F32, f("loc"), f("scale"), Some(&k)).unwrap(), Some(2e-6)),
            "categorical" => {
                let logits: Vec<f32> = f64s_of(&p["logits"]).iter().map(|&v| v as f32).collect();
                let logits = Array::from_slice(&logits, &usizes(&p["shape"])).unwrap();
                let ns = p["num_samples"].as_u64().map(|v| v as usize);
                (random::categorical(&logits, -1, ns, Some(&k)).unwrap(), None)
            }
            "permutation" => (random::permutation(n, Some(&k)).unwrap(), None),
            other => panic!("unknown sampler {other}"),
        };
        assert_eq!(got.size(), n, "{name} {p}");
        match tol {
            None => assert_eq!(got.to_vec::<i64>().unwrap(), i64s_of(&case["values"]), "{name} {p}"),
            Some(tol) => {
                // The fixture holds float32 values; round both to float32 so JSON parsing
                // differences in the last f64 bit do not count.
                let f32s = |v: Vec<f64>| v.into_iter().map(|x| x as f32 as f64).collect::<Vec<_>>();
                let want = f32s(f64s_of(&case["values"]));
                for (i, (g, w)) in f32s(f64s(&got)).iter().zip(&want).enumerate() {
                    assert!((g - w).abs() <= tol * w.abs().max(1.0), "{name} {p} [{i}]: got {g}, MLX {w}");
                }
            }
        }
    }
}

#[test]
fn seeded_default_sequence_matches_mlx() {
    // The only test that uses the default key sequence (tests run in parallel).
    let seq = &fixture()["seeded_sequence"];
    let run = || {
        random::seed(seq["seed"].as_u64().unwrap());
        let mut v = f64s(&random::uniform(0.0, 1.0, &[3], Dtype::F32, None).unwrap());
        v.extend(f64s(&random::uniform(0.0, 1.0, &[3], Dtype::F32, None).unwrap()));
        v.extend(f64s(&random::normal(&[2], Dtype::F32, 0.0, 1.0, None).unwrap()));
        v
    };
    let a = run();
    let want = f64s_of(&seq["values"]);
    for (g, w) in a.iter().zip(&want) {
        assert!((g - w).abs() <= 2e-6 * w.abs().max(1.0), "got {a:?}, MLX {want:?}");
    }
    assert_eq!(a, run(), "re-seeding repeats the sequence");
    // Unseeded draws advance the state.
    let x = random::bits(&[4], 4, None).unwrap().to_vec::<u32>().unwrap();
    let y = random::bits(&[4], 4, None).unwrap().to_vec::<u32>().unwrap();
    assert_ne!(x, y);
}

// ---------------------------------------------------------------- reproducibility

#[test]
fn same_key_same_numbers_and_different_keys_differ() {
    let k = key(123);
    let a = random::normal(&[1000], Dtype::F32, 0.0, 1.0, Some(&k)).unwrap().to_vec::<f32>().unwrap();
    let b = random::normal(&[1000], Dtype::F32, 0.0, 1.0, Some(&k)).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(a, b);
    let c = random::normal(&[1000], Dtype::F32, 0.0, 1.0, Some(&key(124))).unwrap().to_vec::<f32>().unwrap();
    assert_ne!(a, c);

    let keys = random::split(&k, 4).unwrap();
    let rows: Vec<Vec<u32>> = (0..4)
        .map(|i| {
            let ki = fx::reshape_usize(&fx::slice_axis(&keys, 0, i, i + 1).unwrap(), &[2]).unwrap();
            random::bits(&[64], 4, Some(&ki)).unwrap().to_vec::<u32>().unwrap()
        })
        .collect();
    for i in 0..4 {
        for j in 0..i {
            assert_ne!(rows[i], rows[j], "split keys {i} and {j} give the same stream");
        }
    }
    // A key is a plain value: rebuilt from its words it gives the same numbers.
    let words = keys.to_vec::<u32>().unwrap();
    let k0 = Array::from_vec(vec![words[0], words[1]]);
    assert_eq!(random::bits(&[64], 4, Some(&k0)).unwrap().to_vec::<u32>().unwrap(), rows[0]);
}

#[test]
fn widths_share_one_byte_stream() {
    let k = key(9);
    let w4 = random::bits(&[6], 4, Some(&k)).unwrap().to_vec::<u32>().unwrap();
    let w1 = random::bits(&[24], 1, Some(&k)).unwrap().to_vec::<u8>().unwrap();
    let w2 = random::bits(&[12], 2, Some(&k)).unwrap().to_vec::<u16>().unwrap();
    let bytes: Vec<u8> = w4.iter().flat_map(|w| w.to_le_bytes()).collect();
    assert_eq!(w1, bytes);
    let halves: Vec<u16> = bytes.chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    assert_eq!(w2, halves);
    // Empty outputs are fine.
    let b = random::bits(&[0], 4, Some(&k)).unwrap();
    assert_eq!(b.to_vec::<u32>().unwrap(), Vec::<u32>::new());
}

#[test]
fn bits_are_balanced_and_distinct() {
    // A block large enough for the parallel fill (its exact values are checked against MLX in
    // bits_match_mlx): each bit is set half the time and words barely collide.
    let n = 100_001;
    let big = random::bits(&[n], 4, Some(&key(5))).unwrap().to_vec::<u32>().unwrap();
    assert_eq!(big.len(), n);
    let total = 32.0 * n as f64;
    for bit in 0..32 {
        let ones = big.iter().filter(|w| (*w >> bit) & 1 == 1).count() as f64;
        assert!((ones - n as f64 / 2.0).abs() < 4.5 * (n as f64 / 4.0).sqrt(), "bit {bit}: {ones} ones");
    }
    let ones: u64 = big.iter().map(|w| w.count_ones() as u64).sum();
    assert!((ones as f64 - total / 2.0).abs() < Z * (total / 4.0).sqrt(), "{ones} ones of {total}");
    let mut sorted = big.clone();
    sorted.sort_unstable();
    sorted.dedup();
    // About 1.2 collisions are expected among 1e5 random 32-bit words.
    assert!(sorted.len() >= n - 10, "{} distinct words", sorted.len());
}

// ---------------------------------------------------------------- distributions

#[test]
fn uniform_moments_and_chi_square() {
    let n = 1_000_000;
    let x = f64s(&random::uniform(0.0, 1.0, &[n], Dtype::F32, Some(&key(1))).unwrap());
    assert!(x.iter().all(|&v| (0.0..1.0).contains(&v)));
    let (m, v) = mean_var(&x);
    let nf = n as f64;
    assert!((m - 0.5).abs() < Z * (1.0 / 12.0 / nf).sqrt(), "mean {m}");
    assert!((v - 1.0 / 12.0).abs() < Z * ((1.0 / 80.0 - 1.0 / 144.0) / nf).sqrt(), "var {v}");
    let buckets: Vec<i64> = x.iter().map(|&v| (v * 100.0) as i64).collect();
    assert_chi2("uniform", &histogram(&buckets, 100), &[0.01; 100]);

    // Shifted range, array bounds, and half precision.
    let y = f64s(&random::uniform(-3.0, 5.0, &[100_000], Dtype::F32, Some(&key(2))).unwrap());
    assert!(y.iter().all(|&v| (-3.0..5.0).contains(&v)));
    assert!((mean_var(&y).0 - 1.0).abs() < Z * 8.0 * (1.0 / 12.0 / 1e5f64).sqrt());
    let lo = Array::from_slice(&[0.0f32, 10.0], &[2, 1]).unwrap();
    let hi = Array::from_slice(&[1.0f32, 20.0], &[2, 1]).unwrap();
    let z = random::uniform(&lo, &hi, &[2, 1000], Dtype::F32, Some(&key(3))).unwrap().to_vec::<f32>().unwrap();
    assert!(z[..1000].iter().all(|&v| (0.0..1.0).contains(&v)));
    assert!(z[1000..].iter().all(|&v| (10.0..20.0).contains(&v)));
    for dt in [Dtype::F16, Dtype::Bf16] {
        let h = random::uniform(0.0, 1.0, &[100_000], dt, Some(&key(4))).unwrap();
        assert_eq!(h.dtype(), dt);
        let h = f64s(&h);
        assert!(h.iter().all(|&v| (0.0..1.0).contains(&v)), "{dt} sample reached 1");
        assert!((mean_var(&h).0 - 0.5).abs() < 0.01);
    }
}

#[test]
fn randint_chi_square_and_range() {
    let n = 370_000;
    let x = random::randint(0, 37, &[n], Dtype::I32, Some(&key(11))).unwrap();
    assert_eq!(x.dtype(), Dtype::I32);
    let x = x.to_vec::<i64>().unwrap();
    assert!(x.iter().all(|&v| (0..37).contains(&v)));
    assert_chi2("randint", &histogram(&x, 37), &[1.0 / 37.0; 37]);

    let y = random::randint(-5, 3, &[10_000], Dtype::I16, Some(&key(12))).unwrap().to_vec::<i64>().unwrap();
    assert!(y.iter().all(|&v| (-5..3).contains(&v)));
    for v in -5..3 {
        assert!(y.contains(&v), "{v} never drawn");
    }
    // Full uint32-ish range stays in bounds despite float32 rounding.
    let z = random::randint(0i64, 4_000_000_000i64, &[10_000], Dtype::U32, Some(&key(13))).unwrap();
    assert!(z.to_vec::<i64>().unwrap().iter().all(|&v| (0..4_000_000_000).contains(&v)));
}

#[test]
fn normal_moments_and_ks() {
    let n = 1_000_000;
    let x = f64s(&random::normal(&[n], Dtype::F32, 0.0, 1.0, Some(&key(21))).unwrap());
    assert!(x.iter().all(|v| v.is_finite()));
    let nf = n as f64;
    let (m, v) = mean_var(&x);
    assert!(m.abs() < Z / nf.sqrt(), "mean {m}");
    assert!((v - 1.0).abs() < Z * (2.0 / nf).sqrt(), "var {v}");
    let skew = x.iter().map(|t| (t - m).powi(3)).sum::<f64>() / nf / v.powf(1.5);
    let kurt = x.iter().map(|t| (t - m).powi(4)).sum::<f64>() / nf / (v * v);
    assert!(skew.abs() < Z * (6.0 / nf).sqrt(), "skew {skew}");
    assert!((kurt - 3.0).abs() < Z * (24.0 / nf).sqrt(), "kurtosis {kurt}");
    assert_ks("normal", x, normal_cdf);

    // loc and scale, as scalars and arrays.
    let y = f64s(&random::normal(&[200_000], Dtype::F32, 3.0, 2.0, Some(&key(22))).unwrap());
    let (m, v) = mean_var(&y);
    assert!((m - 3.0).abs() < Z * 2.0 / 200_000f64.sqrt(), "mean {m}");
    assert!((v - 4.0).abs() < Z * 4.0 * (2.0 / 200_000f64).sqrt(), "var {v}");
    let loc = Array::from_slice(&[-10.0f32, 10.0], &[2, 1]).unwrap();
    let w = random::normal(&[2, 1000], Dtype::F32, &loc, 0.1, Some(&key(23))).unwrap().to_vec::<f32>().unwrap();
    assert!(w[..1000].iter().all(|&v| (v + 10.0).abs() < 1.0));
    assert!(w[1000..].iter().all(|&v| (v - 10.0).abs() < 1.0));

    for dt in [Dtype::F16, Dtype::Bf16, Dtype::F64] {
        let h = random::normal(&[100_000], dt, 0.0, 1.0, Some(&key(24))).unwrap();
        assert_eq!(h.dtype(), dt);
        let (m, v) = mean_var(&f64s(&h));
        assert!(m.abs() < 0.02 && (v - 1.0).abs() < 0.03, "{dt}: mean {m} var {v}");
    }
}

#[test]
fn truncated_normal_bounds_and_mean() {
    let (a, b) = (-1.0f64, 2.0f64);
    let n = 400_000;
    let x = f64s(&random::truncated_normal(a, b, Some(&[n]), Dtype::F32, Some(&key(31))).unwrap());
    assert!(x.iter().all(|&v| (a..=b).contains(&v)));
    let phi = |t: f64| (-0.5 * t * t).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let z = normal_cdf(b) - normal_cdf(a);
    let mu = (phi(a) - phi(b)) / z;
    let var = 1.0 + (a * phi(a) - b * phi(b)) / z - mu * mu;
    let (m, v) = mean_var(&x);
    assert!((m - mu).abs() < Z * (var / n as f64).sqrt(), "mean {m}, expected {mu}");
    assert_ks("truncated_normal", x, |t| (normal_cdf(t) - normal_cdf(a)) / z);
    let _ = v;

    // Array bounds give the broadcast shape when no shape is given; a far tail stays in bounds.
    let lo = Array::from_slice(&[0.0f32, 3.0, -5.0], &[3]).unwrap();
    let hi = Array::from_slice(&[1.0f32, 4.0, -4.5], &[3]).unwrap();
    let y = random::truncated_normal(&lo, &hi, None, Dtype::F32, Some(&key(32))).unwrap();
    assert_eq!(y.shape(), &[3]);
    let y = random::truncated_normal(&lo, &hi, Some(&[1000, 3]), Dtype::F32, Some(&key(33))).unwrap();
    for (i, v) in y.to_vec::<f32>().unwrap().iter().enumerate() {
        let (l, h) = ([0.0, 3.0, -5.0][i % 3], [1.0, 4.0, -4.5][i % 3]);
        assert!(*v >= l && *v <= h, "{v} outside [{l}, {h}]");
    }
}

#[test]
fn bernoulli_frequency() {
    let n = 1_000_000;
    let x = random::bernoulli(0.3, Some(&[n]), Some(&key(41))).unwrap();
    assert_eq!(x.dtype(), Dtype::Bool);
    let ones = x.to_vec::<i64>().unwrap().iter().sum::<i64>() as f64;
    let p = ones / n as f64;
    assert!((p - 0.3).abs() < Z * (0.3 * 0.7 / n as f64).sqrt(), "frequency {p}");
    let all = random::bernoulli(1.0, Some(&[1000]), Some(&key(42))).unwrap().to_vec::<bool>().unwrap();
    assert!(all.iter().all(|&b| b));
    let none = random::bernoulli(0.0, Some(&[1000]), Some(&key(42))).unwrap().to_vec::<bool>().unwrap();
    assert!(none.iter().all(|&b| !b));
    // An array of probabilities, one per column.
    let ps = Array::from_slice(&[0.1f32, 0.5, 0.9], &[3]).unwrap();
    let y = random::bernoulli(&ps, Some(&[100_000, 3]), Some(&key(43))).unwrap().to_vec::<i64>().unwrap();
    for (j, &pj) in [0.1f64, 0.5, 0.9].iter().enumerate() {
        let f = y.iter().skip(j).step_by(3).sum::<i64>() as f64 / 100_000.0;
        assert!((f - pj).abs() < Z * (pj * (1.0 - pj) / 1e5).sqrt(), "column {j}: {f}");
    }
    assert_eq!(random::bernoulli(&ps, None, Some(&key(44))).unwrap().shape(), &[3]);
}

#[test]
fn categorical_chi_square() {
    let probs = [0.1f64, 0.2, 0.3, 0.4];
    let logits: Vec<f32> = probs.iter().map(|p| p.ln() as f32 + 1.5).collect();
    // One distribution, many samples: MLX's inverse-CDF path.
    let l1 = Array::from_slice(&logits, &[4]).unwrap();
    let s = random::categorical(&l1, 0, Some(200_000), Some(&key(51))).unwrap();
    assert_eq!(s.shape(), &[200_000]);
    assert_eq!(s.dtype(), Dtype::U32);
    assert_chi2("categorical (inverse cdf)", &histogram(&s.to_vec::<i64>().unwrap(), 4), &probs);

    // A batch of distributions: the Gumbel-max path, per row.
    let mut rows = logits.clone();
    rows.extend(logits.iter().rev());
    let l2 = Array::from_slice(&rows, &[2, 4]).unwrap();
    let s = random::categorical(&l2, -1, Some(100_000), Some(&key(52))).unwrap();
    assert_eq!(s.shape(), &[2, 100_000]);
    let v = s.to_vec::<i64>().unwrap();
    assert_chi2("categorical (gumbel) row 0", &histogram(&v[..100_000], 4), &probs);
    let rev: Vec<f64> = probs.iter().rev().copied().collect();
    assert_chi2("categorical (gumbel) row 1", &histogram(&v[100_000..], 4), &rev);

    // Along axis 0, one sample per column, many columns.
    let cols = fx::broadcast_to(&fx::reshape_usize(&l1, &[4, 1]).unwrap(), &[4, 50_000]).unwrap();
    let s = random::categorical(&cols, 0, None, Some(&key(53))).unwrap();
    assert_eq!(s.shape(), &[50_000]);
    assert_chi2("categorical (axis 0)", &histogram(&s.to_vec::<i64>().unwrap(), 4), &probs);

    // An infinite logit wins always; -inf never.
    let l3 = Array::from_slice(&[0.0f32, f32::INFINITY, f32::NEG_INFINITY], &[3]).unwrap();
    let s = random::categorical(&l3, 0, Some(100), Some(&key(54))).unwrap().to_vec::<i64>().unwrap();
    assert!(s.iter().all(|&i| i == 1));
    let l4 = Array::from_slice(&[0.0f32, f32::NEG_INFINITY, 0.0], &[1, 3]).unwrap();
    let s = random::categorical(&l4, 1, Some(1000), Some(&key(55))).unwrap().to_vec::<i64>().unwrap();
    assert!(s.iter().all(|&i| i != 1));

    let s = random::categorical_with_shape(&l2, 1, &[5, 2], Some(&key(56))).unwrap();
    assert_eq!(s.shape(), &[5, 2]);
}

#[test]
fn gumbel_and_laplace_moments() {
    let n = 500_000;
    let nf = n as f64;
    let g = f64s(&random::gumbel(&[n], Dtype::F32, Some(&key(61))).unwrap());
    let (m, v) = mean_var(&g);
    let pi2_6 = std::f64::consts::PI.powi(2) / 6.0;
    assert!((m - 0.577_215_664_9).abs() < Z * (pi2_6 / nf).sqrt(), "gumbel mean {m}");
    assert!((v - pi2_6).abs() < 0.02, "gumbel var {v}");
    assert_ks("gumbel", g, |t| (-(-t).exp()).exp());

    let l = f64s(&random::laplace(&[n], Dtype::F32, 1.0, 2.0, Some(&key(62))).unwrap());
    let (m, v) = mean_var(&l);
    assert!((m - 1.0).abs() < Z * (8.0 / nf).sqrt(), "laplace mean {m}");
    assert!((v - 8.0).abs() < 0.1, "laplace var {v}");
    assert_ks("laplace", l, |t| {
        let z = (t - 1.0) / 2.0;
        if z < 0.0 {
            0.5 * z.exp()
        } else {
            1.0 - 0.5 * (-z).exp()
        }
    });
}

// ---------------------------------------------------------------- errors

#[test]
fn bad_arguments_are_errors() {
    let k = key(0);
    let bad_shape = Array::from_vec(vec![1u32, 2, 3]);
    let bad_dtype = Array::from_vec(vec![1i32, 2]);
    assert!(random::bits(&[4], 4, Some(&bad_shape)).is_err());
    assert!(random::bits(&[4], 4, Some(&bad_dtype)).is_err());
    assert!(random::bits(&[4], 3, Some(&k)).is_err());
    assert!(random::split(&bad_shape, 2).is_err());
    assert!(random::uniform(0.0, 1.0, &[4], Dtype::I32, Some(&k)).is_err());
    let wide = Array::from_slice(&[0.0f32; 5], &[5]).unwrap();
    assert!(random::uniform(&wide, 1.0, &[4], Dtype::F32, Some(&k)).is_err());
    assert!(random::normal(&[4], Dtype::U8, 0.0, 1.0, Some(&k)).is_err());
    assert!(random::normal(&[4], Dtype::F32, &wide, 1.0, Some(&k)).is_err());
    assert!(random::randint(5, 5, &[4], Dtype::I32, Some(&k)).is_err());
    assert!(random::randint(0, 5, &[4], Dtype::F32, Some(&k)).is_err());
    assert!(random::bernoulli(Array::from_vec(vec![1i32]), None, Some(&k)).is_err());
    assert!(random::bernoulli(&wide, Some(&[4]), Some(&k)).is_err());
    assert!(random::truncated_normal(2.0, 1.0, Some(&[4]), Dtype::F32, Some(&k)).is_err());
    assert!(random::gumbel(&[4], Dtype::I64, Some(&k)).is_err());
    assert!(random::categorical(&wide, 1, None, Some(&k)).is_err());
    assert!(random::categorical(&Array::scalar(1.0f32), 0, None, Some(&k)).is_err());
    let l2 = Array::from_slice(&[0.0f32; 6], &[2, 3]).unwrap();
    assert!(random::categorical_with_shape(&l2, 1, &[3], Some(&k)).is_err());
    let msg = random::bits(&[4], 4, Some(&bad_shape)).unwrap_err().to_string();
    assert!(msg.contains("bits"), "{msg}");
}
