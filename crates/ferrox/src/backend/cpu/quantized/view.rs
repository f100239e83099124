//! A stored quantized matrix as the SIMD kernels read it: the packed rows as bytes, scales
//! and biases of any stored type, and how a group's codes reach the registers ([`Kind`]).

use half::{bf16, f16};

use super::formats::{e8m0_to_f32, fp8_table, FP4_VALUES};
use super::qmm::{QMat, Scale};
use crate::backend::cpu::for_feature_ranges;
use crate::backend::cpu::iter::MutPtr;
use crate::primitives::QuantMode;

/// Largest group size (sizes per-row scratch buffers).
pub const MAX_GROUP: usize = 128;

/// Scales (or biases) of any stored type, read as f32 one at a time.
#[derive(Clone, Copy)]
pub enum ScaleSlice<'a> {
    /// float32 (affine).
    F32(&'a [f32]),
    /// float16 (affine).
    F16(&'a [f16]),
    /// bfloat16 (affine).
    Bf16(&'a [bf16]),
    /// E8M0 power-of-two codes (mxfp4, mxfp8).
    E8m0(&'a [u8]),
    /// FP8 E4M3 codes (nvfp4).
    E4m3(&'a [u8]),
}

impl ScaleSlice<'_> {
    /// Element `i` as f32.
    #[inline(always)]
    pub fn get(&self, i: usize) -> f32 {
        match self {
            ScaleSlice::F32(s) => s[i],
            ScaleSlice::F16(s) => s[i].to_f32(),
            ScaleSlice::Bf16(s) => s[i].to_f32(),
            ScaleSlice::E8m0(s) => e8m0_to_f32(s[i]),
            ScaleSlice::E4m3(s) => fp8_table()[s[i] as usize],
        }
    }

    /// Elements `start..start + out.len()` as f32, into `out` (one dispatch on the stored
    /// type for the whole run, so the conversion loop vectorizes).
    #[inline(always)]
    pub fn read(&self, start: usize, out: &mut [f32]) {
        let end = start + out.len();
        match self {
            ScaleSlice::F32(s) => out.copy_from_slice(&s[start..end]),
            ScaleSlice::F16(s) => out.iter_mut().zip(&s[start..end]).for_each(|(o, v)| *o = v.to_f32()),
            // bf16 → f32 is exact as a shift of the bits (NaNs stay NaNs).
            ScaleSlice::Bf16(s) => {
                out.iter_mut().zip(&s[start..end]).for_each(|(o, v)| *o = f32::from_bits((v.to_bits() as u32) << 16))
            }
            ScaleSlice::E8m0(s) => out.iter_mut().zip(&s[start..end]).for_each(|(o, &v)| *o = e8m0_to_f32(v)),
            ScaleSlice::E4m3(s) => {
                let table = fp8_table();
                out.iter_mut().zip(&s[start..end]).for_each(|(o, &v)| *o = table[v as usize])
            }
        }
    }
}

/// How a group's codes reach the registers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// Affine 4-bit: two codes a byte, split in registers.
    Nibbles,
    /// Affine 8-bit: one code a byte.
    Bytes,
    /// Affine 1, 2, 3, 5 or 6 bits: unpacked into bytes per group.
    Codes(usize),
    /// mxfp4, nvfp4, mxfp8: values decoded (unscaled) into f32 per group.
    Floats,
}

/// A stored matrix as the kernel reads it: bytes of the packed rows, typed scales and biases.
#[derive(Clone, Copy)]
pub struct View<'a> {
    /// The packed rows, row-major.
    pub bytes: &'a [u8],
    /// One scale per group, row-major.
    pub scales: ScaleSlice<'a>,
    /// One bias per group (affine mode).
    pub biases: Option<ScaleSlice<'a>>,
    /// Rows of the matrix.
    pub rows: usize,
    /// Columns (elements per row, along which it is packed).
    pub cols: usize,
    /// Elements per group.
    pub group_size: usize,
    /// Bits per element.
    pub bits: usize,
    /// The quantization mode.
    pub mode: QuantMode,
    /// How groups are read.
    pub kind: Kind,
}

impl View<'_> {
    /// The view of a typed stored matrix.
    pub fn of<'a, S: Scale>(q: &QMat<'a, S>) -> View<'a> {
        let p = q.p;
        let kind = match (p.mode, p.bits) {
            (QuantMode::Affine, 4) => Kind::Nibbles,
            (QuantMode::Affine, 8) => Kind::Bytes,
            (QuantMode::Affine, b) => Kind::Codes(b),
            _ => Kind::Floats,
        };
        View {
            bytes: bytemuck::cast_slice(q.words),
            scales: S::slice(q.scales),
            biases: q.biases.map(S::slice),
            rows: q.rows,
            cols: q.cols,
            group_size: p.group_size,
            bits: p.bits,
            mode: p.mode,
            kind,
        }
    }

    /// Bytes of one packed row.
    pub fn bytes_per_row(&self) -> usize {
        self.cols * self.bits / 8
    }

    /// Groups in one row.
    pub fn groups(&self) -> usize {
        self.cols / self.group_size
    }

    /// The codes of row `j` of an affine matrix, one a byte: the packed bytes themselves at 8
    /// bits, else unpacked into `buf` (`cols` bytes).
    pub fn row_codes<'b>(&'b self, j: usize, buf: &'b mut [u8]) -> &'b [u8] {
        let bpr = self.bytes_per_row();
        let row = &self.bytes[j * bpr..(j + 1) * bpr];
        match self.kind {
            Kind::Bytes => row,
            Kind::Nibbles => {
                for (pair, &b) in buf.chunks_exact_mut(2).zip(row) {
                    pair[0] = b & 15;
                    pair[1] = b >> 4;
                }
                buf
            }
            Kind::Codes(b) => {
                unpack_bytes(b, row, buf);
                buf
            }
            Kind::Floats => unreachable!("affine matrices only"),
        }
    }
}

