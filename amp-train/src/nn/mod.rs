//! Neural-network modules: the [`Module`] trait and the layers built on it.
//!
//! Parameters are f32 leaf tensors that require grad — the master weights.
//! Modules call `amp_tensor::ops` by name (`linear`, `layer_norm`, `gelu`, …),
//! so an autocast region sees every op and casts the weights per op.
//!
//! ```
//! use amp_tensor::{DType, Device, Tensor};
//! use amp_train::nn::{Gelu, Linear, Module, Sequential};
//!
//! let device = Device::reference();
//! let model = Sequential::new()
//!     .add(Linear::seeded(4, 8, true, &device, 0)?)
//!     .add(Gelu::new())
//!     .add(Linear::seeded(8, 2, true, &device, 1)?);
//! let y = model.forward(&Tensor::randn(&[3, 4], DType::F32, &device, 2)?)?;
//! assert_eq!(y.dims(), &[3, 2]);
//! let names: Vec<String> = model.named_parameters().into_iter().map(|(n, _)| n).collect();
//! assert_eq!(names, ["0.weight", "0.bias", "2.weight", "2.bias"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod activation;
mod attention;
mod conv;
mod dropout;
mod embedding;
mod island;
mod layer_norm;
mod linear;
mod sequential;
mod transformer;

pub use activation::{Gelu, Relu, Tanh};
pub use attention::MultiheadAttention;
pub use conv::{
    AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Conv2d, Flatten, MaxPool2d, ResNet, ResidualBlock,
};
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use island::F32Island;
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use sequential::Sequential;
pub use transformer::{Gpt, GptConfig, TransformerBlock};

mod state;

pub(crate) use state::LoadPlan;
pub use state::{IncompatibleKeys, Parameter, StateDict};

/// What [`Module::forward`] returns: amp-tensor's `Result`.
pub use amp_tensor::Result;
use amp_tensor::Tensor;
use std::collections::HashSet;

/// A layer or model: a forward function of one tensor, its parameters and
/// child modules, and a training/evaluation mode (as `torch.nn.Module`).
///
/// A module implements [`Module::forward`] and says what it holds: its own
/// parameters ([`Module::own_parameters`], named relative to it: `"weight"`)
/// and its child modules ([`Module::children`], named by field: `"fc1"`).
/// Everything else — PyTorch's dotted names (`"fc1.weight"`), the mode passed
/// down to children, [`Module::state_dict`] and [`Module::load_state_dict`] —
/// follows from those two:
///
/// ```
/// use amp_tensor::{Device, Tensor};
/// use amp_train::nn::{self, Gelu, LayerNorm, Linear, Module};
///
/// struct Block { norm: LayerNorm, fc: Linear, act: Gelu }
///
/// impl Module for Block {
///     fn forward(&self, x: &Tensor) -> amp_tensor::Result<Tensor> {
///         self.act.forward(&self.fc.forward(&self.norm.forward(x)?)?)
///     }
///     fn children(&self) -> Vec<(String, &dyn Module)> {
///         nn::children!(self; norm, fc, act)
///     }
/// }
///
/// let device = Device::reference();
/// let block = Block { norm: LayerNorm::new(4, &device)?, fc: Linear::new(4, 8, &device)?, act: Gelu::new() };
/// let names: Vec<String> = block.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["norm.weight", "norm.bias", "fc.weight", "fc.bias"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Modules start in training mode. The mode is interior state (`&self`), so a
/// model shared by reference can still be switched with [`Module::eval`].
pub trait Module: Send + Sync {
    /// Runs the module on `x`.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;

    /// This module's own parameters, not its children's, named relative to it
    /// (`"weight"`, `"bias"`), in a fixed order. None by default.
    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// This module's own buffers: state that is saved and loaded but not
    /// trained (running statistics). None by default.
    fn own_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// The child modules with their names, in a fixed order ([`children!`]
    /// writes it from field names). A child named `""` is transparent: its
    /// parameters keep their own names (a wrapper such as [`F32Island`]).
    fn children(&self) -> Vec<(String, &dyn Module)> {
        Vec::new()
    }

