//! What attention layers share beyond Llama's: how far back a layer attends ([`Reach`]: every
//! position, or a sliding window), the cache and mask that follow from it, and attention with
//! soft-capped scores (Gemma 2).

use ferrox::fast::SdpaMask;
use ferrox::{self as fx, Array, Dtype};

use crate::cache::{causal_mask, KvCache, RotatingCache, StandardCache};
use crate::error::{Error, Result};

/// How far back a layer's queries see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Every earlier position (and itself).
    Global,
    /// The last `n` positions, itself included: query `i` sees keys `j` with `i - n < j <= i`
    /// (transformers' sliding-window layers).
    Window(usize),
}

impl Reach {
    /// The window, if this is one.
    pub fn window(self) -> Option<usize> {
        match self {
            Reach::Global => None,
            Reach::Window(n) => Some(n),
        }
    }

    /// A fresh cache for a layer of this reach: a global layer keeps everything, or at most
    /// `max_kv_size` positions (a rotating cache with 4 sink tokens, as mlx-lm makes it); a
    /// window layer keeps its window in a rotating cache without sink tokens, since it never
    /// looks further back (or `max_kv_size` positions as a global layer would, if fewer).
    pub fn make_cache(self, max_kv_size: Option<usize>) -> KvCache {
        match (self, max_kv_size) {
            (Reach::Window(n), Some(m)) if m < n => KvCache::Rotating(RotatingCache::new(m, 4)),
            (Reach::Window(n), _) => KvCache::Rotating(RotatingCache::new(n, 0)),
            (Reach::Global, Some(m)) => KvCache::Rotating(RotatingCache::new(m, 4)),
            (Reach::Global, None) => KvCache::Standard(StandardCache::default()),
        }
    }

    /// The mask for `n` new queries: following what `cache` holds, or, without a cache, the
    /// whole sequence.
    pub fn mask(self, n: usize, cache: Option<&KvCache>) -> Result<SdpaMask> {
        if let Some(c) = cache {
            return c.mask(n, self.window());
        }
        match self.window() {
            Some(w) if n > w => Ok(SdpaMask::Array(causal_mask(n, 0, Some(w))?)),
            _ if n > 1 => Ok(SdpaMask::Causal),
            _ => Ok(SdpaMask::None),
        }
    }
}

/// The mask of each layer for `n` new queries, computed once per distinct reach (layers of
/// the same reach hold caches in the same state). `caches`, if given, has one per layer.
pub fn layer_masks(reaches: &[Reach], n: usize, caches: Option<&[KvCache]>) -> Result<Vec<SdpaMask>> {
    if let Some(c) = caches {
        if c.len() != reaches.len() {
            return Err(Error::Invalid(format!("{} caches for {} layers", c.len(), reaches.len())));
        }
    }
    let mut computed: Vec<(Reach, SdpaMask)> = Vec::new();
    let mut masks = Vec::with_capacity(reaches.len());
    for (i, &reach) in reaches.iter().enumerate() {
        let mask = match computed.iter().find(|(r, _)| *r == reach) {
            Some((_, m)) => m.clone(),
            None => {
                let m = reach.mask(n, caches.map(|c| &c[i]))?;
                computed.push((reach, m.clone()));
                m
            }
        };
        masks.push(mask);
    }
    Ok(masks)
}

