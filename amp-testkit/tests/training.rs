//! Whole ops through amp_tensor, forward AND backward, CPU vs reference: a
//! small MLP (linear, GELU, layer norm, linear) with softmax and
//! cross-entropy, in f32 and in mixed precision (f32 parameters cast to bf16
//! or f16 for the matmuls, as autocast does). Gradients are compared by
//! relative L2 error, since one-ulp forward differences move individual
//! low-precision gradient entries by more than one ulp.

use amp_tensor::ops::{self, GeluApprox};
use amp_tensor::{DType, Device, Error, Result, Tensor};
use amp_testkit::on_every_device;

fn rel_l2(a: &Tensor, b: &Tensor) -> Result<f64> {
    let (a, b) = (a.to_f64_vec()?, b.to_f64_vec()?);
    let num: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    Ok((num / den.max(1e-300)).sqrt())
}

/// Loss, logits softmax and the parameters' gradients of one step on `device`.
fn step(device: &Device, low: DType) -> Result<(Tensor, Tensor, Vec<Tensor>)> {
    let params: Vec<Tensor> = [
        (&[48usize, 20][..], 1u64),
        (&[48], 2),
        (&[48], 3),
        (&[48], 4),
        (&[10, 48], 5),
        (&[10], 6),
    ]
    .iter()
    .map(|(s, seed)| {
        let t = Tensor::randn(s, DType::F32, device, *seed)?.mul_scalar(0.3)?;
        t.set_requires_grad(true)?;
        Ok(t)
    })
    .collect::<Result<_>>()?;
    let x = Tensor::randn(&[32, 20], DType::F32, device, 7)?;
    let y = Tensor::randint(0, 10, &[32], device, 8)?;
    let c = |t: &Tensor| t.to_dtype(low);
    let h = ops::linear(&c(&x)?, &c(&params[0])?, Some(&c(&params[1])?))?.gelu(GeluApprox::None)?;
    let h = ops::layer_norm(
        &h.to_dtype(DType::F32)?,
        Some(&params[2]),
        Some(&params[3]),
        1e-5,
    )?;
    let logits =
        ops::linear(&c(&h)?, &c(&params[4])?, Some(&c(&params[5])?))?.to_dtype(DType::F32)?;
    let probs = ops::softmax(&logits, -1)?;
    let loss = ops::cross_entropy(&logits, &y)?.add(&probs.mul(&probs)?.mean_all()?)?;
    loss.backward()?;
    let grads = params
        .iter()
        .map(|p| {
            p.grad()
                .ok_or_else(|| Error::invalid("step", "missing grad"))
        })
        .collect::<Result<_>>()?;
    Ok((loss, probs, grads))
}

fn compare(device: &Device) -> Result<()> {
    for (low, loss_tol, grad_tol) in [
        (DType::F32, 1e-6, 1e-5),
        (DType::BF16, 2e-2, 5e-2),
        (DType::F16, 3e-3, 1e-2),
    ] {
        let (loss, probs, grads) = step(device, low)?;
        let (rloss, rprobs, rgrads) = step(&Device::reference(), low)?;
        let e = rel_l2(&loss, &rloss)?;
        assert!(
            e <= loss_tol,
            "{low}: loss {} vs {} (rel {e})",
            loss.scalar_f64()?,
            rloss.scalar_f64()?
        );
        let e = rel_l2(&probs, &rprobs)?;
        assert!(e <= loss_tol * 10.0, "{low}: softmax rel L2 {e}");
        for (i, (g, r)) in grads.iter().zip(&rgrads).enumerate() {
            assert_eq!(g.dtype(), DType::F32, "f32 parameters get f32 gradients");
            let e = rel_l2(g, r)?;
            assert!(
                e <= grad_tol,
                "{low}: grad of parameter {i} rel L2 {e} > {grad_tol}"
            );
        }
    }
    Ok(())
}

on_every_device!(
    mlp_forward_and_backward_match_reference,
    |device: &Device| -> Result<()> { compare(device) }
);
