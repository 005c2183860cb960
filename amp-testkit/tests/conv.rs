//! Convolution, pooling, batch and group normalisation on every device
//! against exact f64 loops written here (forward and the gradients of every
//! input), f32 / bf16 / f16, for odd sizes, stride, padding, dilation,
//! groups, 1×1 and depthwise kernels; batch norm's running statistics
//! against a hand-computed sequence, and evaluation mode.

use amp_tensor::ops::{
    self, BatchNormOptions, Conv1dOptions, Conv2dOptions, Pool2dOptions, RunningStats,
};
use amp_tensor::{DType, Device, Result, Tensor};
use amp_testkit::{assert_close, check_values, on_every_device, Tolerance, FLOATS};

/// A tensor of `shape` rounded to `dtype`, and its values.
fn input(shape: &[usize], dtype: DType, device: &Device, seed: u64) -> Result<(Tensor, Vec<f64>)> {
    let t = Tensor::randn(shape, DType::F32, device, seed)?.to_dtype(dtype)?;
    let values = t.to_f64_vec()?;
    Ok((t, values))
}

/// One convolution case: `[n, c, h, w]`, output channels, kernel, options.
struct ConvCase {
    x: [usize; 4],
    oc: usize,
    kernel: [usize; 2],
    options: Conv2dOptions,
}

impl ConvCase {
    fn weight(&self) -> [usize; 4] {
        [
            self.oc,
            self.x[1] / self.options.groups,
            self.kernel[0],
            self.kernel[1],
        ]
    }

    fn out(&self) -> [usize; 2] {
        let o = &self.options;
        let f = |i: usize| {
            (self.x[2 + i] + 2 * o.padding[i] - o.dilation[i] * (self.kernel[i] - 1) - 1)
                / o.stride[i]
                + 1
        };
        [f(0), f(1)]
    }

