//! safetensors: an 8-byte little-endian header length N, N bytes of JSON naming each tensor's
//! dtype, shape and byte range, then the raw little-endian data.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;
use serde_json::Value;

use super::{err, HostBytes};
use crate::array::{Array, Data};
use crate::dtype::Dtype;
use crate::error::Result;
use crate::memory::Buffer;
use crate::primitives::{LazySource, Op};

/// The largest header we accept (the reference implementation's limit).
const MAX_HEADER: u64 = 100 << 20;

const METADATA_KEY: &str = "__metadata__";

fn dtype_from_safetensors(name: &str) -> Option<Dtype> {
    Some(match name {
        "BOOL" => Dtype::Bool,
        "U8" => Dtype::U8,
        "U16" => Dtype::U16,
        "U32" => Dtype::U32,
        "U64" => Dtype::U64,
        "I8" => Dtype::I8,
        "I16" => Dtype::I16,
        "I32" => Dtype::I32,
        "I64" => Dtype::I64,
        "F16" => Dtype::F16,
        "BF16" => Dtype::Bf16,
        "F32" => Dtype::F32,
        "F64" => Dtype::F64,
        _ => return None,
    })
}

fn dtype_to_safetensors(d: Dtype) -> &'static str {
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

/// One tensor's bytes inside a mapped safetensors file, materialized when evaluated.
struct MappedTensor {
    map: Arc<Mmap>,
    /// Byte offset of the data in the file.
    offset: usize,
    shape: Vec<usize>,
    dtype: Dtype,
    /// `file:tensor`, for messages.
    what: String,
}

impl std::fmt::Debug for MappedTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "safetensors({}, {:?} {})", self.what, self.shape, self.dtype)
    }
}

impl LazySource for MappedTensor {
    fn load(&self) -> Result<Data> {
        let len = self.shape.iter().product::<usize>() * self.dtype.size();
        let bytes = &self.map[self.offset..self.offset + len];
        // The mapping starts page-aligned, so an offset that is a multiple of the element size
        // gives aligned elements; bools must also be valid (0 or 1) to be viewed as they are.
        let aligned = self.offset & (self.dtype.size() - 1) == 0; // sizes are powers of two
        let valid = self.dtype != Dtype::Bool || super::valid_bools(bytes);
        let native = cfg!(target_endian = "little") || self.dtype.size() == 1;
        let buffer = if aligned && valid && native {
            Buffer::mapped(self.map.clone(), self.offset, len)
        } else {
            let mut b = Buffer::alloc(len)?;
            let dst = b.as_bytes_mut();
            dst.copy_from_slice(bytes);
            if !native {
                super::swap_bytes(dst, self.dtype.size());
            }
            if self.dtype == Dtype::Bool {
                super::normalize_bools(dst);
            }
            b
        };
        Ok(Data::contiguous(buffer, &self.shape))
    }
}

/// Loads a safetensors file: its arrays by name, and its `__metadata__` strings.
///
/// The file is memory-mapped and each array is lazy: nothing is read until it is evaluated,
/// and then a tensor whose data is aligned to its element size (every tensor of a file that
/// ferrox, `safetensors` or Hugging Face wrote) is a zero-copy view of the mapping; others are
/// copied. Dtypes: BOOL, U8–U64, I8–I64, F16, BF16, F32, F64; any other dtype (F8_E4M3, ...)
/// is an error naming the tensor.
///
/// The header is checked fully before anything is returned: a truncated file, a header length
/// past the end of the file, bad JSON, a shape that does not match its byte range or a range
/// outside the data are errors that name the file (and tensor).
pub fn load_safetensors(path: impl AsRef<Path>) -> Result<(HashMap<String, Array>, HashMap<String, String>)> {
    const OP: &str = "load_safetensors";
    let path = path.as_ref();
    let file = super::open(OP, path)?;
    let file_len = file.metadata().map_err(|e| err(OP, path, e))?.len();
    if file_len < 8 {
        return Err(err(OP, path, format_args!("truncated: {file_len} bytes, too short for a header")));
    }
    // SAFETY: the mapping is read-only; like every mmap loader we rely on the file not being
    // truncated or rewritten in place while mapped (documented in the module docs).
    let map = unsafe { Mmap::map(&file) }.map_err(|e| err(OP, path, format_args!("cannot map: {e}")))?;
    let map = Arc::new(map);
    let n = u64::from_le_bytes(map[..8].try_into().expect("8 bytes"));
    if n > MAX_HEADER {
        return Err(err(OP, path, format_args!("header length {n} is larger than the {MAX_HEADER}-byte limit")));
    }
    if 8 + n > file_len {
        return Err(err(
            OP,
            path,
            format_args!(
                "header length {n} runs past the end of the {file_len}-byte file (truncated or not safetensors)"
            ),
        ));
    }
    let data_start = 8 + n as usize;
    let data_len = map.len() - data_start;
    let header: Value = serde_json::from_slice(&map[8..data_start])
        .map_err(|e| err(OP, path, format_args!("the header is not valid JSON: {e}")))?;
    let Value::Object(entries) = header else {
        return Err(err(OP, path, "the header is not a JSON object"));
    };

    let mut arrays = HashMap::new();
    let mut metadata = HashMap::new();
    for (name, info) in entries {
        if name == METADATA_KEY {
            // mlx writes `"__metadata__": null` when there is none.
            if info.is_null() {
                continue;
            }
            let Value::Object(m) = info else {
                return Err(err(OP, path, "__metadata__ is not a JSON object"));
            };
            for (k, v) in m {
                let Value::String(v) = v else {
                    return Err(err(OP, path, format_args!("metadata value for {k:?} is not a string")));
                };
                metadata.insert(k, v);
            }
            continue;
        }
        let bad = |msg: &str| err(OP, path, format_args!("tensor {name:?}: {msg}"));
        let dtype_name = info.get("dtype").and_then(Value::as_str).ok_or_else(|| bad("missing \"dtype\""))?;
        let dtype = dtype_from_safetensors(dtype_name)
            .ok_or_else(|| bad(&format!("dtype {dtype_name} is not supported by ferrox")))?;
        let shape: Vec<usize> = info
            .get("shape")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("missing \"shape\""))?
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("\"shape\" is not a list of non-negative integers"))?;
        let offsets: Vec<u64> = info
            .get("data_offsets")
            .and_then(Value::as_array)
            .and_then(|o| o.iter().map(Value::as_u64).collect::<Option<Vec<_>>>())
            .filter(|o| o.len() == 2)
            .ok_or_else(|| bad("\"data_offsets\" is not a pair of non-negative integers"))?;
        let (begin, end) = (offsets[0], offsets[1]);
        if begin > end || end > data_len as u64 {
            return Err(bad(&format!(
                "data_offsets [{begin}, {end}] lie outside the {data_len} bytes of data (truncated file?)"
            )));
        }
        let nbytes = super::checked_numel(&shape, dtype).map(|(_, b)| b);
        if nbytes != Some((end - begin) as usize) {
            return Err(bad(&format!(
                "shape {shape:?} of {dtype_name} does not fit its {} bytes of data",
                end - begin
            )));
        }
        let src = MappedTensor {
            map: map.clone(),
            offset: data_start + begin as usize,
            shape: shape.clone(),
            dtype,
            what: format!("{}:{name}", path.display()),
        };
        arrays.insert(name, Array::from_op(shape, dtype, Op::Load(Arc::new(src)), vec![]));
    }
    Ok((arrays, metadata))
}

