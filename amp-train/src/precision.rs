//! [`Precision`]: which dtype a training run computes in, and why.

use amp_dist::{ProcessGroup, ReduceOp};
use amp_tensor::{DType, Device, DeviceKind, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// The precision a run asks for (`--precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// On a CPU, the fastest of f32, bf16 and f16 as measured on this
    /// machine ([`ProductTimes`]; a low precision must be at least 10%
    /// faster than f32 to be chosen, f16 at least 10% faster than bf16). On
    /// CUDA, bf16 where the device supports it natively, else f16 with a
    /// `GradScaler`.
    #[default]
    Auto,
    /// Plain f32, no autocast.
    F32,
    /// Autocast to bf16 (no loss scaling needed: bf16 has f32's exponent range).
    BF16,
    /// Autocast to f16 with dynamic loss scaling (`GradScaler`).
    F16,
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Auto => "auto",
            Precision::F32 => "f32",
            Precision::BF16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}

/// What a [`Precision`] resolves to on a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrecisionChoice {
    /// What was asked for.
    pub requested: Precision,
    /// The dtype the forward pass computes in (f32, bf16 or f16); serialised by name (`"bf16"`).
    #[serde(with = "dtype_name")]
    pub dtype: DType,
    /// True if a `GradScaler` scales the loss (f16 only).
    pub grad_scaler: bool,
    /// Why this dtype, in words.
    pub reason: String,
}

impl PrecisionChoice {
    /// The autocast region's dtype, or `None` for plain f32.
    pub fn autocast_dtype(&self) -> Option<DType> {
        (self.dtype != DType::F32).then_some(self.dtype)
    }
}

impl Precision {
    /// Resolves this precision on `device`. `Auto` on a CPU measures
    /// ([`ProductTimes::measure`], once per process and device) and takes
    /// [`choose_by_speed`]'s choice; on CUDA it follows bf16 support.
    pub fn resolve(self, device: &Device) -> PrecisionChoice {
        let native_bf16 = device.is_bf16_supported();
        let cuda = device.kind() == DeviceKind::Cuda;
        let (dtype, reason) = match self {
            Precision::Auto if cuda && native_bf16 => {
                (DType::BF16, format!("auto: {device} supports bf16 natively (is_bf16_supported() is true)"))
            }
            Precision::Auto if cuda => (
                DType::F16,
                format!("auto: {device} has no native bf16, so f16 with a GradScaler (dynamic loss scaling)"),
            ),
            Precision::Auto => match ProductTimes::measured(device) {
                Ok(times) => choose_by_speed(device, &times),
                Err(e) => (
                    DType::F32,
                    format!("auto: f32, because measuring the low precisions on {device} failed: {e}"),
                ),
            },
            Precision::F32 => (DType::F32, "requested with --precision f32".into()),
            Precision::BF16 if native_bf16 => (DType::BF16, format!("requested with --precision bf16 ({device} runs it natively)")),
            Precision::BF16 => {
                (DType::BF16, format!("requested with --precision bf16 ({device} has no native bf16: emulated, likely slower)"))
            }
            Precision::F16 => (DType::F16, "requested with --precision f16 (with a GradScaler)".into()),
        };
        PrecisionChoice {
            requested: self,
            dtype,
            grad_scaler: dtype == DType::F16,
            reason,
        }
    }
}

/// Seconds of one linear layer's product under each precision on a device:
/// a `[256, 1024]` f32 activation times a `[1024, 1024]` f32 weight, both
/// cast to the dtype first as autocast casts them (for f32 no cast), the
/// median of 5 after a warm-up. The products are what a low precision can
/// speed up, and the casts what it costs; on a CPU without bf16 arithmetic
/// (AVX2, AVX-512 without AVX512-BF16) bf16 and f16 operands are widened to
/// f32 while they are packed and multiplied on the f32 FMA kernels, so only
/// the measurement can say whether the halved memory traffic pays for the
/// casts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProductTimes {
    /// Seconds in f32.
    pub f32: f64,
    /// Seconds in bf16, casts included.
    pub bf16: f64,
    /// Seconds in f16, casts included.
    pub f16: f64,
}

