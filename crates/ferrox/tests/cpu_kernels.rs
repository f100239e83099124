//! The CPU kernels at sizes that take their parallel, tiled, split and SIMD-dispatched paths
//! (the NumPy fixtures are small), against references computed here in f64 or with `half`.

use ferrox::fast::SdpaMask;
use ferrox::{self as fx, Array, Dtype};
use half::bf16;

/// Deterministic values in [lo, hi) (an LCG).
fn values(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((state >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect()
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// The f64 values of `v` rounded to bf16 (what a bf16 array of them holds).
fn bf16_values(v: &[f64]) -> Vec<f64> {
    v.iter().map(|&x| bf16::from_f64(x).to_f64()).collect()
}

fn bf16_array(v: &[f64], shape: &[usize]) -> Array {
    let b: Vec<bf16> = v.iter().map(|&x| bf16::from_f64(x)).collect();
    Array::from_slice(&b, shape).unwrap()
}

/// Distance in ulps between two finite f32.
fn ulps(a: f32, b: f32) -> u64 {
    let key = |v: f32| {
        let b = v.to_bits() as i64;
        if b < 0x8000_0000 {
            b
        } else {
            0x8000_0000 - b
        }
    };
    (key(a) - key(b)).unsigned_abs()
}

/// Asserts `got` is within `rel * |want| + abs` of `want`, elementwise.
fn assert_close(got: &[f64], want: &[f64], rel: f64, abs: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= rel * w.abs() + abs, "{what}[{i}]: got {g}, want {w}");
    }
}

#[test]
fn exp_and_sigmoid_on_large_arrays() {
    let mut x = f32s(&values(70_000, 1, -110.0, 95.0));
    x.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 88.72, -87.5, -103.5, 1e-30]);
    let a = Array::from_slice(&x, &[x.len()]).unwrap();
    let e = fx::exp(&a).unwrap().to_vec::<f32>().unwrap();
    let s = fx::sigmoid(&a).unwrap().to_vec::<f32>().unwrap();
    for ((&x, &e), &s) in x.iter().zip(&e).zip(&s) {
        let want = (x as f64).exp() as f32;
        let want_s = (1.0 / (1.0 + (-(x as f64)).exp())) as f32;
        if x.is_nan() {
            assert!(e.is_nan() && s.is_nan());
        } else if want.is_infinite() {
            assert_eq!(e, want, "exp({x})");
        } else {
            assert!(ulps(e, want) <= 1, "exp({x}) = {e}, want {want}");
        }
        if !x.is_nan() {
            assert!(ulps(s, want_s) <= 2, "sigmoid({x}) = {s}, want {want_s}");
        }
    }
    // bf16 computes in f32 and rounds once more.
    let v = values(40_000, 2, -20.0, 20.0);
    let got = fx::exp(&bf16_array(&v, &[v.len()])).unwrap().to_vec::<bf16>().unwrap();
    for (&x, g) in bf16_values(&v).iter().zip(got) {
        let want = x.exp();
        assert!((g.to_f64() - want).abs() <= want * 2f64.powi(-8) * 1.01, "bf16 exp({x}) = {g}");
    }
}

#[test]
fn astype_between_f32_and_bf16_on_large_arrays() {
    let mut x = f32s(&values(100_000, 3, -3e38, 3e38));
    x.extend(f32s(&values(100_000, 4, -1e-38, 1e-38)));
    x.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, f32::from_bits(0x3F80_8000)]);
    let a = Array::from_slice(&x, &[x.len()]).unwrap();
    let b = fx::astype(&a, Dtype::Bf16).unwrap();
    let got = b.to_vec::<bf16>().unwrap();
    for (&x, g) in x.iter().zip(&got) {
        assert_eq!(g.to_bits(), bf16::from_f32(x).to_bits(), "bf16 of {x:e}");
    }
    let back = fx::astype(&b, Dtype::F32).unwrap().to_vec::<f32>().unwrap();
    for (g, back) in got.iter().zip(back) {
        assert_eq!(back.to_bits(), g.to_f32().to_bits());
    }
}

