//! The prefill kernel for half-precision activations on CPUs with AVX-512 VNNI but not
//! AVX512-BF16 (where [`super::qmm_bf16`] is exact): affine matrices multiply as integers.
//!
//! x is rounded per row and group to 16-bit integers on a step of its own, as the integer
//! decode kernel does ([`super::qmv_i16`]: at most 1.5e-5 of the group's largest magnitude, far
//! below a bf16 or f16 value's own precision), and the codes (up to 8 bits) are 16-bit
//! integers, so `vpdpwssd` multiplies 32 pairs and adds them into 16 exact 32-bit lanes: twice
//! the multiply-adds of an f32 FMA per instruction, and no dequantized copy of the matrix.
//!
//! Threads take panels of [`NR`] output features, packed as k-pairs of codes (`[k / 2][NR][2]`,
//! the layout `vpdpwssd` reads: each 32-bit lane holds two consecutive codes of one feature)
//! with the panel's scales and biases per group. A micro-tile of [`MR`] rows × [`NR`] features
//! sums a group in integer registers, each row's pair of x broadcast to every lane; when the
//! group completes its sums become floats, times the feature's scale and the row's step, and
//! the bias term `b · Σx_g` is added: `y = Σ_g s_g·dx_g·(q_g·x̂_g) + b_g·Σx_g`. A group of up to
//! 128 codes of at most 255 times integers of at most 32767 stays below 2³¹.

use rayon::prelude::*;

use super::qmv_i16::{prepare, Prepared};
use super::view::{View, MAX_GROUP};
use crate::backend::cpu::iter::MutPtr;
use crate::backend::cpu::simd::has_avx512_vnni;
use crate::primitives::QuantMode;

/// Output features of a panel (two vectors of 16 lanes).
const NR: usize = 32;
/// Rows of x of a micro-tile.
const MR: usize = 6;

/// Whether the kernel computes `x @ Wᵀ` with `v` on this CPU.
pub fn applies(v: &View) -> bool {
    // Affine codes have at most 8 bits; groups of at most MAX_GROUP keep the sums in i32.
    has_avx512_vnni()
        && v.mode == QuantMode::Affine
        && v.biases.is_some()
        && v.group_size.is_multiple_of(2)
        && v.group_size <= MAX_GROUP
}

/// `y = x @ Wᵀ` for the `r` rows of `x` ([r, cols], half-precision values held as f32), `y`
/// [r, rows]; `v` must be one the kernel [`applies`] to.
pub fn qmm_i16(x: &[f32], r: usize, v: &View, y: &mut [f32]) {
    debug_assert!(applies(v));
    let prep = prepare(x, r, v, None);
    let out = MutPtr(y.as_mut_ptr());
    let task = |p: usize| {
        let panel = Panel::pack(v, p * NR);
        // SAFETY: `applies` checked the CPU's features; the panel writes only its features.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            x86::panel_rows(&panel, &prep, v, r, out)
        }
    };
    let panels = v.rows.div_ceil(NR);
    if r * v.rows * v.cols >= 1 << 20 {
        (0..panels).into_par_iter().for_each(task);
    } else {
        (0..panels).for_each(task);
    }
}

/// One panel of [`NR`] output features starting at `n0`: codes as k-pairs, and per group
/// the features' scales and biases (zeros past the matrix's last feature).
struct Panel {
    codes: Vec<i16>,
    scales: Vec<f32>,
    biases: Vec<f32>,
    n0: usize,
    /// Features of the panel inside the matrix (≤ NR).
    cols: usize,
}

