//! Backend kernels against the f64 reference backend, op by op, on every
//! device: unary and binary elementwise ops with broadcasting, reductions,
//! softmax and layer norm, indexing, and f32 products without TF32. Casts,
//! fills and fp8 are in `casts.rs`. (Written first for the CUDA backend; run
//! on every device through the shared suite.)

use amp_tensor::backend::{BinaryOp, ReduceOp, UnaryOp};
use amp_tensor::ops;
use amp_tensor::{DType, Device, Layout, Result, Tensor};
use amp_testkit::{assert_close, check_values, input, on_every_device, on_ref, Tolerance};

const FLOATS: [DType; 4] = [DType::F32, DType::F16, DType::BF16, DType::F64];

on_every_device!(unary_ops_match_reference, |d: &Device| -> Result<()> {
    let ops = [
        (UnaryOp::Neg, false),
        (UnaryOp::Exp, false),
        (UnaryOp::Log, true),
        (UnaryOp::Sqrt, true),
        (UnaryOp::Rsqrt, true),
        (UnaryOp::Abs, false),
        (UnaryOp::Relu, false),
        (UnaryOp::GeluErf, false),
        (UnaryOp::GeluTanh, false),
        (UnaryOp::Tanh, false),
        (UnaryOp::Sigmoid, false),
        (UnaryOp::Silu, false),
        (UnaryOp::Erf, false),
        (UnaryOp::Recip, true),
        (UnaryOp::Sign, false),
        (UnaryOp::Powf(1.7), true),
        (
            UnaryOp::Affine {
                mul: 0.3,
                add: -1.25,
            },
            false,
        ),
        (UnaryOp::Identity, false),
        (UnaryOp::NonZero, false),
    ];
    for dtype in FLOATS {
        for (i, &(op, positive)) in ops.iter().enumerate() {
            // A transposed (strided) input on odd iterations.
            let base = input(&[7, 33], dtype, d, i as u64, positive)?;
            let x = if i % 2 == 1 { base.t()? } else { base };
            let got = x.with_view(|v| d.backend().unary(op, v, dtype))??;
            let got = Tensor::from_host(
                d.backend().to_host((&got, &Layout::contiguous(x.dims())))?,
                x.dims(),
                &Device::reference(),
            )?;
            let xr = on_ref(&x)?;
            let want = xr.with_view(|v| Device::reference().backend().unary(op, v, dtype))??;
            let want =
                Tensor::from_host(want.host("test")?.clone(), x.dims(), &Device::reference())?;
            // f32 transcendental functions are within a few ulps (the f32
            // preset's relative part), plus its absolute part for cancellation.
            let tol = Tolerance::for_dtype(dtype);
            assert_close(&got, &want, tol)
                .map_err(|e| amp_tensor::Error::invalid("unary", format!("{op:?} {dtype}: {e}")))?;
        }
    }
    // Integer unary ops (neg, abs, affine) in i64.
    let xi = Tensor::from_vec(vec![-3i64, 0, 7, -1 << 40], &[4], d)?;
    assert_eq!(xi.neg()?.to_vec::<i64>()?, vec![3, 0, -7, 1 << 40]);
    assert_eq!(xi.abs()?.to_vec::<i64>()?, vec![3, 0, 7, 1 << 40]);
    Ok(())
});

