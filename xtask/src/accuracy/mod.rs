//! `cargo xtask accuracy`: numeric checks against independent references,
//! collected as [`Row`]s for the report.
//!
//! Each family of checks is a module with a `rows(mode) -> Vec<Row>`
//! function; [`run`] concatenates them. A new family (ops against the
//! reference backend, training parity, …) is one more module and one more
//! line in [`run`].

mod conversions;
mod reference;

use crate::report::Row;

/// How much work the checks do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The default: exhaustive where cheap, strided sweeps elsewhere (seconds).
    Quick,
    /// Every f32 bit pattern through every encoder (minutes).
    Full,
}

impl Mode {
    /// The flag's name, for the report.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Quick => "quick",
            Mode::Full => "full",
        }
    }
}

/// Runs every check family and returns its rows.
pub fn run(mode: Mode) -> Vec<Row> {
    let mut rows = Vec::new();
    rows.extend(conversions::rows(mode));
    rows
}

/// How many worker threads the sweeps use.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
