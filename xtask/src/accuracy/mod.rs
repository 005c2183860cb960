//! `cargo xtask accuracy`: numeric checks against independent references,
//! collected as [`Row`]s for the report.
//!
//! Each family of checks is a module with a `rows(mode) -> Vec<Row>`
//! function; [`run`] concatenates them. A new family (ops against the
//! reference backend, training parity, …) is one more module and one more
//! line in [`run`].

pub mod autocast_rows;
mod conversions;
pub mod ops;
/// The formats' oracle, one file shared with amp-dtype's integration tests.
#[path = "../../../amp-dtype/tests/common/oracle.rs"]
mod reference;
pub mod training;

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

/// Runs every conversion check and returns its rows.
pub fn run(mode: Mode) -> Vec<Row> {
    let mut rows = Vec::new();
    rows.extend(conversions::rows(mode));
    rows
}

/// The backends under test: the reference backend (the floor: one rounding
/// of the exact result), each CPU ISA path this machine offers, and CUDA
/// devices when present.
pub fn backends() -> Vec<ops::Backend> {
    let mut list = vec![ops::Backend {
        label: "reference".into(),
        device: amp_tensor::Device::reference(),
    }];
    for isa in amp_cpu::Isa::available() {
        match amp_cpu::device_with_isa(isa) {
            Ok(device) => list.push(ops::Backend {
                label: format!("cpu/{}", isa.name()),
                device,
            }),
            Err(e) => eprintln!("skipping cpu/{}: {e}", isa.name()),
        }
    }
    if amp_cuda::is_available() {
        for ordinal in 0..amp_cuda::device_count() {
            match amp_cuda::device(ordinal) {
                Ok(device) => list.push(ops::Backend {
                    label: format!("cuda:{ordinal}"),
                    device,
                }),
                Err(e) => eprintln!("skipping cuda:{ordinal}: {e}"),
            }
        }
    } else {
        eprintln!("no CUDA device: CUDA rows skipped");
    }
    list
}

/// Runs the op-accuracy rows on every available backend (with `cuda_only`,
/// on the reference backend and the CUDA devices alone).
pub fn run_ops(mode: Mode, cuda_only: bool) -> Vec<ops::OpRow> {
    let mut list = backends();
    if cuda_only {
        list.retain(|b| b.label == "reference" || b.device.kind() == amp_tensor::DeviceKind::Cuda);
    }
    ops::rows(&list, mode == Mode::Full)
}

/// How many worker threads the sweeps use.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
