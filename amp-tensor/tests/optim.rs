//! `ops::adamw_step` on tensors: the update agrees with an exact f64
//! evaluation of `torch.optim.AdamW`'s formula, and misuse is an `Err` that
//! names the op.

use amp_tensor::backend::AdamWStep;
use amp_tensor::{ops, DType, Device, Tensor};
use amp_testkit::{check_values, Tolerance};

fn hyper(step: u64) -> AdamWStep {
    AdamWStep {
        lr: 0.1,
        beta1: 0.8,
        beta2: 0.99,
        eps: 1e-6,
        weight_decay: 0.1,
        step,
    }
}

#[test]
fn two_steps_match_the_formula_in_f64() {
    let dev = Device::reference();
    let p0 = [0.5, -1.25, 2.0, 0.0, 3.5, -0.75];
    let grads = [
        [0.1, -0.2, 0.3, 1.0, -2.0, 0.05],
        [-0.3, 0.1, 0.0, 0.5, 1.5, -0.05],
    ];
    let p = Tensor::from_f64_slice(&p0, &[2, 3], DType::F32, &dev).unwrap();
    let m = Tensor::zeros(&[2, 3], DType::F32, &dev).unwrap();
    let v = Tensor::zeros(&[2, 3], DType::F32, &dev).unwrap();
    let (mut ep, mut em, mut ev) = (p0.to_vec(), vec![0.0; 6], vec![0.0; 6]);
    for (i, g) in grads.iter().enumerate() {
        let h = hyper(i as u64 + 1);
        // The gradient as a bf16 transposed view: any dtype and layout is accepted.
        let gt = Tensor::from_f64_slice(g, &[2, 3], DType::BF16, &dev).unwrap();
        let gt = gt.t().unwrap().contiguous().unwrap().t().unwrap();
        ops::adamw_step(&p, &gt, &m, &v, &h).unwrap();
        let g: Vec<f64> = gt.to_f64_vec().unwrap();
        let t = h.step as i32;
        for j in 0..6 {
            em[j] = h.beta1 * em[j] + (1.0 - h.beta1) * g[j];
            ev[j] = h.beta2 * ev[j] + (1.0 - h.beta2) * g[j] * g[j];
            let denom = ev[j].sqrt() / (1.0 - h.beta2.powi(t)).sqrt() + h.eps;
            ep[j] = ep[j] * (1.0 - h.lr * h.weight_decay)
                - h.lr / (1.0 - h.beta1.powi(t)) * em[j] / denom;
        }
    }
    let tol = Tolerance::for_dtype(DType::F32);
    check_values(&p.to_f64_vec().unwrap(), &ep, tol).unwrap();
    check_values(&m.to_f64_vec().unwrap(), &em, tol).unwrap();
    check_values(&v.to_f64_vec().unwrap(), &ev, tol).unwrap();
}

fn err(r: amp_tensor::Result<()>) -> String {
    let e = r.unwrap_err().to_string();
    assert!(e.contains("adamw_step"), "{e}");
    e
}

#[test]
fn misuse_is_an_error_naming_the_op() {
    let dev = Device::reference();
    let z = |shape: &[usize], d| Tensor::zeros(shape, d, &dev).unwrap();
    let (p, g, m, v) = (
        z(&[4, 2], DType::F32),
        z(&[4, 2], DType::F32),
        z(&[4, 2], DType::F32),
        z(&[4, 2], DType::F32),
    );
    let h = hyper(1);
    // Moments must be f32.
    let e = err(ops::adamw_step(&p, &g, &z(&[4, 2], DType::BF16), &v, &h));
    assert!(e.contains("exp_avg must be f32"), "{e}");
    // Shapes must match the parameter's.
    let e = err(ops::adamw_step(&p, &z(&[8], DType::F32), &m, &v, &h));
    assert!(e.contains("[8]") && e.contains("[4, 2]"), "{e}");
    // The parameter must own its buffer.
    let e = err(ops::adamw_step(
        &p.narrow(0, 0, 2).unwrap(),
        &z(&[2, 2], DType::F32),
        &z(&[2, 2], DType::F32),
        &z(&[2, 2], DType::F32),
        &h,
    ));
    assert!(e.contains("view"), "{e}");
    // No aliasing between the four.
    let e = err(ops::adamw_step(&p, &g, &m, &m, &h));
    assert!(e.contains("share"), "{e}");
    // Integer tensors and out-of-range hyperparameters.
    err(ops::adamw_step(&z(&[4, 2], DType::I64), &g, &m, &v, &h));
    let e = err(ops::adamw_step(&p, &g, &m, &v, &hyper(0)));
    assert!(e.contains("step"), "{e}");
    // Nothing was written by any refused call.
    assert!(p.to_f64_vec().unwrap().iter().all(|&x| x == 0.0));
}
