//! The fused gradient unscale (`ops::non_finite_check_and_unscale_`) on every
//! device: infs and NaNs planted at random positions of contiguous and
//! strided gradients are always found and counted, every element becomes
//! exactly `x * inv_scale` computed in f32 (f64 for f64) and rounded once, and
//! the counts are of those results — a value that overflows when unscaled
//! counts as inf, so nothing non-finite is ever written unseen.

use amp_dtype::DType;
use amp_tensor::backend::{HostStorage, NonFiniteCount};
use amp_tensor::random::draw_u64;
use amp_tensor::{ops, Device, Layout, Result, Tensor};
use amp_testkit::on_every_device;

/// Values with inf/NaN planted at seeded random positions.
fn planted(n: usize, seed: u64) -> Vec<f64> {
    let mut v: Vec<f64> = amp_tensor::random::normals(seed, n)
        .iter()
        .map(|x| x * 1e3)
        .collect();
    let hits = (n / 50).max(usize::from(n > 0) * 2);
    for h in 0..hits as u64 {
        let at = (draw_u64(seed, 1000 + h) % n as u64) as usize;
        v[at] = match draw_u64(seed, 5000 + h) % 3 {
            0 => f64::INFINITY,
            1 => f64::NEG_INFINITY,
            _ => f64::NAN,
        };
    }
    v
}

/// `x * inv_scale` in the gradient's precision, rounded once to its dtype.
fn scaled(x: f64, inv_scale: f32, dtype: DType) -> f64 {
    let v = if dtype == DType::F64 {
        x * inv_scale as f64
    } else {
        (x as f32 * inv_scale) as f64
    };
    HostStorage::from_f64(dtype, &[v]).get_f64(0)
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

/// The views a case checks: the whole buffer, every other element, a transpose.
fn views(device: &Device, data: &[f64], dtype: DType) -> Result<Vec<(String, Tensor, Tensor)>> {
    let n = data.len();
    let whole = || Tensor::from_f64_slice(data, &[n], dtype, device);
    let mut out = vec![("contiguous".to_string(), whole()?, whole()?)];
    if n >= 8 {
        let t = whole()?;
        // Elements 1, 3, 5, …: a stride-2 view.
        let pairs = t.narrow(0, 0, n / 2 * 2)?.reshape(&[n / 2, 2])?;
        out.push(("every other".into(), pairs.narrow(1, 1, 1)?.squeeze(1)?, t));
        let t = whole()?;
        let rows = n / 4;
        let v = t.narrow(0, 0, rows * 4)?.reshape(&[rows, 4])?.t()?;
        out.push(("transposed".into(), v, t));
    }
    Ok(out)
}

on_every_device!(
    every_planted_inf_and_nan_is_counted_and_values_scale_exactly,
    |device: &Device| -> Result<()> {
        for dtype in [DType::F32, DType::BF16, DType::F16, DType::F64] {
            // 65536: f16 values of ~1e3 overflow when scaled (the counts see it).
            for (s, &inv_scale) in [1.0 / 65536.0, 0.3f32, 1e-30, 2.0, 65536.0]
                .iter()
                .enumerate()
            {
                for (c, &n) in [0usize, 1, 17, 1000, 70_001].iter().enumerate() {
                    let values = HostStorage::from_f64(dtype, &planted(n, (s * 10 + c) as u64))
                        .read_f64(&Layout::contiguous(&[n]));
                    for (kind, view, whole) in views(device, &values, dtype)? {
                        let before = whole.to_f64_vec()?;
                        let logical = view.to_f64_vec()?;
                        let counts = ops::non_finite_check_and_unscale_(&[&view], inv_scale)?;
                        let mut want = NonFiniteCount::default();
                        for &x in &logical {
                            let y = scaled(x, inv_scale, dtype);
                            want.inf += y.is_infinite() as usize;
                            want.nan += y.is_nan() as usize;
                        }
                        let case = format!("{dtype} n={n} {kind} inv_scale={inv_scale}");
                        assert_eq!(counts, vec![want], "{case}");
                        let got = view.to_f64_vec()?;
                        for (i, (&g, &x)) in got.iter().zip(&logical).enumerate() {
                            let e = scaled(x, inv_scale, dtype);
                            assert!(same(g, e), "{case}: [{i}] {x} -> {g}, want {e}");
                        }
                        // Elements outside the view are untouched.
                        if kind == "every other" {
                            assert!(same(whole.to_f64_vec()?[0], before[0]), "{case}");
                        }
                    }
                }
            }
        }
        Ok(())
    }
);

on_every_device!(
    a_value_that_overflows_when_unscaled_is_counted,
    |device: &Device| -> Result<()> {
        // A scale at the f32 floor (2^-126): 1/scale = 2^126, and a finite gradient of 4
        // becomes inf. PyTorch counts before multiplying and reports nothing.
        let inv_scale = 2f32.powi(126);
        let g = Tensor::from_vec(vec![4.0f32, 1e-40, 0.0], &[3], device)?;
        let h = Tensor::ones(&[3], DType::F16, device)?;
        let counts = ops::non_finite_check_and_unscale_(&[&g, &h], inv_scale)?;
        assert_eq!(
            counts,
            vec![
                NonFiniteCount { inf: 1, nan: 0 },
                NonFiniteCount { inf: 3, nan: 0 }
            ]
        );
        Ok(())
    }
);

on_every_device!(
    many_tensors_in_one_call_get_one_count_each,
    |device: &Device| -> Result<()> {
        let a = Tensor::from_vec(vec![1.0f32, f32::NAN, 3.0], &[3], device)?;
        let b = Tensor::from_vec(
            vec![amp_dtype::bf16::INFINITY, amp_dtype::bf16::from_f32(2.0)],
            &[2],
            device,
        )?;
        let c = Tensor::full(&[5], 4.0, DType::F16, device)?;
        // The same view twice is processed once; two views of one storage both are.
        let whole = Tensor::full(&[6], 8.0, DType::F32, device)?;
        let (left, right) = (whole.narrow(0, 0, 3)?, whole.narrow(0, 3, 3)?);
        let counts = ops::non_finite_check_and_unscale_(&[&a, &b, &c, &c, &left, &right], 0.5)?;
        assert_eq!(
            counts,
            vec![
                NonFiniteCount { inf: 0, nan: 1 },
                NonFiniteCount { inf: 1, nan: 0 },
                NonFiniteCount::default(),
                NonFiniteCount::default(),
                NonFiniteCount::default(),
                NonFiniteCount::default(),
            ]
        );
        assert_eq!(
            c.to_vec::<amp_dtype::f16>()?,
            vec![amp_dtype::f16::from_f32(2.0); 5]
        );
        assert_eq!(whole.to_vec::<f32>()?, vec![4.0; 6]);
        // Integer tensors are an error naming the op, and nothing is changed.
        let i = Tensor::from_vec(vec![1i64, 2], &[2], device)?;
        let err = ops::non_finite_check_and_unscale_(&[&a, &i], 0.5).unwrap_err();
        assert!(
            err.to_string().contains("non_finite_check_and_unscale"),
            "{err}"
        );
        Ok(())
    }
);
