//! Matrix products with bfloat16 operands on CPUs with AVX512-BF16: `vdpbf16ps` multiplies
//! 32 pairs of bf16 values exactly and adds each pair's sum into one of 16 f32 lanes, twice the
//! work of an f32 FMA per instruction. Products are exact and sums are f32, as when both
//! operands are widened to f32 first (inputs below bf16's normal range count as zero).
//!
//! `acc = a @ b`: a is M rows of K bf16 values (pairs along k read in place, each broadcast to
//! all lanes); b comes from a [`PackB`], which writes panels of [`NR`] columns as k-pairs
//! (`[k / 2][NR][2]`). Threads take panels of columns; in each, a micro-tile of [`MR`] rows ×
//! [`NR`] columns keeps its sums in twelve registers over the whole k axis. A source may scale
//! its columns per group of k (quantized matrices: the packed values are the integer codes,
//! exact in bf16, and a group's sums are multiplied by the group's scales as they complete).

use rayon::prelude::*;

use super::iter::MutPtr;

/// Columns of a micro-tile (two vectors of 16 lanes).
pub const NR: usize = 32;
/// Rows of a micro-tile.
pub const MR: usize = 6;

/// The right operand of [`gemm`], packed one panel of [`NR`] columns at a time.
pub trait PackB: Sync {
    /// Rows (k) and columns (n).
    fn dims(&self) -> (usize, usize);
    /// The group size along k when each column's products are scaled per group, else `None`.
    fn group_size(&self) -> Option<usize>;
    /// Writes columns `n0..n0 + NR` (zeros past the last) of all `k` rows as bf16 bits in
    /// pairs along k: `dst[(kk / 2) * 2 * NR + 2 * j + kk % 2]` is `b[kk, n0 + j]`; with
    /// groups, also their scales: `scales[g * NR + j]` (zeros past the last column).
    fn pack(&self, n0: usize, dst: &mut [u16], scales: &mut [f32]);
}

/// Whether this CPU runs [`gemm`].
pub fn cpu_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512bf16")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `acc[i, j] = Σ_k a[i, k] · b[k, j]` (scaled per group where `b` has groups), for `m` rows
/// of `a` (bf16 bits, row `i` at `a[i * lda..]`, `k` even) and `acc` `m × n` row-major f32,
/// overwritten. The CPU must have AVX512-BF16 ([`cpu_supported`]).
pub fn gemm(a: &[u16], lda: usize, m: usize, b: &impl PackB, acc: &mut [f32]) {
    let (k, n) = b.dims();
    assert!(cpu_supported() && k > 0 && k % 2 == 0 && acc.len() >= m * n && (m == 0 || a.len() >= (m - 1) * lda + k));
    if let Some(gs) = b.group_size() {
        assert!(gs % 2 == 0 && k % gs == 0);
    }
    let out = MutPtr(acc.as_mut_ptr());
    let panels = n.div_ceil(NR);
    let task = |p: usize| {
        let mut packed = vec![0u16; k * NR];
        let mut scales = vec![0f32; b.group_size().map_or(0, |gs| k / gs * NR)];
        b.pack(p * NR, &mut packed, &mut scales);
        let cols = NR.min(n - p * NR);
        let t =
            Tile { a, lda, k, group_size: b.group_size(), panel: &packed, scales: &scales, n0: p * NR, cols, out, n };
        // SAFETY: the CPU has the features (asserted); the tile writes only its own columns.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            x86::panel_rows(&t, m)
        }
    };
    if m * n * k >= 1 << 20 {
        (0..panels).into_par_iter().for_each(task);
    } else {
        (0..panels).for_each(task);
    }
}

