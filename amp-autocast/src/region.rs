//! Autocast regions: the builder, the RAII guard, the thread-local region
//! stack, and the f32-island helpers.

use crate::cast::AutocastInterceptor;
use crate::policy::default_policy_arc;
use crate::{cache, CastRule, Error, Policy, Result};
use amp_dtype::DType;
use amp_tensor::dispatch::{push_interceptor, InterceptorGuard};
use amp_tensor::{Device, DeviceKind, Tensor};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

/// The settings of one region for one device kind.
#[derive(Clone)]
pub(crate) struct RegionState {
    pub(crate) enabled: bool,
    pub(crate) dtype: DType,
    pub(crate) cache: bool,
    pub(crate) policy: Arc<Policy>,
}

struct Frame {
    id: u64,
    kind: DeviceKind,
    state: RegionState,
}

thread_local! {
    static FRAMES: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
    static NEXT_FRAME: Cell<u64> = const { Cell::new(0) };
}

/// The dtype a region of `kind` runs in when none is given, as in PyTorch:
/// bf16 on CPU, f16 on CUDA.
pub fn default_dtype(kind: DeviceKind) -> DType {
    match kind {
        DeviceKind::Cpu => DType::BF16,
        DeviceKind::Cuda => DType::F16,
    }
}

/// The innermost region's state for `kind`, or the state outside any region.
fn current_state(kind: DeviceKind) -> RegionState {
    FRAMES
        .with(|f| {
            f.borrow()
                .iter()
                .rev()
                .find(|fr| fr.kind == kind)
                .map(|fr| fr.state.clone())
        })
        .unwrap_or_else(|| RegionState {
            enabled: false,
            dtype: default_dtype(kind),
            cache: true,
            policy: default_policy_arc(kind),
        })
}

/// The innermost region's state for `kind` if that region is enabled.
pub(crate) fn active_state(kind: DeviceKind) -> Option<RegionState> {
    FRAMES.with(|f| {
        f.borrow()
            .iter()
            .rev()
            .find(|fr| fr.kind == kind)
            .filter(|fr| fr.state.enabled)
            .map(|fr| fr.state.clone())
    })
}

/// True while an enabled autocast region of `kind` is the innermost region of
/// that kind on this thread (`torch.is_autocast_enabled(device_type)`).
pub fn is_enabled(kind: DeviceKind) -> bool {
    active_state(kind).is_some()
}

/// The dtype of the innermost region of `kind` on this thread, or the
/// default ([`default_dtype`]) outside any (`torch.get_autocast_dtype`).
pub fn current_dtype(kind: DeviceKind) -> DType {
    current_state(kind).dtype
}

/// True unless the innermost region of `kind` turned the cast cache off.
pub fn is_cache_enabled(kind: DeviceKind) -> bool {
    current_state(kind).cache
}

/// The policy in force for `kind` on this thread.
pub fn current_policy(kind: DeviceKind) -> Policy {
    (*current_state(kind).policy).clone()
}

/// Number of autocast regions (enabled or not, any kind) open on this thread.
pub fn nesting_depth() -> usize {
    FRAMES.with(|f| f.borrow().len())
}

/// An open autocast region. Dropping it (also during a panic unwind) restores
/// the previous state; when the thread's outermost region closes, the cast
/// cache is cleared. Not `Send`: regions are per thread, like PyTorch's.
#[must_use = "the region closes when the guard is dropped"]
pub struct AutocastGuard {
    frame: u64,
    kind: DeviceKind,
    _interceptor: InterceptorGuard,
}

impl AutocastGuard {
    /// The region's device kind.
    pub fn kind(&self) -> DeviceKind {
        self.kind
    }
}

impl std::fmt::Debug for AutocastGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AutocastGuard({}, frame {})", self.kind, self.frame)
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        let remaining = FRAMES.try_with(|f| {
            let mut f = f.borrow_mut();
            f.retain(|fr| fr.id != self.frame);
            f.len()
        });
        if remaining == Ok(0) {
            cache::clear();
        }
    }
}

fn push_frame(kind: DeviceKind, state: RegionState) -> AutocastGuard {
    let id = NEXT_FRAME.with(|n| {
        let id = n.get();
        n.set(id + 1);
        id
    });
    FRAMES.with(|f| f.borrow_mut().push(Frame { id, kind, state }));
    AutocastGuard {
        frame: id,
        kind,
        _interceptor: push_interceptor(Rc::new(AutocastInterceptor)),
    }
}

/// Opens an enabled autocast region for `kind` running in `dtype` (f16 or
/// bf16) with the default policy: `torch.autocast(device_type, dtype)`.
///
/// ```
/// use amp_autocast::autocast;
/// use amp_tensor::{DType, Device, Tensor};
///
/// let device = Device::reference();
/// let x = Tensor::randn(&[2, 3], DType::F32, &device, 0)?;
/// let w = Tensor::randn(&[4, 3], DType::F32, &device, 1)?;
/// let y = {
///     let _region = autocast(device.kind(), DType::BF16)?;
///     amp_tensor::ops::linear(&x, &w, None)?
/// };
/// assert_eq!(y.dtype(), DType::BF16);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn autocast(kind: DeviceKind, dtype: DType) -> Result<AutocastGuard> {
    Autocast::new(kind).dtype(dtype).enter()
}

/// Builder for a region with every option of `torch.autocast`, plus a policy.
///
/// Options not given are inherited from the enclosing region of the same kind
/// (as PyTorch reads `get_autocast_dtype` and `is_autocast_cache_enabled`), or
/// else are the defaults: enabled, [`default_dtype`], cache on, [`crate::default_policy`].
#[derive(Debug, Clone)]
pub struct Autocast {
    kind: DeviceKind,
    dtype: Option<DType>,
    enabled: bool,
    cache: Option<bool>,
    policy: Option<Policy>,
    overrides: Vec<(String, CastRule)>,
    device: Option<Device>,
}

