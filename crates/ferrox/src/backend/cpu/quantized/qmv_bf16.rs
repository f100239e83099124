//! The 4-bit decode kernel for bfloat16 activations, on CPUs with AVX512-BF16
//! (`vdpbf16ps`: 32 products of bf16 pairs summed into 16 f32 lanes by one instruction).
//!
//! x is bf16 already (a bf16 model's activations), so it enters the dot products exactly; the
//! packed codes become bf16 without a conversion: a 16-bit word of the packed row holds four
//! codes, and `(word >> 4k) & 15 | 0x4300` is the bf16 bit pattern of `128 + code` (128 has
//! seven mantissa bits below its leading one, one per code value). So one 64-byte load, three
//! shifts and four ternary-logic ops give the 128 weights of a chunk as bf16, and four
//! `vdpbf16ps` dot them with x, whose chunk was reordered once per call to meet them
//! (element `4j + k` of a chunk at position `32k + j`). Lane `i` of the chunk's sum covers
//! elements `8i..8i + 8`, all of one group, so the group scales multiply the lanes as one
//! vector, read straight from the stored scales (bf16 ones by one masked word permute that
//! puts each group's bits in the high half of its lanes: no per-pass copy into f32, which cost
//! a quarter of the kernel's time on short rows). The offset of 128 comes back out through x's
//! group sums, with the bias term: `y = Σ_g s_g·(x_g·(q_g + 128)) + (b_g − 128·s_g)·Σx_g`.
//! Products of bf16 values are exact in f32; the offset enlarges the terms summed by at most
//! 16×, far below bf16's precision.

use super::view::{for_decode_ranges, DecodeTask, Kind, View};
use crate::backend::cpu::bf16_gemm;
use crate::primitives::QuantMode;

/// Elements of x (and of a packed row) one pass of the inner loop reads.
const CHUNK: usize = 128;

/// Whether the kernel computes products with `v` (affine 4-bit) on this CPU.
pub fn applies(v: &View) -> bool {
    v.kind == Kind::Nibbles && v.mode == QuantMode::Affine && v.biases.is_some() && bf16_gemm::cpu_supported()
}

/// x reordered per chunk as bf16 bits, and its group sums.
struct Prepared {
    /// `[r, chunks * CHUNK]`: element `c·CHUNK + 4j + k` of a row at `c·CHUNK + 32k + j`; zero
    /// past the row's end.
    x: Vec<u16>,
    /// Σ over each group of each row of x: `[r, sums_stride]`, zero past the row's groups.
    xsum: Vec<f32>,
    /// Elements of one prepared row.
    stride: usize,
    /// Elements of one row's group sums (the groups and 16 zeros, so vectors of 16 read past
    /// the last group stay inside).
    sums_stride: usize,
}

fn prepare(x: &[f32], r: usize, cols: usize, gs: usize) -> Prepared {
    let stride = cols.div_ceil(CHUNK) * CHUNK;
    let mut xp = vec![0u16; r * stride];
    for (dst, src) in xp.chunks_exact_mut(stride).zip(x.chunks_exact(cols)) {
        for (e, &v) in src.iter().enumerate() {
            let (c, within) = (e / CHUNK, e % CHUNK);
            // x holds bf16 values (widened to f32), so the top half of the bits is exact.
            dst[c * CHUNK + (within % 4) * 32 + within / 4] = (v.to_bits() >> 16) as u16;
        }
    }
    let groups = cols / gs;
    let sums_stride = groups + 16;
    let mut xsum = vec![0f32; r * sums_stride];
    for (dst, src) in xsum.chunks_exact_mut(sums_stride).zip(x.chunks_exact(cols)) {
        for (sum, g) in dst.iter_mut().zip(src.chunks(gs)) {
            *sum = g.iter().sum();
        }
    }
    Prepared { x: xp, xsum, stride, sums_stride }
}

/// `y = x @ Wᵀ` for the `r` (1 to 4) rows of `x` ([r, cols], bf16 values held as f32), `y`
/// [r, rows]; `v` must be one the kernel [`applies`] to.
pub fn qmv_bf16(x: &[f32], r: usize, v: &View, y: &mut [f32]) {
    debug_assert!(applies(v) && (1..=4).contains(&r));
    let prep = prepare(x, r, v.cols, v.group_size);
    for_decode_ranges(v, &prep, r, y, |t, j0, j1| {
        // SAFETY: `applies` checked the CPU's features.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            x86::run(t, j0, j1)
        }
    });
}

