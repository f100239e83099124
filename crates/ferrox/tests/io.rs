//! safetensors / npy / npz: fixtures written by NumPy and the `safetensors` Python package
//! (scripts/make_io_fixtures.py) load to the exact bits; ferrox-written files round-trip and
//! parse with the independent `safetensors` crate; malformed files give errors, not panics.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ferrox::{self as fx, Array, Dtype};
use half::{bf16, f16};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/io")
}

/// A fresh, empty directory for one test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrox-io-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The row-major little-endian bytes of an array's elements.
fn le_bytes(a: &Array) -> Vec<u8> {
    macro_rules! bytes {
        ($t:ty) => {
            a.to_vec::<$t>().unwrap().iter().flat_map(|v| v.to_le_bytes()).collect()
        };
    }
    match a.dtype() {
        Dtype::Bool => a.to_vec::<bool>().unwrap().iter().map(|&b| b as u8).collect(),
        Dtype::U8 => bytes!(u8),
        Dtype::U16 => bytes!(u16),
        Dtype::U32 => bytes!(u32),
        Dtype::U64 => bytes!(u64),
        Dtype::I8 => bytes!(i8),
        Dtype::I16 => bytes!(i16),
        Dtype::I32 => bytes!(i32),
        Dtype::I64 => bytes!(i64),
        Dtype::F16 => bytes!(f16),
        Dtype::Bf16 => bytes!(bf16),
        Dtype::F32 => bytes!(f32),
        Dtype::F64 => bytes!(f64),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn expected() -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn check(what: &str, a: &Array, want: &serde_json::Value) {
    let dtype = Dtype::from_name(want["dtype"].as_str().unwrap()).unwrap();
    let shape: Vec<usize> = want["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    assert_eq!(a.dtype(), dtype, "{what}: dtype");
    assert_eq!(a.shape(), &shape[..], "{what}: shape");
    assert_eq!(hex(&le_bytes(a)), want["hex"].as_str().unwrap(), "{what}: values");
}

#[test]
fn fixtures_load_exactly() {
    let exp = expected();
    let mut loaded: HashMap<String, HashMap<String, Array>> = HashMap::new();
    let mut checked = 0;
    for (key, want) in &exp {
        if key.ends_with("__metadata__") {
            continue;
        }
        let a = match key.split_once('/') {
            None => fx::load_npy(fixtures().join(key)).unwrap(),
            Some((file, name)) => {
                let arrays = loaded.entry(file.to_string()).or_insert_with(|| {
                    let path = fixtures().join(file);
                    if file.ends_with(".safetensors") {
                        fx::load_safetensors(&path).unwrap().0
                    } else {
                        fx::load_npz(&path).unwrap()
                    }
                });
                arrays.get(name).unwrap_or_else(|| panic!("{key} missing")).clone()
            }
        };
        check(key, &a, want);
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} arrays checked");
    // Every array in each file was expected.
    for (file, arrays) in &loaded {
        for name in arrays.keys() {
            assert!(exp.contains_key(&format!("{file}/{name}")), "unexpected {file}/{name}");
        }
    }
}

#[test]
fn safetensors_metadata() {
    let (_, meta) = fx::load_safetensors(fixtures().join("mixed.safetensors")).unwrap();
    let want: HashMap<String, String> =
        serde_json::from_value(expected()["mixed.safetensors/__metadata__"].clone()).unwrap();
    assert_eq!(meta, want);
}

#[test]
fn safetensors_loads_lazily() {
    let (arrays, _) = fx::load_safetensors(fixtures().join("mixed.safetensors")).unwrap();
    assert!(arrays.values().all(|a| !a.is_evaluated()), "nothing is read at load");
    let w = &arrays["f32"];
    let s = fx::sum(w, None, false).unwrap();
    assert!(!w.is_evaluated(), "building ops on a loaded array reads nothing");
    s.eval().unwrap();
    assert!(w.is_evaluated(), "evaluating a consumer reads the tensor");
    assert!(!arrays["u8"].is_evaluated(), "other tensors stay unread");
    // Loaded arrays work in ops like any other.
    let v = fx::add(&arrays["i16"], 1).unwrap().to_vec::<i16>().unwrap();
    assert_eq!(v, vec![-32767, -32768, -4, 6]);
}

/// Arrays of every dtype, including a transposed (non-contiguous) one, a scalar and an empty one.
fn sample_arrays() -> Vec<(String, Array)> {
    let base = fx::arange(0.0, 12.0, 1.0, Dtype::F32).unwrap();
    let base = fx::reshape(&base, &[3, 4]).unwrap();
    let mut out = Vec::new();
    for d in Dtype::ALL {
        let x = fx::astype(&fx::subtract(&base, 5).unwrap(), d).unwrap();
        out.push((format!("x_{}", d.name()), x));
    }
    out.push(("transposed".into(), fx::multiply(&base, 0.25).unwrap().t()));
    out.push(("scalar".into(), Array::scalar(-1.5f64)));
    out.push(("empty".into(), fx::zeros(&[0, 5], Dtype::I32).unwrap()));
    out.push(("empty_last".into(), fx::zeros(&[3, 0], Dtype::F16).unwrap()));
    out.push(("nan_inf".into(), Array::from_slice(&[f32::NAN, f32::INFINITY, -0.0], &[3]).unwrap()));
    out
}

#[test]
fn safetensors_round_trip_and_independent_parser() {
    let dir = scratch("st_round_trip");
    let path = dir.join("out.safetensors");
    let arrays = sample_arrays();
    let meta: HashMap<String, String> =
        [("format".to_string(), "pt".to_string()), ("ünïcode \"q\"".to_string(), "v\n2".to_string())].into();
    fx::save_safetensors(&path, arrays.iter().map(|(k, v)| (k, v)), Some(&meta)).unwrap();

    // ferrox reads back the same bits and metadata.
    let (back, back_meta) = fx::load_safetensors(&path).unwrap();
    assert_eq!(back.len(), arrays.len());
    assert_eq!(back_meta, meta);
    for (name, a) in &arrays {
        let b = &back[name];
        assert_eq!((b.dtype(), b.shape()), (a.dtype(), a.shape()), "{name}");
        assert_eq!(le_bytes(b), le_bytes(a), "{name}");
    }

    // The `safetensors` crate (an independent parser, strict about layout) agrees.
    let bytes = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    assert_eq!(header_len % 8, 0, "header padded to 8 bytes");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), arrays.len());
    for (name, a) in &arrays {
        let t = st.tensor(name).unwrap();
        assert_eq!(t.shape(), a.shape(), "{name}");
        assert_eq!(format!("{:?}", t.dtype()), st_dtype(a.dtype()), "{name}");
        assert_eq!(t.data(), &le_bytes(a)[..], "{name}");
        let data_start = 8 + header_len as usize;
        let offset = t.data().as_ptr() as usize - bytes.as_ptr() as usize - data_start;
        assert_eq!(offset % a.dtype().size(), 0, "{name} aligned");
    }
    let (_, m) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(m.metadata().as_ref().unwrap(), &meta);

    // And the reverse: a file the crate writes loads in ferrox.
    let data: Vec<f32> = (0..6).map(|i| i as f32 * 1.5).collect();
    let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 3], &raw).unwrap();
    let path2 = dir.join("from_crate.safetensors");
    safetensors::serialize_to_file([("w", view)], &Some(meta.clone()), &path2).unwrap();
    let (m2, meta2) = fx::load_safetensors(&path2).unwrap();
    assert_eq!(m2["w"].to_vec::<f32>().unwrap(), data);
    assert_eq!(meta2, meta);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn st_dtype(d: Dtype) -> &'static str {
    match d {
        Dtype::Bool => "BOOL",
        Dtype::U8 => "U8",
        Dtype::U16 => "U16",
        Dtype::U32 => "U32",
        Dtype::U64 => "U64",
        Dtype::I8 => "I8",
        Dtype::I16 => "I16",
        Dtype::I32 => "I32",
        Dtype::I64 => "I64",
        Dtype::F16 => "F16",
        Dtype::Bf16 => "BF16",
        Dtype::F32 => "F32",
        Dtype::F64 => "F64",
    }
}

