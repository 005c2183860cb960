//! The interceptor hook sees every top-level op by name and can replace inputs.

use amp_tensor::dispatch::{push_interceptor, Interceptor};
use amp_tensor::ops::{self, GeluApprox, Reduction};
use amp_tensor::{DType, Device, Result, Tensor};
use std::cell::RefCell;
use std::rc::Rc;

#[derive(Default)]
struct Trace {
    ops: RefCell<Vec<(&'static str, Vec<DType>)>>,
}

impl Interceptor for Trace {
    fn intercept(&self, op: &'static str, inputs: &[Tensor]) -> Result<Option<Vec<Tensor>>> {
        self.ops
            .borrow_mut()
            .push((op, inputs.iter().map(|t| t.dtype()).collect()));
        Ok(None)
    }
}

/// Casts every f32 input of `matmul`/`linear` to bf16 (a miniature autocast).
struct LowerMatmul;

impl Interceptor for LowerMatmul {
    fn intercept(&self, op: &'static str, inputs: &[Tensor]) -> Result<Option<Vec<Tensor>>> {
        if op != "matmul" && op != "linear" {
            return Ok(None);
        }
        Ok(Some(
            inputs
                .iter()
                .map(|t| t.to_dtype(DType::BF16))
                .collect::<Result<_>>()?,
        ))
    }
}

#[test]
fn hook_sees_every_top_level_op_by_name() {
    let d = Device::reference();
    let trace = Rc::new(Trace::default());
    let x = Tensor::randn(&[2, 3], DType::F32, &d, 0).unwrap();
    let w = Tensor::randn(&[4, 3], DType::F32, &d, 1).unwrap();
    let y = Tensor::from_vec(vec![1i64, 0], &[2], &d).unwrap();
    {
        let _g = push_interceptor(trace.clone());
        let h = ops::linear(&x, &w, None).unwrap();
        let h = h.gelu(GeluApprox::None).unwrap();
        let _ = ops::softmax(&h, -1).unwrap();
        let _ = ops::cross_entropy(&h, &y).unwrap();
        let _ = ops::mse_loss(&h, &h, Reduction::Mean).unwrap();
        let _ = h.exp().unwrap().sum_all().unwrap();
        let _ = ops::cat(&[&h, &h], 0).unwrap();
    }
    let names: Vec<&str> = trace.ops.borrow().iter().map(|p| p.0).collect();
    // Only the top-level ops: linear's internal matmul/add and cross_entropy's
    // log_softmax/gather are not seen.
    assert_eq!(
        names,
        vec![
            "linear",
            "gelu",
            "softmax",
            "cross_entropy",
            "mse_loss",
            "exp",
            "sum",
            "cat"
        ]
    );
    assert_eq!(trace.ops.borrow()[3].1, vec![DType::F32, DType::I64]);
    // The guard popped the interceptor.
    assert_eq!(amp_tensor::dispatch::interceptor_depth(), 0);
    let _ = x.exp().unwrap();
    assert_eq!(trace.ops.borrow().len(), 8);
}

#[test]
fn hook_can_replace_inputs_and_gradients_flow_back() {
    let d = Device::reference();
    let x = Tensor::randn(&[2, 3], DType::F32, &d, 0).unwrap();
    let w = Tensor::randn(&[4, 3], DType::F32, &d, 1).unwrap();
    w.set_requires_grad(true).unwrap();
    let out = {
        let _g = push_interceptor(Rc::new(LowerMatmul));
        ops::linear(&x, &w, None).unwrap()
    };
    assert_eq!(out.dtype(), DType::BF16);
    // Bitwise equal to casting by hand with no hook.
    let by_hand = ops::linear(
        &x.to_dtype(DType::BF16).unwrap(),
        &w.to_dtype(DType::BF16).unwrap(),
        None,
    )
    .unwrap();
    assert_eq!(out.to_f64_vec().unwrap(), by_hand.to_f64_vec().unwrap());
    out.to_dtype(DType::F32)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(w.grad().unwrap().dtype(), DType::F32);
}

#[test]
fn nested_guards_restore_and_panics_unwind_cleanly() {
    let outer = Rc::new(Trace::default());
    let inner = Rc::new(Trace::default());
    let x = Tensor::ones(&[2], DType::F32, &Device::reference()).unwrap();
    let _a = push_interceptor(outer.clone());
    {
        let _b = push_interceptor(inner.clone());
        x.exp().unwrap();
    }
    x.exp().unwrap();
    assert_eq!((outer.ops.borrow().len(), inner.ops.borrow().len()), (1, 1));
    let r = std::panic::catch_unwind(|| {
        let _c = push_interceptor(Rc::new(LowerMatmul));
        panic!("boom");
    });
    assert!(r.is_err());
    assert_eq!(amp_tensor::dispatch::interceptor_depth(), 1);
}