    /// Calls `f(output index, input index, weight index)` for every product
    /// term of the convolution.
    fn terms(&self, mut f: impl FnMut(usize, usize, usize)) {
        let [n, c, h, w] = self.x;
        let [oh, ow] = self.out();
        let (g, cg, og) = (
            self.options.groups,
            c / self.options.groups,
            self.oc / self.options.groups,
        );
        let o = &self.options;
        for b in 0..n {
            for oc in 0..self.oc {
                let group = oc / og;
                for y in 0..oh {
                    for x in 0..ow {
                        let out = ((b * self.oc + oc) * oh + y) * ow + x;
                        for ci in 0..cg {
                            let ch = group * cg + ci;
                            for ky in 0..self.kernel[0] {
                                for kx in 0..self.kernel[1] {
                                    let iy = (y * o.stride[0] + ky * o.dilation[0]) as isize
                                        - o.padding[0] as isize;
                                    let ix = (x * o.stride[1] + kx * o.dilation[1]) as isize
                                        - o.padding[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let inp = ((b * c + ch) * h + iy as usize) * w + ix as usize;
                                    let wt = ((oc * cg + ci) * self.kernel[0] + ky)
                                        * self.kernel[1]
                                        + kx;
                                    f(out, inp, wt);
                                }
                            }
                        }
                    }
                }
            }
        }
        let _ = g;
    }
}

/// Copies of `tensors` on `device`, detached, each a leaf that requires grad.
fn leaves_on(device: &Device, tensors: &[&Tensor]) -> Result<Vec<Tensor>> {
    let leaves: Vec<Tensor> = tensors
        .iter()
        .map(|t| t.to_device(device).map(|t| t.detach()))
        .collect::<Result<_>>()?;
    for l in &leaves {
        l.set_requires_grad(true)?;
    }
    Ok(leaves)
}

fn conv_cases() -> Vec<ConvCase> {
    let o = Conv2dOptions::default;
    vec![
        // Odd sizes, padding.
        ConvCase {
            x: [2, 3, 7, 6],
            oc: 4,
            kernel: [3, 3],
            options: o().padding(1),
        },
        // Stride and padding per direction, two groups, a non-square kernel.
        ConvCase {
            x: [1, 4, 9, 8],
            oc: 6,
            kernel: [2, 3],
            options: Conv2dOptions {
                stride: [2, 1],
                padding: [0, 2],
                ..o().groups(2)
            },
        },
        // Depthwise with dilation.
        ConvCase {
            x: [2, 3, 10, 9],
            oc: 3,
            kernel: [3, 3],
            options: Conv2dOptions {
                stride: [1, 2],
                padding: [2, 1],
                dilation: [2, 2],
                groups: 3,
            },
        },
        // 1×1 with a stride.
        ConvCase {
            x: [3, 5, 4, 5],
            oc: 7,
            kernel: [1, 1],
            options: o().stride(2),
        },
        // Stride 1 with groups, dilation and uneven padding (the input's
        // gradient as a convolution of the output's).
        ConvCase {
            x: [2, 4, 7, 7],
            oc: 8,
            kernel: [3, 3],
            options: Conv2dOptions {
                padding: [2, 0],
                dilation: [2, 1],
                ..o().groups(2)
            },
        },
        // Stride 1 with more padding than the kernel spans.
        ConvCase {
            x: [1, 3, 4, 4],
            oc: 2,
            kernel: [1, 1],
            options: o().padding(1),
        },
        // A longer reduction: 16 channels × 9 taps.
        ConvCase {
            x: [2, 16, 6, 6],
            oc: 8,
            kernel: [3, 3],
            options: o().padding(1),
        },
    ]
}

on_every_device!(
    conv2d_matches_an_exact_computation,
    |d: &Device| -> Result<()> {
        for dtype in FLOATS {
            for (i, case) in conv_cases().iter().enumerate() {
                let seed = 10 * i as u64;
                let (x, xv) = input(&case.x, dtype, d, seed)?;
                let (w, wv) = input(&case.weight(), dtype, d, seed + 1)?;
                let (b, bv) = input(&[case.oc], dtype, d, seed + 2)?;
                let [oh, ow] = case.out();
                let out_len = case.x[0] * case.oc * oh * ow;
                let mut want = vec![0.0; out_len];
                case.terms(|o, i, k| want[o] += xv[i] * wv[k]);
                let plane = oh * ow;
                for (o, v) in want.iter_mut().enumerate() {
                    *v += bv[(o / plane) % case.oc];
                }
                for t in [&x, &w, &b] {
                    t.set_requires_grad(true)?;
                }
                let y = ops::conv2d(&x, &w, Some(&b), case.options)?;
                let ctx = format!("conv2d case {i} {dtype}");
                assert_eq!(y.dims(), &[case.x[0], case.oc, oh, ow], "{ctx}");
                assert_eq!(y.dtype(), dtype, "{ctx}");
                let taps = (case.weight()[1] * case.kernel[0] * case.kernel[1]) as f64;
                let tol = Tolerance::for_dtype(dtype).scale_abs(taps.sqrt());
                check_values(&y.to_f64_vec()?, &want, tol)
                    .map_err(|e| amp_tensor::Error::invalid("conv2d", format!("{ctx}: {e}")))?;
                // Gradients for an upstream gradient g: gx = Σ g·w, gw = Σ g·x, gb = Σ g.
                let (g, gv) = input(y.dims(), dtype, d, seed + 3)?;
                y.backward_with(&g)?;
                let (mut gx, mut gw, mut gb) =
                    (vec![0.0; xv.len()], vec![0.0; wv.len()], vec![0.0; case.oc]);
                case.terms(|o, i, k| {
                    gx[i] += gv[o] * wv[k];
                    gw[k] += gv[o] * xv[i];
                });
                for (o, v) in gv.iter().enumerate() {
                    gb[(o / plane) % case.oc] += v;
                }
                let long = ((case.x[0] * plane) as f64).sqrt();
                for (name, t, want, terms) in [
                    ("x", &x, &gx, taps),
                    ("weight", &w, &gw, long * long),
                    ("bias", &b, &gb, long * long),
                ] {
                    let got = t.grad().expect("gradient").to_f64_vec()?;
                    let tol = Tolerance::for_dtype(dtype)
                        .scale_abs(terms.sqrt())
                        .scale(2.0);
                    check_values(&got, want, tol).map_err(|e| {
                        amp_tensor::Error::invalid("conv2d", format!("{ctx} grad {name}: {e}"))
                    })?;
                }
            }
        }
        Ok(())
    }
);

on_every_device!(
    conv2d_gradients_are_the_same_whichever_inputs_need_them,
    |d: &Device| -> Result<()> {
        // An image input (no gradient) and a frozen weight: the backward skips
        // what no input needs; what it computes equals the run where every
        // input needs a gradient. Stride 1 (the input's gradient as a
        // convolution) and stride 2 (as col2im).
        for dtype in FLOATS {
            for stride in [1, 2] {
                let options = Conv2dOptions::default().padding(1).stride(stride);
                let (x, _) = input(&[2, 5, 7, 6], dtype, d, 70)?;
                let (w, _) = input(&[4, 5, 3, 3], dtype, d, 71)?;
                let (b, _) = input(&[4], dtype, d, 72)?;
                let (g, _) = input(&ops::conv2d(&x, &w, None, options)?.shape(), dtype, d, 73)?;
                let grads = |needs: [bool; 3]| -> Result<[Option<Vec<f64>>; 3]> {
                    let (x, w, b) = (x.detach(), w.detach(), b.detach());
                    for (t, need) in [&x, &w, &b].into_iter().zip(needs) {
                        t.set_requires_grad(need)?;
                    }
                    ops::conv2d(&x, &w, Some(&b), options)?.backward_with(&g)?;
                    let read = |t: &Tensor| t.grad().map(|g| g.to_f64_vec()).transpose();
                    Ok([read(&x)?, read(&w)?, read(&b)?])
                };
                let all = grads([true; 3])?;
                for needs in [
                    [false, true, true],
                    [true, false, false],
                    [false, false, true],
                ] {
                    let some = grads(needs)?;
                    for (i, need) in needs.into_iter().enumerate() {
                        let ctx = format!("{dtype} stride {stride} needs {needs:?} input {i}");
                        if need {
                            assert_eq!(some[i], all[i], "{ctx}");
                        } else {
                            assert!(some[i].is_none(), "{ctx}: a gradient nobody asked for");
                        }
                    }
                }
            }
        }
        Ok(())
    }
);

on_every_device!(conv1d_is_conv2d_over_one_row, |d: &Device| -> Result<()> {
    for dtype in FLOATS {
        let (x, _) = input(&[2, 4, 11], dtype, d, 1)?;
        let (w, _) = input(&[6, 2, 3], dtype, d, 2)?;
        let o1 = Conv1dOptions {
            stride: 2,
            padding: 2,
            dilation: 2,
            groups: 2,
        };
        let y = ops::conv1d(&x, &w, None, o1)?;
        let o2 = Conv2dOptions {
            stride: [1, 2],
            padding: [0, 2],
            dilation: [1, 2],
            groups: 2,
        };
        let want = ops::conv2d(&x.unsqueeze(2)?, &w.unsqueeze(2)?, None, o2)?.squeeze(2)?;
        assert_eq!(y.dims(), &[2, 6, 6]);
        assert_close(&y, &want, Tolerance::EXACT)?;
        // Unbatched input.
        let y1 = ops::conv1d(&x.narrow(0, 1, 1)?.squeeze(0)?, &w, None, o1)?;
        assert_close(&y1, &y.narrow(0, 1, 1)?.squeeze(0)?, Tolerance::EXACT)?;
    }
    Ok(())
});

on_every_device!(
    a_convolution_without_input_channels_gives_its_bias,
    |d: &Device| -> Result<()> {
        let x = Tensor::zeros(&[2, 0, 4, 4], DType::F32, d)?;
        let w = Tensor::zeros(&[3, 0, 3, 3], DType::F32, d)?;
        let b = Tensor::from_f64_slice(&[1.0, -2.0, 0.5], &[3], DType::F32, d)?;
        let y = ops::conv2d(&x, &w, Some(&b), Conv2dOptions::default().padding(1))?;
        assert_eq!(y.dims(), &[2, 3, 4, 4]);
        let want: Vec<f64> = (0..2 * 3 * 16)
            .map(|i| [1.0, -2.0, 0.5][i / 16 % 3])
            .collect();
        assert_eq!(y.to_f64_vec()?, want);
        Ok(())
    }
);

on_every_device!(bad_convolutions_are_errors, |d: &Device| -> Result<()> {
    let x = Tensor::zeros(&[1, 4, 5, 5], DType::F32, d)?;
    let cases: Vec<(Tensor, Conv2dOptions, &str)> = vec![
        (
            Tensor::zeros(&[2, 3, 3, 3], DType::F32, d)?,
            Conv2dOptions::default(),
            "input channels (4)",
        ),
        (
            Tensor::zeros(&[3, 2, 3, 3], DType::F32, d)?,
            Conv2dOptions::default().groups(2),
            "multiple of groups",
        ),
        (
            Tensor::zeros(&[2, 4, 7, 7], DType::F32, d)?,
            Conv2dOptions::default(),
            "smaller than the kernel",
        ),
        (
            Tensor::zeros(&[2, 4, 3, 3], DType::F32, d)?,
            Conv2dOptions::default().stride(0),
            "stride must be at least 1",
        ),
        (
            Tensor::zeros(&[2, 4, 3, 3], DType::BF16, d)?,
            Conv2dOptions::default(),
            "bf16",
        ),
        (
            Tensor::zeros(&[2, 4, 3], DType::F32, d)?,
            Conv2dOptions::default(),
            "[OC, C/groups, KH, KW]",
        ),
    ];
    for (w, o, says) in cases {
        let err = ops::conv2d(&x, &w, None, o).unwrap_err().to_string();
        assert!(err.contains("conv2d") && err.contains(says), "{err}");
    }
    let err = ops::conv2d(
        &Tensor::zeros(&[5, 5], DType::F32, d)?,
        &Tensor::zeros(&[1, 1, 1, 1], DType::F32, d)?,
        None,
        Conv2dOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("[5, 5]"), "{err}");
    let err = ops::max_pool2d(&x, Pool2dOptions::new(2).padding(2))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("max_pool2d") && err.contains("half the kernel"),
        "{err}"
    );
    Ok(())
});