#[test]
fn transposed_copies_take_the_tiled_path() {
    let (n0, n1, n2) = (3usize, 70usize, 300usize);
    let x = fx::reshape(
        &fx::arange(0.0, (n0 * n1 * n2) as f64, 1.0, Dtype::F32).unwrap(),
        &[n0 as isize, n1 as isize, n2 as isize],
    )
    .unwrap();
    let t = fx::swapaxes(&x, 1, 2).unwrap();
    let got = fx::contiguous(&t).unwrap().to_vec::<f32>().unwrap();
    let got_bf = fx::astype(&t, Dtype::Bf16).unwrap().to_vec::<bf16>().unwrap();
    let mut k = 0;
    for i in 0..n0 {
        for j in 0..n2 {
            for l in 0..n1 {
                let want = (i * n1 * n2 + l * n2 + j) as f32;
                assert_eq!(got[k], want, "at [{i}, {j}, {l}]");
                assert_eq!(got_bf[k], bf16::from_f32(want));
                k += 1;
            }
        }
    }
    // A 2-D transpose with a negative row step.
    let m = fx::reshape(&fx::arange(0.0, 200.0 * 180.0, 1.0, Dtype::F32).unwrap(), &[200, 180]).unwrap();
    let r = fx::slice(&m, &[199, 0], &[isize::MIN, 180], &[-1, 1]).unwrap().t();
    let got = fx::contiguous(&r).unwrap().to_vec::<f32>().unwrap();
    for j in 0..180 {
        for i in 0..200 {
            assert_eq!(got[j * 200 + i], ((199 - i) * 180 + j) as f32);
        }
    }
}

/// The index argmax (`greater`) or argmin picks: first extreme, the first NaN winning.
fn arg_ref(x: &[f32], greater: bool) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if x[best].is_nan() {
            break;
        }
        if v.is_nan() || (greater && v > x[best]) || (!greater && v < x[best]) {
            best = i;
        }
    }
    best as u32
}

#[test]
fn arg_reductions_on_long_lines_and_many_rows() {
    // One long line (split across threads): ties across parts, then NaNs.
    let mut x = f32s(&values(300_001, 5, -1.0, 1.0));
    x[150_000] = 2.0;
    x[290_000] = 2.0;
    x[70_000] = -2.0;
    x[71_000] = -2.0;
    for nan in [None, Some(200_000usize), Some(5)] {
        let mut x = x.clone();
        if let Some(i) = nan {
            x[i] = f32::NAN;
            x[i + 1000] = f32::NAN;
        }
        let a = Array::from_slice(&x, &[x.len()]).unwrap();
        assert_eq!(fx::argmax(&a, None, false).unwrap().item::<u32>().unwrap(), arg_ref(&x, true), "{nan:?}");
        assert_eq!(fx::argmin(&a, None, false).unwrap().item::<u32>().unwrap(), arg_ref(&x, false), "{nan:?}");
    }
    // Many rows: ties, a NaN row, rows whose extreme is in the first or last element.
    let (rows, n) = (64usize, 1500usize);
    let mut x = f32s(&values(rows * n, 6, -1.0, 1.0));
    x[3 * n + 10] = 5.0;
    x[3 * n + 1400] = 5.0;
    x[4 * n + 700] = f32::NAN;
    x[5 * n] = 7.0;
    x[6 * n + n - 1] = -7.0;
    let a = Array::from_slice(&x, &[rows, n]).unwrap();
    let am = fx::argmax(&a, Some(1), false).unwrap().to_vec::<u32>().unwrap();
    let an = fx::argmin(&a, Some(1), false).unwrap().to_vec::<u32>().unwrap();
    for r in 0..rows {
        assert_eq!(am[r], arg_ref(&x[r * n..(r + 1) * n], true), "argmax row {r}");
        assert_eq!(an[r], arg_ref(&x[r * n..(r + 1) * n], false), "argmin row {r}");
    }
    // Integers, with ties.
    let xi: Vec<i32> = (0..100_000).map(|i: i32| (i * 7919) % 1000).collect();
    let a = Array::from_slice(&xi, &[xi.len()]).unwrap();
    assert_eq!(
        fx::argmax(&a, None, false).unwrap().item::<u32>().unwrap(),
        xi.iter().position(|&v| v == 999).unwrap() as u32
    );
    assert_eq!(fx::argmin(&a, None, false).unwrap().item::<u32>().unwrap(), 0);
}

