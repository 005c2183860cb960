//! An independent reference for the narrow float formats: the one oracle that
//! amp-dtype's integration tests and `cargo xtask accuracy` both check the
//! encoders and decoders against (xtask includes this file by path).
//!
//! Nothing here uses `amp_dtype` at all: values come from the textbook
//! formula in f64 (which holds every value of every format exactly), and
//! nearest-even rounding is decided by searching the sorted table of every
//! finite value of the format.

#![allow(dead_code)]

/// The parameters of a binary floating-point format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// The format's name (`"f16"`).
    pub name: &'static str,
    /// Exponent field width.
    pub exponent_bits: u32,
    /// Stored mantissa width.
    pub mantissa_bits: u32,
    /// IEEE-like top binade (inf and NaN); false for E4M3FN, whose only NaN is S.1111.111.
    pub ieee_top: bool,
}

/// IEEE binary16.
pub const F16: Spec = Spec {
    name: "f16",
    exponent_bits: 5,
    mantissa_bits: 10,
    ieee_top: true,
};
/// bfloat16.
pub const BF16: Spec = Spec {
    name: "bf16",
    exponent_bits: 8,
    mantissa_bits: 7,
    ieee_top: true,
};
/// OCP E4M3FN.
pub const E4M3: Spec = Spec {
    name: "f8e4m3",
    exponent_bits: 4,
    mantissa_bits: 3,
    ieee_top: false,
};
/// OCP E5M2.
pub const E5M2: Spec = Spec {
    name: "f8e5m2",
    exponent_bits: 5,
    mantissa_bits: 2,
    ieee_top: true,
};

/// What a correct conversion gives: an exact bit pattern, or any NaN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Exactly this bit pattern.
    Bits(u32),
    /// Any NaN pattern.
    Nan,
}

impl Spec {
    /// The exponent bias.
    pub fn bias(&self) -> i32 {
        (1 << (self.exponent_bits - 1)) - 1
    }

    /// Number of bit patterns.
    pub fn patterns(&self) -> u32 {
        1 << (1 + self.exponent_bits + self.mantissa_bits)
    }

    /// The sign bit.
    pub fn sign_bit(&self) -> u32 {
        1 << (self.exponent_bits + self.mantissa_bits)
    }

    /// The exact value of a bit pattern: normal `±2^(e−bias)·(1 + m/2^M)`,
    /// subnormal `±2^(1−bias)·m/2^M`; IEEE top binade is ±inf (m = 0) or NaN;
    /// E4M3FN: only S.1111.111 is NaN.
    pub fn decode(&self, bits: u32) -> f64 {
        let m_bits = self.mantissa_bits;
        let top = (1u32 << self.exponent_bits) - 1;
        let m = bits & ((1 << m_bits) - 1);
        let e = (bits >> m_bits) & top;
        let sign = if bits & self.sign_bit() != 0 {
            -1.0
        } else {
            1.0
        };
        if self.ieee_top && e == top {
            return if m == 0 {
                sign * f64::INFINITY
            } else {
                f64::NAN
            };
        }
        if !self.ieee_top && e == top && m == (1 << m_bits) - 1 {
            return f64::NAN;
        }
        let fraction = m as f64 / 2f64.powi(m_bits as i32);
        if e == 0 {
            sign * 2f64.powi(1 - self.bias()) * fraction
        } else {
            sign * 2f64.powi(e as i32 - self.bias()) * (1.0 + fraction)
        }
    }

    /// The spacing of the format at magnitude `a` (subnormal spacing below the
    /// smallest normal).
    pub fn ulp_at(&self, a: f64) -> f64 {
        let min_e = 1 - self.bias();
        let e = if a < 2f64.powi(min_e) {
            min_e
        } else {
            exponent_of(a)
        };
        2f64.powi(e - self.mantissa_bits as i32)
    }

    /// The smallest positive normal value.
    pub fn smallest_normal(&self) -> f64 {
        2f64.powi(1 - self.bias())
    }

    /// Every non-negative finite value, in increasing order; the index is the bit pattern.
    pub fn positive_finite(&self) -> Vec<f64> {
        (0..self.sign_bit())
            .map(|b| self.decode(b))
            .take_while(|v| v.is_finite())
            .collect()
    }

    /// Bit pattern of the largest finite value.
    pub fn max_bits(&self) -> u32 {
        self.positive_finite().len() as u32 - 1
    }

    /// The largest finite value.
    pub fn max(&self) -> f64 {
        self.decode(self.max_bits())
    }

    /// The value one ulp above max (2^(emax+1) for IEEE formats, 480 for
    /// E4M3FN): rounding up to it is overflow.
    pub fn beyond_max(&self) -> f64 {
        let table = self.positive_finite();
        let n = table.len();
        2.0 * table[n - 1] - table[n - 2]
    }
}

/// `floor(log2(a))` for a positive finite normal f64.
fn exponent_of(a: f64) -> i32 {
    ((a.to_bits() >> 52) & 0x7FF) as i32 - 1023
}