/// One column panel's operands.
struct Tile<'a> {
    a: &'a [u16],
    lda: usize,
    k: usize,
    group_size: Option<usize>,
    panel: &'a [u16],
    /// Per group, the panel's column scales (with groups).
    scales: &'a [f32],
    n0: usize,
    /// Columns of the panel inside the matrix (≤ NR).
    cols: usize,
    out: MutPtr<f32>,
    n: usize,
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use std::arch::x86_64::*;

    use super::{Tile, MR, NR};

    /// All row tiles of one column panel.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn panel_rows(t: &Tile, m: usize) {
        let mut i = 0;
        while i + MR <= m {
            tile::<MR>(t, i);
            i += MR;
        }
        match m - i {
            1 => tile::<1>(t, i),
            2 => tile::<2>(t, i),
            3 => tile::<3>(t, i),
            4 => tile::<4>(t, i),
            5 => tile::<5>(t, i),
            _ => {}
        }
    }

    /// 32 bf16 values (bits) from `p` as a `vdpbf16ps` operand, the lanes past `mask` zero.
    #[inline(always)]
    pub unsafe fn load_bf16(p: *const u16, mask: u32) -> __m512bh {
        std::mem::transmute::<__m512i, __m512bh>(_mm512_maskz_loadu_epi16(mask, p as *const i16))
    }

    /// The mask of the first `n` (at most 32, more count as 32) lanes.
    #[inline(always)]
    pub fn first_lanes(n: usize) -> u32 {
        if n >= 32 {
            u32::MAX
        } else {
            (1u32 << n) - 1
        }
    }

    /// The sums of the lanes of `a`, `b`, `c` and `d`, in that order.
    #[inline(always)]
    pub unsafe fn reduce4(a: __m512, b: __m512, c: __m512, d: __m512) -> __m128 {
        // Within each 128-bit quarter: pairs of a and b, of c and d, then one of each.
        let ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
        let cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
        let abcd = _mm512_add_ps(_mm512_shuffle_ps::<0x44>(ab, cd), _mm512_shuffle_ps::<0xEE>(ab, cd));
        // The four quarters.
        let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(abcd)));
        let half = _mm256_add_ps(_mm512_castps512_ps256(abcd), high);
        _mm_add_ps(_mm256_castps256_ps128(half), _mm256_extractf128_ps::<1>(half))
    }

    /// Rows `i..i + R` of the panel.
    #[inline(always)]
    unsafe fn tile<const R: usize>(t: &Tile, i: usize) {
        let zero = _mm512_setzero_ps();
        let mut tot = [[zero; 2]; R];
        let rows: [*const u16; R] = std::array::from_fn(|r| t.a.as_ptr().add((i + r) * t.lda));
        // SAFETY (whole function): rows of a hold k elements; the panel holds k · NR.
        let span = t.group_size.unwrap_or(t.k);
        for g in 0..t.k / span {
            let mut part = [[zero; 2]; R];
            for kp in (g * span / 2)..((g + 1) * span / 2) {
                let bp = t.panel.as_ptr().add(kp * 2 * NR);
                let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp as *const __m512i));
                let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(NR) as *const __m512i));
                for r in 0..R {
                    let pair = std::ptr::read_unaligned(rows[r].add(2 * kp) as *const i32);
                    let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                    part[r][0] = _mm512_dpbf16_ps(part[r][0], av, b0);
                    part[r][1] = _mm512_dpbf16_ps(part[r][1], av, b1);
                }
            }
            if t.group_size.is_some() {
                let sp = t.scales.as_ptr().add(g * NR);
                let s = [_mm512_loadu_ps(sp), _mm512_loadu_ps(sp.add(16))];
                for r in 0..R {
                    for c in 0..2 {
                        tot[r][c] = _mm512_fmadd_ps(part[r][c], s[c], tot[r][c]);
                    }
                }
            } else {
                tot = part;
            }
        }
        // Store the panel's columns of each row (masked past the matrix's last column).
        let lo = t.cols.min(16);
        let hi = t.cols - lo;
        let mask = |c: usize| if c >= 16 { 0xFFFF } else { ((1u32 << c) - 1) as u16 };
        for (r, row) in tot.iter().enumerate() {
            let o = t.out.get().add((i + r) * t.n + t.n0);
            _mm512_mask_storeu_ps(o, mask(lo), row[0]);
            if hi > 0 {
                _mm512_mask_storeu_ps(o.add(16), mask(hi), row[1]);
            }
        }
    }
}

/// A plain bf16 matrix `b[kk, j]` at `ptr + kk * rs + j * cs` (elements), as a [`PackB`].
pub struct Bf16Matrix {
    /// The first element's bits.
    pub ptr: *const u16,
    /// Rows (k) and columns (n).
    pub k: usize,
    /// Columns.
    pub n: usize,
    /// Row stride (elements).
    pub rs: isize,
    /// Column stride (elements).
    pub cs: isize,
}

// SAFETY: a read-only view of memory that outlives the product.
unsafe impl Sync for Bf16Matrix {}

impl PackB for Bf16Matrix {
    fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    fn group_size(&self) -> Option<usize> {
        None
    }

    fn pack(&self, n0: usize, dst: &mut [u16], _scales: &mut [f32]) {
        let cols = NR.min(self.n - n0);
        dst.iter_mut().for_each(|v| *v = 0);
        for j in 0..cols {
            // SAFETY: column n0 + j of the matrix, k elements at stride rs.
            let col = unsafe { self.ptr.offset((n0 + j) as isize * self.cs) };
            for kk in 0..self.k {
                dst[(kk / 2) * 2 * NR + 2 * j + kk % 2] = unsafe { *col.offset(kk as isize * self.rs) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use half::bf16;

    use super::*;
    use crate::backend::cpu::{assert_sum_close, skip_without_bf16, test_bf16_bits};

    /// Row counts around the micro-tile, column counts around the panel width, b with either
    /// axis contiguous: against float64 sums of the products.
    #[test]
    fn products_match_a_float64_reference() {
        if skip_without_bf16() {
            return;
        }
        let f = |b: u16| bf16::from_bits(b).to_f32() as f64;
        for (m, n, k) in [(1, 1, 2), (2, 31, 64), (7, 33, 130), (13, 70, 256), (6, 32, 512)] {
            let lda = k + 3;
            let a = test_bf16_bits(m * lda, 1);
            let b = test_bf16_bits(k * n, 2);
            for column_major in [false, true] {
                // b[kk, j] at kk * rs + j * cs.
                let (rs, cs) = if column_major { (1, k as isize) } else { (n as isize, 1) };
                let src = Bf16Matrix { ptr: b.as_ptr(), k, n, rs, cs };
                let mut acc = vec![f32::NAN; m * n];
                gemm(&a, lda, m, &src, &mut acc);
                for i in 0..m {
                    for j in 0..n {
                        let terms =
                            (0..k).map(|kk| f(a[i * lda + kk]) * f(b[(kk as isize * rs + j as isize * cs) as usize]));
                        assert_sum_close(acc[i * n + j], terms, format!("m{m} n{n} k{k} [{i}, {j}]"));
                    }
                }
            }
        }
    }
}
