//! Deferred casts (`Tensor::to_dtype_deferred`, what autocast's casts are) on
//! every device: a product that reads an f32 operand through a deferred
//! cast gives bit for bit what it gives with an eager cast — forward,
//! gradients, the fused epilogue, edge tiles, deep products, transposed,
//! strided and broadcast operands, batches — and where the device's backend
//! fuses the cast ([`amp_tensor::backend::Backend::fuses_cast`]: the CPU's products)
//! the low-precision copy is never made.

use amp_dtype::DType;
use amp_tensor::ops::{self, Activation, GeluApprox};
use amp_tensor::{Device, Error, Result, Tensor};
use amp_testkit::{on_every_device, values};

const NARROW: [DType; 2] = [DType::BF16, DType::F16];

fn tensor(device: &Device, shape: &[usize], dtype: DType, seed: u64) -> Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_f64_slice(&values(n, seed, 1.5), shape, dtype, device)
}

/// Bitwise equality of two tensors' values (no NaN among these inputs).
fn same(case: &str, got: &Tensor, want: &Tensor) -> Result<()> {
    let (g, w) = (got.to_f64_vec()?, want.to_f64_vec()?);
    if got.dtype() != want.dtype() || got.dims() != want.dims() || g != w {
        let bad = g.iter().zip(&w).position(|(a, b)| a != b);
        return Err(Error::invalid(
            "deferred",
            format!(
                "{case}: {} {:?} vs {} {:?} (first difference at {bad:?})",
                got.dtype(),
                got.dims(),
                want.dtype(),
                want.dims()
            ),
        ));
    }
    Ok(())
}

/// True when `device` reads `op`'s operand `operand` through a deferred f32 → `to` cast.
fn fused(device: &Device, op: &str, operand: usize, to: DType) -> bool {
    device.backend().fuses_cast(op, operand, DType::F32, to)
}

/// f32 right operands of logical shape `[k, n]`: row-major, transposed (a
/// weight `[n, k]` read as `weightᵀ`), and strided both ways.
fn rhs_views(
    device: &Device,
    k: usize,
    n: usize,
    seed: u64,
) -> Result<Vec<(&'static str, Tensor)>> {
    Ok(vec![
        ("row-major", tensor(device, &[k, n], DType::F32, seed)?),
        (
            "transposed",
            tensor(device, &[n, k], DType::F32, seed + 1)?.t()?,
        ),
        (
            "strided",
            tensor(device, &[n, 2 * k], DType::F32, seed + 2)?
                .reshape(&[n, k, 2])?
                .narrow(2, 0, 1)?
                .squeeze(2)?
                .t()?,
        ),
    ])
}

on_every_device!(
    matmul_through_a_deferred_cast_equals_the_eager_cast,
    |device: &Device| -> Result<()> {
        // Edge tiles, a deep product (several depth blocks), short and wide, and
        // large enough for the CPU's parallel schedules.
        for (i, &(m, k, n)) in [(3, 5, 7), (37, 64, 45), (8, 700, 100), (260, 70, 300)]
            .iter()
            .enumerate()
        {
            for dtype in NARROW {
                let a = tensor(device, &[m, k], dtype, 10 * i as u64)?;
                for (kind, b) in rhs_views(device, k, n, 10 * i as u64 + 1)? {
                    let deferred = b.to_dtype_deferred(dtype)?;
                    let got = ops::matmul(&a, &deferred)?;
                    let want = ops::matmul(&a, &b.to_dtype(dtype)?)?;
                    same(&format!("{dtype} {m}x{k}x{n} {kind}"), &got, &want)?;
                    // The copy exists only where the backend does not read through it.
                    assert_eq!(
                        deferred.is_deferred(),
                        fused(device, "matmul", 1, dtype),
                        "{dtype} {kind}: materialised where fused or the reverse"
                    );
                }
                // A batch against a broadcast right operand.
                let a3 = tensor(device, &[3, m, k], dtype, 7)?;
                let b = tensor(device, &[k, n], DType::F32, 8)?;
                let got = ops::matmul(&a3, &b.to_dtype_deferred(dtype)?)?;
                same(
                    &format!("{dtype} batched"),
                    &got,
                    &ops::matmul(&a3, &b.to_dtype(dtype)?)?,
                )?;
            }
        }
        Ok(())
    }
);

