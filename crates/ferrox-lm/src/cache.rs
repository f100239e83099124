//! Key/value caches for autoregressive decoding, one per attention layer, and prompt-cache
//! files in mlx-lm's safetensors layout.
//!
//! * [`StandardCache`] keeps every position. Its buffer grows in steps of [`STEP`] positions
//!   and each update writes into it with `slice_update`, so a token costs no reallocation.
//! * [`RotatingCache`] keeps at most `max_size` positions (`--max-kv-size`), always including
//!   the first `keep` ("attention sink") tokens; single-token updates overwrite the oldest slot.
//! * [`QuantizedCache`] keeps every position, quantized (`--kv-bits`; see [`crate::kv_quant`]).
//!
//! Caches store keys and values as `[B, n_kv_heads, capacity, head_dim]`; what attention sees
//! is the first [`KvCache::len`] positions (or, rotated, all of them).

use std::collections::HashMap;
use std::path::Path;

use ferrox::fast::{RopeOffset, SdpaMask};
use ferrox::{self as fx, Array, Dtype};

pub use crate::cache_batch::BatchRotatingCache;
use crate::error::{Error, Result};
pub use crate::kv_quant::{maybe_quantize, KvQuantization, QuantizedCache};

/// Positions a [`StandardCache`] (and a growing [`RotatingCache`]) allocates at a time.
pub const STEP: usize = 256;

/// The cache of one attention layer.
#[derive(Clone, Debug)]
pub enum KvCache {
    /// Keeps everything.
    Standard(StandardCache),
    /// Keeps a window (plus sink tokens).
    Rotating(RotatingCache),
    /// Keeps everything, quantized.
    Quantized(QuantizedCache),
    /// Rotating caches of a batch's rows, decoded together (see [`crate::cache_batch`]).
    BatchRotating(BatchRotatingCache),
}

/// Fresh caches for `layers` layers: rotating ones of `max_kv_size` positions (keeping 4 sink
/// tokens, as mlx-lm does) when a maximum is given, standard ones otherwise.
pub fn make_prompt_cache(layers: usize, max_kv_size: Option<usize>) -> Vec<KvCache> {
    (0..layers)
        .map(|_| match max_kv_size {
            Some(m) => KvCache::Rotating(RotatingCache::new(m, 4)),
            None => KvCache::Standard(StandardCache::default()),
        })
        .collect()
}

