//! The crate's error type: one variant per kind of failure, with cudarc's
//! errors kept typed as sources and the op and device named.

use cudarc::cublas::result::CublasError;
use cudarc::driver::DriverError;
use cudarc::nvrtc::result::NvrtcError;

/// Errors of the CUDA backend.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CudaError {
    /// No usable CUDA device: no driver library, no GPU, an ordinal out of
    /// range, or a missing cuBLAS / NVRTC library.
    #[error("no CUDA device: {reason}")]
    NoCudaDevice {
        /// Why (names the library or the driver's answer).
        reason: String,
    },
    /// The driver and the CUDA libraries that were loaded do not work together.
    #[error("incompatible CUDA driver and libraries: {problem}\n{versions}")]
    Incompatible {
        /// What does not fit and what to do.
        problem: String,
        /// Every version and library file, one per line.
        versions: String,
    },
    /// A CUDA driver call failed.
    #[error("{op} on cuda:{ordinal}: {}", crate::device::describe(source))]
    Driver {
        /// What was being done.
        op: &'static str,
        /// The device.
        ordinal: usize,
        /// The driver's error.
        #[source]
        source: DriverError,
    },
    /// A cuBLAS call failed.
    #[error("{op} on cuda:{ordinal}: cuBLAS {source:?}")]
    Blas {
        /// What was being done (the call and its shapes).
        op: String,
        /// The device.
        ordinal: usize,
        /// cuBLAS's error.
        #[source]
        source: CublasError,
    },
    /// An NVRTC call failed.
    #[error("{what}: NVRTC {source:?}")]
    Nvrtc {
        /// What was being done.
        what: String,
        /// NVRTC's error.
        #[source]
        source: NvrtcError,
    },
    /// A kernel source did not compile (the log is included), or no image of
    /// a module loads (every attempt is listed).
    #[error("NVRTC: {0}")]
    Compile(String),
}

impl CudaError {
    /// The device this error happened on, for messages.
    fn device(&self) -> String {
        match self {
            CudaError::Driver { ordinal, .. } | CudaError::Blas { ordinal, .. } => {
                format!("cuda:{ordinal}")
            }
            _ => "cuda".into(),
        }
    }
}

impl From<CudaError> for amp_tensor::Error {
    fn from(e: CudaError) -> Self {
        let op = match &e {
            CudaError::Driver { op, .. } => op,
            CudaError::Compile(_) | CudaError::Nvrtc { .. } => &"compile",
            _ => &"cuda",
        };
        amp_tensor::Error::Backend {
            op,
            device: e.device(),
            msg: e.to_string(),
            source: Some(std::sync::Arc::new(e)),
        }
    }
}

/// `Result` with [`CudaError`].
pub type CudaResult<T> = std::result::Result<T, CudaError>;
