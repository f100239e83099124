//! The decode kernel: a few rows of x (≤ [`QMV_MAX_ROWS`]) times the transposed stored
//! matrix, reading the packed words directly, at close to the memory bandwidth.
//!
//! Each output feature is a dot product of x with one packed row. Groups are unpacked into
//! SIMD registers ([`Lanes`]) and dotted with x as integer codes; the group's scale and bias
//! are applied once per group through the precomputed group sums of x:
//! `y = Σ_g s_g·(x_g·q_g) + b_g·Σx_g`. Several output features run per pass (independent
//! accumulator chains, x loaded once for all), and threads take contiguous ranges of output
//! features. 4-bit words are split into low and high nibbles without shuffles: x is reordered
//! per 32-element block (even elements, then odd) to meet them. 8-bit codes are read as bytes;
//! other widths are unpacked into bytes a group at a time; the floating-point modes decode a
//! group's values (unscaled) into a small buffer first.

use super::lanes::{self, Lanes, LanesKernel};
use super::qmm::{QMat, Scale};
use super::view::{decode_floats, unpack_bytes, Kind, View, MAX_GROUP};
use crate::backend::cpu::for_feature_ranges;
use crate::backend::cpu::iter::MutPtr;
use crate::backend::cpu::simd::Isa;
use crate::primitives::QuantMode;

/// Up to this many rows of x use the decode kernel.
pub const QMV_MAX_ROWS: usize = 4;

/// x prepared for a kernel pass: reordered for nibbles if needed, with its group sums.
struct Prepared<'a> {
    x: std::borrow::Cow<'a, [f32]>,
    /// Σ over each group of each row of x ([r, groups]), for the bias term (affine).
    xsum: Vec<f32>,
}

fn prepare<'a>(x: &'a [f32], v: &View) -> Prepared<'a> {
    let gs = v.group_size;
    let xsum = if v.mode == QuantMode::Affine { x.chunks(gs).map(|c| c.iter().sum()).collect() } else { Vec::new() };
    let x = if v.kind == Kind::Nibbles {
        let mut o = vec![0f32; x.len()];
        for (d, s) in o.chunks_exact_mut(32).zip(x.chunks_exact(32)) {
            for j in 0..16 {
                d[j] = s[2 * j];
                d[16 + j] = s[2 * j + 1];
            }
        }
        std::borrow::Cow::Owned(o)
    } else {
        std::borrow::Cow::Borrowed(x)
    };
    Prepared { x, xsum }
}

/// `y = x @ Wᵀ` for the `r` (≤ [`QMV_MAX_ROWS`]) rows of `x` ([r, cols] f32), `y` [r, rows],
/// with the vectors of `isa`.
pub fn qmv<S: Scale>(isa: Isa, x: &[f32], r: usize, q: &QMat<S>, y: &mut [f32]) {
    debug_assert!((1..=QMV_MAX_ROWS).contains(&r));
    let v = View::of(q);
    let prep = prepare(x, &v);
    let n = v.rows;
    let yp = MutPtr(y.as_mut_ptr());
    let task = |j0: usize, j1: usize| {
        lanes::run(isa, Rows { v: &v, x: &prep.x, xsum: &prep.xsum, r, j0, j1, y: yp });
    };
    for_feature_ranges(n, v.cols, task);
}

/// One thread's work: output features `j0..j1` for all rows of x.
struct Rows<'a> {
    v: &'a View<'a>,
    x: &'a [f32],
    xsum: &'a [f32],
    r: usize,
    j0: usize,
    j1: usize,
    y: MutPtr<f32>,
}

impl LanesKernel for Rows<'_> {
    type Out = ();
    #[inline(always)]
    fn run<V: Lanes>(self) {
        // Output features per pass: enough independent accumulator chains to hide the FMA
        // latency, few enough to stay in registers.
        match self.r {
            1 => rows::<V, 1, 4>(&self),
            2 => rows::<V, 2, 2>(&self),
            3 => rows::<V, 3, 1>(&self),
            _ => rows::<V, 4, 1>(&self),
        }
    }
}

