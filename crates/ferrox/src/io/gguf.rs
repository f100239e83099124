//! GGUF files (llama.cpp's): versions 2 and 3, little-endian.
//!
//! Layout: magic `GGUF`, version (u32), tensor count and metadata count (u64); the metadata
//! key–value pairs (a key is a string: u64 length and UTF-8 bytes; a value is a u32 type tag
//! and the value; arrays hold a type tag, a u64 count and the elements, arrays of arrays
//! included); the tensor infos (name, u32 dimension count, u64 dimensions innermost first, u32
//! ggml type, u64 offset into the data section); padding to `general.alignment` (default 32);
//! the data section.
//!
//! [`GgufFile::open`] maps the file and reads everything but the tensor data. Arrays are lazy
//! (like safetensors): a float32 / float16 / bfloat16 tensor loaded as its own type is a
//! zero-copy view of the mapping when aligned; quantized tensors (and conversions) are decoded
//! in parallel when evaluated. Shapes are NumPy's order (GGUF's dimensions reversed).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::{bf16, f16};
use memmap2::Mmap;
use rayon::prelude::*;

use super::err;
use super::ggml_blocks::{decode_block, scale_min_k4, GgmlType};
use crate::array::{Array, Data};
use crate::dtype::Dtype;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::memory::Buffer;
use crate::primitives::{LazySource, Op};

const OP: &str = "load_gguf";
/// "GGUF" read as a little-endian u32.
const MAGIC: u32 = 0x4655_4747;
/// The data alignment when `general.alignment` is absent.
const DEFAULT_ALIGNMENT: usize = 32;
/// Deepest nesting of arrays accepted (a guard against malicious files).
const MAX_DEPTH: usize = 8;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    /// uint8.
    U8(u8),
    /// int8.
    I8(i8),
    /// uint16.
    U16(u16),
    /// int16.
    I16(i16),
    /// uint32.
    U32(u32),
    /// int32.
    I32(i32),
    /// float32.
    F32(f32),
    /// bool.
    Bool(bool),
    /// UTF-8 string.
    String(String),
    /// uint64.
    U64(u64),
    /// int64.
    I64(i64),
    /// float64.
    F64(f64),
    /// An array (its elements share one type; arrays of arrays are allowed).
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// An integer value (any width, bool as 0 / 1) as u64; `None` if negative or not an integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v as u64),
            GgufValue::U16(v) => Some(v as u64),
            GgufValue::U32(v) => Some(v as u64),
            GgufValue::U64(v) => Some(v),
            GgufValue::Bool(v) => Some(v as u64),
            _ => self.as_i64().and_then(|v| u64::try_from(v).ok()),
        }
    }

    /// An integer value as i64; `None` if out of range or not an integer.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::I8(v) => Some(v as i64),
            GgufValue::I16(v) => Some(v as i64),
            GgufValue::I32(v) => Some(v as i64),
            GgufValue::I64(v) => Some(v),
            GgufValue::U64(v) => i64::try_from(v).ok(),
            GgufValue::U8(_) | GgufValue::U16(_) | GgufValue::U32(_) | GgufValue::Bool(_) => {
                self.as_u64().map(|v| v as i64)
            }
            _ => None,
        }
    }

    /// A numeric value as f64 (integers converted).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v as f64),
            GgufValue::F64(v) => Some(v),
            GgufValue::U64(v) => Some(v as f64),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// A bool value.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// A string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// An array value's elements.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One tensor's description in a GGUF file.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTensorInfo {
    /// Its ggml type (kept, so that a loader can re-quantize rather than only dequantize).
    pub ggml_type: GgmlType,
    /// Its shape in NumPy's order (outermost first: GGUF's dimensions reversed).
    pub shape: Vec<usize>,
    /// Byte offset of its data in the file.
    pub offset: usize,
    /// Its size in bytes.
    pub nbytes: usize,
}

/// An opened GGUF file: its metadata and tensor infos; tensors are read on demand.
pub struct GgufFile {
    path: PathBuf,
    map: Arc<Mmap>,
    /// The format version (2 or 3).
    pub version: u32,
    /// The data alignment (`general.alignment`, default 32).
    pub alignment: usize,
    /// The metadata, by key.
    pub metadata: BTreeMap<String, GgufValue>,
    /// The tensors, by name.
    pub tensors: BTreeMap<String, GgufTensorInfo>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GgufFile({}, v{}, {} tensors)", self.path.display(), self.version, self.tensors.len())
    }
}

