//! [`DistributedDataParallel`]: gradients averaged over the ranks in buckets,
//! each bucket's all-reduce started from the backward pass as soon as its
//! gradients are final.

use crate::group::{ProcessGroup, ReduceOp, Work};
use crate::scaler::check_agree;
use crate::{Error, Result};
use amp_tensor::{ops, DType, GradHookId, Tensor};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// How gradients are grouped into all-reduces (PyTorch DDP's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DdpConfig {
    /// The size of a bucket's f32 gradients, in MiB (PyTorch's `bucket_cap_mb`, 25).
    pub bucket_cap_mb: f64,
    /// The size of the first bucket, in MiB: small, so that the first
    /// all-reduce starts early in the backward pass (PyTorch's 1 MiB).
    pub first_bucket_mb: f64,
    /// Start each bucket's all-reduce from the backward pass (post-accumulate
    /// gradient hooks); `false` reduces every bucket in [`DistributedDataParallel::synchronize`].
    pub overlap: bool,
}

impl Default for DdpConfig {
    fn default() -> Self {
        DdpConfig {
            bucket_cap_mb: 25.0,
            first_bucket_mb: 1.0,
            overlap: true,
        }
    }
}

/// A group of parameters whose gradients travel in one all-reduce.
#[derive(Debug, Clone)]
struct Bucket {
    /// Indices into the parameter list.
    params: Vec<usize>,
    /// Gradients final in this iteration.
    ready: Vec<bool>,
    /// A parameter's gradient changed after the bucket's all-reduce started
    /// (a second backward pass): the bucket is reduced again at synchronize.
    stale: bool,
}

/// The mutable part, shared with the gradient hooks.
struct State {
    params: Vec<(String, Tensor)>,
    buckets: Vec<Bucket>,
    /// For each parameter: its bucket and its slot in it.
    place: Vec<(usize, usize)>,
    /// The all-reduce in flight per bucket (started in bucket order).
    inflight: Vec<Option<Box<dyn Work>>>,
    /// Buckets started so far in this iteration (always a prefix).
    started: usize,
    /// The first error a hook met; returned by `synchronize`.
    error: Option<Error>,
    /// This rank's gradients held inf or NaN before averaging, this iteration.
    overflow: bool,
}

/// Data-parallel training over a [`ProcessGroup`] (PyTorch's
/// `DistributedDataParallel`, for the parameters of any model):
///
/// - [`new`](Self::new) checks that every rank holds the same parameters
///   (names, shapes, dtypes, in order) and copies rank 0's values to all;
/// - the gradients are grouped into buckets in reverse parameter order (the
///   order in which backward produces them), the first one small
///   ([`DdpConfig`]); with `overlap`, a hook on each parameter starts a
///   bucket's all-reduce as soon as its gradients are final, in bucket order,
///   while the backward pass goes on;
/// - [`synchronize`](Self::synchronize), after `backward` and before the
///   optimizer (or scaler) step, completes the all-reduces, starts any that
///   did not start (a parameter without a gradient counts as zeros), and
///   writes each gradient back as the mean over the ranks.
///
/// With the scaler, pass [`ScalerReduce`](crate::ScalerReduce) to the
/// `GradScaler` so that every rank skips or steps together.
pub struct DistributedDataParallel {
    group: Arc<dyn ProcessGroup>,
    state: Arc<Mutex<State>>,
    hooks: Vec<(Tensor, GradHookId)>,
    /// Whether the last synchronized gradients of this rank overflowed before averaging.
    last_overflow: Arc<AtomicBool>,
}

impl fmt::Debug for DistributedDataParallel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("DistributedDataParallel")
            .field("group", &self.group)
            .field("params", &state.params.len())
            .field("buckets", &state.buckets.len())
            .finish()
    }
}

