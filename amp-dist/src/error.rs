//! [`Error`]: what can go wrong in a data-parallel job.

use std::time::Duration;

/// An error of a process group, the data-parallel wrapper or a launch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The job was not launched the way the group needs (no `mpirun`, MPI
    /// not compiled in, a rank count that does not fit).
    #[error("distributed launch: {0}")]
    Launch(String),
    /// A collective failed (the MPI or NCCL library returned an error).
    #[error("{op} on rank {rank} of {world}: {reason}")]
    Collective {
        /// The collective (`all_reduce`, `broadcast`, `barrier`).
        op: &'static str,
        /// This process's rank.
        rank: usize,
        /// The number of ranks.
        world: usize,
        /// What the library said.
        reason: String,
    },
    /// A collective did not complete in time: another rank died, hangs, or
    /// runs different code. The job cannot go on; abort it.
    #[error(
        "{op} on rank {rank} of {world} did not complete within {timeout:?}: another rank has \
         died, hangs, or is not running the same collectives (set the timeout with --dist-timeout)"
    )]
    Timeout {
        /// The collective.
        op: &'static str,
        /// This process's rank.
        rank: usize,
        /// The number of ranks.
        world: usize,
        /// The limit that passed.
        timeout: Duration,
    },
    /// The ranks disagree where they must agree (parameters, scaler state).
    #[error("ranks disagree: {0}")]
    Mismatch(String),
    /// An operand the collective cannot take (dtype, layout, device).
    #[error("{op}: {reason}")]
    Unsupported {
        /// The collective.
        op: &'static str,
        /// Why, naming the shape, dtype and device.
        reason: String,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] amp_tensor::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl From<Error> for amp_scaler::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Tensor(t) => amp_scaler::Error::Tensor(t),
            other => amp_scaler::Error::Optimizer(other.to_string()),
        }
    }
}

impl From<Error> for amp_tensor::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Tensor(t) => t,
            other => amp_tensor::Error::invalid("distributed", other.to_string()),
        }
    }
}