#[test]
fn reductions_over_strided_axes_split_across_threads() {
    let (r, c) = (5000usize, 40usize);
    let v = values(r * c, 7, -1.0, 1.0);
    let mut x = f32s(&v);
    x[1234 * c + 7] = f32::NAN;
    let a = Array::from_slice(&x, &[r, c]).unwrap();
    let sums = fx::sum(&a, Some(&[0]), false).unwrap().to_vec::<f32>().unwrap();
    let maxs = fx::max(&a, Some(&[0]), false).unwrap().to_vec::<f32>().unwrap();
    for j in 0..c {
        let col: Vec<f64> = (0..r).map(|i| x[i * c + j] as f64).collect();
        if j == 7 {
            assert!(sums[j].is_nan() && maxs[j].is_nan());
            continue;
        }
        let want: f64 = col.iter().sum();
        assert!((sums[j] as f64 - want).abs() < 1e-3, "sum col {j}: {} vs {want}", sums[j]);
        assert_eq!(maxs[j] as f64, col.iter().cloned().fold(f64::MIN, f64::max));
    }
    // A middle axis of a 3-D array, in bf16 (f32 accumulation).
    let (d0, d1, d2) = (30usize, 500usize, 17usize);
    let v = values(d0 * d1 * d2, 8, -1.0, 1.0);
    let vb = bf16_values(&v);
    let got = fx::sum(&bf16_array(&v, &[d0, d1, d2]), Some(&[1]), false).unwrap().to_vec::<bf16>().unwrap();
    let want: Vec<f64> =
        (0..d0 * d2).map(|o| (0..d1).map(|m| vb[(o / d2) * d1 * d2 + m * d2 + o % d2]).sum::<f64>()).collect();
    let got: Vec<f64> = got.iter().map(|g| g.to_f64()).collect();
    assert_close(&got, &want, 2f64.powi(-8), 1e-3, "bf16 sum axis 1");
}

/// Softmax of each row of `x` (rows of `n`), in f64.
fn softmax_ref(x: &[f64], n: usize) -> Vec<f64> {
    x.chunks(n)
        .flat_map(|r| {
            let m = r.iter().cloned().fold(f64::MIN, f64::max);
            let s: f64 = r.iter().map(|v| (v - m).exp()).sum();
            r.iter().map(move |v| (v - m).exp() / s)
        })
        .collect()
}

