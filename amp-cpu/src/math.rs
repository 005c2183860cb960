//! f32 definitions of every elementwise op, written branch-free so that the
//! compiler vectorises them at each [`Isa`](crate::isa::Isa) level (see [`multiversion`]).
//!
//! Transcendentals are Cephes-style polynomials (`exp`, `tanh`) and the
//! Numerical Recipes `erfc` (fractional error below 1.2e-7), evaluated with
//! fused multiply-adds (`mul_add`: one instruction at the AVX2/AVX-512 levels,
//! half the operations and latency of a multiply then an add; exactly rounded,
//! so every level gives the same bits); every one is within a few f32 ulps of
//! the f64 reference. Scalar constants of an op
//! (`Powf`, `Affine`) are applied in f64 where that makes f32 results exact.

// The published coefficients are kept digit for digit as printed.
#![allow(clippy::excessive_precision)]

use crate::isa::multiversion;
use amp_tensor::backend::{BinaryOp, UnaryOp};

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/√(2π)
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;
/// √(2/π)
const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// `e^x` to about 2 ulp; `+inf` above 88.72, `0` below -87.34 (no subnormal results), NaN kept.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding and subtracting it rounds to an integer
    let xc = x.clamp(-87.336_55, 88.722_84);
    let fx = (xc * LOG2E + ROUND) - ROUND;
    let r = fx.mul_add(2.121_944_4e-4, fx.mul_add(-0.693_359_4, xc));
    let mut y = 1.987_569_1e-4_f32;
    y = y.mul_add(r, 1.398_199_9e-3);
    y = y.mul_add(r, 8.333_452e-3);
    y = y.mul_add(r, 4.166_579_6e-2);
    y = y.mul_add(r, 1.666_666_5e-1);
    y = y.mul_add(r, 5.000_000_1e-1);
    y = y.mul_add(r * r, r) + 1.0;
    // 2^n as two factors so that n = 128 (x near the overflow bound) stays in range.
    // fx is an integer in [-126, 128] (or NaN, whose result is replaced below):
    // adding 1.5·2^23 puts it in the low mantissa bits. Integer arithmetic on
    // the bits vectorizes, where a float-to-int `as` cast is scalarized.
    let n = ((fx + ROUND).to_bits() as i32).wrapping_sub(0x4B40_0000);
    let h = n >> 1;
    let s1 = f32::from_bits(((h + 127) as u32) << 23);
    let s2 = f32::from_bits(((n - h + 127) as u32) << 23);
    let v = y * s1 * s2;
    let v = if x > 88.722_84 { f32::INFINITY } else { v };
    let v = if x < -87.336_55 { 0.0 } else { v };
    if x.is_nan() {
        x
    } else {
        v
    }
}

/// `tanh(x)` (Cephes `tanhf`): an odd polynomial below 0.625, `1 - 2/(e^{2|x|}+1)` above.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    let z = x.abs();
    let z2 = x * x;
    let mut q = (-5.704_988_7e-3_f32).mul_add(z2, 2.063_908_9e-2);
    q = q.mul_add(z2, -5.373_971_6e-2);
    q = q.mul_add(z2, 1.333_144_2e-1);
    q = q.mul_add(z2, -3.333_328_2e-1);
    let small = (q * z2).mul_add(x, x);
    let large = 1.0 - 2.0 / (exp(z + z) + 1.0);
    let large = if x < 0.0 { -large } else { large };
    if z < 0.625 {
        small
    } else if x.is_nan() {
        x
    } else {
        large
    }
}

/// `erfc(z)` for `z >= 0` (Numerical Recipes `erfcc`, fractional error < 1.2e-7).
#[inline(always)]
fn erfc_nonneg(z: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let mut p = 0.170_872_77_f32;
    for c in [
        -0.822_152_2,
        1.488_515_9,
        -1.135_203_9,
        0.278_868_07,
        -0.186_288_06,
        0.096_784_18,
        0.374_091_96,
        1.000_023_7,
        -1.265_512_2,
    ] {
        p = p.mul_add(t, c);
    }
    t * exp((-z).mul_add(z, p))
}

/// `erfc(x)` for any `x`.
#[inline(always)]
pub(crate) fn erfc(x: f32) -> f32 {
    let e = erfc_nonneg(x.abs());
    if x < 0.0 {
        2.0 - e
    } else {
        e
    }
}

