//! Prompt attention (more query rows per key/value head than decode takes) over bf16 q, k
//! and v on CPUs with AVX512-BF16: both products run on [`bf16_gemm`] (`vdpbf16ps`, twice an
//! f32 FMA's work an instruction) instead of widening K and V to f32 for the f32 gemm. Each
//! key/value head's K and V are packed once, as the panels that gemm reads, and shared by every
//! block of its query rows (a block reads a prefix: the keys it can see).
//!
//! The scores come out in f32 (products of bf16 values are exact, sums f32) and take the
//! scale, the mask and the softmax in f32. The probabilities enter the product with V as two
//! bf16 parts, `hi = bf16(p)` and `lo = bf16(p − hi)` (16 significant bits together): one
//! product over twice the keys, V's panels read twice. Rounding p to one bf16, as
//! FlashAttention does, moved a tiny bf16 model's greedy tokens away from mlx-lm's; the two
//! parts cost that product an f32 product's instructions, and q kᵀ keeps its 2× gain.

use half::bf16;
use rayon::prelude::*;

use super::bf16_gemm::{self, PackB, NR};
use super::fast::{AttentionOperands, ScoreMask, QUERY_BLOCK};
use super::iter::alloc_out;
use super::simd::dispatch;
use crate::array::{Array, Data};
use crate::dtype::Dtype;
use crate::element::Element;
use crate::error::Result;
use crate::primitives::AttentionMask;

/// Whether this attention (q, k, v, ...) runs here: bf16 operands, a CPU with AVX512-BF16, and
/// an even, non-zero query / key size (the products' inner axis goes in pairs).
pub(super) fn applies(inputs: &[Array]) -> bool {
    let dk = inputs[0].shape()[3];
    inputs[0].dtype() == Dtype::Bf16 && dk > 0 && dk.is_multiple_of(2) && bf16_gemm::cpu_supported()
}

/// softmax(q kᵀ · scale + mask) v for bf16 q [B, Hq, L, Dk], k [B, Hkv, S, Dk], v [B, Hkv, S,
/// Dv] where [`applies`] holds.
pub(super) fn attention(inputs: &[Array], scale: f32, mask: AttentionMask, shape: &[usize]) -> Result<Data> {
    let ops = AttentionOperands::<bf16>::new(inputs)?;
    let AttentionOperands { b, hq, hkv, l, s, dk, dv, .. } = ops;
    let rows = ops.rows();
    let masked = ScoreMask::<f32>::new::<bf16>(inputs, mask, [b, hq, hkv, l, s])?;
    alloc_out::<bf16>(shape, |out| {
        if out.is_empty() || dv == 0 {
            return Ok(());
        }
        // The query heads of one key/value head are consecutive: its queries form one
        // (group · L) × Dk matrix, taken QUERY_BLOCK rows a task.
        out.par_chunks_mut(rows * dv).enumerate().for_each(|(bk, ob)| {
            let keys = Panels::keys(bits(ops.keys(bk, 0, s)), s, dk);
            let values = Panels::values(bits(ops.values(bk, 0, s)), s, dv);
            ob.par_chunks_mut(QUERY_BLOCK * dv).enumerate().for_each(|(blk, o)| {
                let (r0, nr) = (blk * QUERY_BLOCK, o.len() / dv);
                // Keys past the last one these rows can see (causal) are never read.
                let seen = masked.keys_visible(r0, nr);
                let q = bits(ops.queries(bk, r0, r0 + nr));
                let mut scores = vec![0f32; nr * seen];
                if seen > 0 {
                    bf16_gemm::gemm_in_task(q, dk, nr, &keys.prefix(dk, seen, 1), &mut scores);
                }
                // Each row of probabilities as its bf16 high parts then its low parts, each
                // of an even width (a zero column past an odd count of keys: the products go
                // in pairs of keys).
                let width = seen + seen % 2;
                let mut p = vec![0u16; nr * 2 * width];
                dispatch(
                    #[inline(always)]
                    |isa| {
                        scores.iter_mut().for_each(|x| *x *= scale);
                        masked.softmax_rows(bk, r0, seen, &mut scores, isa);
                        for (pr, sr) in p.chunks_exact_mut((2 * width).max(1)).zip(scores.chunks_exact(seen.max(1))) {
                            let (hi, lo) = pr.split_at_mut(width);
                            for ((h, l), &x) in hi.iter_mut().zip(lo.iter_mut()).zip(sr) {
                                let high = bf16::from_acc(x);
                                *h = high.to_bits();
                                *l = bf16::from_acc(x - high.to_acc()).to_bits();
                            }
                        }
                    },
                );
                let mut acc = vec![0f32; nr * dv];
                if width > 0 {
                    bf16_gemm::gemm_in_task(&p, 2 * width, nr, &values.prefix(width, dv, 2), &mut acc);
                }
                dispatch(
                    #[inline(always)]
                    |_| o.iter_mut().zip(&acc).for_each(|(ov, &a)| *ov = bf16::from_acc(a)),
                );
            });
        });
        Ok(())
    })
}

