//! Random bits (`Op::RandomBits`): the CPU's counter-based Threefry-2x32 generator on the
//! device (random.cu), bit for bit — so uniform, normal and the rest, built from these bits
//! by ordinary ops, give the CPU's values for the same key.

use crate::array::{Array, Data};
use crate::dtype::Dtype;
use crate::error::Result;

use super::alloc::{alloc_out, device_ptr};
use super::compile::COMMON;
use super::context::Gpu;
use super::layout::{launch, Arg, Layout};

const SRC: &str = include_str!("kernels/random.cu");
const BLOCK: u32 = 256;

/// Fills an output of `shape` and `dtype` (uint8, uint16 or uint32) from `keys` (uint32
/// `[..., 2]`, one block of the output per key). `None` for what the CPU reports as an error.
pub(crate) fn random_bits(g: &Gpu, keys: &Array, shape: &[usize], dtype: Dtype) -> Result<Option<Data>> {
    let n: usize = shape.iter().product();
    let num_keys = keys.size() / 2;
    if keys.dtype() != Dtype::U32
        || keys.shape().last() != Some(&2)
        || !matches!(dtype, Dtype::U8 | Dtype::U16 | Dtype::U32)
        || (n > 0 && (num_keys == 0 || !n.is_multiple_of(num_keys)))
    {
        return Ok(None);
    }
    let (out, po) = alloc_out(shape, dtype)?;
    if n == 0 {
        return Ok(Some(out));
    }
    let dk = keys.data()?;
    let Some(lk) = Layout::new(keys.shape(), std::slice::from_ref(&dk.strides)) else { return Ok(None) };
    let pk = device_ptr(g, &dk, Dtype::U32)?;
    let bpk = n * dtype.size() / num_keys;
    let words = bpk.div_ceil(4);
    let f = g.function("random", "random_bits", || format!("{COMMON}\n{SRC}\n"))?;
    let args = [Arg::U64(po), Arg::U64(pk), Arg::Layout(&lk), Arg::I64(num_keys as i64), Arg::I64(bpk as i64)];
    launch(g, &f, g.grid(num_keys * (words - words / 2), BLOCK), BLOCK, &args)?;
    Ok(Some(out))
}
