//! [`Tensor`]: a cheap-to-clone handle to storage, layout, dtype, device and
//! autograd metadata.

use crate::autograd::{self, BackwardFn, Node};
use crate::backend::View;
use crate::backend::{HostStorage, Storage};
use crate::storage::HostElement;
use crate::{memory, random, Device, Error, Layout, Result};
use amp_dtype::DType;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

struct TensorImpl {
    id: u64,
    storage: Arc<RwLock<Storage>>,
    layout: Layout,
    dtype: DType,
    device: Device,
    requires_grad: AtomicBool,
    grad: Mutex<Option<Tensor>>,
    grad_fn: Option<Arc<Node>>,
    /// For a deferred cast and its views: what `storage` will be filled from.
    deferred: Option<Arc<Deferred>>,
    /// Run after backward has accumulated this leaf's gradient.
    grad_hooks: Mutex<Vec<(u64, GradHook)>>,
}

/// A hook run after backward has accumulated a leaf's gradient
/// ([`Tensor::register_post_accumulate_grad_hook`]).
pub type GradHook = Arc<dyn Fn(&Tensor) -> Result<()> + Send + Sync>;

static NEXT_HOOK: AtomicU64 = AtomicU64::new(1);

/// Identifies a hook registered with [`Tensor::register_post_accumulate_grad_hook`],
/// for [`Tensor::remove_grad_hook`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GradHookId(u64);

/// A cast computed when first read ([`Tensor::to_dtype_deferred`]): until
/// then the tensor's storage is an empty placeholder, and kernels that can
/// read the source as cast ([`crate::backend::Backend::fuses_cast`]) read the source.
pub(crate) struct Deferred {
    /// The tensor whose elements are cast (detached, any layout).
    source: Tensor,
    /// The cast tensor's shape (its own layout is contiguous).
    shape: Vec<usize>,
    /// Set once the storage holds the cast elements.
    done: OnceLock<()>,
    /// Serialises the one materialisation.
    lock: Mutex<()>,
}

/// What a kernel reads for one operand: a storage and the layout of the
/// elements in it (see [`Tensor::kernel_input`]).
pub struct KernelInput<'a> {
    guard: RwLockReadGuard<'a, Storage>,
    layout: &'a Layout,
}

impl KernelInput<'_> {
    /// The storage the kernel reads.
    pub fn storage(&self) -> &Storage {
        &self.guard
    }

    /// The operand as the backend takes it.
    pub fn view(&self) -> View<'_> {
        (&self.guard, self.layout)
    }

    /// The layout of the elements in the storage.
    pub fn layout(&self) -> &Layout {
        self.layout
    }

    /// The dtype of the storage (wider than the tensor's for a fused deferred cast).
    pub fn dtype(&self) -> DType {
        self.guard.dtype()
    }
}

/// An n-dimensional array on a [`Device`], with autograd.
///
/// Cloning is cheap (an `Arc`); views (`transpose`, `narrow`, …) share storage.
#[derive(Clone)]
pub struct Tensor(Arc<TensorImpl>);

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor[{:?}, {}, {}",
            self.dims(),
            self.dtype(),
            self.device()
        )?;
        if self.requires_grad() {
            write!(f, ", requires_grad")?;
        }
        if let Some(n) = &self.0.grad_fn {
            write!(f, ", grad_fn={}", n.op)?;
        }
        write!(f, "]")
    }
}

impl Tensor {
    // ----- construction -------------------------------------------------

    pub(crate) fn from_storage(storage: Storage, shape: &[usize], device: &Device) -> Tensor {
        let dtype = storage.dtype();
        Tensor::from_parts(
            Arc::new(RwLock::new(storage)),
            Layout::contiguous(shape),
            dtype,
            device.clone(),
            None,
            None,
        )
    }

    fn from_parts(
        storage: Arc<RwLock<Storage>>,
        layout: Layout,
        dtype: DType,
        device: Device,
        grad_fn: Option<Arc<Node>>,
        deferred: Option<Arc<Deferred>>,
    ) -> Tensor {
        let requires_grad = grad_fn.is_some();
        Tensor(Arc::new(TensorImpl {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            storage,
            layout,
            dtype,
            device,
            requires_grad: AtomicBool::new(requires_grad),
            grad: Mutex::new(None),
            grad_fn,
            deferred,
            grad_hooks: Mutex::new(Vec::new()),
        }))
    }

