//! [`AdamW`]: Adam with decoupled weight decay (`torch.optim.AdamW`).

use super::{check_non_negative, check_state_params, owned_f32_copy, state_tensor, OptimizerState};
use crate::{Error, Result};
use amp_tensor::backend::AdamWStep;
use amp_tensor::{ops, DType, Tensor};
use serde::{Deserialize, Serialize};

/// AdamW's hyperparameters; `Default` gives PyTorch's: lr 1e-3, betas
/// (0.9, 0.999), eps 1e-8, weight_decay 1e-2.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// Learning rate.
    pub lr: f64,
    /// Decay rates of the first and second moment estimates.
    pub betas: (f64, f64),
    /// Added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay: `p *= 1 - lr·weight_decay` each step.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 1e-2,
        }
    }
}

impl AdamWConfig {
    /// PyTorch's defaults with learning rate `lr` (`AdamW(params, lr=lr)`).
    pub fn lr(lr: f64) -> AdamWConfig {
        AdamWConfig {
            lr,
            ..Default::default()
        }
    }

    /// Checks the ranges PyTorch checks: lr, eps, weight_decay ≥ 0; betas in [0, 1).
    pub fn validate(&self) -> Result<()> {
        check_non_negative("AdamW lr", self.lr)?;
        check_non_negative("AdamW eps", self.eps)?;
        check_non_negative("AdamW weight_decay", self.weight_decay)?;
        for (what, b) in [
            ("AdamW betas.0", self.betas.0),
            ("AdamW betas.1", self.betas.1),
        ] {
            if !(0.0..1.0).contains(&b) {
                return Err(Error::config(what, format!("must be in [0, 1), got {b}")));
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Moments {
    step: u64,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

/// AdamW as `torch.optim.AdamW` (single-tensor path, `amsgrad=False`,
/// `maximize=False`). Per parameter `p` with gradient `g`, at step `t`:
///
/// ```text
/// p  ← p · (1 − lr·wd)
/// m  ← m + (g − m)·(1 − β₁)           (lerp)
/// v  ← v·β₂ + g·g·(1 − β₂)
/// p  ← p − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + eps)
/// ```
///
/// Each arrow is computed in f32 (state and update), rounded as PyTorch rounds
/// it, in one fused pass per parameter; the moments are updated in place
/// (so an `AdamW` is not `Clone`: two copies would share them).
#[derive(Debug)]
pub struct AdamW {
    params: Vec<(String, Tensor)>,
    config: AdamWConfig,
    state: Vec<Option<Moments>>,
}

impl AdamW {
    /// An optimizer over `params` (as returned by `Module::named_parameters`).
    pub fn new(params: Vec<(String, Tensor)>, config: AdamWConfig) -> AdamW {
        let state = params.iter().map(|_| None).collect();
        AdamW {
            params,
            config,
            state,
        }
    }

    /// The hyperparameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Changes the learning rate (for schedules).
    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// The optimized parameters.
    pub fn named_parameters(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// The largest per-parameter step count (0 before the first step).
    pub fn steps(&self) -> u64 {
        self.state
            .iter()
            .flatten()
            .map(|s| s.step)
            .max()
            .unwrap_or(0)
    }

    /// One update of every parameter that has a gradient: one fused pass per
    /// parameter ([`ops::adamw_step`]) that reads the parameter, its gradient
    /// (any float dtype) and both f32 moments once and writes them back in place.
    pub fn step(&mut self) -> Result<()> {
        self.config.validate()?;
        let AdamWConfig {
            lr,
            betas: (beta1, beta2),
            eps,
            weight_decay,
        } = self.config;
        let _no_grad = amp_tensor::no_grad();
        for ((_, p), slot) in self.params.iter().zip(self.state.iter_mut()) {
            let Some(g) = p.grad() else { continue };
            if slot.is_none() {
                *slot = Some(Moments {
                    step: 0,
                    exp_avg: Tensor::zeros(p.dims(), DType::F32, p.device())?,
                    exp_avg_sq: Tensor::zeros(p.dims(), DType::F32, p.device())?,
                });
            }
            let s = slot.as_mut().expect("initialised above");
            let hyper = AdamWStep {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
                step: s.step + 1,
            };
            ops::adamw_step(p, &g, &s.exp_avg, &s.exp_avg_sq, &hyper)?;
            s.step += 1;
        }
        Ok(())
    }

    /// Drops every parameter's gradient (`set_to_none=True`).
    pub fn zero_grad(&mut self) {
        for (_, p) in &self.params {
            p.zero_grad();
        }
    }

    /// The state for a checkpoint (moments and step counts): a snapshot, which
    /// later steps do not change.
    pub fn state_dict(&self) -> Result<OptimizerState> {
        let mut steps = Vec::new();
        let mut tensors = Vec::new();
        for ((name, _), s) in self.params.iter().zip(&self.state) {
            if let Some(s) = s {
                steps.push((name.clone(), s.step));
                tensors.push((format!("{name}.exp_avg"), owned_f32_copy(&s.exp_avg)?));
                tensors.push((format!("{name}.exp_avg_sq"), owned_f32_copy(&s.exp_avg_sq)?));
            }
        }
        let config = serde_json::to_value(self.config)
            .map_err(|e| Error::data("AdamW::state_dict", e.to_string()))?;
        Ok(OptimizerState {
            kind: "AdamW".into(),
            config,
            steps,
            tensors,
        })
    }

    /// Restores the state (and, as PyTorch does, the hyperparameters) from `state`.
    pub fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
        check_state_params(state, "AdamW", &self.params)?;
        let config: AdamWConfig = serde_json::from_value(state.config.clone())
            .map_err(|e| Error::data("load_state_dict", format!("AdamW hyperparameters: {e}")))?;
        let mut new_state: Vec<Option<Moments>> = self.params.iter().map(|_| None).collect();
        for (i, (name, p)) in self.params.iter().enumerate() {
            if let Some((_, step)) = state.steps.iter().find(|(n, _)| n == name) {
                new_state[i] = Some(Moments {
                    step: *step,
                    exp_avg: state_tensor(state, &format!("{name}.exp_avg"), p)?,
                    exp_avg_sq: state_tensor(state, &format!("{name}.exp_avg_sq"), p)?,
                });
            }
        }
        self.config = config;
        self.state = new_state;
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

    fn set_grad(p: &Tensor, g: &[f64]) {
        p.set_grad(Some(
            Tensor::from_f64_slice(g, &[g.len()], DType::F32, &Device::reference()).unwrap(),
        ))
        .unwrap();
    }

    /// torch.optim.AdamW's single-tensor update, in f64.
    fn reference(p0: &[f64], grads: &[Vec<f64>], c: AdamWConfig) -> Vec<f64> {
        let (mut p, mut m, mut v) = (p0.to_vec(), vec![0.0; p0.len()], vec![0.0; p0.len()]);
        for (t, g) in grads.iter().enumerate() {
            let t = (t + 1) as i32;
            let bc1 = 1.0 - c.betas.0.powi(t);
            let bc2 = 1.0 - c.betas.1.powi(t);
            for i in 0..p.len() {
                p[i] *= 1.0 - c.lr * c.weight_decay;
                m[i] = c.betas.0 * m[i] + (1.0 - c.betas.0) * g[i];
                v[i] = c.betas.1 * v[i] + (1.0 - c.betas.1) * g[i] * g[i];
                p[i] -= (c.lr / bc1) * m[i] / (v[i].sqrt() / bc2.sqrt() + c.eps);
            }
        }
        p
    }

    fn grads() -> Vec<Vec<f64>> {
        vec![
            vec![0.3, -0.2, 1e-4, 5.0],
            vec![0.1, -0.4, -2e-4, 4.0],
            vec![-0.5, 0.25, 1e-4, -3.0],
            vec![0.2, 0.0, 3e-4, 2.0],
            vec![0.05, -0.1, -1e-4, 1.0],
        ]
    }

    #[test]
    fn default_config_is_pytorchs() {
        assert_eq!(
            AdamWConfig::default(),
            AdamWConfig {
                lr: 1e-3,
                betas: (0.9, 0.999),
                eps: 1e-8,
                weight_decay: 1e-2
            }
        );
    }

    #[test]
    fn matches_hand_computed_updates() {
        let p0 = [0.5, -1.5, 2.0, 1e-3];
        for config in [
            AdamWConfig::default(),
            AdamWConfig {
                lr: 0.05,
                betas: (0.8, 0.99),
                eps: 1e-6,
                weight_decay: 0.1,
            },
            AdamWConfig {
                lr: 0.01,
                weight_decay: 0.0,
                ..Default::default()
            },
        ] {
            let p = param(&p0);
            let mut opt = AdamW::new(vec![("p".into(), p.clone())], config);
            for (k, g) in grads().iter().enumerate() {
                set_grad(&p, g);
                opt.step().unwrap();
                let want = reference(&p0, &grads()[..=k], config);
                for (got, want) in p.to_f64_vec().unwrap().iter().zip(&want) {
                    let tol = 1e-6 * want.abs().max(1e-3);
                    assert!(
                        (got - want).abs() <= tol,
                        "{config:?} step {}: got {got}, want {want}",
                        k + 1
                    );
                }
            }
            assert_eq!(opt.steps(), 5);
            assert_eq!(p.dtype(), DType::F32);
        }
    }

    #[test]
    fn parameters_without_gradients_are_untouched() {
        let (a, b) = (param(&[1.0, 2.0]), param(&[3.0]));
        let mut opt = AdamW::new(
            vec![("a".into(), a.clone()), ("b".into(), b.clone())],
            AdamWConfig::default(),
        );
        set_grad(&a, &[1.0, -1.0]);
        opt.step().unwrap();
        assert_eq!(b.to_f64_vec().unwrap(), [3.0]);
        let state = opt.state_dict().unwrap();
        assert_eq!(state.steps, [("a".to_string(), 1)]);
        opt.zero_grad();
        assert!(a.grad().is_none());
    }

    #[test]
    fn invalid_hyperparameters_are_errors_naming_the_field() {
        let p = param(&[1.0]);
        set_grad(&p, &[1.0]);
        for (config, field) in [
            (
                AdamWConfig {
                    lr: -1.0,
                    ..Default::default()
                },
                "AdamW lr",
            ),
            (
                AdamWConfig {
                    betas: (1.0, 0.999),
                    ..Default::default()
                },
                "AdamW betas.0",
            ),
            (
                AdamWConfig {
                    betas: (0.9, -0.1),
                    ..Default::default()
                },
                "AdamW betas.1",
            ),
            (
                AdamWConfig {
                    eps: f64::NAN,
                    ..Default::default()
                },
                "AdamW eps",
            ),
        ] {
            let err = AdamW::new(vec![("p".into(), p.clone())], config)
                .step()
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(field), "{err}");
        }
        assert_eq!(p.to_f64_vec().unwrap(), [1.0]);
    }

    #[test]
    fn the_step_count_keeps_counting_past_2_pow_24() {
        // A step count kept in f32 (as PyTorch keeps `step`) stops there.
        let two24 = 16_777_216f32;
        assert_eq!(two24 + 1.0, two24);
        let p0 = [0.5, -1.5, 2.0, 1e-3];
        let p = param(&p0);
        let mut a = AdamW::new(vec![("p".into(), p.clone())], AdamWConfig::default());
        set_grad(&p, &grads()[0]);
        a.step().unwrap();
        let mut state = a.state_dict().unwrap();
        state.steps[0].1 = 1 << 24;
        a.load_state_dict(&state).unwrap();
        let before = p.to_vec::<f32>().unwrap();
        for g in &grads()[1..3] {
            set_grad(&p, g);
            a.step().unwrap();
        }
        assert_eq!(a.steps(), (1 << 24) + 2);
        assert_eq!(a.state_dict().unwrap().steps[0].1, (1 << 24) + 2);
        assert_ne!(p.to_vec::<f32>().unwrap(), before, "the parameter moved");
    }

    #[test]
    fn state_round_trip_continues_identically() {
        let p0 = [0.5, -1.5, 2.0, 1e-3];
        let config = AdamWConfig {
            lr: 0.05,
            ..Default::default()
        };
        let (p, q) = (param(&p0), param(&p0));
        let mut a = AdamW::new(vec![("p".into(), p.clone())], config);
        let mut b = AdamW::new(vec![("p".into(), q.clone())], AdamWConfig::default());
        for g in &grads()[..2] {
            set_grad(&p, g);
            set_grad(&q, g);
            a.step().unwrap();
        }
        q.assign(&p).unwrap();
        b.load_state_dict(&a.state_dict().unwrap()).unwrap();
        assert_eq!(b.config(), &config);
        for g in &grads()[2..] {
            set_grad(&p, g);
            set_grad(&q, g);
            a.step().unwrap();
            b.step().unwrap();
        }
        assert_eq!(p.to_vec::<f32>().unwrap(), q.to_vec::<f32>().unwrap());
        // The loaded state is a copy: stepping `b` did not move `a`'s moments twice.
        assert_eq!(a.steps(), 5);
        assert_eq!(b.steps(), 5);
    }

    #[test]
    fn mismatched_state_is_an_error() {
        let p = param(&[1.0, 2.0]);
        set_grad(&p, &[1.0, 1.0]);
        let mut a = AdamW::new(vec![("p".into(), p.clone())], AdamWConfig::default());
        a.step().unwrap();
        let state = a.state_dict().unwrap();
        let other = param(&[1.0, 2.0, 3.0]);
        let err = AdamW::new(vec![("p".into(), other)], AdamWConfig::default())
            .load_state_dict(&state)
            .unwrap_err();
        assert!(err.to_string().contains("shape [2]"), "{err}");
        let err = AdamW::new(vec![("q".into(), p.clone())], AdamWConfig::default())
            .load_state_dict(&state)
            .unwrap_err();
        assert!(err.to_string().contains("\"p\""), "{err}");
    }
}
