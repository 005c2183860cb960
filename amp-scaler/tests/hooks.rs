//! The data-parallel found-inf hook and `clip_grad_norm`.

mod common;

use amp_scaler::{
    clip_grad_norm, Error, FoundInfReduce, GradScaler, Optimizer, SingleProcess, StepOutcome,
};
use amp_tensor::{DType, Device, Tensor};
use common::Sgd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// A stand-in for the sum over replicas: this process is rank 1 of 3, and the
/// other two replicas add `remote` element-wise (a real group is amp-dist's).
#[derive(Default)]
struct FakeReplicas {
    remote: std::sync::Mutex<Vec<f64>>,
    calls: AtomicUsize,
    fail: AtomicBool,
}

impl FoundInfReduce for FakeReplicas {
    fn rank(&self) -> usize {
        1
    }
    fn world_size(&self) -> usize {
        3
    }
    fn sum_reduce(&self, values: &mut [f64]) -> amp_scaler::Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::Optimizer(
                "all_reduce failed: replica 2 unreachable".into(),
            ));
        }
        let remote = self.remote.lock().unwrap();
        if !remote.is_empty() {
            assert_eq!(remote.len(), values.len(), "same layout on every replica");
            values
                .iter_mut()
                .zip(remote.iter())
                .for_each(|(v, r)| *v += r);
        }
        Ok(())
    }
}

fn param(device: &Device, grad: f64) -> (String, Tensor) {
    let p = Tensor::ones(&[2], DType::F32, device).unwrap();
    p.set_requires_grad(true).unwrap();
    p.set_grad(Some(Tensor::full(&[2], grad, DType::F32, device).unwrap()))
        .unwrap();
    ("p".into(), p)
}

#[test]
fn an_overflow_on_another_rank_skips_every_rank_and_names_it() {
    for (_, device) in amp_testkit::all_devices() {
        let replicas = Arc::new(FakeReplicas::default());
        let mut scaler = GradScaler::builder()
            .init_scale(8.0)
            .found_inf_reduce(replicas.clone())
            .build()
            .unwrap();
        let one = Tensor::scalar(1.0, DType::F32, &device).unwrap();

        // Clean everywhere: steps.
        let mut opt = Sgd::new(vec![param(&device, 8.0)], 1.0);
        scaler.scale(&one).unwrap();
        assert!(scaler.step(&mut opt).unwrap().is_stepped());
        scaler.update().unwrap();
        assert_eq!(opt.params[0].1.to_f64_vec().unwrap(), vec![0.0; 2]);

        // Rank 2 saw 3 infs in "p" (layout: 3 rank flags, inf per parameter,
        // NaN per parameter, any-gradient flag, any-overflow flag): every
        // rank skips and backs off, and the outcome names rank 2 and the
        // parameter with its count.
        *replicas.remote.lock().unwrap() = vec![0.0, 0.0, 1.0, 3.0, 0.0, 1.0, 1.0];
        let mut opt = Sgd::new(vec![param(&device, 8.0)], 1.0);
        scaler.scale(&one).unwrap();
        assert_eq!(
            scaler.step(&mut opt).unwrap(),
            StepOutcome::Skipped {
                inf_params: vec![("p".into(), 3)],
                nan_params: vec![],
                ranks: vec![2],
            }
        );
        scaler.update().unwrap();
        assert_eq!(scaler.get_scale(), 4.0);
        assert_eq!(opt.params[0].1.to_f64_vec().unwrap(), vec![1.0; 2]);

        // This rank (1) holds a NaN as well: both ranks are named, counts summed.
        let mut opt = Sgd::new(vec![param(&device, f64::NAN)], 1.0);
        *replicas.remote.lock().unwrap() = vec![0.0, 0.0, 1.0, 0.0, 2.0, 1.0, 1.0];
        scaler.scale(&one).unwrap();
        assert_eq!(
            scaler.step(&mut opt).unwrap(),
            StepOutcome::Skipped {
                inf_params: vec![],
                nan_params: vec![("p".into(), 4)],
                ranks: vec![1, 2],
            }
        );
        scaler.update().unwrap();
        // An overflow in the replicas' sum itself (every rank's own gradients
        // finite): still skipped everywhere, with no rank to blame.
        let mut opt = Sgd::new(vec![param(&device, 8.0)], 1.0);
        *replicas.remote.lock().unwrap() = vec![0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0];
        scaler.scale(&one).unwrap();
        assert_eq!(
            scaler.step(&mut opt).unwrap(),
            StepOutcome::Skipped {
                inf_params: vec![],
                nan_params: vec![],
                ranks: vec![],
            }
        );
        scaler.update().unwrap();
        assert_eq!(
            replicas.calls.load(Ordering::SeqCst),
            4,
            "one collective per unscale"
        );

        // A failing collective is the step's error.
        replicas.fail.store(true, Ordering::SeqCst);
        scaler.scale(&one).unwrap();
        let m = scaler.step(&mut opt).unwrap_err().to_string();
        assert!(m.contains("replica 2 unreachable"), "{m}");
    }
    let mut v = [1.0, 2.0];
    SingleProcess.sum_reduce(&mut v).unwrap();
    assert_eq!(
        (v, SingleProcess.rank(), SingleProcess.world_size()),
        ([1.0, 2.0], 0, 1)
    );
}