#[test]
fn fused_ops_on_large_rows() {
    let (rows, n) = (20usize, 5000usize);
    let v: Vec<f64> = f32s(&values(rows * n, 9, -30.0, 30.0)).iter().map(|&x| x as f64).collect();
    let a = Array::from_slice(&f32s(&v), &[rows, n]).unwrap();
    let got: Vec<f64> =
        fx::softmax(&a, Some(&[-1]), true).unwrap().to_vec::<f32>().unwrap().iter().map(|&x| x as f64).collect();
    assert_close(&got, &softmax_ref(&v, n), 1e-5, 1e-12, "softmax f32");
    let lse: Vec<f64> =
        fx::logsumexp(&a, Some(&[-1]), false).unwrap().to_vec::<f32>().unwrap().iter().map(|&x| x as f64).collect();
    let want: Vec<f64> = v
        .chunks(n)
        .map(|r| {
            let m = r.iter().cloned().fold(f64::MIN, f64::max);
            m + r.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
        })
        .collect();
    assert_close(&lse, &want, 1e-6, 1e-6, "logsumexp f32");

    // bf16 softmax, rms_norm, layer_norm: computed in f32 from the bf16 values, rounded once.
    let (rows, n) = (64usize, 1024usize);
    let v = values(rows * n, 10, -3.0, 3.0);
    let (w, b) = (values(n, 11, 0.5, 1.5), values(n, 12, -0.5, 0.5));
    let (vb, wb, bb) = (bf16_values(&v), bf16_values(&w), bf16_values(&b));
    let x = bf16_array(&v, &[rows, n]);
    let (wa, ba) = (bf16_array(&w, &[n]), bf16_array(&b, &[n]));
    let read = |a: Array| a.to_vec::<bf16>().unwrap().iter().map(|g| g.to_f64()).collect::<Vec<f64>>();
    let bf16_rel = 2f64.powi(-8) * 1.05;
    assert_close(&read(fx::softmax(&x, Some(&[-1]), true).unwrap()), &softmax_ref(&vb, n), bf16_rel, 1e-9, "softmax");
    let (mut rms, mut ln) = (Vec::new(), Vec::new());
    for r in vb.chunks(n) {
        let ms = r.iter().map(|x| x * x).sum::<f64>() / n as f64;
        rms.extend(r.iter().zip(&wb).map(|(x, w)| x / (ms + 1e-5).sqrt() * w));
        let mean = r.iter().sum::<f64>() / n as f64;
        let var = r.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        ln.extend(r.iter().zip(&wb).zip(&bb).map(|((x, w), b)| (x - mean) / (var + 1e-5).sqrt() * w + b));
    }
    assert_close(&read(fx::fast::rms_norm(&x, Some(&wa), 1e-5).unwrap()), &rms, bf16_rel, 1e-6, "rms_norm");
    assert_close(
        &read(fx::fast::layer_norm(&x, Some(&wa), Some(&ba), 1e-5).unwrap()),
        &ln,
        bf16_rel,
        1e-2,
        "layer_norm",
    );
}

/// Attention in f64: q [B, Hq, L, D], k/v [B, Hkv, S, D]; causal as in MLX (aligned at the end:
/// query i sees keys j ≤ i + S − L, and one that sees none weighs all S keys equally).
#[allow(clippy::too_many_arguments)]
fn attention_ref(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    hq: usize,
    hkv: usize,
    l: usize,
    s: usize,
    d: usize,
    causal: bool,
) -> Vec<f64> {
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = Vec::new();
    for h in 0..hq {
        let kh = h / (hq / hkv);
        for i in 0..l {
            let qi = &q[(h * l + i) * d..(h * l + i + 1) * d];
            let last = i as isize + s as isize - l as isize;
            let blind = causal && last < 0;
            let scores: Vec<f64> = (0..s)
                .map(|j| {
                    if blind {
                        0.0
                    } else if causal && j as isize > last {
                        f64::NEG_INFINITY
                    } else {
                        qi.iter().zip(&k[(kh * s + j) * d..(kh * s + j + 1) * d]).map(|(a, b)| a * b).sum::<f64>()
                            * scale
                    }
                })
                .collect();
            let p = softmax_ref(&scores, s);
            for t in 0..d {
                out.push((0..s).map(|j| p[j] * v[(kh * s + j) * d + t]).sum());
            }
        }
    }
    out
}

