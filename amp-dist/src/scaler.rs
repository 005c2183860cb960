//! The loss scaler across ranks: the found-inf decision taken together, and
//! a check that every rank holds the same scaler state.

use crate::group::{ProcessGroup, ReduceOp};
use crate::DistributedDataParallel;
use crate::{Error, Result};
use amp_scaler::{FoundInfReduce, GradScaler};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// [`FoundInfReduce`] over a [`ProcessGroup`]: give it to
/// [`GradScalerBuilder::found_inf_reduce`](amp_scaler::GradScalerBuilder::found_inf_reduce)
/// and every rank skips or steps together, backs off together (so all hold
/// the same scale), and reports the same [`StepOutcome`](amp_scaler::StepOutcome)
/// naming the ranks and parameters that overflowed. The reduction runs
/// before the skip decision, inside `unscale` — the ordering PyTorch's sharded
/// scaler got wrong until 2024.
#[derive(Debug, Clone)]
pub struct ScalerReduce {
    group: Arc<dyn ProcessGroup>,
    origin: Option<Arc<AtomicBool>>,
}

impl ScalerReduce {
    /// The scaler's collective over `group`.
    pub fn new(group: Arc<dyn ProcessGroup>) -> Self {
        ScalerReduce {
            group,
            origin: None,
        }
    }

    /// The scaler's collective over `ddp`'s group, naming in the
    /// `StepOutcome` the ranks whose own gradients overflowed before `ddp`
    /// averaged them (without it, every rank holds the averaged infs and is
    /// named).
    pub fn for_ddp(ddp: &DistributedDataParallel) -> Self {
        ScalerReduce {
            group: ddp.group().clone(),
            origin: Some(ddp.local_overflow()),
        }
    }
}

impl FoundInfReduce for ScalerReduce {
    fn rank(&self) -> usize {
        self.group.rank()
    }

    fn world_size(&self) -> usize {
        self.group.world_size()
    }

    fn sum_reduce(&self, values: &mut [f64]) -> amp_scaler::Result<()> {
        Ok(self.group.all_reduce_f64(values, ReduceOp::Sum)?)
    }

    fn local_overflow(&self) -> Option<bool> {
        self.origin.as_ref().map(|o| o.load(Ordering::SeqCst))
    }
}

/// `Err(Mismatch)` unless every rank holds the same scale, growth tracker,
/// step count and skip count — the debug check of a data-parallel run (one
/// small all-reduce). The message gives each quantity's minimum and maximum
/// over the ranks.
pub fn check_scalers_agree(group: &dyn ProcessGroup, scaler: &GradScaler) -> Result<()> {
    let names = ["loss scale", "growth tracker", "steps", "skipped steps"];
    let mine = [
        f64::from(scaler.get_scale()),
        scaler.growth_tracker() as f64,
        scaler.steps() as f64,
        scaler.skips() as f64,
    ];
    check_agree(group, "scaler", &names, &mine)
}

/// `Err(Mismatch)` unless `values` are equal on every rank (NaN equals NaN).
pub(crate) fn check_agree(
    group: &dyn ProcessGroup,
    what: &str,
    names: &[&str],
    values: &[f64],
) -> Result<()> {
    // max(v) and max(-v) = -min(v) in one collective; NaN is compared as a flag.
    let n = values.len();
    let mut both = Vec::with_capacity(3 * n);
    both.extend(values.iter().map(|v| if v.is_nan() { 0.0 } else { *v }));
    both.extend(values.iter().map(|v| if v.is_nan() { 0.0 } else { -*v }));
    both.extend(values.iter().map(|v| f64::from(u8::from(v.is_nan()))));
    let mut nan_min: Vec<f64> = values
        .iter()
        .map(|v| -f64::from(u8::from(v.is_nan())))
        .collect();
    both.append(&mut nan_min);
    group.all_reduce_f64(&mut both, ReduceOp::Max)?;
    let mut differ = Vec::new();
    for i in 0..n {
        let (max, min) = (both[i], -both[n + i]);
        let (nan_any, nan_all) = (both[2 * n + i] != 0.0, -both[3 * n + i] != 0.0);
        if max != min || nan_any != nan_all {
            differ.push(format!(
                "{} from {min} to {max}{}",
                names.get(i).copied().unwrap_or("value"),
                if nan_any != nan_all {
                    " (NaN on some ranks)"
                } else {
                    ""
                }
            ));
        }
    }
    if differ.is_empty() {
        Ok(())
    } else {
        Err(Error::Mismatch(format!(
            "{what} state differs across {} ranks (this is rank {}): {}",
            group.world_size(),
            group.rank(),
            differ.join("; ")
        )))
    }
}
