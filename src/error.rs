//! One error type for programs that use several amp crates.

/// Any error of the amp crates: `?` works on tensor, autocast, scaler and
/// training calls in one function returning [`Result`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// A module, optimizer, data loader, checkpoint or training run failed.
    #[error(transparent)]
    Train(#[from] amp_train::Error),
    /// A data-parallel collective failed or timed out, or the ranks disagree.
    #[error(transparent)]
    Distributed(#[from] amp_train::dist::Error),
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