impl KvCache {
    /// Appends this step's `keys` and `values` (`[B, H, S, D]`) and returns what attention
    /// should read: all cached keys and values.
    pub fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        match self {
            KvCache::Standard(c) => c.update_and_fetch(keys, values),
            KvCache::Rotating(c) => c.update_and_fetch(keys, values),
            KvCache::Quantized(c) => {
                check_kv(keys, values)?;
                c.update_and_fetch(keys, values)
            }
            KvCache::BatchRotating(c) => {
                check_kv(keys, values)?;
                c.update_and_fetch(keys, values)
            }
        }
    }

    /// Whether appending `n` more tokens leaves the same keys and values, seen by the same
    /// queries, however the tokens are split into updates: always for a standard cache, and
    /// for a rotating one while all of them fit without rotating (a multi-token update of a
    /// full rotating cache keeps a plain window, a one-token update keeps the sink tokens).
    /// Prefill runs a prompt's last token with its last chunk only then; otherwise alone, as
    /// mlx-lm does.
    pub fn splits_alike(&self, n: usize) -> bool {
        match self {
            KvCache::Standard(_) => true,
            KvCache::Rotating(c) => c.offset + n <= c.max_size,
            KvCache::Quantized(_) | KvCache::BatchRotating(_) => false,
        }
    }

    /// How many positions have been processed (the position of the next token).
    pub fn offset(&self) -> usize {
        match self {
            KvCache::Standard(c) => c.offset,
            KvCache::Rotating(c) => c.start + c.offset,
            KvCache::Quantized(c) => c.offset,
            KvCache::BatchRotating(c) => c.position,
        }
    }

    /// The position of the next token as rope takes it: the device array of a replayable
    /// decode step (the `decode_graph` module) while one is built, else [`KvCache::offset`].
    pub fn rope_offset(&self) -> RopeOffset {
        match self {
            KvCache::Standard(StandardCache { device_pos: Some(pos), .. }) => RopeOffset::Array(pos.clone()),
            _ => RopeOffset::Int(self.offset() as i64),
        }
    }

    /// How many positions attention will see (the most over a batch's rows).
    pub fn len(&self) -> usize {
        match self {
            KvCache::Standard(c) => c.offset,
            KvCache::Rotating(c) => c.offset.min(c.max_size),
            KvCache::Quantized(c) => c.offset,
            KvCache::BatchRotating(c) => c.visible().into_iter().max().unwrap_or(0),
        }
    }

    /// Whether nothing has been cached yet.
    pub fn is_empty(&self) -> bool {
        self.offset() == 0
    }

    /// The attention mask for the next `n` queries, before they are added: causal (and
    /// windowed to `window` positions when given, or to a rotating cache's size).
    pub fn mask(&self, n: usize, window: Option<usize>) -> Result<SdpaMask> {
        match self {
            KvCache::Standard(StandardCache { device_pos: Some(pos), keys: Some(k), left_padding, .. })
                if window.is_none() =>
            {
                // Keys up to the new token's position, read on the device (and past each row's
                // padding: a constant of the batch).
                let s = k.shape()[2];
                let keys = fx::reshape_usize(&fx::arange(0.0, s as f64, 1.0, Dtype::I32)?, &[1, 1, 1, s])?;
                let seen = fx::less_equal(&keys, pos)?;
                if left_padding.iter().all(|&p| p == 0) {
                    return Ok(SdpaMask::Array(seen));
                }
                let pads: Vec<i32> = left_padding.iter().map(|&p| p as i32).collect();
                let pads = fx::reshape_usize(&Array::from_vec(pads), &[left_padding.len(), 1, 1, 1])?;
                Ok(SdpaMask::Array(fx::logical_and(&seen, &fx::greater_equal(&keys, &pads)?)?))
            }
            KvCache::Standard(_) | KvCache::Quantized(_) if self.left_padding().iter().any(|&p| p > 0) => {
                Ok(SdpaMask::Array(padded_causal_mask(n, self.offset(), window, self.left_padding())?))
            }
            KvCache::Standard(_) | KvCache::Quantized(_) => match window {
                Some(w) if self.offset() + n > w => Ok(SdpaMask::Array(causal_mask(n, self.offset(), Some(w))?)),
                _ if n > 1 => Ok(SdpaMask::Causal),
                _ => Ok(SdpaMask::None),
            },
            KvCache::BatchRotating(c) => c.mask(n, window),
            KvCache::Rotating(c) => {
                if n == 1 {
                    return Ok(SdpaMask::None);
                }
                let window = window.unwrap_or(c.max_size);
                let offset = c.offset.min(c.max_size.saturating_sub(1));
                if offset + n > window {
                    Ok(SdpaMask::Array(causal_mask(n, offset, Some(window))?))
                } else {
                    Ok(SdpaMask::Causal)
                }
            }
        }
    }

    /// Marks the cache as holding a batch of left-padded sequences: row `b`'s first
    /// `padding[b]` positions are padding that its queries never see. Only an empty standard
    /// cache takes padding (batched generation uses standard caches, windows being masks).
    pub fn set_left_padding(&mut self, padding: &[usize]) -> Result<()> {
        match self {
            KvCache::Standard(c) if c.offset == 0 => {
                c.left_padding = padding.to_vec();
                Ok(())
            }
            _ => Err(Error::Invalid("left padding needs an empty standard (not rotating) kv cache".into())),
        }
    }

    /// Makes an empty rotating cache number its positions from `start`: a row of a
    /// left-padded batch whose rotating caches are filled one row at a time (positions shifted
    /// by the row's padding, as the rows of a padded batch are), then merged
    /// ([`BatchRotatingCache::merge`]).
    pub fn set_start(&mut self, start: usize) -> Result<()> {
        match self {
            KvCache::Rotating(c) if c.offset == 0 => {
                c.start = start;
                Ok(())
            }
            _ => Err(Error::Invalid("only an empty rotating kv cache takes a start position".into())),
        }
    }

    /// Keeps only the batch rows `rows` (in that order): sequences that finished leave a
    /// batch this way.
    pub fn select_rows(&mut self, rows: &[usize]) -> Result<()> {
        let idx = Array::from_vec(rows.iter().map(|&r| r as u32).collect::<Vec<_>>());
        let arrays: Vec<&mut Array> = match self {
            KvCache::Standard(c) => {
                select(&mut c.left_padding, rows);
                c.keys.iter_mut().chain(&mut c.values).collect()
            }
            KvCache::Rotating(c) => c.keys.iter_mut().chain(&mut c.values).collect(),
            KvCache::Quantized(c) => {
                select(&mut c.left_padding, rows);
                c.keys.iter_mut().chain(&mut c.values).flatten().collect()
            }
            KvCache::BatchRotating(c) => {
                select(&mut c.counts, rows);
                select(&mut c.idx, rows);
                vec![&mut c.keys, &mut c.values]
            }
        };
        for a in arrays {
            if let Some(&r) = rows.iter().find(|&&r| r >= a.shape()[0]) {
                return Err(Error::Invalid(format!("kv cache: row {r} of a batch of {}", a.shape()[0])));
            }
            *a = fx::take(a, &idx, Some(0))?;
        }
        Ok(())
    }

    /// Each batch row's left padding (empty for an unpadded cache).
    fn left_padding(&self) -> &[usize] {
        match self {
            KvCache::Standard(c) => &c.left_padding,
            KvCache::Quantized(c) => &c.left_padding,
            KvCache::Rotating(_) | KvCache::BatchRotating(_) => &[],
        }
    }

    /// Drops the last `n` positions if the cache can (a rotating cache that has wrapped
    /// cannot); returns how many were dropped.
    pub fn trim(&mut self, n: usize) -> usize {
        match self {
            KvCache::Standard(c) => {
                let n = n.min(c.offset);
                c.offset -= n;
                n
            }
            KvCache::Rotating(c) if c.offset < c.max_size => {
                let n = n.min(c.offset);
                c.offset -= n;
                c.idx -= n;
                n
            }
            KvCache::Rotating(_) | KvCache::BatchRotating(_) => 0,
            KvCache::Quantized(c) => {
                let n = n.min(c.offset);
                c.offset -= n;
                n
            }
        }
    }

    /// The stored key and value buffers as they are (capacity and slot order included), or
    /// `None` before the first update or for a quantized cache (see [`KvCache::arrays`]).
    pub fn buffers(&self) -> Option<(&Array, &Array)> {
        let (k, v) = match self {
            KvCache::Standard(c) => (&c.keys, &c.values),
            KvCache::Rotating(c) => (&c.keys, &c.values),
            KvCache::Quantized(_) => return None,
            KvCache::BatchRotating(c) => return Some((&c.keys, &c.values)),
        };
        Some((k.as_ref()?, v.as_ref()?))
    }

    /// Every array the cache stores (to evaluate them, or count their bytes).
    pub fn arrays(&self) -> Vec<&Array> {
        match self {
            KvCache::Standard(c) => c.keys.iter().chain(&c.values).collect(),
            KvCache::Rotating(c) => c.keys.iter().chain(&c.values).collect(),
            KvCache::Quantized(c) => c.keys.iter().chain(&c.values).flatten().collect(),
            KvCache::BatchRotating(c) => vec![&c.keys, &c.values],
        }
    }

    /// Bytes held by the cached keys and values.
    pub fn nbytes(&self) -> usize {
        self.arrays().into_iter().map(Array::nbytes).sum()
    }
}