impl DistributedDataParallel {
    /// Wraps `params` (every trainable parameter of the model, named, in the
    /// model's order — the same on every rank) for data-parallel training
    /// over `group`: checks them across ranks, broadcasts rank 0's values,
    /// builds the buckets and, with `overlap`, registers the hooks.
    pub fn new(
        group: Arc<dyn ProcessGroup>,
        params: Vec<(String, Tensor)>,
        config: DdpConfig,
    ) -> Result<Self> {
        if !(config.bucket_cap_mb > 0.0 && config.first_bucket_mb > 0.0) {
            return Err(Error::Unsupported {
                op: "DistributedDataParallel::new",
                reason: format!(
                    "bucket sizes must be positive, got bucket_cap_mb {} and first_bucket_mb {}",
                    config.bucket_cap_mb, config.first_bucket_mb
                ),
            });
        }
        check_same_parameters(group.as_ref(), &params)?;
        {
            let _no_grad = amp_tensor::no_grad();
            for (_, p) in &params {
                let value = group.broadcast(&p.to_dtype(wide(p.dtype()))?, 0)?;
                p.assign(&value)?;
            }
        }
        let buckets = plan_buckets(&params, config);
        let mut place = vec![(0, 0); params.len()];
        for (b, bucket) in buckets.iter().enumerate() {
            for (slot, &i) in bucket.params.iter().enumerate() {
                place[i] = (b, slot);
            }
        }
        let n_buckets = buckets.len();
        let state = Arc::new(Mutex::new(State {
            params: params.clone(),
            buckets,
            place,
            inflight: (0..n_buckets).map(|_| None).collect(),
            started: 0,
            error: None,
            overflow: false,
        }));
        let mut hooks = Vec::new();
        if config.overlap {
            for (i, (_, p)) in params.iter().enumerate() {
                if !p.requires_grad() {
                    continue;
                }
                let (weak, group) = (Arc::downgrade(&state), group.clone());
                let id = p.register_post_accumulate_grad_hook(move |_| {
                    gradient_ready(&weak, group.as_ref(), i)
                })?;
                hooks.push((p.clone(), id));
            }
        }
        Ok(DistributedDataParallel {
            group,
            state,
            hooks,
            last_overflow: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The process group.
    pub fn group(&self) -> &Arc<dyn ProcessGroup> {
        &self.group
    }

    /// The buckets, as lists of parameter names (in reduction order).
    pub fn buckets(&self) -> Vec<Vec<String>> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .buckets
            .iter()
            .map(|b| {
                b.params
                    .iter()
                    .map(|&i| state.params[i].0.clone())
                    .collect()
            })
            .collect()
    }

    /// Completes the iteration's gradient all-reduces (see the type's docs):
    /// afterwards every parameter's gradient is the mean over the ranks of
    /// the ranks' gradients, identical on every rank. Call it after
    /// `backward` and before unscaling, clipping or stepping.
    pub fn synchronize(&self) -> Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = state.error.take() {
            return Err(e);
        }
        let _no_grad = amp_tensor::no_grad();
        for b in 0..state.buckets.len() {
            let reduced = match state.inflight[b].take() {
                Some(work) if !state.buckets[b].stale => work.wait()?,
                stale => {
                    if let Some(work) = stale {
                        work.wait()?; // a second backward changed the bucket
                    }
                    let flat = flatten(&mut state, b)?;
                    self.group.all_reduce(&flat, ReduceOp::Avg)?
                }
            };
            scatter(&state, b, &reduced)?;
            let bucket = &mut state.buckets[b];
            bucket.ready.iter_mut().for_each(|r| *r = false);
            bucket.stale = false;
        }
        state.started = 0;
        self.last_overflow.store(state.overflow, Ordering::SeqCst);
        state.overflow = false;
        Ok(())
    }

    /// Whether this rank's own gradients held inf or NaN before the last
    /// [`synchronize`](Self::synchronize) averaged them (after averaging,
    /// every rank holds the infs). Shared with [`ScalerReduce::for_ddp`](crate::ScalerReduce::for_ddp),
    /// so that the scaler's `StepOutcome` names the rank it came from.
    pub fn local_overflow(&self) -> Arc<AtomicBool> {
        self.last_overflow.clone()
    }

    /// `Err(Mismatch)` unless every rank holds bit-identical parameters: a
    /// checksum of each parameter's values compared across the ranks.
    pub fn check_parameters_agree(&self) -> Result<()> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut names = Vec::new();
        let mut sums = Vec::new();
        for (name, p) in &state.params {
            names.push(name.as_str());
            sums.push(checksum(p)?);
        }
        check_agree(self.group.as_ref(), "parameter", &names, &sums)
    }
}

impl Drop for DistributedDataParallel {
    fn drop(&mut self) {
        for (p, id) in &self.hooks {
            p.remove_grad_hook(*id);
        }
    }
}

/// f32 for the collectives unless the tensor is f64.
fn wide(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// A bit-exact fingerprint of a tensor's values (for cross-rank checks): the
/// bits of each f32/f64 value folded with a multiplier, kept below 2⁵² so it
/// is exact in f64.
fn checksum(t: &Tensor) -> Result<f64> {
    let mut h: u64 = 0x9e37_79b9;
    for v in t.to_f64_vec()? {
        h = (h ^ v.to_bits()).wrapping_mul(0x100_0000_01b3) & ((1 << 52) - 1);
    }
    Ok(h as f64)
}

/// `Err(Mismatch)` unless every rank passes the same parameter list.
fn check_same_parameters(group: &dyn ProcessGroup, params: &[(String, Tensor)]) -> Result<()> {
    let mut h: u64 = 0xcbf2_9ce4;
    for (name, p) in params {
        let text = format!("{name}:{:?}:{}", p.dims(), p.dtype());
        for b in text.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3) & ((1 << 52) - 1);
        }
    }
    let numel: usize = params.iter().map(|(_, p)| p.numel()).sum();
    check_agree(
        group,
        "model",
        &[
            "parameter count",
            "element count",
            "hash of the names, shapes and dtypes",
        ],
        &[params.len() as f64, numel as f64, h as f64],
    )
}

