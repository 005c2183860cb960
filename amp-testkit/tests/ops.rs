//! Every elementwise, reduction, normalisation and indexing kernel on the CPU
//! backend — at the default level and at every level this CPU has — against
//! the f64 reference backend, for f32, bf16 and f16 (and f64/i64 where ops use
//! them), on contiguous, transposed, narrowed and broadcast views of odd,
//! empty and single-element shapes.

use amp_tensor::ops::{self, GeluApprox};
use amp_tensor::{DType, Device, Result, Tensor};
use amp_testkit::{check, on_every_device, views, Tolerance, FLOATS, SHAPES};

type Op = fn(&Tensor) -> Result<Tensor>;

fn unary_ops() -> Vec<(&'static str, Op, bool)> {
    // (name, op, needs a positive input)
    vec![
        ("neg", |t| t.neg(), false),
        ("exp", |t| t.exp(), false),
        ("log", |t| t.log(), true),
        ("sqrt", |t| t.sqrt(), true),
        ("rsqrt", |t| t.rsqrt(), true),
        ("abs", |t| t.abs(), false),
        ("relu", |t| t.relu(), false),
        ("gelu", |t| t.gelu(GeluApprox::None), false),
        ("gelu_tanh", |t| t.gelu(GeluApprox::Tanh), false),
        ("tanh", |t| t.tanh(), false),
        ("sigmoid", |t| t.sigmoid(), false),
        ("silu", |t| t.silu(), false),
        ("erf", |t| t.erf(), false),
        ("reciprocal", |t| t.recip(), false),
        ("sign", |t| t.sign(), false),
        ("pow2", |t| t.powf(2.0), false),
        ("pow1.5", |t| t.powf(1.5), true),
        ("affine", |t| t.affine(0.3, -1.25), false),
        ("div_scalar", |t| t.div_scalar(3.0), false),
    ]
}

on_every_device!(unary_ops_match_reference, |device: &Device| -> Result<()> {
    for dtype in FLOATS {
        for (si, shape) in SHAPES.iter().enumerate() {
            for (kind, x) in views(device, shape, dtype, si as u64, 2.0)? {
                for (name, op, positive) in unary_ops() {
                    let x = if positive {
                        x.abs()?.add_scalar(0.1)?
                    } else {
                        x.clone()
                    };
                    let got = op(&x)?;
                    let want = op(&x.to_device(&Device::reference())?)?;
                    check(
                        &format!("{name} {dtype} {shape:?} {kind}"),
                        &got,
                        &want,
                        Tolerance::for_dtype(dtype),
                    )?;
                }
            }
        }
    }
    Ok(())
});

type BinOp = fn(&Tensor, &Tensor) -> Result<Tensor>;

