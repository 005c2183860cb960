//! Decoding, encoding and round trips of f16, bf16, F8E4M3 and F8E5M2 against
//! the independent reference in `common`: every bit pattern is decoded, and
//! encoding is checked on a dense structured sample around every
//! representable value plus proptest-random f32 and f64.

mod common;

use amp_dtype::{bf16, bits, f16, Element, F8E4M3, F8E5M2};
use common::{Expect, Narrow, Reference, Spec};
use proptest::prelude::*;

/// Same value, or both NaN; zeros must agree in sign.
fn same_value(got: f64, want: f64) -> bool {
    (got.is_nan() && want.is_nan()) || got.to_bits() == want.to_bits()
}

/// A named decoder under test: bit pattern → exact value.
type Decoder = (&'static str, fn(u32) -> f64);

fn decode_exhaustive<T: Narrow>(extra: &[Decoder]) {
    let spec = T::SPEC;
    for bits in 0..spec.patterns() {
        let want = spec.decode(bits);
        let x = T::from_bits32(bits);
        assert!(
            same_value(x.to_f64(), want),
            "{} {bits:#x}: Element::to_f64 {} != {want}",
            spec.name,
            x.to_f64()
        );
        assert!(
            same_value(x.to_f32() as f64, want),
            "{} {bits:#x}: Element::to_f32 {} != {want}",
            spec.name,
            x.to_f32()
        );
        for (name, decode) in extra {
            let got = decode(bits);
            assert!(
                same_value(got, want),
                "{} {bits:#x}: {name} {got} != {want}",
                spec.name
            );
        }
    }
}

#[test]
fn decode_every_f16_bit_pattern() {
    decode_exhaustive::<f16>(&[
        ("half::f16::to_f32", |b| {
            f16::from_bits(b as u16).to_f32() as f64
        }),
        ("half::f16::to_f64", |b| f16::from_bits(b as u16).to_f64()),
        ("bits::decode_f16", |b| bits::decode_f16(b as u16)),
    ]);
}

#[test]
fn decode_every_bf16_bit_pattern() {
    decode_exhaustive::<bf16>(&[
        ("half::bf16::to_f32", |b| {
            bf16::from_bits(b as u16).to_f32() as f64
        }),
        ("half::bf16::to_f64", |b| bf16::from_bits(b as u16).to_f64()),
        ("bits::decode_bf16", |b| bits::decode_bf16(b as u16)),
    ]);
}

#[test]
fn decode_every_e4m3_bit_pattern() {
    decode_exhaustive::<F8E4M3>(&[
        ("F8E4M3::to_f32", |b| {
            F8E4M3::from_bits(b as u8).to_f32() as f64
        }),
        ("F8E4M3::to_f64", |b| F8E4M3::from_bits(b as u8).to_f64()),
    ]);
    // Spot values from the OCP spec.
    let spec = common::E4M3;
    assert_eq!(spec.max(), 448.0);
    assert_eq!(F8E4M3::from_bits(0x7E).to_f32(), 448.0);
    assert_eq!(F8E4M3::from_bits(0x78).to_f32(), 256.0);
    assert_eq!(F8E4M3::from_bits(0x01).to_f64(), 2f64.powi(-9));
    let nans: Vec<u8> = (0..=255u8)
        .filter(|&b| F8E4M3::from_bits(b).is_nan())
        .collect();
    assert_eq!(nans, [0x7F, 0xFF], "E4M3FN has exactly two NaN patterns");
    assert!(
        (0..=255u8).all(|b| !F8E4M3::from_bits(b).to_f32().is_infinite()),
        "E4M3FN has no infinity"
    );
}

#[test]
fn decode_every_e5m2_bit_pattern() {
    decode_exhaustive::<F8E5M2>(&[
        ("F8E5M2::to_f32", |b| {
            F8E5M2::from_bits(b as u8).to_f32() as f64
        }),
        ("F8E5M2::to_f64", |b| F8E5M2::from_bits(b as u8).to_f64()),
    ]);
    assert_eq!(F8E5M2::from_bits(0x7B).to_f32(), 57344.0);
    assert_eq!(F8E5M2::from_bits(0x7C).to_f32(), f32::INFINITY);
    assert_eq!(F8E5M2::from_bits(0xFC).to_f32(), f32::NEG_INFINITY);
    assert_eq!(F8E5M2::from_bits(0x01).to_f64(), 2f64.powi(-16));
    let nans = (0..=255u8)
        .filter(|&b| F8E5M2::from_bits(b).is_nan())
        .count();
    assert_eq!(nans, 6);
}

/// The reference's table search agrees with a literal linear scan (8-bit formats).
#[test]
fn reference_search_agrees_with_linear_scan() {
    for spec in [common::E4M3, common::E5M2] {
        let r = Reference::new(spec);
        for x in common::structured_f64(spec) {
            assert_eq!(
                r.nearest_even(x),
                r.nearest_even_linear(x),
                "{} {x}",
                spec.name
            );
        }
    }
}

fn round_trip_every_finite_value<T: Narrow>() {
    let spec = T::SPEC;
    for bits in 0..spec.patterns() {
        let v = spec.decode(bits);
        if !v.is_finite() {
            continue;
        }
        let x = T::from_bits32(bits);
        for (name, encode) in T::encoders_f32() {
            assert_eq!(
                encode(x.to_f32()),
                bits,
                "{} {bits:#x} via f32, {name}",
                spec.name
            );
        }
        for (name, encode) in T::encoders_f64() {
            assert_eq!(
                encode(x.to_f64()),
                bits,
                "{} {bits:#x} via f64, {name}",
                spec.name
            );
        }
    }
}

#[test]
fn every_finite_value_round_trips_through_f32_and_f64() {
    round_trip_every_finite_value::<f16>();
    round_trip_every_finite_value::<bf16>();
    round_trip_every_finite_value::<F8E4M3>();
    round_trip_every_finite_value::<F8E5M2>();
}

fn check_f32<T: Narrow>(r: &Reference, x: f32) {
    let want = r.nearest_even(x as f64);
    for (name, encode) in T::encoders_f32() {
        let got = encode(x);
        assert!(
            r.matches(got, want),
            "{}: {name}({x:e} = {:#010x}) gave {got:#x} ({}), want {want:?} ({})",
            r.spec.name,
            x.to_bits(),
            r.spec.decode(got),
            match want {
                Expect::Bits(b) => r.spec.decode(b),
                Expect::Nan => f64::NAN,
            }
        );
    }
}

fn check_f64<T: Narrow>(r: &Reference, x: f64) {
    let want = r.nearest_even(x);
    for (name, encode) in T::encoders_f64() {
        let got = encode(x);
        assert!(
            r.matches(got, want),
            "{}: {name}({x:e} = {:#018x}) gave {got:#x} ({}), want {want:?}",
            r.spec.name,
            x.to_bits(),
            r.spec.decode(got)
        );
    }
}

fn encode_structured<T: Narrow>(sample_f32: &[f32]) {
    let r = common::reference(T::SPEC);
    for &x in sample_f32 {
        check_f32::<T>(r, x);
    }
    // f64 inputs just off each midpoint catch double rounding through f32.
    for x in common::structured_f64(T::SPEC) {
        check_f64::<T>(r, x);
    }
}

#[test]
fn encode_structured_sample_is_nearest_even() {
    let sample = common::structured_f32_all();
    assert!(sample.len() > 700_000, "sample has {} values", sample.len());
    encode_structured::<f16>(&sample);
    encode_structured::<bf16>(&sample);
    encode_structured::<F8E4M3>(&sample);
    encode_structured::<F8E5M2>(&sample);
}

#[test]
fn overflow_rules_at_the_threshold() {
    // E4M3FN: max 448; the tie at 464 goes to the even mantissa (448); above it, NaN.
    assert_eq!(F8E4M3::from_f32(464.0).to_f32(), 448.0);
    assert_eq!(F8E4M3::from_f32(-464.0).to_f32(), -448.0);
    assert!(F8E4M3::from_f32(465.0).is_nan());
    assert!(F8E4M3::from_f64(464.000_000_000_1).is_nan());
    assert!(F8E4M3::from_f32(f32::INFINITY).is_nan());
    // E5M2: max 57344; the tie at 61440 goes to the even candidate, 2^16 = inf.
    assert_eq!(F8E5M2::from_f32(61439.996).to_f32(), 57344.0);
    assert_eq!(F8E5M2::from_f32(61440.0).to_f32(), f32::INFINITY);
    assert_eq!(F8E5M2::from_f32(-61440.0).to_f32(), f32::NEG_INFINITY);
    // f16: max 65504, threshold 65520.
    assert_eq!(<f16 as Element>::from_f64(65519.999).to_f32(), 65504.0);
    assert_eq!(<f16 as Element>::from_f64(65520.0).to_f32(), f32::INFINITY);
    // bf16: the threshold is (2 - 2^-8) · 2^127.
    let threshold = (2.0 - 2f64.powi(-8)) * 2f64.powi(127);
    assert_eq!(
        <bf16 as Element>::from_f64(threshold).to_f32(),
        f32::INFINITY
    );
    assert_eq!(
        <bf16 as Element>::from_f64(common::next_down_f64(threshold)),
        bf16::MAX
    );
}

fn saturating<T: Narrow>(sample: &[f32], encode: fn(f32) -> u32) {
    let r = common::reference(T::SPEC);
    for &x in sample {
        let want = r.nearest_even_saturating(x as f64);
        let got = encode(x);
        assert!(
            r.matches(got, want),
            "{} saturating({x:e}) gave {got:#x}, want {want:?}",
            r.spec.name
        );
    }
}

#[test]
fn saturating_clamps_finite_overflow_and_keeps_nan() {
    let sample = common::structured_f32_all();
    saturating::<F8E4M3>(&sample, |x| F8E4M3::from_f32_saturating(x).to_bits() as u32);
    saturating::<F8E5M2>(&sample, |x| F8E5M2::from_f32_saturating(x).to_bits() as u32);
    assert_eq!(F8E4M3::from_f32_saturating(1e30).to_f32(), 448.0);
    assert_eq!(F8E4M3::from_f32_saturating(-f32::INFINITY).to_f32(), -448.0);
    assert_eq!(F8E5M2::from_f32_saturating(-1e30).to_f32(), -57344.0);
    assert_eq!(
        F8E5M2::from_f32_saturating(f32::INFINITY).to_f32(),
        f32::INFINITY
    );
    assert!(F8E4M3::from_f32_saturating(f32::NAN).is_nan());
    assert!(F8E5M2::from_f32_saturating(-f32::NAN).is_nan());
}

fn monotone_and_symmetric<T: Narrow>(sorted: &[f32]) {
    let spec: Spec = T::SPEC;
    for (name, encode) in T::encoders_f32() {
        let mut previous = f64::NEG_INFINITY;
        for &x in sorted {
            let bits = encode(x);
            let v = spec.decode(bits);
            // Sign symmetry: encode(-x) is encode(x) with the sign bit flipped.
            let neg = encode(-x);
            if x.is_nan() {
                assert!(
                    v.is_nan() && spec.decode(neg).is_nan(),
                    "{} {name}: NaN {x} -> {v}",
                    spec.name
                );
                continue;
            }
            assert_eq!(
                neg,
                bits ^ spec.sign_bit(),
                "{} {name}: sign symmetry at {x:e}",
                spec.name
            );
            if v.is_nan() {
                continue; // E4M3FN overflow: outside the ordered range
            }
            assert!(
                v >= previous,
                "{} {name}: not monotone at {x:e}: {v} < {previous}",
                spec.name
            );
            previous = v;
        }
    }
}

#[test]
fn encoding_is_monotone_and_sign_symmetric() {
    let mut sample = common::structured_f32_all();
    sample.retain(|x| !x.is_nan());
    sample.sort_by(|a, b| a.partial_cmp(b).unwrap());
    sample.extend([f32::NAN, -f32::NAN, f32::from_bits(0x7F80_0001)]);
    monotone_and_symmetric::<f16>(&sample);
    monotone_and_symmetric::<bf16>(&sample);
    monotone_and_symmetric::<F8E4M3>(&sample);
    monotone_and_symmetric::<F8E5M2>(&sample);
}

fn zeros_and_subnormals<T: Narrow>() {
    let spec = T::SPEC;
    for (name, encode) in T::encoders_f32() {
        assert_eq!(encode(0.0), 0, "{} {name} +0", spec.name);
        assert_eq!(encode(-0.0), spec.sign_bit(), "{} {name} -0", spec.name);
        // Values below half the smallest subnormal flush to a zero of the same sign.
        let half_smallest = (spec.decode(1) / 2.0) as f32;
        assert_eq!(
            encode(half_smallest),
            0,
            "{} {name} tie at half the smallest subnormal",
            spec.name
        );
        assert_eq!(
            encode(common::next_up_f32(half_smallest)),
            1,
            "{} {name}",
            spec.name
        );
        assert_eq!(
            encode(-f32::from_bits(1)),
            spec.sign_bit(),
            "{} {name} -tiny",
            spec.name
        );
        // Every subnormal pattern is exact.
        for m in 1..(1u32 << spec.mantissa_bits) {
            assert_eq!(
                encode(spec.decode(m) as f32),
                m,
                "{} {name} subnormal {m}",
                spec.name
            );
        }
    }
}

#[test]
fn zeros_keep_their_sign_and_subnormals_are_exact() {
    zeros_and_subnormals::<f16>();
    zeros_and_subnormals::<bf16>();
    zeros_and_subnormals::<F8E4M3>();
    zeros_and_subnormals::<F8E5M2>();
}

fn all_formats_f32(x: f32) {
    check_f32::<f16>(common::reference(common::F16), x);
    check_f32::<bf16>(common::reference(common::BF16), x);
    check_f32::<F8E4M3>(common::reference(common::E4M3), x);
    check_f32::<F8E5M2>(common::reference(common::E5M2), x);
}

fn all_formats_f64(x: f64) {
    check_f64::<f16>(common::reference(common::F16), x);
    check_f64::<bf16>(common::reference(common::BF16), x);
    check_f64::<F8E4M3>(common::reference(common::E4M3), x);
    check_f64::<F8E5M2>(common::reference(common::E5M2), x);
}

/// f64 values spread over the exponents that matter to these formats.
fn f64_in_range() -> impl Strategy<Value = f64> {
    (any::<bool>(), -150i32..130, any::<u64>()).prop_map(|(negative, e, mantissa)| {
        let v = (1.0 + (mantissa >> 12) as f64 / 2f64.powi(52)) * 2f64.powi(e);
        if negative {
            -v
        } else {
            v
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_f32_bits_encode_to_nearest_even(bits in any::<u32>()) {
        all_formats_f32(f32::from_bits(bits));
    }

    #[test]
    fn random_f64_bits_encode_to_nearest_even(bits in any::<u64>()) {
        all_formats_f64(f64::from_bits(bits));
    }

    #[test]
    fn random_f64_in_range_encode_to_nearest_even(x in f64_in_range()) {
        all_formats_f64(x);
        all_formats_f32(x as f32);
    }
}
