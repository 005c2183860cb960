//! GEMM on every CPU path against the reference: edge tiles (M, N, K not
//! multiples of any tile or block), K = 0 and 1, K = 4096 (accumulation
//! accuracy), batched and broadcast operands, transposed and narrowed views,
//! and `linear` with a transposed weight.

use amp_tensor::{ops, DType, Device, Result, Tensor};
use amp_testkit::{check, on_every_device, Tolerance, FLOATS};

/// A dot product of length k of unit normals: f32 accumulation error grows like √k.
fn dot_tol(dtype: DType, k: usize) -> Tolerance {
    Tolerance::for_dtype(dtype).scale_abs((k as f64).sqrt().max(1.0) * 4.0)
}

/// (m, k, n): tiles are 4×16, 6×16 and 12×32, blocks KC = 256 (512 for AMX), MC ≤ 192.
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (0, 3, 4),
    (3, 0, 4),
    (5, 1, 7),
    (12, 32, 32),
    (13, 17, 35),
    (25, 31, 33),
    (64, 300, 65),
    (7, 4096, 9),
    // Deep with a small output: the CPU splits the depth in four parts.
    (40, 5000, 33),
    (200, 40, 97),
    (45, 1100, 70),
    // Rows 1 KiB apart: the product's row stride gets one cache line more.
    (40, 300, 256),
];

on_every_device!(
    matmul_edge_tiles_match_reference,
    |device: &Device| -> Result<()> {
        for dtype in FLOATS {
            for (i, &(m, k, n)) in SHAPES.iter().enumerate() {
                let a = Tensor::randn(&[m, k], dtype, device, i as u64)?;
                let b = Tensor::randn(&[k, n], dtype, device, 100 + i as u64)?;
                let (ra, rb) = (
                    a.to_device(&Device::reference())?,
                    b.to_device(&Device::reference())?,
                );
                check(
                    &format!("matmul {dtype} {m}x{k}x{n}"),
                    &a.matmul(&b)?,
                    &ra.matmul(&rb)?,
                    dot_tol(dtype, k),
                )?;
                // A transposed (stored [k, m]) and B transposed (a weight stored [n, k]).
                let at = Tensor::randn(&[k, m], dtype, device, 200 + i as u64)?.t()?;
                let bt = Tensor::randn(&[n, k], dtype, device, 300 + i as u64)?.t()?;
                let (rat, rbt) = (
                    at.to_device(&Device::reference())?,
                    bt.to_device(&Device::reference())?,
                );
                check(
                    &format!("matmul A^T B^T {dtype} {m}x{k}x{n}"),
                    &at.matmul(&bt)?,
                    &rat.matmul(&rbt)?,
                    dot_tol(dtype, k),
                )?;
            }
        }
        Ok(())
    }
);

on_every_device!(
    batched_broadcast_and_narrowed_matmul_match_reference,
    |device: &Device| -> Result<()> {
        for dtype in FLOATS {
            // [3, m, k] x [k, n]: B broadcast over the batch (stride 0).
            let a = Tensor::randn(&[3, 14, 37], dtype, device, 1)?;
            let b = Tensor::randn(&[37, 19], dtype, device, 2)?;
            let (ra, rb) = (
                a.to_device(&Device::reference())?,
                b.to_device(&Device::reference())?,
            );
            check(
                &format!("batched broadcast {dtype}"),
                &a.matmul(&b)?,
                &ra.matmul(&rb)?,
                dot_tol(dtype, 37),
            )?;
            // [2, 1, m, k] x [3, k, n] broadcast batch dims, with narrowed (strided) views.
            let a = Tensor::randn(&[2, 1, 9, 50], dtype, device, 3)?.narrow(-1, 5, 40)?;
            let b = Tensor::randn(&[3, 40, 45], dtype, device, 4)?.narrow(-1, 3, 33)?;
            let (ra, rb) = (
                a.to_device(&Device::reference())?,
                b.to_device(&Device::reference())?,
            );
            check(
                &format!("broadcast batch narrowed {dtype}"),
                &a.matmul(&b)?,
                &ra.matmul(&rb)?,
                dot_tol(dtype, 40),
            )?;
            // An empty batch: an empty product of the right shape.
            let a = Tensor::randn(&[0, 5, 40], dtype, device, 8)?;
            let b = Tensor::randn(&[0, 40, 33], dtype, device, 9)?;
            let c = a.matmul(&b)?;
            assert_eq!(c.dims(), &[0, 5, 33]);
            assert_eq!(c.to_f64_vec()?.len(), 0);
            // Vector operands.
            let v = Tensor::randn(&[40], dtype, device, 5)?;
            let rv = v.to_device(&Device::reference())?;
            check(
                &format!("vector-vector {dtype}"),
                &v.matmul(&v)?,
                &rv.matmul(&rv)?,
                dot_tol(dtype, 40),
            )?;
            // A batch large enough to run batches in parallel.
            let a = Tensor::randn(&[8, 40, 64], dtype, device, 6)?;
            let b = Tensor::randn(&[8, 64, 72], dtype, device, 7)?;
            let (ra, rb) = (
                a.to_device(&Device::reference())?,
                b.to_device(&Device::reference())?,
            );
            check(
                &format!("parallel batches {dtype}"),
                &a.matmul(&b)?,
                &ra.matmul(&rb)?,
                dot_tol(dtype, 64),
            )?;
        }
        Ok(())
    }
);

