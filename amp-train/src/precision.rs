//! [`Precision`]: which dtype a training run computes in, and why.

use amp_tensor::{DType, Device, DeviceKind};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The precision a run asks for (`--precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bf16 where the device supports it natively; else f16 with a
    /// `GradScaler` on CUDA; else f32 (a CPU without native bf16, where
    /// emulated low precision would be slower than f32).
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
    /// Resolves this precision on `device` (the mission's rule for `Auto`).
    pub fn resolve(self, device: &Device) -> PrecisionChoice {
        let native_bf16 = device.is_bf16_supported();
        let cuda = device.kind() == DeviceKind::Cuda;
        let (dtype, reason) = match self {
            Precision::Auto if native_bf16 => {
                (DType::BF16, format!("auto: {device} supports bf16 natively (is_bf16_supported() is true)"))
            }
            Precision::Auto if cuda => (
                DType::F16,
                format!("auto: {device} has no native bf16, so f16 with a GradScaler (dynamic loss scaling)"),
            ),
            Precision::Auto => (
                DType::F32,
                format!("auto: {device} has no native bf16 (AVX512-BF16 or AMX); emulated low precision would be slower than f32"),
            ),
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
