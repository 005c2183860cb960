#![allow(clippy::cloned_ref_to_slice_refs)] // one-element input lists read better as [x.clone()]

//! Finite-difference gradient checks of every differentiable op, in f64 on
//! the reference backend, with random shapes (proptest), views, broadcasting
//! and casts.

use amp_tensor::ops::{self, CrossEntropyOptions, GeluApprox, Reduction};
use amp_tensor::{DType, Device, Result, Tensor};
use proptest::prelude::*;

/// Checks d(sum(f(inputs) * probe))/d(inputs) against central differences.
fn gradcheck(inputs: &[Tensor], f: &dyn Fn(&[Tensor]) -> Result<Tensor>) -> Result<()> {
    let dev = Device::reference();
    let leaves: Vec<Tensor> = inputs.iter().map(|t| t.detach()).collect();
    for l in &leaves {
        l.set_requires_grad(true)?;
    }
    let out = f(&leaves)?;
    // A fixed random probe makes every output element matter.
    let probe = Tensor::randn(out.dims(), DType::F64, &dev, 99)?;
    out.mul(&probe)?.sum_all()?.backward()?;
    let objective =
        |vals: &[Tensor]| -> Result<f64> { f(vals)?.mul(&probe)?.sum_all()?.scalar_f64() };
    for (k, leaf) in leaves.iter().enumerate() {
        let analytic = leaf
            .grad()
            .map(|g| g.to_f64_vec())
            .transpose()?
            .unwrap_or_else(|| vec![0.0; leaf.numel()]);
        let base = leaf.to_f64_vec()?;
        for i in 0..base.len() {
            let h = 1e-6 * (1.0 + base[i].abs());
            let mut plus = base.clone();
            plus[i] += h;
            let mut minus = base.clone();
            minus[i] -= h;
            let mut args: Vec<Tensor> = leaves.iter().map(|t| t.detach()).collect();
            args[k] = Tensor::from_f64_slice(&plus, leaf.dims(), DType::F64, &dev)?;
            let fp = objective(&args)?;
            args[k] = Tensor::from_f64_slice(&minus, leaf.dims(), DType::F64, &dev)?;
            let fm = objective(&args)?;
            let numeric = (fp - fm) / (2.0 * h);
            let err = (numeric - analytic[i]).abs();
            assert!(
                err <= 1e-5 * (1.0 + numeric.abs()),
                "input {k} element {i}: analytic {} vs numeric {numeric}",
                analytic[i]
            );
        }
    }
    Ok(())
}

fn rand(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, DType::F64, &Device::reference(), seed).unwrap()
}

/// Values bounded away from zero (for log, sqrt, div, abs, relu kinks).
fn positive(shape: &[usize], seed: u64) -> Tensor {
    Tensor::rand_uniform(shape, 0.5, 2.0, DType::F64, &Device::reference(), seed).unwrap()
}

fn away_from_zero(shape: &[usize], seed: u64) -> Tensor {
    let p = positive(shape, seed);
    let signs = Tensor::randn(shape, DType::F64, &Device::reference(), seed + 1)
        .unwrap()
        .sign()
        .unwrap();
    p.mul(&signs).unwrap()
}

