//! Hostile inputs: shape arithmetic that overflows, buffers larger than the
//! machine, guards dropped out of order, non-finite softmax rows. Each case
//! returns a clear `Err` or behaves consistently; none panics or aborts.

use amp_tensor::dispatch::interceptor_depth;
use amp_tensor::dispatch::{push_interceptor, Interceptor};
use amp_tensor::{is_grad_enabled, no_grad, ops, DType, Device, Error, Result, Tensor};
use std::cell::RefCell;
use std::rc::Rc;

fn dev() -> Device {
    Device::reference()
}

#[test]
fn overflowing_shapes_are_errors_not_wrapped_counts() {
    let x = Tensor::zeros(&[4], DType::F32, &dev()).unwrap();
    // 2^63 + 2 times 2 wraps to 4 in usize arithmetic.
    let err = x.reshape(&[(1usize << 63) + 2, 2]).unwrap_err();
    assert!(
        matches!(err, Error::ShapeOverflow { op: "reshape", .. }),
        "{err}"
    );
    let err = Tensor::zeros(&[1 << 62, 8], DType::F32, &dev()).unwrap_err();
    assert!(
        matches!(err, Error::ShapeOverflow { op: "full", .. }),
        "{err}"
    );
    let err = Tensor::from_vec(vec![1.0f32; 4], &[(1usize << 63) + 2, 2], &dev()).unwrap_err();
    assert!(matches!(err, Error::ShapeOverflow { .. }), "{err}");
    let err = Tensor::randn(&[usize::MAX, 2], DType::F32, &dev(), 0).unwrap_err();
    assert!(matches!(err, Error::ShapeOverflow { .. }), "{err}");
    // start + len wraps past the bounds check.
    let err = x.narrow(0, usize::MAX, 1).unwrap_err();
    assert!(
        matches!(err, Error::IndexOutOfRange { op: "narrow", .. }),
        "{err}"
    );
    let err = x.narrow(0, 3, usize::MAX).unwrap_err();
    assert!(
        matches!(err, Error::IndexOutOfRange { op: "narrow", .. }),
        "{err}"
    );
    let err = x
        .reshape(&[4, 1])
        .unwrap()
        .broadcast_to(&[usize::MAX, 4, 2])
        .unwrap_err();
    assert!(matches!(err, Error::ShapeOverflow { .. }), "{err}");
    assert!(x.narrow(0, 1, 3).is_ok());
}

#[test]
fn buffers_larger_than_the_machine_are_out_of_memory_errors() {
    {
        let device = dev();
        let err = Tensor::zeros(&[1 << 40], DType::F32, &device).unwrap_err();
        assert!(
            matches!(err, Error::OutOfMemory { op: "full", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("out of memory"), "{err}");
        let err = Tensor::randn(&[1 << 40], DType::F32, &device, 0).unwrap_err();
        assert!(matches!(err, Error::OutOfMemory { .. }), "{err}");
        let err = Tensor::arange(0.0, 1e300, 1.0, DType::F32, &device).unwrap_err();
        assert!(matches!(err, Error::OutOfMemory { .. }), "{err}");
    }
    // A broadcast view is free; materialising it is an out-of-memory error.
    let x = Tensor::zeros(&[1, 1], DType::F32, &dev()).unwrap();
    let huge = x.broadcast_to(&[1 << 20, 1 << 20]).unwrap();
    let err = huge.contiguous().unwrap_err();
    assert!(
        matches!(
            err,
            Error::OutOfMemory {
                op: "contiguous",
                ..
            }
        ),
        "{err}"
    );
    let err = huge.exp().unwrap_err();
    assert!(matches!(err, Error::OutOfMemory { .. }), "{err}");
    let col = Tensor::zeros(&[1 << 20, 1], DType::F32, &dev()).unwrap();
    let row = Tensor::zeros(&[1, 1 << 20], DType::F32, &dev()).unwrap();
    let err = col.add(&row).unwrap_err();
    assert!(matches!(err, Error::OutOfMemory { op: "add", .. }), "{err}");
    let err = ops::matmul(&col, &row).unwrap_err();
    assert!(
        matches!(err, Error::OutOfMemory { op: "matmul", .. }),
        "{err}"
    );
}

/// Records the ops it sees under a name.
struct Trace(&'static str, Rc<RefCell<Vec<&'static str>>>);

impl Interceptor for Trace {
    fn intercept(&self, op: &'static str, _inputs: &[Tensor]) -> Result<Option<Vec<Tensor>>> {
        self.1.borrow_mut().push(self.0);
        let _ = op;
        Ok(None)
    }
}

#[test]
fn interceptor_guards_dropped_out_of_order_remove_only_their_own() {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let x = Tensor::ones(&[2], DType::F32, &dev()).unwrap();
    let a = push_interceptor(Rc::new(Trace("a", seen.clone())));
    let b = push_interceptor(Rc::new(Trace("b", seen.clone())));
    drop(a); // out of order: b stays installed, and is the one consulted
    assert_eq!(interceptor_depth(), 1);
    x.exp().unwrap();
    assert_eq!(*seen.borrow(), vec!["b"]);
    let c = push_interceptor(Rc::new(Trace("c", seen.clone())));
    drop(b);
    x.exp().unwrap();
    assert_eq!(*seen.borrow(), vec!["b", "c"]);
    drop(c);
    assert_eq!(interceptor_depth(), 0);
    x.exp().unwrap();
    assert_eq!(seen.borrow().len(), 2);
}

#[test]
fn no_grad_guards_dropped_out_of_order_keep_grad_off_while_any_lives() {
    let a = no_grad();
    let b = no_grad();
    drop(a);
    assert!(!is_grad_enabled(), "b is still alive");
    let w = Tensor::ones(&[2], DType::F32, &dev()).unwrap();
    w.set_requires_grad(true).unwrap();
    assert!(!w.exp().unwrap().requires_grad());
    drop(b);
    assert!(is_grad_enabled());
    assert!(w.exp().unwrap().requires_grad());
}

#[test]
fn softmax_of_non_finite_rows_follows_pytorch() {
    let d = dev();
    let row = |v: Vec<f32>| Tensor::from_vec(v.clone(), &[1, v.len()], &d).unwrap();
    let nan_row = |t: Tensor| t.to_f64_vec().unwrap().iter().all(|v| v.is_nan());
    // +inf, NaN, or every entry -inf (a fully masked row): NaN throughout, as torch.softmax.
    for values in [
        vec![1.0, f32::INFINITY, 2.0],
        vec![1.0, f32::NAN, 2.0],
        vec![f32::NEG_INFINITY, f32::NEG_INFINITY],
    ] {
        assert!(
            nan_row(ops::softmax(&row(values.clone()), -1).unwrap()),
            "{values:?}"
        );
        assert!(
            nan_row(ops::log_softmax(&row(values.clone()), -1).unwrap()),
            "{values:?}"
        );
    }
    // -inf entries next to finite ones are ordinary zeros.
    let p = ops::softmax(&row(vec![0.0, f32::NEG_INFINITY, 0.0]), -1).unwrap();
    assert_eq!(p.to_vec::<f32>().unwrap(), vec![0.5, 0.0, 0.5]);
    // Cross-entropy with a +inf logit is NaN (PyTorch), not +inf.
    let targets = Tensor::from_vec(vec![0i64], &[1], &d).unwrap();
    let loss = ops::cross_entropy(&row(vec![1.0, f32::INFINITY, 2.0]), &targets).unwrap();
    assert!(loss.scalar_f64().unwrap().is_nan());
}