/// Reads little-endian values from the header, with errors that say where the file ends.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, msg: impl std::fmt::Display) -> Error {
        err(OP, self.path, format_args!("{msg} (at byte {})", self.pos))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.b.len() - self.pos {
            return Err(self.err(format_args!("truncated: {n} more bytes needed, the file has {}", self.b.len())));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A count or length that must fit what is left of the file (`min_size` bytes per item).
    fn count(&mut self, what: &str, min_size: usize) -> Result<usize> {
        let n = self.u64()?;
        let left = (self.b.len() - self.pos) as u64;
        if n.saturating_mul(min_size as u64) > left {
            return Err(self.err(format_args!("{what} {n} does not fit the {left} bytes left (corrupt or truncated)")));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<String> {
        let n = self.count("string length", 1)?;
        let start = self.pos;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| err(OP, self.path, format_args!("the string at byte {start} is not valid UTF-8")))
    }

    /// A value of type tag `tag`.
    fn value(&mut self, tag: u32, depth: usize) -> Result<GgufValue> {
        Ok(match tag {
            0 => GgufValue::U8(self.array::<1>()?[0]),
            1 => GgufValue::I8(self.array::<1>()?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.array()?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array()?)),
            4 => GgufValue::U32(self.u32()?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array()?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array()?)),
            7 => match self.array::<1>()?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.err(format_args!("bool value {b} is neither 0 nor 1"))),
            },
            8 => GgufValue::String(self.string()?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(self.err(format_args!("arrays nested deeper than {MAX_DEPTH}")));
                }
                let elem = self.u32()?;
                let min_size = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8..=12 => 8,
                    _ => return Err(self.err(format_args!("unknown array element type {elem}"))),
                };
                let n = self.count("array length", min_size)?;
                let items = (0..n).map(|_| self.value(elem, depth + 1)).collect::<Result<_>>()?;
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64()?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array()?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array()?)),
            _ => return Err(self.err(format_args!("unknown metadata value type {tag}"))),
        })
    }
}

