//! Autocast rows: for each op, the dtype it ran in under each policy preset
//! and low dtype, checked against the policy table.

use amp_autocast::{Autocast, CastRule, Policy};
use amp_tensor::ops::{self, GeluApprox, Reduction};
use amp_tensor::{DType, Device, DeviceKind, Result, Tensor};
use std::fmt::Write as _;

/// One op under one policy and dtype.
#[derive(Debug, Clone)]
pub struct AutocastRow {
    /// The op's name.
    pub op: &'static str,
    /// Which preset (`"pytorch cpu"`, `"pytorch cuda"`).
    pub policy: &'static str,
    /// The region's low dtype.
    pub dtype: DType,
    /// The policy's rule for the op.
    pub rule: CastRule,
    /// The dtype of the input fed in.
    pub input: DType,
    /// The dtype the op's output came back in.
    pub ran_in: Option<DType>,
    /// The dtype the rule prescribes.
    pub expected: DType,
    /// Whether `ran_in == expected`.
    pub pass: bool,
}

type Op = fn(&Tensor, &Tensor) -> Result<Tensor>;

/// The ops and how to call them on a `[8, 16]` input (`labels` are i64 class indices).
fn ops_list() -> Vec<(&'static str, Op)> {
    vec![
        ("matmul", |x, _| ops::matmul(x, &x.t()?)),
        ("linear", |x, _| ops::linear(x, x, None)),
        ("softmax", |x, _| ops::softmax(x, -1)),
        ("log_softmax", |x, _| ops::log_softmax(x, -1)),
        ("layer_norm", |x, _| ops::layer_norm(x, None, None, 1e-5)),
        ("exp", |x, _| x.exp()),
        ("log", |x, _| x.abs()?.log()),
        ("pow", |x, _| x.powf(2.0)),
        ("sum", |x, _| x.sum_all()),
        ("mean", |x, _| x.mean_all()),
        ("gelu", |x, _| x.gelu(GeluApprox::None)),
        ("relu", |x, _| x.relu()),
        ("tanh", |x, _| x.tanh()),
        ("add", |x, _| x.add(x)),
        ("mul", |x, _| x.mul(x)),
        ("cat", |x, _| ops::cat(&[x, x], 0)),
        ("stack", |x, _| ops::stack(&[x, x], 0)),
        ("mse_loss", |x, _| ops::mse_loss(x, x, Reduction::Mean)),
        ("cross_entropy", |x, y| ops::cross_entropy(x, y)),
        ("nll_loss", |x, y| {
            ops::nll_loss(x, y, Reduction::Mean, -100)
        }),
    ]
}

/// Runs every op under both PyTorch presets (the CUDA table retargeted to the
/// CPU device kind, so it runs without a GPU) and both low dtypes.
pub fn rows() -> Vec<AutocastRow> {
    let device = Device::reference();
    let mut rows = Vec::new();
    let presets = [
        ("pytorch cpu", Policy::pytorch(DeviceKind::Cpu)),
        (
            "pytorch cuda",
            Policy::pytorch(DeviceKind::Cuda).retarget(DeviceKind::Cpu),
        ),
    ];
    for (name, policy) in &presets {
        for dtype in [DType::BF16, DType::F16] {
            for (op, f) in ops_list() {
                let rule = policy.rule(op);
                // Feed f32 where the rule lowers, the low dtype elsewhere, so
                // every rule gives a distinguishable answer.
                let input = if rule == CastRule::LowerPrecision {
                    DType::F32
                } else {
                    dtype
                };
                let expected = match rule {
                    CastRule::LowerPrecision => dtype,
                    CastRule::Float32 => DType::F32,
                    CastRule::Promote | CastRule::Passthrough => input,
                };
                let ran_in = (|| -> Result<DType> {
                    let x = Tensor::randn(&[8, 16], input, &device, 1)?;
                    let y = Tensor::randint(0, 16, &[8], &device, 2)?;
                    let _region = Autocast::new(DeviceKind::Cpu)
                        .dtype(dtype)
                        .policy(policy.clone())
                        .enter()
                        .map_err(|e| amp_tensor::Error::invalid("autocast", e.to_string()))?;
                    Ok(f(&x, &y)?.dtype())
                })()
                .ok();
                rows.push(AutocastRow {
                    op,
                    policy: name,
                    dtype,
                    rule,
                    input,
                    ran_in,
                    expected,
                    pass: ran_in == Some(expected),
                });
            }
        }
    }
    rows
}

/// The rows as an aligned table (failures last).
pub fn render(rows: &[AutocastRow]) -> String {
    let mut out =
        String::from("== autocast: the dtype each op ran in, against the policy table ==\n");
    let _ = writeln!(
        out,
        "{:<14} {:<13} {:<6} {:<15} {:<6} {:<7} {:<9} result",
        "op", "policy", "dtype", "rule", "input", "ran in", "expected"
    );
    let line = |r: &AutocastRow| {
        format!(
            "{:<14} {:<13} {:<6} {:<15} {:<6} {:<7} {:<9} {}",
            r.op,
            r.policy,
            r.dtype.name(),
            format!("{:?}", r.rule),
            r.input.name(),
            r.ran_in.map_or("error", |d| d.name()),
            r.expected.name(),
            if r.pass { "ok" } else { "FAIL" }
        )
    };
    for r in rows {
        let _ = writeln!(out, "{}", line(r));
    }
    let failing: Vec<&AutocastRow> = rows.iter().filter(|r| !r.pass).collect();
    if failing.is_empty() {
        let _ = writeln!(out, "all {} autocast rows passed", rows.len());
    } else {
        let _ = writeln!(
            out,
            "{} of {} autocast rows FAILED:",
            failing.len(),
            rows.len()
        );
        for r in failing {
            let _ = writeln!(out, "{}", line(r));
        }
    }
    out
}

/// The rows as JSON values.
pub fn to_json(rows: &[AutocastRow]) -> Vec<serde_json::Value> {
    rows.iter()
        .map(|r| {
            serde_json::json!({
                "op": r.op, "policy": r.policy, "dtype": r.dtype.name(), "rule": format!("{:?}", r.rule),
                "input": r.input.name(), "ran_in": r.ran_in.map(|d| d.name()), "expected": r.expected.name(), "pass": r.pass,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_preset_row_matches_the_table() {
        let rows = super::rows();
        assert_eq!(rows.len(), 2 * 2 * super::ops_list().len());
        assert!(rows.iter().all(|r| r.pass), "{}", super::render(&rows));
        // The CPU table lowers matmul and keeps softmax in whatever arrives; CUDA's runs softmax in f32.
        let softmax_cuda = rows
            .iter()
            .find(|r| r.op == "softmax" && r.policy == "pytorch cuda")
            .unwrap();
        assert_eq!(softmax_cuda.expected, amp_tensor::DType::F32);
    }
}