    /// Every parameter with its dotted name (`"fc1.weight"`): own ones first,
    /// then each child's, each tensor once (a parameter shared by two
    /// children keeps its first name, as PyTorch's `named_parameters`).
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        collect_named(self.own_parameters(), self.children(), &|m| {
            m.own_parameters()
        })
    }

    /// Every buffer with its dotted name.
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        collect_named(self.own_buffers(), self.children(), &|m| m.own_buffers())
    }

    /// Sets training (`true`) or evaluation (`false`) mode on this module and
    /// every child. Modules with mode-dependent behaviour ([`Dropout`]) keep
    /// the flag; others only pass it on.
    fn set_training(&self, training: bool) {
        for (_, child) in self.children() {
            child.set_training(training);
        }
    }

    /// True in training mode: true unless a child is in evaluation mode
    /// (modules without a mode of their own, and without children, always
    /// say true: nothing they do depends on it).
    fn is_training(&self) -> bool {
        self.children().iter().all(|(_, c)| c.is_training())
    }

    /// Training mode (`module.train()`).
    fn train(&self) {
        self.set_training(true);
    }

    /// Evaluation mode (`module.eval()`): dropout becomes the identity.
    fn eval(&self) {
        self.set_training(false);
    }

    /// The parameter tensors, without names.
    fn parameters(&self) -> Vec<Tensor> {
        self.named_parameters()
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    }

    /// Total number of parameter elements.
    fn num_parameters(&self) -> usize {
        self.named_parameters().iter().map(|(_, t)| t.numel()).sum()
    }

    /// The parameters and buffers by dotted name (`module.state_dict()`). The
    /// tensors are the module's own (no copy): save them, or copy them before
    /// training on if a snapshot is needed.
    fn state_dict(&self) -> StateDict {
        let mut state = self.named_parameters();
        state.extend(self.named_buffers());
        state
    }

    /// Copies `state`'s tensors into the parameters and buffers of the same
    /// names (`module.load_state_dict(state, strict)`), converting dtype and
    /// device as needed. Every name and shape is checked before anything is
    /// copied: a shape mismatch is always an `Err`; with `strict`, so are
    /// missing and unexpected names — the error lists them all. Without
    /// `strict` the missing and unexpected names are returned.
    fn load_state_dict(
        &self,
        state: &[(String, Tensor)],
        strict: bool,
    ) -> crate::Result<IncompatibleKeys> {
        state::LoadPlan::new(&self.state_dict(), state, strict)?.apply()
    }
}

impl<M: Module + ?Sized> Module for Box<M> {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        (**self).forward(x)
    }
    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        (**self).own_parameters()
    }
    fn own_buffers(&self) -> Vec<(String, Tensor)> {
        (**self).own_buffers()
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        (**self).children()
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        (**self).named_parameters()
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        (**self).named_buffers()
    }
    fn set_training(&self, training: bool) {
        (**self).set_training(training)
    }
    fn is_training(&self) -> bool {
        (**self).is_training()
    }
}

/// `Vec<(String, &dyn Module)>` from field names, for [`Module::children`]:
/// `nn::children!(self; norm, fc1, fc2)` names each child after its field
/// (`nn::children!(self; 0, 1)` for a tuple struct's fields).
#[macro_export]
macro_rules! children {
    ($module:expr; $($field:tt),* $(,)?) => {
        vec![$((
            ::std::string::String::from(stringify!($field)),
            &$module.$field as &dyn $crate::nn::Module,
        )),*]
    };
}
pub use crate::children;

/// `prefix.name`, or `name` under a transparent (empty) prefix.
fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// What a module holds of one kind (its own parameters, or its own buffers).
type TensorsOf = dyn Fn(&dyn Module) -> Vec<(String, Tensor)>;

/// `own` (a module's own tensors) and, recursively, what `get` gives for
/// each of `children`, with dotted names; each tensor (by identity) once.
fn collect_named(
    own: Vec<(String, Tensor)>,
    children: Vec<(String, &dyn Module)>,
    get: &TensorsOf,
) -> Vec<(String, Tensor)> {
    fn walk(
        own: Vec<(String, Tensor)>,
        children: Vec<(String, &dyn Module)>,
        prefix: &str,
        get: &TensorsOf,
        seen: &mut HashSet<u64>,
        out: &mut Vec<(String, Tensor)>,
    ) {
        for (name, t) in own {
            if seen.insert(t.id()) {
                out.push((join(prefix, &name), t));
            }
        }
        for (name, child) in children {
            let prefix = join(prefix, &name);
            walk(get(child), child.children(), &prefix, get, seen, out);
        }
    }
    let mut out = Vec::new();
    walk(own, children, "", get, &mut HashSet::new(), &mut out);
    out
}

/// A sub-seed for part `part` of a module seeded with `seed` (independent streams).
pub(crate) fn sub_seed(seed: u64, part: u64) -> u64 {
    amp_tensor::random::draw_u64(seed ^ 0x6E6E_5F73_6565_6473, part)
}

#[cfg(test)]
mod tests {
    use super::*;
    use amp_tensor::{DType, Device};

    #[test]
    fn linear_init_follows_pytorch_bounds_and_is_seeded() {
        let device = Device::reference();
        let l = Linear::seeded(64, 256, true, &device, 5).unwrap();
        let bound = 1.0 / 8.0;
        for (name, p) in l.named_parameters() {
            assert_eq!(p.dtype(), DType::F32);
            assert!(p.requires_grad() && p.is_leaf(), "{name}");
            let v = p.to_f64_vec().unwrap();
            assert!(
                v.iter().all(|x| x.abs() <= bound),
                "{name} outside ±1/sqrt(in)"
            );
            // A uniform on ±b has variance b²/3.
            let var = v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64;
            assert!(
                (var - bound * bound / 3.0).abs() < 0.15 * bound * bound / 3.0,
                "{name}: variance {var}"
            );
        }
        let again = Linear::seeded(64, 256, true, &device, 5).unwrap();
        assert_eq!(
            l.weight().to_vec::<f32>().unwrap(),
            again.weight().to_vec::<f32>().unwrap()
        );
        let other = Linear::seeded(64, 256, true, &device, 6).unwrap();
        assert_ne!(
            l.weight().to_vec::<f32>().unwrap(),
            other.weight().to_vec::<f32>().unwrap()
        );
        assert_ne!(
            l.weight().to_vec::<f32>().unwrap()[..256],
            l.bias().unwrap().to_vec::<f32>().unwrap()[..]
        );
    }

