//! Where the time of one training step goes: the 1024-4096-4096-10 GELU MLP of
//! the performance issue (batch 256, AdamW as amp-train's (one fused op per
//! parameter), cross-entropy), f32 and bf16 autocast, with every backend call
//! timed by a wrapping [`Backend`].
//!
//! `cargo run --release -p amp-train --example profile_step` (`gpt`: the
//! default `amp-train lm` model instead; `conv`: one 3×3 convolution of the
//! bench, forward and backward; `resnet`: a training step of the bench's ResNet).

use amp_tensor::backend::{
    AdamWStep, AttentionProblem, Backend, BinaryOp, ChannelAffine, HostStorage, Im2col,
    NonFiniteCount, ReduceOp, Storage, UnaryOp, View,
};
use amp_tensor::{ops, DType, Device, DeviceKind, Layout, Result, Tensor};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Delegates to the CPU backend and adds each call's time to a table keyed by op and dtypes.
#[derive(Debug)]
struct Timed {
    inner: amp_cpu::CpuBackend,
    table: Mutex<BTreeMap<String, (f64, usize)>>,
}

impl Timed {
    fn time<T>(&self, key: impl FnOnce() -> String, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let r = f();
        let dt = t.elapsed().as_secs_f64();
        let mut table = self.table.lock().expect("lock");
        let e = table.entry(key()).or_default();
        e.0 += dt;
        e.1 += 1;
        r
    }
}

fn dt(v: &View<'_>) -> String {
    format!("{}{:?}", v.0.dtype(), v.1.shape())
}

