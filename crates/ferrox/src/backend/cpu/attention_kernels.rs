//! The inner loops of decode attention (`decode_attention.rs`): a few query rows against a
//! KV cache, scores and the weighted sum of values computed straight from the keys and values
//! in their own dtype.
//!
//! Every kernel takes all the query rows of one key/value head (its grouped query heads) at
//! once, up to four rows a pass, so a key or value loaded and widened once serves every row.
//!
//! bf16: with AVX512-BF16, scores take four keys at a time: `vdpbf16ps` dots 32 bf16 pairs
//! per instruction into f32 lanes (products exact), and one transposing reduction sums the
//! four keys' lanes together, instead of a horizontal sum per key. With AVX-512 but no
//! AVX512-BF16, bf16 takes the f32 / f16 kernels (the "wide" ones), widened as it loads: on
//! such a Xeon the AVX2 kernels read a 2048-key cache at 4.5 GB/s, the wide ones at ~30. With
//! AVX2, keys and the query are widened to f32 8 values at a time and dotted by FMA, four keys
//! in independent chains, one query row at a time. f32, f16 and bf16 keys (AVX-512) are dotted
//! four at a time by FMA, 16 values a step, with the same reduction. The weighted sum widens values to f32 and
//! multiplies-adds them in f32, 64 columns a pass (a whole row of a 64-wide head): 32 bf16
//! values are one load, split into the f32 of their even and of their odd columns by a shift
//! and a mask (the sums are put back in column order once, at the end); f16 is converted by
//! `vcvtph2ps`. With AVX2 (bf16), 8 columns a pass and four rows a step. Probabilities stay
//! f32, so results are exact products in f32 sums.

use super::bf16_gemm::cpu_supported;
use super::simd::{best_isa, Isa};

/// The rows of the values, asked for from memory while the keys are scored (one row a key),
/// so the weighted sum after the scores finds them in cache: a 135M decode layer's K and V
/// come from memory, and without this its values arrive only as the sum reaches them
/// (decode attention ~12 % faster in a 4-bit 135M token with it, docs/PERF.md session 30).
#[derive(Clone, Copy)]
struct Along {
    ptr: *const u8,
    row_bytes: usize,
}

impl Along {
    const NONE: Along = Along { ptr: std::ptr::null(), row_bytes: 0 };

    /// The rows of `values` for `n` keys (none when `values` holds none).
    fn of<E>(values: &[E], n: usize) -> Along {
        match values.len() / n.max(1) {
            0 => Along::NONE,
            row => Along { ptr: values.as_ptr() as *const u8, row_bytes: row * std::mem::size_of::<E>() },
        }
    }

    /// Asks for rows `j..j + n`.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn fetch(self, j: usize, n: usize) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let mut off = 0;
        while off < n * self.row_bytes {
            // SAFETY: a prefetch never faults, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(self.ptr.wrapping_add(j * self.row_bytes + off) as *const i8) };
            off += 64;
        }
    }
}

/// Whether this CPU runs the kernels (AVX512-BF16, or AVX2 with FMA).
pub fn applies() -> bool {
    cpu_supported() || best_isa() != Isa::Baseline
}

/// `out[r·n + j] = scale · Σ_d q[r·dk + d] · k[j·dk + d]` for the `rows` query rows of `q` and
/// the `n = out.len() / rows` keys of `k` (rows of `dk` bf16 values, as bits), asking for the
/// `n` rows of `values` (the keys' values, or none) from memory on the way ([`Along`]). The CPU
/// must run the kernels ([`applies`]).
pub fn scores(q: &[u16], rows: usize, k: &[u16], dk: usize, scale: f32, out: &mut [f32], values: &[u16]) {
    assert!(applies() && rows > 0 && out.len().is_multiple_of(rows));
    assert!(q.len() >= rows * dk && k.len() >= out.len() / rows * dk);
    let along = Along::of(values, out.len() / rows);
    // SAFETY: features checked; the lengths bound every read.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        if cpu_supported() {
            x86::scores(q, rows, k, dk, scale, out, along)
        } else {
            avx2::scores(q, rows, k, dk, scale, out, along)
        }
    }
}

