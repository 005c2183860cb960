//! Shared test helpers: a plain SGD optimizer and a two-layer linear model.
#![allow(dead_code)]

use amp_scaler::{Optimizer, Result};
use amp_tensor::{ops, DType, Device, Tensor};

/// SGD without momentum: `p -= lr * grad`.
pub struct Sgd {
    pub params: Vec<(String, Tensor)>,
    pub lr: f64,
}

impl Sgd {
    pub fn new(params: Vec<(String, Tensor)>, lr: f64) -> Self {
        Sgd { params, lr }
    }
}

impl Optimizer for Sgd {
    fn params(&self) -> Vec<(String, Tensor)> {
        self.params.clone()
    }

    fn step(&mut self) -> Result<()> {
        let _no_grad = amp_tensor::no_grad();
        for (_, p) in &self.params {
            if let Some(g) = p.grad() {
                p.assign(&p.sub(&g.mul_scalar(self.lr)?)?)?;
            }
        }
        Ok(())
    }

    fn zero_grad(&mut self) {
        for (_, p) in &self.params {
            p.zero_grad();
        }
    }
}

/// `Sequential(Linear(8, 8), Linear(8, 8))`: parameters `0.weight`, `0.bias`, `1.weight`, `1.bias`.
pub struct TwoLinear {
    pub params: Vec<(String, Tensor)>,
}

impl TwoLinear {
    /// Deterministic weights from `seed` (uniform in ±1/√8, as PyTorch's init range).
    pub fn new(device: &Device, seed: u64) -> Self {
        let bound = 1.0 / 8f64.sqrt();
        let make = |shape: &[usize], s: u64| {
            let t = Tensor::rand_uniform(shape, -bound, bound, DType::F32, device, s).unwrap();
            t.set_requires_grad(true).unwrap();
            t
        };
        TwoLinear {
            params: vec![
                ("0.weight".into(), make(&[8, 8], seed)),
                ("0.bias".into(), make(&[8], seed + 1)),
                ("1.weight".into(), make(&[8, 8], seed + 2)),
                ("1.bias".into(), make(&[8], seed + 3)),
            ],
        }
    }

    /// An independent copy with the same values.
    pub fn deep_copy(&self) -> Self {
        let params = self
            .params
            .iter()
            .map(|(n, p)| {
                let c = Tensor::from_f64_slice(
                    &p.to_f64_vec().unwrap(),
                    p.dims(),
                    p.dtype(),
                    p.device(),
                )
                .unwrap();
                c.set_requires_grad(true).unwrap();
                (n.clone(), c)
            })
            .collect();
        TwoLinear { params }
    }

    pub fn param(&self, name: &str) -> &Tensor {
        &self.params.iter().find(|(n, _)| n == name).unwrap().1
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let h = ops::linear(x, self.param("0.weight"), Some(self.param("0.bias"))).unwrap();
        ops::linear(&h, self.param("1.weight"), Some(self.param("1.bias"))).unwrap()
    }

    pub fn values(&self) -> Vec<(String, Vec<f64>)> {
        self.params
            .iter()
            .map(|(n, p)| (n.clone(), p.to_f64_vec().unwrap()))
            .collect()
    }
}

/// Four batches of `(input [8, 8], target [8, 8])`.
pub fn batches(device: &Device) -> Vec<(Tensor, Tensor)> {
    (0..4)
        .map(|i| {
            (
                Tensor::randn(&[8, 8], DType::F32, device, 100 + 2 * i).unwrap(),
                Tensor::randn(&[8, 8], DType::F32, device, 101 + 2 * i).unwrap(),
            )
        })
        .collect()
}

pub fn mse(output: &Tensor, target: &Tensor) -> Tensor {
    ops::mse_loss(output, target, ops::Reduction::Mean).unwrap()
}

/// Fills the gradient of `p` with `value` (in place, like `p.grad.data.fill_`).
pub fn fill_grad(p: &Tensor, value: f64) {
    let g = p.grad().expect("gradient present");
    g.assign(&Tensor::full(g.dims(), value, g.dtype(), g.device()).unwrap())
        .unwrap();
}

/// Asserts two parameter sets agree within `atol` (absolute) per element.
pub fn assert_params_close(
    control: &[(String, Vec<f64>)],
    scaled: &[(String, Vec<f64>)],
    atol: f64,
) {
    assert_eq!(control.len(), scaled.len());
    for ((nc, c), (ns, s)) in control.iter().zip(scaled) {
        assert_eq!(nc, ns);
        for (i, (a, b)) in c.iter().zip(s).enumerate() {
            assert!(
                (a - b).abs() <= atol,
                "{nc}[{i}]: control {a} vs scaled {b} (atol {atol})"
            );
        }
    }
}
