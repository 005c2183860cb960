//! An independent reference for the narrow float formats, shared by the
//! integration tests.
//!
//! Nothing here calls into `amp_dtype`'s own encoder or decoder: values are
//! computed from the textbook formula in f64 (which holds every value of every
//! format exactly), and rounding is decided by searching the sorted table of
//! every finite value of the target format.

#![allow(dead_code)]

use amp_dtype::{bf16, f16, Element, RoundFrom, RoundingMode, F8E4M3, F8E5M2};

/// The parameters of a binary floating-point format, as the test sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub name: &'static str,
    pub exponent_bits: u32,
    pub mantissa_bits: u32,
    /// IEEE-like top binade (inf and NaN); false for E4M3FN (only S.1111.111 is NaN).
    pub ieee_top: bool,
}

pub const F16: Spec = Spec {
    name: "f16",
    exponent_bits: 5,
    mantissa_bits: 10,
    ieee_top: true,
};
pub const BF16: Spec = Spec {
    name: "bf16",
    exponent_bits: 8,
    mantissa_bits: 7,
    ieee_top: true,
};
pub const E4M3: Spec = Spec {
    name: "f8e4m3",
    exponent_bits: 4,
    mantissa_bits: 3,
    ieee_top: false,
};
pub const E5M2: Spec = Spec {
    name: "f8e5m2",
    exponent_bits: 5,
    mantissa_bits: 2,
    ieee_top: true,
};

/// The result a correct conversion must give: an exact bit pattern, or any NaN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Bits(u32),
    Nan,
}

impl Spec {
    pub fn bias(&self) -> i32 {
        (1 << (self.exponent_bits - 1)) - 1
    }

    /// Number of bit patterns (2^bits).
    pub fn patterns(&self) -> u32 {
        1 << (1 + self.exponent_bits + self.mantissa_bits)
    }

    pub fn sign_bit(&self) -> u32 {
        1 << (self.exponent_bits + self.mantissa_bits)
    }

    /// The textbook formula, in f64:
    /// normal `sign · 2^(e−bias) · (1 + m/2^M)`, subnormal `sign · 2^(1−bias) · m/2^M`;
    /// IEEE top binade: m = 0 is ±inf, else NaN; E4M3FN: only S.1111.111 is NaN.
    pub fn decode(&self, bits: u32) -> f64 {
        let m_bits = self.mantissa_bits;
        let top_field = (1u32 << self.exponent_bits) - 1;
        let m = bits & ((1 << m_bits) - 1);
        let e = (bits >> m_bits) & top_field;
        let sign = if bits & self.sign_bit() != 0 {
            -1.0
        } else {
            1.0
        };
        if self.ieee_top && e == top_field {
            return if m == 0 {
                sign * f64::INFINITY
            } else {
                f64::NAN
            };
        }
        if !self.ieee_top && e == top_field && m == (1 << m_bits) - 1 {
            return f64::NAN;
        }
        let fraction = m as f64 / 2f64.powi(m_bits as i32);
        if e == 0 {
            sign * 2f64.powi(1 - self.bias()) * fraction
        } else {
            sign * 2f64.powi(e as i32 - self.bias()) * (1.0 + fraction)
        }
    }

    /// Every non-negative finite value, in increasing order; the index is the bit pattern.
    pub fn positive_finite(&self) -> Vec<f64> {
        let mut out = Vec::new();
        for bits in 0..self.sign_bit() {
            let v = self.decode(bits);
            if !v.is_finite() {
                break;
            }
            out.push(v);
        }
        out
    }

    /// Bit pattern of the largest finite value.
    pub fn max_bits(&self) -> u32 {
        self.positive_finite().len() as u32 - 1
    }

    pub fn max(&self) -> f64 {
        self.decode(self.max_bits())
    }

    /// The value one ulp above max (2^(emax+1) for IEEE formats, 480 for E4M3FN):
    /// rounding up to it is overflow.
    pub fn beyond_max(&self) -> f64 {
        let table = self.positive_finite();
        let n = table.len();
        2.0 * table[n - 1] - table[n - 2]
    }

    /// The spacing of the format at magnitude `a` (the subnormal spacing below
    /// the smallest normal).
    pub fn ulp_at(&self, a: f64) -> f64 {
        let min_e = 1 - self.bias();
        let e = if a < 2f64.powi(min_e) {
            min_e
        } else {
            a.log2().floor() as i32
        };
        2f64.powi(e - self.mantissa_bits as i32)
    }
}