/// The windows of a pooling case: for each output element, the input indices
/// it covers (None for padding).
fn pool_windows(shape: [usize; 4], o: Pool2dOptions) -> (Vec<Vec<Option<usize>>>, [usize; 2]) {
    let [n, c, h, w] = shape;
    let oh = (h + 2 * o.padding[0] - o.kernel[0]) / o.stride[0] + 1;
    let ow = (w + 2 * o.padding[1] - o.kernel[1]) / o.stride[1] + 1;
    let mut windows = Vec::new();
    for p in 0..n * c {
        for y in 0..oh {
            for x in 0..ow {
                let mut taps = Vec::new();
                for ky in 0..o.kernel[0] {
                    for kx in 0..o.kernel[1] {
                        let iy = (y * o.stride[0] + ky) as isize - o.padding[0] as isize;
                        let ix = (x * o.stride[1] + kx) as isize - o.padding[1] as isize;
                        let inside = iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize;
                        taps.push(inside.then(|| (p * h + iy as usize) * w + ix as usize));
                    }
                }
                windows.push(taps);
            }
        }
    }
    (windows, [oh, ow])
}

on_every_device!(
    poolings_match_an_exact_computation,
    |d: &Device| -> Result<()> {
        let shape = [2, 3, 7, 6];
        let options = [
            Pool2dOptions::new(2),
            Pool2dOptions::new(3).stride(2).padding(1),
            Pool2dOptions {
                kernel: [2, 3],
                stride: [1, 2],
                padding: [1, 1],
            },
        ];
        for dtype in FLOATS {
            for (i, &o) in options.iter().enumerate() {
                let ctx = format!("pool case {i} {dtype}");
                let (windows, [oh, ow]) = pool_windows(shape, o);
                let (x, xv) = input(&shape, dtype, d, 40 + i as u64)?;
                let (g, gv) = input(&[2, 3, oh, ow], dtype, d, 50 + i as u64)?;
                // Max: the first maximum of each window takes the gradient.
                x.set_requires_grad(true)?;
                let y = ops::max_pool2d(&x, o)?;
                assert_eq!((y.dims(), y.dtype()), (&[2, 3, oh, ow][..], dtype), "{ctx}");
                let mut want = Vec::new();
                let mut gx = vec![0.0; xv.len()];
                for (k, taps) in windows.iter().enumerate() {
                    let mut best: Option<usize> = None;
                    for &t in taps.iter().flatten() {
                        if best.is_none_or(|b| xv[t] > xv[b]) {
                            best = Some(t);
                        }
                    }
                    let b = best.expect("a window inside the plane");
                    want.push(xv[b]);
                    gx[b] += gv[k];
                }
                check_values(&y.to_f64_vec()?, &want, Tolerance::EXACT)?;
                y.backward_with(&g)?;
                let tol = Tolerance::for_dtype(dtype);
                check_values(&x.grad().expect("grad").to_f64_vec()?, &gx, tol)
                    .map_err(|e| amp_tensor::Error::invalid("max_pool2d", format!("{ctx}: {e}")))?;
                // Average, with and without padding in the divisor.
                for include in [true, false] {
                    x.zero_grad();
                    let y = ops::avg_pool2d(&x, o, include)?;
                    let (mut want, mut gx) = (Vec::new(), vec![0.0; xv.len()]);
                    for (k, taps) in windows.iter().enumerate() {
                        let inside: Vec<usize> = taps.iter().flatten().copied().collect();
                        let count = if include { taps.len() } else { inside.len() } as f64;
                        want.push(inside.iter().map(|&t| xv[t]).sum::<f64>() / count);
                        for &t in &inside {
                            gx[t] += gv[k] / count;
                        }
                    }
                    check_values(&y.to_f64_vec()?, &want, tol).map_err(|e| {
                        amp_tensor::Error::invalid("avg_pool2d", format!("{ctx} {include}: {e}"))
                    })?;
                    y.backward_with(&g)?;
                    check_values(&x.grad().expect("grad").to_f64_vec()?, &gx, tol).map_err(
                        |e| {
                            amp_tensor::Error::invalid(
                                "avg_pool2d",
                                format!("{ctx} {include} grad: {e}"),
                            )
                        },
                    )?;
                }
            }
            // Adaptive: uneven bins (7 rows into 3, 6 columns into 4) and the global mean.
            for out in [[3, 4], [1, 1], [7, 3]] {
                let (x, xv) = input(&shape, dtype, d, 60)?;
                let y = ops::adaptive_avg_pool2d(&x, out)?;
                let mut want = Vec::new();
                for p in 0..6 {
                    for i in 0..out[0] {
                        for j in 0..out[1] {
                            let (r0, r1) = (i * 7 / out[0], ((i + 1) * 7).div_ceil(out[0]));
                            let (c0, c1) = (j * 6 / out[1], ((j + 1) * 6).div_ceil(out[1]));
                            let mut s = 0.0;
                            for r in r0..r1 {
                                for c in c0..c1 {
                                    s += xv[(p * 7 + r) * 6 + c];
                                }
                            }
                            want.push(s / ((r1 - r0) * (c1 - c0)) as f64);
                        }
                    }
                }
                assert_eq!(y.dims(), &[2, 3, out[0], out[1]]);
                check_values(&y.to_f64_vec()?, &want, Tolerance::for_dtype(dtype))?;
            }
        }
        Ok(())
    }
);