fn shape_strategy() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..4, 1..4)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    #[test]
    fn unary_ops(shape in shape_strategy(), seed in 0u64..1000) {
        let x = rand(&shape, seed);
        let xp = positive(&shape, seed);
        let xa = away_from_zero(&shape, seed);
        gradcheck(&[x.clone()], &|v| v[0].neg()).unwrap();
        gradcheck(&[x.clone()], &|v| v[0].exp()).unwrap();
        gradcheck(&[xp.clone()], &|v| v[0].log()).unwrap();
        gradcheck(&[xp.clone()], &|v| v[0].sqrt()).unwrap();
        gradcheck(&[xp.clone()], &|v| v[0].rsqrt()).unwrap();
        gradcheck(&[xp.clone()], &|v| v[0].powf(2.5)).unwrap();
        gradcheck(&[xa.clone()], &|v| v[0].abs()).unwrap();
        gradcheck(&[xa.clone()], &|v| v[0].relu()).unwrap();
        gradcheck(&[xa.clone()], &|v| v[0].recip()).unwrap();
        gradcheck(&[x.clone()], &|v| v[0].gelu(GeluApprox::None)).unwrap();
        gradcheck(&[x.clone()], &|v| v[0].gelu(GeluApprox::Tanh)).unwrap();
        gradcheck(&[x.clone()], &|v| v[0].tanh()).unwrap();
        gradcheck(&[x.clone()], &|v| v[0].sigmoid()).unwrap();
        gradcheck(&[x.clone()], &|v| v[0].silu()).unwrap();
        gradcheck(&[x.clone()], &|v| v[0].erf()).unwrap();
        gradcheck(&[x.clone()], &|v| v[0].affine(1.5, -2.0)).unwrap();
        gradcheck(&[x.clone()], &|v| v[0].add_scalar(3.0)?.mul_scalar(-0.5)?.sub_scalar(1.0)?.div_scalar(4.0)).unwrap();
    }

    #[test]
    fn binary_ops_with_broadcasting(a_shape in shape_strategy(), seed in 0u64..1000, drop in 0usize..3) {
        // b has a suffix of a's shape with some dims set to 1: it broadcasts.
        let mut b_shape: Vec<usize> = a_shape[a_shape.len().min(drop)..].to_vec();
        if let Some(first) = b_shape.first_mut() { *first = 1; }
        let a = rand(&a_shape, seed);
        let b = away_from_zero(&b_shape, seed + 7);
        gradcheck(&[a.clone(), b.clone()], &|v| v[0].add(&v[1])).unwrap();
        gradcheck(&[a.clone(), b.clone()], &|v| v[0].sub(&v[1])).unwrap();
        gradcheck(&[a.clone(), b.clone()], &|v| v[0].mul(&v[1])).unwrap();
        gradcheck(&[a.clone(), b.clone()], &|v| v[0].div(&v[1])).unwrap();
        gradcheck(&[b.clone(), a.clone()], &|v| v[0].div(&v[1].exp()?)).unwrap();
        gradcheck(&[a.clone(), b.clone()], &|v| v[0].maximum(&v[1])).unwrap();
        gradcheck(&[a.clone(), b.clone()], &|v| v[0].minimum(&v[1])).unwrap();
        let cond = a.gt(&Tensor::zeros(&[], DType::F64, &Device::reference()).unwrap()).unwrap();
        gradcheck(&[a.clone(), b.clone()], &move |v| ops::where_cond(&cond, &v[0], &v[1])).unwrap();
    }

    #[test]
    fn reductions_and_views(shape in prop::collection::vec(1usize..4, 2..4), seed in 0u64..1000) {
        let x = rand(&shape, seed);
        gradcheck(&[x.clone()], &|v| v[0].sum_all()).unwrap();
        gradcheck(&[x.clone()], &|v| v[0].mean_all()).unwrap();
        gradcheck(&[x.clone()], &|v| v[0].sum_dim(-1, false)).unwrap();
        gradcheck(&[x.clone()], &|v| v[0].mean_dims(&[0], true)).unwrap();
        gradcheck(&[x.clone()], &|v| Ok(v[0].max_dim(0, false)?.0)).unwrap();
        gradcheck(&[x.clone()], &|v| v[0].transpose(0, 1)?.exp()).unwrap();
        gradcheck(&[x.clone()], &|v| v[0].permute(&(0..v[0].rank()).rev().collect::<Vec<_>>())?.contiguous()).unwrap();
        gradcheck(&[x.clone()], &|v| v[0].transpose(0, -1)?.reshape(&[v[0].numel()])?.tanh()).unwrap();
        gradcheck(&[x.clone()], &|v| v[0].narrow(0, 0, 1)?.unsqueeze(0)?.squeeze(0)?.exp()).unwrap();
        let mut big = shape.clone();
        big.insert(0, 2);
        gradcheck(&[x.clone()], &move |v| v[0].broadcast_to(&big)?.sin_like()).unwrap();
    }

    #[test]
    fn matmul_and_linear(m in 1usize..4, k in 1usize..4, n in 1usize..4, batch in 1usize..3, seed in 0u64..1000) {
        let a = rand(&[batch, m, k], seed);
        let b = rand(&[k, n], seed + 1);
        gradcheck(&[a.clone(), b.clone()], &|v| ops::matmul(&v[0], &v[1])).unwrap();
        // Transposed (strided) operands.
        let c = rand(&[batch, k, m], seed + 5);
        let bt = rand(&[n, k], seed + 6);
        gradcheck(&[c.clone(), bt.clone()], &|v| ops::matmul(&v[0].transpose(-1, -2)?, &v[1].t()?)).unwrap();
        let v1 = rand(&[k], seed + 2);
        gradcheck(&[v1.clone(), b.clone()], &|v| ops::matmul(&v[0], &v[1])).unwrap();
        let w = rand(&[n, k], seed + 3);
        let bias = rand(&[n], seed + 4);
        gradcheck(&[a.clone(), w.clone(), bias.clone()], &|v| ops::linear(&v[0], &v[1], Some(&v[2]))).unwrap();
        gradcheck(&[a.clone(), w.clone()], &|v| ops::linear(&v[0], &v[1], None)).unwrap();
    }

    #[test]
    fn nn_ops(rows in 1usize..4, cols in 2usize..5, seed in 0u64..1000) {
        let x = rand(&[rows, cols], seed).mul_scalar(3.0).unwrap();
        gradcheck(&[x.clone()], &|v| ops::softmax(&v[0], -1)).unwrap();
        gradcheck(&[x.clone()], &|v| ops::softmax(&v[0], 0)).unwrap();
        gradcheck(&[x.clone()], &|v| ops::log_softmax(&v[0], -1)).unwrap();
        gradcheck(&[x.clone()], &|v| ops::log_softmax(&v[0], 0)).unwrap();
        let w = rand(&[cols], seed + 1);
        let b = rand(&[cols], seed + 2);
        // Rows with a spread: with two nearly equal values (a variance near eps) layer
        // norm curves so sharply that central differences miss by more than the
        // tolerance (rows = 3, cols = 2, seed = 237 did). Column j lies in 3j + [0.5, 2].
        let spread: Vec<f64> = (0..rows * cols).map(|i| 3.0 * (i % cols) as f64).collect();
        let spread = Tensor::from_f64_slice(&spread, &[rows, cols], DType::F64, &Device::reference()).unwrap();
        let xl = positive(&[rows, cols], seed).add(&spread).unwrap();
        gradcheck(&[xl.clone(), w.clone(), b.clone()], &|v| ops::layer_norm(&v[0], Some(&v[1]), Some(&v[2]), 1e-5)).unwrap();
        gradcheck(&[xl.clone()], &|v| ops::layer_norm(&v[0], None, None, 1e-5)).unwrap();
        let targets = Tensor::randint(0, cols as i64, &[rows], &Device::reference(), seed).unwrap();
        let t = targets.clone();
        gradcheck(&[x.clone()], &move |v| ops::cross_entropy(&v[0], &t)).unwrap();
        let t = targets.clone();
        let opts = CrossEntropyOptions { reduction: Reduction::Sum, label_smoothing: 0.1, ignore_index: 0 };
        gradcheck(&[x.clone()], &move |v| ops::cross_entropy_with(&v[0], &t, opts)).unwrap();
        let t = targets.clone();
        gradcheck(&[x.clone()], &move |v| ops::nll_loss(&ops::log_softmax(&v[0], 1)?, &t, Reduction::None, -100)).unwrap();
        let y = rand(&[rows, cols], seed + 3);
        gradcheck(&[x.clone(), y.clone()], &|v| ops::mse_loss(&v[0], &v[1], Reduction::Mean)).unwrap();
        let idx = Tensor::randint(0, rows as i64, &[5], &Device::reference(), seed).unwrap();
        gradcheck(&[x.clone()], &move |v| v[0].index_select(0, &idx)).unwrap();
        let g_idx = Tensor::randint(0, cols as i64, &[rows, 3], &Device::reference(), seed + 5).unwrap();
        gradcheck(&[x.clone()], &move |v| v[0].gather(1, &g_idx)).unwrap();
        let e_idx = Tensor::randint(0, rows as i64, &[2, 3], &Device::reference(), seed + 6).unwrap();
        gradcheck(&[x.clone()], &move |v| ops::embedding(&e_idx, &v[0])).unwrap();
        gradcheck(&[x.clone()], &|v| ops::dropout(&v[0], 0.3, true, 5)).unwrap();
        gradcheck(&[x.clone(), y.clone()], &|v| ops::cat(&[&v[0], &v[1]], 1)).unwrap();
        gradcheck(&[x.clone(), y.clone()], &|v| ops::stack(&[&v[0], &v[1]], 0)).unwrap();
    }
}

