//! f32 operands rounded to bf16/f16 while packing (`Backend::matmul_rounding_rhs`,
//! `Backend::linear` with an f32 weight): on every CPU path the result is
//! bit-identical to casting the f32 operand first and running the same-dtype
//! product — edge tiles, one and several depth blocks, row-major, transposed
//! and strided B, batches, every output dtype, the fused epilogue.

#[macro_use]
mod common;

use amp_tensor::{DType, Device, Error, Layout, Result, Storage, Tensor, UnaryOp};
use common::values;

const NARROW: [DType; 2] = [DType::BF16, DType::F16];

/// `[batch, r, c]` layout of a rank-2 or rank-3 tensor's view (batch 1 for rank 2).
fn as3(t: &Tensor) -> Layout {
    let (l, d) = (t.layout(), t.dims());
    if d.len() == 3 {
        return l.clone();
    }
    Layout::new(
        vec![1, d[0], d[1]],
        vec![0, l.strides()[0], l.strides()[1]],
        l.offset(),
    )
}

fn tensor(device: &Device, shape: &[usize], dtype: DType, seed: u64) -> Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_f64_slice(&values(n, seed, 1.5), shape, dtype, device)
}

/// Exact equality of two storages' values (no NaN among these inputs).
fn same(case: &str, got: &Storage, want: &Storage) -> Result<()> {
    let read = |s: &Storage| -> Result<Vec<f64>> {
        let h = s.host("test")?;
        Ok(h.read_f64(&Layout::contiguous(&[h.len()])))
    };
    let (g, w) = (read(got)?, read(want)?);
    if got.dtype() != want.dtype() || g != w {
        let bad = g.iter().zip(&w).position(|(a, b)| a != b);
        return Err(Error::invalid(
            "rounding",
            format!(
                "{case}: {} vs {} (first difference at {bad:?})",
                got.dtype(),
                want.dtype()
            ),
        ));
    }
    Ok(())
}

/// B operands of logical shape `[k, n]` (f32): row-major, transposed (a weight
/// `[n, k]` read as `weightᵀ`), and strided both ways (every other column of a wider matrix, transposed).
fn b_views(device: &Device, k: usize, n: usize, seed: u64) -> Result<Vec<(&'static str, Tensor)>> {
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

on_every_cpu_path!(
    matmul_with_an_f32_rhs_equals_the_product_with_the_cast_rhs,
    |device: &Device| -> Result<()> {
        let backend = device.backend();
        // (m, k, n): edge tiles, a deep product (several depth blocks), one short
        // and wide enough for the column schedule, and one for the parallel threshold.
        for (i, &(m, k, n)) in [
            (1, 1, 1),
            (5, 3, 7),
            (13, 37, 35),
            (33, 300, 65),
            (40, 600, 700),
            (300, 130, 290),
            // Narrow: the dot-product path reads B (f32) rounded too (and AMX tiles).
            (37, 600, 10),
            (70, 640, 10),
        ]
        .iter()
        .enumerate()
        {
            for dtype in NARROW {
                let a = tensor(device, &[m, k], dtype, 10 + i as u64)?;
                for (name, b) in b_views(device, k, n, 20 + i as u64)? {
                    let cast = b.to_dtype(dtype)?;
                    for out in [DType::F32, dtype] {
                        let case = format!("{dtype} x {name} f32 {m}x{k}x{n} -> {out}");
                        let (sa, sb, sc) = (a.storage(), b.storage(), cast.storage());
                        let got =
                            backend.matmul_rounding_rhs((&sa, &as3(&a)), (&sb, &as3(&b)), out)?;
                        let want = backend.matmul((&sa, &as3(&a)), (&sc, &as3(&cast)), out)?;
                        same(&case, &got, &want)?;
                    }
                }
            }
        }
        // Batched: [3, m, k] x [3, k, n], B f32.
        let a = tensor(device, &[3, 14, 37], DType::BF16, 1)?;
        let b = tensor(device, &[3, 37, 19], DType::F32, 2)?;
        let cast = b.to_dtype(DType::BF16)?;
        let (sa, sb, sc) = (a.storage(), b.storage(), cast.storage());
        let got = backend.matmul_rounding_rhs((&sa, a.layout()), (&sb, b.layout()), DType::BF16)?;
        let want = backend.matmul((&sa, a.layout()), (&sc, cast.layout()), DType::BF16)?;
        same("batched", &got, &want)
    }
);

on_every_cpu_path!(
    linear_with_an_f32_weight_and_bias_equals_linear_with_them_cast,
    |device: &Device| -> Result<()> {
        let backend = device.backend();
        // k ≤ 256 writes from per-block tiles; k = 300 takes the f32 product and the epilogue pass.
        for (i, &(m, k, n)) in [(3, 5, 7), (37, 64, 45), (64, 300, 33), (256, 200, 300)]
            .iter()
            .enumerate()
        {
            for dtype in NARROW {
                let x = tensor(device, &[m, k], dtype, 30 + i as u64)?;
                let w = tensor(device, &[n, k], DType::F32, 40 + i as u64)?;
                let b = tensor(device, &[n], DType::F32, 50 + i as u64)?;
                let (wc, bc) = (w.to_dtype(dtype)?, b.to_dtype(dtype)?);
                for act in [None, Some(UnaryOp::GeluTanh), Some(UnaryOp::Relu)] {
                    for out in [dtype, DType::F32] {
                        let case = format!("{dtype} {m}x{k}x{n} {act:?} -> {out}");
                        let (sx, sw, sb) = (x.storage(), w.storage(), b.storage());
                        let (swc, sbc) = (wc.storage(), bc.storage());
                        let got = backend.linear(
                            (&sx, x.layout()),
                            (&sw, w.layout()),
                            Some((&sb, b.layout())),
                            act,
                            out,
                        )?;
                        let want = backend.linear(
                            (&sx, x.layout()),
                            (&swc, wc.layout()),
                            Some((&sbc, bc.layout())),
                            act,
                            out,
                        )?;
                        same(&case, &got, &want)?;
                    }
                }
            }
        }
        Ok(())
    }
);

on_every_cpu_path!(
    a_wide_lhs_or_a_same_dtype_mismatch_is_an_error,
    |device: &Device| -> Result<()> {
        let backend = device.backend();
        let a = tensor(device, &[4, 5], DType::F32, 1)?;
        let b = tensor(device, &[5, 6], DType::BF16, 2)?;
        let (sa, sb) = (a.storage(), b.storage());
        // Only an f32 rhs is read rounded, and only to a narrower lhs.
        let err = backend
            .matmul_rounding_rhs((&sa, &as3(&a)), (&sb, &as3(&b)), DType::F32)
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::DTypeMismatch {
                    op: "matmul",
                    lhs: DType::F32,
                    rhs: DType::BF16
                }
            ),
            "{err}"
        );
        let err = backend
            .matmul((&sb, &as3(&b.t()?)), (&sa, &as3(&a.t()?)), DType::F32)
            .unwrap_err();
        assert!(matches!(err, Error::DTypeMismatch { .. }), "{err}");
        Ok(())
    }
);

