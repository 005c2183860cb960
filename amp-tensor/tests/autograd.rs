//! Autograd semantics: accumulation, no_grad, detach, gradient dtypes, views.

use amp_tensor::{no_grad, ops, DType, Device, Error, Tensor};

fn leaf(v: &[f64], dtype: DType) -> Tensor {
    let t = Tensor::from_f64_slice(v, &[v.len()], dtype, &Device::reference()).unwrap();
    t.set_requires_grad(true).unwrap();
    t
}

#[test]
fn gradients_accumulate_over_two_backward_passes() {
    let x = leaf(&[1.0, 2.0, 3.0], DType::F64);
    for _ in 0..2 {
        x.mul(&x).unwrap().sum_all().unwrap().backward().unwrap();
    }
    // d/dx Σx² = 2x, twice.
    assert_eq!(
        x.grad().unwrap().to_f64_vec().unwrap(),
        vec![4.0, 8.0, 12.0]
    );
    x.zero_grad();
    assert!(x.grad().is_none());
}

#[test]
fn a_tensor_used_twice_gets_both_contributions() {
    let x = leaf(&[3.0], DType::F64);
    let y = x.mul(&x).unwrap().add(&x.mul_scalar(5.0).unwrap()).unwrap(); // x² + 5x
    y.sum_all().unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_f64_vec().unwrap(), vec![11.0]);
}

#[test]
fn no_grad_and_detach_cut_the_tape() {
    let x = leaf(&[1.0, 2.0], DType::F32);
    {
        let _g = no_grad();
        let y = x.mul_scalar(2.0).unwrap();
        assert!(!y.requires_grad());
        assert!(!amp_tensor::is_grad_enabled());
    }
    assert!(amp_tensor::is_grad_enabled());
    let d = x.detach();
    assert!(!d.requires_grad() && d.is_leaf() && d.shares_storage_with(&x));
    let y = x.mul(&d).unwrap().sum_all().unwrap();
    y.backward().unwrap();
    // Only the non-detached path contributes: d/dx (x · stop(x)) = x.
    assert_eq!(x.grad().unwrap().to_f64_vec().unwrap(), vec![1.0, 2.0]);
}

#[test]
fn f32_leaf_through_bf16_cast_gets_f32_gradient() {
    let w = leaf(&[0.5, -1.25, 2.0], DType::F32);
    let y = w
        .to_dtype(DType::BF16)
        .unwrap()
        .mul_scalar(3.0)
        .unwrap()
        .sum_all()
        .unwrap();
    assert_eq!(y.dtype(), DType::BF16);
    y.backward().unwrap();
    let g = w.grad().unwrap();
    assert_eq!(g.dtype(), DType::F32);
    assert_eq!(g.to_f64_vec().unwrap(), vec![3.0, 3.0, 3.0]);
}

#[test]
fn linear_with_bf16_cast_matches_f32_gradient_within_bf16_tolerance() {
    let d = Device::reference();
    let w = Tensor::randn(&[8, 16], DType::F32, &d, 1).unwrap();
    w.set_requires_grad(true).unwrap();
    let x = Tensor::randn(&[4, 16], DType::F32, &d, 2).unwrap();
    let f32_loss = ops::linear(&x, &w, None).unwrap().sum_all().unwrap();
    f32_loss.backward().unwrap();
    let g32 = w.grad().unwrap().to_f64_vec().unwrap();
    w.zero_grad();
    let low = ops::linear(
        &x.to_dtype(DType::BF16).unwrap(),
        &w.to_dtype(DType::BF16).unwrap(),
        None,
    )
    .unwrap();
    low.to_dtype(DType::F32)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g16 = w.grad().unwrap();
    assert_eq!(g16.dtype(), DType::F32);
    for (a, b) in g16.to_f64_vec().unwrap().iter().zip(&g32) {
        assert!((a - b).abs() <= 1e-2 * (1.0 + b.abs()), "{a} vs {b}");
    }
}

