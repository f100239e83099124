//! The affine 4- and 8-bit decode kernel on integer dot products, for CPUs without
//! AVX512-BF16 (the bf16 kernel, [`super::qmv_bf16`], is exact where it applies).
//!
//! Each group of x is held as 16-bit integers on a step of its own (`dx_g = max|x_g| / 32767`,
//! rounded to nearest), and the codes are widened to 16 bits, so `vpmaddwd` multiplies pairs
//! and sums them into exact 32-bit lanes: no code is ever converted to a float. A group's
//! integer sum becomes a float once, times `s_g · dx_g`; the bias term comes through x's group
//! sums (of the float values): `y = Σ_g s_g·dx_g·(q_g·x̂_g) + b_g·Σx_g`. The rounding of x moves
//! each element by at most `dx_g / 2`, about 1.5e-5 of its group's largest magnitude, far
//! below the bf16 rounding of the activations themselves.
//!
//! Two widths, one layout idea. A block of x is `2·L` elements for `L` 16-bit lanes; 4-bit
//! codes of a block are `L` bytes, whose low nibbles are the block's even elements and high
//! nibbles its odd ones, so x is reordered per block to meet them (even elements, then odd).
//! - AVX2 (`L` = 16): 16 packed bytes are masked into their two nibbles in a 128-bit register
//!   and each half widened to 16 words; 8-bit rows widen 16 bytes to 16 codes in order.
//! - AVX-512 with VNNI (`L` = 32, groups of 64 or 128): 32 packed bytes widen to 32 words on
//!   the load (`vpmovzxbw`); a word's low nibble is `w & 15` and its high one `w >> 4`, and
//!   `vpdpwssd` multiplies and accumulates in one instruction — five instructions per 64
//!   weights where AVX2 takes about eighteen. 8-bit rows widen 32 bytes in order.
//!
//! Per pass one weight row (two for two rows of x on AVX2) is summed with each row of x; the
//! row's scales times x's steps and its bias terms are made before its group loop, so that
//! loop only multiplies, adds and, once a group, converts and scales. On AVX-512 they are made
//! 16 groups at a time, straight from the stored scales and biases (f32, f16 or bf16) with
//! masked loads, and four rows' lane sums are reduced together: at 576 columns a row is only
//! nine groups, and this per-row work, not the group loop, had bounded the kernel (a 135M
//! step's products 5.6 → 4.4 ms on two threads, docs/PERF.md session 28). The weight bytes a
//! few passes ahead are prefetched: the rows of a pass are short runs that the hardware
//! prefetcher follows late.

use super::qmv::QMV_MAX_ROWS;
use super::view::{for_decode_ranges, DecodeTask, Kind, View};
use crate::backend::cpu::simd::{best_isa, dispatch, has_avx512_vnni, Isa};
use crate::primitives::QuantMode;

/// The instruction sets the kernel has a path for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// AVX2 and FMA: blocks of 32 elements.
    Avx2,
    /// AVX-512 BW with VNNI: blocks of 64 elements (groups of 64 or 128).
    Avx512Vnni,
}

impl Path {
    /// Elements of x a block covers (one pass of codes through the 16-bit lanes).
    fn block(self) -> usize {
        match self {
            Path::Avx2 => 32,
            Path::Avx512Vnni => 64,
        }
    }

    /// Whether this CPU has AVX-512 with VNNI and `v`'s groups are whole blocks of 64.
    fn avx512_vnni_runs(v: &View) -> bool {
        has_avx512_vnni() && v.group_size.is_multiple_of(64)
    }

    /// The fastest path this CPU runs for `v` (which [`applies`]).
    pub fn best(v: &View) -> Path {
        if Path::avx512_vnni_runs(v) {
            Path::Avx512Vnni
        } else {
            Path::Avx2
        }
    }

