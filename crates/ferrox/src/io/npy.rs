//! NumPy's `.npy` (one array) and `.npz` (a zip of `.npy` members) files.
//!
//! An `.npy` file is the magic `\x93NUMPY`, a version byte pair, a little-endian header length
//! (2 bytes in version 1.0, 4 in 2.0 and 3.0), a Python dict literal
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }` padded with spaces to a
//! multiple of 64 bytes and ended by a newline, then the raw data.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use super::{err, HostBytes};
use crate::array::{row_major_strides, Array, Data};
use crate::dtype::Dtype;
use crate::error::Result;
use crate::memory::Buffer;

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Loads an `.npy` file.
///
/// Reads format versions 1.0, 2.0 and 3.0; dtypes `b1`, `u1`–`u8`, `i1`–`i8`, `f2`, `f4`, `f8`
/// in either byte order (big-endian data is swapped on load). A Fortran-order file loads as a
/// column-major view of its data, with the same shape and values as NumPy shows. Object,
/// complex, string and structured dtypes are errors.
pub fn load_npy(path: impl AsRef<Path>) -> Result<Array> {
    const OP: &str = "load_npy";
    let path = path.as_ref();
    let file = super::open(OP, path)?;
    let len = file.metadata().map_err(|e| err(OP, path, e))?.len();
    let mut r = std::io::BufReader::new(file);
    read_npy(&mut r, len).map_err(|m| err(OP, path, m))
}

/// Saves an array as an `.npy` file (format version 1.0, or 2.0 if the header needs it),
/// row-major and little-endian. `bfloat16` has no NumPy dtype and is an error: convert it
/// first (`astype(&a, Dtype::F32)`), or use safetensors.
pub fn save_npy(path: impl AsRef<Path>, array: &Array) -> Result<()> {
    const OP: &str = "save_npy";
    let path = path.as_ref();
    let header = npy_header(array.dtype(), array.shape()).map_err(|m| err(OP, path, m))?;
    let a = super::evaluate_contiguous(std::slice::from_ref(array))?.remove(0);
    let bytes = HostBytes::of(&a)?;
    super::write_atomically(OP, path, |w| {
        w.write_all(&header)?;
        bytes.write_le(w)
    })
}

/// Loads an `.npz` archive (members stored or deflated): its arrays by name, each member's
/// name without the `.npy` suffix.
pub fn load_npz(path: impl AsRef<Path>) -> Result<HashMap<String, Array>> {
    const OP: &str = "load_npz";
    let path = path.as_ref();
    let file = super::open(OP, path)?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| err(OP, path, format_args!("not a valid npz (zip) archive: {e}")))?;
    let mut out = HashMap::new();
    for i in 0..zip.len() {
        let mut member = zip.by_index(i).map_err(|e| err(OP, path, format_args!("member {i}: {e}")))?;
        if member.is_dir() {
            continue;
        }
        let name = member.name().to_string();
        let size = member.size();
        let a = read_npy(&mut member, size).map_err(|m| err(OP, path, format_args!("member {name:?}: {m}")))?;
        let key = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        out.insert(key, a);
    }
    Ok(out)
}

/// Saves named arrays as an `.npz` archive, each as member `<name>.npy`; `compressed` deflates
/// them (NumPy's `savez_compressed`), otherwise they are stored (`savez`).
///
/// `arrays` is anything that iterates over `(name, array)` pairs: `&HashMap<String, Array>`,
/// `vec![("w", w)]`, `[("w", &w)]`, or `slice.iter().map(|(k, v)| (k, v))`.
pub fn save_npz<I, K, V>(path: impl AsRef<Path>, arrays: I, compressed: bool) -> Result<()>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: Borrow<Array>,
{
    const OP: &str = "save_npz";
    let path = path.as_ref();
    let named = super::collect_named(OP, path, arrays)?;
    let headers: Vec<Vec<u8>> = named
        .iter()
        .map(|(k, a)| npy_header(a.dtype(), a.shape()).map_err(|m| err(OP, path, format_args!("{k:?}: {m}"))))
        .collect::<Result<_>>()?;
    let values: Vec<Array> = named.iter().map(|(_, a)| a.clone()).collect();
    let values = super::evaluate_contiguous(&values)?;
    let bytes: Vec<HostBytes> = values.iter().map(HostBytes::of).collect::<Result<_>>()?;
    let method = if compressed { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
    super::write_atomically(OP, path, |w| {
        let mut zip = zip::ZipWriter::new(w);
        for (((name, a), header), data) in named.iter().zip(&headers).zip(&bytes) {
            let large = (header.len() + a.nbytes()) as u64 >= u32::MAX as u64;
            let options = zip::write::SimpleFileOptions::default().compression_method(method).large_file(large);
            zip.start_file(format!("{name}.npy"), options).map_err(std::io::Error::other)?;
            zip.write_all(header)?;
            data.write_le(&mut zip)?;
        }
        zip.finish().map_err(std::io::Error::other)?;
        Ok(())
    })
}

/// The header (magic, version, length, dict, padding) of an `.npy` file.
fn npy_header(dtype: Dtype, shape: &[usize]) -> std::result::Result<Vec<u8>, String> {
    let descr = match dtype {
        Dtype::Bool => "|b1",
        Dtype::U8 => "|u1",
        Dtype::I8 => "|i1",
        Dtype::U16 => "<u2",
        Dtype::I16 => "<i2",
        Dtype::F16 => "<f2",
        Dtype::U32 => "<u4",
        Dtype::I32 => "<i4",
        Dtype::F32 => "<f4",
        Dtype::U64 => "<u8",
        Dtype::I64 => "<i8",
        Dtype::F64 => "<f8",
        Dtype::Bf16 => {
            return Err("bfloat16 has no NumPy dtype; convert it (astype float32) or save as safetensors".into())
        }
    };
    let dims = match shape {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    // Pad so that magic + version + length + dict + '\n' is a multiple of 64 bytes.
    let (version, len_bytes) = if 10 + dict.len() < u16::MAX as usize { (1u8, 2) } else { (2u8, 4) };
    let prefix = 8 + len_bytes;
    let total = (prefix + dict.len() + 1).div_ceil(64) * 64;
    let hlen = total - prefix;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(hlen as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(hlen as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    Ok(out)
}

/// Reads one `.npy` image of `avail` bytes from `r`.
fn read_npy(r: &mut impl Read, avail: u64) -> std::result::Result<Array, String> {
    let truncated = |what: &str| format!("truncated: the file ends inside the {what}");
    let mut pre = [0u8; 8];
    if avail < 10 {
        return Err(truncated("header"));
    }
    r.read_exact(&mut pre).map_err(|_| truncated("header"))?;
    if &pre[..6] != MAGIC {
        return Err("not an .npy file (no \\x93NUMPY magic)".into());
    }
    let (major, minor) = (pre[6], pre[7]);
    let (hlen, prefix) = match major {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).map_err(|_| truncated("header"))?;
            (u16::from_le_bytes(b) as u64, 10u64)
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).map_err(|_| truncated("header"))?;
            (u32::from_le_bytes(b) as u64, 12u64)
        }
        _ => return Err(format!("unsupported .npy format version {major}.{minor}")),
    };
    if prefix + hlen > avail {
        return Err(format!("header length {hlen} runs past the end of the {avail}-byte file (truncated?)"));
    }
    let mut hbytes = vec![0u8; hlen as usize];
    r.read_exact(&mut hbytes).map_err(|_| truncated("header"))?;
    let header = parse_header(&String::from_utf8_lossy(&hbytes))?;

    let (dtype, swap) = parse_descr(&header.descr)?;
    let nbytes = super::checked_numel(&header.shape, dtype)
        .map(|(_, b)| b)
        .ok_or_else(|| format!("shape {:?} is too large", header.shape))?;
    if nbytes as u64 > avail - prefix - hlen {
        return Err(format!(
            "truncated: shape {:?} of {} needs {nbytes} bytes of data, the file has {}",
            header.shape,
            header.descr,
            avail - prefix - hlen
        ));
    }
    let mut buffer = Buffer::alloc(nbytes).map_err(|e| e.to_string())?;
    let dst = buffer.as_bytes_mut();
    r.read_exact(dst).map_err(|_| truncated("data"))?;
    if swap {
        super::swap_bytes(dst, dtype.size());
    }
    if dtype == Dtype::Bool {
        super::normalize_bools(dst);
    }
    let shape = header.shape;
    let strides = if header.fortran_order {
        // Column-major: the first axis moves fastest.
        let mut s = vec![0isize; shape.len()];
        let mut acc = 1isize;
        for (st, &n) in s.iter_mut().zip(&shape) {
            *st = acc;
            acc *= n.max(1) as isize;
        }
        s
    } else {
        row_major_strides(&shape)
    };
    let data = Data { buffer: Arc::new(buffer), offset: 0, strides };
    Ok(Array::from_data(shape, dtype, data))
}

/// The fields of an `.npy` header dict.
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// `descr` → (dtype, whether the data needs a byte swap on this machine).
fn parse_descr(descr: &str) -> std::result::Result<(Dtype, bool), String> {
    let unsupported = || format!("unsupported npy dtype {descr:?} (ferrox reads b1, u1-u8, i1-i8, f2, f4, f8)");
    let mut chars = descr.chars();
    let order = chars.next().ok_or_else(unsupported)?;
    let code = chars.as_str();
    let big = match order {
        '<' => false,
        '>' => true,
        '|' | '=' => cfg!(target_endian = "big"),
        _ => return Err(unsupported()),
    };
    let dtype = match code {
        "b1" | "?" => Dtype::Bool,
        "u1" => Dtype::U8,
        "u2" => Dtype::U16,
        "u4" => Dtype::U32,
        "u8" => Dtype::U64,
        "i1" => Dtype::I8,
        "i2" => Dtype::I16,
        "i4" => Dtype::I32,
        "i8" => Dtype::I64,
        "f2" => Dtype::F16,
        "f4" => Dtype::F32,
        "f8" => Dtype::F64,
        _ => return Err(unsupported()),
    };
    let swap = dtype.size() > 1 && big != cfg!(target_endian = "big");
    Ok((dtype, swap))
}

/// A value in the header dict.
enum Value {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

/// Parses the header's Python dict literal (only the forms NumPy writes: quoted keys, and
/// string, boolean and integer-tuple values).
fn parse_header(text: &str) -> std::result::Result<Header, String> {
    let bad = |why: &str| format!("malformed .npy header ({why}): {:?}", text.trim_end());
    let mut p = Parser { s: text.as_bytes(), i: 0 };
    p.ws();
    if !p.eat(b'{') {
        return Err(bad("expected '{'"));
    }
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        p.ws();
        if p.eat(b'}') {
            break;
        }
        let key = p.string().ok_or_else(|| bad("expected a quoted key"))?;
        p.ws();
        if !p.eat(b':') {
            return Err(bad("expected ':'"));
        }
        p.ws();
        let value = p.value().ok_or_else(|| {
            let hint = if key == "descr" { "; structured dtypes are not supported" } else { "" };
            bad(&format!("cannot read the value of {key:?}{hint}"))
        })?;
        match (key.as_str(), value) {
            ("descr", Value::Str(s)) => descr = Some(s),
            ("fortran_order", Value::Bool(b)) => fortran = Some(b),
            ("shape", Value::Tuple(t)) => shape = Some(t),
            ("descr" | "fortran_order" | "shape", _) => return Err(bad(&format!("{key:?} has the wrong type"))),
            _ => {}
        }
        p.ws();
        if p.eat(b',') {
            continue;
        }
        p.ws();
        if p.eat(b'}') {
            break;
        }
        return Err(bad("expected ',' or '}'"));
    }
    Ok(Header {
        descr: descr.ok_or_else(|| bad("no 'descr'"))?,
        fortran_order: fortran.ok_or_else(|| bad("no 'fortran_order'"))?,
        shape: shape.ok_or_else(|| bad("no 'shape'"))?,
    })
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn string(&mut self) -> Option<String> {
        let q = self.peek().filter(|&c| c == b'\'' || c == b'"')?;
        self.i += 1;
        let start = self.i;
        while self.peek()? != q {
            self.i += 1;
        }
        let s = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
        self.i += 1;
        Some(s)
    }

    fn word(&mut self, w: &str) -> bool {
        if self.s[self.i..].starts_with(w.as_bytes()) {
            self.i += w.len();
            true
        } else {
            false
        }
    }

    fn int(&mut self) -> Option<usize> {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        let n = std::str::from_utf8(&self.s[start..self.i]).ok()?.parse().ok()?;
        self.eat(b'L'); // Python 2 long literals.
        Some(n)
    }

    fn value(&mut self) -> Option<Value> {
        match self.peek()? {
            b'\'' | b'"' => self.string().map(Value::Str),
            b'T' if self.word("True") => Some(Value::Bool(true)),
            b'F' if self.word("False") => Some(Value::Bool(false)),
            b'(' => {
                self.i += 1;
                let mut dims = Vec::new();
                loop {
                    self.ws();
                    if self.eat(b')') {
                        return Some(Value::Tuple(dims));
                    }
                    dims.push(self.int()?);
                    self.ws();
                    if !self.eat(b',') {
                        self.ws();
                        return self.eat(b')').then_some(Value::Tuple(dims));
                    }
                }
            }
            _ => None,
        }
    }
}