/// Keeps the entries `rows` of a per-row list (if it is not empty).
fn select<T: Copy>(per_row: &mut Vec<T>, rows: &[usize]) {
    if !per_row.is_empty() {
        *per_row = rows.iter().filter_map(|&r| per_row.get(r).copied()).collect();
    }
}

/// `mask[i, j]` = query `offset + i` may see key `j` (causal, and within `window` if given):
/// a bool array `[n, offset + n]`.
pub fn causal_mask(n: usize, offset: usize, window: Option<usize>) -> Result<Array> {
    let q = fx::reshape_usize(&fx::arange(offset as f64, (offset + n) as f64, 1.0, Dtype::I32)?, &[n, 1])?;
    let k = fx::reshape_usize(&fx::arange(0.0, (offset + n) as f64, 1.0, Dtype::I32)?, &[1, offset + n])?;
    let mut mask = fx::greater_equal(&q, &k)?;
    if let Some(w) = window {
        mask = fx::logical_and(&mask, &fx::less(&q, &fx::add(&k, w as i32)?)?)?;
    }
    Ok(mask)
}

/// [`causal_mask`] for a batch of left-padded sequences, `[B, 1, n, offset + n]`: row `b`'s
/// queries do not see its first `padding[b]` positions. A padding query sees itself, so its
/// (never used) output stays finite rather than the softmax of nothing.
pub fn padded_causal_mask(n: usize, offset: usize, window: Option<usize>, padding: &[usize]) -> Result<Array> {
    let s = offset + n;
    let causal = fx::reshape_usize(&causal_mask(n, offset, window)?, &[1, 1, n, s])?;
    let pad = Array::from_vec(padding.iter().map(|&p| p as i32).collect::<Vec<_>>());
    let pad = fx::reshape_usize(&pad, &[padding.len(), 1, 1, 1])?;
    let k = fx::reshape_usize(&fx::arange(0.0, s as f64, 1.0, Dtype::I32)?, &[1, 1, 1, s])?;
    let q = fx::reshape_usize(&fx::arange(offset as f64, s as f64, 1.0, Dtype::I32)?, &[1, 1, n, 1])?;
    let real_key = fx::greater_equal(&k, &pad)?;
    let itself = fx::equal(&k, &q)?;
    Ok(fx::logical_and(&causal, &fx::logical_or(&real_key, &itself)?)?)
}