on_every_device!(
    binary_ops_with_broadcasting_match_reference,
    |d: &Device| -> Result<()> {
        let ops = [
            BinaryOp::Add,
            BinaryOp::Sub,
            BinaryOp::Mul,
            BinaryOp::Div,
            BinaryOp::Maximum,
            BinaryOp::Minimum,
            BinaryOp::Eq,
            BinaryOp::Gt,
            BinaryOp::Lt,
            BinaryOp::ReluBackward,
            BinaryOp::GeluErfBackward,
            BinaryOp::GeluTanhBackward,
            BinaryOp::TanhBackward,
            BinaryOp::SigmoidBackward,
            BinaryOp::SiluBackward,
        ];
        let shape = [3usize, 4, 5];
        for dtype in FLOATS {
            let a = input(&[3, 1, 5], dtype, d, 1, false)?;
            let b = input(&[4, 5], dtype, d, 2, false)?;
            // Make some elements equal for Eq.
            let b = ops::cat(
                &[&b.narrow(0, 0, 3)?, &a.narrow(0, 0, 1)?.reshape(&[1, 5])?],
                0,
            )?;
            let la = a.layout().broadcast_to("t", &shape)?;
            let lb = b.layout().broadcast_to("t", &shape)?;
            let (ar, br) = (on_ref(&a)?, on_ref(&b)?);
            for op in ops {
                let out = if matches!(op, BinaryOp::Eq | BinaryOp::Gt | BinaryOp::Lt) {
                    DType::Bool
                } else {
                    dtype
                };
                let got = {
                    let (sa, sb) = (a.materialised_input()?, b.materialised_input()?);
                    d.backend()
                        .binary(op, (sa.storage(), &la), (sb.storage(), &lb), out)?
                };
                let got = d.backend().to_host((&got, &Layout::contiguous(&shape)))?;
                let want = {
                    let (sa, sb) = (ar.materialised_input()?, br.materialised_input()?);
                    Device::reference().backend().binary(
                        op,
                        (sa.storage(), &la),
                        (sb.storage(), &lb),
                        out,
                    )?
                };
                let want = want.host("test")?.clone();
                let tol = if dtype == DType::F32 {
                    Tolerance::for_dtype(DType::F32)
                } else {
                    Tolerance::for_dtype(out)
                };
                check_values(
                    &got.read_f64(&Layout::contiguous(&[got.len()])),
                    &want.read_f64(&Layout::contiguous(&[want.len()])),
                    tol,
                )
                .map_err(|e| {
                    amp_tensor::Error::invalid("binary", format!("{op:?} {dtype}: {e}"))
                })?;
            }
        }
        // Contiguous same-shape arithmetic through the Tensor API is exact for + - * / in f32.
        let x = input(&[64, 65], DType::F32, d, 5, false)?;
        let y = input(&[64, 65], DType::F32, d, 6, true)?;
        for (got, want) in [
            (x.add(&y)?, on_ref(&x)?.add(&on_ref(&y)?)?),
            (x.sub(&y)?, on_ref(&x)?.sub(&on_ref(&y)?)?),
            (x.mul(&y)?, on_ref(&x)?.mul(&on_ref(&y)?)?),
            (x.div(&y)?, on_ref(&x)?.div(&on_ref(&y)?)?),
        ] {
            assert_close(&got, &want, Tolerance::EXACT)?;
        }
        Ok(())
    }
);