#[test]
fn convolutions_pass_gradcheck() {
    use ops::{Conv1dOptions, Conv2dOptions};
    let cases = [
        (
            [2, 2, 5, 4],
            [3, 2, 3, 2],
            Conv2dOptions::default().padding(1),
        ),
        (
            [1, 4, 6, 5],
            [4, 2, 2, 3],
            Conv2dOptions {
                stride: [2, 1],
                padding: [1, 2],
                dilation: [1, 2],
                groups: 2,
            },
        ),
        (
            [2, 3, 4, 4],
            [3, 1, 3, 3],
            Conv2dOptions::default().groups(3).padding(1),
        ),
    ];
    for (i, (xs, ws, o)) in cases.into_iter().enumerate() {
        let seed = 10 * i as u64;
        let (x, w, b) = (
            rand(&xs, seed),
            rand(&ws, seed + 1),
            rand(&[ws[0]], seed + 2),
        );
        gradcheck(&[x, w, b], &|v| ops::conv2d(&v[0], &v[1], Some(&v[2]), o)).unwrap();
    }
    let o = Conv1dOptions {
        stride: 2,
        padding: 1,
        dilation: 1,
        groups: 1,
    };
    gradcheck(&[rand(&[2, 3, 7], 40), rand(&[2, 3, 3], 41)], &|v| {
        ops::conv1d(&v[0], &v[1], None, o)
    })
    .unwrap();
}

