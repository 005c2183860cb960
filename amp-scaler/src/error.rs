//! The crate's error type. Misuse messages repeat PyTorch's wording so that
//! users searching for them find the same explanations.

/// Errors from the scaler and from optimizers driven by it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed (also what user optimizers return through `?`).
    #[error(transparent)]
    Tensor(#[from] amp_tensor::Error),
    /// A setting given to the builder, a setter or `update_to` is out of range.
    #[error("{op}: invalid setting: {msg}")]
    InvalidSetting {
        /// The method that received the setting.
        op: &'static str,
        /// What is wrong, naming the setting and its value.
        msg: String,
    },
    /// The scaler's methods were called in an order PyTorch also rejects.
    #[error("{op}: {msg}")]
    Misuse {
        /// The scaler method that was called.
        op: &'static str,
        /// PyTorch's message for this misuse.
        msg: String,
    },
    /// A parameter has an f16 gradient: its master weight is f16, not f32.
    #[error(
        "unscale: Attempting to unscale FP16 gradients. Parameter {param:?} has an f16 gradient; keep master \
         weights in f32 (autocast casts them per op) so that their gradients are f32"
    )]
    Fp16Gradient {
        /// The parameter's name as the optimizer reports it.
        param: String,
    },
    /// A state given to `load_state_dict` cannot be loaded.
    #[error("load_state_dict: {msg}")]
    InvalidState {
        /// What is wrong.
        msg: String,
    },
    /// Too many consecutive iterations were skipped for inf/NaN gradients
    /// (the limit set with `max_consecutive_skips`).
    #[error(
        "update: training diverged: {consecutive_skips} consecutive iterations skipped because of inf/NaN gradients \
         (limit {limit}); the scale is now {scale}; in the last one, parameters with inf: {inf_params:?}, with NaN: \
         {nan_params:?}"
    )]
    Diverged {
        /// Consecutive skipped iterations so far.
        consecutive_skips: u64,
        /// The configured limit.
        limit: u64,
        /// The scale after the last backoff.
        scale: f32,
        /// Parameters whose gradients held inf in the last skipped iteration, with counts.
        inf_params: Vec<(String, usize)>,
        /// Parameters whose gradients held NaN in the last skipped iteration, with counts.
        nan_params: Vec<(String, usize)>,
    },
    /// An optimizer failed for a reason of its own.
    #[error("optimizer: {0}")]
    Optimizer(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn misuse(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Misuse {
            op,
            msg: msg.into(),
        }
    }

    pub(crate) fn setting(op: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidSetting {
            op,
            msg: msg.into(),
        }
    }
}