/// A format's table of values and its rounding rules.
pub struct Reference {
    /// The format.
    pub spec: Spec,
    /// Non-negative finite values in increasing order (index = bit pattern),
    /// then the overflow candidate one ulp above max.
    pub table: Vec<f64>,
    /// Bit pattern of the largest finite value.
    pub max_bits: u32,
    /// The largest finite value.
    pub max: f64,
    /// The value of every bit pattern (a lookup table of [`Spec::decode`]).
    values: Vec<f64>,
}

impl Reference {
    /// Builds the table of every finite value of `spec`.
    pub fn new(spec: Spec) -> Self {
        let mut table = spec.positive_finite();
        let n = table.len();
        let max = table[n - 1];
        table.push(2.0 * max - table[n - 2]);
        let values = (0..spec.patterns()).map(|b| spec.decode(b)).collect();
        Reference {
            spec,
            table,
            max_bits: n as u32 - 1,
            max,
            values,
        }
    }

    /// The value of bit pattern `bits` (as [`Spec::decode`], from a table).
    #[inline]
    pub fn decode(&self, bits: u32) -> f64 {
        self.values[bits as usize]
    }

    fn overflow_index(&self) -> usize {
        self.table.len() - 1
    }

    /// Index of the largest table entry `<= a` (finite, non-negative).
    pub fn floor_index(&self, a: f64) -> usize {
        self.table.partition_point(|&v| v <= a) - 1
    }

    fn sign(&self, x: f64) -> u32 {
        if x.is_sign_negative() {
            self.spec.sign_bit()
        } else {
            0
        }
    }

    fn overflow(&self, sign: u32) -> Expect {
        if self.spec.ieee_top {
            Expect::Bits(sign | self.overflow_index() as u32)
        } else {
            Expect::Nan
        }
    }

    /// Nearest-even given `lo`, the floor index of |x|.
    pub fn nearest_even_from(&self, x: f64, lo: usize) -> Expect {
        let sign = self.sign(x);
        let a = x.abs();
        if lo >= self.overflow_index() {
            return self.overflow(sign);
        }
        let k = if self.table[lo] == a {
            lo
        } else {
            let mid = (self.table[lo] + self.table[lo + 1]) / 2.0; // exact in f64
            if a < mid || (a == mid && lo & 1 == 0) {
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

    /// Round to nearest, ties to even; overflow (reaching the value one ulp
    /// above max, ties included by the even rule) gives ±inf, or NaN for E4M3FN.
    pub fn nearest_even(&self, x: f64) -> Expect {
        if x.is_nan() {
            return Expect::Nan;
        }
        if x.is_infinite() {
            return self.overflow(self.sign(x));
        }
        self.nearest_even_from(x, self.floor_index(x.abs()))
    }

    /// Nearest even with finite overflow clamped to ±max; ±inf stays ±inf
    /// where the format has it, else ±max; NaN stays NaN.
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

    /// Toward zero for finite `x`; finite overflow clamps to ±max.
    pub fn toward_zero(&self, x: f64) -> Expect {
        let k = self.floor_index(x.abs()).min(self.max_bits as usize);
        Expect::Bits(self.sign(x) | k as u32)
    }

    /// Whether bits `got` satisfy `want`.
    pub fn matches(&self, got: u32, want: Expect) -> bool {
        match want {
            Expect::Nan => self.decode(got).is_nan(),
            Expect::Bits(b) => got == b,
        }
    }

    /// The literal brute force: the nearest finite value by scanning every
    /// candidate. Only for the 8-bit formats; it validates `nearest_even`.
    pub fn nearest_even_linear(&self, x: f64) -> Expect {
        if x.is_nan() {
            return Expect::Nan;
        }
        let sign = self.sign(x);
        let a = x.abs();
        if a >= self.table[self.overflow_index()] {
            return self.overflow(sign);
        }
        let mut best = 0usize;
        for (i, &v) in self.table.iter().enumerate() {
            let (d, best_d) = ((v - a).abs(), (self.table[best] - a).abs());
            if d < best_d || (d == best_d && i & 1 == 0) {
                best = i;
            }
        }
        if best == self.overflow_index() {
            self.overflow(sign)
        } else {
            Expect::Bits(sign | best as u32)
        }
    }

    /// The two representable neighbours of finite `x` (equal when `x` is
    /// representable), as bit patterns. `x` must not exceed max in magnitude.
    pub fn neighbours(&self, x: f64) -> (u32, u32) {
        let sign = self.sign(x);
        let a = x.abs();
        let lo = self.floor_index(a);
        assert!(lo < self.overflow_index(), "{x} is beyond max");
        let hi = if self.table[lo] == a { lo } else { lo + 1 };
        (sign | lo as u32, sign | hi as u32)
    }

    /// The value `want` stands for (NaN for `Expect::Nan`).
    pub fn value(&self, want: Expect) -> f64 {
        match want {
            Expect::Nan => f64::NAN,
            Expect::Bits(b) => self.decode(b),
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
