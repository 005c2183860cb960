//! The [`Optimizer`] trait the scaler drives.

use crate::Result;
use amp_tensor::Tensor;

/// An optimizer over named parameters: what [`GradScaler`](crate::GradScaler)
/// needs to unscale its gradients, check them and step it.
///
/// The trait is object-safe: the scaler takes `&mut O` for any
/// `O: Optimizer + ?Sized`, so `&mut dyn Optimizer` works too.
///
/// The scaler identifies an optimizer by the identities ([`Tensor::id`]) of
/// the parameters `params()` returns, not by its address: moving the optimizer
/// keeps its identity, and an optimizer dropped and replaced at the same
/// address does not inherit its state. Two optimizers over exactly the same
/// parameters count as one.
pub trait Optimizer {
    /// The parameters with their names (`"0.weight"`, …), in a stable order.
    /// The gradients are read from and unscaled in place through these handles.
    fn params(&self) -> Vec<(String, Tensor)>;

    /// Updates the parameters from their gradients.
    fn step(&mut self) -> Result<()>;

    /// Drops every parameter's gradient (PyTorch's default `set_to_none=True`).
    fn zero_grad(&mut self) {
        for (_, p) in self.params() {
            p.zero_grad();
        }
    }
}

impl<O: Optimizer + ?Sized> Optimizer for Box<O> {
    fn params(&self) -> Vec<(String, Tensor)> {
        (**self).params()
    }

    fn step(&mut self) -> Result<()> {
        (**self).step()
    }

    fn zero_grad(&mut self) {
        (**self).zero_grad()
    }
}

/// The scaler's key for an optimizer: its parameters' identities, sorted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct OptimizerKey(Vec<u64>);

impl OptimizerKey {
    pub(crate) fn of<O: Optimizer + ?Sized>(opt: &O) -> Self {
        let mut ids: Vec<u64> = opt.params().iter().map(|(_, p)| p.id()).collect();
        ids.sort_unstable();
        ids.dedup();
        OptimizerKey(ids)
    }
}
