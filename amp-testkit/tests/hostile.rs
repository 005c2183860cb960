//! Hostile inputs on the CPU backend, on every instruction-set path: rows of
//! softmax with inf and NaN follow PyTorch exactly as the reference does, and
//! a buffer larger than the machine is an out-of-memory error, not an abort.

use amp_tensor::{ops, DType, Device, Error, Result, Tensor};
use amp_testkit::{on_every_device, FLOATS};

on_every_device!(
    softmax_of_non_finite_rows_agrees_with_the_reference,
    |device: &Device| -> Result<()> {
        let inf = f64::INFINITY;
        let rows: [&[f64]; 5] = [
            &[1.0, inf, 2.0],
            &[1.0, f64::NAN, 2.0],
            &[-inf, -inf, -inf],
            &[0.0, -inf, 0.0, 1.0],
            &[-inf, 3.0],
        ];
        for dtype in FLOATS {
            for row in rows {
                let x = Tensor::from_f64_slice(row, &[1, row.len()], dtype, device)?;
                let r = x.to_device(&Device::reference())?;
                for log in [false, true] {
                    let (got, want) = if log {
                        (ops::log_softmax(&x, -1)?, ops::log_softmax(&r, -1)?)
                    } else {
                        (ops::softmax(&x, -1)?, ops::softmax(&r, -1)?)
                    };
                    let (got, want) = (got.to_f64_vec()?, want.to_f64_vec()?);
                    for (g, w) in got.iter().zip(&want) {
                        let same =
                            (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-2 * w.abs() || g == w;
                        assert!(
                            same,
                            "{dtype} log={log} {row:?}: {got:?} vs reference {want:?}"
                        );
                    }
                }
            }
            // Cross-entropy with a +inf logit is NaN, as in PyTorch.
            let logits = Tensor::from_f64_slice(&[1.0, inf, 2.0], &[1, 3], dtype, device)?;
            let targets = Tensor::from_vec(vec![0i64], &[1], device)?;
            let loss = ops::cross_entropy(&logits.to_dtype(DType::F32)?, &targets)?;
            assert!(loss.scalar_f64()?.is_nan(), "{dtype}");
        }
        Ok(())
    }
);

on_every_device!(
    a_buffer_larger_than_the_machine_is_an_error,
    |device: &Device| -> Result<()> {
        for dtype in FLOATS {
            let err = Tensor::zeros(&[1 << 40], dtype, device).unwrap_err();
            assert!(matches!(err, Error::OutOfMemory { .. }), "{err}");
            let err = device.backend().full(1 << 40, 0.0, dtype).unwrap_err();
            assert!(matches!(err, Error::OutOfMemory { .. }), "{err}");
        }
        Ok(())
    }
);
