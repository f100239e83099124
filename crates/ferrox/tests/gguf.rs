//! The GGUF reader against a file written by the `gguf` Python package
//! (scripts/make_gguf_fixture.py): metadata of every value type, and each tensor type
//! dequantized exactly as gguf-py's NumPy decoders do; plus malformed files.

use std::path::{Path, PathBuf};

use ferrox::io::{GgmlType, GgufFile, GgufValue};
use ferrox::{self as fx, Dtype};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/io").join(name)
}

/// A fresh directory for a test's files (the caller removes it).
fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrox-gguf-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn metadata_of_every_type() {
    let f = GgufFile::open(fixture("tiny.gguf")).unwrap();
    assert_eq!((f.version, f.alignment), (3, 32));
    let m = &f.metadata;
    let get = |k: &str| m.get(k).unwrap_or_else(|| panic!("{k} missing")).clone();
    assert_eq!(get("general.architecture").as_str(), Some("llama"));
    assert_eq!(get("test.u8"), GgufValue::U8(200));
    assert_eq!(get("test.i8"), GgufValue::I8(-100));
    assert_eq!(get("test.u16"), GgufValue::U16(60000));
    assert_eq!(get("test.i16"), GgufValue::I16(-30000));
    assert_eq!(get("test.u32"), GgufValue::U32(4_000_000_000));
    assert_eq!(get("test.i32"), GgufValue::I32(-2_000_000_000));
    assert_eq!(get("test.f32"), GgufValue::F32(0.125));
    assert_eq!(get("test.bool"), GgufValue::Bool(true));
    assert_eq!(get("test.string").as_str(), Some("héllo gguf"));
    assert_eq!(get("test.u64"), GgufValue::U64((1 << 63) + 5));
    assert_eq!(get("test.i64"), GgufValue::I64(-(1 << 62)));
    assert_eq!(get("test.f64"), GgufValue::F64(-2.5e-300));
    let tokens: Vec<String> =
        get("test.tokens").as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(tokens, ["<s>", "</s>", "▁the", ""]);
    assert_eq!(get("test.ints"), GgufValue::Array(vec![GgufValue::I32(1), GgufValue::I32(-2), GgufValue::I32(3)]));
    assert_eq!(get("test.floats"), GgufValue::Array(vec![GgufValue::F32(0.5), GgufValue::F32(-1.5)]));
    let nested = GgufValue::Array(vec![
        GgufValue::Array(vec![GgufValue::I32(1), GgufValue::I32(2)]),
        GgufValue::Array(vec![GgufValue::I32(3)]),
    ]);
    assert_eq!(get("test.nested"), nested);
    assert_eq!(get("llama.context_length").as_u64(), Some(128));
    // Conversions between integer widths.
    assert_eq!((get("test.i8").as_i64(), get("test.i8").as_u64()), (Some(-100), None));
    assert_eq!(get("test.u16").as_f64(), Some(60000.0));
    assert_eq!(get("test.u64").as_i64(), None);
}