#[test]
fn attention_decode_and_blocked_prefill() {
    // Heads of 64 and of 128 (the decode kernels' fixed widths) with four and three query
    // rows a key/value head, and key counts that leave a tail of fewer than four keys.
    // L = 1 and 2: grouped decode, K and V read in place; L = 80: 320 rows per kv head, two
    // blocks, through gemm.
    for ((hq, hkv, s, d), (l, causal)) in [(8usize, 2usize, 300usize, 64usize), (6, 2, 301, 128)]
        .into_iter()
        .flat_map(|shape| [(1usize, false), (2, true), (80, true), (80, false)].map(|lc| (shape, lc)))
    {
        let q = values(hq * l * d, 13, -1.0, 1.0);
        let k = values(hkv * s * d, 14, -1.0, 1.0);
        let v = values(hkv * s * d, 15, -1.0, 1.0);
        let mask = if causal { SdpaMask::Causal } else { SdpaMask::None };
        let scale = 1.0 / (d as f32).sqrt();
        let a = |x: &[f64], shape: &[usize]| Array::from_slice(&f32s(x), shape).unwrap();
        let got = fx::fast::scaled_dot_product_attention(
            &a(&q, &[1, hq, l, d]),
            &a(&k, &[1, hkv, s, d]),
            &a(&v, &[1, hkv, s, d]),
            scale,
            mask.clone(),
        )
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
        let got: Vec<f64> = got.iter().map(|&x| x as f64).collect();
        let r = |x: &[f64]| f32s(x).iter().map(|&x| x as f64).collect::<Vec<_>>();
        let want = attention_ref(&r(&q), &r(&k), &r(&v), hq, hkv, l, s, d, causal);
        assert_close(&got, &want, 1e-4, 1e-5, &format!("f32 attention D={d} L={l}"));
        let got = fx::fast::scaled_dot_product_attention(
            &bf16_array(&q, &[1, hq, l, d]),
            &bf16_array(&k, &[1, hkv, s, d]),
            &bf16_array(&v, &[1, hkv, s, d]),
            scale,
            mask,
        )
        .unwrap()
        .to_vec::<bf16>()
        .unwrap();
        let got: Vec<f64> = got.iter().map(|g| g.to_f64()).collect();
        let want = attention_ref(&bf16_values(&q), &bf16_values(&k), &bf16_values(&v), hq, hkv, l, s, d, causal);
        assert_close(&got, &want, 2f64.powi(-8) * 1.05, 1e-4, &format!("bf16 attention D={d} L={l}"));
    }
}

/// Causal attention with more queries than keys (L > S): the first L − S query rows see no
/// key and give the mean of v. L = 300, S = 200 with two query heads a key/value head: 600
/// rows in blocks of 128, whose first rows see no key, one (rows 128..256) reads only the first
/// 156 keys, and one spans the two heads; L = 3, S = 1 with grouped heads: the direct (few rows)
/// paths, bf16's own decode kernel included.
#[test]
fn attention_causal_more_queries_than_keys() {
    for (l, s, hq, hkv, d) in [(300usize, 200usize, 2usize, 1usize, 16usize), (3, 1, 4, 2, 8)] {
        let q = values(hq * l * d, 16, -1.0, 1.0);
        let k = values(hkv * s * d, 17, -1.0, 1.0);
        let v = values(hkv * s * d, 18, -1.0, 1.0);
        let scale = 1.0 / (d as f32).sqrt();
        let a = |x: &[f64], shape: &[usize]| Array::from_slice(&f32s(x), shape).unwrap();
        let (qs, ks) = ([1, hq, l, d], [1, hkv, s, d]);
        let got =
            fx::fast::scaled_dot_product_attention(&a(&q, &qs), &a(&k, &ks), &a(&v, &ks), scale, SdpaMask::Causal)
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
        let got: Vec<f64> = got.iter().map(|&x| x as f64).collect();
        let r = |x: &[f64]| f32s(x).iter().map(|&x| x as f64).collect::<Vec<_>>();
        let want = attention_ref(&r(&q), &r(&k), &r(&v), hq, hkv, l, s, d, true);
        assert_close(&got, &want, 1e-4, 1e-5, &format!("f32 causal attention L={l} S={s}"));
        let (bq, bk, bv) = (bf16_array(&q, &qs), bf16_array(&k, &ks), bf16_array(&v, &ks));
        let got = fx::fast::scaled_dot_product_attention(&bq, &bk, &bv, scale, SdpaMask::Causal)
            .unwrap()
            .to_vec::<bf16>()
            .unwrap();
        let got: Vec<f64> = got.iter().map(|g| g.to_f64()).collect();
        let want = attention_ref(&bf16_values(&q), &bf16_values(&k), &bf16_values(&v), hq, hkv, l, s, d, true);
        assert_close(&got, &want, 2f64.powi(-8) * 1.05, 1e-4, &format!("bf16 causal attention L={l} S={s}"));
    }
}