/// Scratch of one task: codes or values of the kinds decoded a group at a time, and the
/// scales and biases of the rows in flight as f32.
struct Scratch {
    codes: Vec<u8>,
    floats: Vec<f32>,
    scales: Vec<f32>,
    biases: Vec<f32>,
}

#[inline(always)]
fn rows<V: Lanes, const R: usize, const NR: usize>(t: &Rows) {
    let groups = t.v.groups();
    let mut scratch = Scratch {
        codes: if matches!(t.v.kind, Kind::Codes(_)) { vec![0; NR * MAX_GROUP] } else { Vec::new() },
        floats: if t.v.kind == Kind::Floats { vec![0.0; NR * MAX_GROUP] } else { Vec::new() },
        scales: vec![0.0; NR * groups],
        biases: vec![0.0; if t.v.biases.is_some() { NR * groups } else { 0 }],
    };
    // One loop per kind, so the group loop carries no dispatch on it.
    macro_rules! with_dot {
        ($dot:ident, $W:ty) => {
            rows_of::<V, R, NR, $W>(
                t,
                &mut scratch,
                #[inline(always)]
                |w, x, gs, acc| unsafe { $dot::<V, R, NR>(w, x, gs, acc) },
                #[inline(always)]
                |w, x, gs, acc| unsafe { $dot::<V, R, 1>(w, x, gs, acc) },
            )
        };
    }
    match t.v.kind {
        Kind::Nibbles => with_dot!(dot_nibbles, u8),
        Kind::Bytes | Kind::Codes(_) => with_dot!(dot_bytes, u8),
        Kind::Floats => with_dot!(dot_floats, f32),
    }
}

#[inline(always)]
fn rows_of<V: Lanes, const R: usize, const NR: usize, W>(
    t: &Rows,
    scratch: &mut Scratch,
    dot: impl Fn([*const W; NR], [*const f32; R], usize, &mut [[V; R]; NR]),
    dot1: impl Fn([*const W; 1], [*const f32; R], usize, &mut [[V; R]; 1]),
) {
    let mut j = t.j0;
    while j + NR <= t.j1 {
        block::<V, R, NR, W>(t, j, scratch, &dot);
        j += NR;
    }
    while j < t.j1 {
        block::<V, R, 1, W>(t, j, scratch, &dot1);
        j += 1;
    }
}