/// A cache that keeps every position, in a buffer grown [`STEP`] positions at a time.
#[derive(Clone, Debug, Default)]
pub struct StandardCache {
    pub(crate) keys: Option<Array>,
    pub(crate) values: Option<Array>,
    pub(crate) offset: usize,
    /// For a batch of left-padded sequences: each row's padding, positions no query of that
    /// row may see (empty when unbatched).
    pub(crate) left_padding: Vec<usize>,
    /// While a replayable decode step is built (the `decode_graph` module): the new token's
    /// position as an i32 `[1]` array on the device. The write, the mask and rope then read
    /// the position there, and attention reads the whole buffer (keys past it masked), so the
    /// step's kernels do not change from one token to the next.
    pub(crate) device_pos: Option<Array>,
}

/// `a[..., start:stop, :]` on axis 2.
pub(crate) fn positions(a: &Array, start: usize, stop: usize) -> Result<Array> {
    Ok(fx::slice_axis(a, 2, start as isize, stop as isize)?)
}

/// Writes `update` into `buf[..., at:at+S, :]`.
fn write_at(buf: &Array, update: &Array, at: usize) -> Result<Array> {
    let s = update.shape()[2];
    let start = [0, 0, at as isize, 0];
    let stop = [buf.shape()[0] as isize, buf.shape()[1] as isize, (at + s) as isize, buf.shape()[3] as isize];
    Ok(fx::slice_update(buf, update, &start, &stop, &[1, 1, 1, 1])?)
}

/// `zeros` shaped like `like` but with `n` positions.
fn zeros_positions(like: &Array, n: usize) -> Result<Array> {
    let s = like.shape();
    Ok(fx::zeros(&[s[0], s[1], n, s[3]], like.dtype())?)
}

fn check_kv(keys: &Array, values: &Array) -> Result<()> {
    let (k, v) = (keys.shape(), values.shape());
    if k.len() != 4 || v.len() != 4 || k[..3] != v[..3] {
        return Err(Error::Invalid(format!(
            "kv cache: keys and values must be [B, H, S, D] with equal B, H, S; got {k:?} and {v:?}"
        )));
    }
    Ok(())
}

/// `buf` with `update` (`[B, H, S, ·]`) written at positions `at..at + S` of axis 2; a
/// buffer that is absent or too short is replaced by its first `at` positions, `update`, and
/// zeros up to whole [`STEP`]s of new positions, at least one (one copy into the new buffer:
/// no zero fill of what the update covers). The zeros are never left out: they make the
/// concatenation a new buffer of the cache's own, where a lone update would be the very
/// array it came from — a view that keeps the whole q / k / v product or rope output alive —
/// and the next token finds room.
pub(crate) fn append_at(buf: Option<&Array>, update: &Array, at: usize) -> Result<Array> {
    let s = update.shape()[2];
    match buf {
        Some(b) if at + s <= b.shape()[2] => write_at(b, update, at),
        old => {
            let mut parts = Vec::with_capacity(3);
            if let Some(b) = old {
                parts.push(positions(b, 0, at)?);
            }
            parts.push(update.clone());
            parts.push(zeros_positions(update, (s + 1).div_ceil(STEP) * STEP - s)?);
            Ok(fx::concatenate(&parts, 2)?)
        }
    }
}