/// What every range of output features shares.
type Task<'a> = DecodeTask<'a, Prepared>;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::{Task, CHUNK};
    use crate::backend::cpu::attention_kernels::Wide;
    use crate::backend::cpu::bf16_gemm::x86::first_lanes;
    use crate::backend::cpu::quantized::view::ScaleSlice;
    use crate::backend::cpu::simd::prefetch_ahead;

    /// Output features `j0..j1` of every row of x.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub unsafe fn run(t: &Task, j0: usize, j1: usize) {
        // Affine matrices have scales and biases of one stored type.
        match (t.v.scales, t.v.biases) {
            (ScaleSlice::Bf16(s), Some(ScaleSlice::Bf16(b))) => {
                by_rows::<u16>(t, bytemuck::cast_slice(s), bytemuck::cast_slice(b), j0, j1)
            }
            (ScaleSlice::F16(s), Some(ScaleSlice::F16(b))) => by_rows(t, s, b, j0, j1),
            (ScaleSlice::F32(s), Some(ScaleSlice::F32(b))) => by_rows(t, s, b, j0, j1),
            _ => unreachable!("`applies` admits affine matrices with biases only"),
        }
    }

    #[inline(always)]
    unsafe fn by_rows<S: Stored>(t: &Task, s: &[S], b: &[S], j0: usize, j1: usize) {
        match t.r {
            1 => features::<S, 1>(t, s, b, j0, j1),
            2 => features::<S, 2>(t, s, b, j0, j1),
            3 => features::<S, 3>(t, s, b, j0, j1),
            _ => features::<S, 4>(t, s, b, j0, j1),
        }
    }

    /// A stored type of scales and biases (bf16 as its bits), read straight from the matrix
    /// into f32 lanes (no copy of a row's scales per pass); [`Wide::load16`] reads 16 groups.
    trait Stored: Wide {
        /// The scale of each lane of a chunk's sums: lane `i` takes group `first + 8i / gs`;
        /// `groups` masks the groups read (those the chunk covers), the rest read as zero.
        unsafe fn lanes(p: *const Self, first: usize, groups: u32, l: &LaneGroups) -> __m512;
    }

    impl Stored for u16 {
        #[inline(always)]
        unsafe fn lanes(p: *const Self, first: usize, groups: u32, l: &LaneGroups) -> __m512 {
            // The group's bf16 bits into the high half of each lane, the low half zero: the
            // f32 of the same value.
            let words = _mm512_maskz_loadu_epi16(groups, p.add(first) as *const i16);
            _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(0xAAAA_AAAA, l.words, words))
        }
    }

    impl Stored for f16 {
        #[inline(always)]
        unsafe fn lanes(p: *const Self, first: usize, groups: u32, l: &LaneGroups) -> __m512 {
            let halves = _mm256_maskz_loadu_epi16(groups as u16, p.add(first) as *const i16);
            _mm512_permutexvar_ps(l.lanes, _mm512_cvtph_ps(halves))
        }
    }

    impl Stored for f32 {
        #[inline(always)]
        unsafe fn lanes(p: *const Self, first: usize, groups: u32, l: &LaneGroups) -> __m512 {
            _mm512_permutexvar_ps(l.lanes, _mm512_maskz_loadu_ps(groups as u16, p.add(first)))
        }
    }

    /// One output feature (one packed row) a pass: a thread's loads then walk its range of
    /// the matrix as one sequential stream. Passes over four rows at once, their loads
    /// alternating between four streams 1–3 rows apart, read 12–15 % slower (a stand-alone
    /// copy of a 135M step's products, alternating kernels within one process).
    #[inline(always)]
    unsafe fn features<S: Stored, const R: usize>(t: &Task, s: &[S], b: &[S], j0: usize, j1: usize) {
        let lanes = LaneGroups::new(t.v.group_size, t.v.cols);
        for j in j0..j1 {
            feature::<S, R>(t, s, b, j, &lanes);
        }
    }

    /// How a packed row splits into chunks and which group of its chunk each lane of a chunk's
    /// sums covers, made once per range of features: the group size and the row length are not
    /// constants, so their divisions would otherwise run for every row.
    struct LaneGroups {
        /// Lane i covers the chunk's elements 8i..8i + 8: group 8i / gs of the chunk.
        lanes: __m512i,
        /// The same as 16-bit word indices (word `2i + 1` is lane i's high half).
        words: __m512i,
        /// Groups a chunk spans (the group size divides [`CHUNK`]).
        per_chunk: usize,
        /// Masks of the groups a chunk reads: a whole chunk's, and the last chunk's of a row.
        whole: u32,
        last: u32,
        /// Chunks of a row, and the mask of the bytes of its last (a whole chunk is 64 bytes).
        chunks: usize,
        tail_bytes: u64,
    }

    impl LaneGroups {
        #[inline(always)]
        unsafe fn new(gs: usize, cols: usize) -> LaneGroups {
            let lanes: [i32; 16] = std::array::from_fn(|i| (8 * i / gs) as i32);
            let words: [i16; 32] = std::array::from_fn(|w| (8 * (w / 2) / gs) as i16);
            let per_chunk = CHUNK / gs;
            let chunks = cols.div_ceil(CHUNK);
            let last = cols / gs - (chunks - 1) * per_chunk;
            let tail_bytes = (cols - (chunks - 1) * CHUNK) / 2;
            LaneGroups {
                lanes: _mm512_loadu_si512(lanes.as_ptr() as *const __m512i),
                words: _mm512_loadu_si512(words.as_ptr() as *const __m512i),
                per_chunk,
                whole: (1 << per_chunk) - 1,
                last: (1 << last) - 1,
                chunks,
                tail_bytes: if tail_bytes == 64 { u64::MAX } else { (1 << tail_bytes) - 1 },
            }
        }
    }

    /// The bits as 32 bf16 values.
    #[inline(always)]
    unsafe fn as_bf16(v: __m512i) -> __m512bh {
        std::mem::transmute::<__m512i, __m512bh>(v)
    }

    /// The low four bits of each 16-bit lane of `shifted`, as bf16 `128 + code`: the bits
    /// `shifted & low4 | magic` (one ternary-logic op: 0xEA is `(a & b) | c`).
    #[inline(always)]
    unsafe fn codes(shifted: __m512i, low4: __m512i, magic: __m512i) -> __m512bh {
        as_bf16(_mm512_ternarylogic_epi32::<0xEA>(shifted, low4, magic))
    }

    /// Output feature `j` for the `R` rows of x; `s` and `b` are the matrix's scales and
    /// biases.
    #[inline(always)]
    unsafe fn feature<S: Stored, const R: usize>(t: &Task, s: &[S], b: &[S], j: usize, lanes: &LaneGroups) {
        let v = t.v;
        let (groups, bpr, chunks) = (v.groups(), v.bytes_per_row(), lanes.chunks);
        let row = v.bytes.as_ptr().add(j * bpr);
        prefetch_ahead(row, bpr);
        let (low4, magic) = (_mm512_set1_epi16(0x000F), _mm512_set1_epi16(0x4300));
        let (sp, bp) = (s.as_ptr().add(j * groups), b.as_ptr().add(j * groups));
        let mut tot = [_mm512_setzero_ps(); R];
        for c in 0..chunks {
            // SAFETY (whole loop): x rows hold `chunks · CHUNK` elements; packed reads stay
            // inside the row (the last chunk's through a mask), and so do the scale reads (the
            // groups a chunk covers, through a mask).
            let wp = row.add(c * (CHUNK / 2));
            let (w, read) = if c + 1 < chunks {
                (_mm512_loadu_si512(wp as *const __m512i), lanes.whole)
            } else {
                (_mm512_maskz_loadu_epi8(lanes.tail_bytes, wp as *const i8), lanes.last)
            };
            let q0 = codes(w, low4, magic);
            let q1 = codes(_mm512_srli_epi16::<4>(w), low4, magic);
            let q2 = codes(_mm512_srli_epi16::<8>(w), low4, magic);
            let q3 = codes(_mm512_srli_epi16::<12>(w), low4, magic);
            let sv = S::lanes(sp, c * lanes.per_chunk, read, lanes);
            for (m, t_m) in tot.iter_mut().enumerate() {
                let xp = t.prep.x.as_ptr().add(m * t.prep.stride + c * CHUNK);
                let x = |k: usize| as_bf16(_mm512_loadu_si512(xp.add(32 * k) as *const __m512i));
                let a = _mm512_dpbf16_ps(_mm512_setzero_ps(), q0, x(0));
                let b = _mm512_dpbf16_ps(_mm512_setzero_ps(), q1, x(1));
                let a = _mm512_dpbf16_ps(a, q2, x(2));
                let b = _mm512_dpbf16_ps(b, q3, x(3));
                *t_m = _mm512_fmadd_ps(_mm512_add_ps(a, b), sv, *t_m);
            }
        }
        // The bias term, less the 128 the codes carried: Σ_g (b_g − 128·s_g)·Σx_g, into the
        // lanes of each sum, 16 groups at a time.
        let minus_128 = _mm512_set1_ps(-128.0);
        let mut g = 0;
        while g < groups {
            let mask = first_lanes(groups - g) as u16;
            let offset = _mm512_fmadd_ps(S::load16(sp.add(g), mask), minus_128, S::load16(bp.add(g), mask));
            for (m, t_m) in tot.iter_mut().enumerate() {
                let sums = t.prep.xsum.as_ptr().add(m * t.prep.sums_stride + g);
                *t_m = _mm512_fmadd_ps(offset, _mm512_loadu_ps(sums), *t_m);
            }
            g += 16;
        }
        for (m, t_m) in tot.iter().enumerate() {
            *t.y.get().add(m * v.rows + j) = _mm512_reduce_add_ps(*t_m);
        }
    }
}
