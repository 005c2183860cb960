//! [`Dropout`]: inverted dropout in training mode, the identity in evaluation mode.

use super::{sub_seed, Module};
use amp_tensor::{ops, Error, Result, Tensor};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Zeroes each element with probability `p` and scales the rest by `1/(1-p)`
/// in training mode (`torch.nn.Dropout`); the identity after [`Module::eval`].
///
/// Masks are reproducible: call `k` of `forward` in training mode uses a
/// stream derived from `(seed, k)`.
#[derive(Debug)]
pub struct Dropout {
    p: f64,
    seed: u64,
    calls: AtomicU64,
    training: AtomicBool,
}

impl Dropout {
    /// Dropout with probability `p` in `[0, 1]` (`nn.Dropout(p)`), its masks
    /// seeded from the process-wide generator.
    pub fn new(p: f64) -> Result<Dropout> {
        Dropout::seeded(p, amp_tensor::random::next_seed())
    }

    /// Dropout with probability `p` in `[0, 1]`, seeded by `seed`.
    pub fn seeded(p: f64, seed: u64) -> Result<Dropout> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::invalid(
                "Dropout::new",
                format!("probability must be in [0, 1], got {p}"),
            ));
        }
        Ok(Dropout {
            p,
            seed,
            calls: AtomicU64::new(0),
            training: AtomicBool::new(true),
        })
    }

    /// The drop probability.
    pub fn p(&self) -> f64 {
        self.p
    }
}

impl Module for Dropout {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let training = self.is_training();
        let seed = if training {
            sub_seed(self.seed, self.calls.fetch_add(1, Ordering::Relaxed))
        } else {
            0
        };
        ops::dropout(x, self.p, training, seed)
    }

    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }

    fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }
}
