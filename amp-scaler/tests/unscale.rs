//! The fused unscale: views, inf/NaN detection, dtype groups, shared storage
//! (mirrors PyTorch's test_grad_scaling_unscale).

mod common;

use amp_scaler::{GradScaler, Optimizer, StepOutcome};
use amp_tensor::{DType, Device, Tensor};
use common::Sgd;

/// A `[10, 10]` gradient buffer filled with 4.0, with `special` written at `(2, 2)` and `(2, 7)`.
fn buffer(device: &Device, dtype: DType, at_2_2: f64, at_2_7: f64) -> Tensor {
    let mut v = vec![4.0; 100];
    v[22] = at_2_2;
    v[27] = at_2_7;
    Tensor::from_f64_slice(&v, &[10, 10], dtype, device).unwrap()
}

/// A parameter whose gradient is exactly `grad` (a view, possibly strided).
fn param_for(name: &str, grad: &Tensor) -> (String, Tensor) {
    let p = Tensor::zeros(grad.dims(), grad.dtype(), grad.device()).unwrap();
    p.set_requires_grad(true).unwrap();
    p.set_grad(Some(grad.clone())).unwrap();
    (name.to_string(), p)
}

/// A scaler at scale 4 (inv_scale 0.25) that has seen its first `scale` call.
fn scaler_at_4(device: &Device) -> GradScaler {
    let mut scaler = GradScaler::builder().init_scale(4.0).build().unwrap();
    scaler
        .scale(&Tensor::scalar(1.0, DType::F32, device).unwrap())
        .unwrap();
    scaler
}

#[derive(Clone, Copy)]
enum View {
    Whole,
    Transposed,
    Sliced,
}

fn view(t: &Tensor, v: View) -> Tensor {
    match v {
        View::Whole => t.clone(),
        View::Transposed => t.t().unwrap(),
        View::Sliced => t.narrow(1, 0, 5).unwrap(),
    }
}