#[test]
fn clip_grad_norm_matches_an_f64_reference() {
    for (_, device) in amp_testkit::all_devices() {
        let a: Vec<f64> = (0..12).map(|i| (i as f64 - 5.5) * 0.37).collect();
        let b: Vec<f64> = (0..6).map(|i| 1.0 / (i as f64 + 1.0)).collect();
        let total = a.iter().chain(&b).map(|x| x * x).sum::<f64>().sqrt();
        for max_norm in [0.5, total * 2.0] {
            let ga = Tensor::from_f64_slice(&a, &[3, 4], DType::F32, &device).unwrap();
            let gb = Tensor::from_f64_slice(&b, &[2, 3], DType::F32, &device).unwrap();
            let pa = Tensor::zeros(&[4, 3], DType::F32, &device).unwrap();
            let pb = Tensor::zeros(&[2, 3], DType::F32, &device).unwrap();
            let none = Tensor::zeros(&[5], DType::F32, &device).unwrap();
            pa.set_grad(Some(ga.t().unwrap())).unwrap(); // a transposed view
            pb.set_grad(Some(gb.clone())).unwrap();
            let norm = clip_grad_norm([&pa, &pb, &none], max_norm).unwrap();
            assert!(
                (norm - total).abs() <= 1e-6 * total,
                "norm {norm} vs {total}"
            );
            let coef = (max_norm / (total + 1e-6)).min(1.0);
            for (g, src) in [(&ga, &a), (&gb, &b)] {
                for (got, x) in g.to_f64_vec().unwrap().iter().zip(src.iter()) {
                    let want = x * coef;
                    assert!(
                        (got - want).abs() <= 1e-6 * want.abs().max(1e-6),
                        "{got} vs {want}"
                    );
                }
            }
            if max_norm > total {
                assert_eq!(
                    ga.to_f64_vec().unwrap(),
                    a.iter().map(|&x| x as f32 as f64).collect::<Vec<_>>()
                );
            }
        }
        let p = Tensor::zeros(&[2], DType::F32, &device).unwrap();
        assert_eq!(clip_grad_norm([&p], 1.0).unwrap(), 0.0);
        assert!(clip_grad_norm([&p], -1.0).is_err());
        assert!(clip_grad_norm([&p], f64::NAN).is_err());
    }
}

#[test]
fn the_scalers_clip_unscales_first_then_clips_the_true_gradients() {
    for (_, device) in amp_testkit::all_devices() {
        // True gradients [3, 4] (norm 5), held scaled by 1024.
        let p = Tensor::zeros(&[2], DType::F32, &device).unwrap();
        let scaled =
            Tensor::from_f64_slice(&[3.0 * 1024.0, 4.0 * 1024.0], &[2], DType::F32, &device);
        p.set_grad(Some(scaled.unwrap())).unwrap();
        let mut opt = Sgd::new(vec![("p".into(), p.clone())], 0.1);
        let mut scaler = GradScaler::builder().init_scale(1024.0).build().unwrap();
        // The scale must have been used once (as `scale(&loss)` would).
        scaler
            .scale(&Tensor::ones(&[], DType::F32, &device).unwrap())
            .unwrap();
        let norm = scaler.clip_grad_norm(&mut opt, 1.0).unwrap();
        assert!(
            (norm - 5.0).abs() < 1e-6,
            "the norm of the true gradients: {norm}"
        );
        let coef = 1.0 / (5.0 + 1e-6);
        let got = p.grad().unwrap().to_f64_vec().unwrap();
        for (g, want) in got.iter().zip([3.0 * coef, 4.0 * coef]) {
            assert!((g - want).abs() < 1e-6, "{got:?}");
        }
        // Already unscaled: the step does not unscale again, and steps.
        assert_eq!(scaler.step(&mut opt).unwrap(), StepOutcome::Stepped);
        scaler.update().unwrap();
        let w = p.to_f64_vec().unwrap();
        assert!((w[0] + 0.1 * 3.0 * coef).abs() < 1e-6, "{w:?}");

        // An overflow: the norm is not finite and the step is skipped.
        let inf = Tensor::from_f64_slice(&[f64::INFINITY, 1.0], &[2], DType::F32, &device).unwrap();
        p.set_grad(Some(inf)).unwrap();
        scaler
            .scale(&Tensor::ones(&[], DType::F32, &device).unwrap())
            .unwrap();
        assert!(!scaler.clip_grad_norm(&mut opt, 1.0).unwrap().is_finite());
        assert!(scaler.step(&mut opt).unwrap().is_skipped());
    }
}

#[test]
fn optimizer_default_zero_grad_drops_gradients() {
    struct Minimal(Vec<(String, Tensor)>);
    impl Optimizer for Minimal {
        fn params(&self) -> Vec<(String, Tensor)> {
            self.0.clone()
        }
        fn step(&mut self) -> amp_scaler::Result<()> {
            Ok(())
        }
    }
    let device = Device::reference();
    let mut opt = Minimal(vec![param(&device, 1.0)]);
    opt.zero_grad();
    assert!(opt.0[0].1.grad().is_none());
}