/// Output features `j..j + NR` for the `R` rows of x.
#[inline(always)]
fn block<V: Lanes, const R: usize, const NR: usize, W>(
    t: &Rows,
    j: usize,
    scratch: &mut Scratch,
    dot: &impl Fn([*const W; NR], [*const f32; R], usize, &mut [[V; R]; NR]),
) {
    let v = t.v;
    let (k, gs, groups, bpr) = (v.cols, v.group_size, v.groups(), v.bytes_per_row());
    let bpg = gs * v.bits / 8;
    let row_bytes: [&[u8]; NR] = std::array::from_fn(|i| &v.bytes[(j + i) * bpr..(j + i + 1) * bpr]);
    let scales = &mut scratch.scales[..NR * groups];
    v.scales.read(j * groups, scales);
    if let Some(b) = v.biases {
        b.read(j * groups, &mut scratch.biases[..NR * groups]);
    }
    // SAFETY: every pointer below stays inside its row of the matrix, its row of x (k
    // elements), or its scratch row (MAX_GROUP ≥ gs elements); `Lanes` reads N ≤ 16 elements
    // at offsets that are multiples of N below the group's end (groups hold multiples of 16
    // elements, of 32 for the integer kinds).
    unsafe {
        let mut tot = [[V::zero(); R]; NR];
        for g in 0..groups {
            let mut acc = [[V::zero(); R]; NR];
            let xs: [*const f32; R] = std::array::from_fn(|m| t.x.as_ptr().add(m * k + g * gs));
            let w: [*const W; NR] = match v.kind {
                Kind::Nibbles | Kind::Bytes => std::array::from_fn(|i| row_bytes[i].as_ptr().add(g * bpg) as *const W),
                Kind::Codes(bits) => {
                    for (i, rb) in row_bytes.iter().enumerate() {
                        let out = &mut scratch.codes[i * MAX_GROUP..i * MAX_GROUP + gs];
                        unpack_bytes(bits, &rb[g * bpg..(g + 1) * bpg], out);
                    }
                    std::array::from_fn(|i| scratch.codes.as_ptr().add(i * MAX_GROUP) as *const W)
                }
                Kind::Floats => {
                    for (i, rb) in row_bytes.iter().enumerate() {
                        let out = &mut scratch.floats[i * MAX_GROUP..i * MAX_GROUP + gs];
                        decode_floats(v.mode, &rb[g * bpg..(g + 1) * bpg], out);
                    }
                    std::array::from_fn(|i| scratch.floats.as_ptr().add(i * MAX_GROUP) as *const W)
                }
            };
            dot(w, xs, gs, &mut acc);
            for i in 0..NR {
                let s = V::splat(*scales.get_unchecked(i * groups + g));
                for m in 0..R {
                    tot[i][m] = V::fma(s, acc[i][m], tot[i][m]);
                }
            }
        }
        let n = v.rows;
        for (i, row) in tot.iter().enumerate() {
            for (m, lanes) in row.iter().enumerate() {
                // The bias term Σ_g b_g · Σx_g, once per row.
                let bsum = if v.biases.is_some() {
                    let b = &scratch.biases[i * groups..(i + 1) * groups];
                    b.iter().zip(&t.xsum[m * groups..(m + 1) * groups]).map(|(b, x)| b * x).sum()
                } else {
                    0.0
                };
                *t.y.get().add(m * n + j + i) = lanes.sum() + bsum;
            }
        }
    }
}

/// `acc[i][m] += x_m · q_i` over one group of 4-bit codes (`w[i]`: the group's bytes; x
/// reordered per 32-element block, even elements then odd).
#[inline(always)]
unsafe fn dot_nibbles<V: Lanes, const R: usize, const NR: usize>(
    w: [*const u8; NR],
    x: [*const f32; R],
    gs: usize,
    acc: &mut [[V; R]; NR],
) {
    for blk in 0..gs / 32 {
        for c in 0..16 / V::N {
            for i in 0..NR {
                let (lo, hi) = V::nibbles(w[i].add(blk * 16 + c * V::N));
                for m in 0..R {
                    let xp = x[m].add(blk * 32 + c * V::N);
                    acc[i][m] = V::fma(V::load(xp), lo, acc[i][m]);
                    acc[i][m] = V::fma(V::load(xp.add(16)), hi, acc[i][m]);
                }
            }
        }
    }
}

/// `acc[i][m] += x_m · q_i` over one group of byte codes.
#[inline(always)]
unsafe fn dot_bytes<V: Lanes, const R: usize, const NR: usize>(
    w: [*const u8; NR],
    x: [*const f32; R],
    gs: usize,
    acc: &mut [[V; R]; NR],
) {
    for e in (0..gs).step_by(V::N) {
        for i in 0..NR {
            let q = V::bytes(w[i].add(e));
            for m in 0..R {
                acc[i][m] = V::fma(V::load(x[m].add(e)), q, acc[i][m]);
            }
        }
    }
}

/// `acc[i][m] += x_m · w_i` over one group of decoded values.
#[inline(always)]
unsafe fn dot_floats<V: Lanes, const R: usize, const NR: usize>(
    w: [*const f32; NR],
    x: [*const f32; R],
    gs: usize,
    acc: &mut [[V; R]; NR],
) {
    for e in (0..gs).step_by(V::N) {
        for i in 0..NR {
            let q = V::load(w[i].add(e));
            for m in 0..R {
                acc[i][m] = V::fma(V::load(x[m].add(e)), q, acc[i][m]);
            }
        }
    }
}