#[test]
fn unscale_views_and_find_non_finite_values() {
    let inf = f64::INFINITY;
    let nan = f64::NAN;
    for (_, device) in amp_testkit::all_devices() {
        for dtype in [DType::F32, DType::F64, DType::BF16] {
            // (first buffer's (2,2) value and view, second buffer's, expected inf/NaN counts by name)
            type Case = (
                (f64, View),
                (f64, View),
                Vec<(&'static str, usize)>,
                Vec<(&'static str, usize)>,
            );
            let cases: Vec<Case> = vec![
                ((4.0, View::Whole), (4.0, View::Whole), vec![], vec![]),
                ((4.0, View::Whole), (4.0, View::Transposed), vec![], vec![]),
                ((4.0, View::Whole), (4.0, View::Sliced), vec![], vec![]),
                ((4.0, View::Sliced), (4.0, View::Sliced), vec![], vec![]),
                (
                    (4.0, View::Whole),
                    (inf, View::Whole),
                    vec![("b", 1)],
                    vec![],
                ),
                (
                    (4.0, View::Whole),
                    (nan, View::Whole),
                    vec![],
                    vec![("b", 1)],
                ),
                (
                    (4.0, View::Whole),
                    (inf, View::Sliced),
                    vec![("b", 1)],
                    vec![],
                ),
                (
                    (4.0, View::Whole),
                    (nan, View::Sliced),
                    vec![],
                    vec![("b", 1)],
                ),
                (
                    (inf, View::Whole),
                    (4.0, View::Sliced),
                    vec![("a", 1)],
                    vec![],
                ),
                (
                    (inf, View::Sliced),
                    (4.0, View::Sliced),
                    vec![("a", 1)],
                    vec![],
                ),
                (
                    (-inf, View::Transposed),
                    (nan, View::Transposed),
                    vec![("a", 1)],
                    vec![("b", 1)],
                ),
            ];
            for (i, ((va, a_view), (vb, b_view), want_inf, want_nan)) in
                cases.into_iter().enumerate()
            {
                // (2, 7) holds an inf outside the sliced view: only whole/transposed views may see it.
                let outside_a = if matches!(a_view, View::Sliced) {
                    inf
                } else {
                    4.0
                };
                let outside_b = if matches!(b_view, View::Sliced) {
                    nan
                } else {
                    4.0
                };
                let buf_a = buffer(&device, dtype, va, outside_a);
                let buf_b = buffer(&device, dtype, vb, outside_b);
                let (ga, gb) = (view(&buf_a, a_view), view(&buf_b, b_view));
                let mut opt = Sgd::new(vec![param_for("a", &ga), param_for("b", &gb)], 0.0);
                let mut scaler = scaler_at_4(&device);
                let outcome = scaler.step(&mut opt).unwrap();
                let name = |v: Vec<(&str, usize)>| {
                    v.into_iter().map(|(n, c)| (n.to_string(), c)).collect()
                };
                if want_inf.is_empty() && want_nan.is_empty() {
                    assert_eq!(outcome, StepOutcome::Stepped, "case {i} {dtype} {device:?}");
                    for (_, p) in opt.params() {
                        let g = p.grad().unwrap();
                        assert!(
                            g.to_f64_vec().unwrap().iter().all(|&x| x == 1.0),
                            "case {i} {dtype}"
                        );
                    }
                } else {
                    let want = StepOutcome::Skipped {
                        inf_params: name(want_inf),
                        nan_params: name(want_nan),
                        ranks: vec![0],
                    };
                    assert_eq!(outcome, want, "case {i} {dtype} {device:?}");
                }
                // Elements outside a sliced view are untouched (still 4.0 or the planted value).
                for (buf, v, outside) in [(&buf_a, a_view, outside_a), (&buf_b, b_view, outside_b)]
                {
                    if matches!(v, View::Sliced) {
                        let all = buf.to_f64_vec().unwrap();
                        for r in 0..10 {
                            for c in 5..10 {
                                let x = all[r * 10 + c];
                                let want = if (r, c) == (2, 7) { outside } else { 4.0 };
                                assert!(
                                    x == want || (x.is_nan() && want.is_nan()),
                                    "case {i}: ({r},{c}) = {x}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn inv_scale_is_the_f64_reciprocal_rounded_to_f32() {
    for (_, device) in amp_testkit::all_devices() {
        for scale in [3.0f64, 65536.0, 1e-3, 7.0e5] {
            let values = [1.0f32, 3.0, -2.5, 1e30, 6.1e-5];
            let g = Tensor::from_vec(values.to_vec(), &[5], &device).unwrap();
            let mut opt = Sgd::new(vec![param_for("g", &g)], 0.0);
            let mut scaler = GradScaler::builder().init_scale(scale).build().unwrap();
            scaler
                .scale(&Tensor::scalar(1.0, DType::F32, &device).unwrap())
                .unwrap();
            scaler.unscale(&mut opt).unwrap();
            let inv = (1.0 / (scale as f32) as f64) as f32;
            let want: Vec<f32> = values.iter().map(|v| v * inv).collect();
            assert_eq!(g.to_vec::<f32>().unwrap(), want, "scale {scale}");
        }
    }
}

#[test]
fn gradients_sharing_one_storage_are_each_unscaled_once() {
    for (_, device) in amp_testkit::all_devices() {
        // Two disjoint column blocks of one flat gradient buffer, and a third
        // parameter whose gradient is the very same view as the first.
        let flat = buffer(&device, DType::F32, 4.0, f64::INFINITY);
        let left = flat.narrow(1, 0, 5).unwrap();
        let right = flat.narrow(1, 5, 5).unwrap();
        let mut opt = Sgd::new(
            vec![
                param_for("left", &left),
                param_for("right", &right),
                param_for("left_again", &left),
            ],
            0.0,
        );
        let mut scaler = scaler_at_4(&device);
        let outcome = scaler.step(&mut opt).unwrap();
        assert_eq!(
            outcome,
            StepOutcome::Skipped {
                inf_params: vec![("right".into(), 1)],
                nan_params: vec![],
                ranks: vec![0],
            }
        );
        let all = flat.to_f64_vec().unwrap();
        for (i, &x) in all.iter().enumerate() {
            let want = if i == 27 { f64::INFINITY } else { 1.0 };
            assert_eq!(x, want, "element {i}");
        }

        // The same gradient tensor shared by two parameters: both named, unscaled once.
        let shared = buffer(&device, DType::F32, f64::NAN, 4.0);
        let mut opt = Sgd::new(
            vec![param_for("tied.a", &shared), param_for("tied.b", &shared)],
            0.0,
        );
        let mut scaler = scaler_at_4(&device);
        let outcome = scaler.step(&mut opt).unwrap();
        assert_eq!(
            outcome,
            StepOutcome::Skipped {
                inf_params: vec![],
                nan_params: vec![("tied.a".into(), 1), ("tied.b".into(), 1)],
                ranks: vec![0],
            }
        );
        assert_eq!(
            shared
                .to_f64_vec()
                .unwrap()
                .iter()
                .filter(|&&x| x == 1.0)
                .count(),
            99
        );
    }
}

#[test]
fn mixed_dtypes_are_unscaled_in_separate_groups() {
    for (_, device) in amp_testkit::all_devices() {
        let grads = [
            ("f32", Tensor::full(&[4], 8.0, DType::F32, &device).unwrap()),
            (
                "bf16",
                Tensor::full(&[4], 8.0, DType::BF16, &device).unwrap(),
            ),
            ("f64", Tensor::full(&[4], 8.0, DType::F64, &device).unwrap()),
            (
                "f32.b",
                Tensor::full(&[2, 2], 8.0, DType::F32, &device).unwrap(),
            ),
        ];
        let params: Vec<_> = grads.iter().map(|(n, g)| param_for(n, g)).collect();
        let mut opt = Sgd::new(params, 0.0);
        let mut scaler = scaler_at_4(&device);
        scaler.unscale(&mut opt).unwrap();
        for (n, g) in &grads {
            assert_eq!(g.to_f64_vec().unwrap(), vec![2.0; 4], "{n}");
        }
        assert!(scaler.step(&mut opt).unwrap().is_stepped());
        scaler.update().unwrap();

        // An overflow in the bf16 group only is found and named.
        grads[1]
            .1
            .assign(&Tensor::full(&[4], f64::INFINITY, DType::BF16, &device).unwrap())
            .unwrap();
        scaler
            .scale(&Tensor::scalar(1.0, DType::F32, &device).unwrap())
            .unwrap();
        let outcome = scaler.step(&mut opt).unwrap();
        assert_eq!(
            outcome,
            StepOutcome::Skipped {
                inf_params: vec![("bf16".into(), 4)],
                nan_params: vec![],
                ranks: vec![0],
            }
        );
    }
}

#[test]
fn parameters_without_gradients_are_ignored() {
    for (_, device) in amp_testkit::all_devices() {
        let g = Tensor::full(&[3], 8.0, DType::F32, &device).unwrap();
        let frozen = Tensor::zeros(&[3], DType::F32, &device).unwrap();
        frozen.set_requires_grad(true).unwrap();
        let mut opt = Sgd::new(vec![("frozen".into(), frozen), param_for("g", &g)], 0.0);
        let mut scaler = scaler_at_4(&device);
        assert!(scaler.step(&mut opt).unwrap().is_stepped());
        assert_eq!(g.to_f64_vec().unwrap(), vec![2.0; 3]);
    }
}
