//! Conversion checks for f16, bf16, F8E4M3 and F8E5M2: exhaustive decoding of
//! every bit pattern, round trips of every finite value, nearest-even
//! encoding of a structured sample and of a sweep over the f32 bit patterns,
//! saturation and toward-zero rounding, all against [`super::reference`].

use super::reference::{self, Expect, Reference, Spec};
use super::Mode;
use crate::report::Row;
use amp_dtype::{bf16, f16, DType, Element, RoundFrom, RoundingMode, F8E4M3, F8E5M2};
use std::time::Instant;

/// A narrow float type under test.
trait Narrow: Element + RoundFrom {
    const SPEC: Spec;
    /// Whether `from_f32` is fast enough (a few ns) to sweep every f32 in `--full`.
    const FAST_FROM_F32: bool = false;
    fn bits(self) -> u32;
    fn from_bits(bits: u32) -> Self;
    /// `from_f32_saturating`, for the types that have it.
    fn saturating() -> Option<fn(f32) -> u32> {
        None
    }
}

impl Narrow for f16 {
    const SPEC: Spec = reference::F16;
    const FAST_FROM_F32: bool = true;
    fn bits(self) -> u32 {
        self.to_bits().into()
    }
    fn from_bits(bits: u32) -> Self {
        f16::from_bits(bits as u16)
    }
}

impl Narrow for bf16 {
    const SPEC: Spec = reference::BF16;
    const FAST_FROM_F32: bool = true;
    fn bits(self) -> u32 {
        self.to_bits().into()
    }
    fn from_bits(bits: u32) -> Self {
        bf16::from_bits(bits as u16)
    }
}

impl Narrow for F8E4M3 {
    const SPEC: Spec = reference::E4M3;
    fn bits(self) -> u32 {
        self.to_bits().into()
    }
    fn from_bits(bits: u32) -> Self {
        F8E4M3::from_bits(bits as u8)
    }
    fn saturating() -> Option<fn(f32) -> u32> {
        Some(|x| F8E4M3::from_f32_saturating(x).to_bits().into())
    }
}

impl Narrow for F8E5M2 {
    const SPEC: Spec = reference::E5M2;
    fn bits(self) -> u32 {
        self.to_bits().into()
    }
    fn from_bits(bits: u32) -> Self {
        F8E5M2::from_bits(bits as u8)
    }
    fn saturating() -> Option<fn(f32) -> u32> {
        Some(|x| F8E5M2::from_f32_saturating(x).to_bits().into())
    }
}

/// Running totals of one check.
#[derive(Debug, Default, Clone)]
struct Stats {
    checked: u64,
    mismatches: u64,
    nan_inf: u64,
    max_abs_err: f64,
    max_rel_err: f64,
    ulps: f64,
    example: Option<String>,
}

impl Stats {
    fn merge(mut self, other: Stats) -> Stats {
        self.checked += other.checked;
        self.mismatches += other.mismatches;
        self.nan_inf += other.nan_inf;
        self.max_abs_err = self.max_abs_err.max(other.max_abs_err);
        self.max_rel_err = self.max_rel_err.max(other.max_rel_err);
        self.ulps = self.ulps.max(other.ulps);
        self.example = self.example.or(other.example);
        self
    }

    /// Records the error of result `got` against the exact input `x`; inputs
    /// beyond ±max (where the overflow rule, not rounding, decides) are left out.
    fn record_error(&mut self, r: &Reference, x: f64, got: f64) {
        if !x.is_finite() || !got.is_finite() || x.abs() > r.max {
            return;
        }
        let err = (got - x).abs();
        self.max_abs_err = self.max_abs_err.max(err);
        self.ulps = self.ulps.max(err / r.spec.ulp_at(got.abs().min(x.abs())));
        if x.abs() >= r.spec.smallest_normal() {
            self.max_rel_err = self.max_rel_err.max(err / x.abs());
        }
    }

    fn mismatch(&mut self, got: f64, want: f64, describe: impl FnOnce() -> String) {
        self.mismatches += 1;
        if got.is_nan() != want.is_nan() || got.is_infinite() != want.is_infinite() {
            self.nan_inf += 1;
        }
        if self.example.is_none() {
            self.example = Some(describe());
        }
    }