on_every_device!(max_pool2d_propagates_nan, |d: &Device| -> Result<()> {
    let mut v: Vec<f64> = (0..16).map(|i| i as f64).collect();
    v[5] = f64::NAN;
    let x = Tensor::from_f64_slice(&v, &[1, 1, 4, 4], DType::F32, d)?;
    let y = ops::max_pool2d(&x, Pool2dOptions::new(2))?.to_f64_vec()?;
    assert!(y[0].is_nan(), "{y:?}");
    assert_eq!(&y[1..], &[7.0, 13.0, 15.0]);
    Ok(())
});

/// Exact batch norm of `x` `[n, c, l]` values: `(y, batch mean, biased var)`.
fn exact_batch_norm(
    xv: &[f64],
    [n, c, l]: [usize; 3],
    w: &[f64],
    b: &[f64],
    eps: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let count = (n * l) as f64;
    let mut y = vec![0.0; xv.len()];
    let (mut means, mut vars) = (Vec::new(), Vec::new());
    for ch in 0..c {
        let idx = |s: usize, p: usize| (s * c + ch) * l + p;
        let mean: f64 = (0..n)
            .flat_map(|s| (0..l).map(move |p| (s, p)))
            .map(|(s, p)| xv[idx(s, p)])
            .sum::<f64>()
            / count;
        let var: f64 = (0..n)
            .flat_map(|s| (0..l).map(move |p| (s, p)))
            .map(|(s, p)| (xv[idx(s, p)] - mean).powi(2))
            .sum::<f64>()
            / count;
        for s in 0..n {
            for p in 0..l {
                y[idx(s, p)] = (xv[idx(s, p)] - mean) / (var + eps).sqrt() * w[ch] + b[ch];
            }
        }
        means.push(mean);
        vars.push(var);
    }
    (y, means, vars)
}

