//! The fused AdamW update (`ops::adamw_step`) on every device: for f32, bf16
//! and f16 parameters and gradients, contiguous and transposed gradients,
//! lengths around the CPU's chunk and parallel thresholds, three consecutive
//! steps agree with an exact f64 evaluation of `torch.optim.AdamW`'s formula
//! (the parameter rounded to its dtype after each step); the fused kernels of
//! every CPU path and of CUDA are bit-identical with the CPU's scalar path.

use amp_dtype::DType;
use amp_tensor::backend::AdamWStep;
use amp_tensor::backend::HostStorage;
use amp_tensor::{ops, Device, Layout, Result, Tensor};
use amp_testkit::{check_values, on_every_device, Tolerance, FLOATS};

fn hyper(step: u64) -> AdamWStep {
    AdamWStep {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.05,
        step,
    }
}

/// `values` rounded to `dtype` and back.
fn rounded(values: &[f64], dtype: DType) -> Vec<f64> {
    HostStorage::from_f64(dtype, values).read_f64(&Layout::contiguous(&[values.len()]))
}

/// The gradient of step `step` (values in logical order).
fn gradient_values(n: usize, seed: u64, step: u64) -> Vec<f64> {
    amp_tensor::random::normals(seed * 10 + step, n)
        .iter()
        .map(|x| x * 0.1)
        .collect()
}

/// The gradient as a tensor of `dtype` on `device`: contiguous, or (when `n`
/// is a multiple of 4) the transpose of a `[4, n/4]` buffer.
fn gradient(device: &Device, g: &[f64], dtype: DType, transposed: bool) -> Result<Tensor> {
    let n = g.len();
    if !transposed || !n.is_multiple_of(4) {
        return Tensor::from_f64_slice(g, &[n], dtype, device);
    }
    let rows = n / 4;
    let mut stored = vec![0.0; n];
    for r in 0..rows {
        for c in 0..4 {
            stored[c * rows + r] = g[r * 4 + c];
        }
    }
    Tensor::from_f64_slice(&stored, &[4, rows], dtype, device)?
        .t()?
        .reshape(&[n])
}

/// Three steps on `device`: the parameter, exp_avg and exp_avg_sq.
fn run(
    device: &Device,
    pdtype: DType,
    gdtype: DType,
    n: usize,
    transposed: bool,
    seed: u64,
) -> Result<[Vec<f64>; 3]> {
    let p = Tensor::from_f64_slice(&amp_tensor::random::normals(seed, n), &[n], pdtype, device)?;
    let m = Tensor::zeros(&[n], DType::F32, device)?;
    let v = Tensor::zeros(&[n], DType::F32, device)?;
    for step in 1..=3u64 {
        let g = gradient(device, &gradient_values(n, seed, step), gdtype, transposed)?;
        ops::adamw_step(&p, &g, &m, &v, &hyper(step))?;
    }
    Ok([p.to_f64_vec()?, m.to_f64_vec()?, v.to_f64_vec()?])
}

/// The formula in f64, the parameter rounded to `pdtype` after each step.
fn exact(pdtype: DType, gdtype: DType, n: usize, seed: u64) -> [Vec<f64>; 3] {
    let mut p = rounded(&amp_tensor::random::normals(seed, n), pdtype);
    let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
    for step in 1..=3u64 {
        let h = hyper(step);
        let g = rounded(&gradient_values(n, seed, step), gdtype);
        let t = step as i32;
        let (bc1, bc2) = (1.0 - h.beta1.powi(t), 1.0 - h.beta2.powi(t));
        for i in 0..n {
            m[i] = h.beta1 * m[i] + (1.0 - h.beta1) * g[i];
            v[i] = h.beta2 * v[i] + (1.0 - h.beta2) * g[i] * g[i];
            let denom = v[i].sqrt() / bc2.sqrt() + h.eps;
            p[i] = p[i] * (1.0 - h.lr * h.weight_decay) - h.lr / bc1 * m[i] / denom;
        }
        p = rounded(&p, pdtype);
    }
    [p, m, v]
}

on_every_device!(
    fused_adamw_matches_the_exact_formula,
    |device: &Device| -> Result<()> {
        let scalar = amp_cpu::device_with_isa(amp_cpu::Isa::Scalar)?;
        for pdtype in FLOATS {
            for gdtype in FLOATS {
                for (i, &n) in [1usize, 17, 1028, 70_004].iter().enumerate() {
                    for transposed in [false, true] {
                        let seed = i as u64 + 1;
                        let case =
                            format!("param {pdtype} grad {gdtype} n={n} transposed={transposed}");
                        let [p, m, v] = run(device, pdtype, gdtype, n, transposed, seed)?;
                        let [ep, em, ev] = exact(pdtype, gdtype, n, seed);
                        let ptol = Tolerance::for_dtype(pdtype).scale(2.0);
                        let f32_tol = Tolerance::for_dtype(DType::F32);
                        let in_case = |e: amp_tensor::Error| {
                            amp_tensor::Error::invalid("adamw", format!("{case}: {e}"))
                        };
                        check_values(&p, &ep, ptol).map_err(in_case)?;
                        check_values(&m, &em, f32_tol).map_err(in_case)?;
                        check_values(&v, &ev, f32_tol).map_err(in_case)?;
                        // The fused kernels are bit-identical with the CPU's scalar path.
                        if device.backend_name() != "reference" && n < 2000 {
                            let [sp, sm, sv] = run(&scalar, pdtype, gdtype, n, transposed, seed)?;
                            let bits =
                                |x: &[f64]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                            assert_eq!(
                                (bits(&p), bits(&m), bits(&v)),
                                (bits(&sp), bits(&sm), bits(&sv)),
                                "{case}"
                            );
                        }
                    }
                }
            }
        }
        Ok(())
    }
);

on_every_device!(
    bad_adamw_arguments_are_errors_not_panics,
    |device: &Device| -> Result<()> {
        let z = |n: usize, dtype| Tensor::zeros(&[n], dtype, device);
        let (p, m, v) = (z(4, DType::F32)?, z(4, DType::F32)?, z(4, DType::F32)?);
        // A gradient of another length, f16 moments, a moment that is the parameter.
        assert!(ops::adamw_step(&p, &z(5, DType::F32)?, &m, &v, &hyper(1)).is_err());
        assert!(
            ops::adamw_step(&p, &z(4, DType::F32)?, &z(4, DType::F16)?, &v, &hyper(1)).is_err()
        );
        assert!(ops::adamw_step(&p, &z(4, DType::F32)?, &p, &v, &hyper(1)).is_err());
        let err = ops::adamw_step(&p, &z(4, DType::F32)?, &m, &v, &hyper(0)).unwrap_err();
        assert!(err.to_string().contains("adamw_step"), "{err}");
        Ok(())
    }
);
