//! Products of gathered matrices (`gather_mm`), the routing step of a mixture of experts.
//!
//! The (lhs, rhs) index pairs are grouped by rhs matrix (a counting sort, so the caller
//! need not sort), and each matrix multiplies all the rows routed to it in one product:
//! a token's matrix is never copied, and a matrix that many tokens share is read once.
//! Products are computed in f32 ([`super::matmul::f32_product`]); groups run in parallel.

use half::{bf16, f16};
use rayon::prelude::*;

use crate::array::{Array, Data};
use crate::dtype::Dtype;
use crate::element::Element;
use crate::error::{Error, Result};

use super::iter::{alloc_out, row_offsets, MutPtr, Ptr};
use super::matmul::{convert_run, f32_product, Mat, PanelScratch};
use super::simd::dispatch;

/// The (a matrix, b matrix) index pairs of a gather, in output order, bounds-checked.
pub(super) fn index_pairs(
    op: &'static str,
    lhs: &Array,
    rhs: &Array,
    a_count: usize,
    b_count: usize,
) -> Result<Vec<(usize, usize)>> {
    let (ld, rd) = (lhs.data()?, rhs.data()?);
    let strides = [ld.strides.clone(), rd.strides.clone()];
    let (lp, rp) = (Ptr(ld.ptr::<u32>()), Ptr(rd.ptr::<u32>()));
    (0..lhs.size())
        .map(|i| {
            let [lo, ro] = row_offsets::<2>(lhs.shape(), &strides, i);
            // SAFETY: offsets inside each index array's view.
            let (ai, bi) = unsafe { (lp.at(lo) as usize, rp.at(ro) as usize) };
            if ai >= a_count || bi >= b_count {
                return Err(Error::invalid(
                    op,
                    format!("index pair ({ai}, {bi}) out of range: the inputs hold {a_count} and {b_count} matrices"),
                ));
            }
            Ok((ai, bi))
        })
        .collect()
}

/// The positions of `pairs` grouped by their second index: (matrix, positions) for each
/// matrix that has any, in matrix order.
fn group_by_matrix(pairs: &[(usize, usize)], count: usize) -> Vec<(usize, Vec<usize>)> {
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); count];
    for (i, &(_, b)) in pairs.iter().enumerate() {
        groups[b].push(i);
    }
    groups.into_iter().enumerate().filter(|(_, g)| !g.is_empty()).collect()
}

/// Evaluates [`crate::Op::GatherMm`]: inputs a [..., M, K], b [..., K, N], lhs and rhs
/// (uint32, one shape); output `shape` = [index shape..., M, N].
pub fn gather_mm(inputs: &[Array], shape: &[usize], dtype: Dtype) -> Result<Data> {
    match dtype {
        Dtype::F32 => run::<f32>(inputs, shape),
        Dtype::F16 => run::<f16>(inputs, shape),
        Dtype::Bf16 => run::<bf16>(inputs, shape),
        _ => Err(Error::dtype("gather_mm", "the CPU supports float32, float16 and bfloat16", dtype)),
    }
}

fn run<T: Element<Acc = f32>>(inputs: &[Array], shape: &[usize]) -> Result<Data> {
    let (a, b) = (&inputs[0], &inputs[1]);
    let (m, k) = (a.shape()[a.ndim() - 2], a.shape()[a.ndim() - 1]);
    let n = b.shape()[b.ndim() - 1];
    let a_count = a.size() / (m * k).max(1);
    let b_count = b.size() / (k * n).max(1);
    let pairs = index_pairs("gather_mm", &inputs[2], &inputs[3], a_count, b_count)?;
    let groups = group_by_matrix(&pairs, b_count);
    let (da, db) = (a.data()?, b.data()?);
    let (pa, pb) = (Ptr(da.ptr::<T>()), Ptr(db.ptr::<T>()));
    // Strides of the matrices (flattened batch axes may be any view: offsets per matrix).
    let a_batch = &a.shape()[..a.ndim() - 2];
    let b_batch = &b.shape()[..b.ndim() - 2];
    let (a_bs, b_bs) = (vec![da.strides[..a.ndim() - 2].to_vec()], vec![db.strides[..b.ndim() - 2].to_vec()]);
    let (a_rs, a_cs) = (da.strides[a.ndim() - 2], da.strides[a.ndim() - 1]);
    let (b_rs, b_cs) = (db.strides[b.ndim() - 2], db.strides[b.ndim() - 1]);
    alloc_out::<T>(shape, |out| {
        if m * n == 0 {
            return Ok(());
        }
        let po = MutPtr(out.as_mut_ptr());
        let one_group = |(bi, positions): &(usize, Vec<usize>)| {
            let [ob] = row_offsets::<1>(b_batch, &b_bs, *bi);
            let rows = positions.len() * m;
            let a_rows: Vec<isize> = positions
                .iter()
                .flat_map(|&p| {
                    let [oa] = row_offsets::<1>(a_batch, &a_bs, pairs[p].0);
                    (0..m).map(move |r| oa + r as isize * a_rs)
                })
                .collect();
            let mut acc = vec![0f32; rows * n];
            // SAFETY: each row offset starts a row of a (K elements `a_cs` apart); b's matrix
            // `bi` is K×N at `ob` with its own strides.
            unsafe {
                let bm = Mat { ptr: Ptr(pb.get().offset(ob)), rs: b_rs, cs: b_cs };
                let fill = |k0: usize, kb: usize, panel: &mut [f32]| {
                    for (row, dst) in a_rows.iter().zip(panel.chunks_mut(kb)) {
                        dispatch(
                            #[inline(always)]
                            |_| convert_run(pa, row + k0 as isize * a_cs, a_cs, dst),
                        );
                    }
                };
                f32_product(rows, n, k, fill, bm, &mut acc, &mut PanelScratch::default());
            }
            for (&p, block) in positions.iter().zip(acc.chunks(m * n)) {
                // SAFETY: output entry p is m×n elements that no other group writes.
                let dst = unsafe { std::slice::from_raw_parts_mut(po.get().add(p * m * n), m * n) };
                for (d, &v) in dst.iter_mut().zip(block) {
                    *d = T::from_acc(v);
                }
            }
        };
        if groups.len() > 1 {
            groups.par_iter().for_each(one_group);
        } else {
            groups.iter().for_each(one_group);
        }
        Ok(())
    })
}