/// `erf(x)`: Maclaurin series below 0.5 (where `1 - erfc` would cancel), `1 - erfc` above.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let x2 = x * x;
    // 2/√π · (x - x³/3 + x⁵/10 - x⁷/42 + x⁹/216 - x¹¹/1320 + x¹³/9360)
    let mut s = 1.0_f32 / 9360.0;
    for c in [
        -1.0 / 1320.0,
        1.0 / 216.0,
        -1.0 / 42.0,
        0.1,
        -1.0 / 3.0,
        1.0,
    ] {
        s = s.mul_add(x2, c);
    }
    let series = std::f32::consts::FRAC_2_SQRT_PI * x * s;
    let tail = 1.0 - erfc_nonneg(x.abs());
    let tail = if x < 0.0 { -tail } else { tail };
    if x.abs() < 0.5 {
        series
    } else if x.is_nan() {
        x
    } else {
        tail
    }
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
fn bool_f32(c: bool) -> f32 {
    if c {
        1.0
    } else {
        0.0
    }
}

multiversion! {
    /// `dst[i] = op(src[i])` for the `dst.len()` elements.
    ///
    /// Out of place on purpose: computed in place, a select such as ReLU's
    /// leaves some elements unchanged, so the compiler stores only the others —
    /// with masked stores (`vmaskmovps`), which AMD's Zen cores execute
    /// slowly (ReLU over 16 Mi f32 ran at 13 GB/s on this project's AVX2 EPYC).
    pub(crate) fn unary(isa: Isa, op: UnaryOp, src: &[f32], dst: &mut [f32]) {
        let src = &src[..dst.len()];
        macro_rules! map {
            (|$v:ident| $e:expr) => {
                for (slot, &$v) in dst.iter_mut().zip(src) {
                    *slot = $e;
                }
            };
        }
        match op {
            UnaryOp::Neg => map!(|v| -v),
            UnaryOp::Exp => map!(|v| exp(v)),
            UnaryOp::Log => map!(|v| v.ln()),
            UnaryOp::Sqrt => map!(|v| v.sqrt()),
            UnaryOp::Rsqrt => map!(|v| 1.0 / v.sqrt()),
            UnaryOp::Abs => map!(|v| v.abs()),
            UnaryOp::Relu => map!(|v| if v > 0.0 || v.is_nan() { v } else { 0.0 }),
            UnaryOp::GeluErf => map!(|v| 0.5 * v * erfc(-v * FRAC_1_SQRT_2)),
            UnaryOp::GeluTanh => map!(|v| {
                // ½x(1 + tanh u) = x · sigmoid(2u), which does not cancel for negative x.
                let u = SQRT_2_OVER_PI * (v + 0.044_715 * v * v * v);
                v / (1.0 + exp(-2.0 * u))
            }),
            UnaryOp::Tanh => map!(|v| tanh(v)),
            UnaryOp::Sigmoid => map!(|v| sigmoid(v)),
            UnaryOp::Silu => map!(|v| v / (1.0 + exp(-v))),
            UnaryOp::Erf => map!(|v| erf(v)),
            UnaryOp::Recip => map!(|v| 1.0 / v),
            UnaryOp::Sign => map!(|v| if v > 0.0 { 1.0 } else if v < 0.0 { -1.0 } else { v }),
            UnaryOp::Powf(p) => {
                if p == 2.0 {
                    map!(|v| ((v as f64) * (v as f64)) as f32)
                } else if p == 0.5 {
                    map!(|v| v.sqrt())
                } else if p == 3.0 {
                    map!(|v| ((v as f64) * (v as f64) * (v as f64)) as f32)
                } else if p != 1.0 {
                    map!(|v| (v as f64).powf(p) as f32)
                } else {
                    dst.copy_from_slice(src)
                }
            }
            UnaryOp::Affine { mul, add } => map!(|v| ((v as f64) * mul + add) as f32),
            UnaryOp::Identity => dst.copy_from_slice(src),
            UnaryOp::NonZero => map!(|v| bool_f32(v != 0.0)),
        }
    }
}