impl ProductTimes {
    /// Measures the three products on `device` (about 0.1 s on a 2-core CPU),
    /// interleaved — f32, bf16, f16, f32, … — so a slow phase of the machine
    /// slows all three alike instead of deciding the choice.
    pub fn measure(device: &Device) -> amp_tensor::Result<ProductTimes> {
        const DTYPES: [DType; 3] = [DType::F32, DType::BF16, DType::F16];
        let x = Tensor::randn(&[256, 1024], DType::F32, device, 11)?;
        let w = Tensor::randn(&[1024, 1024], DType::F32, device, 12)?;
        let product = |dtype: DType| -> amp_tensor::Result<f64> {
            let start = Instant::now();
            let (a, b) = (x.to_dtype(dtype)?, w.to_dtype(dtype)?);
            let y = amp_tensor::ops::matmul(&a, &b)?;
            // Read back, so a deferred backend runs the product here too.
            y.to_dtype(DType::F32)?.to_vec::<f32>()?;
            Ok(start.elapsed().as_secs_f64())
        };
        for dtype in DTYPES {
            product(dtype)?; // warm-up
        }
        let mut seconds: [Vec<f64>; 3] = Default::default();
        for _ in 0..5 {
            for (times, dtype) in seconds.iter_mut().zip(DTYPES) {
                times.push(product(dtype)?);
            }
        }
        let [f32, bf16, f16] = seconds.map(|mut v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        });
        Ok(ProductTimes { f32, bf16, f16 })
    }

    /// [`ProductTimes::measure`] once per process and device: every later
    /// call returns the first measurement, so a run that resolves its
    /// precision twice (the binary's banner, then the trainer) gets one answer.
    pub fn measured(device: &Device) -> amp_tensor::Result<ProductTimes> {
        static MEASURED: OnceLock<Mutex<HashMap<String, ProductTimes>>> = OnceLock::new();
        let memo = MEASURED.get_or_init(Default::default);
        let key = device.to_string();
        if let Some(times) = memo.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(*times);
        }
        let times = ProductTimes::measure(device)?;
        let mut memo = memo.lock().unwrap_or_else(|e| e.into_inner());
        Ok(*memo.entry(key).or_insert(times))
    }
}

/// How much faster (as a fraction of the time) a low precision must run to
/// be chosen over f32, and f16 over bf16: below that the difference is within
/// a machine's run-to-run noise and not worth the rounding (or, for f16, the
/// loss scaling).
pub const AUTO_MARGIN: f64 = 0.10;

/// `Precision::Auto`'s choice from measured times, with its reason: bf16 or
/// f16 if it is at least [`AUTO_MARGIN`] faster than f32 — bf16 unless f16 is
/// at least that much faster than bf16 too (bf16 needs no loss scaling) —
/// else f32.
pub fn choose_by_speed(device: &Device, t: &ProductTimes) -> (DType, String) {
    let faster = |low: f64, than: f64| low <= than * (1.0 - AUTO_MARGIN);
    let low = if faster(t.f16, t.bf16) {
        DType::F16
    } else {
        DType::BF16
    };
    let low_time = if low == DType::F16 { t.f16 } else { t.bf16 };
    let dtype = if faster(low_time, t.f32) {
        low
    } else {
        DType::F32
    };
    let why = match dtype {
        DType::F32 => format!(
            "neither low precision is {:.0}% faster than f32 here",
            AUTO_MARGIN * 100.0
        ),
        DType::F16 => "the fastest, with a GradScaler (dynamic loss scaling)".to_string(),
        _ => "the fastest (no loss scaling needed)".to_string(),
    };
    let ms = |s: f64| s * 1e3;
    (
        dtype,
        format!(
            "auto: {dtype} — {why}; a 256×1024×1024 product with its casts measured on {device}: \
             f32 {:.2} ms, bf16 {:.2} ms, f16 {:.2} ms",
            ms(t.f32),
            ms(t.bf16),
            ms(t.f16)
        ),
    )
}

