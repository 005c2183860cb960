//! The crate's error type.

use std::path::PathBuf;

/// Errors returned by amp-train.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor op failed.
    #[error(transparent)]
    Tensor(#[from] amp_tensor::Error),
    /// An autocast region could not be opened.
    #[error(transparent)]
    Autocast(#[from] amp_autocast::Error),
    /// The gradient scaler refused a call or a state.
    #[error(transparent)]
    Scaler(#[from] amp_scaler::Error),
    /// A data-parallel collective failed, timed out, or the ranks disagree.
    #[error(transparent)]
    Distributed(#[from] amp_dist::Error),
    /// A data set or data loader was given inconsistent input.
    #[error("{op}: {msg}")]
    Data {
        /// The function that refused the input.
        op: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// An optimizer hyperparameter or training option is out of range.
    #[error("{what}: {msg}")]
    Config {
        /// The option (`"AdamW lr"`, `"epochs"`, …).
        what: &'static str,
        /// What is wrong and what is allowed.
        msg: String,
    },
    /// Training stopped because it diverged (see `TrainConfig::max_consecutive_skips`).
    #[error(
        "training diverged and was stopped at epoch {epoch}, step {step}: {cause}. Lower the learning rate, or \
         raise the limit (max_consecutive_skips; --max-consecutive-skips N, 0 never stops)"
    )]
    Diverged {
        /// The epoch (from 1).
        epoch: usize,
        /// The step (from 1, all sessions).
        step: u64,
        /// What the limit saw.
        cause: String,
    },
    /// A state dict does not fit the module it is loaded into: every missing,
    /// unexpected (strict loads) and mis-shaped name, nothing copied.
    #[error("load_state_dict: {}", state_dict_message(.missing, .unexpected, .mismatched))]
    StateDict {
        /// Names the module has and the state lacks.
        missing: Vec<String>,
        /// Names the state has and the module lacks.
        unexpected: Vec<String>,
        /// `name: <state shape dtype> in the state, <module shape dtype> in the module`.
        mismatched: Vec<String>,
    },
    /// A checkpoint is missing, truncated, corrupt or does not match the model.
    #[error("checkpoint {}: {msg}", .path.display())]
    Checkpoint {
        /// The checkpoint's path.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// Reading or writing a file failed.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// What was being done (`"writing"`, `"reading"`, …).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn data(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Data {
            op,
            msg: msg.into(),
        }
    }

    pub(crate) fn config(what: &'static str, msg: impl Into<String>) -> Self {
        Error::Config {
            what,
            msg: msg.into(),
        }
    }

    pub(crate) fn checkpoint(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            msg: msg.into(),
        }
    }

    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

/// The message of [`Error::StateDict`]: each non-empty list, all names.
fn state_dict_message(missing: &[String], unexpected: &[String], mismatched: &[String]) -> String {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing keys {missing:?}"));
    }
    if !unexpected.is_empty() {
        parts.push(format!("unexpected keys {unexpected:?}"));
    }
    if !mismatched.is_empty() {
        parts.push(format!(
            "shape or dtype mismatch: {}",
            mismatched.join("; ")
        ));
    }
    parts.join("; ")
}
