//! `AnyLinear::concat_outputs` and `FusedLinear`: a joined layer computes each part's output
//! (checked against the parts run one by one, and dense layers against x·Wᵀ + b on the host),
//! parts that cannot be joined are refused, and fusing leaves the parts' names and values
//! (as views of the joined arrays) where they were.

mod support;

use std::sync::Arc;

use ferrox::{self as fx, Array, Dtype, QuantMode};
use ferrox_nn::layers::{AnyLinear, FusedLinear, Linear, QuantSpec, QuantizedLinear};
use ferrox_nn::{Module, Params};
use support::assert_close;

fn rand(shape: &[usize], seed: u64) -> Array {
    fx::random::normal(shape, Dtype::F32, 0.0, 1.0, Some(&fx::random::key(seed))).unwrap()
}

fn dense(inp: usize, out: usize, bias: bool, seed: u64) -> AnyLinear {
    let b = bias.then(|| rand(&[out], seed + 100));
    Linear::from_weights(rand(&[out, inp], seed), b).unwrap().into()
}

fn quantized(inp: usize, out: usize, bias: bool, spec: QuantSpec, seed: u64) -> AnyLinear {
    let Some(AnyLinear::Dense(l)) = Some(dense(inp, out, bias, seed)) else { unreachable!() };
    QuantizedLinear::from_linear(&l, spec).unwrap().into()
}

fn affine(group_size: usize, bits: usize) -> QuantSpec {
    QuantSpec { group_size, bits, mode: QuantMode::Affine }
}

/// `x Wᵀ + b` computed on the host in f64 (x `[n, in]`).
fn host_linear(x: &Array, w: &Array, b: Option<&Array>) -> Array {
    let (n, inp, out) = (x.shape()[0], x.shape()[1], w.shape()[0]);
    let f = |a: &Array| fx::astype(a, Dtype::F64).unwrap().to_vec::<f64>().unwrap();
    let (xv, wv) = (f(x), f(w));
    let bv = b.map(f).unwrap_or_else(|| vec![0.0; out]);
    let mut y = vec![0.0; n * out];
    for r in 0..n {
        for o in 0..out {
            y[r * out + o] = bv[o] + (0..inp).map(|i| xv[r * inp + i] * wv[o * inp + i]).sum::<f64>();
        }
    }
    Array::from_slice(&y, &[n, out]).unwrap()
}

/// The joined layer's output split into the parts' widths equals each part's own output.
fn check_joins(parts: &[&AnyLinear], x: &Array, tol: f64, what: &str) -> AnyLinear {
    let joined = AnyLinear::concat_outputs(parts).unwrap().unwrap_or_else(|| panic!("{what}: not joined"));
    let want: usize = parts.iter().map(|p| p.output_dims()).sum();
    assert_eq!((joined.output_dims(), joined.input_dims()), (want, parts[0].input_dims()), "{what}: dims");
    let y = joined.forward(x).unwrap();
    let mut start = 0;
    for (i, p) in parts.iter().enumerate() {
        let end = start + p.output_dims();
        let got = fx::slice_axis(&y, -1, start as isize, end as isize).unwrap();
        assert_close(&got, &p.forward(x).unwrap(), tol, &format!("{what}: part {i}"));
        start = end;
    }
    joined
}

#[test]
fn dense_parts_join_into_one_product() {
    let x = rand(&[5, 32], 1);
    for bias in [false, true] {
        let parts = [dense(32, 16, bias, 2), dense(32, 8, bias, 3), dense(32, 8, bias, 4)];
        let refs: Vec<&AnyLinear> = parts.iter().collect();
        let joined = check_joins(&refs, &x, 1e-5, &format!("dense, bias {bias}"));
        // And against x·Wᵀ + b on the host, part by part.
        let y = joined.forward(&x).unwrap();
        let mut start = 0;
        for p in &parts {
            let AnyLinear::Dense(l) = p else { unreachable!() };
            let end = start + l.output_dims();
            let got = fx::slice_axis(&y, -1, start as isize, end as isize).unwrap();
            assert_close(&got, &host_linear(&x, &l.weight, l.bias.as_ref()), 1e-4, "dense vs host");
            start = end;
        }
    }
    // Batched inputs [B, L, in] too.
    let parts = [dense(32, 4, true, 5), dense(32, 12, true, 6)];
    check_joins(&parts.iter().collect::<Vec<_>>(), &rand(&[2, 3, 32], 7), 1e-5, "dense [B, L, in]");
}

#[test]
fn quantized_parts_join_into_one_product() {
    let x = rand(&[3, 64], 10);
    let specs = [
        affine(32, 4),
        affine(64, 8),
        affine(32, 3),
        QuantSpec::new(None, None, QuantMode::Mxfp4),
        QuantSpec::new(None, None, QuantMode::Nvfp4),
    ];
    for spec in specs {
        for bias in [false, true] {
            let parts = [quantized(64, 32, bias, spec, 11), quantized(64, 16, bias, spec, 12)];
            let refs: Vec<&AnyLinear> = parts.iter().collect();
            let joined = check_joins(&refs, &x, 1e-5, &format!("{spec:?}, bias {bias}"));
            let AnyLinear::Quantized(j) = &joined else { panic!("joined layer is not quantized") };
            assert_eq!(j.spec(), spec);
            // The packed rows are the parts' rows, bit for bit.
            let AnyLinear::Quantized(first) = &parts[0] else { unreachable!() };
            let rows = fx::slice_axis(&j.weight, 0, 0, 32).unwrap();
            assert_eq!(rows.to_vec::<u32>().unwrap(), first.weight.to_vec::<u32>().unwrap());
        }
    }
}