/// `softmax(cap · tanh(q kᵀ · scale / cap) + mask) v` over grouped key/value heads (q
/// `[B, Hq, L, D]`, k and v `[B, Hkv, S, D]`), the softmax in float32; without a cap, the
/// fused `scaled_dot_product_attention`.
pub fn attention(q: &Array, k: &Array, v: &Array, scale: f32, softcap: Option<f32>, mask: &SdpaMask) -> Result<Array> {
    let Some(cap) = softcap else {
        return Ok(fx::fast::scaled_dot_product_attention(q, k, v, scale, mask.clone())?);
    };
    let (qs, ks) = (q.shape(), k.shape());
    let (b, hq, l, d) = (qs[0], qs[1], qs[2], qs[3]);
    let (hkv, s) = (ks[1], ks[2]);
    if hkv == 0 || !hq.is_multiple_of(hkv) {
        return Err(Error::Invalid(format!("{hq} query heads are not a multiple of {hkv} key/value heads")));
    }
    // Queries grouped by the key/value head they share: [B, Hkv, rep·L, D].
    let q = fx::reshape_usize(q, &[b, hkv, (hq / hkv) * l, d])?;
    let scores = fx::multiply(&fx::matmul(&q, &fx::swapaxes(k, 2, 3)?)?, scale / cap)?;
    let scores = fx::multiply(&fx::tanh(&scores)?, cap)?;
    // Back to [B, Hq, L, S], where masks broadcast as the fused attention takes them.
    let scores = fx::reshape_usize(&scores, &[b, hq, l, s])?;
    let scores = match mask {
        SdpaMask::None => scores,
        SdpaMask::Causal => masked(&scores, &causal_mask(l, s - l, None)?)?,
        SdpaMask::Array(m) if m.dtype() == Dtype::Bool => masked(&scores, m)?,
        SdpaMask::Array(m) => fx::add(&scores, &fx::astype(m, scores.dtype())?)?,
    };
    let probs = fx::astype(&fx::softmax(&fx::astype(&scores, Dtype::F32)?, Some(&[-1]), true)?, v.dtype())?;
    let probs = fx::reshape_usize(&probs, &[b, hkv, (hq / hkv) * l, s])?;
    let out = fx::matmul(&probs, v)?;
    Ok(fx::reshape_usize(&out, &[b, hq, l, v.shape()[3]])?)
}

/// `scores` where `keep` (broadcast to `[B, Hq, L, S]`) holds, −∞ elsewhere.
fn masked(scores: &Array, keep: &Array) -> Result<Array> {
    Ok(fx::where_(keep, scores, f32::NEG_INFINITY)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(shape: &[usize], seed: u64) -> Array {
        let key = fx::random::key(seed);
        fx::random::normal(shape, Dtype::F32, 0.0, 1.0, Some(&key)).unwrap()
    }

    #[test]
    fn huge_cap_is_plain_attention() {
        // tanh(x / cap) · cap → x as cap grows: the explicit path must agree with the fused one.
        let (q, k, v) = (rand(&[2, 4, 5, 8], 1), rand(&[2, 2, 7, 8], 2), rand(&[2, 2, 7, 8], 3));
        let masks = [
            SdpaMask::None,
            SdpaMask::Causal,
            SdpaMask::Array(causal_mask(5, 2, Some(3)).unwrap()),
            SdpaMask::Array(rand(&[2, 4, 1, 7], 4)), // additive, per batch and query head
        ];
        for mask in masks {
            let want = attention(&q, &k, &v, 0.3, None, &mask).unwrap().to_vec::<f32>().unwrap();
            let got = attention(&q, &k, &v, 0.3, Some(1e6), &mask).unwrap().to_vec::<f32>().unwrap();
            let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(err < 1e-4, "{err}");
        }
    }

    #[test]
    fn window_masks_and_caches() {
        let m = Reach::Window(3).mask(5, None).unwrap();
        let SdpaMask::Array(m) = m else { panic!("expected an array mask") };
        let keep: Vec<bool> = m.to_vec().unwrap();
        // Query 4 sees keys 2, 3, 4.
        assert_eq!(&keep[20..25], &[false, false, true, true, true]);
        assert!(matches!(Reach::Window(8).mask(5, None).unwrap(), SdpaMask::Causal));
        assert!(matches!(Reach::Window(3).make_cache(None), KvCache::Rotating(_)));
        assert!(matches!(Reach::Global.make_cache(None), KvCache::Standard(_)));
        assert!(matches!(Reach::Global.make_cache(Some(16)), KvCache::Rotating(_)));
        // A window wider than max_kv_size keeps max_kv_size positions, as a global layer would.
        let mut narrow = Reach::Window(100).make_cache(Some(16));
        let mut wide = Reach::Window(100).make_cache(None);
        let kv = rand(&[1, 1, 20, 2], 4);
        for c in [&mut narrow, &mut wide] {
            for t in 0..20 {
                let x = fx::slice_axis(&kv, 2, t, t + 1).unwrap();
                c.update_and_fetch(&x, &x).unwrap();
            }
        }
        assert_eq!((narrow.len(), wide.len()), (16, 20));
    }
}
