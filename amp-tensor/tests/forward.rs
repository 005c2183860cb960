//! Forward values of every op against small hand cases and straightforward
//! f64 loops written here, independent of the backend's code.

use amp_tensor::ops::{self, CrossEntropyOptions, GeluApprox, Reduction};
use amp_tensor::{bf16, DType, Device, Tensor};

fn dev() -> Device {
    Device::reference()
}

fn t(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_f64_slice(v, shape, DType::F64, &dev()).unwrap()
}

fn close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len(), "lengths {} vs {}", a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "element {i}: {x} vs {y}"
        );
    }
}

#[test]
fn hand_cases() {
    let a = t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let b = t(&[10.0, 20.0, 30.0], &[3]);
    assert_eq!(
        a.add(&b).unwrap().to_f64_vec().unwrap(),
        vec![11.0, 22.0, 33.0, 14.0, 25.0, 36.0]
    );
    assert_eq!(
        a.mul(&b).unwrap().to_f64_vec().unwrap(),
        vec![10.0, 40.0, 90.0, 40.0, 100.0, 180.0]
    );
    assert_eq!(
        a.sum_dim(0, false).unwrap().to_f64_vec().unwrap(),
        vec![5.0, 7.0, 9.0]
    );
    assert_eq!(a.sum_dim(1, true).unwrap().dims(), &[2, 1]);
    assert_eq!(a.mean_all().unwrap().scalar_f64().unwrap(), 3.5);
    assert_eq!(
        a.t().unwrap().contiguous().unwrap().to_f64_vec().unwrap(),
        vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
    );
    let m = ops::matmul(&a, &a.t().unwrap()).unwrap();
    assert_eq!(m.to_f64_vec().unwrap(), vec![14.0, 32.0, 32.0, 77.0]);
    let (mx, idx) = a.max_dim(1, false).unwrap();
    assert_eq!(mx.to_f64_vec().unwrap(), vec![3.0, 6.0]);
    assert_eq!(idx.to_vec::<i64>().unwrap(), vec![2, 2]);
    assert_eq!(
        a.argmax(0, false).unwrap().to_vec::<i64>().unwrap(),
        vec![1, 1, 1]
    );
    // Softmax of [0, ln 2, ln 3] is [1/6, 2/6, 3/6].
    let s = ops::softmax(&t(&[0.0, 2f64.ln(), 3f64.ln()], &[3]), 0).unwrap();
    close(
        &s.to_f64_vec().unwrap(),
        &[1.0 / 6.0, 2.0 / 6.0, 0.5],
        1e-15,
    );
    // Cross-entropy of uniform logits over 4 classes is ln 4.
    let ce = ops::cross_entropy(
        &t(&[0.0; 8], &[2, 4]),
        &Tensor::from_vec(vec![1i64, 3], &[2], &dev()).unwrap(),
    )
    .unwrap();
    close(&[ce.scalar_f64().unwrap()], &[4f64.ln()], 1e-15);
    // GELU(1) = Φ(1) = 0.8413447460685429 (published normal CDF).
    let g = t(&[1.0], &[1])
        .gelu(GeluApprox::None)
        .unwrap()
        .scalar_f64()
        .unwrap();
    close(&[g], &[0.8413447460685429], 1e-15);
    assert_eq!(
        Tensor::arange(0.0, 5.0, 2.0, DType::I64, &dev())
            .unwrap()
            .to_vec::<i64>()
            .unwrap(),
        vec![0, 2, 4]
    );
}