/// A reference for one format: its table of finite values and the rounding rules.
pub struct Reference {
    pub spec: Spec,
    /// Non-negative finite values, then `beyond_max` (the overflow candidate).
    pub table: Vec<f64>,
    /// Bit pattern of the largest finite value.
    pub max_bits: u32,
    /// The largest finite value.
    pub max: f64,
}

impl Reference {
    pub fn new(spec: Spec) -> Self {
        let mut table = spec.positive_finite();
        table.push(spec.beyond_max());
        let max_bits = table.len() as u32 - 2;
        Reference {
            spec,
            max_bits,
            max: table[max_bits as usize],
            table,
        }
    }

    /// Index of the overflow candidate (one past the largest finite value).
    fn overflow_index(&self) -> usize {
        self.table.len() - 1
    }

    /// Index of the largest table value `<= a` (a finite and non-negative),
    /// by search over every finite value.
    fn floor_index(&self, a: f64) -> usize {
        self.table.partition_point(|&v| v <= a) - 1
    }

    fn sign(&self, x: f64) -> u32 {
        if x.is_sign_negative() {
            self.spec.sign_bit()
        } else {
            0
        }
    }

    /// What overflow gives with the non-saturating rule: ±inf, or NaN for E4M3FN.
    fn overflow(&self, sign: u32) -> Expect {
        if self.spec.ieee_top {
            Expect::Bits(sign | self.overflow_index() as u32)
        } else {
            Expect::Nan
        }
    }

    /// Round to nearest, ties to the even bit pattern (even mantissa); overflow
    /// to ±inf (NaN for E4M3FN) once the value reaches the overflow candidate or
    /// passes the midpoint between max and it (a tie there goes to even too).
    pub fn nearest_even(&self, x: f64) -> Expect {
        if x.is_nan() {
            return Expect::Nan;
        }
        let sign = self.sign(x);
        let a = x.abs();
        if a.is_infinite() {
            return self.overflow(sign);
        }
        let lo = self.floor_index(a);
        if lo == self.overflow_index() {
            return self.overflow(sign);
        }
        let k = if self.table[lo] == a {
            lo
        } else {
            // Exact in f64: one bit more than the format has.
            let mid = (self.table[lo] + self.table[lo + 1]) / 2.0;
            if a < mid || (a == mid && lo % 2 == 0) {
                lo
            } else {
                lo + 1
            }
        };
        if k == self.overflow_index() {
            self.overflow(sign)
        } else {
            Expect::Bits(sign | k as u32)
        }
    }

    /// The literal brute force: the nearest finite value by scanning every
    /// candidate. Only for the 8-bit formats; used to validate `nearest_even`.
    pub fn nearest_even_linear(&self, x: f64) -> Expect {
        if x.is_nan() {
            return Expect::Nan;
        }
        let sign = self.sign(x);
        let a = x.abs();
        if a >= *self.table.last().unwrap() {
            return self.overflow(sign);
        }
        let mut best = 0usize;
        for (i, &v) in self.table.iter().enumerate() {
            let (d, best_d) = ((v - a).abs(), (self.table[best] - a).abs());
            if d < best_d || (d == best_d && i % 2 == 0) {
                best = i;
            }
        }
        if best == self.overflow_index() {
            self.overflow(sign)
        } else {
            Expect::Bits(sign | best as u32)
        }
    }

    /// Like `nearest_even`, but finite overflow clamps to ±max; NaN stays NaN;
    /// ±inf stays ±inf where the format has it, else becomes ±max.
    pub fn nearest_even_saturating(&self, x: f64) -> Expect {
        if x.is_nan() {
            return Expect::Nan;
        }
        let sign = self.sign(x);
        if x.is_infinite() && self.spec.ieee_top {
            return self.overflow(sign);
        }
        match self.nearest_even(x) {
            Expect::Nan => Expect::Bits(sign | self.max_bits),
            Expect::Bits(b) if b & !self.spec.sign_bit() == self.overflow_index() as u32 => {
                Expect::Bits(sign | self.max_bits)
            }
            e => e,
        }
    }

    /// Round toward zero for finite `x`: the largest magnitude not above |x|;
    /// finite overflow clamps to ±max.
    pub fn toward_zero(&self, x: f64) -> Expect {
        assert!(x.is_finite());
        let sign = self.sign(x);
        let k = self.floor_index(x.abs()).min(self.overflow_index() - 1);
        Expect::Bits(sign | k as u32)
    }

