//! [`Sgd`]: stochastic gradient descent with momentum (`torch.optim.SGD`).

use super::{check_non_negative, check_state_params, grad_f32, state_tensor, OptimizerState};
use crate::{Error, Result};
use amp_tensor::{DType, Tensor};
use serde::{Deserialize, Serialize};

/// SGD's hyperparameters; `Default` is lr 1e-3 and no momentum, dampening,
/// weight decay or Nesterov (PyTorch's defaults, with its default lr).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (0 = plain SGD).
    pub momentum: f64,
    /// Dampening of the momentum.
    pub dampening: f64,
    /// L2 penalty added to the gradient (coupled, as in PyTorch's SGD).
    pub weight_decay: f64,
    /// Nesterov momentum (needs momentum > 0 and dampening = 0).
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
}

impl SgdConfig {
    /// Checks the ranges PyTorch checks.
    pub fn validate(&self) -> Result<()> {
        check_non_negative("SGD lr", self.lr)?;
        check_non_negative("SGD momentum", self.momentum)?;
        check_non_negative("SGD weight_decay", self.weight_decay)?;
        if !self.dampening.is_finite() {
            return Err(Error::config(
                "SGD dampening",
                format!("must be finite, got {}", self.dampening),
            ));
        }
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(Error::config(
                "SGD nesterov",
                "needs momentum > 0 and dampening = 0",
            ));
        }
        Ok(())
    }
}

/// SGD as `torch.optim.SGD` (single-tensor path). Per parameter `p` with gradient `g`:
///
/// ```text
/// d ← g + wd·p
/// b ← d (first step), else b·μ + (1 − dampening)·d      (when μ > 0)
/// d ← d + μ·b (Nesterov) or b                           (when μ > 0)
/// p ← p − lr·d
/// ```
#[derive(Debug, Clone)]
pub struct Sgd {
    params: Vec<(String, Tensor)>,
    config: SgdConfig,
    momentum_buffers: Vec<Option<(u64, Tensor)>>,
}

impl Sgd {
    /// An optimizer over `params`.
    pub fn new(params: Vec<(String, Tensor)>, config: SgdConfig) -> Sgd {
        let momentum_buffers = vec![None; params.len()];
        Sgd {
            params,
            config,
            momentum_buffers,
        }
    }

