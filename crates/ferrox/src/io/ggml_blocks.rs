//! The tensor types of GGUF files (ggml's) and decoders for the block-quantized ones.
//!
//! Layouts (every number little-endian, `f16` an IEEE half):
//! - Q8_0, 32 elements in 34 bytes: `d: f16, q: [i8; 32]`; `x = d·q`.
//! - Q4_0, 32 in 18: `d: f16, q: [u8; 16]`; element `j` is the low nibble of `q[j]`, element
//!   `j + 16` its high nibble; `x = d·(nibble − 8)`.
//! - Q4_1, 32 in 20: `d: f16, m: f16, q: [u8; 16]` (nibbles as Q4_0); `x = d·nibble + m`.
//! - Q4_K, 256 in 144: `d, dmin: f16, scales: [u8; 12], q: [u8; 128]`. Eight sub-blocks of 32,
//!   each with a 6-bit scale and 6-bit min packed in `scales` ([`scale_min_k4`]). Each 32
//!   bytes of `q` hold two sub-blocks: low nibbles the first, high nibbles the second;
//!   `x = d·sc·nibble − dmin·m`.
//! - Q5_K, 256 in 176: as Q4_K with `qh: [u8; 32]` before `q`: bit `2i` (resp. `2i + 1`) of
//!   `qh[l]` is the fifth bit of element `l` of sub-block `2i` (resp. `2i + 1`).
//! - Q6_K, 256 in 210: `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`; two halves of
//!   128, each from 64 bytes of `ql` and 32 of `qh`: element `l + 32·s` (`s` = 0..4) takes the
//!   low (s = 0, 1) or high (s = 2, 3) nibble of `ql[l + 32·(s % 2)]` and bits `2s, 2s + 1` of
//!   `qh[l]` as its top two bits; `x = d·scale[l / 16 + 2s]·(q − 32)`.

use half::{bf16, f16};

/// A ggml tensor type, as numbered in GGUF files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// float32.
    F32,
    /// float16.
    F16,
    /// bfloat16.
    Bf16,
    /// 8-bit blocks of 32 with an f16 scale.
    Q8_0,
    /// 4-bit blocks of 32 with an f16 scale (codes offset by 8).
    Q4_0,
    /// 4-bit blocks of 32 with an f16 scale and min.
    Q4_1,
    /// 4-bit super-blocks of 256 with 6-bit sub-block scales and mins.
    Q4K,
    /// 5-bit super-blocks of 256 with 6-bit sub-block scales and mins.
    Q5K,
    /// 6-bit super-blocks of 256 with 8-bit sub-block scales.
    Q6K,
    /// Another ggml type (listed, not decodable here): its number and name.
    Other(u32),
}

impl GgmlType {
    /// The type with GGUF number `id`.
    pub fn from_id(id: u32) -> GgmlType {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
            30 => GgmlType::Bf16,
            other => GgmlType::Other(other),
        }
    }

    /// Its GGUF number.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4K => 12,
            GgmlType::Q5K => 13,
            GgmlType::Q6K => 14,
            GgmlType::Bf16 => 30,
            GgmlType::Other(id) => id,
        }
    }

    /// ggml's name for it (`q4_K`, `f16`, ...).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "f32",
            GgmlType::F16 => "f16",
            GgmlType::Bf16 => "bf16",
            GgmlType::Q8_0 => "q8_0",
            GgmlType::Q4_0 => "q4_0",
            GgmlType::Q4_1 => "q4_1",
            GgmlType::Q4K => "q4_K",
            GgmlType::Q5K => "q5_K",
            GgmlType::Q6K => "q6_K",
            GgmlType::Other(id) => other_layout(id).map_or("unknown", |l| l.0),
        }
    }

    /// (elements, bytes) of one block; `None` for a type of unknown layout.
    pub fn block(self) -> Option<(usize, usize)> {
        Some(match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::Bf16 => (1, 2),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q4K => (256, 144),
            GgmlType::Q5K => (256, 176),
            GgmlType::Q6K => (256, 210),
            GgmlType::Other(id) => {
                let (_, e, b) = other_layout(id)?;
                (e, b)
            }
        })
    }

    /// Whether ferrox decodes this type.
    pub fn is_supported(self) -> bool {
        !matches!(self, GgmlType::Other(_))
    }
}

/// Name, elements and bytes per block of the ggml types ferrox lists but does not decode.
fn other_layout(id: u32) -> Option<(&'static str, usize, usize)> {
    Some(match id {
        6 => ("q5_0", 32, 22),
        7 => ("q5_1", 32, 24),
        9 => ("q8_1", 32, 36),
        10 => ("q2_K", 256, 84),
        11 => ("q3_K", 256, 110),
        15 => ("q8_K", 256, 292),
        16 => ("iq2_xxs", 256, 66),
        17 => ("iq2_xs", 256, 74),
        18 => ("iq3_xxs", 256, 98),
        19 => ("iq1_s", 256, 50),
        20 => ("iq4_nl", 32, 18),
        21 => ("iq3_s", 256, 110),
        22 => ("iq2_s", 256, 82),
        23 => ("iq4_xs", 256, 136),
        24 => ("i8", 1, 1),
        25 => ("i16", 1, 2),
        26 => ("i32", 1, 4),
        27 => ("i64", 1, 8),
        28 => ("f64", 1, 8),
        29 => ("iq1_m", 256, 56),
        _ => return None,
    })
}

