//! Batched products and attention on every device against exact f64
//! computations: `bmm`, `baddbmm` and `scaled_dot_product_attention` (no
//! mask, causal, bool and float masks, fully masked rows, L ≠ S, batch and
//! head dimensions), forward and backward, f32 / bf16 / f16; gradients
//! checked in f64 against finite differences on the reference backend.

use amp_tensor::ops;
use amp_tensor::{DType, Device, Result, Tensor};
use amp_testkit::{assert_close, on_every_device, Tolerance};

/// The exact attention of the values `q [n, L, E]`, `k [n, S, E]`, `v [n, S, Ev]`
/// with an additive bias `[L, S]` (shared by the batch), in f64; fully
/// masked rows give 0.
#[allow(clippy::too_many_arguments)]
fn exact_attention(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    bias: Option<&[f64]>,
    (n, l, s, e, ev): (usize, usize, usize, usize, usize),
    scale: f64,
) -> Vec<f64> {
    let mut out = vec![0.0; n * l * ev];
    for b in 0..n {
        for i in 0..l {
            let scores: Vec<f64> = (0..s)
                .map(|j| {
                    let dot: f64 = (0..e)
                        .map(|x| q[(b * l + i) * e + x] * k[(b * s + j) * e + x])
                        .sum();
                    dot * scale + bias.map_or(0.0, |m| m[i * s + j])
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            if max == f64::NEG_INFINITY {
                continue;
            }
            let w: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
            let total: f64 = w.iter().sum();
            for (j, wj) in w.iter().enumerate() {
                for c in 0..ev {
                    out[(b * l + i) * ev + c] += wj / total * v[(b * s + j) * ev + c];
                }
            }
        }
    }
    out
}

/// A mask case: name, mask, causal, and the additive bias it stands for.
type Case<'a> = (&'a str, Option<&'a Tensor>, bool, Option<&'a [f64]>);
/// A scalar function of one input, for finite differences.
type Loss<'a> = dyn Fn(&Tensor) -> Result<f64> + 'a;

/// Inputs rounded to `dtype`, and their values.
fn input(shape: &[usize], dtype: DType, device: &Device, seed: u64) -> Result<(Tensor, Vec<f64>)> {
    let t = Tensor::randn(shape, DType::F32, device, seed)?.to_dtype(dtype)?;
    let values = t.to_f64_vec()?;
    Ok((t, values))
}

on_every_device!(
    attention_matches_an_exact_computation,
    |d: &Device| -> Result<()> {
        let (h, l, s, e, ev) = (3usize, 5usize, 7usize, 16usize, 8usize);
        let n = 2 * h;
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let (q, qv) = input(&[2, h, l, e], dtype, d, 1)?;
            let (k, kv) = input(&[2, h, s, e], dtype, d, 2)?;
            let (v, vv) = input(&[2, h, s, ev], dtype, d, 3)?;
            let causal: Vec<f64> = (0..l)
                .flat_map(|i| (0..s).map(move |j| if j <= i { 0.0 } else { f64::NEG_INFINITY }))
                .collect();
            // A bool mask whose row 2 masks every key, and a float mask.
            let allowed: Vec<bool> = (0..l * s).map(|x| x / s != 2 && (x * 7) % 3 != 0).collect();
            let bool_bias: Vec<f64> = allowed
                .iter()
                .map(|&a| if a { 0.0 } else { f64::NEG_INFINITY })
                .collect();
            let float_bias: Vec<f64> = (0..l * s).map(|x| ((x % 5) as f64 - 2.0) * 0.5).collect();
            let bool_mask = Tensor::from_vec(allowed, &[l, s], d)?;
            let float_mask = Tensor::from_f64_slice(&float_bias, &[l, s], dtype, d)?;
            let float_bias_rounded = float_mask.to_f64_vec()?;
            let cases: [Case<'_>; 4] = [
                ("no mask", None, false, None),
                ("causal", None, true, Some(&causal)),
                (
                    "bool mask, one row fully masked",
                    Some(&bool_mask),
                    false,
                    Some(&bool_bias),
                ),
                (
                    "float mask",
                    Some(&float_mask),
                    false,
                    Some(&float_bias_rounded),
                ),
            ];
            for (case, mask, is_causal, bias) in cases {
                let got =
                    ops::scaled_dot_product_attention(&q, &k, &v, mask, 0.0, is_causal, None)?;
                assert_eq!(got.dims(), &[2, h, l, ev], "{case}");
                assert_eq!(got.dtype(), dtype, "{case}");
                let want = exact_attention(
                    &qv,
                    &kv,
                    &vv,
                    bias,
                    (n, l, s, e, ev),
                    1.0 / (e as f64).sqrt(),
                );
                let want = Tensor::from_f64_slice(&want, &[2, h, l, ev], DType::F64, d)?;
                // The weights are rounded to the dtype before the product with v: one
                // more rounding than the exact result's.
                let tol = Tolerance::for_dtype(dtype).scale(2.0);
                assert_close(&got.to_dtype(DType::F64)?, &want, tol)
                    .unwrap_or_else(|err| panic!("{dtype} {case}: {err}"));
                if case.contains("fully") {
                    let row = got.narrow(2, 2, 1)?.to_f64_vec()?;
                    assert!(
                        row.iter().all(|&x| x == 0.0),
                        "a fully masked row gives 0: {row:?}"
                    );
                }
            }
            // An explicit scale.
            let got = ops::scaled_dot_product_attention(&q, &k, &v, None, 0.0, false, Some(0.5))?;
            let want = exact_attention(&qv, &kv, &vv, None, (n, l, s, e, ev), 0.5);
            let want = Tensor::from_f64_slice(&want, &[2, h, l, ev], DType::F64, d)?;
            assert_close(
                &got.to_dtype(DType::F64)?,
                &want,
                Tolerance::for_dtype(dtype).scale(2.0),
            )
            .unwrap_or_else(|err| panic!("{dtype} scale 0.5: {err}"));
        }
        Ok(())
    }
);

