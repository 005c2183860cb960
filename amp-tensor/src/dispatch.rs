//! Op dispatch: every public op passes through [`dispatch`], which lets the
//! thread's top [`Interceptor`] replace the op's inputs before the kernel runs.
//!
//! Only the outermost op is intercepted: ops that an op's implementation (or
//! an interceptor, or a backward pass) calls internally run as they are. That
//! is how autocast behaves in PyTorch, where the autocast kernel casts the
//! inputs once and the op's internals run below the autocast dispatch key.

use crate::{Result, Tensor};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// A hook that sees every top-level op by name and may replace its inputs.
///
/// amp-autocast's region installs one; tests install their own to trace ops.
pub trait Interceptor {
    /// Called before op `op` runs on `inputs` (its tensor arguments in order).
    /// Return `Ok(Some(new_inputs))` (same length) to run the op on other tensors,
    /// `Ok(None)` to run it unchanged.
    fn intercept(&self, op: &'static str, inputs: &[Tensor]) -> Result<Option<Vec<Tensor>>>;
}

thread_local! {
    /// The installed interceptors, oldest first, each with the id of its guard.
    static STACK: RefCell<Vec<(u64, Rc<dyn Interceptor>)>> = const { RefCell::new(Vec::new()) };
    static NEXT_GUARD: Cell<u64> = const { Cell::new(0) };
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Removes its interceptor when dropped (also during a panic unwind).
///
/// Guards may be dropped in any order: each removes exactly its own
/// interceptor, and the most recently installed one that is still alive is
/// the one ops consult. Nothing else on the stack changes.
#[must_use = "the interceptor is removed when the guard is dropped"]
pub struct InterceptorGuard {
    id: u64,
    // Not Send: the interceptor lives on this thread's stack.
    _not_send: std::marker::PhantomData<Rc<()>>,
}

/// Installs `interceptor` on this thread until the guard is dropped.
pub fn push_interceptor(interceptor: Rc<dyn Interceptor>) -> InterceptorGuard {
    let id = NEXT_GUARD.with(|n| {
        let id = n.get();
        n.set(id + 1);
        id
    });
    STACK.with(|s| s.borrow_mut().push((id, interceptor)));
    InterceptorGuard {
        id,
        _not_send: std::marker::PhantomData,
    }
}

impl Drop for InterceptorGuard {
    fn drop(&mut self) {
        // Take the entry out first, so the interceptor drops outside the borrow.
        let removed = STACK.try_with(|s| {
            let mut s = s.borrow_mut();
            let at = s.iter().rposition(|(id, _)| *id == self.id);
            at.map(|i| s.remove(i))
        });
        drop(removed);
    }
}

/// Number of interceptors installed on this thread.
pub fn interceptor_depth() -> usize {
    STACK.with(|s| s.borrow().len())
}

/// Marks the current thread as inside an op until dropped.
pub(crate) struct Nested;

impl Nested {
    pub(crate) fn enter() -> Nested {
        DEPTH.with(|d| d.set(d.get() + 1));
        Nested
    }
}

impl Drop for Nested {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// True while an op's implementation, an interceptor or a backward pass runs.
pub fn in_op() -> bool {
    DEPTH.with(|d| d.get() > 0)
}

/// Runs op `op` on `inputs`: asks the top interceptor (for a top-level op
/// only) for the effective inputs, then calls `f` with them.
pub fn dispatch<R>(
    op: &'static str,
    inputs: &[&Tensor],
    f: impl FnOnce(&[Tensor]) -> Result<R>,
) -> Result<R> {
    let owned: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
    if in_op() {
        let _n = Nested::enter();
        return f(&owned);
    }
    let _n = Nested::enter();
    let top = STACK.with(|s| s.borrow().last().map(|(_, i)| i.clone()));
    let effective = match top {
        Some(i) => match i.intercept(op, &owned)? {
            Some(replaced) if replaced.len() != owned.len() => {
                return Err(crate::Error::invalid(
                    op,
                    format!(
                        "interceptor returned {} inputs for {} tensor arguments",
                        replaced.len(),
                        owned.len()
                    ),
                ))
            }
            Some(replaced) => replaced,
            None => owned,
        },
        None => owned,
    };
    f(&effective)
}
