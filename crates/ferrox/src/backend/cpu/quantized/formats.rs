//! The number formats of quantized matrices: bit-packed integer codes, FP4 (E2M1), FP8 (E4M3)
//! and the E8M0 power-of-two scale, with the rounding MLX's CPU backend uses.

/// The values of the 16 FP4 (E2M1) codes: sign bit 3, then magnitude.
pub const FP4_VALUES: [f32; 16] =
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0];

/// The nearest FP4 (E2M1) code, ties to even, saturating at ±6; a result of magnitude zero
/// (and NaN) is code 0, without sign (as MLX rounds).
pub fn f32_to_fp4(x: f32) -> u8 {
    let a = x.abs();
    let mag = match a {
        a if a > 5.0 => 7,
        a if a >= 3.5 => 6,
        a if a > 2.5 => 5,
        a if a >= 1.75 => 4,
        a if a > 1.25 => 3,
        a if a >= 0.75 => 2,
        a if a > 0.25 => 1,
        _ => 0,
    };
    if mag != 0 && x.is_sign_negative() {
        mag | 8
    } else {
        mag
    }
}

/// The value of an FP8 E4M3 code (exponent bias 7, subnormals; as in MLX, the NaN codes
/// 0x7F / 0xFF read as ±480, the next step above the largest finite value 448).
pub fn fp8_to_f32(b: u8) -> f32 {
    let e = ((b >> 3) & 0xF) as i32;
    let m = (b & 7) as f32;
    let mag = if e == 0 { m * (1.0 / 512.0) } else { (1.0 + m / 8.0) * f32::powi(2.0, e - 7) };
    if b & 0x80 != 0 {
        -mag
    } else {
        mag
    }
}

/// All 256 FP8 values, for table lookups.
pub fn fp8_table() -> &'static [f32; 256] {
    static TABLE: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| std::array::from_fn(|i| fp8_to_f32(i as u8)))
}

/// The nearest FP8 E4M3 code (ties to even), saturating at ±448 (infinities and NaN too).
pub fn f32_to_fp8(x: f32) -> u8 {
    let bits = x.to_bits();
    let sign = ((bits >> 24) & 0x80) as u8;
    let a = bits & 0x7FFF_FFFF;
    let code = if a >= 448f32.to_bits() {
        0x7E
    } else if a < 0x3C80_0000 {
        // Below 2^-6 the codes are subnormal: multiples of 2^-9.
        (f32::from_bits(a) * 512.0).round_ties_even() as u8
    } else {
        // Rebias the exponent (127 → 7) and round the mantissa to 3 bits, ties to even.
        let odd = (a >> 20) & 1;
        (a.wrapping_sub(120 << 23).wrapping_add(0x7FFFF + odd) >> 20) as u8
    };
    code | sign
}

/// The scale an E8M0 code stands for: 2^(b − 127) (code 0 is 2^-127, code 255 infinity).
#[inline(always)]
pub fn e8m0_to_f32(b: u8) -> f32 {
    if b == 0 {
        f32::from_bits(0x0040_0000)
    } else {
        f32::from_bits((b as u32) << 23)
    }
}

/// Unpacks `out.len()` codes of `bits` bits from the little-endian bit stream `words`.
#[inline(always)]
pub fn unpack_codes(words: &[u32], bits: usize, out: &mut [u8]) {
    let mask = (1u64 << bits) - 1;
    for (i, o) in out.iter_mut().enumerate() {
        let pos = i * bits;
        let (w, shift) = (pos / 32, pos % 32);
        let mut v = (words[w] as u64) >> shift;
        if shift + bits > 32 {
            v |= (words[w + 1] as u64) << (32 - shift);
        }
        *o = (v & mask) as u8;
    }
}

/// Packs codes of `bits` bits into the little-endian bit stream `words` (whose length is
/// `codes.len() * bits / 32`).
pub fn pack_codes(codes: &[u8], bits: usize, words: &mut [u32]) {
    let mut acc = 0u64;
    let mut filled = 0;
    let mut out = words.iter_mut();
    for &c in codes {
        acc |= (c as u64) << filled;
        filled += bits;
        if filled >= 32 {
            *out.next().expect("codes fill the words exactly") = acc as u32;
            acc >>= 32;
            filled -= 32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp8_round_trips_every_finite_code() {
        for b in 0..=255u8 {
            if b & 0x7F == 0x7F {
                continue;
            }
            let v = fp8_to_f32(b);
            // -0.0 maps to 0x80, +0.0 to 0x00.
            assert_eq!(f32_to_fp8(v), b, "code {b:#x} value {v}");
        }
        assert_eq!(fp8_to_f32(0x7E), 448.0);
        assert_eq!(fp8_to_f32(0x01), 1.0 / 512.0);
        assert_eq!(f32_to_fp8(1e9), 0x7E);
        assert_eq!(f32_to_fp8(-f32::INFINITY), 0xFE);
        // 1.0625 lies halfway between 1.0 (mantissa 0, even) and 1.125.
        assert_eq!(f32_to_fp8(1.0625), f32_to_fp8(1.0));
        assert_eq!(f32_to_fp8(1.1875), f32_to_fp8(1.25));
    }

    #[test]
    fn fp4_rounds_to_nearest_even() {
        for (i, &v) in FP4_VALUES.iter().enumerate() {
            if i != 8 {
                assert_eq!(f32_to_fp4(v), i as u8);
            }
        }
        // Ties go to the even mantissa; tiny negatives to +0.
        assert_eq!([f32_to_fp4(0.25), f32_to_fp4(0.75), f32_to_fp4(2.5), f32_to_fp4(5.0)], [0, 2, 4, 6]);
        assert_eq!([f32_to_fp4(-0.1), f32_to_fp4(-7.0), f32_to_fp4(f32::NAN)], [0, 15, 0]);
    }

    #[test]
    fn codes_round_trip_through_the_bit_stream() {
        for bits in [1, 2, 3, 4, 5, 6, 8] {
            let codes: Vec<u8> = (0..64).map(|i| ((i * 37 + 11) % (1 << bits)) as u8).collect();
            let mut words = vec![0u32; 64 * bits / 32];
            pack_codes(&codes, bits, &mut words);
            let mut back = vec![0u8; 64];
            unpack_codes(&words, bits, &mut back);
            assert_eq!(back, codes, "{bits} bits");
        }
        let mut w = [0u32; 1];
        pack_codes(&[1, 2, 3, 4, 5, 6, 7, 8], 4, &mut w);
        assert_eq!(w[0], 0x8765_4321);
    }
}