on_every_device!(
    batch_norm_matches_an_exact_computation,
    |d: &Device| -> Result<()> {
        let (n, c, h, w) = (4, 3, 5, 3);
        for dtype in FLOATS {
            // A large mean and a small spread: a low-precision variance would be wrong.
            let raw = Tensor::randn(&[n, c, h, w], DType::F32, d, 7)?;
            let x = raw.mul_scalar(0.5)?.add_scalar(100.0)?.to_dtype(dtype)?;
            let xv = x.to_f64_vec()?;
            // f32 parameters with a low-precision input: PyTorch's mixed type.
            let wt = Tensor::from_f64_slice(&[1.5, -0.5, 2.0], &[c], DType::F32, d)?;
            let bs = Tensor::from_f64_slice(&[0.1, 0.2, -0.3], &[c], DType::F32, d)?;
            let rm = Tensor::zeros(&[c], DType::F32, d)?;
            let rv = Tensor::ones(&[c], DType::F32, d)?;
            let (want, means, vars) = exact_batch_norm(
                &xv,
                [n, c, h * w],
                &[1.5, -0.5, 2.0],
                &[0.1, 0.2, -0.3],
                1e-5,
            );
            let opts = BatchNormOptions::default();
            let running = RunningStats {
                mean: &rm,
                var: &rv,
            };
            let y = ops::batch_norm(&x, Some(running), Some(&wt), Some(&bs), opts)?;
            assert_eq!(y.dtype(), dtype);
            // Normalised values are O(1): the output's rounding dominates.
            check_values(
                &y.to_f64_vec()?,
                &want,
                Tolerance::for_dtype(dtype).scale(4.0),
            )
            .map_err(|e| amp_tensor::Error::invalid("batch_norm", format!("{dtype}: {e}")))?;
            // Running statistics after one step of momentum 0.1 (unbiased variance).
            let count = (n * h * w) as f64;
            let rm_want: Vec<f64> = means.iter().map(|m| 0.1 * m).collect();
            let rv_want: Vec<f64> = vars
                .iter()
                .map(|v| 0.9 + 0.1 * v * count / (count - 1.0))
                .collect();
            check_values(&rm.to_f64_vec()?, &rm_want, Tolerance::F32_SUM.scale(100.0))?;
            check_values(&rv.to_f64_vec()?, &rv_want, Tolerance::F32_SUM.scale(10.0))?;
            // Evaluation mode normalises with the running statistics.
            let eval = BatchNormOptions {
                training: false,
                ..opts
            };
            let y = ops::batch_norm(&x, Some(running), Some(&wt), Some(&bs), eval)?;
            let rmv = rm.to_f64_vec()?;
            let rvv = rv.to_f64_vec()?;
            let wv = [1.5, -0.5, 2.0];
            let bv = [0.1, 0.2, -0.3];
            let want: Vec<f64> = xv
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let ch = (i / (h * w)) % c;
                    (v - rmv[ch]) / (rvv[ch] + 1e-5).sqrt() * wv[ch] + bv[ch]
                })
                .collect();
            check_values(
                &y.to_f64_vec()?,
                &want,
                Tolerance::for_dtype(dtype).scale(4.0).scale_abs(100.0),
            )
            .map_err(|e| amp_tensor::Error::invalid("batch_norm", format!("eval {dtype}: {e}")))?;
        }
        Ok(())
    }
);