    /// Checks encoded bits `got` of input `x` against `want`.
    #[inline]
    fn check(
        &mut self,
        r: &Reference,
        x: f64,
        got: u32,
        want: Expect,
        describe: impl FnOnce() -> String,
    ) {
        self.checked += 1;
        let value = r.decode(got);
        if !r.matches(got, want) {
            let want_value = r.value(want);
            self.mismatch(value, want_value, || {
                format!(
                    "{}: got {got:#x} ({value:e}), want {want:?} ({want_value:e})",
                    describe()
                )
            });
        }
        self.record_error(r, x, value);
    }

    /// Checks a decoded value against the exact one (same bits, or both NaN).
    fn check_value(
        &mut self,
        r: &Reference,
        got: f64,
        want: f64,
        describe: impl FnOnce() -> String,
    ) {
        self.checked += 1;
        let same = (got.is_nan() && want.is_nan()) || got.to_bits() == want.to_bits();
        if !same {
            self.mismatch(got, want, || {
                format!("{}: got {got:e}, want {want:e}", describe())
            });
            if got.is_finite() && want.is_finite() {
                self.ulps = self
                    .ulps
                    .max((got - want).abs() / r.spec.ulp_at(want.abs()));
            }
        }
    }

    fn row(self, name: impl Into<String>, dtype: DType, tolerance_ulps: f64) -> Row {
        let pass = self.mismatches == 0 && self.ulps <= tolerance_ulps;
        Row {
            group: "conversion",
            name: name.into(),
            dtype,
            backend: "scalar",
            checked: self.checked,
            mismatches: self.mismatches,
            nan_inf: self.nan_inf,
            max_abs_err: self.max_abs_err,
            max_rel_err: self.max_rel_err,
            ulps: self.ulps,
            tolerance_ulps,
            pass,
            example: self.example,
        }
    }
}

/// The rows of every conversion check, for every narrow format.
pub fn rows(mode: Mode) -> Vec<Row> {
    let mut rows = Vec::new();
    rows.extend(format_rows::<f16>(mode));
    rows.extend(format_rows::<bf16>(mode));
    rows.extend(format_rows::<F8E4M3>(mode));
    rows.extend(format_rows::<F8E5M2>(mode));
    rows
}

/// Which f32 bit patterns a sweep takes: every `stride`-th. Strides are odd,
/// so every low-bit pattern (both sides of every tie) occurs. `--full` takes
/// every f32 where the encoder is fast (half's f16/bf16 `from_f32`, ~5 ns),
/// and 1 in 17 through amp-dtype's generic single-rounding encoder (~30 ns,
/// which would take minutes per format for all 2^32).
fn sweep_stride(mode: Mode, fast_encoder: bool) -> u32 {
    match (mode, fast_encoder) {
        (Mode::Quick, _) => 257,
        (Mode::Full, true) => 1,
        (Mode::Full, false) => 17,
    }
}

fn stride_label(stride: u32) -> String {
    if stride == 1 {
        "every".to_string()
    } else {
        format!("1 in {stride}")
    }
}

