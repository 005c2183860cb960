//! Convolution and pooling over NCHW tensors: `conv1d`, `conv2d`,
//! `max_pool2d`, `avg_pool2d`, `adaptive_avg_pool2d`.
//!
//! Every op here is composed from one gather of sliding windows (im2col,
//! `torch.nn.functional.unfold`: an `index_select` over the flattened planes,
//! with one extra slot of padding value that out-of-bounds taps read) and the
//! ops that already run on every backend: a matrix product for convolution
//! (cuBLAS / the packed CPU GEMM with f32 accumulation), a max or mean over
//! the window for pooling. The backward passes follow from theirs: the
//! gather's gradient is a scatter-add of the window gradients (col2im), the
//! max's gradient goes to the index of the first maximum of each window.
//!
//! A backend may convolve NCHW tensors itself ([`crate::backend::Backend::conv2d`]
//! and its weight gradient): the CPU backend does, as implicit GEMMs that
//! never store the windows. Elsewhere the windows are gathered as rows
//! `[N·OH·OW, C·KH·KW]`, one product with the weight per group gives
//! `[N·OH·OW, OC]`, viewed as `[N, OC, OH, OW]`.

use super::{output_fits, require_float, same_device};
use crate::backend::{Im2col, ReduceOp};
use crate::dispatch::dispatch;
use crate::{Error, Result, Tensor};
use amp_dtype::DType;

/// Stride, padding, dilation and groups of a 2-D convolution
/// (`torch.nn.functional.conv2d`'s keyword arguments; `Default` is PyTorch's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dOptions {
    /// Step between windows, `[height, width]`.
    pub stride: [usize; 2],
    /// Zeros added on both sides, `[height, width]`.
    pub padding: [usize; 2],
    /// Spacing between kernel taps, `[height, width]`.
    pub dilation: [usize; 2],
    /// Channel groups: input and output channels split into this many
    /// independent convolutions (`groups == in_channels` is depthwise).
    pub groups: usize,
}

impl Default for Conv2dOptions {
    fn default() -> Self {
        Conv2dOptions {
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        }
    }
}

impl Conv2dOptions {
    /// The same stride in both directions.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = [s, s];
        self
    }
    /// The same padding in both directions.
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = [p, p];
        self
    }
    /// The same dilation in both directions.
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = [d, d];
        self
    }
    /// Channel groups.
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
}

/// Stride, padding, dilation and groups of a 1-D convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv1dOptions {
    /// Step between windows.
    pub stride: usize,
    /// Zeros added on both sides.
    pub padding: usize,
    /// Spacing between kernel taps.
    pub dilation: usize,
    /// Channel groups.
    pub groups: usize,
}

impl Default for Conv1dOptions {
    fn default() -> Self {
        Conv1dOptions {
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
        }
    }
}

/// Window, stride and padding of a 2-D pooling (`kernel_size`, `stride`,
/// `padding` of `torch.nn.functional.max_pool2d` / `avg_pool2d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2dOptions {
    /// Window size, `[height, width]`.
    pub kernel: [usize; 2],
    /// Step between windows (PyTorch's default: the window size).
    pub stride: [usize; 2],
    /// Padding on both sides (at most half the window).
    pub padding: [usize; 2],
}

impl Pool2dOptions {
    /// A square `k × k` window with stride `k` and no padding (PyTorch's defaults).
    pub fn new(k: usize) -> Self {
        Pool2dOptions {
            kernel: [k, k],
            stride: [k, k],
            padding: [0, 0],
        }
    }
    /// The same stride in both directions.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = [s, s];
        self
    }
    /// The same padding in both directions.
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = [p, p];
        self
    }
}

/// The geometry of a sliding window over `[h, w]` planes.
#[derive(Debug, Clone, Copy)]
struct Window {
    plane: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
}

