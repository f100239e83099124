//! Runtime instruction-set dispatch for hot loops.
//!
//! The crate is built for the baseline target (SSE2 on x86-64). [`dispatch`] runs a closure
//! inside a function compiled with AVX-512 or AVX2+FMA when the CPU has them. For the loop to
//! be compiled with those features, its code must be inlined there: the closure given to
//! `dispatch` is written `#[inline(always)] |isa| ...` (the attribute is allowed on a closure
//! in argument position), the functions it calls are `#[inline(always)]`, and a closure bound
//! with `let` that holds a loop goes through [`inline_always`]. The closure receives the
//! [`Isa`] it runs under, a constant once inlined, so that code can use fused multiply-add.
//!
//! Kernels write their inner loop once, as a generic closure over plain slices, and wrap it in
//! `dispatch`; there are no per-ISA copies.

/// The instruction set a dispatched closure was compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// The build's baseline target.
    Baseline,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// x86-64 with AVX-512 F/BW/DQ/VL, plus AVX2, FMA and F16C.
    Avx512,
}

impl Isa {
    /// Whether `mul_add` is one hardware instruction here (else it would be a slow libm call).
    #[inline(always)]
    pub fn has_fma(self) -> bool {
        match self {
            Isa::Baseline => cfg!(any(target_feature = "fma", target_arch = "aarch64")),
            Isa::Avx2 | Isa::Avx512 => true,
        }
    }

    /// `a * b + c`: fused (one rounding) where the ISA has FMA, else a multiply and an add.
    ///
    /// Inlined into a dispatched loop this is one FMA instruction. Should it end up in code
    /// compiled for the baseline, it calls a small FMA function instead of falling back to the
    /// (very slow) software `fmaf`.
    #[inline(always)]
    pub fn mul_add(self, a: f32, b: f32, c: f32) -> f32 {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: these variants are only handed out when the CPU has FMA.
            Isa::Avx2 | Isa::Avx512 => unsafe { fma_x86(a, b, c) },
            _ if self.has_fma() => a.mul_add(b, c),
            _ => a * b + c,
        }
    }
}

/// `a * b + c` with one rounding, compiled with FMA (inlines into AVX2 / AVX-512 code).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
#[inline]
unsafe fn fma_x86(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}

/// Returns `f` unchanged: lets a closure bound with `let` carry `#[inline(always)]`, which Rust
/// accepts on closures in argument position only. Use it for closures that hold loops and run
/// inside [`dispatch`], so that they are compiled with the dispatched instruction set.
#[inline(always)]
pub fn inline_always<F>(f: F) -> F {
    f
}

/// The best [`Isa`] of this CPU (detected once; `is_x86_feature_detected!` caches).
#[inline]
pub fn best_isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return Isa::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c") {
            return Isa::Avx2;
        }
    }
    Isa::Baseline
}

/// Whether this CPU runs AVX-512 code ([`Isa::Avx512`]) with the VNNI integer dot products
/// (`vpdpwssd`), which the integer quantized kernels use.
#[inline]
pub fn has_avx512_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        best_isa() == Isa::Avx512 && is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Runs `f` compiled for the best instruction set of this CPU, passing that [`Isa`].
///
/// `f` should be a loop over slices (or a whole row computation): the dispatch itself costs a
/// few loads and a call, so it belongs outside per-element code.
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce(Isa) -> R) -> R {
    match best_isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: best_isa checked that the CPU has these features.
        Isa::Avx512 => unsafe { run_avx512(f) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { run_avx2(f) },
        _ => f(Isa::Baseline),
    }
}

/// Calls `f` from a function compiled with AVX-512 (512-bit vectors), so `f` inlines there.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")]
unsafe fn run_avx512<R>(f: impl FnOnce(Isa) -> R) -> R {
    f(Isa::Avx512)
}

/// Calls `f` from a function compiled with AVX2 and FMA, so `f` inlines there.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn run_avx2<R>(f: impl FnOnce(Isa) -> R) -> R {
    f(Isa::Avx2)
}

/// The sum of the eight f32 lanes of an AVX2 register (pairs of halves, then of quarters).
///
/// # Safety
/// The CPU must have AVX (inline into code compiled with AVX2).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn hsum_avx2(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps::<1>(h, h)))
}

/// Eight bf16 values (bits) at `p` widened to f32: exact, the bits shifted into the top half.
///
/// # Safety
/// The CPU must have AVX2 (inline into code compiled with it); `p` must be valid for 8 values.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn widen8_bf16(p: *const u16) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i))))
}

/// Least bytes past a decode pass's first weight row that the pass prefetches: a few passes
/// ahead, as a pass's rows are short runs that the hardware prefetcher picks up late (each
/// pass would otherwise wait on its loads).
const PREFETCH_AHEAD: usize = 4096;

/// Asks for the `len` bytes a decode pass reads from `start` on, [`PREFETCH_AHEAD`] bytes (or
/// one pass, if longer) further on, to be brought into the cache a 64-byte line at a time. A
/// prefetch never faults, so addresses past the end of the data are harmless.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_ahead(start: *const u8, len: usize) {
    use std::arch::x86_64::*;
    let ahead = start.wrapping_add(PREFETCH_AHEAD.max(len));
    for line in (0..len).step_by(64) {
        // SAFETY: prefetching is an SSE instruction (every x86-64 CPU) and never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line) as *const i8) };
    }
}