    /// `source` cast to `dtype`, computed when first read, recorded as op
    /// `"to"` (see [`Tensor::to_dtype_deferred`]).
    pub(crate) fn deferred_cast(source: &Tensor, dtype: DType) -> Tensor {
        let from = source.dtype();
        let node = make_node(
            "to",
            &[source],
            Box::new(move |g| Ok(vec![Some(g.to_dtype(from)?)])),
        );
        let deferred = Deferred {
            source: source.detach(),
            shape: source.shape(),
            done: OnceLock::new(),
            lock: Mutex::new(()),
        };
        Tensor::from_parts(
            Arc::new(RwLock::new(Storage::Host(HostStorage::filled(
                dtype, 0, 0.0,
            )))),
            Layout::contiguous(source.dims()),
            dtype,
            source.device().clone(),
            node,
            Some(Arc::new(deferred)),
        )
    }

    /// Wraps a freshly computed contiguous storage as the result of op `op`,
    /// recording `backward` on the tape if grad mode is on and an input needs grad.
    pub(crate) fn from_op(
        storage: Storage,
        shape: &[usize],
        device: &Device,
        op: &'static str,
        inputs: &[&Tensor],
        backward: impl Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
    ) -> Tensor {
        let dtype = storage.dtype();
        let node = make_node(op, inputs, Box::new(backward));
        Tensor::from_parts(
            Arc::new(RwLock::new(storage)),
            Layout::contiguous(shape),
            dtype,
            device.clone(),
            node,
            None,
        )
    }

    /// A view of this tensor's storage with another layout, recorded as op `op`.
    pub(crate) fn view_op(
        &self,
        layout: Layout,
        op: &'static str,
        backward: impl Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
    ) -> Tensor {
        self.view_op_multi(layout, op, &[self], backward)
    }

    /// A tensor sharing this one's storage with `layout`, recorded as op `op` of `inputs`.
    pub(crate) fn view_op_multi(
        &self,
        layout: Layout,
        op: &'static str,
        inputs: &[&Tensor],
        backward: impl Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
    ) -> Tensor {
        let node = make_node(op, inputs, Box::new(backward));
        Tensor::from_parts(
            self.0.storage.clone(),
            layout,
            self.0.dtype,
            self.0.device.clone(),
            node,
            self.0.deferred.clone(),
        )
    }

    /// A tensor holding `data` with `shape` on `device`.
    pub fn from_vec<T: HostElement>(
        data: Vec<T>,
        shape: &[usize],
        device: &Device,
    ) -> Result<Tensor> {
        let numel = memory::checked_numel("from_vec", shape)?;
        if data.len() != numel {
            return Err(Error::invalid(
                "from_vec",
                format!(
                    "{} elements of {} given for shape {shape:?} ({numel} elements)",
                    data.len(),
                    T::DTYPE
                ),
            ));
        }
        Tensor::from_host(T::into_host(data), shape, device)
    }

    /// A tensor from a host buffer (its length must match `shape`).
    pub fn from_host(data: HostStorage, shape: &[usize], device: &Device) -> Result<Tensor> {
        let numel = memory::checked_numel("from_host", shape)?;
        if data.len() != numel {
            return Err(Error::invalid(
                "from_host",
                format!("{} elements given for shape {shape:?}", data.len()),
            ));
        }
        let storage = device.backend().from_host(data)?;
        Ok(Tensor::from_storage(storage, shape, device))
    }

    /// A tensor with `values` rounded once to `dtype`.
    pub fn from_f64_slice(
        values: &[f64],
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let numel = memory::checked_numel("from_f64_slice", shape)?;
        if values.len() != numel {
            return Err(Error::invalid(
                "from_f64_slice",
                format!("{} values given for shape {shape:?}", values.len()),
            ));
        }
        Tensor::from_host(HostStorage::from_f64(dtype, values), shape, device)
    }

    /// A tensor of `shape` filled with `value` (rounded to `dtype`).
    pub fn full(shape: &[usize], value: f64, dtype: DType, device: &Device) -> Result<Tensor> {
        let numel = memory::checked_numel("full", shape)?;
        memory::check_alloc("full", numel, dtype)?;
        let storage = device.backend().full(numel, value, dtype)?;
        Ok(Tensor::from_storage(storage, shape, device))
    }