#[test]
fn attention_reads_kv_cache_prefix_views() {
    // K and V as a KV cache holds them: the first S positions of a [1, Hkv, capacity, D]
    // buffer whose unused tail is garbage, read in place (decode) and by blocks (prefill).
    let (hq, hkv, s, cap, d) = (6usize, 3usize, 50usize, 64usize, 32usize);
    let k = values(hkv * s * d, 31, -1.0, 1.0);
    let v = values(hkv * s * d, 32, -1.0, 1.0);
    let in_buffer = |x: &[f64], dtype: Dtype| -> Array {
        let full: Vec<f32> = (0..hkv * cap * d)
            .map(|i| {
                let (h, p, t) = (i / (cap * d), (i / d) % cap, i % d);
                if p < s {
                    x[(h * s + p) * d + t] as f32
                } else {
                    1e4
                }
            })
            .collect();
        let buf = fx::astype(&Array::from_slice(&full, &[1, hkv, cap, d]).unwrap(), dtype).unwrap();
        fx::eval(&[&buf]).unwrap();
        fx::slice(&buf, &[0, 0, 0, 0], &[1, hkv as isize, s as isize, d as isize], &[1, 1, 1, 1]).unwrap()
    };
    let (kc, vc) = (in_buffer(&k, Dtype::F32), in_buffer(&v, Dtype::F32));
    let r = |x: &[f64]| f32s(x).iter().map(|&x| x as f64).collect::<Vec<_>>();
    for l in [1usize, 40] {
        let q = values(hq * l * d, 33, -1.0, 1.0);
        let scale = 1.0 / (d as f32).sqrt();
        let got = fx::fast::scaled_dot_product_attention(
            &Array::from_slice(&f32s(&q), &[1, hq, l, d]).unwrap(),
            &kc,
            &vc,
            scale,
            SdpaMask::Causal,
        )
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
        let got: Vec<f64> = got.iter().map(|&x| x as f64).collect();
        let want = attention_ref(&r(&q), &r(&k), &r(&v), hq, hkv, l, s, d, true);
        assert_close(&got, &want, 1e-4, 1e-5, &format!("attention over cache views, L={l}"));
    }
    // bf16 decode reads the views in place too.
    let (kb, vb) = (in_buffer(&k, Dtype::Bf16), in_buffer(&v, Dtype::Bf16));
    let q = values(hq * d, 34, -1.0, 1.0);
    let got = fx::fast::scaled_dot_product_attention(
        &bf16_array(&q, &[1, hq, 1, d]),
        &kb,
        &vb,
        1.0 / (d as f32).sqrt(),
        SdpaMask::Causal,
    )
    .unwrap()
    .to_vec::<bf16>()
    .unwrap();
    let got: Vec<f64> = got.iter().map(|g| g.to_f64()).collect();
    // The cache holds the values rounded to f32, then to bf16.
    let want = attention_ref(&bf16_values(&q), &bf16_values(&r(&k)), &bf16_values(&r(&v)), hq, hkv, 1, s, d, true);
    assert_close(&got, &want, 2f64.powi(-8) * 1.05, 1e-4, "bf16 attention over cache views");
}