fn format_rows<T: Narrow>(mode: Mode) -> Vec<Row> {
    let start = Instant::now();
    let r = Reference::new(T::SPEC);
    let dtype = T::DTYPE;
    let mut rows = vec![
        decode::<T>(&r, "decode bits -> f32", |x| x.to_f32().into()),
        decode::<T>(&r, "decode bits -> f64", |x| x.to_f64()),
        round_trip::<T>(&r, "round trip via f32", |x| T::from_f32(x.to_f32()).bits()),
        round_trip::<T>(&r, "round trip via f64", |x| T::from_f64(x.to_f64()).bits()),
    ];

    let sample32 = reference::structured_f32(r.spec);
    let sample64 = reference::structured_f64(r.spec);
    let mut s = Stats::default();
    for &x in &sample32 {
        s.check(
            &r,
            x.into(),
            T::from_f32(x).bits(),
            r.nearest_even(x.into()),
            || format!("from_f32({x:e})"),
        );
    }
    rows.push(s.row("encode f32 structured (from_f32)", dtype, 0.5));
    let mut s = Stats::default();
    for &x in &sample64 {
        s.check(&r, x, T::from_f64(x).bits(), r.nearest_even(x), || {
            format!("from_f64({x:e})")
        });
    }
    rows.push(s.row("encode f64 structured (from_f64)", dtype, 0.5));

    let from_f32_stride = sweep_stride(mode, T::FAST_FROM_F32);
    let s = sweep(&r, from_f32_stride, |x| T::from_f32(x).bits());
    rows.push(s.row(
        format!("encode {} f32 (from_f32)", stride_label(from_f32_stride)),
        dtype,
        0.5,
    ));
    let from_f64_stride = sweep_stride(mode, false);
    let s = sweep(&r, from_f64_stride, |x| T::from_f64(x.into()).bits());
    rows.push(s.row(
        format!("encode {} f32 (from_f64)", stride_label(from_f64_stride)),
        dtype,
        0.5,
    ));

    if let Some(saturating) = T::saturating() {
        let mut s = Stats::default();
        for &x in &sample32 {
            let want = r.nearest_even_saturating(x.into());
            s.check(&r, x.into(), saturating(x), want, || {
                format!("from_f32_saturating({x:e})")
            });
        }
        rows.push(s.row("encode f32 saturating", dtype, 0.5));
    }

    let mut s = Stats::default();
    for &x in sample32.iter().filter(|x| x.is_finite()) {
        let got = T::round_from_f32(x, RoundingMode::TowardZero, 0).bits();
        s.check(&r, x.into(), got, r.toward_zero(x.into()), || {
            format!("toward_zero({x:e})")
        });
    }
    rows.push(s.row("encode f32 toward zero", dtype, 1.0));

    eprintln!(
        "  {:<7} {} checks in {:.1?}",
        dtype.name(),
        rows.len(),
        start.elapsed()
    );
    rows
}

fn decode<T: Narrow>(r: &Reference, name: &str, to: fn(T) -> f64) -> Row {
    let mut s = Stats::default();
    for bits in 0..r.spec.patterns() {
        s.check_value(r, to(T::from_bits(bits)), r.spec.decode(bits), || {
            format!("bits {bits:#x}")
        });
    }
    s.row(name, T::DTYPE, 0.0)
}

fn round_trip<T: Narrow>(r: &Reference, name: &str, through: fn(T) -> u32) -> Row {
    let mut s = Stats::default();
    for bits in 0..r.spec.patterns() {
        let value = r.spec.decode(bits);
        if value.is_finite() {
            s.check(
                r,
                value,
                through(T::from_bits(bits)),
                Expect::Bits(bits),
                || format!("bits {bits:#x}"),
            );
        }
    }
    s.row(name, T::DTYPE, 0.0)
}

/// Every `stride`-th non-negative f32 bit pattern (+inf and the NaNs
/// included), and its negation, through `encode`, against nearest even.
/// The f32 values rise with the bit pattern, so each thread walks the
/// reference table alongside instead of searching it.
fn sweep(r: &Reference, stride: u32, encode: impl Fn(f32) -> u32 + Sync) -> Stats {
    let count = (1u64 << 31).div_ceil(u64::from(stride));
    let threads = super::threads() as u64;
    let per_thread = count.div_ceil(threads);
    let encode = &encode;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (first, last) = (t * per_thread, ((t + 1) * per_thread).min(count));
                scope.spawn(move || sweep_range(r, stride, first..last, encode))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("sweep thread"))
            .fold(Stats::default(), Stats::merge)
    })
}

fn sweep_range(
    r: &Reference,
    stride: u32,
    samples: std::ops::Range<u64>,
    encode: &impl Fn(f32) -> u32,
) -> Stats {
    let mut s = Stats::default();
    let sign = r.spec.sign_bit();
    let mut lo = None;
    for k in samples {
        let x = f32::from_bits((k * u64::from(stride)) as u32);
        let a = f64::from(x);
        let want = if x.is_finite() {
            let i = lo.get_or_insert_with(|| r.floor_index(a));
            while *i + 1 < r.table.len() && r.table[*i + 1] <= a {
                *i += 1;
            }
            r.nearest_even_from(a, *i)
        } else {
            r.nearest_even(a)
        };
        let negated = match want {
            Expect::Bits(b) => Expect::Bits(b | sign),
            Expect::Nan => Expect::Nan,
        };
        s.check(r, a, encode(x), want, || {
            format!("{x:e} ({:#010x})", x.to_bits())
        });
        s.check(r, -a, encode(-x), negated, || {
            format!("{:e} ({:#010x})", -x, (-x).to_bits())
        });
    }
    s
}