on_every_device!(
    attention_refuses_bad_input_by_name,
    |d: &Device| -> Result<()> {
        let q = Tensor::zeros(&[2, 4, 8], DType::F32, d)?;
        let k = Tensor::zeros(&[2, 5, 8], DType::F32, d)?;
        let v = Tensor::zeros(&[2, 5, 3], DType::F32, d)?;
        let bad_k = Tensor::zeros(&[2, 5, 7], DType::F32, d)?;
        let k16 = Tensor::zeros(&[2, 5, 8], DType::F16, d)?;
        let mask = Tensor::from_vec(vec![true; 20], &[4, 5], d)?;
        let sdpa = ops::scaled_dot_product_attention;
        for (case, err) in [
            (
                "E mismatch",
                sdpa(&q, &bad_k, &v, None, 0.0, false, None).err(),
            ),
            (
                "dtype mismatch",
                sdpa(&q, &k16, &v, None, 0.0, false, None).err(),
            ),
            (
                "mask and causal",
                sdpa(&q, &k, &v, Some(&mask), 0.0, true, None).err(),
            ),
            ("dropout 1", sdpa(&q, &k, &v, None, 1.0, false, None).err()),
        ] {
            let msg = err
                .unwrap_or_else(|| panic!("{case} should be an error"))
                .to_string();
            assert!(
                msg.contains("scaled_dot_product_attention"),
                "{case}: {msg}"
            );
        }
        let err = ops::bmm(&q, &k).unwrap_err().to_string();
        assert!(err.contains("bmm") && err.contains("[2, 4, 8]"), "{err}");
        Ok(())
    }
);