/// Decode over a long context (its keys split into chunks that are joined afterwards: enough
/// work to share between threads) with a mask that hides the first half of the keys — whole
/// chunks of them — in f64, f32, f16 and bf16: the same as attention over the second half
/// alone, with Dv ≠ Dk.
#[test]
fn decode_attention_joins_chunks_under_a_mask() {
    let (hq, hkv, s, dk, dv, hidden) = (4usize, 2usize, 1200usize, 64usize, 48usize, 600usize);
    let q = values(hq * dk, 41, -1.0, 1.0);
    let k = values(hkv * s * dk, 42, -1.0, 1.0);
    let v = values(hkv * s * dv, 43, -1.0, 1.0);
    let keep: Vec<bool> = (0..s).map(|j| j >= hidden).collect();
    let mask = Array::from_slice(&keep, &[1, 1, 1, s]).unwrap();
    let scale = 1.0 / (dk as f64).sqrt();
    // The reference over the visible keys only, every value first rounded to the dtype.
    let reference = |round: &dyn Fn(&[f64]) -> Vec<f64>| -> Vec<f64> {
        let (q, k, v) = (round(&q), round(&k), round(&v));
        let mut out = Vec::new();
        for h in 0..hq {
            let kh = h / (hq / hkv);
            let sc: Vec<f64> = (hidden..s)
                .map(|j| (0..dk).map(|t| q[h * dk + t] * k[(kh * s + j) * dk + t]).sum::<f64>() * scale)
                .collect();
            let p = softmax_ref(&sc, s - hidden);
            for t in 0..dv {
                out.push((hidden..s).map(|j| p[j - hidden] * v[(kh * s + j) * dv + t]).sum());
            }
        }
        out
    };
    let f16_values = |x: &[f64]| x.iter().map(|&v| half::f16::from_f64(v).to_f64()).collect::<Vec<_>>();
    // (dtype, rounding to it, relative and absolute tolerance)
    type Case<'a> = (Dtype, &'a dyn Fn(&[f64]) -> Vec<f64>, f64, f64);
    let cases: [Case; 4] = [
        (Dtype::F64, &|x: &[f64]| x.to_vec(), 1e-12, 1e-14),
        (Dtype::F32, &|x: &[f64]| f32s(x).iter().map(|&v| v as f64).collect(), 1e-4, 1e-5),
        (Dtype::F16, &f16_values, 2f64.powi(-11) * 1.05, 1e-3),
        (Dtype::Bf16, &bf16_values, 2f64.powi(-8) * 1.05, 1e-3),
    ];
    for (dtype, round, rel, abs) in cases {
        let a = |x: &[f64], shape: &[usize]| fx::astype(&Array::from_slice(x, shape).unwrap(), dtype).unwrap();
        let got = fx::fast::scaled_dot_product_attention(
            &a(&q, &[1, hq, 1, dk]),
            &a(&k, &[1, hkv, s, dk]),
            &a(&v, &[1, hkv, s, dv]),
            scale as f32,
            SdpaMask::Array(mask.clone()),
        )
        .unwrap();
        let got = fx::astype(&got, Dtype::F64).unwrap().to_vec::<f64>().unwrap();
        assert_close(&got, &reference(round), rel, abs, &format!("{dtype:?} decode attention under a mask"));
    }
}

#[test]
fn f32_single_row_matmul_layouts() {
    // One row of a times b stored three ways: row-major [k, n], the transpose of a row-major
    // [n, k] (a Linear weight), and a strided view (every other column of a wider matrix);
    // plus addmm's scaled addend. Against sums in f64.
    let (k, n) = (1100usize, 70usize);
    let xv = values(k, 21, -1.0, 1.0);
    let bv = values(k * n, 22, -1.0, 1.0);
    let cv = values(n, 23, -1.0, 1.0);
    let f32_array = |v: &[f64], shape: &[usize]| Array::from_slice(&f32s(v), shape).unwrap();
    let r = |v: &[f64]| f32s(v).iter().map(|&x| x as f64).collect::<Vec<_>>();
    let (xr, br, cr) = (r(&xv), r(&bv), r(&cv));
    let x = f32_array(&xv, &[1, k]);
    let b_rows = f32_array(&bv, &[k, n]);
    let bt: Vec<f64> = (0..n * k).map(|i| bv[(i % k) * n + i / k]).collect();
    let b_cols = f32_array(&bt, &[n, k]).t();
    let wide: Vec<f64> = (0..k * 2 * n).map(|i| if i % 2 == 0 { bv[i / 2] } else { 9.0 }).collect();
    let b_strided = fx::slice(&f32_array(&wide, &[k, 2 * n]), &[0, 0], &[k as isize, 2 * n as isize], &[1, 2]).unwrap();
    let want: Vec<f64> = (0..n).map(|j| (0..k).map(|t| xr[t] * br[t * n + j]).sum()).collect();
    for (name, b) in [("rows", &b_rows), ("columns", &b_cols), ("strided", &b_strided)] {
        let got: Vec<f64> = fx::matmul(&x, b).unwrap().to_vec::<f32>().unwrap().iter().map(|&g| g as f64).collect();
        assert_close(&got, &want, 1e-5, 1e-4, &format!("f32 single-row matmul, b {name}"));
        let c = f32_array(&cv, &[n]);
        let got: Vec<f64> =
            fx::addmm(&c, &x, b, 0.5, -2.0).unwrap().to_vec::<f32>().unwrap().iter().map(|&g| g as f64).collect();
        let want_mm: Vec<f64> = want.iter().zip(&cr).map(|(p, c)| 0.5 * p - 2.0 * c).collect();
        assert_close(&got, &want_mm, 1e-5, 1e-4, &format!("f32 single-row addmm, b {name}"));
    }
}

