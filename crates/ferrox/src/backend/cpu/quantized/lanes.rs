//! Explicit SIMD vectors of f32 for the quantized kernels, one implementation per instruction
//! set (AVX-512, AVX2 + FMA, portable), and the runtime dispatch that compiles a kernel for
//! each.
//!
//! A kernel is written once, generic over [`Lanes`], as a [`LanesKernel`]; [`run`] calls it
//! from a function compiled with the chosen instruction set, into which everything the kernel
//! calls inlines (every method here is `#[inline(always)]`). The portable vector is an array
//! the compiler vectorizes for the build's baseline.

use crate::backend::cpu::simd::{best_isa, Isa};

/// A vector of `N` f32 lanes and the operations the quantized kernels need.
///
/// # Safety
/// The methods read through raw pointers: `load` reads `N` f32, `bytes` and `nibbles` read `N`
/// bytes. Implementations for an instruction set must only run where the CPU has it ([`run`]
/// ensures that).
pub trait Lanes: Copy {
    /// The number of lanes.
    const N: usize;
    /// All lanes zero.
    unsafe fn zero() -> Self;
    /// All lanes `v`.
    unsafe fn splat(v: f32) -> Self;
    /// `N` f32 from `p` (unaligned).
    unsafe fn load(p: *const f32) -> Self;
    /// `a · b + c`, fused where the instruction set has FMA.
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
    /// `N` bytes from `p`, as unsigned integers converted to f32.
    unsafe fn bytes(p: *const u8) -> Self;
    /// `N` bytes from `p`: their low nibbles and their high nibbles, as f32.
    unsafe fn nibbles(p: *const u8) -> (Self, Self);
    /// `N` 4-bit codes in order (low nibble first) from the `N / 2` bytes at `p`, as f32.
    unsafe fn nibbles_in_order(p: *const u8) -> Self;
    /// Stores the lanes at `p` (unaligned).
    unsafe fn store(self, p: *mut f32);
    /// The sum of the lanes.
    unsafe fn sum(self) -> f32;
}

/// A kernel generic over the vector type, run by [`run`].
pub trait LanesKernel {
    /// What the kernel returns.
    type Out;
    /// Runs the kernel with vectors `V` (inline this into the caller: `#[inline(always)]`).
    fn run<V: Lanes>(self) -> Self::Out;
}

/// The instruction sets this CPU can run, best first (for tests that force each one).
#[cfg(test)]
pub fn available_isas() -> Vec<Isa> {
    [Isa::Avx512, Isa::Avx2, Isa::Baseline].into_iter().filter(|&i| supports(i)).collect()
}

/// Whether this CPU can run code compiled for `isa`.
fn supports(isa: Isa) -> bool {
    matches!((best_isa(), isa), (_, Isa::Baseline) | (Isa::Avx512, _) | (Isa::Avx2, Isa::Avx2))
}

/// Runs `k` with the vectors of `isa` (which the CPU must support; else the portable ones).
#[inline(always)]
pub fn run<K: LanesKernel>(isa: Isa, k: K) -> K::Out {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has these features (checked).
        Isa::Avx512 if supports(Isa::Avx512) => unsafe { x86::run_avx512(k) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 if supports(Isa::Avx2) => unsafe { x86::run_avx2(k) },
        _ => k.run::<Portable>(),
    }
}

/// The portable vector: eight lanes in an array; loops the compiler vectorizes for the
/// baseline target.
#[derive(Clone, Copy)]
pub struct Portable([f32; 8]);