    /// Zeros.
    pub fn zeros(shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        Tensor::full(shape, 0.0, dtype, device)
    }

    /// Ones.
    pub fn ones(shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        Tensor::full(shape, 1.0, dtype, device)
    }

    /// A one-element tensor of shape `[]`.
    pub fn scalar(value: f64, dtype: DType, device: &Device) -> Result<Tensor> {
        Tensor::full(&[], value, dtype, device)
    }

    /// Standard normal samples, reproducible: the same seed gives the same bits on every device.
    pub fn randn(shape: &[usize], dtype: DType, device: &Device, seed: u64) -> Result<Tensor> {
        let n = sample_count("randn", shape, dtype)?;
        Tensor::from_f64_slice(&random::normals(seed, n), shape, dtype, device)
    }

    /// Uniform samples in `[low, high)`, reproducible from `seed`.
    pub fn rand_uniform(
        shape: &[usize],
        low: f64,
        high: f64,
        dtype: DType,
        device: &Device,
        seed: u64,
    ) -> Result<Tensor> {
        if low.partial_cmp(&high) != Some(std::cmp::Ordering::Less)
            || !low.is_finite()
            || !high.is_finite()
        {
            return Err(Error::invalid(
                "rand_uniform",
                format!("need finite low < high, got [{low}, {high})"),
            ));
        }
        let n = sample_count("rand_uniform", shape, dtype)?;
        let v: Vec<f64> = (0..n as u64)
            .map(|i| low + (high - low) * random::uniform(seed, i))
            .collect();
        Tensor::from_f64_slice(&v, shape, dtype, device)
    }

    /// Uniform random integers in `[low, high)` as i64, reproducible from `seed`.
    pub fn randint(
        low: i64,
        high: i64,
        shape: &[usize],
        device: &Device,
        seed: u64,
    ) -> Result<Tensor> {
        if low >= high {
            return Err(Error::invalid(
                "randint",
                format!("need low < high, got [{low}, {high})"),
            ));
        }
        let n = sample_count("randint", shape, DType::I64)?;
        let span = high.abs_diff(low);
        let v: Vec<i64> = (0..n as u64)
            .map(|i| low.wrapping_add((random::draw_u64(seed, i) % span) as i64)) // exact: the sum lies in [low, high)
            .collect();
        Tensor::from_vec(v, shape, device)
    }

    /// `[start, start + step, …)` below `end`, as `torch.arange`.
    pub fn arange(
        start: f64,
        end: f64,
        step: f64,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        if step == 0.0 || !step.is_finite() || (end - start) / step < 0.0 {
            return Err(Error::invalid(
                "arange",
                format!("invalid range start={start} end={end} step={step}"),
            ));
        }
        let count = ((end - start) / step).ceil().max(0.0);
        // `as usize` saturates: a count beyond usize is refused by the size check.
        let n = count as usize;
        memory::check_alloc("arange", n, DType::F64)?;
        let v: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
        Tensor::from_f64_slice(&v, &[n], dtype, device)
    }

    // ----- metadata -----------------------------------------------------

