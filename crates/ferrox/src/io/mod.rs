//! Reading and writing arrays: safetensors (memory-mapped, loaded lazily), npy and npz.
//!
//! - [`load_safetensors`] maps the file and returns lazy arrays: nothing is read until an array
//!   is evaluated, and then an aligned tensor is a zero-copy view of the mapping (the page
//!   cache's memory, not ferrox's). [`save_safetensors`] writes what the `safetensors` Python
//!   package and Hugging Face write, metadata included.
//! - [`load_npy`] / [`save_npy`] read NumPy's `.npy` (versions 1.0–3.0, either byte order,
//!   C or Fortran order) and write version 1.0 (2.0 for very long headers).
//! - [`load_npz`] / [`save_npz`] read and write `.npz` archives, stored or deflated.
//! - [`load_gguf`] / [`GgufFile`] read llama.cpp's GGUF (versions 2 and 3): metadata of every
//!   value type, and tensors of types f32, f16, bf16, q8_0, q4_0, q4_1, q4_K, q5_K and q6_K,
//!   memory-mapped and decoded to float32 / float16 / bfloat16 when evaluated; each tensor's
//!   ggml type stays available ([`GgufTensorInfo`]) for re-quantization.
//! - [`load`] / [`save`] pick the format from the file extension, like `mx.load` / `mx.save`.
//!
//! Every writer writes a temporary file beside the target and renames it into place, so an
//! error (or a crash) part-way never leaves a half-written file where the old one was, and
//! arrays still mapped from the old file stay valid. Malformed input gives an
//! [`Error::Io`] that names the file and the problem, never a panic.
//!
//! A mapped file must not be truncated or rewritten in place while arrays loaded from it are
//! alive (that holds for every memory-mapped loader); replacing it with a new file, as the
//! writers here do, is fine.

mod ggml_blocks;
mod gguf;
mod npy;
mod safetensors;

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Error, Result};

pub use self::ggml_blocks::GgmlType;
pub use self::gguf::{load_gguf, GgufFile, GgufTensorInfo, GgufValue};
pub use self::npy::{load_npy, load_npz, save_npy, save_npz};
pub use self::safetensors::{load_safetensors, save_safetensors};

/// What [`load`] found: one array (`.npy`) or named arrays (`.npz`, `.safetensors`).
#[derive(Debug)]
pub enum Loaded {
    /// The array of an `.npy` file.
    Array(Array),
    /// The arrays of an `.npz` or `.safetensors` file, by name.
    Arrays(HashMap<String, Array>),
}

impl Loaded {
    /// The single array of an `.npy` file; an error for a file of named arrays.
    pub fn into_array(self) -> Result<Array> {
        match self {
            Loaded::Array(a) => Ok(a),
            Loaded::Arrays(_) => {
                Err(Error::Io("the file holds named arrays (npz or safetensors); use into_arrays()".into()))
            }
        }
    }

    /// The named arrays of an `.npz` or `.safetensors` file; an `.npy` array is an error.
    pub fn into_arrays(self) -> Result<HashMap<String, Array>> {
        match self {
            Loaded::Arrays(m) => Ok(m),
            Loaded::Array(_) => Err(Error::Io("the file holds a single array (npy); use into_array()".into())),
        }
    }
}

/// The formats [`load`] and [`save`] know, by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Safetensors,
    Npy,
    Npz,
}

fn format_of(path: &Path, op: &str) -> Result<Format> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "safetensors" => Ok(Format::Safetensors),
        "npy" => Ok(Format::Npy),
        "npz" => Ok(Format::Npz),
        _ => Err(Error::Io(format!(
            "[{op}] {}: unknown file extension {ext:?}; expected .safetensors, .npy or .npz",
            path.display()
        ))),
    }
}

/// Loads a `.safetensors`, `.npy` or `.npz` file, chosen by its extension. Safetensors
/// metadata is dropped here; [`load_safetensors`] returns it.
pub fn load(path: impl AsRef<Path>) -> Result<Loaded> {
    let path = path.as_ref();
    Ok(match format_of(path, "load")? {
        Format::Safetensors => Loaded::Arrays(load_safetensors(path)?.0),
        Format::Npy => Loaded::Array(load_npy(path)?),
        Format::Npz => Loaded::Arrays(load_npz(path)?),
    })
}