on_every_cpu_path!(
    f32_products_of_narrow_inputs_match_the_reference,
    |device: &Device| -> Result<()> {
        let backend = device.backend();
        let reference = common::reference();
        // One depth block (written from per-block tiles, also in parallel) and two (AMX too).
        for (i, &(m, k, n)) in [(7, 33, 45), (300, 256, 290), (64, 600, 70)]
            .iter()
            .enumerate()
        {
            for dtype in NARROW {
                let a = tensor(device, &[k, m], dtype, 60 + i as u64)?.t()?;
                let b = tensor(device, &[k, n], dtype, 70 + i as u64)?;
                let (sa, sb) = (a.storage(), b.storage());
                let got = backend.matmul((&sa, &as3(&a)), (&sb, &as3(&b)), DType::F32)?;
                let got = Tensor::from_host(got.host("test")?.clone(), &[m, n], &reference)?;
                // The reference's f32 product of the same inputs (f64 accumulation).
                let want32 = {
                    let (ra, rb) = (a.to_device(&reference)?, b.to_device(&reference)?);
                    let (sa, sb) = (ra.storage(), rb.storage());
                    let s = reference.backend().matmul(
                        (&sa, &as3(&ra)),
                        (&sb, &as3(&rb)),
                        DType::F32,
                    )?;
                    Tensor::from_host(s.host("test")?.clone(), &[m, n], &reference)?
                };
                common::check(
                    &format!("{dtype} {m}x{k}x{n} -> f32"),
                    &got,
                    &want32,
                    common::tol(DType::F32).scale_abs((k as f64).sqrt() * 4.0),
                )?;
            }
        }
        Ok(())
    }
);

on_every_cpu_path!(
    overlapping_rows_of_a_match_the_reference,
    |device: &Device| -> Result<()> {
        // One row of A read 70 times (row stride 0, as a broadcast view): paths that
        // read A's rows in place must not assume they are disjoint.
        let backend = device.backend();
        let reference = common::reference();
        // (Depths past 512 reach the narrow AMX path, which reads rows in place.)
        for (i, &(k, n)) in [(64usize, 10usize), (640, 10), (300, 40)]
            .iter()
            .enumerate()
        {
            for dtype in [DType::BF16, DType::F16, DType::F32] {
                let a = tensor(device, &[1, k], dtype, 80 + i as u64)?;
                let b = tensor(device, &[k, n], dtype, 90 + i as u64)?;
                let la = Layout::new(vec![1, 70, k], vec![0, 0, 1], 0);
                let (sa, sb) = (a.storage(), b.storage());
                let got = backend.matmul((&sa, &la), (&sb, &as3(&b)), DType::F32)?;
                let got = Tensor::from_host(got.host("test")?.clone(), &[70, n], &reference)?;
                let (ra, rb) = (a.to_device(&reference)?, b.to_device(&reference)?);
                let (sa, sb) = (ra.storage(), rb.storage());
                let want = reference
                    .backend()
                    .matmul((&sa, &la), (&sb, &as3(&rb)), DType::F32)?;
                let want = Tensor::from_host(want.host("test")?.clone(), &[70, n], &reference)?;
                common::check(
                    &format!("{dtype} 70x{k}x{n}, A rows overlapping"),
                    &got,
                    &want,
                    common::tol(DType::F32).scale_abs((k as f64).sqrt() * 4.0),
                )?;
            }
        }
        Ok(())
    }
);