impl GgufFile {
    /// Maps `path` and reads its header: metadata and tensor infos, each checked (types,
    /// sizes, data inside the file). Errors name the file and the problem.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let file = super::open(OP, path)?;
        // SAFETY: read-only mapping; as for every mmap loader, the file must not be truncated
        // or rewritten in place while mapped (see the module docs of `io`).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| err(OP, path, format_args!("cannot map: {e}")))?;
        let mut c = Cursor { b: &map, pos: 0, path };
        let magic = c.u32().map_err(|_| err(OP, path, "too short for a GGUF header"))?;
        if magic != MAGIC {
            return Err(err(OP, path, "not a GGUF file (the magic bytes are not \"GGUF\")"));
        }
        let version = c.u32()?;
        match version {
            2 | 3 => {}
            1 => return Err(err(OP, path, "GGUF version 1 is not supported (only 2 and 3)")),
            v if v.swap_bytes() <= 3 => return Err(err(OP, path, "big-endian GGUF files are not supported")),
            v => return Err(err(OP, path, format_args!("unknown GGUF version {v} (2 and 3 are supported)"))),
        }
        // Each tensor info takes at least 28 bytes, each key-value pair at least 13.
        let n_tensors = c.count("tensor count", 28)?;
        let n_kv = c.count("metadata count", 13)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string()?;
            let tag = c.u32()?;
            let value = c.value(tag, 0).map_err(|e| err(OP, path, format_args!("metadata {key:?}: {e}")))?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(c.err(format_args!("metadata key {key:?} appears twice")));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() && a <= 1 << 20 => a as usize,
                _ => return Err(err(OP, path, format_args!("general.alignment {v:?} is not a power of two"))),
            },
        };
        let mut infos = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = c.string()?;
            let ndim = c.u32()? as usize;
            if ndim > 8 {
                return Err(c.err(format_args!("tensor {name:?} has {ndim} dimensions")));
            }
            let dims = (0..ndim).map(|_| c.u64()).collect::<Result<Vec<_>>>()?;
            let ggml_type = GgmlType::from_id(c.u32()?);
            let offset = c.u64()?;
            infos.push((name, dims, ggml_type, offset));
        }
        let data_start = c.pos.next_multiple_of(alignment);
        let mut tensors = BTreeMap::new();
        for (name, dims, ggml_type, offset) in infos {
            let bad = |msg: String| err(OP, path, format_args!("tensor {name:?}: {msg}"));
            let numel =
                dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).ok_or_else(|| bad("size overflows".into()))?;
            let (block_elems, block_bytes) =
                ggml_type.block().ok_or_else(|| bad(format!("unknown ggml type {}", ggml_type.id())))?;
            let row = dims.first().copied().unwrap_or(1);
            if row % block_elems as u64 != 0 {
                return Err(bad(format!(
                    "its rows of {row} elements are not whole {} blocks of {block_elems}",
                    ggml_type.name()
                )));
            }
            let nbytes = numel / block_elems as u64 * block_bytes as u64;
            let start = (data_start as u64).checked_add(offset);
            if start.and_then(|s| s.checked_add(nbytes)).is_none_or(|end| end > map.len() as u64) {
                return Err(bad(format!(
                    "its {nbytes} bytes at offset {offset} lie past the end of the file ({} bytes; truncated?)",
                    map.len()
                )));
            }
            let shape = dims.iter().rev().map(|&d| d as usize).collect();
            let info =
                GgufTensorInfo { ggml_type, shape, offset: data_start + offset as usize, nbytes: nbytes as usize };
            if tensors.insert(name.clone(), info).is_some() {
                return Err(err(OP, path, format_args!("tensor name {name:?} appears twice")));
            }
        }
        Ok(GgufFile { path: path.to_path_buf(), map: Arc::new(map), version, alignment, metadata, tensors })
    }

    /// The raw bytes of tensor `name` (the packed blocks of a quantized type).
    pub fn raw(&self, name: &str) -> Result<&[u8]> {
        let t = self.info(name)?;
        Ok(&self.map[t.offset..t.offset + t.nbytes])
    }

    fn info(&self, name: &str) -> Result<&GgufTensorInfo> {
        self.tensors.get(name).ok_or_else(|| err(OP, &self.path, format_args!("no tensor named {name:?}")))
    }

    /// Tensor `name` as a lazy array of `dtype` (float32, float16 or bfloat16), or of its own
    /// type for float tensors and float32 for quantized ones when `dtype` is `None`.
    pub fn array(&self, name: &str, dtype: Option<Dtype>) -> Result<Array> {
        let t = self.info(name)?;
        if !t.ggml_type.is_supported() {
            return Err(err(
                OP,
                &self.path,
                format_args!("tensor {name:?}: ggml type {} cannot be decoded by ferrox", t.ggml_type.name()),
            ));
        }
        let own = match t.ggml_type {
            GgmlType::F16 => Dtype::F16,
            GgmlType::Bf16 => Dtype::Bf16,
            _ => Dtype::F32,
        };
        let dtype = dtype.unwrap_or(own);
        if !matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::Bf16) {
            return Err(Error::dtype(OP, "GGUF tensors load as float32, float16 or bfloat16", dtype));
        }
        let src = GgufTensor {
            map: self.map.clone(),
            info: t.clone(),
            dtype,
            what: format!("{}:{name}", self.path.display()),
        };
        Ok(Array::from_op(t.shape.clone(), dtype, Op::Load(Arc::new(src)), vec![]))
    }

    /// Tensor `name` as MLX's affine quantization with group size 32, losslessly:
    /// `(packed, scales, biases, bits)` — packed uint32 `[rows, cols·bits/32]` (MLX's
    /// little-endian bit stream), scales and biases `[rows, cols/32]` of `dtype`. Feed them to
    /// `quantized_matmul(.., 32, bits, Affine)`.
    ///
    /// q8_0 → 8 bits (codes `q + 128`, bias `−128·d`); q4_0 → 4 bits (bias `−8·d`); q4_1 → 4
    /// bits (bias `m`); q4_K / q5_K → 4 / 5 bits, one group per 32-element sub-block (scale
    /// `d·sc`, bias `−dmin·m`). Every value is exact in float32; in float16 the scales of q8_0,
    /// q4_0 and q4_1 stay exact, the K-quants' products `d·sc` round. Other types (q6_K's
    /// sub-blocks are 16 wide) are an error: dequantize them, or re-quantize the result.
    pub fn affine(&self, name: &str, dtype: Dtype) -> Result<(Array, Array, Array, usize)> {
        let t = self.info(name)?;
        let bits = match t.ggml_type {
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4K => 4,
            GgmlType::Q5K => 5,
            GgmlType::Q8_0 => 8,
            other => {
                return Err(err(
                    OP,
                    &self.path,
                    format_args!(
                        "tensor {name:?}: {} has no lossless affine form (only q4_0, q4_1, q8_0, q4_K, q5_K)",
                        other.name()
                    ),
                ))
            }
        };
        if !matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::Bf16) {
            return Err(Error::dtype(OP, "affine scales and biases are float32, float16 or bfloat16", dtype));
        }
        let (block_elems, bb) = t.ggml_type.block().expect("a known type");
        let groups_per_block = block_elems / 32;
        let blocks = t.nbytes / bb;
        let groups = blocks * groups_per_block;
        let mut words = vec![0u32; groups * bits];
        let (mut scales, mut biases) = (vec![0f32; groups], vec![0f32; groups]);
        let bytes = self.raw(name)?;
        let mut codes = vec![0u8; block_elems];
        for (i, b) in bytes.chunks_exact(bb).enumerate() {
            let g = i * groups_per_block;
            affine_block(
                t.ggml_type,
                b,
                &mut codes,
                &mut scales[g..g + groups_per_block],
                &mut biases[g..g + groups_per_block],
            );
            pack_codes(&codes, bits, &mut words[g * bits..(g + groups_per_block) * bits]);
        }
        let rows = t.shape[..t.shape.len().saturating_sub(1)].to_vec();
        let cols = t.shape.last().copied().unwrap_or(1);
        let with = |last: usize| rows.iter().copied().chain([last]).collect::<Vec<_>>();
        let packed = Array::from_slice(&words, &with(cols * bits / 32))?;
        let s = crate::ops::astype(&Array::from_slice(&scales, &with(cols / 32))?, dtype)?;
        let b = crate::ops::astype(&Array::from_slice(&biases, &with(cols / 32))?, dtype)?;
        Ok((packed, s, b, bits))
    }

    /// Every tensor as a lazy array (see [`GgufFile::array`] for `dtype`).
    pub fn arrays(&self, dtype: Option<Dtype>) -> Result<HashMap<String, Array>> {
        self.tensors.keys().map(|n| Ok((n.clone(), self.array(n, dtype)?))).collect()
    }
}