multiversion! {
    /// `out[i] = op(a[i], b[i])` for the `out.len()` elements (out of place for
    /// the reason given at [`unary`]).
    pub(crate) fn binary(isa: Isa, op: BinaryOp, a: &[f32], b: &[f32], out: &mut [f32]) {
        let (a, b) = (&a[..out.len()], &b[..out.len()]);
        macro_rules! zip {
            (|$x:ident, $y:ident| $e:expr) => {
                for ((slot, &$x), &$y) in out.iter_mut().zip(a).zip(b) {
                    *slot = $e;
                }
            };
        }
        match op {
            BinaryOp::Add => zip!(|x, y| x + y),
            BinaryOp::Sub => zip!(|x, y| x - y),
            BinaryOp::Mul => zip!(|x, y| x * y),
            BinaryOp::Div => zip!(|x, y| x / y),
            BinaryOp::Maximum => zip!(|x, y| if x.is_nan() || y.is_nan() { f32::NAN } else if x > y { x } else { y }),
            BinaryOp::Minimum => zip!(|x, y| if x.is_nan() || y.is_nan() { f32::NAN } else if x < y { x } else { y }),
            BinaryOp::Eq => zip!(|x, y| bool_f32(x == y)),
            BinaryOp::Gt => zip!(|x, y| bool_f32(x > y)),
            BinaryOp::Lt => zip!(|x, y| bool_f32(x < y)),
            BinaryOp::ReluBackward => zip!(|x, y| if y > 0.0 { x } else { 0.0 }),
            BinaryOp::GeluErfBackward => zip!(|x, y| {
                let cdf = 0.5 * erfc(-y * FRAC_1_SQRT_2);
                let pdf = exp(-0.5 * y * y) * FRAC_1_SQRT_2PI;
                x * (cdf + y * pdf)
            }),
            BinaryOp::GeluTanhBackward => zip!(|x, y| {
                let inner = SQRT_2_OVER_PI * (y + 0.044_715 * y * y * y);
                let t = tanh(inner);
                let dinner = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044_715 * y * y);
                x * (0.5 * (1.0 + t) + 0.5 * y * (1.0 - t * t) * dinner)
            }),
            BinaryOp::TanhBackward => zip!(|x, y| x * (1.0 - y * y)),
            BinaryOp::SigmoidBackward => zip!(|x, y| x * y * (1.0 - y)),
            BinaryOp::SiluBackward => zip!(|x, y| {
                let s = sigmoid(y);
                x * (s * (1.0 + y * (1.0 - s)))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::Isa;
    use amp_tensor::reference::{binary_f64, unary_f64};

    fn close(got: f32, want: f64, rel: f64, abs: f64) -> bool {
        if want.is_nan() {
            return got.is_nan();
        }
        if want.is_infinite() {
            return got as f64 == want;
        }
        ((got as f64) - want).abs() <= abs + rel * want.abs()
    }

    #[test]
    fn transcendentals_track_the_f64_definitions() {
        let mut xs: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.0041).collect();
        xs.extend([
            0.0,
            -0.0,
            1e-30,
            -1e-30,
            1e-8,
            88.0,
            88.7,
            89.0,
            -87.0,
            -88.0,
            -100.0,
            1e4,
            -1e4,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ]);
        let ops = [
            UnaryOp::Exp,
            UnaryOp::Tanh,
            UnaryOp::Erf,
            UnaryOp::GeluErf,
            UnaryOp::GeluTanh,
            UnaryOp::Sigmoid,
            UnaryOp::Silu,
            UnaryOp::Relu,
            UnaryOp::Sign,
            UnaryOp::Powf(2.0),
            UnaryOp::Powf(-1.5),
            UnaryOp::Affine {
                mul: 1.0 / 3.0,
                add: 0.25,
            },
        ];
        for isa in Isa::available() {
            for op in ops {
                let mut y = vec![f32::NAN; xs.len()];
                unary(isa, op, &xs, &mut y);
                // Every level evaluates the same IEEE operations (fused multiply-adds
                // included), so the vector levels give the scalar level's bits.
                let mut scalar = vec![f32::NAN; xs.len()];
                unary(Isa::Scalar, op, &xs, &mut scalar);
                for ((x, g), s) in xs.iter().zip(&y).zip(&scalar) {
                    assert_eq!(g.to_bits(), s.to_bits(), "{isa} {op:?}({x}) vs scalar");
                }
                for (&x, &g) in xs.iter().zip(&y) {
                    let want = unary_f64(op, x as f64) as f32 as f64; // what the reference stores for f32
                                                                      // Below f32's normal range the polynomials flush to 0, and the reference's erf
                                                                      // saturates to ±1 beyond 6 (1 + erf cancels in f64 below x = -8): allow 1e-15 absolute.
                    assert!(
                        close(g, want, 4e-6, 1e-15),
                        "{isa} {op:?}({x}) = {g}, want {want}"
                    );
                }
            }
            for op in [
                BinaryOp::GeluErfBackward,
                BinaryOp::GeluTanhBackward,
                BinaryOp::SiluBackward,
                BinaryOp::Maximum,
                BinaryOp::Minimum,
            ] {
                let g: Vec<f32> = xs.iter().map(|x| 1.0 - x * 0.5).collect();
                let mut y = vec![f32::NAN; xs.len()];
                binary(isa, op, &g, &xs, &mut y);
                for ((&a, &b), &got) in g.iter().zip(&xs).zip(&y) {
                    let want = binary_f64(op, a as f64, b as f64) as f32 as f64;
                    assert!(
                        close(got, want, 4e-6, 1e-6 * (a as f64).abs().max(1.0)),
                        "{isa} {op:?}({a}, {b}) = {got}, want {want}"
                    );
                }
            }
        }
    }
}
