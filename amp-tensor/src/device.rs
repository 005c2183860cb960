//! [`Device`]: a cheap handle to a backend.

use crate::backend::{Backend, DeviceKind};
use crate::reference::ReferenceBackend;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// A handle to the backend that stores tensors and runs their kernels.
///
/// Backend crates hand devices out (`amp_cpu::device()`, `amp_cuda::device(0)?`);
/// [`Device::reference`] is the exact f64 reference backend.
#[derive(Clone)]
pub struct Device {
    backend: Arc<dyn Backend>,
}

impl Device {
    /// Wraps a backend.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Device { backend }
    }

    /// The reference backend: every kernel computed in f64 and rounded once.
    pub fn reference() -> Device {
        static REFERENCE: OnceLock<Device> = OnceLock::new();
        REFERENCE
            .get_or_init(|| Device::new(Arc::new(ReferenceBackend)))
            .clone()
    }

    /// CPU or CUDA.
    pub fn kind(&self) -> DeviceKind {
        self.backend.kind()
    }

    /// Device ordinal (0 for the CPU).
    pub fn ordinal(&self) -> usize {
        self.backend.ordinal()
    }

    /// True where bf16 arithmetic is native and fast (`torch.cuda.is_bf16_supported()`).
    pub fn is_bf16_supported(&self) -> bool {
        self.backend.is_bf16_supported()
    }

    /// The backend.
    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// The backend's implementation name (`"reference"`, `"cpu"`, `"cuda"`).
    pub fn backend_name(&self) -> &str {
        self.backend.name()
    }

    /// True if both handles denote the same device (same backend, kind and ordinal).
    pub fn same_device(&self, other: &Device) -> bool {
        Arc::ptr_eq(&self.backend, &other.backend)
            || (self.backend.name() == other.backend.name()
                && self.kind() == other.kind()
                && self.ordinal() == other.ordinal())
    }
}

impl PartialEq for Device {
    fn eq(&self, other: &Self) -> bool {
        self.same_device(other)
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind() {
            DeviceKind::Cpu => f.write_str("cpu"),
            DeviceKind::Cuda => write!(f, "cuda:{}", self.ordinal()),
        }
    }
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Device({self}, {})", self.backend.name())
    }
}