impl StandardCache {
    /// See [`KvCache::update_and_fetch`].
    pub fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        check_kv(keys, values)?;
        if let Some(pos) = self.device_pos.clone() {
            return self.write_at_device_pos(keys, values, &pos);
        }
        let prev = self.offset;
        let k = append_at(self.keys.as_ref(), keys, prev)?;
        let v = append_at(self.values.as_ref(), values, prev)?;
        self.offset += keys.shape()[2];
        let out = (positions(&k, 0, self.offset)?, positions(&v, 0, self.offset)?);
        self.keys = Some(k);
        self.values = Some(v);
        Ok(out)
    }
}

impl StandardCache {
    /// One token's keys and values written at the device position `pos` into the buffers
    /// (which must have room), in place; attention reads the whole buffers.
    fn write_at_device_pos(&mut self, keys: &Array, values: &Array, pos: &Array) -> Result<(Array, Array)> {
        let (Some(k), Some(v)) = (self.keys.take(), self.values.take()) else {
            return Err(Error::Invalid("kv cache: a device-position write needs an allocated cache".into()));
        };
        if keys.shape()[2] != 1 || self.offset >= k.shape()[2] {
            return Err(Error::Invalid(format!(
                "kv cache: a device-position write takes one token into a buffer with room (offset {}, {} positions)",
                self.offset,
                k.shape()[2]
            )));
        }
        let at = fx::reshape_usize(pos, &[1, 1, 1, 1])?;
        // The old buffers are held by nothing else once these ops hold them: written in place.
        let k = fx::put_along_axis(&k, &at, keys, Some(2))?;
        let v = fx::put_along_axis(&v, &at, values, Some(2))?;
        self.offset += 1;
        self.keys = Some(k.clone());
        self.values = Some(v.clone());
        Ok((k, v))
    }
}

/// A cache of at most `max_size` positions that always keeps the first `keep`.
#[derive(Clone, Debug)]
pub struct RotatingCache {
    pub(crate) keys: Option<Array>,
    pub(crate) values: Option<Array>,
    /// Positions written so far.
    pub(crate) offset: usize,
    pub(crate) max_size: usize,
    pub(crate) keep: usize,
    /// Where the next single-token write goes.
    pub(crate) idx: usize,
    /// The position of the first token (0, except for a row of a left-padded batch, whose
    /// positions start after its padding).
    pub(crate) start: usize,
}

impl RotatingCache {
    /// An empty cache of `max_size` positions keeping `keep` sink tokens.
    pub fn new(max_size: usize, keep: usize) -> RotatingCache {
        RotatingCache { keys: None, values: None, offset: 0, max_size, keep: keep.min(max_size), idx: 0, start: 0 }
    }

