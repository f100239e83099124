//! QuantizedLinear, QuantizedEmbedding and `quantize` against real mlx.nn
//! (scripts/make_qnn_fixtures.py → fixtures/quantized_layers.safetensors).

mod support;

use std::collections::HashMap;

use ferrox::{self as fx, Array, Dtype, QuantMode};
use ferrox_nn::layers::*;
use ferrox_nn::{dequantize, quantize, Module, Params, Quantizable, Quantize};
use support::{assert_close, fixture, get, under};

/// (tag, group_size, bits, mode) of the fixture's linear cases.
const LINEAR: &[(&str, usize, usize, QuantMode)] = &[
    ("lin_a4g64", 64, 4, QuantMode::Affine),
    ("lin_a3g32", 32, 3, QuantMode::Affine),
    ("lin_a8g128", 128, 8, QuantMode::Affine),
    ("lin_a6g64", 64, 6, QuantMode::Affine),
    ("lin_a2g64", 64, 2, QuantMode::Affine),
    ("lin_mxfp4", 32, 4, QuantMode::Mxfp4),
    ("lin_nvfp4", 16, 4, QuantMode::Nvfp4),
    ("lin_mxfp8", 32, 8, QuantMode::Mxfp8),
    ("lin_a4g64_bf16", 64, 4, QuantMode::Affine),
];

fn assert_equal(got: &Array, want: &Array, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtype");
    let (g, w) = (fx::astype(got, Dtype::F64).unwrap(), fx::astype(want, Dtype::F64).unwrap());
    assert_eq!(g.to_vec::<f64>().unwrap(), w.to_vec::<f64>().unwrap(), "{what}: values");
}

fn assert_same_params(got: &Params, want: &Params, what: &str) {
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{what}: parameter names");
    for (k, v) in want {
        assert_equal(&got[k], v, &format!("{what}.{k}"));
    }
}

#[test]
fn quantized_linear_matches_mlx() {
    let f = fixture("quantized_layers.safetensors");
    for &(tag, group_size, bits, mode) in LINEAR {
        let spec = QuantSpec { group_size, bits, mode };
        let dense =
            Linear::from_weights(get(&f, &format!("{tag}.dense.weight")), f.get(&format!("{tag}.dense.bias")).cloned())
                .unwrap();
        let q = QuantizedLinear::from_linear(&dense, spec).unwrap();
        // The same parameter names as MLX, and the packed words bit for bit.
        assert_same_params(&q.parameters(), &under(&f, &format!("{tag}.q.")), tag);
        assert_eq!((q.input_dims(), q.output_dims()), (128, 24));
        let y = q.forward(&get(&f, &format!("{tag}.x"))).unwrap();
        let want = get(&f, &format!("{tag}.y"));
        assert_eq!(y.dtype(), want.dtype(), "{tag}: output dtype");
        let tol = if want.dtype() == Dtype::Bf16 { 4e-2 } else { 1e-5 };
        assert_close(&y, &want, tol, tag);
        // Quantized parameters are never trained, as in MLX.
        assert!(q.trainable_parameters().is_empty(), "{tag}: trainable {:?}", q.trainable_parameters().keys());
    }
}

#[test]
fn quantized_embedding_matches_mlx() {
    let f = fixture("quantized_layers.safetensors");
    let cases = [
        ("emb_a4g64", 64, 4, QuantMode::Affine),
        ("emb_a8g32", 32, 8, QuantMode::Affine),
        ("emb_mxfp4", 32, 4, QuantMode::Mxfp4),
    ];
    for (tag, group_size, bits, mode) in cases {
        let spec = QuantSpec { group_size, bits, mode };
        let dense = Embedding::from_weight(get(&f, &format!("{tag}.dense.weight"))).unwrap();
        let q = QuantizedEmbedding::from_embedding(&dense, spec).unwrap();
        assert_same_params(&q.parameters(), &under(&f, &format!("{tag}.q.")), tag);
        assert_eq!((q.num_embeddings(), q.dims()), (30, 64));
        let y = q.forward(&get(&f, &format!("{tag}.ids"))).unwrap();
        assert_close(&y, &get(&f, &format!("{tag}.y")), 1e-6, &format!("{tag} lookup"));
        let lin = q.as_linear(&get(&f, &format!("{tag}.x"))).unwrap();
        assert_close(&lin, &get(&f, &format!("{tag}.lin")), 1e-5, &format!("{tag} as_linear"));
        assert!(q.forward(&fx::ones(&[2], Dtype::F32).unwrap()).is_err(), "float ids must be refused");
        // A single id gives one row.
        let one = q.forward(&Array::from_slice(&[3i32], &[]).unwrap()).unwrap();
        assert_eq!(one.shape(), [64]);
    }
}

/// The model of the fixture's `quantize.*` case, with swappable fields.
#[derive(Module)]
struct Small {
    emb: AnyEmbedding,
    up: AnyLinear,
    down: AnyLinear,
    head: AnyLinear,
}