    /// Every path this CPU runs for `v` (which [`applies`]), fastest first.
    pub fn available(v: &View) -> Vec<Path> {
        let wide = Path::avx512_vnni_runs(v).then_some(Path::Avx512Vnni);
        wide.into_iter().chain((best_isa() != Isa::Baseline).then_some(Path::Avx2)).collect()
    }
}

/// Whether the kernel computes products with `v` (affine 4- or 8-bit with biases) on this CPU.
pub fn applies(v: &View) -> bool {
    matches!(v.kind, Kind::Nibbles | Kind::Bytes)
        && v.mode == QuantMode::Affine
        && v.biases.is_some()
        && matches!(v.group_size, 32 | 64 | 128)
        && best_isa() != Isa::Baseline
}

/// x as integers on a step per group, with the steps and group sums (also the prefill
/// kernel's, [`super::qmm_i16`]).
pub(super) struct Prepared {
    /// `[r, cols]` integers (4-bit: reordered per block, even elements then odd, where the
    /// kernel asked for it).
    pub x: Vec<i16>,
    /// The step of each group of each row: `[r, padded]`, zero past the row's groups.
    pub dx: Vec<f32>,
    /// Σ over each group of each row of x (the float values): `[r, padded]`, zero past the
    /// row's groups.
    pub xsum: Vec<f32>,
    /// The groups of a row rounded up to a whole vector of 8.
    pub padded: usize,
}

/// Rounds the groups of `x` ([r, cols]) to integers (see the module docs); for 4-bit rows,
/// each block of `block` elements is reordered (even elements, then odd) unless `block` is
/// `None`.
pub(super) fn prepare(x: &[f32], r: usize, v: &View, block: Option<usize>) -> Prepared {
    let (cols, groups) = (v.cols, v.groups());
    let padded = groups.next_multiple_of(8);
    let mut p = Prepared { x: vec![0; r * cols], dx: vec![0.0; r * padded], xsum: vec![0.0; r * padded], padded };
    let reorder = block.filter(|_| v.kind == Kind::Nibbles);
    type Row<'a> = (usize, ((&'a mut [i16], &'a mut [f32]), &'a mut [f32]));
    // Compiled for the CPU's vectors: the rounding, largest magnitudes and sums vectorize.
    let row = |(m, ((xq, dx), xsum)): Row| {
        let src = &x[m * cols..(m + 1) * cols];
        dispatch(
            #[inline(always)]
            |isa| {
                #[cfg(target_arch = "x86_64")]
                if isa == Isa::Avx512 && v.group_size.is_multiple_of(32) {
                    // SAFETY: `Isa::Avx512` has the features; groups are whole 32-element runs.
                    return unsafe { x86::prepare_row512(src, v.group_size, reorder, xq, dx, xsum) };
                }
                prepare_row(src, v.group_size, reorder, xq, dx, xsum)
            },
        )
    };
    if r * cols >= 1 << 16 {
        use rayon::prelude::*;
        let rows = p.x.par_chunks_mut(cols).zip(p.dx.par_chunks_mut(padded)).zip(p.xsum.par_chunks_mut(padded));
        rows.enumerate().for_each(row);
    } else {
        let rows = p.x.chunks_mut(cols).zip(p.dx.chunks_mut(padded)).zip(p.xsum.chunks_mut(padded));
        rows.enumerate().for_each(row);
    }
    p
}