on_every_device!(
    batch_norm_gradients_match_the_reference,
    |d: &Device| -> Result<()> {
        let r = Device::reference();
        for dtype in FLOATS {
            let (x, _) = input(&[3, 4, 2, 3], dtype, d, 8)?;
            let (g, _) = input(&[3, 4, 2, 3], dtype, d, 9)?;
            let wt = Tensor::randn(&[4], DType::F32, d, 10)?;
            let bs = Tensor::randn(&[4], DType::F32, d, 11)?;
            let rm = Tensor::randn(&[4], DType::F32, d, 12)?;
            let rv = Tensor::randn(&[4], DType::F32, d, 13)?
                .abs()?
                .add_scalar(0.5)?;
            // Training and evaluation mode, with and without the affine parameters.
            for (training, affine) in [(true, true), (false, true), (true, false)] {
                let run = |dev: &Device| -> Result<Vec<Tensor>> {
                    let leaves = leaves_on(dev, &[&x, &wt, &bs])?;
                    let (rm, rv) = (rm.to_device(dev)?, rv.to_device(dev)?);
                    let running = RunningStats {
                        mean: &rm,
                        var: &rv,
                    };
                    let options = BatchNormOptions {
                        training,
                        ..BatchNormOptions::default()
                    };
                    let y = ops::batch_norm(
                        &leaves[0],
                        Some(running),
                        affine.then_some(&leaves[1]),
                        affine.then_some(&leaves[2]),
                        options,
                    )?;
                    y.backward_with(&g.to_device(dev)?)?;
                    let used = if affine { 3 } else { 1 };
                    Ok(leaves[..used]
                        .iter()
                        .map(|l| l.grad().expect("grad"))
                        .collect())
                };
                let (got, want) = (run(d)?, run(&r)?);
                for ((name, a), e) in ["x", "weight", "bias"].iter().zip(&got).zip(&want) {
                    let tol = Tolerance::for_dtype(a.dtype()).scale(4.0).scale_abs(4.0);
                    assert_close(a, e, tol).map_err(|err| {
                        let what =
                            format!("{dtype} training {training} affine {affine} grad {name}");
                        amp_tensor::Error::invalid("batch_norm", format!("{what}: {err}"))
                    })?;
                }
            }
        }
        Ok(())
    }
);