on_every_device!(
    linear_through_deferred_casts_equals_the_eager_casts,
    |device: &Device| -> Result<()> {
        for (i, &(m, k, n)) in [(3, 5, 7), (37, 64, 45), (64, 300, 33), (256, 200, 300)]
            .iter()
            .enumerate()
        {
            for dtype in NARROW {
                let seed = 20 * i as u64;
                let x = tensor(device, &[m, k], dtype, seed)?;
                let w = tensor(device, &[n, k], DType::F32, seed + 1)?;
                let b = tensor(device, &[n], DType::F32, seed + 2)?;
                let case = format!("{dtype} {m}x{k}x{n}");
                // Forward (without autograd the activation runs in the epilogue).
                {
                    let _no_grad = amp_tensor::no_grad();
                    for act in [
                        None,
                        Some(Activation::Gelu(GeluApprox::Tanh)),
                        Some(Activation::Relu),
                    ] {
                        let run = |w: &Tensor, b: &Tensor| match act {
                            None => ops::linear(&x, w, Some(b)),
                            Some(a) => ops::linear_act(&x, w, Some(b), a),
                        };
                        let (wd, bd) = (w.to_dtype_deferred(dtype)?, b.to_dtype_deferred(dtype)?);
                        let got = run(&wd, &bd)?;
                        same(
                            &format!("{case} {act:?}"),
                            &got,
                            &run(&w.to_dtype(dtype)?, &b.to_dtype(dtype)?)?,
                        )?;
                        assert_eq!(
                            wd.is_deferred(),
                            fused(device, "linear", 1, dtype),
                            "{case}"
                        );
                        assert_eq!(
                            bd.is_deferred(),
                            fused(device, "linear", 2, dtype),
                            "{case}"
                        );
                    }
                }
                // Forward and backward: the f32 weight and bias get the same f32 gradients.
                let grads = |deferred: bool| -> Result<Vec<Tensor>> {
                    let (w, b) = (w.detach(), b.detach());
                    w.set_requires_grad(true)?;
                    b.set_requires_grad(true)?;
                    let xg = x.detach();
                    xg.set_requires_grad(true)?;
                    let cast = |t: &Tensor| {
                        if deferred {
                            t.to_dtype_deferred(dtype)
                        } else {
                            t.to_dtype(dtype)
                        }
                    };
                    let (wc, bc) = (cast(&w)?, cast(&b)?);
                    let y = ops::linear(&xg, &wc, Some(&bc))?;
                    y.to_dtype(DType::F32)?.sum_all()?.backward()?;
                    if deferred {
                        assert_eq!(
                            wc.is_deferred(),
                            fused(device, "linear", 1, dtype),
                            "{case} after backward"
                        );
                    }
                    Ok(vec![
                        y,
                        xg.grad().expect("x grad"),
                        w.grad().expect("w grad"),
                        b.grad().expect("b grad"),
                    ])
                };
                let (got, want) = (grads(true)?, grads(false)?);
                for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                    same(&format!("{case} output/grad {j}"), g, w)?;
                }
                assert_eq!(
                    got[2].dtype(),
                    DType::F32,
                    "{case}: the f32 weight's gradient is f32"
                );
            }
        }
        Ok(())
    }
);

on_every_device!(
    a_broadcast_left_operand_with_a_deferred_right_one,
    |device: &Device| -> Result<()> {
        // One row of A read 70 times (row stride 0): paths that read A's rows in
        // place must not assume they are disjoint. Depths past 512 reach the CPU's
        // narrow AMX path.
        for (i, &(k, n)) in [(64usize, 10usize), (640, 10), (300, 40)]
            .iter()
            .enumerate()
        {
            for dtype in NARROW {
                let row = tensor(device, &[1, k], dtype, 30 + i as u64)?;
                let a = row.broadcast_to(&[70, k])?;
                let b = tensor(device, &[k, n], DType::F32, 40 + i as u64)?;
                let got = ops::matmul(&a, &b.to_dtype_deferred(dtype)?)?;
                same(
                    &format!("{dtype} k={k} n={n}"),
                    &got,
                    &ops::matmul(&a, &b.to_dtype(dtype)?)?,
                )?;
            }
        }
        Ok(())
    }
);

on_every_device!(
    a_deferred_cast_reads_and_records_as_a_cast,
    |device: &Device| -> Result<()> {
        let w = tensor(device, &[4, 6], DType::F32, 50)?;
        w.set_requires_grad(true)?;
        for dtype in NARROW {
            let d = w.to_dtype_deferred(dtype)?;
            assert!(d.is_deferred() && d.dtype() == dtype && d.dims() == w.dims());
            assert_eq!(d.grad_fn_name(), Some("to"));
            assert_eq!(d.grad_dtype(), DType::F32);
            // Any other op computes it once, to exactly the eager cast's values.
            same(
                &format!("{dtype} exp"),
                &d.exp()?,
                &w.to_dtype(dtype)?.exp()?,
            )?;
            assert!(!d.is_deferred());
            // A view of a deferred cast reads the computed copy.
            let e = w.to_dtype_deferred(dtype)?;
            same(
                &format!("{dtype} view"),
                &e.t()?.contiguous()?,
                &w.to_dtype(dtype)?.t()?.contiguous()?,
            )?;
        }
        Ok(())
    }
);