/// Saves named arrays, with optional `__metadata__` strings, as a safetensors file.
///
/// The arrays are evaluated and written row-major and little-endian. The layout is what the
/// reference implementation writes: the header padded with spaces to a multiple of 8 bytes,
/// tensors packed without gaps, larger elements first (then by name), so every tensor is
/// aligned and loads zero-copy. The file is written to a temporary file and renamed into place.
///
/// `arrays` is anything that iterates over `(name, array)` pairs: `&HashMap<String, Array>`,
/// `vec![("w", w)]`, `[("w", &w)]`, or `slice.iter().map(|(k, v)| (k, v))`.
pub fn save_safetensors<I, K, V>(
    path: impl AsRef<Path>,
    arrays: I,
    metadata: Option<&HashMap<String, String>>,
) -> Result<()>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: Borrow<Array>,
{
    const OP: &str = "save_safetensors";
    let path = path.as_ref();
    let mut named = super::collect_named(OP, path, arrays)?;
    if named.iter().any(|(k, _)| k == METADATA_KEY) {
        return Err(err(OP, path, "\"__metadata__\" is reserved and cannot name a tensor"));
    }
    named.sort_by(|(ka, a), (kb, b)| b.dtype().size().cmp(&a.dtype().size()).then_with(|| ka.cmp(kb)));
    let values: Vec<Array> = named.iter().map(|(_, a)| a.clone()).collect();
    let values = super::evaluate_contiguous(&values)?;
    let bytes: Vec<HostBytes> = values.iter().map(HostBytes::of).collect::<Result<_>>()?;

    let header = header_json(&named, metadata);
    let padded = header.len().div_ceil(8) * 8;
    super::write_atomically(OP, path, |w| {
        w.write_all(&(padded as u64).to_le_bytes())?;
        w.write_all(header.as_bytes())?;
        w.write_all(&b"        "[..padded - header.len()])?;
        for b in &bytes {
            b.write_le(w)?;
        }
        Ok(())
    })
}

/// The header: `__metadata__` first (if any), then the tensors in file order.
fn header_json(named: &[(String, Array)], metadata: Option<&HashMap<String, String>>) -> String {
    let q = |s: &str| serde_json::to_string(s).expect("strings serialize");
    let mut parts = Vec::with_capacity(named.len() + 1);
    if let Some(m) = metadata.filter(|m| !m.is_empty()) {
        let mut kv: Vec<_> = m.iter().collect();
        kv.sort();
        let inner: Vec<String> = kv.iter().map(|(k, v)| format!("{}:{}", q(k), q(v))).collect();
        parts.push(format!("{}:{{{}}}", q(METADATA_KEY), inner.join(",")));
    }
    let mut offset = 0usize;
    for (name, a) in named {
        let end = offset + a.nbytes();
        let shape: Vec<String> = a.shape().iter().map(|d| d.to_string()).collect();
        parts.push(format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            q(name),
            dtype_to_safetensors(a.dtype()),
            shape.join(",")
        ));
        offset = end;
    }
    format!("{{{}}}", parts.join(","))
}
