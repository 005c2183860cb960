//! The transformer rows of `cargo xtask bench`: attention forward + backward
//! and one training step of `amp-train lm`'s default GPT, and the peak
//! resident memory of each, measured in a fresh process per figure
//! (`cargo xtask bench-rss WORKLOAD`), since a process's peak only grows.
//!
//! PyTorch runs the same workloads in `torch_bench.py`: `F.scaled_dot_product_attention`
//! on the same shapes, and the GPT written as nanoGPT writes it (pre-LN blocks,
//! fused QKV projection, causal SDPA, tanh GELU, tied output head) with AdamW.

use super::{median_time, Res};
use amp_autocast::autocast;
use amp_tensor::{ops, DType, Device, Tensor};
use amp_train::nn::{Gpt, Module};
use amp_train::optim::{AdamW, AdamWConfig};
use amp_train::train::LmConfig;

/// Attention heads and head dimension of the attention rows.
pub const HEADS: usize = 8;
/// Head dimension of the attention rows.
pub const HEAD_DIM: usize = 64;
/// Sequence lengths of the attention rows.
pub const LENGTHS: [usize; 3] = [512, 1024, 2048];

/// The vocabulary of the bundled corpus (the GPT's embedding and head size).
pub fn vocab() -> Res<usize> {
    Ok(amp_train::data::text::regex_automata()?.vocab().len())
}

/// q, k, v and a read-out weight, `[1, 8, t, 64]` bf16.
fn attention_inputs(device: &Device, t: usize) -> Res<[Tensor; 4]> {
    let shape = [1, HEADS, t, HEAD_DIM];
    let make = |seed| -> Res<Tensor> {
        Ok(Tensor::randn(&shape, DType::F32, device, seed)?.to_dtype(DType::BF16)?)
    };
    Ok([make(11)?, make(12)?, make(13)?, make(14)?])
}

/// One forward and backward pass of non-causal attention (gradients of q, k, v).
fn attention_pass(x: &[Tensor; 4]) -> Res<()> {
    let [q, k, v, w] = x;
    for t in [q, k, v] {
        t.zero_grad();
        t.set_requires_grad(true)?;
    }
    let y = ops::scaled_dot_product_attention(q, k, v, None, 0.0, false, None)?;
    y.mul(w)?.sum_all()?.backward()?;
    Ok(())
}

/// Milliseconds of attention forward + backward, bf16, batch 1, 8 heads, d 64.
pub fn attention_ms(device: &Device, t: usize) -> Res<f64> {
    let x = attention_inputs(device, t)?;
    Ok(median_time(if t >= 2048 { 5 } else { 9 }, || attention_pass(&x))? * 1e3)
}

/// The default `amp-train lm` model with its AdamW, and a random batch.
struct GptStep {
    model: Gpt,
    opt: AdamW,
    x: Tensor,
    y: Tensor,
}

impl GptStep {
    fn new(device: &Device, vocab: usize) -> Res<GptStep> {
        let c = LmConfig::default();
        let model = Gpt::seeded(c.gpt(vocab), 0.0, device, 0)?;
        let opt = AdamW::new(model.named_parameters(), AdamWConfig::lr(c.lr));
        let shape = [c.batch_size, c.context];
        let x = Tensor::randint(0, vocab as i64, &shape, device, 21)?;
        let y = Tensor::randint(0, vocab as i64, &shape, device, 22)?;
        Ok(GptStep { model, opt, x, y })
    }

    fn tokens(&self) -> usize {
        self.x.numel()
    }

    fn step(&mut self, device: &Device, low: Option<DType>) -> Res<()> {
        self.opt.zero_grad();
        let loss = {
            let _region = low.map(|d| autocast(device.kind(), d)).transpose()?;
            let logits = self.model.forward(&self.x)?;
            let vocab = logits.dims()[2];
            ops::cross_entropy(
                &logits.reshape(&[self.tokens(), vocab])?,
                &self.y.reshape(&[self.tokens()])?,
            )?
        };
        loss.backward()?;
        self.opt.step()?;
        Ok(())
    }
}

/// The default GPT's parameters (for the data-parallel cost model), and the
/// tokens of one step.
pub fn gpt_parameters(device: &Device) -> Res<(Vec<(String, Tensor)>, usize)> {
    let s = GptStep::new(device, vocab()?)?;
    Ok((s.model.named_parameters(), s.tokens()))
}

/// Tokens a second of one training step of the default GPT (batch 32,
/// context 128, 4 layers, d 128, 4 heads), in f32 or under autocast to `low`.
pub fn gpt_tokens_per_s(device: &Device, low: Option<DType>) -> Res<f64> {
    let mut s = GptStep::new(device, vocab()?)?;
    let secs = median_time(5, || s.step(device, low))?;
    Ok(s.tokens() as f64 / secs)
}

/// This process's peak and current resident memory in MiB (`VmHWM`,
/// `VmRSS` of `/proc/self/status`; Linux).
fn memory_mib() -> Res<(f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> Res<f64> {
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .ok_or_else(|| format!("/proc/self/status has no {name} field"))?;
        Ok(kb / 1024.0)
    };
    Ok((field("VmHWM:")?, field("VmRSS:")?))
}

/// `cargo xtask bench-rss WORKLOAD` (run by the bench in a process of its
/// own): runs `gpt-f32`, `gpt-bf16` (three training steps) or `attn-T`
/// (three attention passes) and prints `peak_mib base_mib`: the process's
/// peak resident memory and its resident memory just before the workload's
/// tensors were made.
pub fn rss(workload: &str, device: &Device) -> Res<(f64, f64)> {
    let vocab = vocab()?;
    let (_, base) = memory_mib()?;
    match workload {
        "gpt-f32" | "gpt-bf16" => {
            let low = (workload == "gpt-bf16").then_some(DType::BF16);
            let mut s = GptStep::new(device, vocab)?;
            for _ in 0..3 {
                s.step(device, low)?;
            }
        }
        other => {
            let t = other
                .strip_prefix("attn-")
                .and_then(|t| t.parse::<usize>().ok())
                .ok_or_else(|| {
                    format!("bench-rss: unknown workload {other:?} (gpt-f32, gpt-bf16, attn-T)")
                })?;
            let x = attention_inputs(device, t)?;
            for _ in 0..3 {
                attention_pass(&x)?;
            }
        }
    }
    let (peak, _) = memory_mib()?;
    Ok((peak, base))
}

/// Runs `bench-rss WORKLOAD` in a new process of this executable and
/// returns its `(peak, base)` in MiB.
pub fn rss_in_child(workload: &str) -> Res<(f64, f64)> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe)
        .args(["bench-rss", workload])
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "bench-rss {workload} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(str::parse::<f64>);
    match (it.next(), it.next()) {
        (Some(Ok(peak)), Some(Ok(base))) => Ok((peak, base)),
        _ => Err(format!("bench-rss {workload} printed {text:?}").into()),
    }
}
