//! `convert_slice` between dtype pairs, against element-wise `Element`
//! conversion and, where it matters, against independent expectations.

mod common;

use amp_dtype::{bf16, convert_slice, f16, Element, F8E4M3, F8E5M2};
use common::Narrow;

/// Interesting f64 inputs: the structured samples of every format, as f64.
fn sample_f64() -> Vec<f64> {
    let mut v: Vec<f64> = common::structured_f32_all()
        .into_iter()
        .map(f64::from)
        .collect();
    v.extend(common::structured_f64(common::E5M2));
    v.extend([
        1e300,
        -1e300,
        1e-300,
        f64::MAX,
        f64::MIN_POSITIVE,
        0.5,
        -2.5,
        3.0,
        255.9,
        256.0,
        -1.0,
    ]);
    v
}

/// `convert_slice` equals `D::from_f64(s.to_f64())` element by element, with
/// NaN compared as NaN.
fn elementwise<S: Element, D: Element>(src: &[S]) -> Vec<D> {
    let mut dst = vec![D::default(); src.len()];
    convert_slice(src, &mut dst).unwrap();
    for (i, (s, d)) in src.iter().zip(&dst).enumerate() {
        let want = D::from_f64(s.to_f64());
        let both_nan = d.to_f64().is_nan() && want.to_f64().is_nan();
        assert!(
            both_nan || *d == want && d.to_f64().to_bits() == want.to_f64().to_bits(),
            "{:?} -> {:?} at {i}: {s:?} gave {d:?}, want {want:?}",
            S::DTYPE,
            D::DTYPE
        );
    }
    dst
}

fn from_f64s<S: Element>(values: &[f64]) -> Vec<S> {
    values.iter().map(|&v| S::from_f64(v)).collect()
}

#[test]
fn float_pairs_match_elementwise_conversion() {
    let values = sample_f64();
    let f32s: Vec<f32> = from_f64s(&values);
    let bf16s: Vec<bf16> = from_f64s(&values);
    let f16s: Vec<f16> = from_f64s(&values);
    let e4m3s: Vec<F8E4M3> = from_f64s(&values);

    let out: Vec<bf16> = elementwise(&f32s);
    // f32 → bf16 is also what half's from_f32 gives (nearest even).
    for (s, d) in f32s.iter().zip(&out) {
        assert!(
            d.is_nan() && s.is_nan() || *d == bf16::from_f32(*s),
            "{s} -> {d}"
        );
    }
    // bf16 → f16: nearest even of the exact bf16 value, per the reference.
    let out: Vec<f16> = elementwise(&bf16s);
    let r = common::reference(common::F16);
    for (s, d) in bf16s.iter().zip(&out) {
        assert!(
            r.matches(d.bits(), r.nearest_even(s.to_f64())),
            "{s} -> {d}"
        );
    }
    let out: Vec<F8E5M2> = elementwise(&values);
    let r = common::reference(common::E5M2);
    for (s, d) in values.iter().zip(&out) {
        assert!(r.matches(d.bits(), r.nearest_even(*s)), "{s} -> {d}");
    }
    elementwise::<f16, bf16>(&f16s);
    elementwise::<f16, f64>(&f16s);
    elementwise::<F8E4M3, bf16>(&e4m3s);
    elementwise::<F8E4M3, F8E5M2>(&e4m3s);
    elementwise::<f64, f32>(&values);
    elementwise::<f32, f64>(&f32s);
    elementwise::<f32, f32>(&f32s);
    // Widening is exact.
    let wide: Vec<f32> = elementwise(&bf16s);
    for (s, d) in bf16s.iter().zip(&wide) {
        assert!(s.is_nan() && d.is_nan() || s.to_f32().to_bits() == d.to_bits());
    }
}