/// Loads a GGUF file: the file (metadata, tensor infos with their ggml types) and every
/// tensor as a lazy array — float tensors as their own type, quantized ones dequantized to
/// float32 when evaluated. [`GgufFile::open`] gives finer control (the output dtype, raw
/// blocks).
pub fn load_gguf(path: impl AsRef<Path>) -> Result<(GgufFile, HashMap<String, Array>)> {
    let f = GgufFile::open(path)?;
    let arrays = f.arrays(None)?;
    Ok((f, arrays))
}

/// The unsigned codes of one block of `t` (a type [`GgufFile::affine`] accepts) and the scale
/// and bias of each of its groups of 32, such that element = scale · code + bias.
fn affine_block(t: GgmlType, b: &[u8], codes: &mut [u8], scales: &mut [f32], biases: &mut [f32]) {
    let nibbles = |q: &[u8], codes: &mut [u8]| {
        for (j, &v) in q.iter().enumerate() {
            codes[j] = v & 15;
            codes[j + q.len()] = v >> 4;
        }
    };
    let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
    match t {
        GgmlType::Q8_0 => {
            // value = d·q = d·(q + 128) − 128·d
            for (c, &q) in codes.iter_mut().zip(&b[2..34]) {
                *c = (q as i8 as i16 + 128) as u8;
            }
            (scales[0], biases[0]) = (d, -128.0 * d);
        }
        GgmlType::Q4_0 => {
            nibbles(&b[2..18], codes);
            (scales[0], biases[0]) = (d, -8.0 * d);
        }
        GgmlType::Q4_1 => {
            nibbles(&b[4..20], codes);
            (scales[0], biases[0]) = (d, f16::from_le_bytes([b[2], b[3]]).to_f32());
        }
        _ => {
            // q4_K / q5_K: eight sub-blocks of 32 (layouts in ggml_blocks.rs).
            let dmin = f16::from_le_bytes([b[2], b[3]]).to_f32();
            let sm = &b[4..16];
            let (qh, q) = if t == GgmlType::Q5K { (Some(&b[16..48]), &b[48..176]) } else { (None, &b[16..144]) };
            for pair in 0..4 {
                nibbles(&q[32 * pair..32 * pair + 32], &mut codes[64 * pair..64 * pair + 64]);
            }
            if let Some(qh) = qh {
                for (j, c) in codes.iter_mut().enumerate() {
                    *c |= ((qh[j % 32] >> (j / 32)) & 1) << 4;
                }
            }
            for j in 0..8 {
                let (sc, m) = scale_min_k4(j, sm);
                (scales[j], biases[j]) = (d * sc, -(dmin * m));
            }
        }
    }
}

