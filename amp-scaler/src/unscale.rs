//! The fused in-place pass over gradients: one backend call per
//! device/dtype group (`non_finite_check_and_unscale`), which multiplies every
//! gradient by a factor and counts the infs and NaNs it held.

use crate::{Error, Result};
use amp_tensor::{DType, Device, Layout, Storage, Tensor};

/// Per-parameter non-finite counts from one pass, in the optimizer's parameter order.
#[derive(Debug, Clone, Default)]
pub(crate) struct GradReport {
    /// At least one gradient was checked (PyTorch's "inf checks were recorded").
    pub checked: bool,
    /// Parameters whose gradients held ±inf, with counts.
    pub inf_params: Vec<(String, usize)>,
    /// Parameters whose gradients held NaN, with counts.
    pub nan_params: Vec<(String, usize)>,
}

impl GradReport {
    pub fn found_inf(&self) -> bool {
        !self.inf_params.is_empty() || !self.nan_params.is_empty()
    }
}

/// One distinct gradient view and the parameters (index, name) that have it.
struct Entry {
    owners: Vec<(usize, String)>,
    grad: Tensor,
}

struct Group {
    device: Device,
    dtype: DType,
    entries: Vec<Entry>,
}

/// Multiplies every gradient of `params` by `factor` in place and counts the
/// non-finite values each held before, grouped by device and dtype with one
/// fused backend call per group.
///
/// Gradients that are the same view of the same storage (one gradient tensor
/// shared by two parameters) are processed once. Distinct views of one storage
/// (e.g. slices of a flat gradient buffer) go to separate calls, because one
/// call takes each storage's write lock once. f16 gradients are an `Err`
/// unless `allow_f16`; the check runs before any gradient is modified.
pub(crate) fn scale_grads_in_place(
    params: &[(String, Tensor)],
    factor: f32,
    allow_f16: bool,
) -> Result<GradReport> {
    let mut groups: Vec<Group> = Vec::new();
    for (index, (name, param)) in params.iter().enumerate() {
        let Some(grad) = param.grad() else { continue };
        let dtype = grad.dtype();
        if dtype == DType::F16 && !allow_f16 {
            return Err(Error::Fp16Gradient {
                param: name.clone(),
            });
        }
        if !dtype.is_float() {
            return Err(amp_tensor::Error::UnsupportedDType {
                op: "non_finite_check_and_unscale",
                dtype,
                reason: format!("gradient of parameter {name:?} is not floating-point"),
            }
            .into());
        }
        let group = match groups
            .iter()
            .position(|g| g.dtype == dtype && g.device.same_device(grad.device()))
        {
            Some(i) => &mut groups[i],
            None => {
                groups.push(Group {
                    device: grad.device().clone(),
                    dtype,
                    entries: Vec::new(),
                });
                groups.last_mut().expect("just pushed")
            }
        };
        let same_view = group
            .entries
            .iter_mut()
            .find(|e| e.grad.shares_storage_with(&grad) && e.grad.layout() == grad.layout());
        match same_view {
            Some(entry) => entry.owners.push((index, name.clone())),
            None => group.entries.push(Entry {
                owners: vec![(index, name.clone())],
                grad,
            }),
        }
    }

    let mut counted: Vec<(usize, String, usize, usize)> = Vec::new();
    for group in &groups {
        // Partition into rounds with pairwise distinct storages (usually one round).
        let mut rounds: Vec<Vec<usize>> = Vec::new();
        for (i, entry) in group.entries.iter().enumerate() {
            let free = rounds.iter().position(|round| {
                round
                    .iter()
                    .all(|&j| !group.entries[j].grad.shares_storage_with(&entry.grad))
            });
            match free {
                Some(r) => rounds[r].push(i),
                None => rounds.push(vec![i]),
            }
        }
        for round in &rounds {
            let grads: Vec<&Tensor> = round.iter().map(|&i| &group.entries[i].grad).collect();
            let counts = {
                let mut guards: Vec<_> = grads.iter().map(|g| g.storage_mut()).collect();
                let mut buffers: Vec<(&mut Storage, &Layout)> = guards
                    .iter_mut()
                    .zip(&grads)
                    .map(|(guard, g)| (&mut **guard, g.layout()))
                    .collect();
                group
                    .device
                    .backend()
                    .non_finite_check_and_unscale(&mut buffers, factor)?
            };
            if counts.len() != grads.len() {
                return Err(amp_tensor::Error::Backend {
                    op: "non_finite_check_and_unscale",
                    device: group.device.to_string(),
                    msg: format!(
                        "returned {} counts for {} buffers",
                        counts.len(),
                        grads.len()
                    ),
                }
                .into());
            }
            for (&i, count) in round.iter().zip(counts) {
                for (index, name) in &group.entries[i].owners {
                    counted.push((*index, name.clone(), count.inf, count.nan));
                }
            }
        }
    }

    counted.sort_by_key(|c| c.0);
    let mut report = GradReport {
        checked: !counted.is_empty(),
        ..GradReport::default()
    };
    for (_, name, inf, nan) in counted {
        if inf > 0 {
            report.inf_params.push((name.clone(), inf));
        }
        if nan > 0 {
            report.nan_params.push((name, nan));
        }
    }
    Ok(report)
}
