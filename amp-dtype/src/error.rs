//! The crate's error type.

/// Errors returned by `amp-dtype`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A dtype name that is not one of the known spellings.
    #[error("unknown dtype name {name:?}; valid names are: {valid}")]
    UnknownDType {
        /// The name that was given.
        name: String,
        /// Every accepted spelling, comma separated.
        valid: String,
    },
    /// `torch.promote_types` refuses this pair (as PyTorch does for fp8).
    #[error("cannot promote {lhs} with {rhs}: promotion for float8 types is not supported")]
    PromotionNotSupported {
        /// Left dtype.
        lhs: crate::DType,
        /// Right dtype.
        rhs: crate::DType,
    },
    /// The operation needs a floating-point dtype.
    #[error("{op}: dtype {dtype} is not a floating-point type")]
    NotFloat {
        /// The operation that was asked for.
        op: &'static str,
        /// The offending dtype.
        dtype: crate::DType,
    },
    /// Two slices that must have the same length do not.
    #[error("{op}: length mismatch, source has {src} elements, destination has {dst}")]
    LengthMismatch {
        /// The operation that was asked for.
        op: &'static str,
        /// Source length.
        src: usize,
        /// Destination length.
        dst: usize,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
