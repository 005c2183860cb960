//! Fused in-place updates of mixed-precision training, outside autograd: the
//! AdamW step and the gradient unscale with its inf/NaN check.

use super::{require_float, same_device};
use crate::backend::Storage;
use crate::backend::{AdamWStep, NonFiniteCount};
use crate::{Device, Error, Layout, Result, Tensor};
use amp_dtype::DType;

/// Errors unless `t` is a whole contiguous tensor (it owns its buffer).
fn require_whole(op: &'static str, what: &str, t: &Tensor) -> Result<()> {
    let layout = t.layout();
    if layout.is_contiguous() && layout.offset() == 0 && t.storage()?.len() == t.numel() {
        return Ok(());
    }
    Err(Error::invalid(
        op,
        format!(
            "{what} of shape {:?} is a view; it must be a whole contiguous tensor",
            t.dims()
        ),
    ))
}

/// One AdamW update (`torch.optim.AdamW`, `amsgrad=False`) of `param` and its
/// f32 moments `exp_avg`, `exp_avg_sq`, in place, from `grad` — one fused pass
/// on backends that provide it (see [`crate::backend::Backend::adamw_step`]).
///
/// `param` may be any float dtype (updated in f32, rounded once back); `grad`
/// any float dtype and layout with `param`'s shape; the moments f32 with
/// `param`'s shape. `param` and the moments must be whole contiguous tensors
/// with separate storages. Not recorded on the autograd tape.
pub fn adamw_step(
    param: &Tensor,
    grad: &Tensor,
    exp_avg: &Tensor,
    exp_avg_sq: &Tensor,
    hyper: &AdamWStep,
) -> Result<()> {
    let op = "adamw_step";
    same_device(op, &[param, grad, exp_avg, exp_avg_sq])?;
    require_float(op, param)?;
    require_float(op, grad)?;
    for (what, t) in [("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)] {
        if t.dtype() != DType::F32 {
            return Err(Error::UnsupportedDType {
                op,
                dtype: t.dtype(),
                reason: format!("{what} must be f32"),
            });
        }
    }
    for (what, t) in [
        ("grad", grad),
        ("exp_avg", exp_avg),
        ("exp_avg_sq", exp_avg_sq),
    ] {
        if t.dims() != param.dims() {
            return Err(Error::invalid(
                op,
                format!(
                    "{what} has shape {:?}, param has shape {:?}",
                    t.dims(),
                    param.dims()
                ),
            ));
        }
    }
    for (what, t) in [
        ("param", param),
        ("exp_avg", exp_avg),
        ("exp_avg_sq", exp_avg_sq),
    ] {
        require_whole(op, what, t)?;
    }
    let all = [param, grad, exp_avg, exp_avg_sq];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            if a.shares_storage_with(b) {
                return Err(Error::invalid(
                    op,
                    "param, grad, exp_avg and exp_avg_sq must not share storage",
                ));
            }
        }
    }
    if !(hyper.lr.is_finite()
        && hyper.eps.is_finite()
        && hyper.weight_decay.is_finite()
        && (0.0..1.0).contains(&hyper.beta1)
        && (0.0..1.0).contains(&hyper.beta2)
        && hyper.step >= 1)
    {
        return Err(Error::invalid(
            op,
            format!("hyperparameters out of range: {hyper:?} (betas in [0, 1), step ≥ 1)"),
        ));
    }
    // The write guards first, then the read guard, held until the backend
    // returns (a reader never waits while holding a write guard).
    let mut p = param.storage_mut()?;
    let mut m = exp_avg.storage_mut()?;
    let mut v = exp_avg_sq.storage_mut()?;
    let g = grad.storage()?;
    param
        .device()
        .backend()
        .adamw_step(&mut p, (&g, grad.layout()), &mut m, &mut v, hyper)
}

/// One distinct view among the tensors given to [`non_finite_check_and_unscale_`],
/// with the positions of the tensors that are that very view.
struct Entry {
    positions: Vec<usize>,
    tensor: Tensor,
}

/// Multiplies every element of every tensor by `inv_scale` in place (in f32
/// for f32 and narrower dtypes, rounded once to the tensor's dtype; f64 for
/// f64) and returns, per tensor, the infs and NaNs among the results
/// (`torch._amp_foreach_non_finite_check_and_unscale_`). One fused backend
/// pass ([`crate::backend::Backend::non_finite_check_and_unscale`]) per device and
/// dtype; a view given twice is processed once (both get its counts); distinct
/// views of one storage go to separate passes. Every tensor must be floating;
/// that is checked before anything is changed. Not recorded on the tape.
pub fn non_finite_check_and_unscale_(
    tensors: &[&Tensor],
    inv_scale: f32,
) -> Result<Vec<NonFiniteCount>> {
    let op = "non_finite_check_and_unscale";
    for t in tensors {
        require_float(op, t)?;
    }
    let mut groups: Vec<(Device, DType, Vec<Entry>)> = Vec::new();
    for (position, t) in tensors.iter().enumerate() {
        let at = match groups
            .iter()
            .position(|(d, dt, _)| *dt == t.dtype() && d.same_device(t.device()))
        {
            Some(i) => i,
            None => {
                groups.push((t.device().clone(), t.dtype(), Vec::new()));
                groups.len() - 1
            }
        };
        let entries = &mut groups[at].2;
        match entries
            .iter_mut()
            .find(|e| e.tensor.shares_storage_with(t) && e.tensor.layout() == t.layout())
        {
            Some(e) => e.positions.push(position),
            None => entries.push(Entry {
                positions: vec![position],
                tensor: (*t).clone(),
            }),
        }
    }
    let mut counts = vec![NonFiniteCount::default(); tensors.len()];
    for (device, _, entries) in &groups {
        // Rounds of pairwise distinct storages (one write lock per storage per pass).
        let mut rounds: Vec<Vec<usize>> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let free = rounds.iter().position(|round| {
                round
                    .iter()
                    .all(|&j| !entries[j].tensor.shares_storage_with(&e.tensor))
            });
            match free {
                Some(r) => rounds[r].push(i),
                None => rounds.push(vec![i]),
            }
        }
        for round in &rounds {
            let found = {
                let mut guards = round
                    .iter()
                    .map(|&i| entries[i].tensor.storage_mut())
                    .collect::<Result<Vec<_>>>()?;
                let mut buffers: Vec<(&mut Storage, &Layout)> = guards
                    .iter_mut()
                    .zip(round)
                    .map(|(g, &i)| (&mut **g, entries[i].tensor.layout()))
                    .collect();
                device
                    .backend()
                    .non_finite_check_and_unscale(&mut buffers, inv_scale)?
            };
            if found.len() != round.len() {
                return Err(Error::backend(
                    op,
                    device.to_string(),
                    format!(
                        "returned {} counts for {} buffers",
                        found.len(),
                        round.len()
                    ),
                ));
            }
            for (&i, c) in round.iter().zip(found) {
                for &p in &entries[i].positions {
                    counts[p] = c;
                }
            }
        }
    }
    Ok(counts)
}