impl Panel {
    fn pack(v: &View, n0: usize) -> Panel {
        let (k, groups) = (v.cols, v.groups());
        let cols = NR.min(v.rows - n0);
        let mut p =
            Panel { codes: vec![0; k * NR], scales: vec![0.0; groups * NR], biases: vec![0.0; groups * NR], n0, cols };
        let mut unpacked = vec![0u8; k];
        let mut row_groups = vec![0f32; groups];
        for j in 0..cols {
            let codes = v.row_codes(n0 + j, &mut unpacked);
            for (kp, pair) in codes.chunks_exact(2).enumerate() {
                p.codes[kp * 2 * NR + 2 * j] = pair[0] as i16;
                p.codes[kp * 2 * NR + 2 * j + 1] = pair[1] as i16;
            }
            v.scales.read((n0 + j) * groups, &mut row_groups);
            for (g, &s) in row_groups.iter().enumerate() {
                p.scales[g * NR + j] = s;
            }
            if let Some(b) = v.biases {
                b.read((n0 + j) * groups, &mut row_groups);
                for (g, &b) in row_groups.iter().enumerate() {
                    p.biases[g * NR + j] = b;
                }
            }
        }
        p
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Panel, Prepared, MR, NR};
    use crate::backend::cpu::iter::MutPtr;
    use crate::backend::cpu::quantized::view::View;

    /// Every micro-tile of rows of one panel.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn panel_rows(p: &Panel, x: &Prepared, v: &View, m: usize, out: MutPtr<f32>) {
        let mut i = 0;
        while i + MR <= m {
            tile::<MR>(p, x, v, i, out);
            i += MR;
        }
        match m - i {
            1 => tile::<1>(p, x, v, i, out),
            2 => tile::<2>(p, x, v, i, out),
            3 => tile::<3>(p, x, v, i, out),
            4 => tile::<4>(p, x, v, i, out),
            5 => tile::<5>(p, x, v, i, out),
            _ => {}
        }
    }

    /// Rows `i..i + R` of x times the panel.
    #[inline(always)]
    unsafe fn tile<const R: usize>(p: &Panel, x: &Prepared, v: &View, i: usize, out: MutPtr<f32>) {
        let (k, gs, pd) = (v.cols, v.group_size, x.padded);
        let mut tot = [[_mm512_setzero_ps(); 2]; R];
        let mut rows = [std::ptr::null::<i16>(); R];
        for (r, row) in rows.iter_mut().enumerate() {
            *row = x.x.as_ptr().add((i + r) * k);
        }
        // SAFETY (whole function): rows of x hold k integers, the panel k · NR codes and
        // groups · NR scales and biases; the steps and sums are [rows of x, pd].
        for g in 0..k / gs {
            let mut part = [[_mm512_setzero_si512(); 2]; R];
            for kp in (g * gs / 2)..((g + 1) * gs / 2) {
                let bp = p.codes.as_ptr().add(kp * 2 * NR);
                let b0 = _mm512_loadu_si512(bp as *const _);
                let b1 = _mm512_loadu_si512(bp.add(NR) as *const _);
                for r in 0..R {
                    let pair = _mm512_set1_epi32(std::ptr::read_unaligned(rows[r].add(2 * kp) as *const i32));
                    part[r][0] = _mm512_dpwssd_epi32(part[r][0], pair, b0);
                    part[r][1] = _mm512_dpwssd_epi32(part[r][1], pair, b1);
                }
            }
            let (sp, bp) = (p.scales.as_ptr().add(g * NR), p.biases.as_ptr().add(g * NR));
            let s = [_mm512_loadu_ps(sp), _mm512_loadu_ps(sp.add(16))];
            let b = [_mm512_loadu_ps(bp), _mm512_loadu_ps(bp.add(16))];
            for r in 0..R {
                let dx = _mm512_set1_ps(*x.dx.as_ptr().add((i + r) * pd + g));
                let xsum = _mm512_set1_ps(*x.xsum.as_ptr().add((i + r) * pd + g));
                for c in 0..2 {
                    let scaled = _mm512_mul_ps(s[c], dx);
                    tot[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(part[r][c]), scaled, tot[r][c]);
                    tot[r][c] = _mm512_fmadd_ps(b[c], xsum, tot[r][c]);
                }
            }
        }
        // The panel's features of each row (masked past the matrix's last feature).
        let lo = p.cols.min(16);
        let hi = p.cols - lo;
        let mask = |c: usize| if c >= 16 { 0xFFFF } else { ((1u32 << c) - 1) as u16 };
        for (r, row) in tot.iter().enumerate() {
            let o = out.get().add((i + r) * v.rows + p.n0);
            _mm512_mask_storeu_ps(o, mask(lo), row[0]);
            if hi > 0 {
                _mm512_mask_storeu_ps(o.add(16), mask(hi), row[1]);
            }
        }
    }
}