#[inline(always)]
fn half_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// The 6-bit scale and min of sub-block `j` (0..8) from the 12 packed bytes `q`: the first
/// four in the low six bits of bytes 0..4 (scales) and 4..8 (mins); the last four from the
/// nibbles of bytes 8..12 with the top two bits of bytes 0..8 above them.
#[inline(always)]
pub fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    let (sc, m) = if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    };
    (sc as f32, m as f32)
}

/// Decodes one block of a supported type (`src`: its bytes) into `out` (its elements).
pub fn decode_block(t: GgmlType, src: &[u8], out: &mut [f32]) {
    match t {
        GgmlType::F32 => out[0] = f32::from_le_bytes([src[0], src[1], src[2], src[3]]),
        GgmlType::F16 => out[0] = half_at(src, 0),
        GgmlType::Bf16 => out[0] = bf16::from_le_bytes([src[0], src[1]]).to_f32(),
        GgmlType::Q8_0 => {
            let d = half_at(src, 0);
            for (o, &q) in out.iter_mut().zip(&src[2..34]) {
                *o = d * (q as i8) as f32;
            }
        }
        GgmlType::Q4_0 => {
            let d = half_at(src, 0);
            for (j, &b) in src[2..18].iter().enumerate() {
                out[j] = d * ((b & 15) as i32 - 8) as f32;
                out[j + 16] = d * ((b >> 4) as i32 - 8) as f32;
            }
        }
        GgmlType::Q4_1 => {
            let (d, m) = (half_at(src, 0), half_at(src, 2));
            for (j, &b) in src[4..20].iter().enumerate() {
                out[j] = d * (b & 15) as f32 + m;
                out[j + 16] = d * (b >> 4) as f32 + m;
            }
        }
        GgmlType::Q4K | GgmlType::Q5K => {
            let (d, dmin) = (half_at(src, 0), half_at(src, 2));
            let scales = &src[4..16];
            let (qh, q) = if t == GgmlType::Q4K { (None, &src[16..144]) } else { (Some(&src[16..48]), &src[48..176]) };
            for (c, (chunk, o)) in q.chunks_exact(32).zip(out.chunks_exact_mut(64)).enumerate() {
                let (sc1, m1) = scale_min_k4(2 * c, scales);
                let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
                let (d1, d2, m1, m2) = (d * sc1, d * sc2, dmin * m1, dmin * m2);
                for (l, &b) in chunk.iter().enumerate() {
                    let (mut lo, mut hi) = ((b & 15) as u32, (b >> 4) as u32);
                    if let Some(qh) = qh {
                        lo |= ((qh[l] >> (2 * c)) as u32 & 1) << 4;
                        hi |= ((qh[l] >> (2 * c + 1)) as u32 & 1) << 4;
                    }
                    o[l] = d1 * lo as f32 - m1;
                    o[l + 32] = d2 * hi as f32 - m2;
                }
            }
        }
        GgmlType::Q6K => {
            let d = half_at(src, 208);
            let sc = &src[192..208];
            for half in 0..2 {
                let ql = &src[64 * half..64 * half + 64];
                let qh = &src[128 + 32 * half..128 + 32 * half + 32];
                let o = &mut out[128 * half..128 * half + 128];
                let s = &sc[8 * half..8 * half + 8];
                for l in 0..32 {
                    let q = [
                        (ql[l] & 15) | ((qh[l] & 3) << 4),
                        (ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4),
                        (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                        (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
                    ];
                    for (part, &v) in q.iter().enumerate() {
                        let scale = s[l / 16 + 2 * part] as i8 as f32;
                        o[l + 32 * part] = d * scale * (v as i32 - 32) as f32;
                    }
                }
            }
        }
        GgmlType::Other(_) => unreachable!("decode_block is only called for supported types"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_and_q8_0_blocks_decode_by_hand() {
        let mut b = vec![0u8; 18];
        b[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b[2] = 0x9F; // element 0: 15 → 3.5, element 16: 9 → 0.5
        let mut out = [0f32; 32];
        decode_block(GgmlType::Q4_0, &b, &mut out);
        assert_eq!((out[0], out[16], out[1]), (3.5, 0.5, -4.0));
        let mut b = vec![0u8; 34];
        b[..2].copy_from_slice(&f16::from_f32(2.0).to_le_bytes());
        b[2] = 0xFF; // -1
        b[33] = 100;
        decode_block(GgmlType::Q8_0, &b, &mut out);
        assert_eq!((out[0], out[31], out[1]), (-2.0, 200.0, 0.0));
    }

    #[test]
    fn k4_scales_unpack() {
        // Sub-block 5: scale from byte 9's low nibble and byte 1's top bits, min from byte 9's
        // high nibble and byte 5's top bits.
        let mut q = [0u8; 12];
        q[9] = 0xA3;
        q[1] = 0b1100_0000;
        q[5] = 0b0100_0001;
        assert_eq!(scale_min_k4(5, &q), ((3 | (3 << 4)) as f32, (10 | (1 << 4)) as f32));
        assert_eq!(scale_min_k4(1, &q), (0.0, 1.0));
    }

    #[test]
    fn type_numbers_round_trip() {
        for id in 0..40 {
            assert_eq!(GgmlType::from_id(id).id(), id);
        }
        assert_eq!(GgmlType::from_id(12).name(), "q4_K");
        assert_eq!(GgmlType::from_id(10).block(), Some((256, 84)));
        assert!(!GgmlType::from_id(10).is_supported());
    }
}
