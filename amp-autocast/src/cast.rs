//! The interceptor an autocast region installs: looks each op up in the
//! region's policy and casts its eligible inputs.

use crate::region::{active_state, RegionState};
use crate::{cache, stats, CastRule};
use amp_dtype::DType;
use amp_tensor::dispatch::Interceptor;
use amp_tensor::{is_grad_enabled, DeviceKind, Error, Result, Tensor};

/// Consults the thread's region state on every top-level op.
pub(crate) struct AutocastInterceptor;

/// PyTorch's `is_eligible`: a floating tensor on the region's device kind that is not f64.
pub(crate) fn is_eligible(t: &Tensor, kind: DeviceKind) -> bool {
    t.device().kind() == kind && t.dtype().is_float() && t.dtype() != DType::F64
}

impl Interceptor for AutocastInterceptor {
    fn intercept(&self, op: &'static str, inputs: &[Tensor]) -> Result<Option<Vec<Tensor>>> {
        // The op belongs to the region of its inputs' device kind; CUDA first,
        // as PyTorch's AutocastCUDA key outranks AutocastCPU.
        for kind in [DeviceKind::Cuda, DeviceKind::Cpu] {
            if inputs.iter().any(|t| t.device().kind() == kind) {
                if let Some(state) = active_state(kind) {
                    return apply(op, inputs, kind, &state);
                }
            }
        }
        Ok(None)
    }
}

/// The region's casts for `op`: deferred casts (`Tensor::to_dtype_deferred`)
/// of the eligible inputs, through the cast cache.
fn apply(
    op: &'static str,
    inputs: &[Tensor],
    kind: DeviceKind,
    state: &RegionState,
) -> Result<Option<Vec<Tensor>>> {
    let rule = state.policy.rule(op);
    let target = match rule {
        CastRule::Passthrough => None,
        CastRule::LowerPrecision => {
            check_no_f64(op, inputs, kind, state.dtype)?;
            Some(state.dtype)
        }
        CastRule::Float32 => Some(DType::F32),
        CastRule::Promote => {
            let mut widest: Option<DType> = None;
            for t in inputs.iter().filter(|t| is_eligible(t, kind)) {
                widest = Some(match widest {
                    None => t.dtype(),
                    Some(w) => DType::promote(w, t.dtype())?,
                });
            }
            widest
        }
    };
    let replaced = match target {
        Some(target) => {
            let cache_ok = state.cache && target == state.dtype && is_grad_enabled();
            let mut out = Vec::with_capacity(inputs.len());
            for t in inputs {
                if is_eligible(t, kind) && t.dtype() != target {
                    // PyTorch caches lower-precision casts of f32 leaf weights only. Never
                    // while grad mode is off: such a cast has no autograd history, and a
                    // later forward that needs gradients must not reuse it (PyTorch #158232).
                    let cacheable =
                        cache_ok && t.dtype() == DType::F32 && t.is_leaf() && t.requires_grad();
                    out.push(cache::cast(t, target, cacheable)?);
                } else {
                    out.push(t.clone());
                }
            }
            Some(out)
        }
        None => None,
    };
    let effective = replaced.as_deref().unwrap_or(inputs);
    let floating: Vec<DType> = effective
        .iter()
        .filter(|t| t.dtype().is_float())
        .map(|t| t.dtype())
        .collect();
    stats::record(|s| {
        s.ops_by_rule[rule.index()] += 1;
        if floating.is_empty() || floating.contains(&DType::F64) {
            s.ops_other += 1;
        } else if floating.contains(&DType::F32) {
            s.ops_f32 += 1;
        } else {
            s.ops_low_precision += 1;
        }
    });
    Ok(replaced)
}

/// A lower-precision op cannot mix f64 (never cast) with inputs cast to the
/// region's dtype: PyTorch's kernels would fail on the dtype mismatch; say why here.
fn check_no_f64(op: &'static str, inputs: &[Tensor], kind: DeviceKind, dtype: DType) -> Result<()> {
    let f64_input = inputs
        .iter()
        .position(|t| t.device().kind() == kind && t.dtype() == DType::F64);
    let cast_input = inputs.iter().position(|t| is_eligible(t, kind));
    if let (Some(i), Some(j)) = (f64_input, cast_input) {
        let dtypes: Vec<String> = inputs.iter().map(|t| t.dtype().to_string()).collect();
        return Err(Error::invalid(
            op,
            format!(
                "autocast runs {op} in {dtype} but input {i} is f64, which autocast never casts, while input {j} \
                 ({}) is cast to {dtype} (input dtypes: [{}]); cast the f64 input to f32 or run {op} outside the region",
                inputs[j].dtype(),
                dtypes.join(", ")
            ),
        ));
    }
    Ok(())
}
