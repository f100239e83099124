//! Branch-free f32 math that LLVM vectorizes: the hot transcendental functions of the kernels.

use super::simd::Isa;

/// `e^x` for f32, branch-free, within 1 ulp of the correctly rounded result (2 ulp for
/// subnormal results); `exp(-inf) = 0`, `exp(inf) = inf`, NaN stays NaN, overflow gives
/// inf and underflow 0. Fused multiply-adds are used where `isa` has them.
///
/// Method: `x = n ln2 + r` with `n = round(x / ln2)` and `|r| <= ln2 / 2` (Cody–Waite with a
/// two-part ln 2), `e^r ~ 1 + r + r^2 q(r)` with `q` a degree-4 polynomial fitted for minimal
/// relative error on that interval (max error 5e-9), and the result scaled by `2^n` as two
/// exact powers of two so that results near overflow and in the subnormal range need no
/// special case.
#[inline(always)]
pub fn exp_f32(x: f32, isa: Isa) -> f32 {
    // 1.5 * 2^23: adding it rounds to an integer kept in the low mantissa bits.
    const SHIFTER: f32 = 12_582_912.0;
    const SHIFTER_BITS: i32 = 0x4B40_0000;
    // ln 2 = LN2_HI + LN2_LO, LN2_HI with 9 significant bits so that n * LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const Q: [f32; 5] = [0.499_999_94, 0.166_665_15, 0.041_668_456, 0.008_369_419, 0.001_381_314_5];
    // e^-104 rounds to 0 and e^89 to inf; clamping keeps n inside the exponent range. The
    // comparisons are false for NaN, which then propagates through the arithmetic.
    let x = if x < -104.0 { -104.0 } else { x };
    let x = if x > 89.0 { 89.0 } else { x };
    let z = isa.mul_add(x, std::f32::consts::LOG2_E, SHIFTER);
    let n = z - SHIFTER;
    let r = isa.mul_add(n, -LN2_HI, x);
    let r = isa.mul_add(n, -LN2_LO, r);
    let mut q = Q[4];
    q = isa.mul_add(q, r, Q[3]);
    q = isa.mul_add(q, r, Q[2]);
    q = isa.mul_add(q, r, Q[1]);
    q = isa.mul_add(q, r, Q[0]);
    let p = isa.mul_add(q, r * r, r) + 1.0;
    // n in [-150, 129]: split it so that each factor 2^n1, 2^n2 is a normal f32.
    let ni = (z.to_bits() as i32).wrapping_sub(SHIFTER_BITS);
    let n1 = ni >> 1;
    let n2 = ni - n1;
    let s1 = f32::from_bits(((n1 + 127) << 23) as u32);
    let s2 = f32::from_bits(((n2 + 127) << 23) as u32);
    p * s1 * s2
}

/// The logistic function `1 / (1 + e^-x)` for f32, branch-free on [`exp_f32`], within 2 ulp:
/// with `e = e^-|x|` (never overflows) it is `1 / (1 + e)` for `x >= 0` and `e / (1 + e)`
/// below, so tiny results keep their precision. NaN stays NaN.
#[inline(always)]
pub fn sigmoid_f32(x: f32, isa: Isa) -> f32 {
    let e = exp_f32(-x.abs(), isa);
    let num = if x >= 0.0 { 1.0 } else { e };
    num / (1.0 + e)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two finite f32 of any sign.
    fn ulps(a: f32, b: f32) -> u64 {
        let key = |v: f32| {
            let b = v.to_bits() as i64;
            if b < 0x8000_0000 {
                b
            } else {
                0x8000_0000 - b
            }
        };
        (key(a) - key(b)).unsigned_abs()
    }

    /// Checks `f` against the correctly rounded value from f64 `reference` over every f32
    /// visited by a stride through all bit patterns, plus special cases; returns the max ulp error.
    fn sweep(f: impl Fn(f32) -> f32, reference: impl Fn(f64) -> f64) -> u64 {
        let mut worst = 0;
        let specials = [
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
            f32::MAX,
            f32::MIN,
            88.722_83,
            88.722_84,
            -87.336_55,
            -103.972_08,
            -103.972_09,
            1e-30,
            -1e-30,
            0.346_573_6,
            -0.346_573_6,
        ];
        let strided = (0..u32::MAX / 331).map(|i| f32::from_bits(i.wrapping_mul(331).wrapping_add(17)));
        let dense = (0..200_000).map(|i| -110.0 + i as f32 * (200.0 / 200_000.0));
        for x in specials.into_iter().chain(strided).chain(dense) {
            let got = f(x);
            let want = reference(x as f64) as f32;
            if want.is_nan() {
                assert!(got.is_nan(), "f({x}) = {got}, want NaN");
                continue;
            }
            if want.is_infinite() || got.is_infinite() {
                assert_eq!(got, want, "f({x})");
                continue;
            }
            let u = ulps(got, want);
            assert!(u <= 2, "f({x:e}) = {got:e}, want {want:e} ({u} ulp)");
            worst = worst.max(u);
        }
        worst
    }

    #[test]
    fn exp_matches_f64_libm() {
        for isa in [Isa::Baseline, super::super::simd::best_isa()] {
            let worst = sweep(|x| exp_f32(x, isa), f64::exp);
            assert!(worst <= 1, "{isa:?}: max error {worst} ulp");
        }
        assert!(exp_f32(f32::NAN, Isa::Baseline).is_nan());
        assert!(exp_f32(-f32::NAN, Isa::Baseline).is_nan());
        assert_eq!(exp_f32(f32::NEG_INFINITY, Isa::Baseline), 0.0);
        assert_eq!(exp_f32(f32::INFINITY, Isa::Baseline), f32::INFINITY);
        assert_eq!(exp_f32(0.0, Isa::Baseline), 1.0);
        assert_eq!(exp_f32(1.0, Isa::Baseline), std::f32::consts::E);
    }

    #[test]
    fn exp_inside_dispatch_matches() {
        let xs: Vec<f32> = (0..4099).map(|i| (i as f32 - 2000.0) * 0.05).collect();
        let ys = super::super::simd::dispatch(|isa| xs.iter().map(|&x| exp_f32(x, isa)).collect::<Vec<_>>());
        for (&x, &y) in xs.iter().zip(&ys) {
            assert!(ulps(y, (x as f64).exp() as f32) <= 1, "exp({x}) = {y}");
        }
    }

    #[test]
    fn sigmoid_matches_f64() {
        let reference = |x: f64| 1.0 / (1.0 + (-x).exp());
        let worst = sweep(|x| sigmoid_f32(x, super::super::simd::best_isa()), reference);
        assert!(worst <= 2, "max error {worst} ulp");
    }
}