    /// The hyperparameters.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    /// Changes the learning rate.
    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// The optimized parameters.
    pub fn named_parameters(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// One update of every parameter that has a gradient.
    pub fn step(&mut self) -> Result<()> {
        self.config.validate()?;
        let SgdConfig {
            lr,
            momentum,
            dampening,
            weight_decay,
            nesterov,
        } = self.config;
        let _no_grad = amp_tensor::no_grad();
        for ((_, p), buf) in self.params.iter().zip(self.momentum_buffers.iter_mut()) {
            let Some(g) = grad_f32(p)? else { continue };
            let p32 = p.to_dtype(DType::F32)?;
            let mut d = if weight_decay != 0.0 {
                g.add(&p32.mul_scalar(weight_decay)?)?
            } else {
                g
            };
            if momentum != 0.0 {
                let b = match buf {
                    None => {
                        // A copy: `d` may be the gradient itself, which the scaler unscales in place.
                        let b = Tensor::zeros(p.dims(), DType::F32, p.device())?;
                        b.assign(&d)?;
                        *buf = Some((1, b.clone()));
                        b
                    }
                    Some((steps, b)) => {
                        *b = b
                            .mul_scalar(momentum)?
                            .add(&d.mul_scalar(1.0 - dampening)?)?;
                        *steps += 1;
                        b.clone()
                    }
                };
                d = if nesterov {
                    d.add(&b.mul_scalar(momentum)?)?
                } else {
                    b
                };
            }
            p.assign(&p32.sub(&d.mul_scalar(lr)?)?)?;
        }
        Ok(())
    }

    /// Drops every parameter's gradient.
    pub fn zero_grad(&mut self) {
        for (_, p) in &self.params {
            p.zero_grad();
        }
    }

    /// The state for a checkpoint (momentum buffers).
    pub fn state_dict(&self) -> Result<OptimizerState> {
        let mut steps = Vec::new();
        let mut tensors = Vec::new();
        for ((name, _), b) in self.params.iter().zip(&self.momentum_buffers) {
            if let Some((s, b)) = b {
                steps.push((name.clone(), *s));
                tensors.push((format!("{name}.momentum_buffer"), b.clone()));
            }
        }
        let config = serde_json::to_value(self.config)
            .map_err(|e| Error::data("Sgd::state_dict", e.to_string()))?;
        Ok(OptimizerState {
            kind: "SGD".into(),
            config,
            steps,
            tensors,
        })
    }

    /// Restores the state and hyperparameters from `state`.
    pub fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
        check_state_params(state, "SGD", &self.params)?;
        let config: SgdConfig = serde_json::from_value(state.config.clone())
            .map_err(|e| Error::data("load_state_dict", format!("SGD hyperparameters: {e}")))?;
        let mut buffers = vec![None; self.params.len()];
        for (i, (name, p)) in self.params.iter().enumerate() {
            if let Some((_, step)) = state.steps.iter().find(|(n, _)| n == name) {
                buffers[i] = Some((
                    *step,
                    state_tensor(state, &format!("{name}.momentum_buffer"), p)?,
                ));
            }
        }
        self.config = config;
        self.momentum_buffers = buffers;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amp_tensor::Device;

    fn param(values: &[f64]) -> Tensor {
        let t = Tensor::from_f64_slice(values, &[values.len()], DType::F32, &Device::reference())
            .unwrap();
        t.set_requires_grad(true).unwrap();
        t
    }

    /// torch.optim.SGD's single-tensor update, in f64.
    fn reference(p0: &[f64], grads: &[Vec<f64>], c: SgdConfig) -> Vec<f64> {
        let mut p = p0.to_vec();
        let mut buf: Option<Vec<f64>> = None;
        for g in grads {
            let mut d: Vec<f64> = g
                .iter()
                .zip(&p)
                .map(|(g, p)| g + c.weight_decay * p)
                .collect();
            if c.momentum != 0.0 {
                let b = match buf.take() {
                    None => d.clone(),
                    Some(b) => b
                        .iter()
                        .zip(&d)
                        .map(|(b, d)| b * c.momentum + (1.0 - c.dampening) * d)
                        .collect(),
                };
                d = if c.nesterov {
                    d.iter().zip(&b).map(|(d, b)| d + c.momentum * b).collect()
                } else {
                    b.clone()
                };
                buf = Some(b);
            }
            for (p, d) in p.iter_mut().zip(&d) {
                *p -= c.lr * d;
            }
        }
        p
    }

    #[test]
    fn matches_hand_computed_updates() {
        let p0 = [0.5, -1.5, 2.0];
        let grads = [
            vec![0.3, -0.2, 1.0],
            vec![0.1, -0.4, -2.0],
            vec![-0.5, 0.25, 0.5],
            vec![0.2, 0.0, 3.0],
        ];
        for config in [
            SgdConfig {
                lr: 0.1,
                ..Default::default()
            },
            SgdConfig {
                lr: 0.1,
                momentum: 0.9,
                ..Default::default()
            },
            SgdConfig {
                lr: 0.05,
                momentum: 0.9,
                weight_decay: 0.01,
                nesterov: true,
                ..Default::default()
            },
            SgdConfig {
                lr: 0.05,
                momentum: 0.5,
                dampening: 0.25,
                weight_decay: 0.1,
                nesterov: false,
            },
        ] {
            let p = param(&p0);
            let mut opt = Sgd::new(vec![("p".into(), p.clone())], config);
            for (k, g) in grads.iter().enumerate() {
                p.set_grad(Some(
                    Tensor::from_f64_slice(g, &[3], DType::F32, &Device::reference()).unwrap(),
                ))
                .unwrap();
                opt.step().unwrap();
                let want = reference(&p0, &grads[..=k], config);
                for (got, want) in p.to_f64_vec().unwrap().iter().zip(&want) {
                    assert!(
                        (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                        "{config:?} step {}: {got} vs {want}",
                        k + 1
                    );
                }
            }
        }
    }

    #[test]
    fn invalid_nesterov_is_an_error() {
        let p = param(&[1.0]);
        p.set_grad(Some(
            Tensor::from_f64_slice(&[1.0], &[1], DType::F32, &Device::reference()).unwrap(),
        ))
        .unwrap();
        let mut opt = Sgd::new(
            vec![("p".into(), p)],
            SgdConfig {
                nesterov: true,
                ..Default::default()
            },
        );
        assert!(opt
            .step()
            .unwrap_err()
            .to_string()
            .starts_with("SGD nesterov"));
    }

    #[test]
    fn state_round_trip() {
        let p = param(&[1.0, 2.0]);
        let config = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            ..Default::default()
        };
        let mut a = Sgd::new(vec![("p".into(), p.clone())], config);
        p.set_grad(Some(
            Tensor::from_f64_slice(&[1.0, -1.0], &[2], DType::F32, &Device::reference()).unwrap(),
        ))
        .unwrap();
        a.step().unwrap();
        let mut b = Sgd::new(vec![("p".into(), p.clone())], SgdConfig::default());
        b.load_state_dict(&a.state_dict().unwrap()).unwrap();
        assert_eq!(b.config(), &config);
        let s = b.state_dict().unwrap();
        assert_eq!(s.tensors[0].0, "p.momentum_buffer");
        assert_eq!(s.tensors[0].1.to_f64_vec().unwrap(), [1.0, -1.0]);
        assert!(AdamW::new(vec![], Default::default())
            .load_state_dict(&s)
            .is_err());
    }

    use crate::optim::AdamW;
}
