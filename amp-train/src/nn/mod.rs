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
//!     .add(Linear::new(4, 8, &device, 0)?)
//!     .add(Gelu::new())
//!     .add(Linear::new(8, 2, &device, 1)?);
//! let y = model.forward(&Tensor::randn(&[3, 4], DType::F32, &device, 2)?)?;
//! assert_eq!(y.dims(), &[3, 2]);
//! let names: Vec<String> = model.named_parameters().into_iter().map(|(n, _)| n).collect();
//! assert_eq!(names, ["0.weight", "0.bias", "2.weight", "2.bias"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod activation;
mod dropout;
mod embedding;
mod island;
mod layer_norm;
mod linear;
mod sequential;

pub use activation::{Gelu, Relu, Tanh};
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use island::F32Island;
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use sequential::Sequential;

use amp_tensor::{Result, Tensor};

/// A layer or model: a forward function of one tensor, its named parameters,
/// and a training/evaluation mode (as `torch.nn.Module`).
///
/// Modules start in training mode. The mode is interior state (`&self`), so a
/// model shared by reference can still be switched with [`Module::eval`].
pub trait Module: Send + Sync {
    /// Runs the module on `x`.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;

    /// The parameters with PyTorch-style dotted names (`"0.weight"`), in a fixed order.
    fn named_parameters(&self) -> Vec<(String, Tensor)>;

    /// Sets training (`true`) or evaluation (`false`) mode; modules without
    /// mode-dependent behaviour ignore it.
    fn set_training(&self, training: bool) {
        let _ = training;
    }

    /// True in training mode (the default for modules without a mode).
    fn is_training(&self) -> bool {
        true
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
}

impl<M: Module + ?Sized> Module for Box<M> {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        (**self).forward(x)
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        (**self).named_parameters()
    }
    fn set_training(&self, training: bool) {
        (**self).set_training(training)
    }
    fn is_training(&self) -> bool {
        (**self).is_training()
    }
}

/// Makes `t` an f32 master parameter: a leaf that requires grad.
pub(crate) fn parameter(t: Tensor) -> Result<Tensor> {
    t.set_requires_grad(true)?;
    Ok(t)
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
        let l = Linear::new(64, 256, &device, 5).unwrap();
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
        let again = Linear::new(64, 256, &device, 5).unwrap();
        assert_eq!(
            l.weight().to_vec::<f32>().unwrap(),
            again.weight().to_vec::<f32>().unwrap()
        );
        let other = Linear::new(64, 256, &device, 6).unwrap();
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
            .add(Embedding::new(5, 4, &device, 0).unwrap())
            .add(LayerNorm::new(4, &device).unwrap())
            .add(Tanh::new())
            .add(Dropout::new(0.5, 1).unwrap())
            .add(Linear::with_bias(4, 3, false, &device, 2).unwrap())
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
            Linear::new(4, 3, &device, 0).unwrap(),
            F32Island::new(Linear::new(4, 3, &device, 0).unwrap()),
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
        let d = Dropout::new(0.25, 3).unwrap();
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
        assert!(Dropout::new(1.5, 0).is_err());
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