#[test]
fn bf16_matmul_panels_and_layouts() {
    let (m, k, n) = (33usize, 1100usize, 70usize);
    let av = values(m * k, 16, -1.0, 1.0);
    let bv = values(k * n, 17, -1.0, 1.0);
    let (ab, bb) = (bf16_values(&av), bf16_values(&bv));
    let a = bf16_array(&av, &[m, k]);
    // b row-major [k, n], and the same matrix as the transpose of a row-major [n, k].
    let b_rows = bf16_array(&bv, &[k, n]);
    let bt: Vec<f64> = (0..n * k).map(|i| bv[(i % k) * n + i / k]).collect();
    let b_cols = bf16_array(&bt, &[n, k]).t();
    for (rows, b) in [(m, &b_rows), (m, &b_cols), (1, &b_rows), (1, &b_cols)] {
        let a = if rows == m { a.clone() } else { fx::slice_axis(&a, 0, 0, 1).unwrap() };
        let got = fx::matmul(&a, b).unwrap().to_vec::<bf16>().unwrap();
        let want: Vec<f64> =
            (0..rows * n).map(|o| (0..k).map(|t| ab[(o / n) * k + t] * bb[t * n + o % n]).sum()).collect();
        let got: Vec<f64> = got.iter().map(|g| g.to_f64()).collect();
        assert_close(&got, &want, 2f64.powi(-8) * 1.05, 1e-3, &format!("bf16 matmul, {rows} rows"));
    }
}

#[test]
fn rope_over_many_positions() {
    // 300 positions from offset 1000 (the cos/sin table steps by angle addition between anchors).
    let (h, l, d, dims, offset) = (3usize, 300usize, 64usize, 48usize, 1000usize);
    let v = f32s(&values(h * l * d, 18, -1.0, 1.0));
    let x = Array::from_slice(&v, &[1, h, l, d]).unwrap();
    for traditional in [false, true] {
        let got =
            fx::fast::rope(&x, dims, traditional, Some(10000.0), 0.5, offset, None).unwrap().to_vec::<f32>().unwrap();
        let half = dims / 2;
        for (r, (row, out)) in v.chunks(d).zip(got.chunks(d)).enumerate() {
            let pos = (offset + r % l) as f64 * 0.5;
            for i in 0..half {
                let (s, c) = (pos * 10000f64.powf(-2.0 * i as f64 / dims as f64)).sin_cos();
                let (i1, i2) = if traditional { (2 * i, 2 * i + 1) } else { (i, i + half) };
                let (a, b) = (row[i1] as f64, row[i2] as f64);
                for (g, w) in [(out[i1], a * c - b * s), (out[i2], a * s + b * c)] {
                    assert!((g as f64 - w).abs() < 1e-6, "row {r} feature {i}: {g} vs {w}");
                }
            }
            assert_eq!(&out[dims..], &row[dims..]);
        }
    }
}