/// bf16 values as their bits.
fn bits(x: &[bf16]) -> &[u16] {
    // SAFETY: a bf16 is its 16 bits.
    unsafe { std::slice::from_raw_parts(x.as_ptr() as *const u16, x.len()) }
}

/// A matrix packed once in [`bf16_gemm`]'s panel layout (panels of [`NR`] columns, each `[k /
/// 2][NR][2]`, zero past the last column), read by any number of products.
struct Panels {
    data: Vec<u16>,
    /// Rows (k) a panel holds, even.
    k: usize,
}

impl Panels {
    /// Keys `k` (`s` rows of `dk` values, `dk` even) as the right operand of q kᵀ: k = Dk, a
    /// column per key. A key's pairs along Dk are adjacent in its row already.
    fn keys(k: &[u16], s: usize, dk: usize) -> Panels {
        let mut data = vec![0u16; s.div_ceil(NR) * dk * NR];
        for (j, row) in k.chunks_exact(dk).take(s).enumerate() {
            let panel = &mut data[j / NR * dk * NR..][..dk * NR];
            for (t, pair) in row.chunks_exact(2).enumerate() {
                panel[t * 2 * NR + 2 * (j % NR)..][..2].copy_from_slice(pair);
            }
        }
        Panels { data, k: dk }
    }

    /// Values `v` (`s` rows of `dv` values) as the right operand of p v: k = S rounded up to
    /// even (a zero row past an odd count), a column per value dimension.
    fn values(v: &[u16], s: usize, dv: usize) -> Panels {
        let k = s + s % 2;
        let mut data = vec![0u16; dv.div_ceil(NR) * k * NR];
        for (key, row) in v.chunks_exact(dv).take(s).enumerate() {
            let (t, e) = (key / 2, key % 2);
            for (d, &x) in row.iter().enumerate() {
                data[d / NR * k * NR + t * 2 * NR + 2 * (d % NR) + e] = x;
            }
        }
        Panels { data, k }
    }

    /// The first `k` rows (even, at most the packed ones) and `n` columns, stacked `copies`
    /// times along k, as a product's right operand.
    fn prefix(&self, k: usize, n: usize, copies: usize) -> Prefix<'_> {
        debug_assert!(k.is_multiple_of(2) && k <= self.k);
        Prefix { panels: self, k, n, copies }
    }
}

/// A prefix of [`Panels`], stacked: a panel's first `k` rows are themselves a panel of `k`
/// rows, and panels of k rows one after another are one panel of their rows together.
struct Prefix<'a> {
    panels: &'a Panels,
    k: usize,
    n: usize,
    copies: usize,
}

impl PackB for Prefix<'_> {
    fn dims(&self) -> (usize, usize) {
        (self.copies * self.k, self.n)
    }

    fn group_size(&self) -> Option<usize> {
        None
    }

    fn pack(&self, n0: usize, dst: &mut [u16], _scales: &mut [f32]) {
        let panel = &self.panels.data[n0 / NR * self.panels.k * NR..][..self.k * NR];
        for copy in dst.chunks_exact_mut(self.k * NR).take(self.copies) {
            copy.copy_from_slice(panel);
        }
    }
}