#[test]
fn poolings_pass_gradcheck() {
    use ops::Pool2dOptions;
    // Distinct values, so no window has a tie for its maximum.
    let x = Tensor::from_f64_slice(
        &(0..2 * 2 * 5 * 6)
            .map(|i| ((i * 37) % 120) as f64 * 0.1 - 6.0)
            .collect::<Vec<_>>(),
        &[2, 2, 5, 6],
        DType::F64,
        &Device::reference(),
    )
    .unwrap();
    let overlapping = Pool2dOptions::new(3).stride(2).padding(1);
    gradcheck(&[x.clone()], &|v| ops::max_pool2d(&v[0], overlapping)).unwrap();
    for include in [true, false] {
        gradcheck(&[x.clone()], &|v| {
            ops::avg_pool2d(&v[0], overlapping, include)
        })
        .unwrap();
    }
    gradcheck(&[x.clone()], &|v| ops::adaptive_avg_pool2d(&v[0], [3, 4])).unwrap();
    gradcheck(&[x], &|v| ops::adaptive_avg_pool2d(&v[0], [1, 1])).unwrap();
}

#[test]
fn batch_and_group_norm_pass_gradcheck() {
    use ops::BatchNormOptions;
    let (x, w, b) = (rand(&[3, 2, 2, 3], 50), rand(&[2], 51), rand(&[2], 52));
    gradcheck(&[x.clone(), w.clone(), b.clone()], &|v| {
        ops::batch_norm(
            &v[0],
            None,
            Some(&v[1]),
            Some(&v[2]),
            BatchNormOptions::default(),
        )
    })
    .unwrap();
    let (rm, rv) = (rand(&[2], 53), positive(&[2], 54));
    let eval = BatchNormOptions {
        training: false,
        ..Default::default()
    };
    gradcheck(&[x, w, b], &|v| {
        let running = ops::RunningStats {
            mean: &rm,
            var: &rv,
        };
        ops::batch_norm(&v[0], Some(running), Some(&v[1]), Some(&v[2]), eval)
    })
    .unwrap();
    let (x, w, b) = (rand(&[2, 4, 3], 55), rand(&[4], 56), rand(&[4], 57));
    gradcheck(&[x, w, b], &|v| {
        ops::group_norm(&v[0], 2, Some(&v[1]), Some(&v[2]), 1e-5)
    })
    .unwrap();
}

#[test]
fn gradients_flow_through_casts() {
    // f64 -> f32 -> f64 is a differentiable round trip; the f32 rounding
    // perturbs values by ~1e-7 relative, so check with f32-level tolerance.
    let x = rand(&[3, 4], 3);
    let leaf = x.detach();
    leaf.set_requires_grad(true).unwrap();
    let y = leaf
        .to_dtype(DType::F32)
        .unwrap()
        .exp()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .sum_all()
        .unwrap();
    y.backward().unwrap();
    let g = leaf.grad().unwrap();
    assert_eq!(g.dtype(), DType::F64);
    for (gv, xv) in g.to_f64_vec().unwrap().iter().zip(x.to_f64_vec().unwrap()) {
        assert!(
            (gv - xv.exp()).abs() <= 1e-6 * xv.exp(),
            "{gv} vs {}",
            xv.exp()
        );
    }
}

trait SinLike {
    fn sin_like(&self) -> Result<Tensor>;
}

impl SinLike for Tensor {
    /// A smooth non-linear function built from primitives (tanh of x + x²/3).
    fn sin_like(&self) -> Result<Tensor> {
        self.add(&self.mul(self)?.mul_scalar(1.0 / 3.0)?)?.tanh()
    }
}