    #[test]
    fn linear_forward_matches_a_hand_computation() {
        let device = Device::reference();
        let w = Tensor::from_f64_slice(
            &[1.0, 2.0, 3.0, -1.0, 0.5, 0.0],
            &[2, 3],
            DType::F32,
            &device,
        )
        .unwrap();
        let b = Tensor::from_f64_slice(&[0.25, -0.5], &[2], DType::F32, &device).unwrap();
        let l = Linear::from_tensors(w, Some(b)).unwrap();
        let x = Tensor::from_f64_slice(&[1.0, 1.0, 2.0], &[1, 3], DType::F32, &device).unwrap();
        assert_eq!(
            l.forward(&x).unwrap().to_f64_vec().unwrap(),
            [1.0 + 2.0 + 6.0 + 0.25, -1.0 + 0.5 - 0.5]
        );
        let err = l
            .forward(&Tensor::zeros(&[1, 4], DType::F32, &device).unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("linear"), "{err}");
    }

    #[test]
    fn sequential_names_modes_and_shapes() {
        let device = Device::reference();
        let model = Sequential::new()
            .add(Embedding::seeded(5, 4, &device, 0).unwrap())
            .add(LayerNorm::new(4, &device).unwrap())
            .add(Tanh::new())
            .add(Dropout::seeded(0.5, 1).unwrap())
            .add(Linear::seeded(4, 3, false, &device, 2).unwrap())
            .add(Relu::new());
        let names: Vec<String> = model
            .named_parameters()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["0.weight", "1.weight", "1.bias", "4.weight"]);
        assert_eq!(model.num_parameters(), 20 + 8 + 12);
        let idx = Tensor::from_vec(vec![0i64, 4, 2], &[3], &device).unwrap();
        assert_eq!(model.forward(&idx).unwrap().dims(), &[3, 3]);
        assert!(model.is_training());
        model.eval();
        assert!(!model.is_training() && !model.layers()[3].is_training());
        // In evaluation mode dropout is the identity, so the output is deterministic.
        let a = model.forward(&idx).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(a, model.forward(&idx).unwrap().to_vec::<f32>().unwrap());
        assert!(a.iter().all(|&v| v >= 0.0));
    }

    #[test]
    fn f32_island_runs_its_layer_in_f32_inside_a_region() {
        let device = Device::reference();
        let (lin, island) = (
            Linear::seeded(4, 3, true, &device, 0).unwrap(),
            F32Island::new(Linear::seeded(4, 3, true, &device, 0).unwrap()),
        );
        let x = Tensor::randn(&[2, 4], DType::F32, &device, 1).unwrap();
        let _region = amp_autocast::autocast(device.kind(), DType::BF16).unwrap();
        assert_eq!(lin.forward(&x).unwrap().dtype(), DType::BF16);
        let y = island.forward(&x.to_dtype(DType::BF16).unwrap()).unwrap();
        assert_eq!(y.dtype(), DType::F32);
        // Autocast is back on after the island.
        assert_eq!(lin.forward(&x).unwrap().dtype(), DType::BF16);
        assert_eq!(island.named_parameters().len(), 2);
    }

    #[test]
    fn dropout_scales_kept_elements_and_changes_mask_per_call() {
        let device = Device::reference();
        let d = Dropout::seeded(0.25, 3).unwrap();
        let x = Tensor::ones(&[1000], DType::F32, &device).unwrap();
        let a = d.forward(&x).unwrap().to_f64_vec().unwrap();
        let b = d.forward(&x).unwrap().to_f64_vec().unwrap();
        assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
        let dropped = a.iter().filter(|&&v| v == 0.0).count();
        assert!(
            (200..300).contains(&dropped),
            "{dropped} of 1000 dropped at p = 0.25"
        );
        assert_ne!(a, b);
        assert!(Dropout::seeded(1.5, 0).is_err());
    }

    #[test]
    fn layer_norm_normalises_rows() {
        let device = Device::reference();
        let ln = LayerNorm::new(4, &device).unwrap();
        let x =
            Tensor::from_f64_slice(&[1.0, 2.0, 3.0, 4.0], &[1, 4], DType::F32, &device).unwrap();
        let y = ln.forward(&x).unwrap().to_f64_vec().unwrap();
        let (mean, var) = (2.5, 1.25);
        for (i, v) in y.iter().enumerate() {
            let want = (i as f64 + 1.0 - mean) / (var + 1e-5f64).sqrt();
            assert!((v - want).abs() < 1e-5, "{v} vs {want}");
        }
    }
}