#[test]
fn backward_errors() {
    let x = leaf(&[1.0, 2.0], DType::F64);
    let y = x.mul_scalar(2.0).unwrap();
    let err = y.backward().unwrap_err();
    assert!(matches!(err, Error::NonScalarBackward { .. }));
    assert!(err.to_string().contains("[2]"), "{err}");
    y.backward_with(&Tensor::ones(&[2], DType::F64, &Device::reference()).unwrap())
        .unwrap();
    assert_eq!(x.grad().unwrap().to_f64_vec().unwrap(), vec![2.0, 2.0]);
    let plain = Tensor::ones(&[], DType::F32, &Device::reference()).unwrap();
    assert!(matches!(
        plain.backward().unwrap_err(),
        Error::NoGradFn { .. }
    ));
    assert!(y.set_requires_grad(false).is_err());
    let ints = Tensor::from_vec(vec![1i64], &[1], &Device::reference()).unwrap();
    assert!(ints
        .set_requires_grad(true)
        .unwrap_err()
        .to_string()
        .contains("i64"));
}

#[test]
fn views_share_storage_and_route_gradients() {
    let x = leaf(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], DType::F64);
    let m = x.reshape(&[2, 3]).unwrap();
    assert!(m.shares_storage_with(&x));
    let tr = m.t().unwrap();
    assert!(tr.shares_storage_with(&x) && !tr.is_contiguous());
    let col = tr.narrow(1, 1, 1).unwrap(); // the second row of m
    col.sum_all().unwrap().backward().unwrap();
    assert_eq!(
        x.grad().unwrap().to_f64_vec().unwrap(),
        vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    );
}

#[test]
fn post_accumulate_hooks_see_each_leafs_final_gradient_once_per_pass() {
    use std::sync::{Arc, Mutex};
    // y = sum(a * b) + sum(a): a's gradient has two contributions, b's one.
    let a = leaf(&[1.0, 2.0], DType::F32);
    let b = leaf(&[3.0, 5.0], DType::F32);
    type Seen = Vec<(&'static str, Vec<f64>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let mut ids = Vec::new();
    for (name, t) in [("a", &a), ("b", &b)] {
        let seen = seen.clone();
        ids.push(
            t.register_post_accumulate_grad_hook(move |t| {
                let g = t.grad().expect("the gradient is there").to_f64_vec()?;
                seen.lock().unwrap().push((name, g));
                Ok(())
            })
            .unwrap(),
        );
    }
    let y = a
        .mul(&b)
        .unwrap()
        .sum_all()
        .unwrap()
        .add(&a.sum_all().unwrap())
        .unwrap();
    y.backward().unwrap();
    let mut got = seen.lock().unwrap().clone();
    got.sort_by(|x, y| x.0.cmp(y.0));
    assert_eq!(got, vec![("a", vec![4.0, 6.0]), ("b", vec![1.0, 2.0])]);

    // A second pass accumulates; each hook runs once more and sees the sum.
    seen.lock().unwrap().clear();
    y.backward().unwrap();
    let mut got = seen.lock().unwrap().clone();
    got.sort_by(|x, y| x.0.cmp(y.0));
    assert_eq!(got, vec![("a", vec![8.0, 12.0]), ("b", vec![2.0, 4.0])]);

    // Removed hooks stay quiet; an Err from a hook is the backward's error.
    assert!(a.remove_grad_hook(ids[0]) && !a.remove_grad_hook(ids[0]));
    b.register_post_accumulate_grad_hook(|_| Err(Error::invalid("test hook", "refused")))
        .unwrap();
    seen.lock().unwrap().clear();
    let err = y.backward().unwrap_err().to_string();
    assert!(err.contains("refused"), "{err}");
    assert!(seen.lock().unwrap().iter().all(|(n, _)| *n == "b"));

    // Only leaves that require grad take hooks.
    let e = y
        .register_post_accumulate_grad_hook(|_| Ok(()))
        .unwrap_err();
    assert!(e.to_string().contains("not a leaf"), "{e}");
    let plain = Tensor::zeros(&[2], DType::F32, &Device::reference()).unwrap();
    assert!(plain
        .register_post_accumulate_grad_hook(|_| Ok(()))
        .is_err());
}
