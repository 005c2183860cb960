//! Autocast's casts are deferred casts, on every device: a `linear` under
//! autocast gives bitwise the output of the eager cast path; the f32 input,
//! weight and bias get f32 gradients straight from the f32 accumulation —
//! rounded to the region's dtype they are bitwise the cast path's, and they
//! are closer to the exact gradient (f64) than it is. Where
//! the backend reads the f32 weight through the cast (the CPU), no
//! low-precision copy is ever made (`amp-testkit/tests/deferred.rs`).

use amp_autocast::{autocast, cache_len, reset_stats, stats};
use amp_tensor::{ops, DType, Device, Error, Result, Tensor};
use amp_testkit::on_every_device;

fn leaf(t: Tensor) -> Result<Tensor> {
    t.set_requires_grad(true)?;
    Ok(t)
}

fn grad(t: &Tensor) -> Vec<f64> {
    t.grad().expect("a gradient").to_f64_vec().unwrap()
}

on_every_device!(
    linear_under_autocast_equals_the_cast_path_with_unrounded_f32_weight_gradients,
    |device: &Device| -> Result<()> {
        let (m, k, n) = (24, 70, 33);
        for dtype in [DType::BF16, DType::F16] {
            if device.kind() == amp_tensor::DeviceKind::Cuda
                && dtype == DType::BF16
                && !device.is_bf16_supported()
            {
                continue;
            }
            let x = leaf(Tensor::randn(&[m, k], DType::F32, device, 1)?)?;
            let w = leaf(Tensor::randn(&[n, k], DType::F32, device, 2)?)?;
            let b = leaf(Tensor::randn(&[n], DType::F32, device, 3)?)?;
            // An upstream gradient exactly representable in `dtype`.
            let g = Tensor::randn(&[m, n], dtype, device, 4)?;

            reset_stats();
            let y = {
                let _region = autocast(device.kind(), dtype)
                    .map_err(|e| Error::invalid("autocast", e.to_string()))?;
                let y = ops::linear(&x, &w, Some(&b))?;
                let s = stats();
                // x, w and b are cast (deferred) and, leaves that require grad, cached.
                assert_eq!(
                    (s.casts, s.cache_inserts, cache_len()),
                    (3, 3, 3),
                    "{dtype}: {s}"
                );
                assert_eq!((s.ops_low_precision, s.ops_f32), (1, 0), "{dtype}: {s}");
                y
            };
            assert_eq!(y.dtype(), dtype);
            y.backward_with(&g)?;

            // The cast path, by hand, with autocast off.
            let xc = leaf(x.detach().to_dtype(dtype)?)?;
            let wc = leaf(w.detach().to_dtype(dtype)?)?;
            let bc = leaf(b.detach().to_dtype(dtype)?)?;
            let want = ops::linear(&xc, &wc, Some(&bc))?;
            assert_eq!(y.to_f64_vec()?, want.to_f64_vec()?, "{dtype}: output");
            want.backward_with(&g)?;
            // Every f32 leaf (the input too) gets its gradient unrounded, in f32.
            let gx = x.grad().unwrap();
            assert_eq!(gx.dtype(), DType::F32);
            assert_eq!(
                gx.to_dtype(dtype)?.to_f64_vec()?,
                grad(&xc),
                "{dtype}: input gradient rounded"
            );

            let (gw, gb) = (w.grad().unwrap(), b.grad().unwrap());
            assert_eq!((gw.dtype(), gb.dtype()), (DType::F32, DType::F32));
            assert_eq!(
                gw.to_dtype(dtype)?.to_f64_vec()?,
                grad(&wc),
                "{dtype}: weight gradient rounded"
            );
            assert_eq!(
                gb.to_dtype(dtype)?.to_f64_vec()?,
                grad(&bc),
                "{dtype}: bias gradient rounded"
            );

            // The exact gradients of the computed function, in f64: dW = gᵀ·x̂, db = Σ g.
            let (gv, xr) = (g.to_f64_vec()?, xc.to_f64_vec()?);
            let exact_w: Vec<f64> = (0..n * k)
                .map(|jp| {
                    (0..m)
                        .map(|i| gv[i * n + jp / k] * xr[i * k + jp % k])
                        .sum()
                })
                .collect();
            let exact_b: Vec<f64> = (0..n)
                .map(|j| (0..m).map(|i| gv[i * n + j]).sum())
                .collect();
            let err = |got: &[f64], exact: &[f64]| -> f64 {
                got.iter().zip(exact).map(|(a, e)| (a - e).abs()).sum()
            };
            let (ours, cast) = (err(&grad(&w), &exact_w), err(&grad(&wc), &exact_w));
            assert!(
                ours * 10.0 < cast,
                "{dtype}: weight gradient error {ours} vs cast path {cast}"
            );
            let (ours, cast) = (err(&grad(&b), &exact_b), err(&grad(&bc), &exact_b));
            assert!(
                ours < cast,
                "{dtype}: bias gradient error {ours} vs cast path {cast}"
            );
        }
        Ok(())
    }
);

on_every_device!(
    linear_with_mixed_dtypes_outside_autocast_is_an_error,
    |device: &Device| -> Result<()> {
        let x = Tensor::randn(&[2, 3], DType::BF16, device, 0)?;
        let w = Tensor::randn(&[4, 3], DType::F32, device, 1)?;
        let err = ops::linear(&x, &w, None).unwrap_err();
        assert!(
            matches!(
                err,
                Error::DTypeMismatch {
                    op: "linear",
                    lhs: DType::BF16,
                    rhs: DType::F32
                }
            ),
            "{err}"
        );
        Ok(())
    }
);