#[test]
fn elementwise_against_f64_loops() {
    let x = Tensor::randn(&[5, 7], DType::F64, &dev(), 1).unwrap();
    let xs = x.to_f64_vec().unwrap();
    let check = |got: Tensor, f: &dyn Fn(f64) -> f64| {
        let want: Vec<f64> = xs.iter().map(|&v| f(v)).collect();
        close(&got.to_f64_vec().unwrap(), &want, 1e-14);
    };
    check(x.exp().unwrap(), &f64::exp);
    check(x.abs().unwrap().log().unwrap(), &|v: f64| v.abs().ln());
    check(x.tanh().unwrap(), &f64::tanh);
    check(x.sigmoid().unwrap(), &|v: f64| 1.0 / (1.0 + (-v).exp()));
    check(x.silu().unwrap(), &|v: f64| v / (1.0 + (-v).exp()));
    check(x.relu().unwrap(), &|v: f64| v.max(0.0));
    check(x.abs().unwrap().sqrt().unwrap(), &|v: f64| v.abs().sqrt());
    check(x.abs().unwrap().rsqrt().unwrap(), &|v: f64| {
        1.0 / v.abs().sqrt()
    });
    check(x.abs().unwrap().powf(1.7).unwrap(), &|v: f64| {
        v.abs().powf(1.7)
    });
    check(x.gelu(GeluApprox::Tanh).unwrap(), &|v: f64| {
        0.5 * v * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v.powi(3))).tanh())
    });
    check(x.affine(2.0, 1.0).unwrap(), &|v| 2.0 * v + 1.0);
}

#[test]
fn broadcast_strided_and_batched_matmul_against_loops() {
    let d = dev();
    let a = Tensor::randn(&[2, 1, 3, 4], DType::F64, &d, 2).unwrap();
    let b = Tensor::randn(&[3, 5, 4], DType::F64, &d, 3)
        .unwrap()
        .transpose(-1, -2)
        .unwrap(); // [3, 4, 5] strided
    let c = ops::matmul(&a, &b).unwrap();
    assert_eq!(c.dims(), &[2, 3, 3, 5]);
    let (av, bv, cv) = (
        a.to_f64_vec().unwrap(),
        b.contiguous().unwrap().to_f64_vec().unwrap(),
        c.to_f64_vec().unwrap(),
    );
    for i in 0..2 {
        for j in 0..3 {
            for r in 0..3 {
                for s in 0..5 {
                    let mut acc = 0.0;
                    for k in 0..4 {
                        acc += av[i * 12 + r * 4 + k] * bv[j * 20 + k * 5 + s];
                    }
                    let got = cv[((i * 3 + j) * 3 + r) * 5 + s];
                    assert!((got - acc).abs() < 1e-12, "{got} vs {acc}");
                }
            }
        }
    }
    // Broadcast add of a column and a row through a narrowed view.
    let col = Tensor::randn(&[4, 3], DType::F64, &d, 4)
        .unwrap()
        .narrow(1, 1, 1)
        .unwrap();
    let row = t(&[1.0, 2.0, 3.0], &[3]);
    let sum = col.add(&row).unwrap();
    let colv = col.contiguous().unwrap().to_f64_vec().unwrap();
    let want: Vec<f64> = (0..12)
        .map(|i| colv[i / 3] + [1.0, 2.0, 3.0][i % 3])
        .collect();
    assert_eq!(sum.to_f64_vec().unwrap(), want);
}