on_every_device!(
    bmm_and_baddbmm_match_exact_products,
    |d: &Device| -> Result<()> {
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let (a, av) = input(&[3, 4, 9], dtype, d, 5)?;
            let (b, bv) = input(&[3, 9, 2], dtype, d, 6)?;
            let (c, cv) = input(&[1, 4, 2], dtype, d, 7)?;
            let mut exact = vec![0.0; 3 * 4 * 2];
            for n in 0..3 {
                for i in 0..4 {
                    for j in 0..2 {
                        exact[(n * 4 + i) * 2 + j] = (0..9)
                            .map(|x| av[(n * 4 + i) * 9 + x] * bv[(n * 9 + x) * 2 + j])
                            .sum();
                    }
                }
            }
            let tol = Tolerance::for_dtype(dtype).scale(2.0);
            let want = Tensor::from_f64_slice(&exact, &[3, 4, 2], DType::F64, d)?;
            assert_close(&ops::bmm(&a, &b)?.to_dtype(DType::F64)?, &want, tol)
                .unwrap_or_else(|e| panic!("bmm {dtype}: {e}"));
            let fused: Vec<f64> = exact
                .iter()
                .enumerate()
                .map(|(i, p)| 0.5 * cv[i % 8] + 2.0 * p)
                .collect();
            let want = Tensor::from_f64_slice(&fused, &[3, 4, 2], DType::F64, d)?;
            assert_close(
                &ops::baddbmm(&c, &a, &b, 0.5, 2.0)?.to_dtype(DType::F64)?,
                &want,
                tol.scale(2.0),
            )
            .unwrap_or_else(|e| panic!("baddbmm {dtype}: {e}"));
        }
        Ok(())
    }
);

/// Numerical gradient of `f` at `x` in f64 (central differences).
fn numerical_grad(x: &Tensor, f: &Loss<'_>) -> Result<Vec<f64>> {
    let values = x.to_f64_vec()?;
    let h = 1e-6;
    let mut grad = Vec::with_capacity(values.len());
    for i in 0..values.len() {
        let mut plus = values.clone();
        plus[i] += h;
        let mut minus = values.clone();
        minus[i] -= h;
        let at = |v: &[f64]| Tensor::from_f64_slice(v, x.dims(), DType::F64, x.device());
        grad.push((f(&at(&plus)?)? - f(&at(&minus)?)?) / (2.0 * h));
    }
    Ok(grad)
}

#[test]
fn attention_gradients_match_finite_differences_in_f64() -> Result<()> {
    let d = Device::reference();
    let q = Tensor::randn(&[2, 3, 4], DType::F64, &d, 1)?;
    let k = Tensor::randn(&[2, 5, 4], DType::F64, &d, 2)?;
    let v = Tensor::randn(&[2, 5, 3], DType::F64, &d, 3)?;
    let w = Tensor::randn(&[2, 3, 3], DType::F64, &d, 4)?; // a random linear read-out
    let mask = Tensor::from_vec(
        (0..15)
            .map(|x| x % 4 != 1 && x / 5 != 1)
            .collect::<Vec<bool>>(),
        &[3, 5],
        &d,
    )?;
    for (case, mask, causal) in [
        ("plain", None, false),
        ("causal", None, true),
        ("masked", Some(&mask), false),
    ] {
        let loss = |q: &Tensor, k: &Tensor, v: &Tensor| -> Result<Tensor> {
            ops::scaled_dot_product_attention(q, k, v, mask, 0.0, causal, None)?
                .mul(&w)?
                .sum_all()
        };
        for t in [&q, &k, &v] {
            t.zero_grad();
            t.set_requires_grad(true)?;
        }
        loss(&q, &k, &v)?.backward()?;
        let checks: [(&str, &Tensor, &Loss<'_>); 3] = [
            ("q", &q, &|x| {
                loss(x, &k.detach(), &v.detach())?.scalar_f64()
            }),
            ("k", &k, &|x| {
                loss(&q.detach(), x, &v.detach())?.scalar_f64()
            }),
            ("v", &v, &|x| {
                loss(&q.detach(), &k.detach(), x)?.scalar_f64()
            }),
        ];
        for (name, t, f) in checks {
            let got = t.grad().expect("a gradient").to_f64_vec()?;
            let want = numerical_grad(&t.detach(), f)?;
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                    "{case} d{name}: {got:?} vs {want:?}"
                );
            }
        }
    }
    Ok(())
}