impl Autocast {
    /// A region for ops on devices of `kind`.
    pub fn new(kind: DeviceKind) -> Autocast {
        Autocast {
            kind,
            dtype: None,
            enabled: true,
            cache: None,
            policy: None,
            overrides: Vec::new(),
            device: None,
        }
    }

    /// The low-precision dtype (f16 or bf16).
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = Some(dtype);
        self
    }

    /// `false` opens a region where ops run on the dtypes they get (an f32 island).
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Whether casts of f32 leaf parameters are cached (`cache_enabled`).
    pub fn cache(mut self, cache: bool) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The policy (its kind must be the region's; see [`Policy::retarget`]).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Overrides one op's rule for this region only (e.g. keep `linear` in f32).
    pub fn rule(mut self, op: impl Into<String>, rule: CastRule) -> Self {
        self.overrides.push((op.into(), rule));
        self
    }

    /// The device the region is for: [`Autocast::enter`] then checks that it
    /// can run the dtype (bf16 on CUDA needs `device.is_bf16_supported()`).
    pub fn device(mut self, device: &Device) -> Self {
        self.device = Some(device.clone());
        self
    }

    /// Opens the region. An `Err` for a dtype that is not f16 or bf16, a
    /// device of another kind, a dtype the device cannot run, or a policy
    /// written for another kind; in each case no region is opened.
    pub fn enter(self) -> Result<AutocastGuard> {
        let kind = self.kind;
        let outer = current_state(kind);
        let dtype = self.dtype.unwrap_or(outer.dtype);
        if self.enabled {
            if !matches!(dtype, DType::F16 | DType::BF16) {
                return Err(Error::NotLowPrecision { kind, dtype });
            }
            if let Some(device) = &self.device {
                if device.kind() != kind {
                    return Err(Error::DeviceKindMismatch {
                        kind,
                        device: device.to_string(),
                        device_kind: device.kind(),
                    });
                }
                if kind == DeviceKind::Cuda && dtype == DType::BF16 && !device.is_bf16_supported() {
                    return Err(Error::UnsupportedDType {
                        kind,
                        dtype,
                        device: device.to_string(),
                        reason: "the device has no native bf16 (is_bf16_supported() is false; CUDA bf16 needs \
                                 compute capability 8.0 or newer); use f16 with a GradScaler"
                            .into(),
                    });
                }
            }
        }
        let mut policy = match self.policy {
            Some(p) if p.kind() != kind => {
                return Err(Error::PolicyKindMismatch {
                    kind,
                    policy_kind: p.kind(),
                })
            }
            Some(p) => Arc::new(p),
            None => outer.policy,
        };
        if !self.overrides.is_empty() {
            let p = Arc::make_mut(&mut policy);
            for (op, rule) in self.overrides {
                p.set(op, rule);
            }
        }
        let state = RegionState {
            enabled: self.enabled,
            dtype,
            cache: self.cache.unwrap_or(outer.cache),
            policy,
        };
        Ok(push_frame(kind, state))
    }
}

/// Runs `f` with autocast disabled for `kind` (`autocast(enabled=False)` as a
/// closure): ops inside run on the dtypes they are given. See [`run_in_f32`]
/// to also cast the inputs.
pub fn float32<R>(kind: DeviceKind, f: impl FnOnce() -> R) -> R {
    let mut state = current_state(kind);
    state.enabled = false;
    let _off = push_frame(kind, state);
    f()
}

/// Runs a numerically sensitive function in f32 inside a region (best
/// practice: an f32 island), as PyTorch's `custom_fwd(cast_inputs=torch.float32)`:
/// when autocast is enabled for `kind`, the floating inputs on `kind` that
/// are not f64 are cast to f32 (differentiably) and `f` runs with autocast
/// disabled; when it is not, `f` gets the inputs unchanged.
///
/// ```
/// use amp_autocast::{autocast, run_in_f32};
/// use amp_tensor::{ops, DType, Device, Tensor};
///
/// let device = Device::reference();
/// let w = Tensor::randn(&[3, 3], DType::F32, &device, 0)?;
/// let _region = autocast(device.kind(), DType::BF16)?;
/// let h = ops::matmul(&w, &w)?; // bf16
/// let y = run_in_f32(device.kind(), &[&h, &w], |t| ops::matmul(&t[0], &t[1]))?;
/// assert_eq!(y.dtype(), DType::F32);
/// # Ok::<(), amp_tensor::Error>(())
/// ```
pub fn run_in_f32<R, E: From<Error>>(
    kind: DeviceKind,
    inputs: &[&Tensor],
    f: impl FnOnce(&[Tensor]) -> std::result::Result<R, E>,
) -> std::result::Result<R, E> {
    if !is_enabled(kind) {
        let inputs: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
        return f(&inputs);
    }
    // Cast inside the disabled region, so the casts are not themselves autocast ops.
    float32(kind, || {
        let cast = inputs
            .iter()
            .map(|t| {
                let eligible =
                    t.device().kind() == kind && t.dtype().is_float() && t.dtype() != DType::F64;
                if eligible {
                    t.to_dtype(DType::F32)
                } else {
                    Ok((*t).clone())
                }
            })
            .collect::<amp_tensor::Result<Vec<Tensor>>>()
            .map_err(|e| E::from(Error::Tensor(e)))?;
        f(&cast)
    })
}