    /// See [`KvCache::update_and_fetch`]. One token is written in place (rotating over the
    /// oldest non-sink slot); several are appended after putting the cache in temporal order
    /// and dropping what falls out of the window, so each new query still sees `max_size`
    /// positions.
    pub fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        check_kv(keys, values)?;
        if self.max_size == 0 {
            return Err(Error::Invalid("rotating kv cache: max_kv_size must be at least 1".into()));
        }
        if keys.shape()[2] == 1 {
            self.update_in_place(keys, values)
        } else {
            self.update_concat(keys, values)
        }
    }

    /// The buffer in temporal order, without unused slots.
    fn temporal(&self, a: &Array) -> Result<Array> {
        let len = a.shape()[2];
        if self.idx == len {
            Ok(a.clone())
        } else if self.idx < self.offset {
            Ok(fx::concatenate(
                &[positions(a, 0, self.keep)?, positions(a, self.idx, len)?, positions(a, self.keep, self.idx)?],
                2,
            )?)
        } else {
            positions(a, 0, self.idx)
        }
    }

    /// Drops `n` positions after the sink tokens, then appends `append`.
    fn trim_append(&self, n: usize, a: &Array, append: Option<&Array>) -> Result<Array> {
        let mut parts = if n > 0 {
            vec![positions(a, 0, self.keep)?, positions(a, n + self.keep, a.shape()[2])?]
        } else {
            vec![a.clone()]
        };
        parts.extend(append.cloned());
        Ok(fx::concatenate(&parts, 2)?)
    }

    fn update_concat(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        let (k, v) = match (self.keys.take(), self.values.take()) {
            (Some(k), Some(v)) => {
                let (k, v) = (self.temporal(&k)?, self.temporal(&v)?);
                self.idx = k.shape()[2];
                let trim = (self.idx + 1).saturating_sub(self.max_size);
                (self.trim_append(trim, &k, Some(keys))?, self.trim_append(trim, &v, Some(values))?)
            }
            _ => (keys.clone(), values.clone()),
        };
        self.offset += keys.shape()[2];
        self.idx = k.shape()[2];
        self.keys = Some(k.clone());
        self.values = Some(v.clone());
        Ok((k, v))
    }

    fn update_in_place(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        let prev = self.offset;
        let capacity = self.keys.as_ref().map_or(0, |k| k.shape()[2]);
        if self.keys.is_none() || (prev >= capacity && capacity < self.max_size) {
            let grow = STEP.min(self.max_size - prev.min(self.max_size)).max(1);
            let (new_k, new_v) = (zeros_positions(keys, grow)?, zeros_positions(values, grow)?);
            match (self.keys.take(), self.values.take()) {
                (Some(k), Some(v)) => {
                    self.keys = Some(fx::concatenate(&[k, new_k], 2)?);
                    self.values = Some(fx::concatenate(&[v, new_v], 2)?);
                }
                _ => {
                    self.keys = Some(new_k);
                    self.values = Some(new_v);
                }
            }
            self.idx = prev;
        }
        let mut k = self.keys.take().expect("allocated");
        let mut v = self.values.take().expect("allocated");
        let extra = k.shape()[2].saturating_sub(self.max_size);
        if extra > 0 {
            k = self.trim_append(extra, &k, None)?;
            v = self.trim_append(extra, &v, None)?;
            self.idx = self.max_size;
        }
        if self.idx == self.max_size {
            self.idx = self.keep;
        }
        let k = write_at(&k, keys, self.idx)?;
        let v = write_at(&v, values, self.idx)?;
        self.offset += 1;
        self.idx += 1;
        let out = if self.offset < k.shape()[2] {
            (positions(&k, 0, self.offset)?, positions(&v, 0, self.offset)?)
        } else {
            (k.clone(), v.clone())
        };
        self.keys = Some(k);
        self.values = Some(v);
        Ok(out)
    }
}

// ---- prompt-cache files -------------------------------------------------------------------
//
// mlx-lm's layout: tensors named `{layer}.{i}` for the i-th entry of each cache's state
// (keys, values, then integers as 0-d int32 arrays); metadata keys flattened from the list
// [user metadata, class names, scalar markers]: `0.{key}` → user value, `1.{layer}` → class
// name, `2.0` → "", and for each integer entry n ≥ 1: `2.{n}.0` → "{layer}.{i}",
// `2.{n}.1` → "scalar" (or "none" for an empty cache's missing arrays).

/// Saves `caches` and `metadata` to a safetensors file that `mlx_lm`'s `load_prompt_cache`
/// reads.
pub fn save_prompt_cache(path: impl AsRef<Path>, caches: &[KvCache], metadata: &HashMap<String, String>) -> Result<()> {
    let mut arrays: Vec<(String, Array)> = Vec::new();
    let mut meta: HashMap<String, String> = metadata.iter().map(|(k, v)| (format!("0.{k}"), v.clone())).collect();
    meta.insert("2.0".into(), String::new());
    let mut markers = 0;
    let mut mark = |meta: &mut HashMap<String, String>, name: &str, kind: &str| {
        markers += 1;
        meta.insert(format!("2.{markers}.0"), name.to_string());
        meta.insert(format!("2.{markers}.1"), kind.to_string());
    };
    for (l, cache) in caches.iter().enumerate() {
        // State entries 0 and 1 are the keys and values: an array, or for a quantized cache a
        // (packed, scales, biases) triple named `.0`, `.1`, `.2` below them.
        let (class, kv, ints): (_, [Option<Vec<&Array>>; 2], Vec<usize>) = match cache {
            KvCache::Standard(c) => {
                ("KVCache", [c.keys.as_ref().map(|a| vec![a]), c.values.as_ref().map(|a| vec![a])], vec![c.offset])
            }
            KvCache::Rotating(c) => (
                "RotatingKVCache",
                [c.keys.as_ref().map(|a| vec![a]), c.values.as_ref().map(|a| vec![a])],
                vec![c.offset, c.keep, c.max_size, c.idx],
            ),
            KvCache::Quantized(c) => (
                "QuantizedKVCache",
                [c.keys.as_ref().map(|t| t.iter().collect()), c.values.as_ref().map(|t| t.iter().collect())],
                vec![c.offset, c.group_size, c.bits],
            ),
            KvCache::BatchRotating(_) => {
                return Err(Error::Invalid(format!(
                    "layer {l}: a batch's rotating caches cannot be saved as a prompt cache"
                )))
            }
        };
        meta.insert(format!("1.{l}"), class.to_string());
        for (i, a) in kv.into_iter().enumerate() {
            let name = format!("{l}.{i}");
            match a {
                Some(parts) if parts.len() == 1 => arrays.push((name, parts[0].clone())),
                Some(parts) => {
                    arrays.extend(parts.into_iter().enumerate().map(|(j, p)| (format!("{name}.{j}"), p.clone())))
                }
                None => {
                    arrays.push((name.clone(), fx::zeros(&[0], Dtype::F32)?));
                    mark(&mut meta, &name, "none");
                }
            }
        }
        for (j, n) in ints.into_iter().enumerate() {
            let name = format!("{l}.{}", j + 2);
            arrays.push((name.clone(), Array::scalar(n as i32)));
            mark(&mut meta, &name, "scalar");
        }
    }
    fx::save_safetensors(path.as_ref(), arrays.iter().map(|(k, v)| (k.as_str(), v)), Some(&meta))?;
    Ok(())
}