on_every_device!(
    binary_ops_with_broadcasting_match_reference,
    |device: &Device| -> Result<()> {
        let ops: [(&str, BinOp); 9] = [
            ("add", |a, b| a.add(b)),
            ("sub", |a, b| a.sub(b)),
            ("mul", |a, b| a.mul(b)),
            ("div", |a, b| a.div(b)),
            ("maximum", |a, b| a.maximum(b)),
            ("minimum", |a, b| a.minimum(b)),
            ("eq", |a, b| a.eq(b)),
            ("gt", |a, b| a.gt(b)),
            ("lt", |a, b| a.lt(b)),
        ];
        for dtype in FLOATS {
            for (si, shape) in SHAPES.iter().enumerate() {
                let r = shape.len();
                for (kind, a) in views(device, shape, dtype, 10 + si as u64, 1.5)? {
                    // Right operands: same shape (half of them equal to `a`), the last dim only, a column.
                    let same = a.relu()?;
                    let mut rhs = vec![("same", same)];
                    rhs.push(("row", Tensor::randn(&shape[r - 1..], dtype, device, 99)?));
                    if r >= 2 {
                        let mut col = shape.to_vec();
                        col[r - 1] = 1;
                        rhs.push(("column", Tensor::randn(&col, dtype, device, 98)?));
                    }
                    for (rkind, b) in &rhs {
                        let (ra, rb) = (
                            a.to_device(&Device::reference())?,
                            b.to_device(&Device::reference())?,
                        );
                        for (name, op) in ops {
                            let got = op(&a, b)?;
                            let want = op(&ra, &rb)?;
                            check(
                                &format!("{name} {dtype} {shape:?} {kind} with {rkind}"),
                                &got,
                                &want,
                                Tolerance::for_dtype(got.dtype()),
                            )?;
                        }
                        let cond = a.gt(b)?;
                        let got = ops::where_cond(&cond, &a, b)?;
                        let want =
                            ops::where_cond(&cond.to_device(&Device::reference())?, &ra, &rb)?;
                        check(
                            &format!("where {dtype} {shape:?} {kind} with {rkind}"),
                            &got,
                            &want,
                            Tolerance::EXACT,
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
);

on_every_device!(
    mixed_dtypes_promote_and_other_dtypes_match_reference,
    |device: &Device| -> Result<()> {
        let a = Tensor::randn(&[5, 9], DType::BF16, device, 1)?;
        let b = Tensor::randn(&[5, 9], DType::F16, device, 2)?;
        let (ra, rb) = (
            a.to_device(&Device::reference())?,
            b.to_device(&Device::reference())?,
        );
        check(
            "bf16 + f16 -> f32",
            &a.add(&b)?,
            &ra.add(&rb)?,
            Tolerance::for_dtype(DType::F32),
        )?;
        // f64 and i64 take the generic path: identical to the reference.
        let x = Tensor::randn(&[4, 7], DType::F64, device, 3)?;
        let rx = x.to_device(&Device::reference())?;
        check("f64 exp", &x.exp()?, &rx.exp()?, Tolerance::EXACT)?;
        check(
            "f64 sum",
            &x.sum_dims(&[1], false)?,
            &rx.sum_dims(&[1], false)?,
            Tolerance::EXACT,
        )?;
        check(
            "f64 matmul",
            &x.matmul(&x.t()?)?,
            &rx.matmul(&rx.t()?)?,
            Tolerance::EXACT,
        )?;
        let i = Tensor::randint(-5, 5, &[3, 4], device, 4)?;
        let ri = i.to_device(&Device::reference())?;
        check("i64 add", &i.add(&i)?, &ri.add(&ri)?, Tolerance::EXACT)?;
        check(
            "i64 sum",
            &i.sum_dims(&[0], false)?,
            &ri.sum_dims(&[0], false)?,
            Tolerance::EXACT,
        )?;
        check(
            "i64 to f32",
            &i.to_dtype(DType::F32)?,
            &ri.to_dtype(DType::F32)?,
            Tolerance::EXACT,
        )?;
        Ok(())
    }
);

on_every_device!(
    casts_are_bit_exact_with_reference,
    |device: &Device| -> Result<()> {
        let mut v: Vec<f64> = amp_testkit::values(3000, 7, 1e3);
        v.extend([
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            65504.0,
            65520.0,
            1e-8,
            -1e-40,
            3.4e38,
            1e39,
            0.0,
            -0.0,
        ]);
        let n = v.len();
        for src in [
            DType::F64,
            DType::F32,
            DType::BF16,
            DType::F16,
            DType::F8E4M3,
            DType::F8E5M2,
        ] {
            let x = Tensor::from_f64_slice(&v, &[n], src, device)?;
            for (kind, view) in [
                ("contiguous", x.clone()),
                ("strided", x.narrow(0, 1, n - 1)?.reshape(&[n - 1])?),
            ] {
                let rx = view.to_device(&Device::reference())?;
                for dst in [
                    DType::F64,
                    DType::F32,
                    DType::BF16,
                    DType::F16,
                    DType::F8E4M3,
                    DType::F8E5M2,
                    DType::I64,
                    DType::Bool,
                ] {
                    if dst == DType::I64 && !src.is_float() {
                        continue;
                    }
                    let got = view.to_dtype(dst)?;
                    let want = rx.to_dtype(dst)?;
                    check(
                        &format!("cast {src} -> {dst} {kind}"),
                        &got,
                        &want,
                        Tolerance::EXACT,
                    )?;
                }
            }
        }
        Ok(())
    }
);

on_every_device!(
    bias_gradient_sums_over_leading_dims_match_reference,
    |device: &Device| -> Result<()> {
        // Large enough for the parallel column split (cols > 1024, rows·cols > 64 Ki).
        for dtype in FLOATS {
            let x = Tensor::randn(&[3, 100, 2500], dtype, device, 77)?;
            let rx = x.to_device(&Device::reference())?;
            for dims in [&[0usize][..], &[0, 1]] {
                check(
                    &format!("sum {dtype} dims {dims:?}"),
                    &x.sum_dims(dims, false)?,
                    &rx.sum_dims(dims, false)?,
                    Tolerance::for_dtype(dtype),
                )?;
                check(
                    &format!("mean {dtype} dims {dims:?}"),
                    &x.mean_dims(dims, false)?,
                    &rx.mean_dims(dims, false)?,
                    Tolerance::for_dtype(dtype),
                )?;
            }
        }
        Ok(())
    }
);

on_every_device!(
    reductions_match_reference,
    |device: &Device| -> Result<()> {
        for dtype in FLOATS {
            for (si, shape) in SHAPES.iter().enumerate() {
                let r = shape.len();
                let mut dim_sets: Vec<Vec<usize>> = (0..r).map(|d| vec![d]).collect();
                dim_sets.push((0..r).collect());
                if r == 3 {
                    dim_sets.push(vec![0, 2]);
                    dim_sets.push(vec![0, 1]);
                }
                for (kind, x) in views(device, shape, dtype, 20 + si as u64, 3.0)? {
                    let rx = x.to_device(&Device::reference())?;
                    for dims in &dim_sets {
                        let case = format!("{dtype} {shape:?} {kind} dims {dims:?}");
                        check(
                            &format!("sum {case}"),
                            &x.sum_dims(dims, false)?,
                            &rx.sum_dims(dims, false)?,
                            Tolerance::for_dtype(dtype),
                        )?;
                        check(
                            &format!("mean {case}"),
                            &x.mean_dims(dims, true)?,
                            &rx.mean_dims(dims, true)?,
                            Tolerance::for_dtype(dtype),
                        )?;
                    }
                    for d in 0..r {
                        if shape[d] == 0 {
                            continue;
                        }
                        let (v, i) = x.max_dim(d as isize, false)?;
                        let (rv, ri) = rx.max_dim(d as isize, false)?;
                        check(
                            &format!("max {dtype} {shape:?} {kind} dim {d}"),
                            &v,
                            &rv,
                            Tolerance::EXACT,
                        )?;
                        check(
                            &format!("argmax {dtype} {shape:?} {kind} dim {d}"),
                            &i,
                            &ri,
                            Tolerance::EXACT,
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
);

on_every_device!(
    softmax_and_log_softmax_match_reference,
    |device: &Device| -> Result<()> {
        for dtype in FLOATS {
            for (si, shape) in SHAPES.iter().enumerate() {
                for (kind, x) in views(device, shape, dtype, 30 + si as u64, 4.0)? {
                    let rx = x.to_device(&Device::reference())?;
                    for dim in [-1isize, 0] {
                        let case = format!("{dtype} {shape:?} {kind} dim {dim}");
                        check(
                            &format!("softmax {case}"),
                            &ops::softmax(&x, dim)?,
                            &ops::softmax(&rx, dim)?,
                            Tolerance::for_dtype(dtype),
                        )?;
                        check(
                            &format!("log_softmax {case}"),
                            &ops::log_softmax(&x, dim)?,
                            &ops::log_softmax(&rx, dim)?,
                            Tolerance::for_dtype(dtype),
                        )?;
                    }
                }
            }
        }
        // Rows holding inf or NaN behave as on the reference.
        let x = Tensor::from_f64_slice(
            &[
                1.0,
                f64::INFINITY,
                2.0,
                0.5,
                f64::NAN,
                1.0,
                f64::NEG_INFINITY,
                0.0,
                3.0,
            ],
            &[3, 3],
            DType::F32,
            device,
        )?;
        let rx = x.to_device(&Device::reference())?;
        check(
            "softmax non-finite",
            &ops::softmax(&x, -1)?,
            &ops::softmax(&rx, -1)?,
            Tolerance::for_dtype(DType::F32),
        )?;
        check(
            "log_softmax non-finite",
            &ops::log_softmax(&x, -1)?,
            &ops::log_softmax(&rx, -1)?,
            Tolerance::for_dtype(DType::F32),
        )?;
        Ok(())
    }
);

on_every_device!(
    layer_norm_matches_reference,
    |device: &Device| -> Result<()> {
        for dtype in FLOATS {
            for (si, shape) in SHAPES.iter().enumerate() {
                let n = shape[shape.len() - 1];
                let w = Tensor::randn(&[n], dtype, device, 41)?;
                let b = Tensor::randn(&[n], dtype, device, 42)?;
                let (rw, rb) = (
                    w.to_device(&Device::reference())?,
                    b.to_device(&Device::reference())?,
                );
                for (kind, x) in views(device, shape, dtype, 40 + si as u64, 2.0)? {
                    let rx = x.add_scalar(1.5)?.to_device(&Device::reference())?;
                    let x = x.add_scalar(1.5)?;
                    for (affine, wv, bv, rwv, rbv) in [
                        ("none", None, None, None, None),
                        ("weight", Some(&w), None, Some(&rw), None),
                        ("both", Some(&w), Some(&b), Some(&rw), Some(&rb)),
                    ] {
                        let got = ops::layer_norm(&x, wv, bv, 1e-5)?;
                        let want = ops::layer_norm(&rx, rwv, rbv, 1e-5)?;
                        check(
                            &format!("layer_norm {affine} {dtype} {shape:?} {kind}"),
                            &got,
                            &want,
                            Tolerance::for_dtype(dtype),
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
);

on_every_device!(
    indexing_kernels_match_reference,
    |device: &Device| -> Result<()> {
        for dtype in FLOATS {
            for (si, shape) in [&[3usize, 5][..], &[2, 4, 7], &[1, 1], &[6, 0]]
                .iter()
                .enumerate()
            {
                let r = shape.len();
                for (kind, x) in views(device, shape, dtype, 50 + si as u64, 1.0)? {
                    let rx = x.to_device(&Device::reference())?;
                    for dim in 0..r {
                        let case = format!("{dtype} {shape:?} {kind} dim {dim}");
                        // cat with a second view of different length along dim, in the same dtype.
                        let mut other_shape = shape.to_vec();
                        other_shape[dim] += 2;
                        let y = Tensor::randn(&other_shape, dtype, device, 7)?;
                        let ry = y.to_device(&Device::reference())?;
                        check(
                            &format!("cat {case}"),
                            &ops::cat(&[&x, &y, &x], dim as isize)?,
                            &ops::cat(&[&rx, &ry, &rx], dim as isize)?,
                            Tolerance::EXACT,
                        )?;
                        if shape[dim] == 0 {
                            continue;
                        }
                        let picks: Vec<i64> = (0..9).map(|i| (i * 7 % shape[dim]) as i64).collect();
                        let idx = Tensor::from_vec(picks, &[9], device)?;
                        let ridx = idx.to_device(&Device::reference())?;
                        check(
                            &format!("index_select {case}"),
                            &x.index_select(dim as isize, &idx)?,
                            &rx.index_select(dim as isize, &ridx)?,
                            Tolerance::EXACT,
                        )?;
                        let n: usize = shape.iter().product();
                        let g: Vec<i64> =
                            (0..n).map(|i| ((i * 5 + 3) % shape[dim]) as i64).collect();
                        let gidx = Tensor::from_vec(g, shape, device)?;
                        let rgidx = gidx.to_device(&Device::reference())?;
                        check(
                            &format!("gather {case}"),
                            &x.gather(dim as isize, &gidx)?,
                            &rx.gather(dim as isize, &rgidx)?,
                            Tolerance::EXACT,
                        )?;
                    }
                }
            }
            // scatter_add and embedding through their autograd: many duplicate indices.
            let w = Tensor::randn(&[10, 6], DType::F32, device, 60)?;
            w.set_requires_grad(true)?;
            let rw = w.detach().to_device(&Device::reference())?;
            rw.set_requires_grad(true)?;
            let ids: Vec<i64> = (0..40).map(|i| (i * i % 10) as i64).collect();
            let idx = Tensor::from_vec(ids, &[8, 5], device)?;
            let ridx = idx.to_device(&Device::reference())?;
            let up = Tensor::randn(&[8, 5, 6], DType::F32, device, 61)?;
            let rup = up.to_device(&Device::reference())?;
            let wc = w.to_dtype(dtype)?;
            let rwc = rw.to_dtype(dtype)?;
            let out = ops::embedding(&idx, &wc)?;
            let rout = ops::embedding(&ridx, &rwc)?;
            check(&format!("embedding {dtype}"), &out, &rout, Tolerance::EXACT)?;
            out.to_dtype(DType::F32)?.mul(&up)?.sum_all()?.backward()?;
            rout.to_dtype(DType::F32)?
                .mul(&rup)?
                .sum_all()?
                .backward()?;
            check(
                &format!("embedding backward (scatter_add) {dtype}"),
                &w.grad().unwrap(),
                &rw.grad().unwrap(),
                Tolerance::for_dtype(DType::F32),
            )?;
        }
        Ok(())
    }
);

on_every_device!(
    layer_norm_of_a_low_precision_input_with_f32_parameters,
    |device: &Device| -> Result<()> {
        // What a CPU autocast region passes layer_norm: a bf16/f16 input and the
        // f32 master weight and bias. PyTorch's mixed type: computed in f32, the
        // result rounded once to the input's dtype.
        for dtype in [DType::BF16, DType::F16] {
            let x = Tensor::randn(&[5, 33], DType::F32, device, 1)?.to_dtype(dtype)?;
            let w = Tensor::randn(&[33], DType::F32, device, 2)?;
            let b = Tensor::randn(&[33], DType::F32, device, 3)?;
            for t in [&x, &w, &b] {
                t.set_requires_grad(true)?;
            }
            let y = ops::layer_norm(&x, Some(&w), Some(&b), 1e-5)?;
            assert_eq!(y.dtype(), dtype);
            // The reference: the f64 backend in f32 on the same values, rounded once.
            let r = Device::reference();
            let want = ops::layer_norm(
                &x.to_device(&r)?.to_dtype(DType::F32)?,
                Some(&w.to_device(&r)?),
                Some(&b.to_device(&r)?),
                1e-5,
            )?
            .to_dtype(dtype)?;
            check(
                &format!("mixed layer_norm {dtype}"),
                &y,
                &want,
                Tolerance::for_dtype(dtype),
            )?;
            // Gradients: the input's in its dtype, the parameters' in f32.
            y.to_dtype(DType::F32)?.sum_all()?.backward()?;
            assert_eq!(x.grad().map(|g| g.dtype()), Some(dtype));
            assert_eq!(w.grad().map(|g| g.dtype()), Some(DType::F32));
            assert_eq!(b.grad().map(|g| g.dtype()), Some(DType::F32));
            // Σ over rows of g = 1: the bias gradient is the row count.
            assert!(b
                .grad()
                .unwrap()
                .to_f64_vec()?
                .iter()
                .all(|&v| (v - 5.0).abs() < 1e-4));
        }
        // Other mixtures are still refused.
        let x = Tensor::randn(&[2, 4], DType::F32, device, 4)?;
        let w16 = Tensor::ones(&[4], DType::F16, device)?;
        assert!(ops::layer_norm(&x, Some(&w16), None, 1e-5).is_err());
        Ok(())
    }
);

on_every_device!(
    layer_norm_gradients_match_an_f64_evaluation,
    |device: &Device| -> Result<()> {
        // The CPU backend's fused backward (one pass per row, weight and bias
        // gradients summed over fixed row blocks), and the composed one
        // elsewhere, against the same op in f64 on the reference backend from
        // the same rounded values. Shapes: fewer rows than one block, many
        // blocks, and enough elements for the parallel path; row lengths
        // shorter than, a multiple of, and between multiples of the 8 lanes
        // the CPU kernel sums over.
        let r = Device::reference();
        let f64_on_ref = |t: &Tensor| -> Result<Tensor> {
            let c = t.detach().to_device(&r)?.to_dtype(DType::F64)?;
            c.set_requires_grad(true)?;
            Ok(c)
        };
        for dtype in FLOATS {
            for (si, shape) in [&[4usize, 7][..], &[6, 21], &[3, 70, 48], &[64, 40, 32]]
                .iter()
                .enumerate()
            {
                let n = shape[shape.len() - 1];
                let rows = shape.iter().product::<usize>() / n;
                let seed = 70 + 3 * si as u64;
                for (kind, x) in views(device, shape, dtype, seed, 2.0)? {
                    for affine in ["none", "weight", "both"] {
                        let x = x.add_scalar(0.5)?.detach();
                        x.set_requires_grad(true)?;
                        let w = Tensor::randn(&[n], dtype, device, seed + 1)?;
                        let b = Tensor::randn(&[n], dtype, device, seed + 2)?;
                        w.set_requires_grad(true)?;
                        b.set_requires_grad(true)?;
                        let up = Tensor::randn(shape, dtype, device, seed + 3)?;
                        let (wv, bv) = match affine {
                            "none" => (None, None),
                            "weight" => (Some(&w), None),
                            _ => (Some(&w), Some(&b)),
                        };
                        ops::layer_norm(&x, wv, bv, 1e-5)?
                            .mul(&up)?
                            .sum_all()?
                            .backward()?;
                        let (rx, rw, rb, rup) = (
                            f64_on_ref(&x)?,
                            f64_on_ref(&w)?,
                            f64_on_ref(&b)?,
                            f64_on_ref(&up)?,
                        );
                        let (rwv, rbv) = match affine {
                            "none" => (None, None),
                            "weight" => (Some(&rw), None),
                            _ => (Some(&rw), Some(&rb)),
                        };
                        ops::layer_norm(&rx, rwv, rbv, 1e-5)?
                            .mul(&rup)?
                            .sum_all()?
                            .backward()?;
                        let case = format!("layer_norm backward {affine} {dtype} {shape:?} {kind}");
                        // dx: a difference of O(|g·w|) terms, each rounded in
                        // the dtype on the composed path: a few units of the
                        // preset's absolute part.
                        let preset = Tolerance::for_dtype(dtype);
                        check(
                            &format!("{case}: x"),
                            &x.grad().unwrap(),
                            &rx.grad().unwrap().to_dtype(dtype)?,
                            preset.scale_abs(8.0),
                        )?;
                        // Sums over the rows: the error of a sum grows like √rows.
                        let sums = preset.scale_abs(8.0 * (rows as f64).sqrt());
                        if affine != "none" {
                            check(
                                &format!("{case}: weight"),
                                &w.grad().unwrap(),
                                &rw.grad().unwrap().to_dtype(dtype)?,
                                sums,
                            )?;
                        }
                        if affine == "both" {
                            check(
                                &format!("{case}: bias"),
                                &b.grad().unwrap(),
                                &rb.grad().unwrap().to_dtype(dtype)?,
                                sums,
                            )?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
);
