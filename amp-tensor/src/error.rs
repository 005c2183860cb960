//! The crate's error type: every message names the op and the offending shapes or dtypes.

use amp_dtype::DType;

/// Errors returned by tensor operations.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Shapes that the op cannot combine.
    #[error("{op}: shape mismatch between {lhs:?} and {rhs:?}")]
    ShapeMismatch {
        /// The op.
        op: &'static str,
        /// First shape.
        lhs: Vec<usize>,
        /// Second shape.
        rhs: Vec<usize>,
    },
    /// Inputs whose dtypes must agree do not.
    #[error("{op}: dtype mismatch between {lhs} and {rhs}")]
    DTypeMismatch {
        /// The op.
        op: &'static str,
        /// First dtype.
        lhs: DType,
        /// Second dtype.
        rhs: DType,
    },
    /// Inputs on different devices.
    #[error("{op}: inputs are on different devices ({lhs} and {rhs})")]
    DeviceMismatch {
        /// The op.
        op: &'static str,
        /// First device.
        lhs: String,
        /// Second device.
        rhs: String,
    },
    /// The op does not support this dtype.
    #[error("{op}: unsupported dtype {dtype}{}", if .reason.is_empty() { String::new() } else { format!(" ({})", .reason) })]
    UnsupportedDType {
        /// The op.
        op: &'static str,
        /// The dtype.
        dtype: DType,
        /// Why, when it helps.
        reason: String,
    },
    /// A dimension index or element index out of range.
    #[error("{op}: index {index} out of range for size {size}{}", if .shape.is_empty() { String::new() } else { format!(" (shape {:?})", .shape) })]
    IndexOutOfRange {
        /// The op.
        op: &'static str,
        /// The index given.
        index: i64,
        /// The size of the indexed dimension.
        size: usize,
        /// The shape of the indexed tensor.
        shape: Vec<usize>,
    },
    /// `backward()` on a tensor with more than one element and no output gradient.
    #[error(
        "backward: grad can be implicitly created only for scalar outputs, got shape {shape:?}"
    )]
    NonScalarBackward {
        /// The shape of the tensor.
        shape: Vec<usize>,
    },
    /// `backward()` on a tensor that does not require grad.
    #[error("backward: tensor of shape {shape:?} does not require grad and has no grad_fn")]
    NoGradFn {
        /// The shape of the tensor.
        shape: Vec<usize>,
    },
    /// Any other invalid argument.
    #[error("{op}: {msg}")]
    InvalidArgument {
        /// The op.
        op: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// A shape whose element count (or byte size) does not fit in `usize`.
    #[error("{op}: shape {shape:?} has too many elements (the element count overflows usize)")]
    ShapeOverflow {
        /// The op.
        op: &'static str,
        /// The shape asked for.
        shape: Vec<usize>,
    },
    /// A buffer larger than this machine can hold was asked for.
    #[error("{op}: out of memory: cannot allocate {numel} elements of {dtype} ({bytes} bytes){}", if .limit.is_empty() { String::new() } else { format!("; {}", .limit) })]
    OutOfMemory {
        /// The op.
        op: &'static str,
        /// Elements asked for.
        numel: usize,
        /// Their dtype.
        dtype: DType,
        /// Their size in bytes.
        bytes: u128,
        /// The limit that was hit, in words (empty when the allocator refused).
        limit: String,
    },
    /// A backend failed (driver error, out of memory, …).
    #[error("{op}: backend error on {device}: {msg}")]
    Backend {
        /// The op.
        op: &'static str,
        /// The device.
        device: String,
        /// The backend's message.
        msg: String,
        /// The backend's own error, typed (a CUDA driver or cuBLAS error), when there is one.
        #[source]
        source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// An error from amp-dtype.
    #[error(transparent)]
    DType(#[from] amp_dtype::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            msg: msg.into(),
        }
    }

    /// [`Error::Backend`] without a typed source.
    pub fn backend(op: &'static str, device: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Backend {
            op,
            device: device.into(),
            msg: msg.into(),
            source: None,
        }
    }

    /// Shorthand for [`Error::UnsupportedDType`] without a reason.
    pub fn unsupported(op: &'static str, dtype: DType) -> Self {
        Error::UnsupportedDType {
            op,
            dtype,
            reason: String::new(),
        }
    }
}