#[test]
fn parts_that_cannot_join_are_refused() {
    let q4 = quantized(64, 32, false, affine(32, 4), 20);
    let none = |parts: &[&AnyLinear], what: &str| {
        assert!(AnyLinear::concat_outputs(parts).unwrap().is_none(), "{what}: joined");
    };
    none(&[], "no parts");
    none(&[&dense(64, 32, false, 21), &q4], "dense and quantized");
    none(&[&q4, &quantized(64, 32, false, affine(32, 8), 22)], "other bits");
    none(&[&q4, &quantized(64, 32, false, affine(64, 4), 23)], "other group size");
    let mx = QuantSpec::new(Some(32), Some(4), QuantMode::Mxfp4);
    none(&[&q4, &quantized(64, 32, false, mx, 24)], "other mode");
    none(&[&dense(64, 8, true, 25), &dense(64, 8, false, 26)], "bias on some");
    none(&[&q4, &quantized(64, 32, true, affine(32, 4), 27)], "quantized, bias on some");
    none(&[&dense(64, 8, false, 28), &dense(32, 8, false, 29)], "other input width");
    let half = Linear::from_weights(fx::astype(&rand(&[8, 64], 30), Dtype::Bf16).unwrap(), None).unwrap().into();
    none(&[&dense(64, 8, false, 31), &half], "other dtypes");

    // FusedLinear::fuse leaves such parts exactly as they were.
    let (mut a, mut b) = (dense(64, 32, false, 32), q4.clone());
    let before = (a.parameters(), b.parameters());
    assert!(FusedLinear::fuse(&mut [&mut a, &mut b]).unwrap().is_none());
    for (got, want) in [(a.parameters(), before.0), (b.parameters(), before.1)] {
        for (k, v) in want {
            assert!(got[&k].same(&v), "{k} was replaced");
        }
    }
}

#[derive(Module, Clone)]
struct Qkv {
    q_proj: AnyLinear,
    k_proj: AnyLinear,
    v_proj: AnyLinear,
}

fn qkv(quant: bool) -> Qkv {
    let make = |out, seed| {
        if quant {
            quantized(64, out, true, affine(32, 4), seed)
        } else {
            dense(64, out, true, seed)
        }
    };
    Qkv { q_proj: make(64, 40), k_proj: make(32, 41), v_proj: make(32, 42) }
}

fn values(p: &Params) -> Vec<(String, Vec<usize>, Dtype, Vec<f64>)> {
    p.iter()
        .map(|(k, v)| {
            let f = fx::astype(v, Dtype::F64).unwrap().to_vec::<f64>().unwrap();
            (k.clone(), v.shape().to_vec(), v.dtype(), f)
        })
        .collect()
}

#[test]
fn fused_parts_are_views_under_their_names() {
    for quant in [false, true] {
        let original = qkv(quant);
        let mut m = original.clone();
        let fused = {
            let Qkv { q_proj, k_proj, v_proj } = &mut m;
            FusedLinear::fuse(&mut [q_proj, k_proj, v_proj]).unwrap().expect("joined")
        };
        assert_eq!(fused.output_dims(), vec![64, 32, 32]);
        // Same names, shapes, dtypes and values as before.
        assert_eq!(values(&m.parameters()), values(&original.parameters()), "quantized {quant}");
        // Each part's arrays are views of the joined buffers.
        let joined = fused.joined().parameters();
        for (k, v) in m.parameters() {
            let local = k.split('.').next_back().unwrap();
            let shared = Arc::ptr_eq(&v.data().unwrap().buffer, &joined[local].data().unwrap().buffer);
            assert!(shared, "{k} is not a view of the joined {local}");
        }
        // Saving writes the parts as the unfused model does, and they load back.
        let dir = std::env::temp_dir().join(format!("ferrox-nn-fused-{}-{quant}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        m.save_weights(dir.join("fused.safetensors")).unwrap();
        original.save_weights(dir.join("plain.safetensors")).unwrap();
        let (a, b) = (
            std::fs::read(dir.join("fused.safetensors")).unwrap(),
            std::fs::read(dir.join("plain.safetensors")).unwrap(),
        );
        assert_eq!(a, b, "saved files differ (quantized {quant})");
        std::fs::remove_dir_all(&dir).unwrap();

        // project: through the joined layer while the parts hold its views...
        let x = rand(&[2, 3, 64], 43);
        let parts = [&m.q_proj, &m.k_proj, &m.v_proj];
        assert!(fused.is_current(&parts));
        let got = FusedLinear::project(Some(&fused), parts, &x).unwrap();
        for (g, p) in got.iter().zip([&original.q_proj, &original.k_proj, &original.v_proj]) {
            assert_close(g, &p.forward(&x).unwrap(), 1e-5, "fused projection");
        }
        // ...and part by part once one of them is replaced (here by update, as loading does).
        let new_k = qkv(quant).k_proj.parameters();
        let mut update = Params::new();
        for (k, v) in new_k {
            let scaled = if v.dtype() == Dtype::U32 { v } else { fx::multiply(&v, 2.0).unwrap() };
            update.insert(format!("k_proj.{k}"), scaled);
        }
        m.update(&update).unwrap();
        let parts = [&m.q_proj, &m.k_proj, &m.v_proj];
        assert!(!fused.is_current(&parts));
        let got = FusedLinear::project(Some(&fused), parts, &x).unwrap();
        assert_close(&got[1], &m.k_proj.forward(&x).unwrap(), 1e-6, "replaced part");
        let stale = fused.forward(&x).unwrap();
        let d = fx::max(&fx::abs(&fx::subtract(&got[1], &stale[1]).unwrap()).unwrap(), None, false).unwrap();
        assert!(d.item::<f32>().unwrap() > 1e-3, "the replaced part must not use the stale join");
    }
}