/// The most conservative of the ranks' choices (f32 over bf16 over f16), so
/// every rank of a data-parallel run computes in the same precision even when
/// their measurements differ; `choice` unchanged for one process or a
/// precision that was not measured.
pub(crate) fn agree_over_ranks(
    choice: PrecisionChoice,
    device: &Device,
    group: Option<&Arc<dyn ProcessGroup>>,
) -> amp_dist::Result<PrecisionChoice> {
    let Some(group) = group.filter(|g| g.world_size() > 1) else {
        return Ok(choice);
    };
    if choice.requested != Precision::Auto || device.kind() == DeviceKind::Cuda {
        return Ok(choice);
    }
    let rank_of = |d: DType| match d {
        DType::F32 => 2.0,
        DType::BF16 => 1.0,
        _ => 0.0,
    };
    let mut code = [rank_of(choice.dtype)];
    group.all_reduce_f64(&mut code, ReduceOp::Max)?;
    let dtype = match code[0] as u8 {
        2 => DType::F32,
        1 => DType::BF16,
        _ => DType::F16,
    };
    if dtype == choice.dtype {
        return Ok(choice);
    }
    Ok(PrecisionChoice {
        dtype,
        grad_scaler: dtype == DType::F16,
        reason: format!(
            "auto: {dtype}, the most conservative choice of the {} ranks (this rank measured: {})",
            group.world_size(),
            choice.reason
        ),
        ..choice
    })
}

/// Serialises a [`DType`] as its name (`"bf16"`).
mod dtype_name {
    use amp_tensor::DType;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(dtype: &DType, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(dtype.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DType, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(f32: f64, bf16: f64, f16: f64) -> ProductTimes {
        ProductTimes { f32, bf16, f16 }
    }

    #[test]
    fn auto_takes_a_low_precision_only_when_it_is_clearly_faster() {
        let cpu = amp_cpu::device();
        for (t, want) in [
            // AMX-like: bf16 far ahead.
            (times(3.0, 1.0, 2.9), DType::BF16),
            // AVX2-like: within the margin of f32 (or slower) stays f32.
            (times(1.0, 0.95, 1.2), DType::F32),
            (times(1.0, 1.3, 1.4), DType::F32),
            (times(1.0, 0.9, 0.95), DType::BF16),
            // f16 ahead of bf16 by more than the margin, and of f32.
            (times(1.0, 0.8, 0.6), DType::F16),
            // f16 ahead of bf16 but within the margin: bf16 (no loss scaling).
            (times(1.0, 0.8, 0.75), DType::BF16),
            // f16 clearly ahead of bf16 but not of f32.
            (times(1.0, 1.5, 0.95), DType::F32),
        ] {
            let (dtype, reason) = choose_by_speed(&cpu, &t);
            assert_eq!(dtype, want, "{t:?}: {reason}");
            assert!(reason.starts_with(&format!("auto: {want}")), "{reason}");
            let f32_ms = format!("f32 {:.2} ms", t.f32 * 1e3);
            assert!(reason.contains(&f32_ms), "{reason}");
        }
    }

    #[test]
    fn auto_on_a_cpu_follows_its_measurement_and_resolves_the_same_way_twice() {
        let cpu = amp_cpu::device();
        let first = Precision::Auto.resolve(&cpu);
        let measured = ProductTimes::measured(&cpu).unwrap();
        assert!(measured.f32 > 0.0 && measured.bf16 > 0.0 && measured.f16 > 0.0);
        let (dtype, reason) = choose_by_speed(&cpu, &measured);
        assert_eq!((first.dtype, &first.reason), (dtype, &reason));
        assert_eq!(first.grad_scaler, dtype == DType::F16);
        assert_eq!(Precision::Auto.resolve(&cpu), first);
        // Explicit requests are not measured.
        assert_eq!(Precision::F32.resolve(&cpu).dtype, DType::F32);
        assert_eq!(Precision::F16.resolve(&cpu).dtype, DType::F16);
    }
}