on_every_device!(reductions_match_reference, |d: &Device| -> Result<()> {
    let shape = [3usize, 4, 37];
    let dim_sets: [&[usize]; 7] = [&[], &[0], &[1], &[2], &[0, 2], &[1, 2], &[0, 1, 2]];
    let ops = [
        ReduceOp::Sum,
        ReduceOp::Mean,
        ReduceOp::Max,
        ReduceOp::Min,
        ReduceOp::ArgMax,
        ReduceOp::ArgMin,
    ];
    for dtype in [DType::F32, DType::F16, DType::BF16, DType::F64, DType::I64] {
        let base = Tensor::randn(&[4, 3, 37], DType::F64, d, 9)?
            .mul_scalar(10.0)?
            .to_dtype(dtype)?;
        let x = base.transpose(0, 1)?; // strided [3, 4, 37]
        let xr = on_ref(&x)?;
        for dims in dim_sets {
            for op in ops {
                let out = match op {
                    ReduceOp::ArgMax | ReduceOp::ArgMin => DType::I64,
                    _ => dtype,
                };
                let got = x.with_view(|v| d.backend().reduce(op, v, dims, out))??;
                let out_shape: Vec<usize> = shape
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| if dims.contains(&i) { 1 } else { s })
                    .collect();
                let got = d
                    .backend()
                    .to_host((&got, &Layout::contiguous(&out_shape)))?;
                let want =
                    xr.with_view(|v| Device::reference().backend().reduce(op, v, dims, out))??;
                let want = want.host("t")?.clone();
                let count: usize = dims.iter().map(|&i| shape[i]).product();
                let tol = match (dtype, op) {
                    (_, ReduceOp::ArgMax | ReduceOp::ArgMin | ReduceOp::Max | ReduceOp::Min) => {
                        Tolerance::EXACT
                    }
                    (DType::F32, _) => Tolerance::F32_SUM,
                    (DType::I64, _) => Tolerance::EXACT,
                    (dt, _) => Tolerance::for_dtype(dt).scale_abs((count as f64).sqrt() * 10.0),
                };
                let (gv, wv) = (
                    got.read_f64(&Layout::contiguous(&[got.len()])),
                    want.read_f64(&Layout::contiguous(&[want.len()])),
                );
                // Mean of i64 truncates; argmax ties cannot occur with these draws except in i64/bf16 — compare values then.
                check_values(&gv, &wv, tol).map_err(|e| {
                    amp_tensor::Error::invalid(
                        "reduce",
                        format!("{op:?} {dtype} dims {dims:?}: {e}"),
                    )
                })?;
            }
        }
    }
    // NaN propagates through max and is the argmax (first one).
    let v = Tensor::from_vec(vec![1.0f32, f32::NAN, 5.0, f32::NAN], &[1, 4], d)?;
    let (m, i) = v.max_dim(1, false)?;
    assert!(m.to_vec::<f32>()?[0].is_nan());
    assert_eq!(i.to_vec::<i64>()?, vec![1]);
    // A long row (one block per row, many elements per thread).
    let long = Tensor::randn(&[2, 100_003], DType::F32, d, 4)?;
    assert_close(
        &long.sum_dim(1, false)?,
        &on_ref(&long)?.sum_dim(1, false)?,
        // 100,003 terms: ten times the absolute part.
        Tolerance::F32_SUM.scale_abs(10.0),
    )
});

on_every_device!(
    softmax_and_layer_norm_match_reference,
    |d: &Device| -> Result<()> {
        for dtype in FLOATS {
            let tol = Tolerance::for_dtype(dtype);
            let x = Tensor::randn(&[6, 129], DType::F32, d, 1)?
                .mul_scalar(3.0)?
                .to_dtype(dtype)?;
            let xr = on_ref(&x)?;
            for dim in [-1isize, 0] {
                assert_close(&ops::softmax(&x, dim)?, &ops::softmax(&xr, dim)?, tol)?;
                assert_close(
                    &ops::log_softmax(&x, dim)?,
                    &ops::log_softmax(&xr, dim)?,
                    tol,
                )?;
            }
            let w = Tensor::randn(&[129], DType::F32, d, 2)?.to_dtype(dtype)?;
            let b = Tensor::randn(&[129], DType::F32, d, 3)?.to_dtype(dtype)?;
            let (wr, br) = (on_ref(&w)?, on_ref(&b)?);
            assert_close(
                &ops::layer_norm(&x, Some(&w), Some(&b), 1e-5)?,
                &ops::layer_norm(&xr, Some(&wr), Some(&br), 1e-5)?,
                tol.scale(2.0),
            )?;
            assert_close(
                &ops::layer_norm(&x, None, None, 1e-5)?,
                &ops::layer_norm(&xr, None, None, 1e-5)?,
                tol.scale(2.0),
            )?;
        }
        // -inf entries (masked logits) and a fully masked row.
        let m = Tensor::from_vec(
            vec![
                0.0f32,
                f32::NEG_INFINITY,
                1.0,
                f32::NEG_INFINITY,
                f32::NEG_INFINITY,
                f32::NEG_INFINITY,
            ],
            &[2, 3],
            d,
        )?;
        let got = ops::softmax(&m, -1)?.to_vec::<f32>()?;
        let want = ops::softmax(&on_ref(&m)?, -1)?.to_vec::<f32>()?;
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g.is_nan() && w.is_nan()) || (g - w).abs() < 1e-6,
                "{got:?} vs {want:?}"
            );
        }
        Ok(())
    }
);