/// Unpacks the `out.len()` codes of `bits` bits (1, 2, 3, 5 or 6) of `src` (a whole number of
/// 8-code runs, each `bits` bytes) into bytes.
#[inline(always)]
pub fn unpack_bytes(bits: usize, src: &[u8], out: &mut [u8]) {
    #[inline(always)]
    fn run<const B: usize>(src: &[u8], out: &mut [u8]) {
        let mask = (1u64 << B) - 1;
        for (o, s) in out.chunks_exact_mut(8).zip(src.chunks_exact(B)) {
            let mut w = [0u8; 8];
            w[..B].copy_from_slice(s);
            let v = u64::from_le_bytes(w);
            for (i, c) in o.iter_mut().enumerate() {
                *c = ((v >> (i * B)) & mask) as u8;
            }
        }
    }
    match bits {
        1 => run::<1>(src, out),
        2 => run::<2>(src, out),
        3 => run::<3>(src, out),
        5 => run::<5>(src, out),
        _ => run::<6>(src, out),
    }
}

/// Decodes one group of floating-point codes (`src`: its bytes) into unscaled values.
#[inline(always)]
pub fn decode_floats(mode: QuantMode, src: &[u8], out: &mut [f32]) {
    if mode == QuantMode::Mxfp8 {
        let t = fp8_table();
        for (o, &c) in out.iter_mut().zip(src) {
            *o = t[c as usize];
        }
    } else {
        for (pair, &b) in out.chunks_exact_mut(2).zip(src) {
            pair[0] = FP4_VALUES[(b & 15) as usize];
            pair[1] = FP4_VALUES[(b >> 4) as usize];
        }
    }
}

/// What every range of output features of a decode kernel shares: the matrix, x as the kernel
/// prepared it (`P`), the rows of x, and the output `[r, v.rows]`.
pub struct DecodeTask<'a, P> {
    /// The packed matrix.
    pub v: &'a View<'a>,
    /// x in the kernel's own layout.
    pub prep: &'a P,
    /// Rows of x.
    pub r: usize,
    /// The output.
    pub y: MutPtr<f32>,
}

/// Runs `run` over ranges of `v`'s output features split across threads
/// ([`for_feature_ranges`]), each range with the task they share; `y` is `[r, v.rows]`.
pub fn for_decode_ranges<P: Sync>(
    v: &View,
    prep: &P,
    r: usize,
    y: &mut [f32],
    run: impl Fn(&DecodeTask<P>, usize, usize) + Sync,
) {
    let y = MutPtr(y.as_mut_ptr());
    for_feature_ranges(v.rows, v.cols, |j0, j1| run(&DecodeTask { v, prep, r, y }, j0, j1));
}