on_every_device!(
    group_norm_gradients_match_the_reference,
    |d: &Device| -> Result<()> {
        let r = Device::reference();
        for dtype in FLOATS {
            // One group, several, one per channel; a 4-D and a 3-D input; with
            // and without the affine parameters.
            for (shape, groups, affine) in [
                (&[3, 6, 2, 3][..], 3, true),
                (&[3, 6, 2, 3][..], 1, true),
                (&[2, 6, 5][..], 6, true),
                (&[2, 4, 7][..], 2, false),
            ] {
                let c = shape[1];
                let (x, _) = input(shape, dtype, d, 14)?;
                let (g, _) = input(shape, dtype, d, 15)?;
                let wt = Tensor::randn(&[c], DType::F32, d, 16)?;
                let bs = Tensor::randn(&[c], DType::F32, d, 17)?;
                let run = |dev: &Device| -> Result<(Tensor, Vec<Tensor>)> {
                    let leaves = leaves_on(dev, &[&x, &wt, &bs])?;
                    let y = ops::group_norm(
                        &leaves[0],
                        groups,
                        affine.then_some(&leaves[1]),
                        affine.then_some(&leaves[2]),
                        1e-5,
                    )?;
                    y.backward_with(&g.to_device(dev)?)?;
                    let used = if affine { 3 } else { 1 };
                    let grads = leaves[..used]
                        .iter()
                        .map(|l| l.grad().expect("grad"))
                        .collect();
                    Ok((y, grads))
                };
                let ((y, got), (y_ref, want)) = (run(d)?, run(&r)?);
                let what = format!("{dtype} {shape:?} groups {groups} affine {affine}");
                let tol = Tolerance::for_dtype(dtype).scale(4.0).scale_abs(4.0);
                assert_close(&y, &y_ref, tol).map_err(|err| {
                    amp_tensor::Error::invalid("group_norm", format!("{what} output: {err}"))
                })?;
                for ((name, a), e) in ["x", "weight", "bias"].iter().zip(&got).zip(&want) {
                    let tol = Tolerance::for_dtype(a.dtype()).scale(4.0).scale_abs(4.0);
                    assert_close(a, e, tol).map_err(|err| {
                        amp_tensor::Error::invalid(
                            "group_norm",
                            format!("{what} grad {name}: {err}"),
                        )
                    })?;
                }
            }
        }
        Ok(())
    }
);