/// Loads a prompt-cache file written by [`save_prompt_cache`] or `mlx_lm.cache_prompt`:
/// the per-layer caches and the user metadata.
pub fn load_prompt_cache(path: impl AsRef<Path>) -> Result<(Vec<KvCache>, HashMap<String, String>)> {
    let path = path.as_ref();
    let (arrays, meta) = fx::load_safetensors(path)?;
    let bad = |m: String| Error::file(path, format!("not a prompt cache: {m}"));
    let mut user = HashMap::new();
    let mut classes = Vec::new();
    let mut none = std::collections::HashSet::new();
    for (k, v) in &meta {
        if let Some(key) = k.strip_prefix("0.") {
            user.insert(key.to_string(), v.clone());
        } else if let Some(layer) = k.strip_prefix("1.") {
            let l: usize = layer.parse().map_err(|_| bad(format!("metadata key {k:?}")))?;
            classes.push((l, v.clone()));
        } else if let Some(rest) = k.strip_prefix("2.").and_then(|r| r.strip_suffix(".1")) {
            if v == "none" {
                let name = meta.get(&format!("2.{rest}.0")).ok_or_else(|| bad(format!("marker {k:?} has no name")))?;
                none.insert(name.clone());
            }
        }
    }
    classes.sort();
    let get = |name: String| -> Result<Option<Array>> {
        if none.contains(&name) {
            return Ok(None);
        }
        arrays.get(&name).cloned().map(Some).ok_or_else(|| bad(format!("tensor {name:?} is missing")))
    };
    let int = |name: String| -> Result<usize> {
        let a = get(name.clone())?.ok_or_else(|| bad(format!("{name} is empty")))?;
        let v: i64 = fx::astype(&a, Dtype::I64)?.item()?;
        usize::try_from(v).map_err(|_| bad(format!("{name} = {v} is negative")))
    };
    let mut caches = Vec::new();
    for (i, (l, class)) in classes.iter().enumerate() {
        if *l != i {
            return Err(bad(format!("layer {i} has no class")));
        }
        let kv = || -> Result<(Option<Array>, Option<Array>)> { Ok((get(format!("{l}.0"))?, get(format!("{l}.1"))?)) };
        caches.push(match class.as_str() {
            "KVCache" => {
                let (keys, values) = kv()?;
                KvCache::Standard(StandardCache {
                    keys,
                    values,
                    offset: int(format!("{l}.2"))?,
                    left_padding: vec![],
                    device_pos: None,
                })
            }
            "RotatingKVCache" => KvCache::Rotating(RotatingCache {
                keys: kv()?.0,
                values: kv()?.1,
                offset: int(format!("{l}.2"))?,
                keep: int(format!("{l}.3"))?,
                max_size: int(format!("{l}.4"))?,
                idx: int(format!("{l}.5"))?,
                start: 0,
            }),
            "QuantizedKVCache" => {
                let triple = |i: usize| -> Result<Option<[Array; 3]>> {
                    if none.contains(&format!("{l}.{i}")) {
                        return Ok(None);
                    }
                    let part = |j: usize| -> Result<Array> {
                        get(format!("{l}.{i}.{j}"))?.ok_or_else(|| bad(format!("{l}.{i}.{j} is empty")))
                    };
                    Ok(Some([part(0)?, part(1)?, part(2)?]))
                };
                KvCache::Quantized(QuantizedCache {
                    keys: triple(0)?,
                    values: triple(1)?,
                    offset: int(format!("{l}.2"))?,
                    group_size: int(format!("{l}.3"))?,
                    bits: int(format!("{l}.4"))?,
                    left_padding: vec![],
                })
            }
            other => {
                return Err(bad(format!(
                    "cache class {other:?} is not supported (KVCache, RotatingKVCache, QuantizedKVCache)"
                )))
            }
        });
    }
    for (l, c) in caches.iter().enumerate() {
        c.check_loaded().map_err(|m| bad(format!("layer {l}: {m}")))?;
    }
    Ok((caches, user))
}

