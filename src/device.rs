//! Devices by name: `Device::cpu()`, `Device::cuda(0)?`, `Device::best()`.

use crate::{Device, Result};

/// Constructors for the devices of the backend crates, on [`Device`] itself
/// (the trait is in the [`prelude`](crate::prelude)).
pub trait DeviceExt: Sized {
    /// The CPU: amp-cpu's SIMD backend at the best instruction set this
    /// machine has (`AMP_CPU_ISA` lowers it).
    fn cpu() -> Self;

    /// CUDA device `ordinal`, or an `Err` saying why it is not usable (no
    /// driver or GPU, missing cuBLAS or NVRTC, ordinal out of range).
    fn cuda(ordinal: usize) -> Result<Self>;

    /// CUDA device 0 if it is usable, else the CPU.
    fn best() -> Self;
}

impl DeviceExt for Device {
    fn cpu() -> Device {
        amp_cpu::device()
    }

    fn cuda(ordinal: usize) -> Result<Device> {
        Ok(amp_train::cuda_device(ordinal)?)
    }

    fn best() -> Device {
        amp_train::best_device()
    }
}
