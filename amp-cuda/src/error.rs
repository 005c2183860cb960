//! The crate's error type.

/// Errors of the CUDA backend that are not tensor-op errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    /// NVRTC is missing or failed to compile a kernel source (the log is included).
    #[error("NVRTC: {0}")]
    Compile(String),
    /// A CUDA driver call failed.
    #[error("CUDA driver: {0}")]
    Driver(String),
}

impl From<CudaError> for amp_tensor::Error {
    fn from(e: CudaError) -> Self {
        amp_tensor::Error::Backend {
            op: "cuda",
            device: "cuda".into(),
            msg: e.to_string(),
        }
    }
}

/// `Result` with [`CudaError`].
pub type CudaResult<T> = std::result::Result<T, CudaError>;