on_every_device!(
    linear_forward_and_backward_match_reference,
    |device: &Device| -> Result<()> {
        for dtype in FLOATS {
            let x = Tensor::randn(&[33, 70], dtype, device, 10)?;
            let w = Tensor::randn(&[45, 70], dtype, device, 11)?;
            let b = Tensor::randn(&[45], dtype, device, 12)?;
            let g = Tensor::randn(&[33, 45], dtype, device, 13)?;
            let run = |x: &Tensor, w: &Tensor, b: &Tensor, g: &Tensor| -> Result<Vec<Tensor>> {
                let (x, w, b) = (x.detach(), w.detach(), b.detach());
                for t in [&x, &w, &b] {
                    t.set_requires_grad(true)?;
                }
                let y = ops::linear(&x, &w, Some(&b))?;
                y.backward_with(g)?;
                Ok(vec![
                    y,
                    x.grad().unwrap(),
                    w.grad().unwrap(),
                    b.grad().unwrap(),
                ])
            };
            let got = run(&x, &w, &b, &g)?;
            let r = |t: &Tensor| t.to_device(&Device::reference());
            let want = run(&r(&x)?, &r(&w)?, &r(&b)?, &r(&g)?)?;
            for (name, (a, e)) in ["y", "dx", "dw", "db"].iter().zip(got.iter().zip(&want)) {
                check(&format!("linear {name} {dtype}"), a, e, dot_tol(dtype, 70))?;
            }
        }
        Ok(())
    }
);

on_every_device!(
    fused_bias_and_activation_epilogue_matches_an_f64_evaluation,
    |device: &Device| -> Result<()> {
        let acts = [
            None,
            Some(ops::Activation::Relu),
            Some(ops::Activation::Gelu(ops::GeluApprox::None)),
            Some(ops::Activation::Gelu(ops::GeluApprox::Tanh)),
            Some(ops::Activation::Tanh),
            Some(ops::Activation::Sigmoid),
            Some(ops::Activation::Silu),
        ];
        let _no_grad = amp_tensor::no_grad();
        for dtype in FLOATS {
            // Edge tiles, k = 0 (bias only), a batched x, one large enough to run in
            // parallel, a short, wide, deep one (rounded from its column strips), and
            // a tall, deep one (row blocks into a padded product, finished row by row).
            for (i, (lead, k, n)) in [
                (vec![13usize], 37usize, 45usize),
                (vec![3], 0, 5),
                (vec![2, 7], 64, 33),
                (vec![300], 256, 260),
                (vec![64], 300, 600),
                (vec![530], 600, 70),
            ]
            .into_iter()
            .enumerate()
            {
                let mut xs = lead.clone();
                xs.push(k);
                let s = 20 * i as u64;
                let x = Tensor::randn(&xs, dtype, device, s)?;
                let w = Tensor::randn(&[n, k], dtype, device, s + 1)?;
                let b = Tensor::randn(&[n], dtype, device, s + 2)?;
                let (xv, wv, bv) = (x.to_f64_vec()?, w.to_f64_vec()?, b.to_f64_vec()?);
                let m = xv.len() / k.max(1);
                let m = if k == 0 { lead.iter().product() } else { m };
                // The exact product and bias in f64, the activation on the
                // reference backend (f64), rounded once to dtype.
                let z: Vec<f64> = (0..m * n)
                    .map(|e| {
                        let (r, j) = (e / n, e % n);
                        (0..k).map(|p| xv[r * k + p] * wv[j * k + p]).sum::<f64>() + bv[j]
                    })
                    .collect();
                let mut shape = lead.clone();
                shape.push(n);
                let z = Tensor::from_f64_slice(&z, &shape, DType::F64, &Device::reference())?;
                for act in acts {
                    let y = match act {
                        Some(a) => ops::linear_act(&x, &w, Some(&b), a)?,
                        None => ops::linear(&x, &w, Some(&b))?,
                    };
                    let want = match act {
                        Some(a) => a.apply(&z)?,
                        None => z.clone(),
                    }
                    .to_dtype(dtype)?;
                    check(
                        &format!("linear {dtype} {lead:?}x{k}x{n} {act:?}"),
                        &y,
                        &want,
                        dot_tol(dtype, k),
                    )?;
                }
            }
        }
        Ok(())
    }
);