on_every_device!(
    cat_index_select_gather_scatter_match_reference,
    |d: &Device| -> Result<()> {
        for dtype in [DType::F32, DType::F16, DType::BF16, DType::F64, DType::I64] {
            let a = Tensor::randn(&[3, 4], DType::F32, d, 1)?
                .mul_scalar(5.0)?
                .to_dtype(dtype)?;
            let b = Tensor::randn(&[5, 3], DType::F32, d, 2)?
                .mul_scalar(5.0)?
                .to_dtype(dtype)?
                .t()?; // [3, 5] strided
            let (ar, br) = (on_ref(&a)?, on_ref(&b)?);
            assert_close(
                &ops::cat(&[&a, &b], 1)?,
                &ops::cat(&[&ar, &br], 1)?,
                Tolerance::EXACT,
            )?;
            assert_close(
                &ops::cat(&[&a.t()?, &b.t()?], 0)?,
                &ops::cat(&[&ar.t()?, &br.t()?], 0)?,
                Tolerance::EXACT,
            )?;
            let idx = Tensor::from_vec(vec![2i64, 0, 2, 1], &[4], d)?;
            let idx_r = on_ref(&idx)?;
            assert_close(
                &a.index_select(0, &idx)?,
                &ar.index_select(0, &idx_r)?,
                Tolerance::EXACT,
            )?;
            assert_close(
                &a.index_select(1, &idx)?,
                &ar.index_select(1, &idx_r)?,
                Tolerance::EXACT,
            )?;
            let g = Tensor::from_vec(vec![3i64, 0, 1, 1, 2, 2], &[3, 2], d)?;
            assert_close(
                &a.gather(1, &g)?,
                &ar.gather(1, &on_ref(&g)?)?,
                Tolerance::EXACT,
            )?;
        }
        // scatter_add (the backward of gather) with repeated indices.
        for dtype in [DType::F32, DType::F16, DType::BF16, DType::F64] {
            let src = Tensor::randn(&[3, 6], DType::F32, d, 7)?.to_dtype(dtype)?;
            let idx = Tensor::from_vec(
                vec![0i64, 1, 1, 3, 3, 3, 2, 2, 0, 0, 0, 1, 3, 2, 1, 0, 0, 0],
                &[3, 6],
                d,
            )?;
            let (sr, ir) = (on_ref(&src)?, on_ref(&idx)?);
            let got = idx.with_view(|vi| {
                src.with_view(|vs| d.backend().scatter_add(&[3, 4], 1, vi, vs, dtype))
            })???;
            let got = d.backend().to_host((&got, &Layout::contiguous(&[3, 4])))?;
            let want = ir.with_view(|vi| {
                sr.with_view(|vs| {
                    Device::reference()
                        .backend()
                        .scatter_add(&[3, 4], 1, vi, vs, dtype)
                })
            })???;
            let want = want.host("t")?.clone();
            check_values(
                &got.read_f64(&Layout::contiguous(&[12])),
                &want.read_f64(&Layout::contiguous(&[12])),
                Tolerance::for_dtype(dtype),
            )?;
        }
        // Embedding-style lookup and its gradient end to end.
        let w = Tensor::randn(&[10, 8], DType::F32, d, 3)?;
        w.set_requires_grad(true)?;
        let ids = Tensor::from_vec(vec![1i64, 4, 4, 9], &[2, 2], d)?;
        ops::embedding(&ids, &w)?.sum_all()?.backward()?;
        let wr = on_ref(&w)?.detach();
        wr.set_requires_grad(true)?;
        ops::embedding(&on_ref(&ids)?, &wr)?.sum_all()?.backward()?;
        assert_close(
            &w.grad().expect("grad"),
            &wr.grad().expect("grad"),
            Tolerance::EXACT,
        )
    }
);