    /// The two representable neighbours of finite `x` (equal when `x` is representable),
    /// as bit patterns. `x` must not exceed max in magnitude.
    pub fn neighbours(&self, x: f64) -> (u32, u32) {
        let sign = self.sign(x);
        let a = x.abs();
        let lo = self.floor_index(a);
        assert!(lo < self.overflow_index(), "{x} is beyond max");
        let hi = if self.table[lo] == a { lo } else { lo + 1 };
        (sign | lo as u32, sign | hi as u32)
    }

    /// Whether bits `got` satisfy `want`.
    pub fn matches(&self, got: u32, want: Expect) -> bool {
        match want {
            Expect::Nan => self.spec.decode(got).is_nan(),
            Expect::Bits(b) => got == b,
        }
    }
}

/// `next_up` for f32 (std's is newer than the workspace MSRV).
pub fn next_up_f32(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f32::from_bits(1);
    }
    let b = x.to_bits();
    f32::from_bits(if x > 0.0 { b + 1 } else { b - 1 })
}

pub fn next_down_f32(x: f32) -> f32 {
    -next_up_f32(-x)
}

pub fn next_up_f64(x: f64) -> f64 {
    if x.is_nan() || x == f64::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f64::from_bits(1);
    }
    let b = x.to_bits();
    f64::from_bits(if x > 0.0 { b + 1 } else { b - 1 })
}

pub fn next_down_f64(x: f64) -> f64 {
    -next_up_f64(-x)
}

/// The points around every representable value of `spec`: each value, each
/// midpoint between neighbours (including max and the overflow candidate, i.e.
/// the overflow threshold), and the f64 values just above and below each.
pub fn structured_f64(spec: Spec) -> Vec<f64> {
    let reference = Reference::new(spec);
    let mut points = Vec::new();
    for w in reference.table.windows(2) {
        points.push(w[0]);
        points.push((w[0] + w[1]) / 2.0);
    }
    points.push(*reference.table.last().unwrap());
    let mut out = Vec::with_capacity(points.len() * 6);
    for p in points {
        for v in [p, next_up_f64(p), next_down_f64(p)] {
            out.push(v);
            out.push(-v);
        }
    }
    out.extend([
        0.0,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MAX,
        f64::MIN_POSITIVE,
        5e-324,
    ]);
    out.extend([
        f64::NAN,
        -f64::NAN,
        f64::from_bits(0x7FF0_0000_0000_0001),
        f64::from_bits(0xFFF8_0000_0000_0001),
    ]);
    out
}

/// The f32 version of [`structured_f64`], plus f32 subnormals, f32::MAX and NaN payloads.
pub fn structured_f32(spec: Spec) -> Vec<f32> {
    let reference = Reference::new(spec);
    let mut points = Vec::new();
    for w in reference.table.windows(2) {
        points.push(w[0]);
        points.push((w[0] + w[1]) / 2.0);
    }
    points.push(*reference.table.last().unwrap());
    let mut out = Vec::with_capacity(points.len() * 6 + 200);
    for p in points {
        let f = p as f32;
        // Every value and midpoint of these formats is an f32 (bf16's overflow candidate 2^128 is not).
        assert!(f as f64 == p || f.is_infinite(), "{p} is not an f32");
        for v in [f, next_up_f32(f), next_down_f32(f)] {
            out.push(v);
            out.push(-v);
        }
    }
    for k in 0..23 {
        out.push(f32::from_bits(1 << k));
        out.push(f32::from_bits((1 << k) | 1));
    }
    out.extend([
        f32::from_bits(0x007F_FFFF),
        f32::from_bits(0x0040_0001),
        f32::MIN_POSITIVE,
    ]);
    out.extend([0.0, f32::MAX, f32::INFINITY]);
    let positives = out.len();
    for i in 0..positives {
        let v = out[i];
        out.push(-v);
    }
    for payload in [
        0x7FC0_0000u32,
        0x7F80_0001,
        0x7FBF_FFFF,
        0x7FFF_FFFF,
        0x7FC0_0001,
        0x7FA0_0000,
        0x7F80_2000,
    ] {
        out.push(f32::from_bits(payload));
        out.push(f32::from_bits(payload | 0x8000_0000));
    }
    out
}

/// The union of the structured f32 samples of every format (each format's
/// neighbourhoods are interesting inputs for every other).
pub fn structured_f32_all() -> Vec<f32> {
    let mut out: Vec<f32> = [F16, BF16, E4M3, E5M2]
        .into_iter()
        .flat_map(structured_f32)
        .collect();
    out.sort_by_key(|x| x.to_bits());
    out.dedup_by_key(|x| x.to_bits());
    out
}

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