on_every_device!(
    tall_shallow_products_written_straight_to_low_precision_match_reference,
    |device: &Device| -> Result<()> {
        // Depth within one block: the product is rounded to bf16/f16 from
        // per-block tiles (a weight gradient gᵀ·x has this shape); edge tiles in
        // every direction; A transposed too.
        for dtype in [DType::BF16, DType::F16] {
            for (i, &(m, k, n)) in [
                (1100usize, 200usize, 300usize),
                (1037, 33, 70),
                (40, 17, 9),
                // Short and wide, two column blocks (N > 2048).
                (200, 10, 2100),
            ]
            .iter()
            .enumerate()
            {
                let s = 40 + 10 * i as u64;
                let a = Tensor::randn(&[m, k], dtype, device, s)?;
                let at = Tensor::randn(&[k, m], dtype, device, s + 1)?.t()?;
                let b = Tensor::randn(&[k, n], dtype, device, s + 2)?;
                let rb = b.to_device(&Device::reference())?;
                for (name, a) in [("A", &a), ("A^T", &at)] {
                    check(
                        &format!("{name} {dtype} {m}x{k}x{n}"),
                        &a.matmul(&b)?,
                        &a.to_device(&Device::reference())?.matmul(&rb)?,
                        dot_tol(dtype, k),
                    )?;
                }
            }
        }
        Ok(())
    }
);

on_every_device!(
    large_square_products_match_reference,
    |device: &Device| -> Result<()> {
        // 2·200·600·170 flops is above the CPU's parallel thresholds (AMX's too); the reference is exact.
        for dtype in FLOATS {
            let a = Tensor::randn(&[200, 600], dtype, device, 1)?;
            let b = Tensor::randn(&[600, 170], dtype, device, 2)?;
            let (ra, rb) = (
                a.to_device(&Device::reference())?,
                b.to_device(&Device::reference())?,
            );
            check(
                &format!("parallel {dtype}"),
                &a.matmul(&b)?,
                &ra.matmul(&rb)?,
                dot_tol(dtype, 600),
            )?;
        }
        Ok(())
    }
);

on_every_device!(
    narrow_products_match_reference,
    |device: &Device| -> Result<()> {
        // n ≤ 16 takes the dot-product path at AVX-512 and above (bf16 with a depth of
        // whole 32-steps: AMX tiles): depths around its 16-lane steps and 512-deep
        // blocks, odd row counts (row pairs), a parallel size.
        for dtype in FLOATS {
            for (i, &(m, k, n)) in [
                (1, 1, 1),
                (3, 15, 6),
                (37, 17, 7),
                (5, 513, 12),
                (9, 1100, 13),
                (256, 1024, 10),
                (2, 16, 16),
                (4, 33, 17),
                // Depths of whole 32-steps past one 512-deep block take AMX tiles for
                // bf16: 16-row groups and a rest, an even (576) and an odd (544) count
                // of 32-steps.
                (70, 576, 16),
                (130, 544, 5),
            ]
            .iter()
            .enumerate()
            {
                let seed = 400 + 10 * i as u64;
                let a = Tensor::randn(&[m, k], dtype, device, seed)?;
                let b = Tensor::randn(&[k, n], dtype, device, seed + 1)?;
                let (ra, rb) = (
                    a.to_device(&Device::reference())?,
                    b.to_device(&Device::reference())?,
                );
                let case = format!("narrow {dtype} {m}x{k}x{n}");
                check(&case, &a.matmul(&b)?, &ra.matmul(&rb)?, dot_tol(dtype, k))?;
                // A weight [n, k] read transposed, and a batch of 2 against one B.
                let w = Tensor::randn(&[n, k], dtype, device, seed + 2)?;
                let rw = w.to_device(&Device::reference())?;
                let case = format!("narrow linear {dtype} {m}x{k}x{n}");
                check(
                    &case,
                    &ops::linear(&a, &w, None)?,
                    &ops::linear(&ra, &rw, None)?,
                    dot_tol(dtype, k),
                )?;
                let a3 = Tensor::randn(&[2, m, k], dtype, device, seed + 3)?;
                let ra3 = a3.to_device(&Device::reference())?;
                let case = format!("narrow batched {dtype} {m}x{k}x{n}");
                check(&case, &a3.matmul(&b)?, &ra3.matmul(&rb)?, dot_tol(dtype, k))?;
            }
        }
        Ok(())
    }
);
