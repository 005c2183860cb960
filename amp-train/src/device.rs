//! Choosing the device: [`best_device`] and the `--device` syntax ([`DeviceSpec`]).

use crate::{Error, Result};
use amp_tensor::Device;
use std::fmt;
use std::str::FromStr;

/// A device request: `auto`, `cpu`, `cuda` (= `cuda:0`) or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// CUDA if usable, else the CPU ([`best_device`]).
    #[default]
    Auto,
    /// amp-cpu's SIMD backend.
    Cpu,
    /// The CUDA device with this ordinal.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceSpec::Cuda(n)),
                _ => Err(format!(
                    "unknown device {s:?}; valid values: auto, cpu, cuda, cuda:N (N = 0, 1, …)"
                )),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// The device: `Err` if CUDA was asked for and is not usable.
    pub fn device(self) -> Result<Device> {
        match self {
            DeviceSpec::Auto => Ok(best_device()),
            DeviceSpec::Cpu => Ok(amp_cpu::device()),
            DeviceSpec::Cuda(n) => cuda_device(n),
        }
    }
}

/// The CUDA device `ordinal`, or an `Err` saying why it is not usable (no
/// driver, no GPU, missing cuBLAS/NVRTC, ordinal out of range).
#[cfg(feature = "cuda")]
pub fn cuda_device(ordinal: usize) -> Result<Device> {
    if !amp_cuda::is_available() {
        let count = amp_cuda::device_count();
        let why = if count == 0 {
            "no CUDA driver or GPU found".to_string()
        } else {
            format!("{count} GPU(s) found but cuBLAS or NVRTC could not be loaded")
        };
        return Err(Error::config(
            "--device",
            format!("cuda:{ordinal} is not available: {why}"),
        ));
    }
    amp_cuda::device(ordinal)
        .map_err(|e| Error::config("--device", format!("cuda:{ordinal} is not usable: {e}")))
}

/// The CUDA device `ordinal`, or an `Err` saying why it is not usable: this
/// build has no CUDA backend (amp-train was built without the `cuda` feature).
#[cfg(not(feature = "cuda"))]
pub fn cuda_device(ordinal: usize) -> Result<Device> {
    Err(Error::config(
        "--device",
        format!(
            "cuda:{ordinal} is not available: amp-train was built without the `cuda` feature \
             (enable it, e.g. `features = [\"cuda\"]` on the `amp` or `amp-train` dependency)"
        ),
    ))
}

/// CUDA device 0 if usable, else amp-cpu's CPU device (always the CPU in a
/// build without the `cuda` feature).
pub fn best_device() -> Device {
    cuda_device(0).unwrap_or_else(|_| amp_cpu::device())
}
