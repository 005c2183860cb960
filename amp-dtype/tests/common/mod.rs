//! Test support shared by amp-dtype's integration tests: the independent
//! oracle ([`oracle`], also used by `cargo xtask accuracy`) and the encoders
//! under test for each narrow format ([`Narrow`]).

#![allow(dead_code)]

mod oracle;

pub use oracle::*;

use amp_dtype::{bf16, f16, Element, RoundFrom, RoundingMode, F8E4M3, F8E5M2};

/// An f32 → bits conversion under test, with a name for failure messages.
pub type EncodeF32 = (&'static str, fn(f32) -> u32);
/// An f64 → bits conversion under test.
pub type EncodeF64 = (&'static str, fn(f64) -> u32);

/// A narrow format type: its spec, its bits, and every public way to round into it.
pub trait Narrow: Element + RoundFrom {
    const SPEC: Spec;
    fn bits(self) -> u32;
    fn from_bits32(bits: u32) -> Self;
    /// Every nearest-even f32 encoder the crate offers for this type.
    fn encoders_f32() -> Vec<EncodeF32> {
        vec![
            ("Element::from_f32", |x| {
                <Self as Element>::from_f32(x).bits()
            }),
            ("Element::from_f64(f32 as f64)", |x| {
                <Self as Element>::from_f64(x as f64).bits()
            }),
            ("RoundFrom::round_from_f32", |x| {
                Self::round_from_f32(x, RoundingMode::NearestEven, 0).bits()
            }),
        ]
    }
    /// Every nearest-even f64 encoder the crate offers for this type.
    fn encoders_f64() -> Vec<EncodeF64> {
        vec![
            ("Element::from_f64", |x| {
                <Self as Element>::from_f64(x).bits()
            }),
            ("RoundFrom::round_from_f64", |x| {
                Self::round_from_f64(x, RoundingMode::NearestEven, 0).bits()
            }),
        ]
    }
}

impl Narrow for f16 {
    const SPEC: Spec = F16;
    fn bits(self) -> u32 {
        self.to_bits() as u32
    }
    fn from_bits32(bits: u32) -> Self {
        f16::from_bits(bits as u16)
    }
    fn encoders_f32() -> Vec<EncodeF32> {
        vec![
            ("Element::from_f32", |x| {
                <Self as Element>::from_f32(x).bits()
            }),
            ("half::f16::from_f32", |x| f16::from_f32(x).bits()),
            ("Element::from_f64(f32 as f64)", |x| {
                <Self as Element>::from_f64(x as f64).bits()
            }),
            ("RoundFrom::round_from_f32", |x| {
                Self::round_from_f32(x, RoundingMode::NearestEven, 0).bits()
            }),
        ]
    }
}

impl Narrow for bf16 {
    const SPEC: Spec = BF16;
    fn bits(self) -> u32 {
        self.to_bits() as u32
    }
    fn from_bits32(bits: u32) -> Self {
        bf16::from_bits(bits as u16)
    }
    fn encoders_f32() -> Vec<EncodeF32> {
        vec![
            ("Element::from_f32", |x| {
                <Self as Element>::from_f32(x).bits()
            }),
            ("half::bf16::from_f32", |x| bf16::from_f32(x).bits()),
            ("Element::from_f64(f32 as f64)", |x| {
                <Self as Element>::from_f64(x as f64).bits()
            }),
            ("RoundFrom::round_from_f32", |x| {
                Self::round_from_f32(x, RoundingMode::NearestEven, 0).bits()
            }),
        ]
    }
}

macro_rules! narrow_fp8 {
    ($ty:ident, $spec:expr) => {
        impl Narrow for $ty {
            const SPEC: Spec = $spec;
            fn bits(self) -> u32 {
                self.to_bits() as u32
            }
            fn from_bits32(bits: u32) -> Self {
                $ty::from_bits(bits as u8)
            }
            fn encoders_f32() -> Vec<EncodeF32> {
                vec![
                    ("Element::from_f32", |x| {
                        <Self as Element>::from_f32(x).bits()
                    }),
                    (concat!(stringify!($ty), "::from_f32"), |x| {
                        $ty::from_f32(x).bits()
                    }),
                    ("Element::from_f64(f32 as f64)", |x| {
                        <Self as Element>::from_f64(x as f64).bits()
                    }),
                    ("RoundFrom::round_from_f32", |x| {
                        Self::round_from_f32(x, RoundingMode::NearestEven, 0).bits()
                    }),
                ]
            }
            fn encoders_f64() -> Vec<EncodeF64> {
                vec![
                    ("Element::from_f64", |x| {
                        <Self as Element>::from_f64(x).bits()
                    }),
                    (concat!(stringify!($ty), "::from_f64"), |x| {
                        $ty::from_f64(x).bits()
                    }),
                    ("RoundFrom::round_from_f64", |x| {
                        Self::round_from_f64(x, RoundingMode::NearestEven, 0).bits()
                    }),
                ]
            }
        }
    };
}

narrow_fp8!(F8E4M3, E4M3);
narrow_fp8!(F8E5M2, E5M2);

/// The reference for `spec`, built once per test binary.
pub fn reference(spec: Spec) -> &'static Reference {
    use std::sync::OnceLock;
    static CELLS: [OnceLock<Reference>; 4] = [
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
        OnceLock::new(),
    ];
    let i = [F16, BF16, E4M3, E5M2]
        .iter()
        .position(|s| *s == spec)
        .expect("known spec");
    CELLS[i].get_or_init(|| Reference::new(spec))
}