#[test]
fn npy_and_npz_round_trip() {
    let dir = scratch("np_round_trip");
    let arrays: Vec<(String, Array)> = sample_arrays().into_iter().filter(|(_, a)| a.dtype() != Dtype::Bf16).collect();
    for (name, a) in &arrays {
        let path = dir.join(format!("{name}.npy"));
        fx::save_npy(&path, a).unwrap();
        let b = fx::load_npy(&path).unwrap();
        assert_eq!((b.dtype(), b.shape()), (a.dtype(), a.shape()), "{name}");
        assert_eq!(le_bytes(&b), le_bytes(a), "{name}");
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        assert_eq!((len - a.nbytes()) % 64, 0, "{name}: header padded to 64 bytes");
    }
    for compressed in [false, true] {
        let path = dir.join(format!("out_{compressed}.npz"));
        fx::save_npz(&path, arrays.iter().map(|(k, v)| (k, v)), compressed).unwrap();
        let back = fx::load_npz(&path).unwrap();
        assert_eq!(back.len(), arrays.len());
        for (name, a) in &arrays {
            assert_eq!(le_bytes(&back[name]), le_bytes(a), "{name} (compressed: {compressed})");
        }
    }
    // bfloat16 has no NumPy dtype.
    let e = fx::save_npy(dir.join("bf.npy"), &Array::scalar(bf16::ONE)).unwrap_err().to_string();
    assert!(e.contains("bfloat16"), "{e}");
    assert!(!dir.join("bf.npy").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fortran_order_arrays_work_in_ops() {
    let a = fx::load_npy(fixtures().join("f64_fortran.npy")).unwrap();
    let want = fx::load_npz(fixtures().join("stored.npz")).unwrap(); // unrelated file: loads fine alongside
    assert!(want.contains_key("a"));
    let v = a.to_vec::<f64>().unwrap();
    // sum over the last axis, computed by ferrox on the column-major view, vs. by hand.
    let s = fx::sum(&a, Some(&[2]), false).unwrap().to_vec::<f64>().unwrap();
    let by_hand: Vec<f64> = v.chunks(2).map(|c| c[0] + c[1]).collect();
    for (x, y) in s.iter().zip(&by_hand) {
        assert!((x - y).abs() < 1e-12);
    }
    let t = fx::load_npy(fixtures().join("i16_fortran_be.npy")).unwrap();
    assert_eq!(t.to_vec::<i16>().unwrap(), (-6..6).collect::<Vec<i16>>());
}

#[test]
fn load_and_save_by_extension() {
    let dir = scratch("by_ext");
    let a = Array::from_slice(&[1i32, 2, 3], &[3]).unwrap();
    for ext in ["safetensors", "npz", "npy"] {
        let path = dir.join(format!("x.{ext}"));
        fx::save(&path, [("a", &a)]).unwrap();
        let back = match fx::load(&path).unwrap() {
            fx::io::Loaded::Array(x) => x,
            fx::io::Loaded::Arrays(m) => m["a"].clone(),
        };
        assert_eq!(back.to_vec::<i32>().unwrap(), vec![1, 2, 3], "{ext}");
    }
    assert!(fx::save(dir.join("x.npy"), [("a", &a), ("b", &a)]).is_err());
    assert!(fx::save(dir.join("x.bin"), [("a", &a)]).is_err());
    assert!(fx::load(dir.join("x.bin")).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn saving_over_a_mapped_file_keeps_loaded_arrays_valid() {
    let dir = scratch("overwrite");
    let path = dir.join("w.safetensors");
    let a = Array::from_slice(&[1.0f32, 2.0, 3.0], &[3]).unwrap();
    fx::save_safetensors(&path, [("w", &a)], None).unwrap();
    let (old, _) = fx::load_safetensors(&path).unwrap();
    old["w"].eval().unwrap();
    let b = Array::from_slice(&[9.0f32; 5], &[5]).unwrap();
    fx::save_safetensors(&path, [("w", &b)], None).unwrap();
    assert_eq!(old["w"].to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0]);
    assert_eq!(fx::load_safetensors(&path).unwrap().0["w"].to_vec::<f32>().unwrap(), vec![9.0; 5]);
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("w.safetensors")]);
    // A failed save leaves the old file alone.
    assert!(fx::save_safetensors(&path, [("__metadata__", &b)], None).is_err());
    assert_eq!(fx::load_safetensors(&path).unwrap().0["w"].to_vec::<f32>().unwrap(), vec![9.0; 5]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Writes a safetensors file with the given header text and data bytes.
fn raw_safetensors(path: &Path, header: &str, data: &[u8]) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

fn load_err(path: &Path) -> String {
    let e = fx::load_safetensors(path).unwrap_err().to_string();
    assert!(e.contains(&path.display().to_string()), "the error names the file: {e}");
    e
}

#[test]
fn malformed_safetensors_are_errors() {
    let dir = scratch("bad_st");
    let p = dir.join("bad.safetensors");

    let e = fx::load_safetensors(dir.join("missing.safetensors")).unwrap_err().to_string();
    assert!(e.contains("missing.safetensors") && e.contains("no such file"), "{e}");

    std::fs::write(&p, b"").unwrap();
    assert!(load_err(&p).contains("truncated"));
    std::fs::write(&p, [1u8, 2, 3]).unwrap();
    assert!(load_err(&p).contains("truncated"));

    std::fs::write(&p, 1000u64.to_le_bytes()).unwrap();
    assert!(load_err(&p).contains("past the end"));
    std::fs::write(&p, u64::MAX.to_le_bytes()).unwrap();
    assert!(load_err(&p).contains("header length"));

    raw_safetensors(&p, "{not json", &[]);
    assert!(load_err(&p).contains("JSON"));
    raw_safetensors(&p, "[1, 2]", &[]);
    assert!(load_err(&p).contains("object"));

    let t = |dtype: &str, shape: &str, offsets: &str| {
        format!(r#"{{"w":{{"dtype":"{dtype}","shape":{shape},"data_offsets":{offsets}}}}}"#)
    };
    raw_safetensors(&p, &t("F32", "[2]", "[0,8]"), &[0; 4]);
    let e = load_err(&p);
    assert!(e.contains("\"w\"") && e.contains("outside"), "{e}");
    raw_safetensors(&p, &t("F32", "[3]", "[0,8]"), &[0; 8]);
    assert!(load_err(&p).contains("does not fit"));
    raw_safetensors(&p, &t("F8_E4M3", "[2]", "[0,2]"), &[0; 2]);
    let e = load_err(&p);
    assert!(e.contains("\"w\"") && e.contains("F8_E4M3"), "{e}");
    raw_safetensors(&p, &t("F32", "[-1]", "[0,4]"), &[0; 4]);
    assert!(load_err(&p).contains("shape"));
    raw_safetensors(&p, &t("F32", "[1]", "[4,0]"), &[0; 4]);
    assert!(load_err(&p).contains("outside"));
    raw_safetensors(&p, &t("F32", "[4611686018427387904, 4]", "[0,4]"), &[0; 4]);
    assert!(load_err(&p).contains("does not fit"));
    raw_safetensors(&p, r#"{"w":{"shape":[1],"data_offsets":[0,4]}}"#, &[0; 4]);
    assert!(load_err(&p).contains("dtype"));
    raw_safetensors(&p, r#"{"__metadata__":{"a":1}}"#, &[]);
    assert!(load_err(&p).contains("metadata"));

    // A good file cut short in its data.
    let good = fx::Array::from_slice(&[1.0f32; 16], &[4, 4]).unwrap();
    fx::save_safetensors(&p, [("w", &good)], None).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
    assert!(load_err(&p).contains("truncated"));

    // Unaligned data and non-0/1 bools still load correctly (copied, normalized).
    raw_safetensors(
        &p,
        r#"{"b":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]},"w":{"dtype":"F32","shape":[1],"data_offsets":[3,7]}} "#,
        &[0, 2, 1, 0, 0, 0x80, 0x3f],
    );
    let (m, _) = fx::load_safetensors(&p).unwrap();
    assert_eq!(m["b"].to_vec::<bool>().unwrap(), vec![false, true, true]);
    assert_eq!(m["w"].to_vec::<f32>().unwrap(), vec![1.0]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_npy_and_npz_are_errors() {
    let dir = scratch("bad_np");
    let p = dir.join("bad.npy");
    let npy_err = |p: &Path| {
        let e = fx::load_npy(p).unwrap_err().to_string();
        assert!(e.contains(&p.display().to_string()), "the error names the file: {e}");
        e
    };
    assert!(npy_err(&dir.join("missing.npy")).contains("no such file"));
    std::fs::write(&p, b"").unwrap();
    assert!(npy_err(&p).contains("truncated"));
    std::fs::write(&p, b"PK\x03\x04 not an npy file").unwrap();
    assert!(npy_err(&p).contains("magic"));

    let good = std::fs::read(fixtures().join("f32.npy")).unwrap();
    std::fs::write(&p, &good[..good.len() - 1]).unwrap();
    assert!(npy_err(&p).contains("truncated"));
    std::fs::write(&p, &good[..50]).unwrap();
    assert!(npy_err(&p).contains("past the end"));

    let with_header = |dict: &str| {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        b.extend_from_slice(dict.as_bytes());
        b.extend_from_slice(&[0; 16]);
        b
    };
    for (dict, msg) in [
        ("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", "unsupported npy dtype"),
        ("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", "unsupported npy dtype"),
        ("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", "structured"),
        ("{'descr': '<f4', 'shape': (1,), }", "fortran_order"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", "malformed"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (100,), }", "truncated"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)", "malformed"),
        ("not a dict", "malformed"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (9999999999999, 9999999999999), }", "too large"),
    ] {
        std::fs::write(&p, with_header(dict)).unwrap();
        let e = npy_err(&p);
        assert!(e.contains(msg), "{dict}: {e}");
    }
    let mut v9 = good.clone();
    v9[6] = 9;
    std::fs::write(&p, &v9).unwrap();
    assert!(npy_err(&p).contains("version"));

    let z = dir.join("bad.npz");
    std::fs::write(&z, b"not a zip").unwrap();
    let e = fx::load_npz(&z).unwrap_err().to_string();
    assert!(e.contains("bad.npz") && e.contains("zip"), "{e}");
    let good = std::fs::read(fixtures().join("stored.npz")).unwrap();
    std::fs::write(&z, &good[..good.len() / 2]).unwrap();
    assert!(fx::load_npz(&z).is_err());
    assert!(fx::load_npz(dir.join("missing.npz")).unwrap_err().to_string().contains("no such file"));
    std::fs::remove_dir_all(&dir).unwrap();
}