/// Buckets in reverse parameter order: the first up to `first_bucket_mb`,
/// the others up to `bucket_cap_mb` (a parameter larger than the cap gets a
/// bucket of its own). Parameters that do not require grad are left out.
fn plan_buckets(params: &[(String, Tensor)], config: DdpConfig) -> Vec<Bucket> {
    let mib = |mb: f64| (mb * 1024.0 * 1024.0) as usize;
    let mut buckets = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut bytes = 0usize;
    for (i, (_, p)) in params.iter().enumerate().rev() {
        if !p.requires_grad() {
            continue;
        }
        let size = p.numel() * wide(p.dtype()).size_in_bytes();
        let cap = if buckets.is_empty() {
            mib(config.first_bucket_mb)
        } else {
            mib(config.bucket_cap_mb)
        };
        if !current.is_empty() && bytes + size > cap {
            buckets.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(i);
        bytes += size;
    }
    if !current.is_empty() {
        buckets.push(current);
    }
    buckets
        .into_iter()
        .map(|params| Bucket {
            ready: vec![false; params.len()],
            params,
            stale: false,
        })
        .collect()
}

/// The bucket's gradients in one flat f32 (or f64) vector; zeros for a
/// parameter without a gradient. Notes whether they hold inf or NaN.
fn flatten(state: &mut State, b: usize) -> Result<Tensor> {
    let mut parts = Vec::new();
    for &i in &state.buckets[b].params {
        let p = &state.params[i].1;
        let dtype = wide(p.dtype());
        let part = match p.grad() {
            Some(g) => g.to_dtype(dtype)?.reshape(&[g.numel()])?,
            None => Tensor::zeros(&[p.numel()], dtype, p.device())?,
        };
        parts.push(part);
    }
    let refs: Vec<&Tensor> = parts.iter().collect();
    let flat = ops::cat(&refs, 0)?;
    // Scaling by 1 changes nothing; the fused pass counts the non-finite values.
    let counts = ops::non_finite_check_and_unscale_(&[&flat], 1.0)?;
    state.overflow |= counts.iter().any(|c| c.inf > 0 || c.nan > 0);
    Ok(flat)
}

/// Writes the reduced bucket back into its parameters' gradients.
fn scatter(state: &State, b: usize, reduced: &Tensor) -> Result<()> {
    let mut offset = 0;
    for &i in &state.buckets[b].params {
        let p = &state.params[i].1;
        let n = p.numel();
        let part = reduced.narrow(0, offset, n)?.reshape(p.dims())?;
        offset += n;
        match p.grad() {
            Some(g) if g.is_contiguous() => g.assign(&part)?,
            _ => p.set_grad(Some(part.to_dtype(p.grad_dtype())?.contiguous()?))?,
        }
    }
    Ok(())
}

/// The hook: parameter `i`'s gradient is final for this backward pass.
fn gradient_ready(
    state: &Weak<Mutex<State>>,
    group: &dyn ProcessGroup,
    i: usize,
) -> amp_tensor::Result<()> {
    let Some(state) = state.upgrade() else {
        return Ok(());
    };
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    let (b, slot) = state.place[i];
    if state.buckets[b].ready[slot] {
        // A second backward before synchronize: accumulate, reduce again later.
        if state.inflight[b].is_some() {
            state.buckets[b].stale = true;
        }
        return Ok(());
    }
    state.buckets[b].ready[slot] = true;
    // Start every complete bucket in order, so that all ranks issue the
    // collectives in the same sequence.
    while state.started < state.buckets.len()
        && state.buckets[state.started].ready.iter().all(|&r| r)
    {
        let next = state.started;
        let work =
            flatten(&mut state, next).and_then(|flat| group.start_all_reduce(&flat, ReduceOp::Avg));
        match work {
            Ok(work) => state.inflight[next] = Some(work),
            Err(e) => return Err(keep(&mut state, e)),
        }
        state.started += 1;
    }
    // Advance the all-reduces in flight: an engine that progresses only when
    // called (Open MPI over shared memory or TCP) moves on here, while the
    // backward pass runs, instead of all at once in `synchronize`.
    let progressed: Result<()> = state
        .inflight
        .iter_mut()
        .flatten()
        .try_for_each(|w| w.progress());
    progressed.map_err(|e| keep(&mut state, e))
}

/// Keeps a hook's error for `synchronize` and stops the backward pass with it.
fn keep(state: &mut State, e: Error) -> amp_tensor::Error {
    let message = e.to_string();
    state.error = Some(e);
    amp_tensor::Error::invalid("DistributedDataParallel", message)
}