#[test]
fn integer_and_bool_pairs_match_elementwise_conversion() {
    let values = sample_f64();
    let f32s: Vec<f32> = from_f64s(&values);
    // f32 → bool is `x != 0` (NaN is true, ±0 false), as PyTorch's bool().
    let bools: Vec<bool> = elementwise(&f32s);
    for (s, d) in f32s.iter().zip(&bools) {
        assert_eq!(*d, *s != 0.0, "{s}");
    }
    assert!(bools[f32s.iter().position(|x| x.is_nan()).unwrap()]);
    // f32 → i64 truncates toward zero and saturates; NaN → 0.
    let ints: Vec<i64> = elementwise(&f32s);
    for (s, d) in f32s.iter().zip(&ints) {
        assert_eq!(*d, *s as i64, "{s}");
    }
    let small: Vec<i64> = (-70_000..70_000)
        .step_by(7)
        .chain([i64::MIN, i64::MAX, 0, 1 << 53])
        .collect();
    let out: Vec<f32> = elementwise(&small);
    for (s, d) in small.iter().zip(&out) {
        assert_eq!(*d, *s as f32, "{s}");
    }
    elementwise::<i64, f16>(&small);
    elementwise::<i64, bf16>(&small);
    elementwise::<i64, F8E4M3>(&small);
    elementwise::<i64, u8>(&small);
    elementwise::<i64, bool>(&small);
    let bytes: Vec<u8> = (0..=255).collect();
    elementwise::<u8, f16>(&bytes);
    elementwise::<u8, F8E5M2>(&bytes);
    elementwise::<u8, i64>(&bytes);
    elementwise::<bool, f32>(&[true, false]);
    elementwise::<bool, bf16>(&[true, false]);
    elementwise::<f64, u8>(&values);
    elementwise::<bf16, i64>(&from_f64s::<bf16>(&values));
}

/// Integers beyond 2^53 are not exact in f64: conversion must still round
/// once (as Rust's `as` does), not twice through f64.
#[test]
fn large_i64_rounds_once() {
    let mut big: Vec<i64> = vec![
        (1 << 60) + (1 << 36) + 1, // just above an f32 midpoint; f64 would round it onto the midpoint
        -((1 << 60) + (1 << 36) + 1),
        (1 << 62) + (1 << 38) + 1,
        (1 << 54) + 1,
        (1 << 53) + 1,
        i64::MAX,
        i64::MIN,
        i64::MAX - 1,
        i64::MIN + 1,
    ];
    let mut state = 0x1234_5678_9ABC_DEF0u64;
    for _ in 0..10_000 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        big.push(state as i64);
    }
    let mut f32s = vec![0f32; big.len()];
    convert_slice(&big, &mut f32s).unwrap();
    let mut f64s = vec![0f64; big.len()];
    convert_slice(&big, &mut f64s).unwrap();
    let mut ints = vec![0i64; big.len()];
    convert_slice(&big, &mut ints).unwrap();
    let mut bf16s = vec![bf16::ZERO; big.len()];
    convert_slice(&big, &mut bf16s).unwrap();
    for (i, &v) in big.iter().enumerate() {
        assert_eq!(f32s[i], v as f32, "i64 {v} -> f32");
        assert_eq!(f64s[i], v as f64, "i64 {v} -> f64");
        assert_eq!(ints[i], v, "i64 {v} -> i64 must be exact");
        // bf16: nearest even of the exact integer. i128 holds it exactly.
        let want = nearest_even_bf16_of_int(v);
        assert_eq!(bf16s[i].to_f64(), want, "i64 {v} -> bf16");
    }
}

/// Nearest-even bf16 of an integer, by integer arithmetic.
fn nearest_even_bf16_of_int(v: i64) -> f64 {
    let a = v.unsigned_abs() as u128;
    if a < 256 {
        return v as f64; // exact in bf16
    }
    let shift = 128 - a.leading_zeros() - 8; // keep 8 significant bits
    let (q, rest) = (a >> shift, a & ((1u128 << shift) - 1));
    let half = 1u128 << (shift - 1);
    let q = if rest > half || (rest == half && q % 2 == 1) {
        q + 1
    } else {
        q
    };
    let m = (q << shift) as f64;
    if v < 0 {
        -m
    } else {
        m
    }
}

#[test]
fn length_mismatch_is_an_error_naming_both_lengths() {
    let mut dst = vec![bf16::ZERO; 5];
    let err = convert_slice(&[1.0f32, 2.0, 3.0], &mut dst).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("convert_slice") && msg.contains('3') && msg.contains('5'),
        "{msg}"
    );
    assert_eq!(dst, vec![bf16::ZERO; 5], "dst untouched on error");
    let err = convert_slice::<i64, f32>(&[], &mut [0.0]).unwrap_err();
    assert!(
        err.to_string().contains('0') && err.to_string().contains('1'),
        "{err}"
    );
    convert_slice::<f32, f16>(&[], &mut []).unwrap();
}
