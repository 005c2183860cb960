//! Rounding modes as values, and rounding f32/f64 into the narrow formats
//! with any of them.

use crate::{format, Element, F8E4M3, F8E5M2};
use half::{bf16, f16};

/// How a value that falls between two representable neighbours is rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoundingMode {
    /// IEEE round-to-nearest, ties to even (the default everywhere).
    #[default]
    NearestEven,
    /// Truncate toward zero; finite overflow clamps to ±max.
    TowardZero,
    /// Round up with probability equal to the distance from the lower
    /// neighbour (unbiased in expectation). Deterministic: the random draw
    /// depends only on `seed` and the element's index.
    Stochastic {
        /// Seed of the draw.
        seed: u64,
    },
}

/// A uniform draw in `[0, 1)` from `(seed, index)`, by the SplitMix64 finaliser.
pub(crate) fn uniform(seed: u64, index: u64) -> f64 {
    let mut z = seed
        ^ index
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A narrow floating type that values can be rounded into with any [`RoundingMode`].
pub trait RoundFrom: Element {
    /// Rounds `x` with `mode`; `index` feeds the stochastic draw (ignored otherwise).
    fn round_from_f64(x: f64, mode: RoundingMode, index: u64) -> Self;

    /// Rounds an f32 (exactly widened to f64 first, so still one rounding).
    fn round_from_f32(x: f32, mode: RoundingMode, index: u64) -> Self {
        Self::round_from_f64(x as f64, mode, index)
    }
}

macro_rules! impl_round_from {
    ($ty:ty, $fmt:expr, $from_bits:expr) => {
        impl RoundFrom for $ty {
            fn round_from_f64(x: f64, mode: RoundingMode, index: u64) -> Self {
                let bits = $fmt.encode(x, mode, format::Overflow::Ieee, index);
                #[allow(clippy::redundant_closure_call)]
                $from_bits(bits)
            }
        }
    };
}

impl_round_from!(f16, format::F16, f16::from_bits);
impl_round_from!(bf16, format::BF16, bf16::from_bits);
impl_round_from!(F8E4M3, format::E4M3, |b: u16| F8E4M3::from_bits(b as u8));
impl_round_from!(F8E5M2, format::E5M2, |b: u16| F8E5M2::from_bits(b as u8));

/// Rounds every element of `src` into `dst` with `mode`; element `i` uses index
/// `first_index + i` for stochastic rounding.
pub fn round_slice<T: RoundFrom>(
    src: &[f32],
    dst: &mut [T],
    mode: RoundingMode,
    first_index: u64,
) -> crate::Result<()> {
    if src.len() != dst.len() {
        return Err(crate::Error::LengthMismatch {
            op: "round_slice",
            src: src.len(),
            dst: dst.len(),
        });
    }
    for (i, (s, d)) in src.iter().zip(dst.iter_mut()).enumerate() {
        *d = T::round_from_f32(*s, mode, first_index + i as u64);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toward_zero_truncates() {
        // 1 + 3/4 ulp of bf16 at 1.0 truncates to 1.0.
        let x = 1.0 + 0.75 * 2f64.powi(-7);
        assert_eq!(
            bf16::round_from_f64(x, RoundingMode::TowardZero, 0).to_f64(),
            1.0
        );
        assert_eq!(
            bf16::round_from_f64(-x, RoundingMode::TowardZero, 0).to_f64(),
            -1.0
        );
        assert_eq!(
            F8E4M3::round_from_f64(1e6, RoundingMode::TowardZero, 0).to_f32(),
            448.0
        );
    }

    #[test]
    fn stochastic_is_unbiased_and_deterministic() {
        // 1 + 0.3 ulp: the mean of many draws must approach the exact value.
        let ulp = 2f64.powi(-7);
        let x = 1.0 + 0.3 * ulp;
        let n = 200_000u64;
        let mut sum = 0.0;
        for i in 0..n {
            let r = bf16::round_from_f64(x, RoundingMode::Stochastic { seed: 7 }, i).to_f64();
            assert!(r == 1.0 || r == 1.0 + ulp, "not a neighbour: {r}");
            sum += r;
        }
        let mean = sum / n as f64;
        // Bernoulli(0.3) mean: standard error sqrt(0.21/n)*ulp ≈ 0.001 ulp; allow 5 sigma.
        assert!(
            (mean - x).abs() < 5.0 * (0.21f64 / n as f64).sqrt() * ulp,
            "mean {mean} vs {x}"
        );
        let a = F8E5M2::round_from_f64(3.3, RoundingMode::Stochastic { seed: 1 }, 42);
        let b = F8E5M2::round_from_f64(3.3, RoundingMode::Stochastic { seed: 1 }, 42);
        assert_eq!(a.to_bits(), b.to_bits());
    }
}
