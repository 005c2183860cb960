//! Parameters and state dicts: [`Parameter`], [`StateDict`] and what
//! [`Module::load_state_dict`](super::Module::load_state_dict) reports.

use crate::{Error, Result};
use amp_tensor::Tensor;
use std::collections::HashMap;
use std::ops::Deref;

/// A module's state: parameters and buffers by dotted name, in the module's
/// order (`module.state_dict()`). Save it with
/// [`checkpoint::save_safetensors`](crate::checkpoint::save_safetensors).
pub type StateDict = Vec<(String, Tensor)>;

/// A trainable f32 master weight (`torch.nn.Parameter`): a floating leaf
/// tensor that requires grad. It dereferences to its [`Tensor`].
///
/// ```
/// use amp_tensor::{DType, Device, Tensor};
/// use amp_train::nn::Parameter;
///
/// let scale = Parameter::new(Tensor::ones(&[4], DType::F32, &Device::reference())?)?;
/// assert!(scale.requires_grad() && scale.is_leaf());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Parameter(Tensor);

impl Parameter {
    /// Makes `tensor` a parameter; `Err` unless it is a floating leaf.
    pub fn new(tensor: Tensor) -> amp_tensor::Result<Parameter> {
        if !tensor.dtype().is_float() {
            return Err(amp_tensor::Error::invalid(
                "Parameter::new",
                format!(
                    "a parameter must be floating, got {} of shape {:?}",
                    tensor.dtype(),
                    tensor.dims()
                ),
            ));
        }
        tensor.set_requires_grad(true)?;
        Ok(Parameter(tensor))
    }

    /// The tensor.
    pub fn tensor(&self) -> &Tensor {
        &self.0
    }

    /// `(name, tensor)` for [`Module::own_parameters`](super::Module::own_parameters).
    pub fn named(&self, name: &str) -> (String, Tensor) {
        (name.to_string(), self.0.clone())
    }
}

impl Deref for Parameter {
    type Target = Tensor;

    fn deref(&self) -> &Tensor {
        &self.0
    }
}

impl From<Parameter> for Tensor {
    fn from(p: Parameter) -> Tensor {
        p.0
    }
}

/// The names a non-strict [`Module::load_state_dict`](super::Module::load_state_dict)
/// did not match (PyTorch's `_IncompatibleKeys`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncompatibleKeys {
    /// The module's names the state did not have (left unchanged).
    pub missing: Vec<String>,
    /// The state's names the module does not have (ignored).
    pub unexpected: Vec<String>,
}

impl IncompatibleKeys {
    /// True if every name matched.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty()
    }
}

fn describe(t: &Tensor) -> String {
    format!("{:?} {}", t.dims(), t.dtype())
}

/// A checked [`Module::load_state_dict`](super::Module::load_state_dict):
/// what will be copied where, and the names that did not match.
pub(crate) struct LoadPlan {
    copies: Vec<(Tensor, Tensor)>,
    keys: IncompatibleKeys,
}

impl LoadPlan {
    /// Checks `state` against `target` (a module's state dict): every name and
    /// shape, nothing copied yet. A shape or kind (float/integer) mismatch is
    /// always an `Err`; with `strict`, missing and unexpected names too.
    pub(crate) fn new(
        target: &[(String, Tensor)],
        state: &[(String, Tensor)],
        strict: bool,
    ) -> Result<LoadPlan> {
        let given: HashMap<&str, &Tensor> = state.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let wanted: HashMap<&str, &Tensor> = target.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let missing: Vec<String> = target
            .iter()
            .filter(|(n, _)| !given.contains_key(n.as_str()))
            .map(|(n, _)| n.clone())
            .collect();
        let unexpected: Vec<String> = state
            .iter()
            .filter(|(n, _)| !wanted.contains_key(n.as_str()))
            .map(|(n, _)| n.clone())
            .collect();
        let mut mismatched = Vec::new();
        let mut copies = Vec::new();
        for (name, dst) in target {
            let Some(src) = given.get(name.as_str()) else {
                continue;
            };
            // Floats convert to floats (f16 weights into f32 ones), integers to integers.
            if src.dims() != dst.dims() || src.dtype().is_float() != dst.dtype().is_float() {
                mismatched.push(format!(
                    "{name}: {} in the state, {} in the module",
                    describe(src),
                    describe(dst)
                ));
            } else {
                copies.push((dst.clone(), (*src).clone()));
            }
        }
        if !mismatched.is_empty() || (strict && !(missing.is_empty() && unexpected.is_empty())) {
            return Err(Error::StateDict {
                missing: if strict { missing } else { Vec::new() },
                unexpected: if strict { unexpected } else { Vec::new() },
                mismatched,
            });
        }
        Ok(LoadPlan {
            copies,
            keys: IncompatibleKeys {
                missing,
                unexpected,
            },
        })
    }

    /// Copies the values (converting dtype and device), without recording
    /// autograd history.
    pub(crate) fn apply(self) -> Result<IncompatibleKeys> {
        let _no_grad = amp_tensor::no_grad();
        for (dst, src) in self.copies {
            dst.assign(&src.to_device(dst.device())?)?;
        }
        Ok(self.keys)
    }
}