#[test]
fn nn_ops_against_loops() {
    let d = dev();
    let x = Tensor::randn(&[4, 6], DType::F64, &d, 5)
        .unwrap()
        .mul_scalar(4.0)
        .unwrap();
    let xv = x.to_f64_vec().unwrap();
    let w = Tensor::randn(&[6], DType::F64, &d, 6).unwrap();
    let b = Tensor::randn(&[6], DType::F64, &d, 7).unwrap();
    let (wv, bv) = (w.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
    let ln = ops::layer_norm(&x, Some(&w), Some(&b), 1e-5)
        .unwrap()
        .to_f64_vec()
        .unwrap();
    let lsm = ops::log_softmax(&x, 1).unwrap().to_f64_vec().unwrap();
    for r in 0..4 {
        let row = &xv[r * 6..r * 6 + 6];
        let mean = row.iter().sum::<f64>() / 6.0;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 6.0;
        for c in 0..6 {
            let want = (row[c] - mean) / (var + 1e-5).sqrt() * wv[c] + bv[c];
            close(&[ln[r * 6 + c]], &[want], 1e-13);
            let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
            close(&[lsm[r * 6 + c]], &[row[c] - lse], 1e-13);
        }
    }
    // Cross-entropy with ignore_index and label smoothing against the formula.
    let targets = vec![2i64, -100, 5, 0];
    let tt = Tensor::from_vec(targets.clone(), &[4], &d).unwrap();
    let eps = 0.2;
    let opts = CrossEntropyOptions {
        reduction: Reduction::Mean,
        ignore_index: -100,
        label_smoothing: eps,
    };
    let got = ops::cross_entropy_with(&x, &tt, opts)
        .unwrap()
        .scalar_f64()
        .unwrap();
    let (mut total, mut count) = (0.0, 0.0);
    for (r, &tgt) in targets.iter().enumerate() {
        if tgt == -100 {
            continue;
        }
        let lp: Vec<f64> = (0..6).map(|c| lsm[r * 6 + c]).collect();
        total += (1.0 - eps) * -lp[tgt as usize] + eps * -lp.iter().sum::<f64>() / 6.0;
        count += 1.0;
    }
    close(&[got], &[total / count], 1e-13);
    let mse = ops::mse_loss(
        &x,
        &Tensor::zeros(&[4, 6], DType::F64, &d).unwrap(),
        Reduction::Sum,
    )
    .unwrap();
    close(
        &[mse.scalar_f64().unwrap()],
        &[xv.iter().map(|v| v * v).sum()],
        1e-13,
    );
    // Embedding picks rows.
    let table = t(&[0.0, 1.0, 10.0, 11.0, 20.0, 21.0], &[3, 2]);
    let e = ops::embedding(
        &Tensor::from_vec(vec![2i64, 0, 2], &[3], &d).unwrap(),
        &table,
    )
    .unwrap();
    assert_eq!(
        e.to_f64_vec().unwrap(),
        vec![20.0, 21.0, 0.0, 1.0, 20.0, 21.0]
    );
    // cat / stack / where / masked_fill.
    let c = ops::cat(
        &[&t(&[1.0, 2.0], &[1, 2]), &t(&[3.0, 4.0, 5.0, 6.0], &[2, 2])],
        0,
    )
    .unwrap();
    assert_eq!(
        (c.dims(), c.to_f64_vec().unwrap()),
        (&[3usize, 2][..], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    );
    let s = ops::stack(&[&t(&[1.0, 2.0], &[2]), &t(&[3.0, 4.0], &[2])], 1).unwrap();
    assert_eq!(s.to_f64_vec().unwrap(), vec![1.0, 3.0, 2.0, 4.0]);
    let mask = t(&[1.0, -1.0, 2.0], &[3])
        .gt(&Tensor::zeros(&[], DType::F64, &d).unwrap())
        .unwrap();
    let filled = ops::masked_fill(&t(&[5.0, 6.0, 7.0], &[3]), &mask, -1.0).unwrap();
    assert_eq!(filled.to_f64_vec().unwrap(), vec![-1.0, 6.0, -1.0]);
}

#[test]
fn low_precision_outputs_round_once() {
    let d = dev();
    // bf16 sum over 4096 ones: f32/f64 accumulation gives exactly 4096; bf16
    // accumulation would stall at 256.
    let ones = Tensor::ones(&[4096], DType::BF16, &d).unwrap();
    assert_eq!(
        ones.sum_all().unwrap().to_vec::<bf16>().unwrap()[0].to_f32(),
        4096.0
    );
    // A cast rounds to nearest even.
    let x = t(&[1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0], &[2])
        .to_dtype(DType::BF16)
        .unwrap();
    assert_eq!(x.to_f64_vec().unwrap(), vec![1.0, 1.0 + 4.0 / 256.0]);
    // dropout keeps about 1-p of the values, scaled.
    let y = ops::dropout(
        &Tensor::ones(&[10000], DType::F32, &d).unwrap(),
        0.25,
        true,
        3,
    )
    .unwrap();
    let v = y.to_f64_vec().unwrap();
    let kept = v.iter().filter(|&&x| x != 0.0).count() as f64 / 1e4;
    assert!((kept - 0.75).abs() < 0.02, "kept {kept}");
    assert!(v.iter().all(|&x| x == 0.0 || (x - 4.0 / 3.0).abs() < 1e-6));
}

#[test]
fn same_seed_same_bits() {
    let d = dev();
    for dtype in [DType::F32, DType::BF16, DType::F16, DType::F64] {
        let a = Tensor::randn(&[257], dtype, &d, 42)
            .unwrap()
            .to_f64_vec()
            .unwrap();
        let b = Tensor::randn(&[257], dtype, &d, 42)
            .unwrap()
            .to_f64_vec()
            .unwrap();
        let c = Tensor::randn(&[257], dtype, &d, 43)
            .unwrap()
            .to_f64_vec()
            .unwrap();
        assert_eq!(
            a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        assert_ne!(a, c);
    }
    let u = Tensor::rand_uniform(&[1000], -2.0, 3.0, DType::F64, &d, 1)
        .unwrap()
        .to_f64_vec()
        .unwrap();
    assert!(u.iter().all(|&x| (-2.0..3.0).contains(&x)));
    let n = Tensor::randn(&[20000], DType::F64, &d, 9)
        .unwrap()
        .to_f64_vec()
        .unwrap();
    let mean = n.iter().sum::<f64>() / n.len() as f64;
    let var = n.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n.len() as f64;
    // Standard errors: mean 1/√n ≈ 0.007, variance √(2/n) ≈ 0.01; allow 5σ.
    assert!(
        mean.abs() < 0.035 && (var - 1.0).abs() < 0.05,
        "mean {mean} var {var}"
    );
    let r = Tensor::randint(0, 10, &[1000], &d, 2)
        .unwrap()
        .to_vec::<i64>()
        .unwrap();
    assert!(r.iter().all(|&x| (0..10).contains(&x)));
}

/// `linear_act` equals `linear` followed by the activation op, fused (no
/// autograd) and unfused (autograd recording, with gradients flowing).
#[test]
fn linear_act_equals_linear_then_activation() {
    use amp_tensor::ops::Activation;
    use amp_testkit::Tolerance;
    let dev = Device::reference();
    let x = Tensor::randn(&[2, 3, 5], DType::F64, &dev, 1).unwrap();
    let w = Tensor::randn(&[4, 5], DType::F64, &dev, 2).unwrap();
    let b = Tensor::randn(&[4], DType::F64, &dev, 3).unwrap();
    for act in [
        Activation::Relu,
        Activation::Gelu(GeluApprox::None),
        Activation::Gelu(GeluApprox::Tanh),
        Activation::Tanh,
        Activation::Sigmoid,
        Activation::Silu,
    ] {
        let composed = act.apply(&ops::linear(&x, &w, Some(&b)).unwrap()).unwrap();
        let fused = ops::linear_act(&x, &w, Some(&b), act).unwrap();
        assert_eq!(fused.dims(), &[2, 3, 4]);
        amp_testkit::assert_close(&fused, &composed, Tolerance::for_dtype(DType::F64)).unwrap();
        // With a parameter that needs a gradient, the activation is its own op.
        let wg = w.detach();
        wg.set_requires_grad(true).unwrap();
        let y = ops::linear_act(&x, &wg, Some(&b), act).unwrap();
        amp_testkit::assert_close(&y, &composed, Tolerance::for_dtype(DType::F64)).unwrap();
        y.sum_all().unwrap().backward().unwrap();
        assert_eq!(wg.grad().unwrap().dims(), &[4, 5]);
    }
}