impl Backend for Timed {
    fn name(&self) -> &str {
        "cpu"
    }
    fn kind(&self) -> DeviceKind {
        DeviceKind::Cpu
    }
    fn is_bf16_supported(&self) -> bool {
        self.inner.is_bf16_supported()
    }
    fn from_host(&self, data: HostStorage) -> Result<Storage> {
        self.inner.from_host(data)
    }
    fn to_host(&self, src: View<'_>) -> Result<HostStorage> {
        self.time(
            || format!("to_host {}", dt(&src)),
            || self.inner.to_host(src),
        )
    }
    fn full(&self, numel: usize, value: f64, dtype: DType) -> Result<Storage> {
        self.time(
            || format!("full {dtype}"),
            || self.inner.full(numel, value, dtype),
        )
    }
    fn cast(&self, src: View<'_>, out: DType) -> Result<Storage> {
        self.time(
            || format!("cast {} -> {out} c={}", dt(&src), src.1.is_contiguous()),
            || self.inner.cast(src, out),
        )
    }
    fn unary(&self, op: UnaryOp, src: View<'_>, out: DType) -> Result<Storage> {
        self.time(
            || format!("unary {op:?} {} -> {out}", dt(&src)),
            || self.inner.unary(op, src, out),
        )
    }
    fn binary(&self, op: BinaryOp, lhs: View<'_>, rhs: View<'_>, out: DType) -> Result<Storage> {
        self.time(
            || {
                format!(
                    "binary {op:?} {} {} c={}{}",
                    dt(&lhs),
                    dt(&rhs),
                    lhs.1.is_contiguous(),
                    rhs.1.is_contiguous()
                )
            },
            || self.inner.binary(op, lhs, rhs, out),
        )
    }
    fn where_cond(&self, c: View<'_>, t: View<'_>, f: View<'_>, out: DType) -> Result<Storage> {
        self.time(
            || format!("where {}", dt(&t)),
            || self.inner.where_cond(c, t, f, out),
        )
    }
    fn reduce(&self, op: ReduceOp, src: View<'_>, dims: &[usize], out: DType) -> Result<Storage> {
        self.time(
            || format!("reduce {op:?} {} {dims:?}", dt(&src)),
            || self.inner.reduce(op, src, dims, out),
        )
    }
    fn matmul(&self, lhs: View<'_>, rhs: View<'_>, out: DType) -> Result<Storage> {
        self.time(
            || {
                format!(
                    "matmul {} {:?} x {} {:?} -> {out}",
                    dt(&lhs),
                    lhs.1.strides(),
                    dt(&rhs),
                    rhs.1.strides()
                )
            },
            || self.inner.matmul(lhs, rhs, out),
        )
    }
    fn fuses_cast(&self, op: &str, operand: usize, from: DType, to: DType) -> bool {
        self.inner.fuses_cast(op, operand, from, to)
    }
    fn softmax(&self, src: View<'_>, log: bool, out: DType) -> Result<Storage> {
        self.time(
            || format!("softmax {} log={log}", dt(&src)),
            || self.inner.softmax(src, log, out),
        )
    }
    fn layer_norm(
        &self,
        src: View<'_>,
        w: Option<View<'_>>,
        b: Option<View<'_>>,
        eps: f64,
        out: DType,
    ) -> Result<(Storage, Storage, Storage)> {
        self.inner.layer_norm(src, w, b, eps, out)
    }
    fn cat(&self, inputs: &[View<'_>], dim: usize, out: DType) -> Result<Storage> {
        self.time(|| "cat".into(), || self.inner.cat(inputs, dim, out))
    }
    fn index_select(
        &self,
        src: View<'_>,
        dim: usize,
        index: View<'_>,
        out: DType,
    ) -> Result<Storage> {
        self.time(
            || format!("index_select {}", dt(&src)),
            || self.inner.index_select(src, dim, index, out),
        )
    }
    fn gather(&self, src: View<'_>, dim: usize, index: View<'_>, out: DType) -> Result<Storage> {
        self.time(
            || format!("gather {}", dt(&src)),
            || self.inner.gather(src, dim, index, out),
        )
    }
    fn scatter_add(
        &self,
        shape: &[usize],
        dim: usize,
        index: View<'_>,
        src: View<'_>,
        out: DType,
    ) -> Result<Storage> {
        self.time(
            || format!("scatter_add {}", dt(&src)),
            || self.inner.scatter_add(shape, dim, index, src, out),
        )
    }
    fn non_finite_check_and_unscale(
        &self,
        buffers: &mut [(&mut Storage, &Layout)],
        inv_scale: f32,
    ) -> Result<Vec<NonFiniteCount>> {
        self.inner.non_finite_check_and_unscale(buffers, inv_scale)
    }
    fn linear(
        &self,
        x: View<'_>,
        weight: View<'_>,
        bias: Option<View<'_>>,
        activation: Option<UnaryOp>,
        out: DType,
    ) -> Result<Storage> {
        self.time(
            || format!("linear {} x {} -> {out}", dt(&x), dt(&weight)),
            || self.inner.linear(x, weight, bias, activation, out),
        )
    }
    fn adamw_step(
        &self,
        param: &mut Storage,
        grad: View<'_>,
        exp_avg: &mut Storage,
        exp_avg_sq: &mut Storage,
        hyper: &AdamWStep,
    ) -> Result<()> {
        let key = format!("adamw_step {} {}", param.dtype(), dt(&grad));
        self.time(
            || key,
            || {
                self.inner
                    .adamw_step(param, grad, exp_avg, exp_avg_sq, hyper)
            },
        )
    }
    fn layer_norm_backward(
        &self,
        src: View<'_>,
        weight: Option<View<'_>>,
        mean: View<'_>,
        rstd: View<'_>,
        grad: View<'_>,
        out: DType,
    ) -> Result<Option<(Storage, Storage, Storage)>> {
        self.time(
            || format!("layer_norm_backward {} -> {out}", dt(&src)),
            || {
                self.inner
                    .layer_norm_backward(src, weight, mean, rstd, grad, out)
            },
        )
    }
    fn conv2d(
        &self,
        x: View<'_>,
        weight: View<'_>,
        bias: Option<View<'_>>,
        geometry: &Im2col,
        groups: usize,
        out: DType,
    ) -> Result<Option<Storage>> {
        self.time(
            || format!("conv2d {} x {} -> {out}", dt(&x), dt(&weight)),
            || self.inner.conv2d(x, weight, bias, geometry, groups, out),
        )
    }
    fn conv2d_weight_grad(
        &self,
        x: View<'_>,
        grad: View<'_>,
        geometry: &Im2col,
        groups: usize,
        out: DType,
    ) -> Result<Option<Storage>> {
        self.time(
            || format!("conv2d_weight_grad {} x {} -> {out}", dt(&x), dt(&grad)),
            || {
                self.inner
                    .conv2d_weight_grad(x, grad, geometry, groups, out)
            },
        )
    }
    fn channel_moments(&self, x: View<'_>) -> Result<Option<(Storage, Storage)>> {
        self.time(
            || format!("channel_moments {}", dt(&x)),
            || self.inner.channel_moments(x),
        )
    }
    fn channel_affine(
        &self,
        x: View<'_>,
        grad: Option<View<'_>>,
        terms: &ChannelAffine<'_>,
        out: DType,
    ) -> Result<Option<Storage>> {
        self.time(
            || format!("channel_affine {} grad {} -> {out}", dt(&x), grad.is_some()),
            || self.inner.channel_affine(x, grad, terms, out),
        )
    }
    fn channel_grad_sums(
        &self,
        x: View<'_>,
        grad: View<'_>,
        mean: View<'_>,
    ) -> Result<Option<(Storage, Storage)>> {
        self.time(
            || format!("channel_grad_sums {}", dt(&x)),
            || self.inner.channel_grad_sums(x, grad, mean),
        )
    }
    fn col2im(&self, cols: View<'_>, geometry: &Im2col, out: DType) -> Result<Option<Storage>> {
        self.time(
            || format!("col2im {} -> {out}", dt(&cols)),
            || self.inner.col2im(cols, geometry, out),
        )
    }
    fn attention(&self, problem: &AttentionProblem<'_>) -> Result<Option<(Storage, Storage)>> {
        self.time(
            || format!("attention {}", dt(&problem.q)),
            || self.inner.attention(problem),
        )
    }
    fn attention_backward(
        &self,
        problem: &AttentionProblem<'_>,
        out: View<'_>,
        grad_out: View<'_>,
        lse: View<'_>,
    ) -> Result<Option<(Storage, Storage, Storage)>> {
        self.time(
            || format!("attention_backward {}", dt(&problem.q)),
            || self.inner.attention_backward(problem, out, grad_out, lse),
        )
    }
}

/// `profile_step gpt` (with the `text` feature, a default): the default `amp-train lm` model (batch 32, context
/// 128, 4 layers, d 128, 4 heads, AdamW) on random tokens, f32 and bf16.
#[cfg(feature = "text")]
fn gpt(backend: &Timed, device: &Device) -> Result<()> {
    use amp_train::nn::{Gpt, Module};
    let c = amp_train::train::LmConfig::default();
    let vocab = 96;
    let model = Gpt::seeded(c.gpt(vocab), 0.0, device, 0)?;
    let shape = [c.batch_size, c.context];
    let x = Tensor::randint(0, vocab as i64, &shape, device, 21)?;
    let y = Tensor::randint(0, vocab as i64, &[x.numel()], device, 22)?;
    training_steps(
        backend,
        "gpt",
        model.named_parameters(),
        &|x| model.forward(x),
        (&x, &y),
        c.lr,
    )
}

/// `profile_step resnet`: one training step of the bench's ResNet (batch 32,
/// 3×32×32, blocks 64→64, 64→64, 64→128 stride 2, 128→128).
fn resnet(backend: &Timed, device: &Device) -> Result<()> {
    use amp_train::nn::{Module, ResNet};
    let blocks = [(64, 64, 1), (64, 64, 1), (64, 128, 2), (128, 128, 1)];
    let model = ResNet::seeded(3, 64, &blocks, 10, device, 1)?;
    let x = Tensor::randn(&[32, 3, 32, 32], DType::F32, device, 40)?;
    let y = Tensor::randint(0, 10, &[32], device, 41)?;
    training_steps(
        backend,
        "resnet",
        model.named_parameters(),
        &|x| model.forward(x),
        (&x, &y),
        1e-3,
    )
}

/// Three AdamW training steps (cross-entropy of `forward(x)`'s logits
/// against `y`) in f32, then three under bf16 autocast, each timed, with the
/// backend calls of the last of each.
fn training_steps(
    backend: &Timed,
    tag: &str,
    params: Vec<(String, Tensor)>,
    forward: &dyn Fn(&Tensor) -> Result<Tensor>,
    (x, y): (&Tensor, &Tensor),
    lr: f64,
) -> Result<()> {
    use amp_train::optim::{AdamW, AdamWConfig};
    let mut opt = AdamW::new(params, AdamWConfig::lr(lr));
    for low in [None, Some(DType::BF16)] {
        let name = low.map_or(format!("{tag} f32"), |d| format!("{tag} {d} autocast"));
        for rep in 0..3 {
            backend.table.lock().expect("lock").clear();
            let t = Instant::now();
            opt.zero_grad();
            let loss = {
                let _region = low
                    .map(|d| amp_autocast::autocast(DeviceKind::Cpu, d))
                    .transpose()?;
                let logits = forward(x)?;
                let classes = logits.dims()[logits.rank() - 1];
                ops::cross_entropy(&logits.reshape(&[y.numel(), classes])?, y)?
            };
            let fwd = t.elapsed().as_secs_f64();
            loss.backward()?;
            let bwd = t.elapsed().as_secs_f64() - fwd;
            opt.step()
                .map_err(|e| amp_tensor::Error::invalid("AdamW::step", e.to_string()))?;
            let total = t.elapsed().as_secs_f64();
            println!(
                "{name} rep {rep}: step {:.1} ms (fwd {:.1}, bwd {:.1}, adamw {:.1})",
                total * 1e3,
                fwd * 1e3,
                bwd * 1e3,
                (total - fwd - bwd) * 1e3
            );
        }
        print_table(backend);
    }
    Ok(())
}

/// `profile_step conv`: one 3×3 convolution (batch 32, 64→64 channels,
/// 56×56, padding 1) forward and backward, f32 and bf16 autocast — the
/// bench's `conv_*_64c56` row.
fn conv(backend: &Timed, device: &Device) -> Result<()> {
    let x = Tensor::randn(&[32, 64, 56, 56], DType::F32, device, 31)?;
    let w = Tensor::randn(&[64, 64, 3, 3], DType::F32, device, 32)?.mul_scalar(0.04)?;
    let probe = Tensor::randn(&[32, 64, 56, 56], DType::F32, device, 33)?;
    x.set_requires_grad(true)?;
    w.set_requires_grad(true)?;
    for low in [None, Some(DType::BF16)] {
        let name = low.map_or("conv f32".to_string(), |d| format!("conv {d} autocast"));
        for rep in 0..3 {
            backend.table.lock().expect("lock").clear();
            x.zero_grad();
            w.zero_grad();
            let t = Instant::now();
            let y = {
                let _region = low
                    .map(|d| amp_autocast::autocast(DeviceKind::Cpu, d))
                    .transpose()?;
                ops::conv2d(&x, &w, None, ops::Conv2dOptions::default().padding(1))?
            };
            let fwd = t.elapsed().as_secs_f64();
            y.backward_with(&probe.to_dtype(y.dtype())?)?;
            let total = t.elapsed().as_secs_f64();
            println!(
                "{name} rep {rep}: {:.1} ms (fwd {:.1}, bwd {:.1})",
                total * 1e3,
                fwd * 1e3,
                (total - fwd) * 1e3
            );
        }
        print_table(backend);
    }
    Ok(())
}

/// The backend calls of the last step, the slowest first.
fn print_table(backend: &Timed) {
    let table = backend.table.lock().expect("lock");
    let mut rows: Vec<_> = table.iter().collect();
    rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    let sum: f64 = rows.iter().map(|r| r.1 .0).sum();
    println!(
        "  backend total {:.1} ms; top calls of the last step:",
        sum * 1e3
    );
    for (k, (s, c)) in rows.iter().take(25) {
        println!("  {:8.2} ms {c:4}x  {k}", s * 1e3);
    }
}

struct Adam {
    params: Vec<Tensor>,
    moments: Vec<Option<(Tensor, Tensor)>>,
    step: u64,
}

impl Adam {
    /// amp-train's AdamW step (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay 1e-2): one fused op per parameter.
    fn step(&mut self) -> Result<()> {
        let _no_grad = amp_tensor::no_grad();
        self.step += 1;
        let hyper = AdamWStep {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
            step: self.step,
        };
        for (p, slot) in self.params.iter().zip(self.moments.iter_mut()) {
            let Some(g) = p.grad() else { continue };
            if slot.is_none() {
                *slot = Some((
                    Tensor::zeros(p.dims(), DType::F32, p.device())?,
                    Tensor::zeros(p.dims(), DType::F32, p.device())?,
                ));
            }
            let (m, v) = slot.as_ref().expect("initialised above");
            ops::adamw_step(p, &g, m, v, &hyper)?;
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    amp_cpu::keep_freed_buffers();
    let backend = Arc::new(Timed {
        inner: amp_cpu::CpuBackend::new(),
        table: Mutex::new(BTreeMap::new()),
    });
    let device = Device::new(backend.clone());
    println!("isa {}", amp_cpu::isa());
    if std::env::args().nth(1).as_deref() == Some("conv") {
        return conv(&backend, &device);
    }
    if std::env::args().nth(1).as_deref() == Some("resnet") {
        return resnet(&backend, &device);
    }
    #[cfg(feature = "text")]
    if std::env::args().nth(1).as_deref() == Some("gpt") {
        return gpt(&backend, &device);
    }
    let dims = [1024usize, 4096, 4096, 10];
    let mut params = Vec::new();
    for (i, w) in dims.windows(2).enumerate() {
        let bound = 1.0 / (w[0] as f64).sqrt();
        let weight =
            Tensor::randn(&[w[1], w[0]], DType::F32, &device, i as u64)?.mul_scalar(bound)?;
        let bias = Tensor::randn(&[w[1]], DType::F32, &device, 10 + i as u64)?.mul_scalar(bound)?;
        weight.set_requires_grad(true)?;
        bias.set_requires_grad(true)?;
        params.push(weight);
        params.push(bias);
    }
    let x = Tensor::randn(&[256, 1024], DType::F32, &device, 3)?;
    let y = Tensor::randint(0, 10, &[256], &device, 4)?;
    let mut opt = Adam {
        moments: vec![None; params.len()],
        params: params.clone(),
        step: 0,
    };
    let which: Vec<String> = std::env::args().skip(1).collect();
    for low in [None, Some(DType::BF16)] {
        let name = low.map_or("f32".to_string(), |d| format!("{d} autocast"));
        if !which.is_empty() && !which.iter().any(|w| name.starts_with(w.as_str())) {
            continue;
        }
        for rep in 0..3 {
            backend.table.lock().expect("lock").clear();
            let t = Instant::now();
            for p in &params {
                p.zero_grad();
            }
            let t_fwd = Instant::now();
            let loss = {
                let _region = low
                    .map(|d| amp_autocast::autocast(DeviceKind::Cpu, d))
                    .transpose()?;
                let mut h = x.clone();
                for (l, pair) in params.chunks(2).enumerate() {
                    h = ops::linear(&h, &pair[0], Some(&pair[1]))?;
                    if l < 2 {
                        h = h.gelu(ops::GeluApprox::None)?;
                    }
                }
                ops::cross_entropy(&h, &y)?
            };
            let fwd = t_fwd.elapsed().as_secs_f64();
            let t_bwd = Instant::now();
            loss.backward()?;
            let bwd = t_bwd.elapsed().as_secs_f64();
            let t_opt = Instant::now();
            opt.step()?;
            let optt = t_opt.elapsed().as_secs_f64();
            let total = t.elapsed().as_secs_f64();
            println!(
                "{name} rep {rep}: step {:.1} ms (fwd {:.1}, bwd {:.1}, adamw {:.1})",
                total * 1e3,
                fwd * 1e3,
                bwd * 1e3,
                optt * 1e3
            );
        }
        print_table(&backend);
    }
    Ok(())
}