impl Small {
    fn from(f: &HashMap<String, Array>) -> Small {
        let lin = |n: &str, bias: bool| -> AnyLinear {
            let b = bias.then(|| get(f, &format!("quantize.dense.{n}.bias")));
            Linear::from_weights(get(f, &format!("quantize.dense.{n}.weight")), b).unwrap().into()
        };
        Small {
            emb: Embedding::from_weight(get(f, "quantize.dense.emb.weight")).unwrap().into(),
            up: lin("up", false),
            down: lin("down", true),
            head: lin("head", false),
        }
    }

    fn forward(&self, ids: &Array) -> ferrox::Result<Array> {
        let h = self.emb.forward(ids)?;
        let u = self.up.forward(&h)?;
        let h = self.down.forward(&fx::multiply(&u, &fx::sigmoid(&u)?)?)?;
        self.head.forward(&h)
    }
}

#[test]
fn quantize_in_place_matches_mlx() {
    let f = fixture("quantized_layers.safetensors");
    let mut m = Small::from(&f);
    let spec = QuantSpec::new(Some(64), Some(4), QuantMode::Affine);
    let mut seen = Vec::new();
    let n = quantize(
        &mut m,
        spec,
        Some(&mut |path: &str, layer: &dyn Quantizable| {
            seen.push((path.to_string(), layer.dense_weight().unwrap().shape().to_vec()));
            match path {
                "emb" => Quantize::No,
                "down" => Quantize::With(QuantSpec::new(Some(32), Some(8), QuantMode::Affine)),
                _ => Quantize::Yes,
            }
        }),
    )
    .unwrap();
    assert_eq!(n, 3);
    assert_eq!(seen.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(), ["emb", "up", "down", "head"]);
    assert_same_params(&m.parameters(), &under(&f, "quantize.q."), "quantize");
    assert_close(&m.forward(&get(&f, "quantize.ids")).unwrap(), &get(&f, "quantize.y"), 1e-5, "quantized model");
    assert_eq!(m.down.quant_spec(), Some(QuantSpec { group_size: 32, bits: 8, mode: QuantMode::Affine }));
    // Only the dense embedding is still trainable.
    assert_eq!(m.trainable_parameters().keys().collect::<Vec<_>>(), ["emb.weight"]);
    // A second pass leaves quantized layers alone.
    assert_eq!(quantize(&mut m, spec, None).unwrap(), 1);
    assert!(matches!(m.emb, AnyEmbedding::Quantized(_)));
    // Dequantizing gives dense layers of the original shapes, close to the originals.
    assert_eq!(dequantize(&mut m).unwrap(), 4);
    let back = m.parameters();
    assert_eq!(back.keys().collect::<Vec<_>>(), under(&f, "quantize.dense.").keys().collect::<Vec<_>>());
    assert_close(&back["down.weight"], &get(&f, "quantize.dense.down.weight"), 2e-2, "dequantized down");
}

#[test]
fn bad_quantization_is_a_clear_error() {
    let mut m = Small::from(&fixture("quantized_layers.safetensors"));
    // Rows of 64 are not whole groups of 128... but up's rows are 64 and down's 128.
    let e = quantize(&mut m, QuantSpec::new(Some(128), Some(4), QuantMode::Affine), None).unwrap_err().to_string();
    assert!(e.contains("emb") && e.contains("groups of 128"), "{e}");
    let e = quantize(&mut m, QuantSpec::new(Some(64), Some(7), QuantMode::Affine), None).unwrap_err().to_string();
    assert!(e.contains("7 bits are not supported"), "{e}");
    let e = quantize(&mut m, QuantSpec::new(Some(64), Some(4), QuantMode::Mxfp4), None).unwrap_err().to_string();
    assert!(e.contains("mxfp4 mode needs group_size=32"), "{e}");
    // Parts that do not fit each other.
    let w = fx::zeros(&[4, 8], Dtype::U32).unwrap();
    let s = fx::zeros(&[4, 2], Dtype::F32).unwrap();
    let spec = QuantSpec::new(Some(64), Some(4), QuantMode::Affine);
    let e = QuantizedLinear::from_parts(w.clone(), s.clone(), None, None, spec).unwrap_err().to_string();
    assert!(e.contains("scales of shape [4, 2]"), "{e}");
    let s1 = fx::zeros(&[4, 1], Dtype::F32).unwrap();
    let e = QuantizedLinear::from_parts(w.clone(), s1.clone(), None, None, spec).unwrap_err().to_string();
    assert!(e.contains("affine mode needs biases"), "{e}");
    let e = QuantizedEmbedding::from_parts(fx::zeros(&[4, 8], Dtype::F32).unwrap(), s1, None, spec)
        .unwrap_err()
        .to_string();
    assert!(e.contains("uint32"), "{e}");
}