/// `out[r·stride + d] = Σ_j p[r·n + j] · v[j·dv + d]` for `d < dv`, the `rows` rows of
/// probabilities `p` and the `n = p.len() / rows` rows of `v` (`dv` bf16 values each, as bits);
/// the rest of each `stride` of `out` is left alone. The CPU must run the kernels ([`applies`]).
pub fn weighted_sum(p: &[f32], rows: usize, v: &[u16], dv: usize, out: &mut [f32], stride: usize) {
    assert!(applies() && rows > 0 && p.len().is_multiple_of(rows) && stride >= dv);
    assert!(v.len() >= p.len() / rows * dv && out.len() >= (rows - 1) * stride + dv);
    // SAFETY: features checked; the lengths bound every read and write.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        if cpu_supported() {
            x86::weighted_sum(p, rows, v, dv, out, stride)
        } else {
            avx2::weighted_sum(p, rows, v, dv, out, stride)
        }
    }
}

/// An element type the AVX-512 kernels read 16 at a time as f32 (attention's keys and values,
/// the 4-bit decode kernel's scales and biases): f32, f16, and bf16 (as its bits).
pub trait Wide: Copy {
    /// The 16 values at `p` as f32, the lanes past `mask` zero (not read).
    ///
    /// # Safety
    /// The CPU must have AVX-512 (inline into code compiled with it); the unmasked lanes of
    /// `p` must be readable.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self, mask: u16) -> std::arch::x86_64::__m512;

    /// The first `min(left, 64)` values at `p` as four f32 vectors (the rest zero, not read),
    /// in an order of columns that [`Wide::store64`] undoes: here, column order.
    ///
    /// # Safety
    /// As [`Wide::load16`]; those values must be readable.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load64(p: *const Self, left: usize) -> [std::arch::x86_64::__m512; 4] {
        std::array::from_fn(|w| Self::load16(p.wrapping_add(16 * w), x86::first16(left.saturating_sub(16 * w))))
    }

    /// The 32 values at `p` as two f32 vectors, in an order of columns that
    /// [`Wide::order32`] gives a query too: here, column order.
    ///
    /// # Safety
    /// As [`Wide::load16`]; the 32 values must be readable.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load32(p: *const Self) -> [std::arch::x86_64::__m512; 2] {
        [Self::load16(p, u16::MAX), Self::load16(p.wrapping_add(16), u16::MAX)]
    }

    /// 32 f32 values in column order, put in [`Wide::load32`]'s order (for a dot product).
    ///
    /// # Safety
    /// As [`Wide::load16`].
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn order32(v: [std::arch::x86_64::__m512; 2]) -> [std::arch::x86_64::__m512; 2] {
        v
    }

    /// Stores the first `min(left, 64)` columns of `sums` (vectors in [`Wide::load64`]'s
    /// order) at `out`, in column order.
    ///
    /// # Safety
    /// As [`Wide::load16`]; those values of `out` must be writable.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn store64(sums: [std::arch::x86_64::__m512; 4], out: *mut f32, left: usize) {
        for (w, s) in sums.into_iter().enumerate() {
            let mask = x86::first16(left.saturating_sub(16 * w));
            std::arch::x86_64::_mm512_mask_storeu_ps(out.wrapping_add(16 * w), mask, s);
        }
    }
}

/// Whether this CPU runs [`scores_wide`] and [`weighted_sum_wide`] (AVX-512).
pub fn wide_applies() -> bool {
    best_isa() == Isa::Avx512
}

/// [`scores`] for f32 queries and f32, f16 or bf16 (as bits) keys. The CPU must have AVX-512
/// ([`wide_applies`]).
pub fn scores_wide<E: Wide>(q: &[f32], rows: usize, k: &[E], dk: usize, scale: f32, out: &mut [f32], values: &[E]) {
    assert!(wide_applies() && rows > 0 && out.len().is_multiple_of(rows));
    assert!(q.len() >= rows * dk && k.len() >= out.len() / rows * dk);
    let along = Along::of(values, out.len() / rows);
    // SAFETY: features checked; the lengths bound every read.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        x86::scores_wide(q, rows, k, dk, scale, out, along)
    }
}

