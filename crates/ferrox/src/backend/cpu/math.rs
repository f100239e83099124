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

/// `tanh(x)` for f32, branch-free, within 2 ulp: the odd Taylor series through `x^19` below
/// |x| = 0.625 (its terms shrink by ~6x each there), `1 - 2 / (e^{2|x|} + 1)` above with the
/// sign restored; saturates to ±1, NaN stays NaN.
#[inline(always)]
pub fn tanh_f32(x: f32, isa: Isa) -> f32 {
    const C: [f32; 10] = [
        1.0,
        -1.0 / 3.0,
        2.0 / 15.0,
        -17.0 / 315.0,
        62.0 / 2835.0,
        -1382.0 / 155_925.0,
        21844.0 / 6_081_075.0,
        -929_569.0 / 638_512_875.0,
        6_404_582.0 / 10_854_718_875.0,
        -443_861_162.0 / 1_856_156_927_625.0,
    ];
    let a = x.abs();
    let z = x * x;
    let mut p = C[9];
    for &c in C[..9].iter().rev() {
        p = isa.mul_add(p, z, c);
    }
    let small = x * p;
    let e = exp_f32(2.0 * if a > 10.0 { 10.0 } else { a }, isa);
    let big = (1.0 - 2.0 / (e + 1.0)).copysign(x);
    if a < 0.625 {
        small
    } else {
        big
    }
}

/// The error function for f32, branch-free, within 5 ulp with fused multiply-adds (7 without):
/// `x P(x²) / Q(x²)` for |x| < 3.92 (beyond, erf rounds to ±1), P of degree 6
/// and Q of degree 5 fitted for minimal relative error (1.8e-9, by scripts/fit_erf_f32.py),
/// the result clamped to 1 in magnitude. NaN stays NaN. About a third of the work of a series
/// plus an `erfc` with an exponential.
#[inline(always)]
pub fn erf_f32(x: f32, isa: Isa) -> f32 {
    const P: [f32; 7] = [
        std::f32::consts::FRAC_2_SQRT_PI,
        0.185_135_7,
        0.054_244_134,
        0.003_838_652_3,
        0.000_376_763_38,
        4.609_338_2e-6,
        -1.280_035_4e-8,
    ];
    const Q: [f32; 6] = [1.0, 0.497_405_65, 0.113_874_02, 0.015_430_123, 0.001_301_537, 6.240_018_4e-5];
    // The comparison is false for NaN, which then propagates through the arithmetic.
    let big = x.abs();
    let a = if big > 3.92 { 3.92 } else { big };
    let t = a * a;
    let mut p = P[6];
    for &c in P[..6].iter().rev() {
        p = isa.mul_add(p, t, c);
    }
    let mut q = Q[5];
    for &c in Q[..5].iter().rev() {
        q = isa.mul_add(q, t, c);
    }
    let r = a * p / q;
    let r = if r > 1.0 || big >= 3.92 { 1.0 } else { r };
    r.copysign(x)
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

    /// Max ulp error of `f` against f64 `reference` on a dense grid and a log grid.
    fn grid_error(f: impl Fn(f32) -> f32, reference: impl Fn(f64) -> f64) -> u64 {
        let dense = (0..400_001).map(|i| -12.0 + i as f32 * 6e-5);
        let log = (0..40_000).flat_map(|i| {
            let v = 1e-30f32 * 1.002_f32.powi(i);
            [v, -v]
        });
        dense.chain(log.filter(|v| v.abs() < 12.0)).map(|x| ulps(f(x), reference(x as f64) as f32)).max().unwrap_or(0)
    }

    #[test]
    fn tanh_and_erf_match_f64_libm() {
        for isa in [Isa::Baseline, super::super::simd::best_isa()] {
            let t = grid_error(|x| tanh_f32(x, isa), f64::tanh);
            assert!(t <= 2, "{isa:?}: tanh max error {t} ulp");
            let e = grid_error(|x| erf_f32(x, isa), libm::erf);
            let bound = if isa.has_fma() { 5 } else { 7 };
            assert!(e <= bound, "{isa:?}: erf max error {e} ulp");
            for (x, want) in [(f32::INFINITY, 1.0), (f32::NEG_INFINITY, -1.0), (0.0, 0.0), (40.0, 1.0)] {
                assert_eq!(tanh_f32(x, isa), want, "tanh({x})");
                assert_eq!(erf_f32(x, isa), want, "erf({x})");
            }
            assert!(tanh_f32(f32::NAN, isa).is_nan() && erf_f32(f32::NAN, isa).is_nan());
        }
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