/// [`prepare`] of one row `src`: its integers into `xq`, its groups' steps into `dx` and
/// sums into `xsum`; 4-bit blocks of `reorder` elements reordered. Written to vectorize: the
/// largest magnitude is an integer maximum of the magnitudes' bits (a NaN's bits exceed every
/// number's, an infinity's every finite one's), and the sum runs in 16 lanes.
#[inline(always)]
fn prepare_row(src: &[f32], gs: usize, reorder: Option<usize>, xq: &mut [i16], dx: &mut [f32], xsum: &mut [f32]) {
    for (g, (src, dst)) in src.chunks_exact(gs).zip(xq.chunks_exact_mut(gs)).enumerate() {
        let mut lanes = [0f32; 16];
        let mut top_bits = 0u32;
        for c in src.chunks(16) {
            for (l, &e) in lanes.iter_mut().zip(c) {
                *l += e;
                top_bits = top_bits.max(e.to_bits() & 0x7FFF_FFFF);
            }
        }
        xsum[g] = lanes.iter().sum();
        let top = f32::from_bits(top_bits);
        if top == 0.0 || !top.is_finite() {
            // Zeros stay zero; a NaN or infinity spreads through the step as a float would.
            dx[g] = if top == 0.0 { 0.0 } else { f32::NAN };
            continue;
        }
        let inv = 32767.0 / top;
        dx[g] = top / 32767.0;
        // Adding and taking away 1.5·2²³ rounds |v| ≤ 32767 to the nearest integer (ties to
        // even) in vector registers, where `round_ties_even` would call libm.
        let round = |val: f32| ((val * inv + 12_582_912.0) - 12_582_912.0) as i16;
        match reorder {
            Some(block) => {
                for (d, s) in dst.chunks_exact_mut(block).zip(src.chunks_exact(block)) {
                    for e in 0..block / 2 {
                        d[e] = round(s[2 * e]);
                        d[block / 2 + e] = round(s[2 * e + 1]);
                    }
                }
            }
            None => {
                for (o, &val) in dst.iter_mut().zip(src) {
                    *o = round(val);
                }
            }
        }
    }
}

/// `y = x @ Wᵀ` for the `r` (1 to [`QMV_MAX_ROWS`]) rows of `x` ([r, cols] f32), `y` [r, rows]; `v` must be
/// one the kernel [`applies`] to.
pub fn qmv_i16(x: &[f32], r: usize, v: &View, y: &mut [f32]) {
    qmv_i16_on(Path::best(v), x, r, v, y)
}

/// [`qmv_i16`] on `path`, one of [`Path::available`] for `v`.
pub fn qmv_i16_on(path: Path, x: &[f32], r: usize, v: &View, y: &mut [f32]) {
    debug_assert!(applies(v) && (1..=QMV_MAX_ROWS).contains(&r) && Path::available(v).contains(&path));
    let prep = prepare(x, r, v, Some(path.block()));
    for_decode_ranges(v, &prep, r, y, |t, j0, j1| {
        // SAFETY: `Path::available` checked that the CPU has the path's features.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            match path {
                Path::Avx2 => x86::run(t, j0, j1),
                Path::Avx512Vnni => x86::run512(t, j0, j1),
            }
        }
    });
}