impl Lanes for Portable {
    const N: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Portable([0.0; 8])
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Portable([v; 8])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Portable(std::ptr::read_unaligned(p as *const [f32; 8]))
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        Portable(std::array::from_fn(|i| a.0[i] * b.0[i] + c.0[i]))
    }
    #[inline(always)]
    unsafe fn bytes(p: *const u8) -> Self {
        let b = std::ptr::read_unaligned(p as *const [u8; 8]);
        Portable(b.map(|v| v as f32))
    }
    #[inline(always)]
    unsafe fn nibbles(p: *const u8) -> (Self, Self) {
        let b = std::ptr::read_unaligned(p as *const [u8; 8]);
        (Portable(b.map(|v| (v & 15) as f32)), Portable(b.map(|v| (v >> 4) as f32)))
    }
    #[inline(always)]
    unsafe fn nibbles_in_order(p: *const u8) -> Self {
        let b = std::ptr::read_unaligned(p as *const [u8; 4]);
        Portable(std::array::from_fn(|i| ((b[i / 2] >> (4 * (i % 2))) & 15) as f32))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        std::ptr::write_unaligned(p as *mut [f32; 8], self.0)
    }
    #[inline(always)]
    unsafe fn sum(self) -> f32 {
        let v = self.0;
        ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]))
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Lanes, LanesKernel};

    /// Runs `k` compiled with AVX-512 (the features `simd::best_isa` checks).
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")]
    pub unsafe fn run_avx512<K: LanesKernel>(k: K) -> K::Out {
        k.run::<Avx512>()
    }

    /// Runs `k` compiled with AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn run_avx2<K: LanesKernel>(k: K) -> K::Out {
        k.run::<Avx2>()
    }

    /// Sixteen lanes in a zmm register.
    #[derive(Clone, Copy)]
    pub struct Avx512(__m512);

    impl Lanes for Avx512 {
        const N: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> Self {
            Avx512(_mm512_setzero_ps())
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            Avx512(_mm512_set1_ps(v))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Avx512(_mm512_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            Avx512(_mm512_fmadd_ps(a.0, b.0, c.0))
        }
        #[inline(always)]
        unsafe fn bytes(p: *const u8) -> Self {
            Avx512(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i))))
        }
        #[inline(always)]
        unsafe fn nibbles(p: *const u8) -> (Self, Self) {
            let b = _mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i));
            let lo = _mm512_and_si512(b, _mm512_set1_epi32(15));
            let hi = _mm512_srli_epi32::<4>(b);
            (Avx512(_mm512_cvtepi32_ps(lo)), Avx512(_mm512_cvtepi32_ps(hi)))
        }
        #[inline(always)]
        unsafe fn nibbles_in_order(p: *const u8) -> Self {
            // Each byte twice, then shifted by 0 or 4 in alternate lanes.
            let b = _mm_loadl_epi64(p as *const __m128i);
            let d = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(b, b));
            let shift = _mm512_set_epi32(4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0);
            let v = _mm512_and_si512(_mm512_srlv_epi32(d, shift), _mm512_set1_epi32(15));
            Avx512(_mm512_cvtepi32_ps(v))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm512_storeu_ps(p, self.0)
        }
        #[inline(always)]
        unsafe fn sum(self) -> f32 {
            _mm512_reduce_add_ps(self.0)
        }
    }

    /// Eight lanes in a ymm register.
    #[derive(Clone, Copy)]
    pub struct Avx2(__m256);

    impl Lanes for Avx2 {
        const N: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            Avx2(_mm256_setzero_ps())
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            Avx2(_mm256_set1_ps(v))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Avx2(_mm256_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            Avx2(_mm256_fmadd_ps(a.0, b.0, c.0))
        }
        #[inline(always)]
        unsafe fn bytes(p: *const u8) -> Self {
            Avx2(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i))))
        }
        #[inline(always)]
        unsafe fn nibbles(p: *const u8) -> (Self, Self) {
            let b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i));
            let lo = _mm256_and_si256(b, _mm256_set1_epi32(15));
            let hi = _mm256_srli_epi32::<4>(b);
            (Avx2(_mm256_cvtepi32_ps(lo)), Avx2(_mm256_cvtepi32_ps(hi)))
        }
        #[inline(always)]
        unsafe fn nibbles_in_order(p: *const u8) -> Self {
            let b = _mm_cvtsi32_si128(std::ptr::read_unaligned(p as *const i32));
            let d = _mm256_cvtepu8_epi32(_mm_unpacklo_epi8(b, b));
            let shift = _mm256_set_epi32(4, 0, 4, 0, 4, 0, 4, 0);
            let v = _mm256_and_si256(_mm256_srlv_epi32(d, shift), _mm256_set1_epi32(15));
            Avx2(_mm256_cvtepi32_ps(v))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm256_storeu_ps(p, self.0)
        }
        #[inline(always)]
        unsafe fn sum(self) -> f32 {
            crate::backend::cpu::simd::hsum_avx2(self.0)
        }
    }
}