/// Appends `codes` of `bits` bits to `words` as MLX packs them: one little-endian bit stream.
fn pack_codes(codes: &[u8], bits: usize, words: &mut [u32]) {
    let (mut acc, mut filled, mut out) = (0u64, 0, 0);
    for &c in codes {
        acc |= (c as u64) << filled;
        filled += bits;
        if filled >= 32 {
            words[out] = acc as u32;
            out += 1;
            acc >>= 32;
            filled -= 32;
        }
    }
}

/// One tensor in a mapped GGUF file, decoded when evaluated.
struct GgufTensor {
    map: Arc<Mmap>,
    info: GgufTensorInfo,
    dtype: Dtype,
    what: String,
}

impl std::fmt::Debug for GgufTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gguf({}, {:?} {} as {})", self.what, self.info.shape, self.info.ggml_type.name(), self.dtype)
    }
}

/// Blocks decoded per parallel task.
const BLOCKS_PER_TASK: usize = 256;

impl LazySource for GgufTensor {
    fn load(&self) -> Result<Data> {
        let t = &self.info;
        let bytes = &self.map[t.offset..t.offset + t.nbytes];
        let same = matches!(
            (t.ggml_type, self.dtype),
            (GgmlType::F32, Dtype::F32) | (GgmlType::F16, Dtype::F16) | (GgmlType::Bf16, Dtype::Bf16)
        );
        if same && t.offset.is_multiple_of(self.dtype.size()) && cfg!(target_endian = "little") {
            return Ok(Data::contiguous(Buffer::mapped(self.map.clone(), t.offset, t.nbytes), &t.shape));
        }
        let numel: usize = t.shape.iter().product();
        let mut buf = Buffer::alloc(numel * self.dtype.size())?;
        match self.dtype {
            Dtype::F32 => decode_into::<f32>(t.ggml_type, bytes, bytemuck::cast_slice_mut(buf.as_bytes_mut())),
            Dtype::F16 => decode_into::<f16>(t.ggml_type, bytes, bytemuck::cast_slice_mut(buf.as_bytes_mut())),
            _ => decode_into::<bf16>(t.ggml_type, bytes, bytemuck::cast_slice_mut(buf.as_bytes_mut())),
        }
        Ok(Data::contiguous(buf, &t.shape))
    }
}

/// Decodes the blocks of `src` into `out`, in parallel.
fn decode_into<T: Element<Acc = f32>>(t: GgmlType, src: &[u8], out: &mut [T]) {
    let (be, bb) = t.block().expect("a supported type");
    out.par_chunks_mut(be * BLOCKS_PER_TASK).zip(src.par_chunks(bb * BLOCKS_PER_TASK)).for_each(|(o, s)| {
        let mut tmp = vec![0f32; be];
        for (ob, sb) in o.chunks_exact_mut(be).zip(s.chunks_exact(bb)) {
            decode_block(t, sb, &mut tmp);
            for (d, &v) in ob.iter_mut().zip(&tmp) {
                *d = T::from_acc(v);
            }
        }
    });
}
