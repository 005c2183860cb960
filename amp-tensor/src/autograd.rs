//! The dynamic autograd tape: nodes recorded by ops, `backward`, and `no_grad`.

use crate::dispatch::Nested;
use crate::{Error, Result, Tensor};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};

/// The backward function of one recorded op: output gradient → one optional
/// gradient per input (in the order the inputs were recorded).
pub type BackwardFn = Box<dyn Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

/// One recorded op on the tape.
pub struct Node {
    pub(crate) op: &'static str,
    pub(crate) inputs: Vec<Tensor>,
    pub(crate) backward: BackwardFn,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({}, {} inputs)", self.op, self.inputs.len())
    }
}

thread_local! {
    /// Live [`no_grad`] guards on this thread.
    static NO_GRAD_GUARDS: Cell<usize> = const { Cell::new(0) };
}

/// True unless a [`no_grad`] guard is alive on this thread.
pub fn is_grad_enabled() -> bool {
    NO_GRAD_GUARDS.with(|g| g.get() == 0)
}

/// Gradient recording resumes once every guard is dropped, in any order.
#[must_use = "gradient recording resumes when the guard is dropped"]
pub struct NoGradGuard {
    _not_send: std::marker::PhantomData<*const ()>,
}

/// Disables gradient recording on this thread until the guard is dropped
/// (`torch.no_grad()`). Guards nest and may be dropped in any order:
/// recording stays off while any of them is alive.
pub fn no_grad() -> NoGradGuard {
    NO_GRAD_GUARDS.with(|g| g.set(g.get() + 1));
    NoGradGuard {
        _not_send: std::marker::PhantomData,
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        NO_GRAD_GUARDS.with(|g| g.set(g.get().saturating_sub(1)));
    }
}

/// Runs backward from `root` with output gradient `grad` (see [`Tensor::backward`]).
pub(crate) fn run_backward(root: &Tensor, grad: Tensor) -> Result<()> {
    if !root.requires_grad() {
        return Err(Error::NoGradFn {
            shape: root.dims().to_vec(),
        });
    }
    let _no_grad = no_grad();
    let _nested = Nested::enter();

    // Topological order (inputs before outputs) by iterative DFS.
    let mut order: Vec<Tensor> = Vec::new();
    let mut seen: HashSet<u64> = HashSet::new();
    let mut stack: Vec<(Tensor, bool)> = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !seen.insert(t.id()) {
            continue;
        }
        stack.push((t.clone(), true));
        if let Some(node) = t.grad_fn() {
            for input in &node.inputs {
                if input.requires_grad() && !seen.contains(&input.id()) {
                    stack.push((input.clone(), false));
                }
            }
        }
    }

    let mut grads: HashMap<u64, Tensor> = HashMap::new();
    grads.insert(root.id(), grad);
    for t in order.iter().rev() {
        let Some(g) = grads.remove(&t.id()) else {
            continue;
        };
        match t.grad_fn() {
            Some(node) => {
                let input_grads = (node.backward)(&g)?;
                for (input, ig) in node.inputs.iter().zip(input_grads) {
                    let Some(ig) = ig else { continue };
                    if !input.requires_grad() {
                        continue;
                    }
                    if ig.dims() != input.dims() {
                        return Err(Error::invalid(
                            node.op,
                            format!(
                                "backward produced gradient of shape {:?} for input of shape {:?}",
                                ig.dims(),
                                input.dims()
                            ),
                        ));
                    }
                    let merged = match grads.remove(&input.id()) {
                        Some(prev) => prev.add(&ig.to_dtype(prev.dtype())?)?,
                        None => ig,
                    };
                    grads.insert(input.id(), merged);
                }
            }
            None => {
                t.accumulate_grad(&g)?;
                t.run_grad_hooks()?;
            }
        }
    }
    Ok(())
}