    /// A process-unique identity (views and casts get their own).
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        self.0.layout.shape()
    }

    /// The dimensions, as an owned vector (PyTorch's `shape`).
    pub fn shape(&self) -> Vec<usize> {
        self.dims().to_vec()
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.dims().len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.0.layout.numel()
    }

    /// Element dtype.
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }

    /// The device holding the storage.
    pub fn device(&self) -> &Device {
        &self.0.device
    }

    /// The view's layout.
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }

    /// True if the layout is row-major without gaps.
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }

    /// True if both tensors view the same storage.
    pub fn shares_storage_with(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    /// True while this tensor is a deferred cast whose elements have not been
    /// computed yet ([`Tensor::to_dtype_deferred`]).
    pub fn is_deferred(&self) -> bool {
        self.0
            .deferred
            .as_ref()
            .is_some_and(|d| d.done.get().is_none())
    }

    /// Computes a deferred cast's elements into its storage (once; a no-op
    /// for every other tensor).
    fn materialise(&self) -> Result<()> {
        let Some(d) = &self.0.deferred else {
            return Ok(());
        };
        if d.done.get().is_some() {
            return Ok(());
        }
        let _one = d.lock.lock().unwrap_or_else(|e| e.into_inner());
        if d.done.get().is_some() {
            return Ok(());
        }
        let cast = d
            .source
            .with_view(|v| d.source.device().backend().cast(v, self.0.dtype))??;
        *self.0.storage.write().unwrap_or_else(|e| e.into_inner()) = cast;
        let _ = d.done.set(());
        Ok(())
    }

    /// Read access to the storage, for backends and kernels (a deferred cast
    /// is computed first).
    pub(crate) fn storage(&self) -> Result<RwLockReadGuard<'_, Storage>> {
        self.materialise()?;
        Ok(self.0.storage.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Write access to the storage, for in-place kernels (a deferred cast is
    /// computed first).
    pub(crate) fn storage_mut(&self) -> Result<RwLockWriteGuard<'_, Storage>> {
        self.materialise()?;
        Ok(self.0.storage.write().unwrap_or_else(|e| e.into_inner()))
    }

    /// Runs `f` with this tensor as a kernel input view (a deferred cast is computed first).
    pub fn with_view<R>(&self, f: impl FnOnce(View<'_>) -> R) -> Result<R> {
        let s = self.storage()?;
        Ok(f((&s, &self.0.layout)))
    }

    /// What a kernel of `op` reads as its operand number `index` for this
    /// tensor: for a deferred cast not yet computed, whose backend reads that
    /// operand as cast ([`crate::backend::Backend::fuses_cast`]), the source's storage
    /// and layout (of the source's dtype); otherwise this tensor's own.
    pub fn kernel_input(&self, op: &str, index: usize) -> Result<KernelInput<'_>> {
        if let Some(d) = &self.0.deferred {
            let fused = d.done.get().is_none()
                && self.0.layout == Layout::contiguous(&d.shape)
                && self
                    .device()
                    .backend()
                    .fuses_cast(op, index, d.source.dtype(), self.0.dtype);
            if fused {
                return Ok(KernelInput {
                    guard: d.source.storage()?,
                    layout: d.source.layout(),
                });
            }
        }
        Ok(KernelInput {
            guard: self.storage()?,
            layout: &self.0.layout,
        })
    }

    /// This tensor's own storage and layout, as a kernel input (a deferred
    /// cast is computed first).
    pub fn materialised_input(&self) -> Result<KernelInput<'_>> {
        Ok(KernelInput {
            guard: self.storage()?,
            layout: &self.0.layout,
        })
    }

    // ----- readers ------------------------------------------------------

    /// The elements in logical order; an `Err` if `T` is not the tensor's dtype.
    pub fn to_vec<T: HostElement>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype() {
            return Err(Error::DTypeMismatch {
                op: "to_vec",
                lhs: self.dtype(),
                rhs: T::DTYPE,
            });
        }
        let mut host = self.with_view(|v| self.device().backend().to_host(v))??;
        // The backend's copy is ours: move its vector out rather than copy it again.
        Ok(std::mem::take(
            T::slice_mut(&mut host).expect("dtype checked"),
        ))
    }

    /// The elements in logical order, widened to f64 (exact for every float format).
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        let host = self.with_view(|v| self.device().backend().to_host(v))??;
        Ok(host.read_f64(&Layout::contiguous(&[host.len()])))
    }

    /// The value of a one-element tensor.
    pub fn scalar_f64(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(Error::invalid(
                "scalar_f64",
                format!("expected one element, got shape {:?}", self.dims()),
            ));
        }
        Ok(self.to_f64_vec()?[0])
    }

    /// A copy on `device` (differentiable: the gradient moves back).
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        if device.same_device(self.device()) {
            return Ok(self.clone());
        }
        let host = self.with_view(|v| self.device().backend().to_host(v))??;
        let storage = device.backend().from_host(host)?;
        let source = self.device().clone();
        Ok(Tensor::from_op(
            storage,
            self.dims(),
            device,
            "to_device",
            &[self],
            move |g| Ok(vec![Some(g.to_device(&source)?)]),
        ))
    }

    // ----- autograd -----------------------------------------------------

    /// True if gradients flow to or through this tensor.
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad.load(Ordering::Relaxed)
    }

    /// Marks a leaf as needing gradients. An `Err` on a non-leaf (its flag is
    /// decided by its inputs) or on an integer tensor.
    pub fn set_requires_grad(&self, requires: bool) -> Result<()> {
        if !self.is_leaf() {
            return Err(Error::invalid(
                "set_requires_grad",
                "only leaf tensors can change requires_grad; use detach()",
            ));
        }
        if requires && !self.dtype().is_float() {
            return Err(Error::UnsupportedDType {
                op: "set_requires_grad",
                dtype: self.dtype(),
                reason: "only floating-point tensors can require gradients".into(),
            });
        }
        self.0.requires_grad.store(requires, Ordering::Relaxed);
        Ok(())
    }

    /// True for tensors created by the user rather than by a recorded op.
    pub fn is_leaf(&self) -> bool {
        self.0.grad_fn.is_none()
    }

    pub(crate) fn grad_fn(&self) -> Option<&Arc<Node>> {
        self.0.grad_fn.as_ref()
    }

    /// The name of the op that produced this tensor, if recorded.
    pub fn grad_fn_name(&self) -> Option<&'static str> {
        self.0.grad_fn.as_ref().map(|n| n.op)
    }

    /// The accumulated gradient of a leaf.
    pub fn grad(&self) -> Option<Tensor> {
        self.0
            .grad
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the gradient (shape must match).
    pub fn set_grad(&self, grad: Option<Tensor>) -> Result<()> {
        if let Some(g) = &grad {
            if g.dims() != self.dims() {
                return Err(Error::ShapeMismatch {
                    op: "set_grad",
                    lhs: self.shape(),
                    rhs: g.shape(),
                });
            }
        }
        *self.0.grad.lock().unwrap_or_else(|e| e.into_inner()) = grad;
        Ok(())
    }

    /// Registers `hook` to run each time a backward pass has accumulated this
    /// leaf's gradient — once per backward, after the gradient of this pass
    /// is final, while the rest of the pass may still be running (PyTorch's
    /// `register_post_accumulate_grad_hook`). The hook receives this tensor
    /// (read its [`grad`](Self::grad)); an `Err` from it stops the backward
    /// pass and is returned by it. Data-parallel training starts a bucket's
    /// all-reduce from here. Only leaves that require grad take hooks.
    pub fn register_post_accumulate_grad_hook(
        &self,
        hook: impl Fn(&Tensor) -> Result<()> + Send + Sync + 'static,
    ) -> Result<GradHookId> {
        if !self.is_leaf() || !self.requires_grad() {
            return Err(Error::invalid(
                "register_post_accumulate_grad_hook",
                format!(
                    "post accumulate grad hooks go on leaves that require grad; this {:?} {} tensor is {}",
                    self.dims(),
                    self.dtype(),
                    if self.is_leaf() { "a leaf without requires_grad" } else { "not a leaf" }
                ),
            ));
        }
        let id = NEXT_HOOK.fetch_add(1, Ordering::Relaxed);
        self.0
            .grad_hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, Arc::new(hook)));
        Ok(GradHookId(id))
    }

    /// Removes a hook registered on this tensor; false if it was not there.
    pub fn remove_grad_hook(&self, id: GradHookId) -> bool {
        let mut hooks = self.0.grad_hooks.lock().unwrap_or_else(|e| e.into_inner());
        let before = hooks.len();
        hooks.retain(|(h, _)| *h != id.0);
        hooks.len() != before
    }

    /// Runs the post-accumulate hooks (outside the lock, so a hook may read
    /// the gradient or register hooks).
    pub(crate) fn run_grad_hooks(&self) -> Result<()> {
        let hooks: Vec<GradHook> = self
            .0
            .grad_hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, h)| h.clone())
            .collect();
        hooks.iter().try_for_each(|h| h(self))
    }

    /// Drops the gradient (`set_to_none=True`, PyTorch's default).
    pub fn zero_grad(&self) {
        *self.0.grad.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// A tensor sharing storage that is cut from the tape (a leaf without grad).
    pub fn detach(&self) -> Tensor {
        Tensor::from_parts(
            self.0.storage.clone(),
            self.0.layout.clone(),
            self.0.dtype,
            self.0.device.clone(),
            None,
            self.0.deferred.clone(),
        )
    }

    /// The dtype in which this tensor's gradient is best computed: for the
    /// output of a narrowing cast (`"to"`, e.g. autocast's bf16 copy of an
    /// f32 weight) the source's dtype, since the cast's backward widens the
    /// gradient to it at once — an op's backward that computes the gradient
    /// in that dtype directly (the product's f32 accumulation, unrounded)
    /// saves a rounding and a pass. Otherwise this tensor's dtype.
    pub fn grad_dtype(&self) -> DType {
        match self.grad_fn() {
            Some(node) if node.op == "to" => {
                let source = node.inputs[0].dtype();
                let wider = source.is_float()
                    && self.dtype().is_float()
                    && source.size_in_bytes() > self.dtype().size_in_bytes();
                if wider {
                    source
                } else {
                    self.dtype()
                }
            }
            _ => self.dtype(),
        }
    }

    /// Backpropagates from a one-element tensor (its gradient is 1).
    pub fn backward(&self) -> Result<()> {
        if self.numel() != 1 {
            return Err(Error::NonScalarBackward {
                shape: self.shape(),
            });
        }
        let one = Tensor::ones(self.dims(), self.dtype(), self.device())?;
        autograd::run_backward(self, one)
    }

    /// Backpropagates with an explicit output gradient of this tensor's shape.
    pub fn backward_with(&self, grad: &Tensor) -> Result<()> {
        if grad.dims() != self.dims() {
            return Err(Error::ShapeMismatch {
                op: "backward",
                lhs: self.shape(),
                rhs: grad.shape(),
            });
        }
        autograd::run_backward(self, grad.detach())
    }

    pub(crate) fn accumulate_grad(&self, g: &Tensor) -> Result<()> {
        let g = if g.dtype() == self.dtype() {
            g.clone()
        } else {
            g.to_dtype(self.dtype())?
        };
        let mut slot = self.0.grad.lock().unwrap_or_else(|e| e.into_inner());
        let new = match slot.take() {
            Some(prev) => prev.add(&g)?,
            None => g.contiguous()?.detach(),
        };
        *slot = Some(new.detach());
        Ok(())
    }

    // ----- in place -------------------------------------------------------

    /// Overwrites this tensor's elements with `value`'s (same shape; cast to this
    /// dtype). For whole, contiguous tensors such as parameters and gradients;
    /// not recorded on the tape.
    pub fn assign(&self, value: &Tensor) -> Result<()> {
        if value.dims() != self.dims() {
            return Err(Error::ShapeMismatch {
                op: "assign",
                lhs: self.shape(),
                rhs: value.shape(),
            });
        }
        if !value.device().same_device(self.device()) {
            return Err(Error::DeviceMismatch {
                op: "assign",
                lhs: self.device().to_string(),
                rhs: value.device().to_string(),
            });
        }
        let layout = self.layout();
        let whole =
            layout.is_contiguous() && layout.offset() == 0 && self.storage()?.len() == self.numel();
        if !whole {
            return Err(Error::invalid(
                "assign",
                format!(
                    "target of shape {:?} is a view; assign needs a whole contiguous tensor",
                    self.dims()
                ),
            ));
        }
        let new = value.with_view(|v| self.device().backend().cast(v, self.dtype()))??;
        *self.storage_mut()? = new;
        Ok(())
    }
}

/// The element count of `shape` for a random fill: checked, and small enough
/// for the f64 samples and the `dtype` result to be allocated.
fn sample_count(op: &'static str, shape: &[usize], dtype: DType) -> Result<usize> {
    let n = memory::checked_numel(op, shape)?;
    memory::check_alloc(op, n, DType::F64)?;
    memory::check_alloc(op, n, dtype)?;
    Ok(n)
}

fn make_node(op: &'static str, inputs: &[&Tensor], backward: BackwardFn) -> Option<Arc<Node>> {
    if !autograd::is_grad_enabled() || !inputs.iter().any(|t| t.requires_grad()) {
        return None;
    }
    Some(Arc::new(Node {
        op,
        inputs: inputs.iter().map(|t| (*t).clone()).collect(),
        backward,
    }))
}