on_every_device!(
    autocast_runs_batched_products_and_attention_low,
    |d: &Device| -> Result<()> {
        // PyTorch's lists: bmm, baddbmm and attention are `lower_precision_fp` on
        // CPU and CUDA, so f32 inputs (and an f32 float mask) run in the region's dtype.
        let dtype = if d.is_bf16_supported() {
            DType::BF16
        } else {
            DType::F16
        };
        let q = Tensor::randn(&[2, 3, 4], DType::F32, d, 1)?;
        let mask = Tensor::zeros(&[3, 3], DType::F32, d)?;
        let _region = amp_autocast::autocast(d.kind(), dtype).unwrap();
        assert_eq!(ops::bmm(&q, &q.transpose(-1, -2)?)?.dtype(), dtype);
        assert_eq!(
            ops::baddbmm(&mask.unsqueeze(0)?, &q, &q.transpose(-1, -2)?, 1.0, 1.0)?.dtype(),
            dtype
        );
        let y = ops::scaled_dot_product_attention(&q, &q, &q, Some(&mask), 0.0, false, None)?;
        assert_eq!(y.dtype(), dtype);
        Ok(())
    }
);

// ----- The fused kernel against the composed path ---------------------------

/// The fused-vs-composed shapes: batch dimensions, L, S, E, Ev. Odd lengths
/// (1, 7, 33, 130) cut the query and key blocks anywhere; 130 and 200 span
/// two blocks; L ≠ S both ways; one slice (`[]`) with 200 keys makes the
/// backward pass split its key blocks between tasks.
type Shape = (&'static [usize], usize, usize, usize, usize);
const FUSED_SHAPES: [Shape; 8] = [
    (&[2, 2], 1, 1, 16, 16),
    (&[2, 2], 7, 7, 64, 64),
    (&[1, 3], 33, 33, 80, 80),
    (&[2, 2], 130, 130, 64, 64),
    (&[3], 7, 33, 16, 80),
    (&[2, 1], 130, 33, 80, 16),
    (&[1], 33, 130, 64, 64),
    (&[], 200, 200, 64, 64),
];

/// The output and the gradients of q, k, v of `sum(attention(q, k, v) ∘ w)`,
/// on the fused path or the composed one.
fn attention_and_grads(
    (q, k, v, w): (&Tensor, &Tensor, &Tensor, &Tensor),
    mask: Option<&Tensor>,
    causal: bool,
    fused: bool,
) -> Result<(Tensor, Vec<Tensor>, Option<&'static str>)> {
    for t in [q, k, v] {
        t.zero_grad();
        t.set_requires_grad(true)?;
    }
    let before = ops::set_fused_attention(fused);
    let y = ops::scaled_dot_product_attention(q, k, v, mask, 0.0, causal, None);
    ops::set_fused_attention(before);
    let y = y?;
    let node = y.grad_fn_name();
    y.mul(w)?.sum_all()?.backward()?;
    let grads = [q, k, v]
        .iter()
        .map(|t| t.grad().expect("a gradient"))
        .collect();
    for t in [q, k, v] {
        t.set_requires_grad(false)?;
        t.zero_grad();
    }
    Ok((y.detach(), grads, node))
}

/// The largest magnitude among a tensor's values.
fn max_abs(t: &Tensor) -> Result<f64> {
    Ok(t.to_f64_vec()?.iter().fold(0.0, |m, x| m.max(x.abs())))
}

on_every_device!(
    fused_attention_matches_the_composed_path,
    |d: &Device| -> Result<()> {
        let fused_here = d.backend_name() == "cpu";
        for (si, &(batch, l, s, e, ev)) in FUSED_SHAPES.iter().enumerate() {
            let dims = |x: usize, y: usize| [batch, &[x, y]].concat();
            for dtype in [DType::F32, DType::BF16, DType::F16] {
                let seed = 10 * si as u64;
                let (q, _) = input(&dims(l, e), dtype, d, seed + 1)?;
                let (k, _) = input(&dims(s, e), dtype, d, seed + 2)?;
                let (v, _) = input(&dims(s, ev), dtype, d, seed + 3)?;
                let (w, _) = input(&dims(l, ev), dtype, d, seed + 4)?;
                // A bool mask whose row 2 (or the only row) masks every key, and a
                // float mask with a fully masked row 0 (-inf throughout).
                let dead = 2.min(l - 1);
                let allowed: Vec<bool> = (0..l * s)
                    .map(|x| x / s != dead && (x * 7) % 3 != 0)
                    .collect();
                let bool_mask = Tensor::from_vec(allowed, &[l, s], d)?;
                let float_bias: Vec<f64> = (0..l * s)
                    .map(|x| {
                        if x / s == 0 && l > 1 {
                            f64::NEG_INFINITY
                        } else {
                            ((x % 5) as f64 - 2.0) * 0.5
                        }
                    })
                    .collect();
                let float_mask = Tensor::from_f64_slice(&float_bias, &[l, s], dtype, d)?;
                let cases: [(&str, Option<&Tensor>, bool, Option<usize>); 4] = [
                    ("no mask", None, false, None),
                    ("causal", None, true, None),
                    ("bool mask", Some(&bool_mask), false, Some(dead)),
                    ("float mask", Some(&float_mask), false, (l > 1).then_some(0)),
                ];
                for (case, mask, causal, dead_row) in cases {
                    let what = format!("{dtype} {case} batch {batch:?} L {l} S {s} E {e} Ev {ev}");
                    let inputs = (&q, &k, &v, &w);
                    let (got, got_grads, node) = attention_and_grads(inputs, mask, causal, true)?;
                    let (want, want_grads, composed) =
                        attention_and_grads(inputs, mask, causal, false)?;
                    if fused_here {
                        assert_eq!(node, Some("scaled_dot_product_attention"), "{what}");
                    }
                    assert_ne!(composed, Some("scaled_dot_product_attention"), "{what}");
                    // Both paths round the weights once to the dtype (the fused one
                    // before normalising, the composed one after): each output is
                    // off by at most u·Σ w|v| ≤ u·max|v| from the unrounded one
                    // (u = eps/2), so the two differ by eps·max|v| absolute, and by
                    // the two roundings of the output (rel twice the preset).
                    let u = dtype.finfo().map_or(0.0, |f| f.eps);
                    let preset = Tolerance::for_dtype(dtype);
                    let tol = Tolerance {
                        rel: 2.0 * preset.rel,
                        abs: preset.abs + u * max_abs(&v)?,
                    };
                    assert_close(&got.to_dtype(DType::F64)?, &want.to_dtype(DType::F64)?, tol)
                        .unwrap_or_else(|err| panic!("{what} output: {err}"));
                    for ((name, g), want) in
                        ["dq", "dk", "dv"].iter().zip(&got_grads).zip(&want_grads)
                    {
                        // The gradients go through more rounded products (P, dP, dS in
                        // the dtype on the composed path, P and dS on the fused one):
                        // each differs by a few roundings of the terms of its sums,
                        // bounded by the largest gradient's magnitude times 4·eps.
                        let tol = Tolerance {
                            rel: 4.0 * preset.rel,
                            abs: preset.abs + 4.0 * u * max_abs(want)?,
                        };
                        assert_close(&g.to_dtype(DType::F64)?, &want.to_dtype(DType::F64)?, tol)
                            .unwrap_or_else(|err| panic!("{what} {name}: {err}"));
                    }
                    if let Some(row) = dead_row {
                        let out_row = got.narrow(-2, row, 1)?.to_f64_vec()?;
                        let dq_row = got_grads[0].narrow(-2, row, 1)?.to_f64_vec()?;
                        assert!(
                            out_row.iter().chain(&dq_row).all(|&x| x == 0.0),
                            "{what}: a fully masked row gives 0 and no gradient"
                        );
                    }
                }
            }
        }
        Ok(())
    }
);