impl Window {
    /// The output size `[oh, ow]`, or an `Err` naming the op and the shapes
    /// when a size is 0 or the window does not fit the padded input.
    fn output(&self, op: &'static str, input: &[usize]) -> Result<[usize; 2]> {
        let mut out = [0; 2];
        for (i, out) in out.iter_mut().enumerate() {
            for (what, v) in [
                ("kernel size", self.kernel[i]),
                ("stride", self.stride[i]),
                ("dilation", self.dilation[i]),
            ] {
                if v == 0 {
                    return Err(Error::invalid(
                        op,
                        format!("{what} must be at least 1, got {v} (input shape {input:?})"),
                    ));
                }
            }
            let span = (self.kernel[i] - 1)
                .checked_mul(self.dilation[i])
                .and_then(|s| s.checked_add(1));
            let padded = self.padding[i]
                .checked_mul(2)
                .and_then(|p| p.checked_add(self.plane[i]));
            match (span, padded) {
                (Some(span), Some(padded)) if span <= padded => {
                    *out = (padded - span) / self.stride[i] + 1;
                }
                _ => {
                    return Err(Error::invalid(
                        op,
                        format!(
                            "input of shape {input:?} padded by {:?} is smaller than the kernel \
                             {:?} with dilation {:?}",
                            self.padding, self.kernel, self.dilation
                        ),
                    ))
                }
            }
        }
        Ok(out)
    }

    /// This window over `batch` images of `channels` planes, with `out` positions.
    fn geometry(&self, batch: usize, channels: usize, out: [usize; 2]) -> Im2col {
        Im2col {
            batch,
            channels,
            plane: self.plane,
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            out,
        }
    }

    /// For each kernel tap `(kh, kw)` and each output position `(oh, ow)`,
    /// in that order: the flat index `ih·W + iw` of the element the tap reads
    /// in one plane, or `H·W` (the padding slot) where it reads padding. Also
    /// says whether any tap reads padding.
    fn taps(&self, out: [usize; 2]) -> (Vec<i64>, bool) {
        let g = self.geometry(1, 1, out);
        let [h, w] = self.plane;
        let pad = (h * w) as i64;
        let mut index = Vec::with_capacity(g.cols() * g.rows());
        let mut padded = false;
        for kh in 0..self.kernel[0] {
            for kw in 0..self.kernel[1] {
                for oh in 0..out[0] {
                    let ih = g.source(0, oh, kh);
                    for ow in 0..out[1] {
                        match (ih, g.source(1, ow, kw)) {
                            (Some(ih), Some(iw)) => index.push((ih * w + iw) as i64),
                            _ => {
                                padded = true;
                                index.push(pad);
                            }
                        }
                    }
                }
            }
        }
        (index, padded)
    }

