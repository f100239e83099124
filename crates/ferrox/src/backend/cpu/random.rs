//! Counter-based random bits: the Threefry-2x32 block cipher (20 rounds), laid out as MLX's
//! `RandomBits` does so that a key gives MLX's numbers bit for bit.
//!
//! The keys input has shape `[..., 2]` (one key per leading index, usually a single key of
//! shape `[2]`); the output has the keys' leading shape followed by the sample shape. Each key
//! fills its own block of `bytes_per_key` bytes. Viewing that block as `W` little-endian
//! 32-bit words (the last one possibly cut short), with `h = W / 2` and `c = W - h`:
//!
//! * for `i < h`, the pair `threefry(key, (i, i + c))` gives words `i` and `i + c`;
//! * if `W` is odd, word `h` is the first half of `threefry(key, (h, 0))`.
//!
//! Every word is a pure function of the key and its position, so the fill is parallel.

use rayon::prelude::*;

use crate::array::{Array, Data};
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::memory::Buffer;

/// Rotation distances of the even and odd groups of four rounds.
const ROTATIONS: [[u32; 4]; 2] = [[13, 15, 26, 6], [17, 29, 16, 24]];
/// Threefry's key-schedule parity constant.
const PARITY: u32 = 0x1BD1_1BDA;
/// Below this many word pairs per key, one thread fills the key's block.
const PAR_PAIRS: usize = 1 << 13;

/// Threefry-2x32 with 20 rounds: encrypts the counter `ctr` under `key`.
#[inline]
pub fn threefry2x32(key: [u32; 2], ctr: [u32; 2]) -> [u32; 2] {
    let ks = [key[0], key[1], key[0] ^ key[1] ^ PARITY];
    let mut x0 = ctr[0].wrapping_add(ks[0]);
    let mut x1 = ctr[1].wrapping_add(ks[1]);
    for block in 0..5usize {
        for &r in &ROTATIONS[block % 2] {
            x0 = x0.wrapping_add(x1);
            x1 = x1.rotate_left(r) ^ x0;
        }
        // Key injection after every four rounds.
        x0 = x0.wrapping_add(ks[(block + 1) % 3]);
        x1 = x1.wrapping_add(ks[(block + 2) % 3]).wrapping_add(block as u32 + 1);
    }
    [x0, x1]
}

/// Fills `out` (one key's block, any length) with the bit stream of `key`.
pub fn fill_bits(key: [u32; 2], out: &mut [u8]) {
    let nbytes = out.len();
    if nbytes == 0 {
        return;
    }
    let words = nbytes.div_ceil(4);
    let h = words / 2;
    let c = words - h;
    if h == 0 {
        // A single (possibly partial) word.
        let w = threefry2x32(key, [0, 0])[0].to_le_bytes();
        out.copy_from_slice(&w[..nbytes]);
        return;
    }
    // h >= 1 means the first c words are whole: lo = words [0, h), mid = word h when W is odd,
    // hi = words [c, W) with the last one possibly partial.
    let (lo, rest) = out.split_at_mut(4 * h);
    let (mid, hi) = rest.split_at_mut(4 * (c - h));
    if !mid.is_empty() {
        mid.copy_from_slice(&threefry2x32(key, [h as u32, 0])[0].to_le_bytes());
    }
    let fill = |first: usize, lo: &mut [u8], hi: &mut [u8]| {
        for (j, (l, hw)) in lo.chunks_exact_mut(4).zip(hi.chunks_mut(4)).enumerate() {
            let i = first + j;
            let [a, b] = threefry2x32(key, [i as u32, (i + c) as u32]);
            l.copy_from_slice(&a.to_le_bytes());
            let n = hw.len();
            hw.copy_from_slice(&b.to_le_bytes()[..n]);
        }
    };
    if h < PAR_PAIRS {
        fill(0, lo, hi);
    } else {
        // lo holds exactly 4h bytes and hi between 4h - 3 and 4h, so both split into the
        // same number of chunks, pair for pair.
        lo.par_chunks_mut(4 * PAR_PAIRS)
            .zip(hi.par_chunks_mut(4 * PAR_PAIRS))
            .enumerate()
            .for_each(|(k, (l, hw))| fill(k * PAR_PAIRS, l, hw));
    }
}

/// Element offset of flat (row-major) index `idx` in a strided view.
fn elem_loc(mut idx: usize, shape: &[usize], strides: &[isize]) -> isize {
    let mut loc = 0isize;
    for (&n, &s) in shape.iter().zip(strides).rev() {
        loc += (idx % n) as isize * s;
        idx /= n;
    }
    loc
}

/// The `RandomBits` kernel: `keys` (uint32 `[..., 2]`) to an output of `shape` and `dtype`
/// (uint8, uint16 or uint32: 1, 2 or 4 bytes per element).
pub fn random_bits(keys: &Array, shape: &[usize], dtype: Dtype) -> Result<Data> {
    if keys.dtype() != Dtype::U32 || keys.shape().last() != Some(&2) {
        return Err(Error::invalid(
            "random_bits",
            format!("keys must be uint32 of shape [..., 2], got {} {:?}", keys.dtype(), keys.shape()),
        ));
    }
    if !matches!(dtype, Dtype::U8 | Dtype::U16 | Dtype::U32) {
        return Err(Error::dtype("random_bits", "output must be uint8, uint16 or uint32", dtype));
    }
    let n: usize = shape.iter().product();
    let nbytes = n * dtype.size();
    let mut buf = Buffer::alloc(nbytes)?;
    let num_keys = keys.size() / 2;
    if nbytes > 0 {
        if num_keys == 0 || !n.is_multiple_of(num_keys) {
            return Err(Error::shape(
                "random_bits",
                format!("{num_keys} keys cannot fill an output of shape {shape:?}"),
            ));
        }
        let kd = keys.data()?;
        let kptr = kd.ptr::<u32>();
        let read = |i: usize| {
            // SAFETY: i < keys.size() and elem_loc stays inside the keys' own view.
            unsafe { *kptr.offset(elem_loc(i, keys.shape(), &kd.strides)) }
        };
        let key_list: Vec<[u32; 2]> = (0..num_keys).map(|k| [read(2 * k), read(2 * k + 1)]).collect();
        let bytes_per_key = nbytes / num_keys;
        let out = buf.as_bytes_mut();
        if num_keys == 1 {
            fill_bits(key_list[0], out);
        } else {
            out.par_chunks_mut(bytes_per_key).zip(key_list.par_iter()).for_each(|(o, &k)| fill_bits(k, o));
        }
    }
    Ok(Data::contiguous(buf, shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threefry_known_answer() {
        // Random123's known-answer vectors for threefry2x32_20.
        assert_eq!(threefry2x32([0, 0], [0, 0]), [0x6b20_0159, 0x99ba_4efe]);
        assert_eq!(threefry2x32([u32::MAX, u32::MAX], [u32::MAX, u32::MAX]), [0x1cb9_96fc, 0xbb00_2be7]);
        assert_eq!(threefry2x32([0x1319_8a2e, 0x0370_7344], [0x243f_6a88, 0x85a3_08d3]), [0xc492_3a9c, 0x483d_f7a0]);
    }
}