on_every_device!(
    group_norm_matches_an_exact_computation,
    |d: &Device| -> Result<()> {
        let (n, c, l, groups) = (2, 6, 5, 3);
        for dtype in FLOATS {
            let (x, xv) = input(&[n, c, l], dtype, d, 12)?;
            let wv = [1.0, 0.5, -1.0, 2.0, 0.25, 1.5];
            let bv = [0.0, 0.1, 0.2, -0.1, -0.2, 0.3];
            let wt = Tensor::from_f64_slice(&wv, &[c], DType::F32, d)?;
            let bs = Tensor::from_f64_slice(&bv, &[c], DType::F32, d)?;
            let y = ops::group_norm(&x, groups, Some(&wt), Some(&bs), 1e-5)?;
            assert_eq!(y.dtype(), dtype);
            let per = c / groups * l;
            let mut want = vec![0.0; xv.len()];
            for s in 0..n {
                for gi in 0..groups {
                    let range = (s * c + gi * c / groups) * l..(s * c + gi * c / groups) * l + per;
                    let mean = xv[range.clone()].iter().sum::<f64>() / per as f64;
                    let var = xv[range.clone()]
                        .iter()
                        .map(|v| (v - mean).powi(2))
                        .sum::<f64>()
                        / per as f64;
                    for i in range {
                        let ch = (i / l) % c;
                        want[i] = (xv[i] - mean) / (var + 1e-5).sqrt() * wv[ch] + bv[ch];
                    }
                }
            }
            check_values(
                &y.to_f64_vec()?,
                &want,
                Tolerance::for_dtype(dtype).scale(4.0),
            )
            .map_err(|e| amp_tensor::Error::invalid("group_norm", format!("{dtype}: {e}")))?;
        }
        Ok(())
    }
);