#[test]
fn every_tensor_type_matches_gguf_py() {
    let (file, arrays) = fx::load_gguf(fixture("tiny.gguf")).unwrap();
    let (want, _) = fx::load_safetensors(fixture("tiny_gguf_expected.safetensors")).unwrap();
    assert_eq!(arrays.len(), want.len());
    let types = [
        ("t.f32", GgmlType::F32),
        ("t.f16", GgmlType::F16),
        ("t.bf16", GgmlType::Bf16),
        ("t.q8_0", GgmlType::Q8_0),
        ("t.q4_0", GgmlType::Q4_0),
        ("t.q4_1", GgmlType::Q4_1),
        ("t.q4_k", GgmlType::Q4K),
        ("t.q5_k", GgmlType::Q5K),
        ("t.q6_k", GgmlType::Q6K),
        ("t.q8_0_3d", GgmlType::Q8_0),
        ("t.vec", GgmlType::F32),
    ];
    for (name, t) in types {
        assert_eq!(file.tensors[name].ggml_type, t, "{name}");
        let got = &arrays[name];
        let w = &want[name];
        assert_eq!(got.shape(), w.shape(), "{name}");
        let own = match t {
            GgmlType::F16 => Dtype::F16,
            GgmlType::Bf16 => Dtype::Bf16,
            _ => Dtype::F32,
        };
        assert_eq!(got.dtype(), own, "{name}");
        // gguf-py decodes in float32 with the same products: equal to the bit.
        let g = got.to_vec::<f32>().unwrap();
        let e = w.to_vec::<f32>().unwrap();
        assert!(e.iter().any(|v| *v != 0.0), "{name}: the fixture is not all zeros");
        for (i, (a, b)) in g.iter().zip(&e).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "{name}[{i}]: {a} vs {b}");
        }
        // The other output dtypes round the same values.
        for d in [Dtype::F16, Dtype::Bf16, Dtype::F32] {
            let a = file.array(name, Some(d)).unwrap();
            assert_eq!(a.dtype(), d);
            let round = fx::astype(&fx::astype(w, d).unwrap(), Dtype::F32).unwrap().to_vec::<f32>().unwrap();
            assert_eq!(a.to_vec::<f32>().unwrap(), round, "{name} as {d}");
        }
    }
    // Raw blocks stay reachable (for re-quantization): 3 rows of 2 q4_K blocks.
    assert_eq!(file.raw("t.q4_k").unwrap().len(), 3 * 2 * 144);
    assert_eq!(file.tensors["t.q4_k"].shape, [3, 512]);
}

#[test]
fn q4_0_q4_1_q8_0_q4_k_q5_k_convert_to_affine_losslessly() {
    let f = GgufFile::open(fixture("tiny.gguf")).unwrap();
    let (want, _) = fx::load_safetensors(fixture("tiny_gguf_expected.safetensors")).unwrap();
    for (name, want_bits) in
        [("t.q4_0", 4), ("t.q4_1", 4), ("t.q8_0", 8), ("t.q8_0_3d", 8), ("t.q4_k", 4), ("t.q5_k", 5)]
    {
        let (wq, s, b, bits) = f.affine(name, Dtype::F32).unwrap();
        assert_eq!(bits, want_bits);
        let w = &want[name];
        let d = fx::dequantize(&wq, &s, Some(&b), 32, bits, fx::QuantMode::Affine, None).unwrap();
        assert_eq!(d.shape(), w.shape(), "{name}");
        let (d, w) = (d.to_vec::<f32>().unwrap(), w.to_vec::<f32>().unwrap());
        for (i, (a, e)) in d.iter().zip(&w).enumerate() {
            assert!((a - e).abs() <= 1e-6 * e.abs().max(1e-3), "{name}[{i}]: {a} vs {e}");
        }
    }
    let err = f.affine("t.q6_k", Dtype::F32).unwrap_err().to_string();
    assert!(err.contains("no lossless affine form"), "{err}");
}

#[test]
fn bad_files_are_clear_errors() {
    let bytes = std::fs::read(fixture("tiny.gguf")).unwrap();
    let dir = scratch_dir("bad-files");
    let write = |name: &str, b: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    let msg = |p: PathBuf| GgufFile::open(p).unwrap_err().to_string();
    assert!(msg(write("magic.gguf", b"GGML\x03\0\0\0")).contains("not a GGUF file"));
    let mut v1 = bytes.clone();
    v1[4] = 1;
    assert!(msg(write("v1.gguf", &v1)).contains("version 1"));
    let truncated = msg(write("trunc.gguf", &bytes[..bytes.len() - 100]));
    assert!(truncated.contains("past the end of the file"), "{truncated}");
    let header_cut = msg(write("header.gguf", &bytes[..200]));
    assert!(header_cut.contains("truncated") || header_cut.contains("does not fit"), "{header_cut}");
    // A huge string length is refused before allocating.
    let mut huge = bytes.clone();
    huge[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(msg(write("huge.gguf", &huge)).contains("does not fit"));
    assert!(msg(dir.join("missing.gguf")).contains("no such file"));
    std::fs::remove_dir_all(&dir).unwrap();
    let f = GgufFile::open(fixture("tiny.gguf")).unwrap();
    assert!(f.array("nope", None).unwrap_err().to_string().contains("no tensor named"));
    assert!(f.array("t.f32", Some(Dtype::I32)).is_err());
}