/// What every range of output features shares.
type Task<'a> = DecodeTask<'a, Prepared>;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Task;
    use crate::backend::cpu::attention_kernels::Wide;
    use crate::backend::cpu::bf16_gemm::x86::{first_lanes, reduce4};
    use crate::backend::cpu::quantized::view::{Kind, ScaleSlice};
    use crate::backend::cpu::simd::{hsum_avx2, prefetch_ahead};

    /// Elements of an AVX2 block: one 16-byte load of 4-bit codes, two of 8-bit ones.
    const BLOCK: usize = 32;
    /// Elements of an AVX-512 block: one 32-byte load of 4-bit codes, two of 8-bit ones.
    const BLOCK512: usize = 64;

    /// [`super::prepare_row`] with AVX-512: a group's sum and largest magnitude 16 lanes at a
    /// time, and its integers rounded by the vector conversion (to nearest, ties to even, as
    /// the scalar one); a 4-bit block's even and odd elements are gathered by a two-register
    /// permute of each 32-element run. `gs` is a multiple of 32 and of the block.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    pub unsafe fn prepare_row512(
        src: &[f32],
        gs: usize,
        reorder: Option<usize>,
        xq: &mut [i16],
        dx: &mut [f32],
        xsum: &mut [f32],
    ) {
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
        let magnitude = _mm512_set1_epi32(0x7FFF_FFFF);
        for (g, (s, d)) in src.chunks_exact(gs).zip(xq.chunks_exact_mut(gs)).enumerate() {
            let (s, d) = (s.as_ptr(), d.as_mut_ptr());
            let (mut sum, mut top_bits) = (_mm512_setzero_ps(), _mm512_setzero_si512());
            for i in (0..gs).step_by(16) {
                let e = _mm512_loadu_ps(s.add(i));
                sum = _mm512_add_ps(sum, e);
                top_bits = _mm512_max_epu32(top_bits, _mm512_and_si512(_mm512_castps_si512(e), magnitude));
            }
            xsum[g] = _mm512_reduce_add_ps(sum);
            let top = f32::from_bits(_mm512_reduce_max_epu32(top_bits));
            if top == 0.0 || !top.is_finite() {
                // As the scalar rows: zeros stay zero, a NaN or infinity makes the step NaN.
                dx[g] = if top == 0.0 { 0.0 } else { f32::NAN };
                continue;
            }
            dx[g] = top / 32767.0;
            let inv = _mm512_set1_ps(32767.0 / top);
            let round = |e: __m512| {
                let n = _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
                    e, inv,
                ));
                _mm512_cvtepi32_epi16(n)
            };
            match reorder {
                Some(block) => {
                    for b in (0..gs).step_by(block) {
                        for h in (0..block).step_by(32) {
                            let (lo, hi) = (_mm512_loadu_ps(s.add(b + h)), _mm512_loadu_ps(s.add(b + h + 16)));
                            let (e, o) = (_mm512_permutex2var_ps(lo, even, hi), _mm512_permutex2var_ps(lo, odd, hi));
                            _mm256_storeu_si256(d.add(b + h / 2) as *mut __m256i, round(e));
                            _mm256_storeu_si256(d.add(b + block / 2 + h / 2) as *mut __m256i, round(o));
                        }
                    }
                }
                None => {
                    for i in (0..gs).step_by(16) {
                        _mm256_storeu_si256(d.add(i) as *mut __m256i, round(_mm512_loadu_ps(s.add(i))));
                    }
                }
            }
        }
    }

    /// Output features `j0..j1` of every row of x, with AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn run(t: &Task, j0: usize, j1: usize) {
        match t.v.group_size {
            32 => with_blocks::<1>(t, j0, j1),
            64 => with_blocks::<2>(t, j0, j1),
            _ => with_blocks::<4>(t, j0, j1),
        }
    }

    /// Output features `j0..j1` of every row of x, with AVX-512 and VNNI (groups of 64 or 128).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    pub unsafe fn run512(t: &Task, j0: usize, j1: usize) {
        // Affine matrices have scales and biases of one stored type (bf16 read as its bits).
        match (t.v.scales, t.v.biases) {
            (ScaleSlice::Bf16(s), Some(ScaleSlice::Bf16(b))) => {
                by_group512::<u16>(t, bytemuck::cast_slice(s), bytemuck::cast_slice(b), j0, j1)
            }
            (ScaleSlice::F16(s), Some(ScaleSlice::F16(b))) => by_group512(t, s, b, j0, j1),
            (ScaleSlice::F32(s), Some(ScaleSlice::F32(b))) => by_group512(t, s, b, j0, j1),
            _ => unreachable!("`applies` admits affine matrices with biases only"),
        }
    }

    /// [`run512`] with the group size (blocks a group) and the rows of x as constants.
    #[inline(always)]
    unsafe fn by_group512<S: Wide>(t: &Task, s: &[S], b: &[S], j0: usize, j1: usize) {
        let (s, b) = (s.as_ptr(), b.as_ptr());
        let nibbles = t.v.kind == Kind::Nibbles;
        macro_rules! rows {
            ($b:literal) => {
                match (t.r, nibbles) {
                    (1, true) => rows512::<1, $b, true, S>(t, s, b, j0, j1),
                    (2, true) => rows512::<2, $b, true, S>(t, s, b, j0, j1),
                    (3, true) => rows512::<3, $b, true, S>(t, s, b, j0, j1),
                    (_, true) => rows512::<4, $b, true, S>(t, s, b, j0, j1),
                    (1, false) => rows512::<1, $b, false, S>(t, s, b, j0, j1),
                    (2, false) => rows512::<2, $b, false, S>(t, s, b, j0, j1),
                    (3, false) => rows512::<3, $b, false, S>(t, s, b, j0, j1),
                    (_, false) => rows512::<4, $b, false, S>(t, s, b, j0, j1),
                }
            };
        }
        if t.v.group_size == 64 {
            rows!(1)
        } else {
            rows!(2)
        }
    }

    /// [`run`] with `B` blocks a group (a constant, so the group's loop unrolls). Weight rows
    /// a pass for `R` rows of x: one for one row of x, so a thread's loads are one sequential
    /// stream (a 135M step's 8-bit products 15-25 % faster than two rows a pass on Zen 4,
    /// docs/PERF.md session 24); two rows of x share each weight load between two weight rows;
    /// more rows of x leave no registers for a second.
    #[inline(always)]
    unsafe fn with_blocks<const B: usize>(t: &Task, j0: usize, j1: usize) {
        match (t.r, t.v.kind == Kind::Nibbles) {
            (1, true) => rows::<1, 1, B, true>(t, j0, j1),
            (2, true) => rows::<2, 2, B, true>(t, j0, j1),
            (3, true) => rows::<3, 1, B, true>(t, j0, j1),
            (_, true) => rows::<4, 1, B, true>(t, j0, j1),
            (1, false) => rows::<1, 1, B, false>(t, j0, j1),
            (2, false) => rows::<2, 2, B, false>(t, j0, j1),
            (3, false) => rows::<3, 1, B, false>(t, j0, j1),
            (_, false) => rows::<4, 1, B, false>(t, j0, j1),
        }
    }

    /// Scratch of one range: for each weight row of a pass, its scales and biases
    /// (`[NR][padded]` each, zeros past the groups), then its scales times each row of x's
    /// steps (`[NR][R][padded]`).
    struct Scratch {
        scales: Vec<f32>,
        biases: Vec<f32>,
        scaled: Vec<f32>,
    }

    impl Scratch {
        fn new(t: &Task, rows_of_x: usize, weight_rows: usize) -> Scratch {
            let pd = t.prep.padded;
            Scratch {
                scales: vec![0.0; weight_rows * pd],
                biases: vec![0.0; weight_rows * pd],
                scaled: vec![0.0; weight_rows * rows_of_x * pd],
            }
        }

        /// Scale of group `g` of weight row `i` times row `m` of x's step, for `R` rows of x.
        #[inline(always)]
        unsafe fn scaled<const R: usize>(&self, i: usize, m: usize, pd: usize, g: usize) -> *const f32 {
            self.scaled.as_ptr().add((i * R + m) * pd + g)
        }
    }

    /// The pass's preamble: reads the scales and biases of weight rows `j..j + NR`, stores
    /// each one's scales times each row of x's steps, and returns its bias term
    /// `Σ_g b_g·Σx_g` for each row of x in the lanes of a vector (8 groups a vector; the
    /// padding is zeros on both sides).
    #[inline(always)]
    unsafe fn pass_scales<const R: usize, const NR: usize>(t: &Task, j: usize, s: &mut Scratch) -> [[__m256; R]; NR] {
        let (v, pd) = (t.v, t.prep.padded);
        let groups = v.groups();
        let mut tot = [[_mm256_setzero_ps(); R]; NR];
        for (i, tot_i) in tot.iter_mut().enumerate() {
            let (sc, bi) = (&mut s.scales[i * pd..i * pd + groups], &mut s.biases[i * pd..i * pd + groups]);
            v.scales.read((j + i) * groups, sc);
            if let Some(b) = v.biases {
                b.read((j + i) * groups, bi);
            }
            for (m, tot_im) in tot_i.iter_mut().enumerate() {
                let (dx, xs) = (t.prep.dx.as_ptr().add(m * pd), t.prep.xsum.as_ptr().add(m * pd));
                let (sc, bi) = (s.scales.as_ptr().add(i * pd), s.biases.as_ptr().add(i * pd));
                let out = s.scaled.as_mut_ptr().add((i * R + m) * pd);
                for g in (0..pd).step_by(8) {
                    _mm256_storeu_ps(out.add(g), _mm256_mul_ps(_mm256_loadu_ps(sc.add(g)), _mm256_loadu_ps(dx.add(g))));
                    *tot_im = _mm256_fmadd_ps(_mm256_loadu_ps(bi.add(g)), _mm256_loadu_ps(xs.add(g)), *tot_im);
                }
            }
        }
        tot
    }

    #[inline(always)]
    unsafe fn rows<const R: usize, const NR: usize, const B: usize, const NIB: bool>(t: &Task, j0: usize, j1: usize) {
        let mut s = Scratch::new(t, R, NR);
        let mut j = j0;
        while j + NR <= j1 {
            block::<R, NR, B, NIB>(t, j, &mut s);
            j += NR;
        }
        while j < j1 {
            block::<R, 1, B, NIB>(t, j, &mut s);
            j += 1;
        }
    }

    /// What every feature of a range shares beyond the task: the matrix's group count and
    /// row bytes, made once (they are not constants, and a division per feature showed in
    /// profiles), and its scales and biases as their stored type.
    struct Range512<S> {
        groups: usize,
        bpr: usize,
        scales: *const S,
        biases: *const S,
    }

    /// One packed row a pass, so a thread's loads walk its range as one sequential stream;
    /// four rows' sums are reduced together ([`reduce4`]) and stored as one vector.
    #[inline(always)]
    unsafe fn rows512<const R: usize, const B: usize, const NIB: bool, S: Wide>(
        t: &Task,
        scales: *const S,
        biases: *const S,
        j0: usize,
        j1: usize,
    ) {
        let v = t.v;
        let c = Range512 { groups: v.groups(), bpr: v.bytes_per_row(), scales, biases };
        let (n, y) = (v.rows, t.y.get());
        let mut j = j0;
        // SAFETY (whole function): `j0..j1` are rows of the matrix and columns of y's rows.
        while j + 4 <= j1 {
            let s0 = feature512::<R, B, NIB, S>(t, &c, j);
            let s1 = feature512::<R, B, NIB, S>(t, &c, j + 1);
            let s2 = feature512::<R, B, NIB, S>(t, &c, j + 2);
            let s3 = feature512::<R, B, NIB, S>(t, &c, j + 3);
            for m in 0..R {
                _mm_storeu_ps(y.add(m * n + j), reduce4(s0[m], s1[m], s2[m], s3[m]));
            }
            j += 4;
        }
        while j < j1 {
            let s = feature512::<R, B, NIB, S>(t, &c, j);
            for (m, s_m) in s.iter().enumerate() {
                *y.add(m * n + j) = _mm512_reduce_add_ps(*s_m);
            }
            j += 1;
        }
    }

    /// Output feature `j` for the `R` rows of x, as 16 lanes to be summed: 16 groups at a
    /// time, their scales times x's steps are made in one vector (kept on the stack, each
    /// group broadcast from it) and their bias terms `b_g·Σx_g` added to the lanes, then each
    /// group's integer sums are scaled into two totals (even and odd groups, so consecutive
    /// groups' scalings overlap).
    #[inline(always)]
    unsafe fn feature512<const R: usize, const B: usize, const NIB: bool, S: Wide>(
        t: &Task,
        c: &Range512<S>,
        j: usize,
    ) -> [__m512; R] {
        let row = t.v.bytes.as_ptr().add(j * c.bpr);
        prefetch_ahead(row, c.bpr);
        let (sp, bp) = (c.scales.add(j * c.groups), c.biases.add(j * c.groups));
        let (x, dx, xsum) = (t.prep.x.as_ptr(), t.prep.dx.as_ptr(), t.prep.xsum.as_ptr());
        let (cols, padded) = (t.v.cols, t.prep.padded);
        let mut tot = [[_mm512_setzero_ps(); 2]; R];
        let mut sd = [[0f32; 16]; R];
        let mut g0 = 0;
        // SAFETY (whole loop): scale, bias, step and sum reads are masked to the row's groups;
        // code reads stay inside the row, x reads inside each row of x.
        while g0 < c.groups {
            let n = (c.groups - g0).min(16);
            let mask = first_lanes(n) as u16;
            let (s, b) = (S::load16(sp.add(g0), mask), S::load16(bp.add(g0), mask));
            for m in 0..R {
                let at = m * padded + g0;
                _mm512_storeu_ps(sd[m].as_mut_ptr(), _mm512_mul_ps(s, _mm512_maskz_loadu_ps(mask, dx.add(at))));
                tot[m][1] = _mm512_fmadd_ps(b, _mm512_maskz_loadu_ps(mask, xsum.add(at)), tot[m][1]);
            }
            let mut g = 0;
            while g + 2 <= n {
                let a0 = sums512::<R, B, NIB>(x, cols, row, g0 + g);
                let a1 = sums512::<R, B, NIB>(x, cols, row, g0 + g + 1);
                for m in 0..R {
                    tot[m][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a0[m]), _mm512_set1_ps(sd[m][g]), tot[m][0]);
                    tot[m][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a1[m]), _mm512_set1_ps(sd[m][g + 1]), tot[m][1]);
                }
                g += 2;
            }
            if g < n {
                let a0 = sums512::<R, B, NIB>(x, cols, row, g0 + g);
                for m in 0..R {
                    tot[m][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a0[m]), _mm512_set1_ps(sd[m][g]), tot[m][0]);
                }
            }
            g0 += 16;
        }
        let mut out = [_mm512_setzero_ps(); R];
        for m in 0..R {
            out[m] = _mm512_add_ps(tot[m][0], tot[m][1]);
        }
        out
    }

    /// 16 codes of a block as 16-bit lanes: for 4-bit rows, the even elements' codes (`lo`)
    /// and the odd ones' (`hi`) of the block at byte `off`; for 8-bit rows, elements `0..16`
    /// and `16..32` of the block.
    #[inline(always)]
    unsafe fn codes<const NIB: bool>(row: *const u8, block: usize) -> (__m256i, __m256i) {
        if NIB {
            let w = _mm_loadu_si128(row.add(block * BLOCK / 2) as *const __m128i);
            let mask = _mm_set1_epi8(0x0F);
            let lo = _mm_and_si128(w, mask);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(w), mask);
            (_mm256_cvtepu8_epi16(lo), _mm256_cvtepu8_epi16(hi))
        } else {
            let p = row.add(block * BLOCK);
            (
                _mm256_cvtepu8_epi16(_mm_loadu_si128(p as *const __m128i)),
                _mm256_cvtepu8_epi16(_mm_loadu_si128(p.add(16) as *const __m128i)),
            )
        }
    }

    /// 32 codes of a 64-element block as 16-bit lanes, as [`codes`] does for 32: each packed
    /// 4-bit byte widens to a word `w`, whose even element is `w & 15` and odd one `w >> 4`.
    #[inline(always)]
    unsafe fn codes512<const NIB: bool>(row: *const u8, block: usize) -> (__m512i, __m512i) {
        if NIB {
            let w = _mm512_cvtepu8_epi16(_mm256_loadu_si256(row.add(block * BLOCK512 / 2) as *const __m256i));
            (_mm512_and_si512(w, _mm512_set1_epi16(0x0F)), _mm512_srli_epi16::<4>(w))
        } else {
            let p = row.add(block * BLOCK512);
            (
                _mm512_cvtepu8_epi16(_mm256_loadu_si256(p as *const __m256i)),
                _mm512_cvtepu8_epi16(_mm256_loadu_si256(p.add(32) as *const __m256i)),
            )
        }
    }

    /// Output features `j..j + NR` for the `R` rows of x, in groups of `B` blocks.
    #[inline(always)]
    unsafe fn block<const R: usize, const NR: usize, const B: usize, const NIB: bool>(
        t: &Task,
        j: usize,
        s: &mut Scratch,
    ) {
        let v = t.v;
        let (cols, groups, bpr) = (v.cols, v.groups(), v.bytes_per_row());
        let gs = B * BLOCK;
        let group_bytes = if NIB { gs / 2 } else { gs };
        let pd = t.prep.padded;
        let bytes = v.bytes.as_ptr();
        prefetch_ahead(bytes.wrapping_add(j * bpr), NR * bpr);
        let mut tot = pass_scales::<R, NR>(t, j, s);
        let rows: [*const u8; NR] = std::array::from_fn(|i| bytes.add((j + i) * bpr));
        // SAFETY (whole loop): code reads stay inside each weight row (`bpr` bytes), x reads
        // inside each row of x (`cols` integers), scratch reads inside the scratch.
        for g in 0..groups {
            let mut acc = [[_mm256_setzero_si256(); R]; NR];
            for b in 0..B {
                let xb = g * gs + b * BLOCK;
                let mut xs = [(_mm256_setzero_si256(), _mm256_setzero_si256()); R];
                for (m, xm) in xs.iter_mut().enumerate() {
                    let xp = t.prep.x.as_ptr().add(m * cols + xb);
                    *xm = (_mm256_loadu_si256(xp as *const __m256i), _mm256_loadu_si256(xp.add(16) as *const __m256i));
                }
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let (lo, hi) = codes::<NIB>(rows[i].add(g * group_bytes), b);
                    for (m, a) in acc_i.iter_mut().enumerate() {
                        let d = _mm256_add_epi32(_mm256_madd_epi16(lo, xs[m].0), _mm256_madd_epi16(hi, xs[m].1));
                        *a = _mm256_add_epi32(*a, d);
                    }
                }
            }
            for i in 0..NR {
                for m in 0..R {
                    let sd = _mm256_broadcast_ss(&*s.scaled::<R>(i, m, pd, g));
                    tot[i][m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i][m]), sd, tot[i][m]);
                }
            }
        }
        let n = v.rows;
        for (i, row) in tot.iter().enumerate() {
            for (m, lanes) in row.iter().enumerate() {
                *t.y.get().add(m * n + j + i) = hsum_avx2(*lanes);
            }
        }
    }

    /// The integer sums of group `g` of the packed row `row` with each of the `R` rows of x
    /// (`x`, [R, cols] prepared in 64-element blocks).
    #[inline(always)]
    unsafe fn sums512<const R: usize, const B: usize, const NIB: bool>(
        x: *const i16,
        cols: usize,
        row: *const u8,
        g: usize,
    ) -> [__m512i; R] {
        let gs = B * BLOCK512;
        let group_bytes = if NIB { gs / 2 } else { gs };
        let mut acc = [_mm512_setzero_si512(); R];
        for b in 0..B {
            let xb = g * gs + b * BLOCK512;
            let (lo, hi) = codes512::<NIB>(row.add(g * group_bytes), b);
            for (m, a) in acc.iter_mut().enumerate() {
                let xp = x.add(m * cols + xb);
                let (x0, x1) = (_mm512_loadu_si512(xp as *const _), _mm512_loadu_si512(xp.add(32) as *const _));
                *a = _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(*a, lo, x0), hi, x1);
            }
        }
        acc
    }
}