/// [`weighted_sum`] for f32, f16 or bf16 (as bits) values. The CPU must have AVX-512
/// ([`wide_applies`]).
pub fn weighted_sum_wide<E: Wide>(p: &[f32], rows: usize, v: &[E], dv: usize, out: &mut [f32], stride: usize) {
    assert!(wide_applies() && rows > 0 && p.len().is_multiple_of(rows) && stride >= dv);
    assert!(v.len() >= p.len() / rows * dv && out.len() >= (rows - 1) * stride + dv);
    // SAFETY: features checked; the lengths bound every read and write.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        x86::weighted_sum(p, rows, v, dv, out, stride)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::marker::PhantomData;

    use crate::backend::cpu::bf16_gemm::x86::{first_lanes, load_bf16, reduce4};

    use super::{Along, Wide};

    /// Runs `$body` for rows `$r` = 0, 4, 8, … of `$rows`, with `$R` a constant: the rows left
    /// from `$r`, at most four. A macro, not a function taking a closure: a closure is compiled
    /// without the caller's target features.
    macro_rules! in_fours {
        ($rows:expr, |$r:ident, $R:ident| $body:expr) => {{
            let rows = $rows;
            let mut $r = 0;
            while $r < rows {
                match rows - $r {
                    1 => {
                        const $R: usize = 1;
                        $body
                    }
                    2 => {
                        const $R: usize = 2;
                        $body
                    }
                    3 => {
                        const $R: usize = 3;
                        $body
                    }
                    _ => {
                        const $R: usize = 4;
                        $body
                    }
                }
                $r += 4;
            }
        }};
    }

    /// The mask of the first `n` (at most 16, more count as 16) of 16 lanes.
    #[inline(always)]
    pub fn first16(n: usize) -> u16 {
        first_lanes(n.min(16)) as u16
    }

    impl Wide for u16 {
        #[inline(always)]
        unsafe fn load16(p: *const u16, mask: u16) -> __m512 {
            let bits = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, p as *const i16));
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(bits))
        }

        /// Two loads of 32 values, each split into its even columns (the low halves of its
        /// 32-bit lanes, shifted up) and its odd ones (the high halves, masked): a bf16 value is
        /// the top half of its f32.
        #[inline(always)]
        unsafe fn load64(p: *const u16, left: usize) -> [__m512; 4] {
            let high = _mm512_set1_epi32(0xFFFF_0000_u32 as i32);
            let [a, b] = [0, 32].map(|c| {
                _mm512_maskz_loadu_epi16(first_lanes(left.saturating_sub(c)), p.wrapping_add(c) as *const i16)
            });
            [
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(a)),
                _mm512_castsi512_ps(_mm512_and_si512(a, high)),
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(b)),
                _mm512_castsi512_ps(_mm512_and_si512(b, high)),
            ]
        }

        /// One load, split as [`Wide::load64`] splits: the even columns, then the odd ones.
        #[inline(always)]
        unsafe fn load32(p: *const u16) -> [__m512; 2] {
            let a = _mm512_loadu_si512(p as *const __m512i);
            let high = _mm512_set1_epi32(0xFFFF_0000_u32 as i32);
            [_mm512_castsi512_ps(_mm512_slli_epi32::<16>(a)), _mm512_castsi512_ps(_mm512_and_si512(a, high))]
        }

        /// The even columns, then the odd ones.
        #[inline(always)]
        unsafe fn order32(v: [__m512; 2]) -> [__m512; 2] {
            let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
            [_mm512_permutex2var_ps(v[0], even, v[1]), _mm512_permutex2var_ps(v[0], odd, v[1])]
        }

        /// Interleaves the even and odd columns of each half back into column order.
        #[inline(always)]
        unsafe fn store64(sums: [__m512; 4], out: *mut f32, left: usize) {
            let first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
            let second = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
            for h in 0..2 {
                let (even, odd) = (sums[2 * h], sums[2 * h + 1]);
                let c = 32 * h;
                let lo = _mm512_permutex2var_ps(even, first, odd);
                let hi = _mm512_permutex2var_ps(even, second, odd);
                _mm512_mask_storeu_ps(out.wrapping_add(c), first16(left.saturating_sub(c)), lo);
                _mm512_mask_storeu_ps(out.wrapping_add(c + 16), first16(left.saturating_sub(c + 16)), hi);
            }
        }
    }

    impl Wide for f32 {
        #[inline(always)]
        unsafe fn load16(p: *const f32, mask: u16) -> __m512 {
            _mm512_maskz_loadu_ps(mask, p)
        }
    }

    impl Wide for half::f16 {
        #[inline(always)]
        unsafe fn load16(p: *const half::f16, mask: u16) -> __m512 {
            _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p as *const i16))
        }
    }

    /// How keys are dotted with a query, a step of lanes at a time, into f32 sums.
    trait KeyDot {
        /// The keys' element type.
        type Key;
        /// The query's element type.
        type Query;
        /// A step of keys or query in a register.
        type Step: Copy;
        /// Values a step covers.
        const LANES: usize;
        /// The first `min(left, LANES)` keys at `p` (the rest zero, not read).
        unsafe fn keys(p: *const Self::Key, left: usize) -> Self::Step;
        /// The first `min(left, LANES)` query values at `p`.
        unsafe fn query(p: *const Self::Query, left: usize) -> Self::Step;
        /// `acc` plus the products of `k` and `q`.
        unsafe fn madd(acc: __m512, k: Self::Step, q: Self::Step) -> __m512;
    }

    /// bf16 keys and query by `vdpbf16ps`, 32 pairs a step.
    struct Bf16Dot;

    impl KeyDot for Bf16Dot {
        type Key = u16;
        type Query = u16;
        type Step = __m512bh;
        const LANES: usize = 32;
        #[inline(always)]
        unsafe fn keys(p: *const u16, left: usize) -> __m512bh {
            load_bf16(p, first_lanes(left))
        }
        #[inline(always)]
        unsafe fn query(p: *const u16, left: usize) -> __m512bh {
            load_bf16(p, first_lanes(left))
        }
        #[inline(always)]
        unsafe fn madd(acc: __m512, k: __m512bh, q: __m512bh) -> __m512 {
            _mm512_dpbf16_ps(acc, k, q)
        }
    }

    /// Keys of a [`Wide`] type widened to f32 and an f32 query by FMA, 16 a step.
    struct WideDot<E>(PhantomData<E>);

    impl<E: Wide> KeyDot for WideDot<E> {
        type Key = E;
        type Query = f32;
        type Step = __m512;
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn keys(p: *const E, left: usize) -> __m512 {
            E::load16(p, first16(left))
        }
        #[inline(always)]
        unsafe fn query(p: *const f32, left: usize) -> __m512 {
            _mm512_maskz_loadu_ps(first16(left), p)
        }
        #[inline(always)]
        unsafe fn madd(acc: __m512, k: __m512, q: __m512) -> __m512 {
            _mm512_fmadd_ps(k, q, acc)
        }
    }

    /// Scores of the `R` query rows at `q` against the `n` keys at `k`, four keys a step (the
    /// keys loaded once for every row), into rows of `n` at `out`.
    #[inline(always)]
    unsafe fn scores_of<D: KeyDot, const R: usize>(
        q: *const D::Query,
        k: *const D::Key,
        dk: usize,
        n: usize,
        scale: f32,
        out: *mut f32,
        along: Along,
    ) {
        let mut j = 0;
        while j + 4 <= n {
            along.fetch(j, 4);
            let keys = k.add(j * dk);
            let mut acc = [[_mm512_setzero_ps(); 4]; R];
            let mut c = 0;
            while c < dk {
                let kv: [D::Step; 4] = std::array::from_fn(|i| D::keys(keys.add(i * dk + c), dk - c));
                for (r, a) in acc.iter_mut().enumerate() {
                    let qv = D::query(q.add(r * dk + c), dk - c);
                    for (ai, &ki) in a.iter_mut().zip(&kv) {
                        *ai = D::madd(*ai, ki, qv);
                    }
                }
                c += D::LANES;
            }
            for (r, [a, b, c, d]) in acc.into_iter().enumerate() {
                _mm_storeu_ps(out.add(r * n + j), _mm_mul_ps(reduce4(a, b, c, d), _mm_set1_ps(scale)));
            }
            j += 4;
        }
        while j < n {
            for r in 0..R {
                let mut acc = _mm512_setzero_ps();
                let mut c = 0;
                while c < dk {
                    acc = D::madd(acc, D::keys(k.add(j * dk + c), dk - c), D::query(q.add(r * dk + c), dk - c));
                    c += D::LANES;
                }
                *out.add(r * n + j) = _mm512_reduce_add_ps(acc) * scale;
            }
            j += 1;
        }
    }

    /// [`scores_of`] over any number of rows, four at a time.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn scores_rows<D: KeyDot>(
        q: *const D::Query,
        rows: usize,
        k: *const D::Key,
        dk: usize,
        n: usize,
        scale: f32,
        out: *mut f32,
        along: Along,
    ) {
        in_fours!(rows, |r, R| {
            // The values are asked for on the first pass over the keys only.
            let along = if r == 0 { along } else { Along::NONE };
            scores_of::<D, R>(q.add(r * dk), k, dk, n, scale, out.add(r * n), along)
        });
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub unsafe fn scores(q: &[u16], rows: usize, k: &[u16], dk: usize, scale: f32, out: &mut [f32], along: Along) {
        scores_rows::<Bf16Dot>(q.as_ptr(), rows, k.as_ptr(), dk, out.len() / rows, scale, out.as_mut_ptr(), along);
    }

    /// [`scores_of`] for keys of `32·S` values (a constant, so the loops unroll without
    /// masks) of a [`Wide`] type: each 32 values of a key are one or two loads
    /// ([`Wide::load32`]) whose column order the query rows take once ([`Wide::order32`]).
    #[inline(always)]
    unsafe fn scores_fixed<E: Wide, const R: usize, const S: usize>(
        q: *const f32,
        k: *const E,
        n: usize,
        scale: f32,
        out: *mut f32,
        along: Along,
    ) {
        let dk = 32 * S;
        // The query rows in the keys' column order, read from here by the multiply-adds.
        let mut qs = [[[_mm512_setzero_ps(); 2]; S]; R];
        for (r, qr) in qs.iter_mut().enumerate() {
            for (s, qv) in qr.iter_mut().enumerate() {
                let at = q.add(r * dk + 32 * s);
                *qv = E::order32([_mm512_loadu_ps(at), _mm512_loadu_ps(at.add(16))]);
            }
        }
        /// Adds a key's products with each query row to `acc`.
        #[inline(always)]
        unsafe fn dot<E: Wide, const R: usize, const S: usize>(
            key: *const E,
            qs: &[[[__m512; 2]; S]; R],
            acc: &mut [__m512; R],
        ) {
            for s in 0..S {
                let kv = E::load32(key.add(32 * s));
                for (a, qr) in acc.iter_mut().zip(qs) {
                    *a = _mm512_fmadd_ps(kv[0], qr[s][0], *a);
                    *a = _mm512_fmadd_ps(kv[1], qr[s][1], *a);
                }
            }
        }
        let mut j = 0;
        while j + 4 <= n {
            along.fetch(j, 4);
            let mut acc = [[_mm512_setzero_ps(); R]; 4];
            for (i, a) in acc.iter_mut().enumerate() {
                dot(k.add((j + i) * dk), &qs, a);
            }
            let [a0, a1, a2, a3] = acc;
            for (r, (((s0, s1), s2), s3)) in a0.into_iter().zip(a1).zip(a2).zip(a3).enumerate() {
                let sums = reduce4(s0, s1, s2, s3);
                _mm_storeu_ps(out.add(r * n + j), _mm_mul_ps(sums, _mm_set1_ps(scale)));
            }
            j += 4;
        }
        while j < n {
            let mut acc = [_mm512_setzero_ps(); R];
            dot(k.add(j * dk), &qs, &mut acc);
            for (r, a) in acc.into_iter().enumerate() {
                *out.add(r * n + j) = _mm512_reduce_add_ps(a) * scale;
            }
            j += 1;
        }
    }

    /// [`scores_fixed`] over any number of rows, four at a time.
    #[inline(always)]
    unsafe fn scores_fixed_rows<E: Wide, const S: usize>(
        q: *const f32,
        rows: usize,
        k: *const E,
        n: usize,
        scale: f32,
        out: *mut f32,
        along: Along,
    ) {
        in_fours!(rows, |r, R| {
            let along = if r == 0 { along } else { Along::NONE };
            scores_fixed::<E, R, S>(q.add(r * 32 * S), k, n, scale, out.add(r * n), along)
        });
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    pub unsafe fn scores_wide<E: Wide>(
        q: &[f32],
        rows: usize,
        k: &[E],
        dk: usize,
        scale: f32,
        out: &mut [f32],
        along: Along,
    ) {
        let (q, k, n, out) = (q.as_ptr(), k.as_ptr(), out.len() / rows, out.as_mut_ptr());
        match dk {
            64 => scores_fixed_rows::<E, 2>(q, rows, k, n, scale, out, along),
            128 => scores_fixed_rows::<E, 4>(q, rows, k, n, scale, out, along),
            _ => scores_rows::<WideDot<E>>(q, rows, k, dk, n, scale, out, along),
        }
    }

    /// The weighted sums of the `R` probability rows at `p` (`n` each) over the `n` value
    /// rows at `v`, 64 columns a pass (each value row loaded and widened once for every row),
    /// into rows `stride` apart at `out`.
    #[inline(always)]
    unsafe fn weighted_sum_of<E: Wide, const R: usize>(
        p: *const f32,
        n: usize,
        v: *const E,
        dv: usize,
        out: *mut f32,
        stride: usize,
    ) {
        let mut c = 0;
        while c < dv {
            let left = dv - c;
            let mut acc = [[_mm512_setzero_ps(); 4]; R];
            for j in 0..n {
                let vv = E::load64(v.add(j * dv + c), left);
                for (r, a) in acc.iter_mut().enumerate() {
                    let pr = _mm512_set1_ps(*p.add(r * n + j));
                    for (ai, &vi) in a.iter_mut().zip(&vv) {
                        *ai = _mm512_fmadd_ps(pr, vi, *ai);
                    }
                }
            }
            for (r, a) in acc.into_iter().enumerate() {
                E::store64(a, out.add(r * stride + c), left);
            }
            c += 64;
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    pub unsafe fn weighted_sum<E: Wide>(p: &[f32], rows: usize, v: &[E], dv: usize, out: &mut [f32], stride: usize) {
        let n = p.len() / rows;
        in_fours!(rows, |r, R| {
            weighted_sum_of::<E, R>(p.as_ptr().add(r * n), n, v.as_ptr(), dv, out.as_mut_ptr().add(r * stride), stride)
        });
    }
}

/// The kernels with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use crate::backend::cpu::simd::{hsum_avx2, widen8_bf16};

    use super::Along;

    /// One bf16 value widened to f32.
    #[inline(always)]
    fn widen(b: u16) -> f32 {
        f32::from_bits((b as u32) << 16)
    }

    /// Σ q·k over the key rows `rows..rows + R·dk`: whole 8-lane steps in vectors, the last
    /// `dk mod 8` elements one at a time.
    #[inline(always)]
    unsafe fn dots<const R: usize>(q: *const u16, rows: *const u16, dk: usize) -> [f32; R] {
        let mut acc = [_mm256_setzero_ps(); R];
        let mut c = 0;
        while c + 8 <= dk {
            let qv = widen8_bf16(q.add(c));
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(widen8_bf16(rows.add(r * dk + c)), qv, *a);
            }
            c += 8;
        }
        std::array::from_fn(|r| {
            let tail: f32 = (c..dk).map(|e| widen(*q.add(e)) * widen(*rows.add(r * dk + e))).sum();
            hsum_avx2(acc[r]) + tail
        })
    }

    /// One query row at a time ([`row_scores`]).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn scores(q: &[u16], rows: usize, k: &[u16], dk: usize, scale: f32, out: &mut [f32], along: Along) {
        let n = out.len() / rows;
        for (r, out) in out.chunks_exact_mut(n.max(1)).take(rows).enumerate() {
            // The values are asked for on the first pass over the keys only.
            let along = if r == 0 { along } else { Along::NONE };
            row_scores(&q[r * dk..(r + 1) * dk], k, dk, scale, &mut out[..n], along);
        }
    }

    /// The scores of one query row.
    #[inline(always)]
    unsafe fn row_scores(q: &[u16], k: &[u16], dk: usize, scale: f32, out: &mut [f32], along: Along) {
        let n = out.len();
        let mut j = 0;
        while j + 4 <= n {
            along.fetch(j, 4);
            let sums = dots::<4>(q.as_ptr(), k.as_ptr().add(j * dk), dk);
            for (o, s) in out[j..j + 4].iter_mut().zip(sums) {
                *o = s * scale;
            }
            j += 4;
        }
        while j < n {
            out[j] = dots::<1>(q.as_ptr(), k.as_ptr().add(j * dk), dk)[0] * scale;
            j += 1;
        }
    }

    /// One probability row at a time ([`row_weighted_sum`]).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn weighted_sum(p: &[f32], rows: usize, v: &[u16], dv: usize, out: &mut [f32], stride: usize) {
        let n = p.len() / rows;
        for r in 0..rows {
            row_weighted_sum(&p[r * n..(r + 1) * n], v, &mut out[r * stride..r * stride + dv]);
        }
    }

    /// The weighted sum of one probability row.
    #[inline(always)]
    unsafe fn row_weighted_sum(p: &[f32], v: &[u16], out: &mut [f32]) {
        let (s, dv) = (p.len(), out.len());
        let mut c = 0;
        while c + 8 <= dv {
            let col = v.as_ptr().add(c);
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut j = 0;
            while j + 4 <= s {
                for (r, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(_mm256_set1_ps(p[j + r]), widen8_bf16(col.add((j + r) * dv)), *a);
                }
                j += 4;
            }
            while j < s {
                acc[0] = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), widen8_bf16(col.add(j * dv)), acc[0]);
                j += 1;
            }
            let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            _mm256_storeu_ps(out.as_mut_ptr().add(c), sum);
            c += 8;
        }
        for (d, o) in out.iter_mut().enumerate().skip(c) {
            *o = (0..s).map(|j| p[j] * widen(v[j * dv + d])).sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use half::bf16;

    use super::*;
    use crate::backend::cpu::{assert_sum_close, test_bf16_bits, test_rand};

    /// Key counts around the four-key step, head sizes around the 16-, 32- and 64-lane steps,
    /// query rows around the four-row pass.
    const SIZES: [(usize, usize); 7] = [(1, 1), (3, 17), (5, 64), (9, 80), (4, 100), (130, 128), (6, 33)];
    const ROWS: [usize; 4] = [1, 3, 4, 6];

    /// Scores `sc` (rows × s) and weighted sums `o` (rows of `stride`, the first `d` written)
    /// of queries `q` (rows × d), keys and values `kv` (s × d, element i read by `kf`) and
    /// probabilities `p` (rows × s), against float64 sums; the columns past `d` must be untouched.
    #[allow(clippy::too_many_arguments)]
    fn check(
        name: &str,
        rows: usize,
        s: usize,
        d: usize,
        q: &dyn Fn(usize) -> f64,
        kf: &dyn Fn(usize) -> f64,
        p: &[f32],
        sc: &[f32],
        o: &[f32],
        stride: usize,
    ) {
        for r in 0..rows {
            for j in 0..s {
                let terms = (0..d).map(|e| 0.5 * q(r * d + e) * kf(j * d + e));
                assert_sum_close(sc[r * s + j], terms, format!("{name} scores rows{rows} s{s} d{d} row {r} key {j}"));
            }
            for e in 0..d {
                let terms = (0..s).map(|j| p[r * s + j] as f64 * kf(j * d + e));
                assert_sum_close(
                    o[r * stride + e],
                    terms,
                    format!("{name} weighted sum rows{rows} s{s} d{d} row {r} column {e}"),
                );
            }
            assert!(
                o[r * stride + d..][..stride - d].iter().all(|x| x.is_nan()),
                "{name}: wrote past the row's columns"
            );
        }
    }

    /// The bf16 kernels (the dispatched ones, and the AVX2 ones where a CPU with AVX512-BF16
    /// skips them) against float64 sums.
    #[test]
    fn kernels_match_a_float64_reference() {
        if !applies() {
            eprintln!("skipped: this CPU has neither AVX512-BF16 nor AVX2");
            return;
        }
        let f = |b: u16| bf16::from_bits(b).to_f32() as f64;
        type Scores = fn(&[u16], usize, &[u16], usize, f32, &mut [f32], &[u16]);
        type Sum = fn(&[f32], usize, &[u16], usize, &mut [f32], usize);
        let mut kernels: Vec<(&str, Scores, Sum)> = vec![("dispatched", scores, weighted_sum)];
        #[cfg(target_arch = "x86_64")]
        if best_isa() != Isa::Baseline {
            // SAFETY (both): the CPU has AVX2 and FMA.
            kernels.push((
                "avx2",
                |q, r, k, d, sc, o, v| unsafe { avx2::scores(q, r, k, d, sc, o, Along::of(v, o.len() / r)) },
                |p, r, v, d, o, st| unsafe { avx2::weighted_sum(p, r, v, d, o, st) },
            ));
        }
        for (name, scores, weighted_sum) in kernels {
            for (s, d) in SIZES {
                for rows in ROWS {
                    let (q, k) = (test_bf16_bits(rows * d, 1), test_bf16_bits(s * d, 2));
                    let p = test_rand(rows * s, 3);
                    let stride = d + 3;
                    let (mut sc, mut o) = (vec![f32::NAN; rows * s], vec![f32::NAN; rows * stride]);
                    // The keys stand in for the values asked for alongside (a hint only).
                    scores(&q, rows, &k, d, 0.5, &mut sc, &k);
                    weighted_sum(&p, rows, &k, d, &mut o, stride);
                    check(name, rows, s, d, &|i| f(q[i]), &|i| f(k[i]), &p, &sc, &o, stride);
                }
            }
        }
    }

    /// The f32 and f16 kernels (AVX-512), over the same sizes: against float64 sums.
    #[test]
    fn wide_kernels_match_a_float64_reference() {
        if !wide_applies() {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        for (s, d) in SIZES {
            for rows in ROWS {
                let q: Vec<f32> = test_rand(rows * d, 1).iter().map(|v| v * 2.0 - 1.0).collect();
                let k32: Vec<f32> = test_rand(s * d, 2).iter().map(|v| v * 2.0 - 1.0).collect();
                let k16: Vec<half::f16> = k32.iter().map(|&v| half::f16::from_f32(v)).collect();
                let p = test_rand(rows * s, 3);
                let stride = d + 3;
                let qf = |i: usize| q[i] as f64;
                let (mut sc, mut o) = (vec![f32::NAN; rows * s], vec![f32::NAN; rows * stride]);
                scores_wide(&q, rows, &k32, d, 0.5, &mut sc, &k32);
                weighted_sum_wide(&p, rows, &k32, d, &mut o, stride);
                check("f32", rows, s, d, &qf, &|i| k32[i] as f64, &p, &sc, &o, stride);
                let (mut sc, mut o) = (vec![f32::NAN; rows * s], vec![f32::NAN; rows * stride]);
                scores_wide(&q, rows, &k16, d, 0.5, &mut sc, &[]);
                weighted_sum_wide(&p, rows, &k16, d, &mut o, stride);
                check("f16", rows, s, d, &qf, &|i| k16[i].to_f64(), &p, &sc, &o, stride);
            }
        }
    }
}