    /// For each of `batch` images, each output position `(oh, ow)`, each of
    /// `channels` channels and each kernel tap `(kh, kw)`, in that order: the
    /// flat index `((b·C + c)·H + ih)·W + iw` of the element the tap reads
    /// in an NCHW tensor, or its element count (the padding slot) where it
    /// reads padding. Also says whether any tap reads padding.
    fn conv_taps(&self, batch: usize, channels: usize, out: [usize; 2]) -> (Vec<i64>, bool) {
        let [h, w] = self.plane;
        let pad = (batch * channels * h * w) as i64;
        // The input row (column) of each (output row, kernel row) pair, if inside.
        let g = self.geometry(batch, channels, out);
        let coords = |d: usize| -> Vec<Option<usize>> {
            (0..out[d])
                .flat_map(|o| (0..self.kernel[d]).map(move |k| g.source(d, o, k)))
                .collect()
        };
        let (rows, cols) = (coords(0), coords(1));
        let [kh, kw] = self.kernel;
        let mut index = Vec::with_capacity(batch * out[0] * out[1] * channels * kh * kw);
        let mut padded = false;
        for b in 0..batch {
            for oh in 0..out[0] {
                for ow in 0..out[1] {
                    for c in 0..channels {
                        let plane = (b * channels + c) * h * w;
                        for &ih in &rows[oh * kh..(oh + 1) * kh] {
                            for &iw in &cols[ow * kw..(ow + 1) * kw] {
                                match (ih, iw) {
                                    (Some(ih), Some(iw)) => {
                                        index.push((plane + ih * w + iw) as i64)
                                    }
                                    _ => {
                                        padded = true;
                                        index.push(pad);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        (index, padded)
    }

    /// The windows of `rows` (`[R, H·W]`: one plane per row) as
    /// `[R, KH·KW·OH·OW]`, reading `pad_value` outside the planes.
    fn gather(&self, rows: &Tensor, out: [usize; 2], pad_value: f64) -> Result<Tensor> {
        let (index, padded) = self.taps(out);
        let r = rows.dims()[0];
        let source = if padded {
            let pad = Tensor::full(&[r, 1], pad_value, rows.dtype(), rows.device())?;
            super::cat(&[rows, &pad], 1)?
        } else {
            rows.clone()
        };
        let count = index.len();
        source.index_select(1, &Tensor::from_vec(index, &[count], rows.device())?)
    }
}

/// The dtype the windows are gathered in for an input of `dtype`: f32 (f64
/// for f64), so the gradients of overlapping windows are summed before one
/// rounding to the input's dtype, as PyTorch's kernels accumulate.
fn accumulation(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Errors unless `x` is `[N, C, H, W]` (or unbatched `[C, H, W]`); returns
/// it batched, and whether a batch dimension was added.
fn batched_4d(op: &'static str, x: &Tensor) -> Result<(Tensor, bool)> {
    match x.rank() {
        4 => Ok((x.clone(), false)),
        3 => Ok((x.unsqueeze(0)?, true)),
        _ => Err(Error::invalid(
            op,
            format!(
                "expects a [N, C, H, W] or [C, H, W] input, got shape {:?}",
                x.dims()
            ),
        )),
    }
}

/// Errors unless `t` has `x`'s dtype.
fn same_dtype(op: &'static str, x: &Tensor, t: &Tensor) -> Result<()> {
    if t.dtype() != x.dtype() {
        return Err(Error::DTypeMismatch {
            op,
            lhs: x.dtype(),
            rhs: t.dtype(),
        });
    }
    Ok(())
}

/// 2-D convolution (`torch.nn.functional.conv2d`): `x` `[N, C, H, W]` (or
/// `[C, H, W]`), `weight` `[OC, C/groups, KH, KW]`, optional `bias` `[OC]`,
/// all of one floating dtype; products accumulate in f32 (f64 for f64).
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    options: Conv2dOptions,
) -> Result<Tensor> {
    let mut inputs = vec![x, weight];
    inputs.extend(bias);
    dispatch("conv2d", &inputs, |inputs| {
        conv2d_impl("conv2d", &inputs[0], &inputs[1], inputs.get(2), options)
    })
}

/// 1-D convolution (`torch.nn.functional.conv1d`): `x` `[N, C, L]` (or
/// `[C, L]`), `weight` `[OC, C/groups, K]`, optional `bias` `[OC]`.
pub fn conv1d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    options: Conv1dOptions,
) -> Result<Tensor> {
    let mut inputs = vec![x, weight];
    inputs.extend(bias);
    dispatch("conv1d", &inputs, |inputs| {
        let (x, w) = (&inputs[0], &inputs[1]);
        if !matches!(x.rank(), 2 | 3) || w.rank() != 3 {
            return Err(Error::invalid(
                "conv1d",
                format!(
                    "expects a [N, C, L] or [C, L] input and a [OC, C/groups, K] weight, \
                     got shapes {:?} and {:?}",
                    x.dims(),
                    w.dims()
                ),
            ));
        }
        let y = conv2d_impl(
            "conv1d",
            &x.unsqueeze(-2)?,
            &w.unsqueeze(-2)?,
            inputs.get(2),
            Conv2dOptions {
                stride: [1, options.stride],
                padding: [0, options.padding],
                dilation: [1, options.dilation],
                groups: options.groups,
            },
        )?;
        y.squeeze(-2)
    })
}

fn conv2d_impl(
    op: &'static str,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    options: Conv2dOptions,
) -> Result<Tensor> {
    require_float(op, x)?;
    let mut all = vec![x, w];
    all.extend(bias);
    same_device(op, &all)?;
    same_dtype(op, x, w)?;
    if let Some(b) = bias {
        same_dtype(op, x, b)?;
    }
    let (xb, unbatched) = batched_4d(op, x)?;
    let [n, c, h, wd] = [xb.dims()[0], xb.dims()[1], xb.dims()[2], xb.dims()[3]];
    let g = options.groups;
    let shapes = format!("input {:?}, weight {:?}, groups {g}", x.dims(), w.dims());
    if w.rank() != 4 || g == 0 {
        return Err(Error::invalid(
            op,
            format!("expects a [OC, C/groups, KH, KW] weight and groups >= 1: {shapes}"),
        ));
    }
    let [oc, cg, kh, kw] = [w.dims()[0], w.dims()[1], w.dims()[2], w.dims()[3]];
    if cg.checked_mul(g) != Some(c) || oc % g != 0 || oc == 0 {
        return Err(Error::invalid(
            op,
            format!(
                "input channels ({c}) must equal weight.shape[1] × groups and output channels \
                 ({oc}) a positive multiple of groups: {shapes}"
            ),
        ));
    }
    if let Some(b) = bias {
        if b.dims() != [oc] {
            return Err(Error::ShapeMismatch {
                op,
                lhs: w.shape(),
                rhs: b.shape(),
            });
        }
    }
    let window = Window {
        plane: [h, wd],
        kernel: [kh, kw],
        stride: options.stride,
        padding: options.padding,
        dilation: options.dilation,
    };
    let out = window.output(op, x.dims())?;
    let l = out[0] * out[1];
    output_fits(op, &[c, kh, kw, n, l], x.dtype())?;
    output_fits(op, &[n, oc, l], x.dtype())?;
    let geometry = window.geometry(n, c, out);
    let y = match fused_conv(&xb, w, bias, &geometry, g)? {
        Some(y) => y,
        None => {
            // Composed: the windows as rows, [N·OH·OW, C·KH·KW], gathered with
            // index_select from an f32 (f64) copy and read by the product
            // through a deferred cast, so the product computes their gradient
            // in f32, scatter_add sums the overlapping windows' gradients in f32
            // (col2im), and the input's gradient is rounded once. One product
            // with the weight [OC, C·KH·KW] per group, the bias added in the
            // product's f32 accumulator (one rounding, as oneDNN and cuDNN do).
            let acc = accumulation(x.dtype());
            let (index, padded) = window.conv_taps(n, c, out);
            let flat = xb.to_dtype(acc)?.reshape(&[n * c * h * wd])?;
            let source = if padded {
                super::cat(&[&flat, &Tensor::zeros(&[1], acc, x.device())?], 0)?
            } else {
                flat
            };
            let count = index.len();
            let cols = source
                .index_select(0, &Tensor::from_vec(index, &[count], x.device())?)?
                .reshape(&[n * l, c * kh * kw])?;
            let rows = grouped_product(&cols, w, bias, g, &|t| {
                if acc == x.dtype() {
                    Ok(t)
                } else {
                    t.to_dtype_deferred(x.dtype())
                }
            })?;
            // [N, OH, OW, OC] in memory (channels last), viewed as [N, OC, OH, OW].
            rows.reshape(&[n, out[0], out[1], oc])?
                .permute(&[0, 3, 1, 2])?
        }
    };
    if unbatched {
        y.squeeze(0)
    } else {
        Ok(y)
    }
}

/// `[rows, OC]`: the windows `cols` `[rows, groups·K]` times the weight
/// `[OC, C/groups, KH, KW]` (one `linear` per group, each group's windows
/// passed through `operand`), plus the bias.
fn grouped_product(
    cols: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    groups: usize,
    operand: &dyn Fn(Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let (oc, k) = (w.dims()[0], cols.dims()[1] / groups);
    if groups == 1 {
        return super::linear(&operand(cols.clone())?, &w.reshape(&[oc, k])?, bias);
    }
    let og = oc / groups;
    let parts = (0..groups)
        .map(|i| {
            super::linear(
                &operand(cols.narrow(1, i * k, k)?)?,
                &w.narrow(0, i * og, og)?.reshape(&[og, k])?,
                bias.map(|b| b.narrow(0, i * og, og)).transpose()?.as_ref(),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    super::cat(&parts.iter().collect::<Vec<_>>(), 1)
}

/// `conv2d` as one autograd node where the backend convolves NCHW tensors
/// itself ([`crate::backend::Backend::conv2d`]: the CPU's implicit GEMM,
/// which never stores the windows); `None` otherwise. The node keeps the
/// input, not its windows. Backward: the weight's gradient from the backend
/// ([`crate::backend::Backend::conv2d_weight_grad`]); the input's as the
/// convolution of the output's gradient with the flipped, transposed weight
/// where the stride is 1 (f32 accumulation, rounded once), else the
/// backend's col2im of the f32 `g · W`.
fn fused_conv(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    geometry: &Im2col,
    groups: usize,
) -> Result<Option<Tensor>> {
    let xd = x.detach().contiguous()?;
    let wd = w.detach().contiguous()?;
    let bd = bias.map(Tensor::detach);
    let y = {
        let (xi, wi) = (xd.materialised_input()?, wd.materialised_input()?);
        let bi = bd.as_ref().map(Tensor::materialised_input).transpose()?;
        xd.device().backend().conv2d(
            xi.view(),
            wi.view(),
            bi.as_ref().map(|b| b.view()),
            geometry,
            groups,
            x.dtype(),
        )?
    };
    let Some(y) = y else {
        return Ok(None);
    };
    let oc = wd.dims()[0];
    let y = Tensor::from_storage(
        y,
        &[geometry.batch, oc, geometry.out[0], geometry.out[1]],
        x.device(),
    );
    let mut recorded = vec![x, w];
    recorded.extend(bias);
    let (g, x_shape) = (*geometry, x.shape());
    let (x_grad, w_grad, b_grad) = (
        x.grad_dtype(),
        w.grad_dtype(),
        bias.filter(|b| b.requires_grad()).map(|b| b.grad_dtype()),
    );
    // Only the gradients the graph asks for (PyTorch's `needs_input_grad`):
    // a network's image input needs none, a frozen weight none.
    let (x_needs, w_needs) = (x.requires_grad(), w.requires_grad());
    Ok(Some(y.view_op_multi(
        y.layout().clone(),
        "conv2d",
        &recorded,
        move |grad| {
            let grad = if grad.dtype() == xd.dtype() {
                grad.contiguous()?
            } else {
                grad.to_dtype(xd.dtype())?.contiguous()?
            };
            let gw = if w_needs {
                let (xi, gi) = (xd.materialised_input()?, grad.materialised_input()?);
                let gw = xd
                    .device().backend().conv2d_weight_grad(
                    xi.view(),
                    gi.view(),
                    &g,
                    groups,
                    w_grad,
                )?
                .ok_or_else(|| {
                    Error::invalid(
                        "conv2d",
                        "the backend ran the convolution but has no kernel for its weight's gradient",
                    )
                })?;
                Some(Tensor::from_storage(gw, wd.dims(), grad.device()))
            } else {
                None
            };
            let gx = if x_needs {
                Some(input_gradient(&grad, &wd, &g, groups, x_grad)?.reshape(&x_shape)?)
            } else {
                None
            };
            let mut grads = vec![gx, gw];
            if let Some(dtype) = b_grad {
                let sum = super::reduce::reduce_kernel(ReduceOp::Sum, &grad, &[0, 2, 3], dtype)?;
                grads.push(Some(Tensor::from_storage(sum, &[oc], grad.device())));
            }
            Ok(grads)
        },
    )))
}

/// The gradient of a convolution's input `[N, C, H, W]` in `dtype` from
/// the gradient `grad` `[N, OC, OH, OW]` of its output and the weight `w`.
fn input_gradient(
    grad: &Tensor,
    w: &Tensor,
    g: &Im2col,
    groups: usize,
    dtype: DType,
) -> Result<Tensor> {
    let [oc, cg, kh, kw] = [w.dims()[0], w.dims()[1], w.dims()[2], w.dims()[3]];
    let og = oc / groups;
    let transposable =
        g.stride == [1, 1] && (0..2).all(|d| g.padding[d] <= g.dilation[d] * (g.kernel[d] - 1));
    if transposable {
        // Stride 1: the input's gradient is the convolution of the output's
        // gradient (padded by dilation·(k − 1) − padding) with the weight
        // flipped in space and with in and out channels swapped per group.
        let taps = kh * kw;
        let reversed: Vec<i64> = (0..taps as i64).rev().collect();
        let reversed = Tensor::from_vec(reversed, &[taps], w.device())?;
        let flipped = w
            .reshape(&[groups, og, cg, taps])?
            .permute(&[0, 2, 1, 3])?
            .index_select(3, &reversed)?
            .reshape(&[groups * cg, og, kh, kw])?;
        let options = Conv2dOptions {
            stride: [1, 1],
            padding: [
                g.dilation[0] * (kh - 1) - g.padding[0],
                g.dilation[1] * (kw - 1) - g.padding[1],
            ],
            dilation: g.dilation,
            groups,
        };
        return conv2d_impl("conv2d", grad, &flipped, None, options)?
            .to_dtype(dtype)?
            .contiguous();
    }
    let k = cg * kh * kw;
    // The output's gradient as rows [N·OH·OW, OC], one product with each
    // group's weight: the windows' gradients, summed back by col2im.
    let grad = grad
        .permute(&[0, 2, 3, 1])?
        .reshape(&[g.batch * g.out[0] * g.out[1], oc])?;
    let windows = (0..groups)
        .map(|i| {
            super::matmul::matmul_to(
                &grad.narrow(1, i * og, og)?,
                &w.narrow(0, i * og, og)?.reshape(&[og, k])?,
                DType::F32,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let windows = match <[Tensor; 1]>::try_from(windows) {
        Ok([one]) => one,
        Err(parts) => super::cat(&parts.iter().collect::<Vec<_>>(), 1)?,
    };
    let sums = {
        let input = windows.materialised_input()?;
        windows.device().backend().col2im(input.view(), g, dtype)?
    }
    .ok_or_else(|| {
        Error::invalid(
            "conv2d",
            "the backend ran the convolution but has no col2im for its input's gradient",
        )
    })?;
    Ok(Tensor::from_storage(
        sums,
        &[g.batch, g.channels, g.plane[0], g.plane[1]],
        windows.device(),
    ))
}

/// The windows of every plane of `x` (`[N, C, H, W]`) as `[N·C, KH·KW, OH·OW]`.
fn pool_windows(
    op: &'static str,
    x: &Tensor,
    options: Pool2dOptions,
    pad_value: f64,
) -> Result<(Tensor, [usize; 2])> {
    let [n, c, h, w] = [x.dims()[0], x.dims()[1], x.dims()[2], x.dims()[3]];
    for i in 0..2 {
        if options.padding[i].saturating_mul(2) > options.kernel[i] {
            return Err(Error::invalid(
                op,
                format!(
                    "padding {:?} must be at most half the kernel {:?} (input shape {:?})",
                    options.padding,
                    options.kernel,
                    x.dims()
                ),
            ));
        }
    }
    let window = Window {
        plane: [h, w],
        kernel: options.kernel,
        stride: options.stride,
        padding: options.padding,
        dilation: [1, 1],
    };
    let out = window.output(op, x.dims())?;
    let taps = options.kernel[0] * options.kernel[1];
    output_fits(op, &[n, c, taps, out[0], out[1]], x.dtype())?;
    let rows = x
        .to_dtype(accumulation(x.dtype()))?
        .reshape(&[n * c, h * w])?;
    let windows = window
        .gather(&rows, out, pad_value)?
        .reshape(&[n * c, taps, out[0] * out[1]])?;
    Ok((windows, out))
}

/// Checks a pooling input: floating, `[N, C, H, W]` or `[C, H, W]`.
fn pool_input(op: &'static str, x: &Tensor) -> Result<(Tensor, bool)> {
    require_float(op, x)?;
    batched_4d(op, x)
}

/// Back to `[N, C, OH, OW]` (or `[C, OH, OW]`) from `[N·C, OH·OW]`,
/// in `x`'s dtype.
fn pool_output(y: &Tensor, x: &Tensor, out: [usize; 2], unbatched: bool) -> Result<Tensor> {
    let y = y
        .to_dtype(x.dtype())?
        .reshape(&[x.dims()[0], x.dims()[1], out[0], out[1]])?;
    if unbatched {
        y.squeeze(0)
    } else {
        Ok(y)
    }
}

/// 2-D max pooling (`torch.nn.functional.max_pool2d`): the maximum of each
/// window (padding never wins); the gradient goes to the first maximum of
/// each window, and a window holding NaN gives NaN.
pub fn max_pool2d(x: &Tensor, options: Pool2dOptions) -> Result<Tensor> {
    dispatch("max_pool2d", &[x], |inputs| {
        let (xb, unbatched) = pool_input("max_pool2d", &inputs[0])?;
        let (windows, out) = pool_windows("max_pool2d", &xb, options, f64::NEG_INFINITY)?;
        let (y, _) = windows.max_dim(1, false)?;
        pool_output(&y, &xb, out, unbatched)
    })
}

/// 2-D average pooling (`torch.nn.functional.avg_pool2d`): the mean of each
/// window, accumulated in f32; with `count_include_pad` (PyTorch's default)
/// padding counts towards the divisor, without it only the input's elements.
pub fn avg_pool2d(x: &Tensor, options: Pool2dOptions, count_include_pad: bool) -> Result<Tensor> {
    dispatch("avg_pool2d", &[x], |inputs| {
        let (xb, unbatched) = pool_input("avg_pool2d", &inputs[0])?;
        let (windows, out) = pool_windows("avg_pool2d", &xb, options, 0.0)?;
        let y = if count_include_pad || options.padding == [0, 0] {
            windows.mean_dim(1, false)?
        } else {
            // Each output position divided by the count of its in-plane taps.
            let window = Window {
                plane: [xb.dims()[2], xb.dims()[3]],
                kernel: options.kernel,
                stride: options.stride,
                padding: options.padding,
                dilation: [1, 1],
            };
            let (taps, _) = window.taps(out);
            let pad = (xb.dims()[2] * xb.dims()[3]) as i64;
            let l = out[0] * out[1];
            let mut counts = vec![0.0; l];
            for (i, &t) in taps.iter().enumerate() {
                if t != pad {
                    counts[i % l] += 1.0;
                }
            }
            let inverse: Vec<f64> = counts.iter().map(|&c| 1.0 / c).collect();
            let inverse = Tensor::from_f64_slice(&inverse, &[1, l], windows.dtype(), xb.device())?;
            windows.sum_dim(1, false)?.mul(&inverse)?
        };
        pool_output(&y, &xb, out, unbatched)
    })
}

/// Adaptive average pooling to `[oh, ow]` (`torch.nn.functional.adaptive_avg_pool2d`):
/// output cell `(i, j)` averages rows `⌊i·H/oh⌋ .. ⌈(i+1)·H/oh⌉` and the
/// columns likewise, accumulating in f32.
pub fn adaptive_avg_pool2d(x: &Tensor, output: [usize; 2]) -> Result<Tensor> {
    dispatch("adaptive_avg_pool2d", &[x], |inputs| {
        let op = "adaptive_avg_pool2d";
        let (xb, unbatched) = pool_input(op, &inputs[0])?;
        let [h, w] = [xb.dims()[2], xb.dims()[3]];
        if output.contains(&0) || h == 0 || w == 0 {
            return Err(Error::invalid(
                op,
                format!(
                    "output size {output:?} and the input's planes (shape {:?}) must be non-empty",
                    inputs[0].dims()
                ),
            ));
        }
        let y = if output == [1, 1] {
            // The global pool (a ResNet's head): each plane's mean, accumulated
            // in f32 and rounded once, without gathering windows.
            let [n, c] = [xb.dims()[0], xb.dims()[1]];
            xb.reshape(&[n, c, h * w])?
                .mean_dim(2, true)?
                .reshape(&[n, c, 1, 1])?
        } else if h % output[0] == 0 && w % output[1] == 0 {
            // Equal windows: an average pooling.
            let (kh, kw) = (h / output[0], w / output[1]);
            let options = Pool2dOptions {
                kernel: [kh, kw],
                stride: [kh, kw],
                padding: [0, 0],
            };
            let (windows, _) = pool_windows(op, &xb, options, 0.0)?;
            pool_output(&windows.mean_dim(1, false)?, &xb, output, false)?
        } else {
            let xa = xb.to_dtype(accumulation(xb.dtype()))?;
            let bounds = |i: usize, size: usize, out: usize| {
                (i * size / out, ((i + 1) * size).div_ceil(out))
            };
            let mut rows = Vec::with_capacity(output[0]);
            for i in 0..output[0] {
                let (r0, r1) = bounds(i, h, output[0]);
                let band = xa.narrow(2, r0, r1 - r0)?;
                let mut cells = Vec::with_capacity(output[1]);
                for j in 0..output[1] {
                    let (c0, c1) = bounds(j, w, output[1]);
                    cells.push(band.narrow(3, c0, c1 - c0)?.mean_dims(&[2, 3], true)?);
                }
                rows.push(super::cat(&cells.iter().collect::<Vec<_>>(), 3)?);
            }
            super::cat(&rows.iter().collect::<Vec<_>>(), 2)?.to_dtype(xb.dtype())?
        };
        if unbatched {
            y.squeeze(0)
        } else {
            Ok(y)
        }
    })
}

impl Tensor {
    /// Merges dimensions `start..=end` into one (`torch.flatten`; negative
    /// dims count from the end). A view where the layout allows it.
    pub fn flatten(&self, start: isize, end: isize) -> Result<Tensor> {
        if self.rank() == 0 {
            return self.reshape(&[1]);
        }
        let s = self.layout().dim("flatten", start)?;
        let e = self.layout().dim("flatten", end)?;
        if s > e {
            return Err(Error::invalid(
                "flatten",
                format!(
                    "start dim {start} comes after end dim {end} (shape {:?})",
                    self.dims()
                ),
            ));
        }
        let mut shape = self.dims()[..s].to_vec();
        shape.push(self.dims()[s..=e].iter().product());
        shape.extend_from_slice(&self.dims()[e + 1..]);
        self.reshape(&shape)
    }
}
