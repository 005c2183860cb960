//! `RoundingMode::TowardZero` and `RoundingMode::Stochastic` against the
//! independent reference in `common`.

mod common;

use amp_dtype::{bf16, f16, round_slice, RoundFrom, RoundingMode, F8E4M3, F8E5M2};
use common::{Expect, Narrow};
use proptest::prelude::*;

fn toward_zero<T: Narrow>() {
    let r = common::reference(T::SPEC);
    let mode = RoundingMode::TowardZero;
    let f32s = common::structured_f32_all()
        .into_iter()
        .filter(|x| x.is_finite());
    for x in f32s {
        let want = r.toward_zero(x as f64);
        let got = T::round_from_f32(x, mode, 0).bits();
        assert_eq!(
            Expect::Bits(got),
            want,
            "{} toward_zero({x:e})",
            r.spec.name
        );
    }
    for x in common::structured_f64(T::SPEC)
        .into_iter()
        .filter(|x| x.is_finite())
    {
        let want = r.toward_zero(x);
        let got = T::round_from_f64(x, mode, 0).bits();
        assert_eq!(
            Expect::Bits(got),
            want,
            "{} toward_zero({x:e})",
            r.spec.name
        );
    }
    assert!(r
        .spec
        .decode(T::round_from_f32(f32::NAN, mode, 0).bits())
        .is_nan());
    // Finite overflow clamps to ±max.
    assert_eq!(T::round_from_f64(1e300, mode, 0).bits(), r.max_bits);
    assert_eq!(
        T::round_from_f64(-1e300, mode, 0).bits(),
        r.max_bits | r.spec.sign_bit()
    );
}

#[test]
fn toward_zero_picks_the_smaller_magnitude_neighbour() {
    toward_zero::<f16>();
    toward_zero::<bf16>();
    toward_zero::<F8E4M3>();
    toward_zero::<F8E5M2>();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn toward_zero_random_f32(bits in any::<u32>()) {
        let x = f32::from_bits(bits);
        prop_assume!(x.is_finite());
        fn one<T: Narrow>(x: f32) {
            let r = common::reference(T::SPEC);
            let got = T::round_from_f32(x, RoundingMode::TowardZero, 0).bits();
            assert_eq!(Expect::Bits(got), r.toward_zero(x as f64), "{} {x:e}", r.spec.name);
        }
        one::<f16>(x);
        one::<bf16>(x);
        one::<F8E4M3>(x);
        one::<F8E5M2>(x);
    }

    #[test]
    fn stochastic_lands_on_a_neighbour(bits in any::<u32>(), seed in any::<u64>(), index in any::<u64>()) {
        let x = f32::from_bits(bits);
        prop_assume!(x.is_finite());
        fn one<T: Narrow>(x: f32, seed: u64, index: u64) {
            let r = common::reference(T::SPEC);
            if (x as f64).abs() > r.max {
                return;
            }
            let (lo, hi) = r.neighbours(x as f64);
            let got = T::round_from_f32(x, RoundingMode::Stochastic { seed }, index).bits();
            assert!(got == lo || got == hi, "{} {x:e}: {got:#x} not in {{{lo:#x}, {hi:#x}}}", r.spec.name);
        }
        one::<f16>(x, seed, index);
        one::<bf16>(x, seed, index);
        one::<F8E4M3>(x, seed, index);
        one::<F8E5M2>(x, seed, index);
    }
}

/// Every point of the structured sample within ±max lands on one of its two
/// neighbours, and representable values never move.
fn stochastic_neighbours<T: Narrow>() {
    let r = common::reference(T::SPEC);
    for (i, x) in common::structured_f64(T::SPEC).into_iter().enumerate() {
        if !x.is_finite() || x.abs() > r.max {
            continue;
        }
        let (lo, hi) = r.neighbours(x);
        for seed in [0, 1, 0xDEAD_BEEF] {
            let got = T::round_from_f64(x, RoundingMode::Stochastic { seed }, i as u64).bits();
            assert!(
                got == lo || got == hi,
                "{} {x:e}: {got:#x} not in {{{lo:#x}, {hi:#x}}}",
                r.spec.name
            );
        }
    }
}

#[test]
fn stochastic_results_are_neighbours() {
    stochastic_neighbours::<f16>();
    stochastic_neighbours::<bf16>();
    stochastic_neighbours::<F8E4M3>();
    stochastic_neighbours::<F8E5M2>();
}

