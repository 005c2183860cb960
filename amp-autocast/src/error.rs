//! The crate's error type.

use amp_dtype::DType;
use amp_tensor::DeviceKind;
use std::fmt;

/// Errors from opening autocast regions and parsing policies.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The region's dtype is not a low-precision float format autocast can run in.
    #[error("autocast({kind}): dtype {dtype} is not supported: autocast runs ops in f16 or bf16")]
    NotLowPrecision {
        /// The region's device kind.
        kind: DeviceKind,
        /// The dtype asked for.
        dtype: DType,
    },
    /// The device given to the builder cannot run the dtype.
    #[error("autocast({kind}): dtype {dtype} is not supported on {device}: {reason}")]
    UnsupportedDType {
        /// The region's device kind.
        kind: DeviceKind,
        /// The dtype asked for.
        dtype: DType,
        /// The device checked.
        device: String,
        /// Why it cannot run the dtype, and what to use instead.
        reason: String,
    },
    /// The device given to the builder is of another kind than the region.
    #[error(
        "autocast({kind}): the device {device} given to check the dtype is a {device_kind} device"
    )]
    DeviceKindMismatch {
        /// The region's device kind.
        kind: DeviceKind,
        /// The device given.
        device: String,
        /// Its kind.
        device_kind: DeviceKind,
    },
    /// The policy installed was written for another device kind.
    #[error(
        "autocast({kind}): the policy was written for {policy_kind}; call `Policy::retarget({kind:?})` \
         to install it in a {kind} region on purpose"
    )]
    PolicyKindMismatch {
        /// The region's device kind.
        kind: DeviceKind,
        /// The kind the policy names.
        policy_kind: DeviceKind,
    },
    /// A policy string that does not parse.
    #[error(transparent)]
    Parse(#[from] PolicyParseError),
    /// A tensor op failed (casting inputs in [`crate::run_in_f32`]).
    #[error(transparent)]
    Tensor(#[from] amp_tensor::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl From<Error> for amp_tensor::Error {
    /// Lets code that returns `amp_tensor::Result` use `?` on autocast calls.
    fn from(e: Error) -> Self {
        match e {
            Error::Tensor(t) => t,
            other => amp_tensor::Error::invalid("autocast", other.to_string()),
        }
    }
}

/// A policy string that does not parse, with the position and text of the bad token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyParseError {
    /// The whole input.
    pub input: String,
    /// 1-based column (in characters) where the bad token starts.
    pub column: usize,
    /// The bad token (empty when the input ended early).
    pub token: String,
    /// What was expected there.
    pub expected: String,
}

impl fmt::Display for PolicyParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = if self.token.is_empty() {
            "end of input".to_string()
        } else {
            format!("`{}`", self.token)
        };
        writeln!(
            f,
            "invalid autocast policy at column {}: found {token}, expected {}",
            self.column, self.expected
        )?;
        writeln!(f, "  {}", self.input)?;
        let width = self.token.chars().count().max(1);
        write!(f, "  {}{}", " ".repeat(self.column - 1), "^".repeat(width))
    }
}

impl std::error::Error for PolicyParseError {}
