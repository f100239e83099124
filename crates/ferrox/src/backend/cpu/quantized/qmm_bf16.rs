//! The prefill kernel for bfloat16 activations on CPUs with AVX512-BF16: affine matrices go
//! through the bf16 matrix product ([`bf16_gemm`]) with their integer codes as the packed
//! values (every code of up to 8 bits is exact in bf16) and their scales applied per group as
//! the group's sums complete; the biases enter afterwards as one small f32 product,
//! `y += Σx_g · b_g` over the groups. x (bf16 already) enters exactly, so this is the f32
//! product of x and the dequantized matrix, summed in another order.

use half::bf16;

use super::view::View;
use crate::backend::cpu::bf16_gemm::{self, PackB, NR};
use crate::backend::cpu::iter::{MutPtr, Ptr};
use crate::backend::cpu::matmul::{gemm_one, Mat};
use crate::primitives::QuantMode;

/// Whether the kernel computes `x @ Wᵀ` with `v` on this CPU.
pub fn applies(v: &View) -> bool {
    v.mode == QuantMode::Affine
        && v.biases.is_some()
        && v.cols > 0
        && v.cols.is_multiple_of(2)
        && bf16_gemm::cpu_supported()
}

/// `y = x @ Wᵀ` for the `r` rows of `x` ([r, cols], bf16 values held as f32), `y` [r, rows];
/// `v` must be one the kernel [`applies`] to.
pub fn qmm_bf16(x: &[f32], r: usize, v: &View, y: &mut [f32]) {
    let (k, n, gs) = (v.cols, v.rows, v.group_size);
    let groups = k / gs;
    // x holds bf16 values (widened to f32): the top half of the bits is exact.
    let xb: Vec<u16> = x.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
    bf16_gemm::gemm(&xb, k, r, &Codes { v }, y);
    // The bias term: y[i, j] += Σ_g Σx[i, g] · b[j, g].
    let xsum: Vec<f32> = x.chunks(gs).map(|g| g.iter().sum()).collect();
    let mut biases = vec![0f32; n * groups];
    if let Some(b) = v.biases {
        b.read(0, &mut biases);
    }
    let par = if r * n * groups >= 1 << 18 {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: xsum is r × groups, biases n × groups (read transposed), y r × n.
    unsafe {
        gemm_one(
            r,
            n,
            groups,
            MutPtr(y.as_mut_ptr()),
            n as isize,
            true,
            Mat { ptr: Ptr(xsum.as_ptr()), rs: groups as isize, cs: 1 },
            Mat { ptr: Ptr(biases.as_ptr()), rs: 1, cs: groups as isize },
            1.0f32,
            1.0f32,
            par,
        )
    };
}

/// The bf16 bits of the integers 0..=255.
fn code_bits() -> &'static [u16; 256] {
    use std::sync::OnceLock;
    static BITS: OnceLock<[u16; 256]> = OnceLock::new();
    BITS.get_or_init(|| std::array::from_fn(|c| bf16::from_f32(c as f32).to_bits()))
}

/// The stored matrix's codes, transposed (`b[kk, j]` = code `kk` of row `j`), as a [`PackB`].
struct Codes<'a> {
    v: &'a View<'a>,
}

impl PackB for Codes<'_> {
    fn dims(&self) -> (usize, usize) {
        (self.v.cols, self.v.rows)
    }

    fn group_size(&self) -> Option<usize> {
        Some(self.v.group_size)
    }

    fn pack(&self, n0: usize, dst: &mut [u16], scales: &mut [f32]) {
        let v = self.v;
        let (k, groups) = (v.cols, v.groups());
        let cols = NR.min(v.rows - n0);
        dst.iter_mut().for_each(|d| *d = 0);
        scales.iter_mut().for_each(|s| *s = 0.0);
        let bits = code_bits();
        let mut unpacked = vec![0u8; k];
        let mut row_scales = vec![0f32; groups];
        for j in 0..cols {
            let codes = v.row_codes(n0 + j, &mut unpacked);
            for (kk, &c) in codes.iter().enumerate() {
                dst[(kk / 2) * 2 * NR + 2 * j + kk % 2] = bits[c as usize];
            }
            v.scales.read((n0 + j) * groups, &mut row_scales);
            for (g, &s) in row_scales.iter().enumerate() {
                scales[g * NR + j] = s;
            }
        }
    }
}