/// The mean of many stochastic roundings of `x` approaches `x`.
///
/// Each draw is `lo + B·ulp` with `B ~ Bernoulli(p)`, `p = (x − lo)/ulp`, so
/// the mean of `n` draws has expectation exactly `x` and standard deviation
/// `ulp·sqrt(p(1−p)/n) ≤ ulp/(2·sqrt(n))`. We allow 6 of those worst-case
/// standard deviations: a fair rounding fails this with probability below
/// 2·10⁻⁹ (normal approximation; n is large), while a biased one (e.g.
/// `p` off by 0.05, or nearest-even in disguise) misses by ≥ 0.05·ulp, which is
/// 14 standard deviations at n = 20 000. The draws are deterministic in
/// (seed, index), so the test cannot flake.
fn stochastic_mean<T: Narrow>(lo_value: f64, p: f64) {
    let r = common::reference(T::SPEC);
    let ulp = r.spec.ulp_at(lo_value.abs());
    let x = lo_value + p * ulp * lo_value.signum();
    let n = 20_000u64;
    let (lo, hi) = r.neighbours(x);
    let mut sum = 0.0;
    let mut ups = 0u64;
    for i in 0..n {
        let got = T::round_from_f64(x, RoundingMode::Stochastic { seed: 12345 }, i).bits();
        assert!(
            got == lo || got == hi,
            "{} {x}: not a neighbour",
            r.spec.name
        );
        ups += u64::from(got == hi);
        sum += r.spec.decode(got);
    }
    let mean = sum / n as f64;
    let tolerance = 6.0 * ulp / (2.0 * (n as f64).sqrt());
    assert!(
        (mean - x).abs() <= tolerance,
        "{} x = {x} (p = {p}): mean {mean}, off by {} ulp (rounded up {ups} of {n})",
        r.spec.name,
        (mean - x).abs() / ulp
    );
}

#[test]
fn stochastic_is_unbiased() {
    for p in [0.01, 0.1, 0.3, 0.5, 0.75, 0.99] {
        for lo in [1.0, -1.0, 3.5, 1e-3] {
            stochastic_mean::<bf16>(lo, p);
            stochastic_mean::<f16>(lo, p);
        }
        stochastic_mean::<bf16>(2f64.powi(-130), p); // a bf16 subnormal
        stochastic_mean::<f16>(2f64.powi(-20), p); // an f16 subnormal
        stochastic_mean::<F8E4M3>(1.0, p);
        stochastic_mean::<F8E4M3>(-416.0, p);
        stochastic_mean::<F8E4M3>(2f64.powi(-8), p); // subnormal
        stochastic_mean::<F8E5M2>(1.5, p);
        stochastic_mean::<F8E5M2>(49152.0, p);
    }
}

#[test]
fn stochastic_is_deterministic_per_seed_and_index_and_varies_with_index() {
    let x = 1.0f32 + 0.5 * 2f32.powi(-7); // halfway between two bf16 values
    let mode = RoundingMode::Stochastic { seed: 99 };
    let draws: Vec<u16> = (0..256)
        .map(|i| bf16::round_from_f32(x, mode, i).to_bits())
        .collect();
    let again: Vec<u16> = (0..256)
        .map(|i| bf16::round_from_f32(x, mode, i).to_bits())
        .collect();
    assert_eq!(draws, again, "same seed and index must give the same bits");
    let ups = draws
        .iter()
        .filter(|&&b| b != draws.iter().copied().min().unwrap())
        .count();
    // Binomial(256, 1/2): 128 ± 8 (1σ); 80..176 is ±6σ.
    assert!(
        (80..=176).contains(&ups),
        "indices do not vary: {ups} of 256 rounded up"
    );
    let other: Vec<u16> = (0..256)
        .map(|i| bf16::round_from_f32(x, RoundingMode::Stochastic { seed: 100 }, i).to_bits())
        .collect();
    assert_ne!(
        draws, other,
        "a different seed must give a different sequence"
    );

    // round_slice uses index first_index + i.
    let src = vec![x; 64];
    let mut dst = vec![bf16::ZERO; 64];
    round_slice(&src, &mut dst, mode, 1000).unwrap();
    for (i, d) in dst.iter().enumerate() {
        assert_eq!(*d, bf16::round_from_f32(x, mode, 1000 + i as u64));
    }
    // Representable values never move, whatever the draw.
    for i in 0..100 {
        assert_eq!(
            F8E5M2::round_from_f32(3.0, RoundingMode::Stochastic { seed: i }, i).to_f32(),
            3.0
        );
        assert_eq!(
            f16::round_from_f32(-0.0, RoundingMode::Stochastic { seed: i }, i).to_bits(),
            0x8000
        );
    }
    assert!(F8E4M3::round_from_f32(f32::NAN, mode, 0).is_nan());
}

#[test]
fn round_slice_length_mismatch_is_an_error() {
    let err = round_slice(
        &[1.0f32; 3],
        &mut [bf16::ZERO; 4],
        RoundingMode::NearestEven,
        0,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("round_slice") && msg.contains('3') && msg.contains('4'),
        "{msg}"
    );
}
