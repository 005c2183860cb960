//! The shared test suite of amp: **every device**, **one macro**, **one set
//! of tolerances**.
//!
//! [`all_devices`] lists what this machine has: the f64 reference backend,
//! the CPU backend at its default instruction-set level and at every level
//! this CPU supports (forced, so every SIMD path is tested on one machine),
//! and each CUDA device when one is present. [`on_every_device!`] defines one
//! `#[test]` per device slot from one body; a slot this machine lacks prints
//! `skipped: …` and passes — except CUDA when a GPU is present or
//! `AMP_REQUIRE_CUDA=1` is set (as the GPU bundle does): then a CUDA device
//! that cannot be opened fails the test, so no suite passes vacuously.
//!
//! ```
//! use amp_testkit::{assert_close, Tolerance};
//! use amp_tensor::{DType, Device, Tensor};
//!
//! amp_testkit::on_every_device!(exp_matches_the_reference, |device: &Device| -> amp_tensor::Result<()> {
//!     let x = Tensor::randn(&[3, 5], DType::F32, device, 0)?;
//!     let expected = x.to_device(&Device::reference())?.exp()?;
//!     assert_close(&x.exp()?, &expected, Tolerance::for_dtype(DType::F32))
//! });
//! ```
//!
//! The op, autocast and scaler tests of the workspace run through it: a new
//! op is tested on every backend by writing its test once. The conformance
//! suite of ops lives in this crate's `tests/`.

mod compare;
mod inputs;
mod tolerance;

pub use compare::{assert_close, assert_close_dtype, check, check_values};
pub use inputs::{input, on_ref, values, views, FLOATS, SHAPES};
pub use tolerance::{NormTolerance, Tolerance};

use amp_cpu::Isa;
use amp_tensor::Device;

/// The device slots of [`on_every_device!`], one test each.
pub const SLOTS: [&str; 8] = [
    "reference",
    "cpu",
    "cpu_scalar",
    "cpu_avx2",
    "cpu_avx512",
    "cpu_avx512bf16",
    "cpu_amx",
    "cuda",
];

/// True when CUDA must be usable: a GPU is present, or `AMP_REQUIRE_CUDA=1`.
fn cuda_required() -> bool {
    std::env::var("AMP_REQUIRE_CUDA").is_ok_and(|v| v == "1") || amp_cuda::device_count() > 0
}

/// The device of `slot`, or `Err` saying why this machine has none. Panics
/// for CUDA when CUDA is required but cannot be opened.
pub fn device(slot: &str) -> Result<Device, String> {
    let at = |isa: Isa| amp_cpu::device_with_isa(isa).map_err(|e| e.to_string());
    match slot {
        "reference" => Ok(Device::reference()),
        "cpu" => Ok(amp_cpu::device()),
        "cpu_scalar" => at(Isa::Scalar),
        "cpu_avx2" => at(Isa::Avx2),
        "cpu_avx512" => at(Isa::Avx512),
        "cpu_avx512bf16" => at(Isa::Avx512Bf16),
        "cpu_amx" => at(Isa::Amx),
        "cuda" => match amp_cuda::device(0) {
            Ok(d) => Ok(d),
            Err(e) if cuda_required() => {
                panic!("a CUDA device is required or present but cannot be used: {e}")
            }
            Err(e) => Err(e.to_string()),
        },
        other => Err(format!("unknown device slot {other:?}")),
    }
}

/// The devices of `slot`: one for the reference and each CPU path, every
/// CUDA device of the machine for `cuda`; `Err` saying why there is none.
/// Panics for CUDA when CUDA is required but a device cannot be opened.
pub fn devices(slot: &str) -> Result<Vec<Device>, String> {
    if slot != "cuda" {
        return device(slot).map(|d| vec![d]);
    }
    let first = device(slot)?;
    let mut all = vec![first];
    for ordinal in 1..amp_cuda::device_count() {
        match amp_cuda::device(ordinal) {
            Ok(d) => all.push(d),
            Err(e) => panic!("CUDA device {ordinal} is present but cannot be used: {e}"),
        }
    }
    Ok(all)
}

/// Every device this machine has, with its slot name (see the crate docs);
/// each CUDA device appears under the slot `cuda`.
pub fn all_devices() -> Vec<(&'static str, Device)> {
    SLOTS
        .iter()
        .flat_map(|&slot| {
            devices(slot)
                .unwrap_or_default()
                .into_iter()
                .map(move |d| (slot, d))
        })
        .collect()
}

/// The result type of the tests [`on_every_device!`] defines.
pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Runs `body` on each device of `slot` (every CUDA device for `cuda`),
/// or says the slot is skipped. A failure names the device it happened on.
pub fn run_on<E: std::error::Error + 'static>(
    slot: &str,
    body: impl Fn(&Device) -> Result<(), E>,
) -> TestResult {
    match devices(slot) {
        Ok(all) => {
            let many = all.len() > 1;
            for d in &all {
                body(d).map_err(|e| -> Box<dyn std::error::Error> {
                    if many {
                        format!("on {d:?}: {e}").into()
                    } else {
                        Box::new(e)
                    }
                })?;
            }
            Ok(())
        }
        Err(why) => {
            eprintln!("skipped: {slot} not available ({why})");
            Ok(())
        }
    }
}

/// Defines a module `$name` with one `#[test]` per device slot ([`SLOTS`]),
/// each running `$body` — a closure `|device: &Device| -> Result<(), E>` for
/// any error type `E` — on that device (see the crate docs).
#[macro_export]
macro_rules! on_every_device {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::__device_tests!(
                $body,
                reference,
                cpu,
                cpu_scalar,
                cpu_avx2,
                cpu_avx512,
                cpu_avx512bf16,
                cpu_amx,
                cuda
            );
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __device_tests {
    ($body:expr, $($slot:ident),+) => {
        $(
            #[test]
            fn $slot() -> $crate::TestResult {
                $crate::run_on(stringify!($slot), $body)
            }
        )+
    };
}

/// A `mpirun -np <ranks>` command for tests of data-parallel code: ranks may
/// outnumber cores (`--oversubscribe`, CI has 2), root may launch
/// (`--allow-run-as-root`, CI runs as root), and ranks talk over shared
/// memory (`--mca btl self,vader`) with the copy mechanism that needs no
/// ptrace permission (containers often lack it). Add the program and its
/// arguments.
pub fn mpirun(ranks: usize) -> std::process::Command {
    let mut cmd = std::process::Command::new("mpirun");
    cmd.args(["-np", &ranks.to_string()])
        .args(["--oversubscribe", "--allow-run-as-root"])
        .args(["--mca", "btl", "self,vader"])
        .args(["--mca", "btl_vader_single_copy_mechanism", "none"]);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_and_the_cpu_are_always_there() {
        let names: Vec<&str> = all_devices().iter().map(|(s, _)| *s).collect();
        assert!(
            names.starts_with(&["reference", "cpu", "cpu_scalar"]),
            "{names:?}"
        );
        assert!(device("tpu").is_err());
    }
}