/// Saves named arrays to a `.safetensors`, `.npy` or `.npz` (uncompressed) file, chosen by
/// its extension. An `.npy` file holds exactly one array (its name is ignored).
///
/// `arrays` is anything that iterates over `(name, array)` pairs: `&HashMap<String, Array>`,
/// `vec![("w", w)]`, `[("w", &w)]`, or `slice.iter().map(|(k, v)| (k, v))`.
pub fn save<I, K, V>(path: impl AsRef<Path>, arrays: I) -> Result<()>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: Borrow<Array>,
{
    let path = path.as_ref();
    match format_of(path, "save")? {
        Format::Safetensors => save_safetensors(path, arrays, None),
        Format::Npz => save_npz(path, arrays, false),
        Format::Npy => {
            let mut it = arrays.into_iter();
            match (it.next(), it.next()) {
                (Some((_, a)), None) => save_npy(path, a.borrow()),
                _ => Err(Error::Io(format!("[save] {}: an .npy file holds exactly one array", path.display()))),
            }
        }
    }
}

/// An I/O error for `op` on `path`.
fn err(op: &str, path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Io(format!("[{op}] {}: {msg}", path.display()))
}

/// Opens `path` for reading, with an error that names it.
fn open(op: &str, path: &Path) -> Result<File> {
    File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => err(op, path, "no such file"),
        _ => err(op, path, format_args!("cannot open: {e}")),
    })
}

/// Collects `(name, array)` pairs, refusing duplicate and empty names.
fn collect_named<I, K, V>(op: &str, path: &Path, arrays: I) -> Result<Vec<(String, Array)>>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: Borrow<Array>,
{
    let mut out: Vec<(String, Array)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (k, v) in arrays {
        let name = k.as_ref().to_string();
        if !seen.insert(name.clone()) {
            return Err(err(op, path, format_args!("the name {name:?} appears twice")));
        }
        out.push((name, v.borrow().clone()));
    }
    Ok(out)
}

/// Evaluates `arrays` (row-major copies where needed) and returns them contiguous.
fn evaluate_contiguous(arrays: &[Array]) -> Result<Vec<Array>> {
    let c: Vec<Array> = arrays.iter().map(crate::ops::contiguous).collect::<Result<_>>()?;
    crate::eval::eval(&c.iter().collect::<Vec<_>>())?;
    Ok(c)
}

/// The bytes of an evaluated, row-major array (as made by [`evaluate_contiguous`]).
struct HostBytes {
    data: crate::array::Data,
    start: usize,
    len: usize,
    elem: usize,
}

impl HostBytes {
    fn of(a: &Array) -> Result<HostBytes> {
        let data = a.data()?;
        if !data.is_row_contiguous(a.shape()) {
            return Err(Error::Io("internal: array not contiguous after evaluation".into()));
        }
        let elem = a.dtype().size();
        Ok(HostBytes { start: data.offset * elem, len: a.nbytes(), elem, data })
    }

    fn bytes(&self) -> &[u8] {
        &self.data.buffer.as_bytes()[self.start..self.start + self.len]
    }

    /// Writes the elements little-endian.
    fn write_le(&self, w: &mut impl Write) -> std::io::Result<()> {
        if cfg!(target_endian = "big") && self.elem > 1 {
            for chunk in self.bytes().chunks(1 << 16) {
                let mut v = chunk.to_vec();
                swap_bytes(&mut v, self.elem);
                w.write_all(&v)?;
            }
            Ok(())
        } else {
            w.write_all(self.bytes())
        }
    }
}

/// Reverses the byte order of each `size`-byte element of `bytes`.
fn swap_bytes(bytes: &mut [u8], size: usize) {
    if size > 1 {
        for chunk in bytes.chunks_exact_mut(size) {
            chunk.reverse();
        }
    }
}

/// True if every byte is 0 or 1 (valid `bool` storage).
fn valid_bools(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b <= 1)
}

/// Maps any non-zero byte to 1, so the bytes are valid `bool`s.
fn normalize_bools(bytes: &mut [u8]) {
    for b in bytes {
        *b = (*b != 0) as u8;
    }
}

/// Product of `shape`, or an error if it overflows.
fn checked_numel(shape: &[usize], dtype: Dtype) -> Option<(usize, usize)> {
    let n = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
    let bytes = n.checked_mul(dtype.size())?;
    Some((n, bytes))
}

static TEMP_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Writes `path` through a temporary file in the same directory that is renamed over it once
/// `write` succeeded and the data reached the disk. On failure the temporary file is removed
/// and `path` is left as it was.
fn write_atomically(
    op: &str,
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name =
        path.file_name().ok_or_else(|| err(op, path, "the path names no file"))?.to_string_lossy().into_owned();
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{file_name}.{}.{n}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        write(&mut w)?;
        w.flush()?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(op, path, format_args!("cannot write: {e}")));
    }
    Ok(())
}
