//! Where this process sits in a job started by a launcher (`mpirun`).

use crate::{Error, Result};

/// This process's place in a job, as the launcher's environment describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The launcher that set the variables (`"Open MPI"`, `"PMI"`).
    pub launcher: &'static str,
    /// This process's rank.
    pub rank: usize,
    /// The number of processes.
    pub world_size: usize,
    /// This process's rank among those on the same machine.
    pub local_rank: usize,
    /// The number of processes on this machine.
    pub local_size: usize,
}

impl Launch {
    /// Reads the launcher's variables from the environment: Open MPI's
    /// `OMPI_COMM_WORLD_*`, else the PMI variables of MPICH/Slurm
    /// (`PMI_RANK`, `PMI_SIZE`). `None` when the process was not started by
    /// such a launcher.
    pub fn from_env() -> Option<Launch> {
        Launch::from_vars(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) over any variable lookup (for tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Option<Launch> {
        let num = |name: &str| var(name).and_then(|v| v.trim().parse::<usize>().ok());
        let (launcher, rank, world_size, local_rank, local_size) = if let (Some(r), Some(n)) =
            (num("OMPI_COMM_WORLD_RANK"), num("OMPI_COMM_WORLD_SIZE"))
        {
            (
                "Open MPI",
                r,
                n,
                num("OMPI_COMM_WORLD_LOCAL_RANK"),
                num("OMPI_COMM_WORLD_LOCAL_SIZE"),
            )
        } else if let (Some(r), Some(n)) = (num("PMI_RANK"), num("PMI_SIZE")) {
            ("PMI", r, n, num("MPI_LOCALRANKID"), num("MPI_LOCALNRANKS"))
        } else {
            return None;
        };
        if world_size == 0 || rank >= world_size {
            return None;
        }
        Some(Launch {
            launcher,
            rank,
            world_size,
            local_rank: local_rank.unwrap_or(rank),
            local_size: local_size.unwrap_or(world_size),
        })
    }

    /// The launch, or a clear error telling how to launch.
    pub fn require(program: &str) -> Result<Launch> {
        Launch::from_env().ok_or_else(|| {
            Error::Launch(format!(
                "{program} --distributed must be started by an MPI launcher, one process per rank: \
                 `mpirun -np 2 {program} --distributed ...` (no OMPI_COMM_WORLD_RANK or PMI_RANK in \
                 the environment)"
            ))
        })
    }

    /// How many CPU threads each process on this machine should use so that
    /// the local ranks together use `cores` cores (at least 1).
    pub fn threads_per_rank(&self, cores: usize) -> usize {
        (cores / self.local_size.max(1)).max(1)
    }
}
