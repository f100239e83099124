//! The quantized KV cache (`--kv-bits`): keys and values stored as MLX affine-quantized
//! triples (packed uint32 words, scales, biases; `bits` per element, `group_size` elements
//! of a head's features per scale), as mlx-lm's `QuantizedKVCache` stores them — so a
//! prompt cache holding one loads in either tool.
//!
//! A standard cache turns into a quantized one once it holds `start` positions
//! ([`maybe_quantize`], checked after every forward pass as mlx-lm does); from then on each
//! update quantizes the new positions into buffers grown [`crate::cache::STEP`] positions at a time, and
//! attention reads the dequantized keys and values.

use ferrox::{self as fx, Array, QuantMode};

use crate::cache::{append_at, positions, KvCache};
use crate::error::{Error, Result};

/// When and how caches are quantized (mlx-lm's `kv_bits`, `kv_group_size`,
/// `quantized_kv_start`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvQuantization {
    /// Bits per element (2 to 8).
    pub bits: usize,
    /// Features per scale and bias (32, 64 or 128; must divide the head size).
    pub group_size: usize,
    /// A cache is quantized once it holds this many positions.
    pub start: usize,
}

impl KvQuantization {
    /// Checks the settings.
    pub fn new(bits: usize, group_size: usize, start: usize) -> Result<KvQuantization> {
        if !(2..=8).contains(&bits) || bits == 7 {
            return Err(Error::Invalid(format!("kv bits must be 2, 3, 4, 5, 6 or 8; got {bits}")));
        }
        if ![32, 64, 128].contains(&group_size) {
            return Err(Error::Invalid(format!("kv group size must be 32, 64 or 128; got {group_size}")));
        }
        Ok(KvQuantization { bits, group_size, start })
    }

    /// An error if the caches are to rotate (`max_kv_size`, `--max-kv-size`): a rotating
    /// cache is never quantized, so the pair would leave the quantization unused (mlx-lm
    /// refuses it as well). Rotating caches a model makes for its sliding-window layers stay
    /// unquantized beside the quantized standard ones ([`maybe_quantize`]).
    pub fn check_max_kv_size(&self, max_kv_size: Option<usize>) -> Result<()> {
        match max_kv_size {
            Some(m) => Err(Error::Invalid(format!(
                "--kv-bits {} cannot quantize the rotating cache --max-kv-size {m} asks for: give one or the other",
                self.bits
            ))),
            None => Ok(()),
        }
    }
}

/// One layer's quantized keys and values.
#[derive(Clone, Debug)]
pub struct QuantizedCache {
    pub(crate) keys: Option<[Array; 3]>,
    pub(crate) values: Option<[Array; 3]>,
    pub(crate) offset: usize,
    pub(crate) group_size: usize,
    pub(crate) bits: usize,
    /// For a batch of left-padded sequences, each row's padding (see
    /// [`KvCache::set_left_padding`]); empty when unbatched.
    pub(crate) left_padding: Vec<usize>,
}

/// `fx::quantize` of `a` as a (packed, scales, biases) triple.
fn quantize(a: &Array, group_size: usize, bits: usize) -> Result<[Array; 3]> {
    let (wq, scales, biases) = fx::quantize(a, group_size, bits, QuantMode::Affine)
        .map_err(|e| Error::Invalid(format!("kv cache quantization (group size {group_size}, {bits} bits): {e}")))?;
    let biases = biases.ok_or_else(|| Error::Invalid("affine quantization gave no biases".into()))?;
    Ok([wq, scales, biases])
}

impl QuantizedCache {
    /// An empty cache.
    pub fn new(q: KvQuantization) -> QuantizedCache {
        QuantizedCache {
            keys: None,
            values: None,
            offset: 0,
            group_size: q.group_size,
            bits: q.bits,
            left_padding: vec![],
        }
    }

    /// A cache from stored keys and values (whole buffers, as mlx-lm's `to_quantized` takes
    /// them) holding `offset` positions.
    pub fn from_buffers(
        keys: Option<&Array>,
        values: Option<&Array>,
        offset: usize,
        q: KvQuantization,
    ) -> Result<Self> {
        let mut c = QuantizedCache::new(q);
        c.offset = offset;
        if let (Some(k), Some(v)) = (keys, values) {
            c.keys = Some(quantize(k, q.group_size, q.bits)?);
            c.values = Some(quantize(v, q.group_size, q.bits)?);
        }
        Ok(c)
    }

    /// The quantization settings.
    pub fn quantization(&self) -> (usize, usize) {
        (self.group_size, self.bits)
    }

    /// See [`KvCache::update_and_fetch`]: quantizes `keys` and `values` into the buffers and
    /// returns every cached position dequantized.
    pub fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        let (gs, bits) = (self.group_size, self.bits);
        let (nk, nv) = (quantize(keys, gs, bits)?, quantize(values, gs, bits)?);
        let prev = self.offset;
        let append = |buf: &Option<[Array; 3]>, new: &[Array; 3]| -> Result<[Array; 3]> {
            let part = |i: usize| append_at(buf.as_ref().map(|t| &t[i]), &new[i], prev);
            Ok([part(0)?, part(1)?, part(2)?])
        };
        let k = append(&self.keys, &nk)?;
        let v = append(&self.values, &nv)?;
        self.offset += keys.shape()[2];
        let deq = |t: &[Array; 3]| -> Result<Array> {
            let part = |a: &Array| positions(a, 0, self.offset);
            Ok(fx::dequantize(&part(&t[0])?, &part(&t[1])?, Some(&part(&t[2])?), gs, bits, QuantMode::Affine, None)?)
        };
        let out = (deq(&k)?, deq(&v)?);
        self.keys = Some(k);
        self.values = Some(v);
        Ok(out)
    }
}

/// Turns every standard cache that holds at least `q.start` positions into a quantized one
/// (mlx-lm's `maybe_quantize_kv_cache`), keeping a batch's left padding. Rotating caches
/// (a model's sliding-window layers; `--max-kv-size` with quantization is refused, see
/// [`KvQuantization::check_max_kv_size`]), already bounded, stay as they are.
pub fn maybe_quantize(caches: &mut [KvCache], q: &KvQuantization) -> Result<()> {
    for c in caches.iter_mut() {
        if let KvCache::Standard(s) = c {
            if s.offset < q.start {
                continue;
            }
            let mut quantized = QuantizedCache::from_buffers(s.keys.as_ref(), s.values.as_ref(), s.offset, *q)?;
            quantized.left_padding = std::mem::take(&mut s.left_padding);
            *c = KvCache::Quantized(quantized);
        }
    }
    Ok(())
}