impl KvCache {
    /// Whether a cache read from a file is consistent: keys and values `[B, H, S, D]` alike
    /// in B, H and S, holding at least the positions the counters say.
    fn check_loaded(&self) -> std::result::Result<(), String> {
        let (k, v): (Option<&Array>, Option<&Array>) = match self {
            KvCache::Standard(c) => (c.keys.as_ref(), c.values.as_ref()),
            KvCache::Rotating(c) => (c.keys.as_ref(), c.values.as_ref()),
            KvCache::Quantized(c) => (c.keys.as_ref().map(|t| &t[0]), c.values.as_ref().map(|t| &t[0])),
            KvCache::BatchRotating(_) => return Ok(()),
        };
        let slots = match (k, v) {
            (Some(k), Some(v)) => {
                let (ks, vs) = (k.shape(), v.shape());
                if ks.len() != 4 || vs.len() != 4 || ks[..3] != vs[..3] {
                    return Err(format!("keys {ks:?} and values {vs:?} are not [B, H, S, D] alike"));
                }
                ks[2]
            }
            (None, None) => 0,
            _ => return Err("keys without values or values without keys".into()),
        };
        match self {
            KvCache::Rotating(c)
                if c.max_size == 0 || c.keep > c.max_size || c.idx > slots || (c.offset > 0) != (slots > 0) =>
            {
                Err(format!(
                    "rotating cache with {slots} slots, offset {}, keep {}, max_size {}, idx {}",
                    c.offset, c.keep, c.max_size, c.idx
                ))
            }
            KvCache::Rotating(_) => Ok(()),
            _ if self.offset() > slots => Err(format!("offset {} but only {slots} cached positions", self.offset())),
            _ => Ok(()),
        }
    }
}

/// Caches together with the tokens they hold, so a new prompt that extends (or shares a
/// beginning with) the previous one only runs its new tokens — a conversation turn re-uses
/// everything up to where it differs.
#[derive(Clone, Debug)]
pub struct PromptCache {
    /// The per-layer caches.
    pub caches: Vec<KvCache>,
    /// The tokens they hold, in order.
    pub tokens: Vec<u32>,
}

impl PromptCache {
    /// Empty caches (from `LanguageModel::make_cache`).
    pub fn new(caches: Vec<KvCache>) -> PromptCache {
        PromptCache { caches, tokens: Vec::new() }
    }

    /// Makes the caches hold a prefix of `prompt` and returns the rest, the tokens still to
    /// run (never empty: at least the last token is run again to get its logits). Caches that
    /// cannot be trimmed back far enough (a rotating cache that has wrapped) are emptied, with
    /// `fresh` making new ones.
    pub fn reuse<'p>(&mut self, prompt: &'p [u32], fresh: impl FnOnce() -> Vec<KvCache>) -> &'p [u32] {
        let common = self.tokens.iter().zip(prompt).take_while(|(a, b)| a == b).count();
        let keep = common.min(prompt.len().saturating_sub(1));
        let drop = self.tokens.len() - keep;
        let trimmed = self.caches.iter_mut().all(|c| c.trim(drop) == drop || c.offset() == 0);
        if trimmed && self.caches.iter().all(|c| c.offset() == keep) {
            self.tokens.truncate(keep);
            &prompt[keep..]
        } else {
            self.caches = fresh();
            self.tokens.clear();
            prompt
        }
    }
}