on_every_device!(
    matmul_f32_has_no_tf32_and_half_types_are_close,
    |d: &Device| -> Result<()> {
        // K = 512 sums: TF32 (10-bit mantissa) would miss rel 1e-5 by two orders of magnitude.
        let a = Tensor::randn(&[2, 33, 512], DType::F32, d, 1)?;
        let b = Tensor::randn(&[2, 512, 47], DType::F32, d, 2)?;
        let want = ops::matmul(&on_ref(&a)?, &on_ref(&b)?)?;
        let got = ops::matmul(&a, &b)?;
        let (gv, wv) = (got.to_f64_vec()?, want.to_f64_vec()?);
        let scale = wv.iter().map(|x| x.abs()).fold(0.0, f64::max);
        let worst = gv
            .iter()
            .zip(&wv)
            .map(|(g, w)| (g - w).abs() / scale)
            .fold(0.0, f64::max);
        assert!(
            worst < 1e-5,
            "f32 matmul max error {worst:e} relative to max |C|: TF32 or a wrong kernel"
        );
        check_values(
            &gv,
            &wv,
            // K = 4096 unit normals: a sum of magnitude ~64, so 100× the absolute part.
            Tolerance::for_dtype(DType::F32).scale_abs(100.0),
        )?;
        // Transposed operands (linear), broadcast batch, vectors, f64.
        let x = Tensor::randn(&[5, 64], DType::F32, d, 3)?;
        let w = Tensor::randn(&[7, 64], DType::F32, d, 4)?;
        let bias = Tensor::randn(&[7], DType::F32, d, 5)?;
        let y = ops::linear(&x, &w, Some(&bias))?;
        assert_close(
            &y,
            &ops::linear(&on_ref(&x)?, &on_ref(&w)?, Some(&on_ref(&bias)?))?,
            Tolerance::for_dtype(DType::F32).scale_abs(10.0),
        )?;
        let bb = Tensor::randn(&[64, 3], DType::F32, d, 6)?;
        let batched = Tensor::randn(&[4, 5, 64], DType::F32, d, 7)?;
        assert_close(
            &batched.matmul(&bb)?,
            &on_ref(&batched)?.matmul(&on_ref(&bb)?)?,
            Tolerance::for_dtype(DType::F32).scale_abs(10.0),
        )?;
        let v = Tensor::randn(&[64], DType::F32, d, 8)?;
        assert_close(
            &x.matmul(&v)?,
            &on_ref(&x)?.matmul(&on_ref(&v)?)?,
            Tolerance::for_dtype(DType::F32).scale_abs(10.0),
        )?;
        assert_close(
            &v.matmul(&bb)?,
            &on_ref(&v)?.matmul(&on_ref(&bb)?)?,
            Tolerance::for_dtype(DType::F32).scale_abs(10.0),
        )?;
        let x64 = x.to_dtype(DType::F64)?;
        let w64 = w.to_dtype(DType::F64)?;
        assert_close(
            &x64.matmul(&w64.t()?)?,
            &on_ref(&x64)?.matmul(&on_ref(&w64)?.t()?)?,
            Tolerance::for_dtype(DType::F64),
        )?;
        // bf16 and f16 within their presets' relative part of the exact product rounded once.
        for dtype in [DType::BF16, DType::F16] {
            let rel = Tolerance::for_dtype(dtype).rel;
            let a = Tensor::randn(&[3, 40, 64], DType::F32, d, 9)?.to_dtype(dtype)?;
            let b = Tensor::randn(&[3, 64, 24], DType::F32, d, 10)?
                .to_dtype(dtype)?
                .transpose(1, 2)?
                .contiguous()?
                .transpose(1, 2)?;
            let got = ops::matmul(&a, &b)?;
            assert_eq!(got.dtype(), dtype);
            let want = ops::matmul(&on_ref(&a)?, &on_ref(&b)?)?;
            assert_close(&got, &want, Tolerance { rel, abs: rel })?;
        }
        // Empty and K = 0 products.
        let z = ops::matmul(
            &Tensor::zeros(&[3, 0], DType::F32, d)?,
            &Tensor::zeros(&[0, 2], DType::F32, d)?,
        )?;
        assert_eq!(z.to_vec::<f32>()?, vec![0.0; 6]);
        Ok(())
    }
);
