//! Every op of the project, on both device kinds and with both low dtypes:
//! under autocast the output has the policy's dtype and is bitwise equal to
//! running the op with autocast off on inputs cast by hand.

mod common;

use amp_autocast::{reset_stats, stats, Autocast, CastRule, Policy};
use amp_tensor::ops::{self, GeluApprox, Reduction};
use amp_tensor::{DType, Device, Result, Tensor};
use amp_testkit::on_every_device;
use std::collections::BTreeSet;

enum Arg {
    /// A floating tensor of this shape, uniform in [lo, hi).
    F(&'static [usize], f64, f64),
    /// An i64 tensor.
    I(&'static [i64], &'static [usize]),
    /// A bool tensor.
    B(&'static [bool], &'static [usize]),
}

struct Case {
    name: &'static str,
    args: Vec<Arg>,
    run: fn(&[Tensor]) -> Result<Tensor>,
}

const SIGNED: (f64, f64) = (-2.0, 2.0);
const POSITIVE: (f64, f64) = (0.25, 3.0);

fn f(shape: &'static [usize]) -> Arg {
    Arg::F(shape, SIGNED.0, SIGNED.1)
}

fn pos(shape: &'static [usize]) -> Arg {
    Arg::F(shape, POSITIVE.0, POSITIVE.1)
}

fn cases() -> Vec<Case> {
    use Arg::{B, I};
    let c = |name, args, run| Case { name, args, run };
    let mask: &'static [bool] = &[true, false, true, false, false, true];
    vec![
        c("matmul", vec![f(&[2, 3]), f(&[3, 4])], |t| {
            ops::matmul(&t[0], &t[1])
        }),
        c("linear", vec![f(&[2, 3]), f(&[4, 3]), f(&[4])], |t| {
            ops::linear(&t[0], &t[1], Some(&t[2]))
        }),
        c("bmm", vec![f(&[2, 2, 3]), f(&[2, 3, 4])], |t| {
            ops::bmm(&t[0], &t[1])
        }),
        c(
            "baddbmm",
            vec![f(&[2, 2, 4]), f(&[2, 2, 3]), f(&[2, 3, 4])],
            |t| ops::baddbmm(&t[0], &t[1], &t[2], 0.5, 2.0),
        ),
        c(
            "scaled_dot_product_attention",
            vec![f(&[1, 2, 3, 4]), f(&[1, 2, 5, 4]), f(&[1, 2, 5, 4])],
            |t| ops::scaled_dot_product_attention(&t[0], &t[1], &t[2], None, 0.0, true, None),
        ),
        c("conv1d", vec![f(&[2, 4, 7]), f(&[6, 2, 3]), f(&[6])], |t| {
            let o = ops::Conv1dOptions {
                padding: 1,
                groups: 2,
                ..Default::default()
            };
            ops::conv1d(&t[0], &t[1], Some(&t[2]), o)
        }),
        c(
            "conv2d",
            vec![f(&[2, 3, 5, 4]), f(&[4, 3, 3, 2]), f(&[4])],
            |t| {
                let o = ops::Conv2dOptions::default().stride(2).padding(1);
                ops::conv2d(&t[0], &t[1], Some(&t[2]), o)
            },
        ),
        c(
            "batch_norm",
            vec![f(&[3, 2, 2, 2]), f(&[2]), f(&[2])],
            |t| {
                let o = ops::BatchNormOptions::default();
                ops::batch_norm(&t[0], None, Some(&t[1]), Some(&t[2]), o)
            },
        ),
        c("group_norm", vec![f(&[2, 4, 3]), f(&[4]), f(&[4])], |t| {
            ops::group_norm(&t[0], 2, Some(&t[1]), Some(&t[2]), 1e-5)
        }),
        c("max_pool2d", vec![f(&[2, 2, 5, 5])], |t| {
            ops::max_pool2d(&t[0], ops::Pool2dOptions::new(3).stride(2).padding(1))
        }),
        c("avg_pool2d", vec![f(&[2, 2, 5, 5])], |t| {
            ops::avg_pool2d(&t[0], ops::Pool2dOptions::new(2), true)
        }),
        c("adaptive_avg_pool2d", vec![f(&[2, 2, 5, 7])], |t| {
            ops::adaptive_avg_pool2d(&t[0], [2, 3])
        }),
        c("add", vec![f(&[2, 3]), f(&[2, 3])], |t| t[0].add(&t[1])),
        c("sub", vec![f(&[2, 3]), f(&[1, 3])], |t| t[0].sub(&t[1])),
        c("mul", vec![f(&[2, 3]), f(&[2, 3])], |t| t[0].mul(&t[1])),
        c("div", vec![f(&[2, 3]), pos(&[2, 3])], |t| t[0].div(&t[1])),
        c("maximum", vec![f(&[2, 3]), f(&[2, 3])], |t| {
            t[0].maximum(&t[1])
        }),
        c("minimum", vec![f(&[2, 3]), f(&[2, 3])], |t| {
            t[0].minimum(&t[1])
        }),
        c("eq", vec![f(&[2, 3]), f(&[2, 3])], |t| t[0].eq(&t[1])),
        c("gt", vec![f(&[2, 3]), f(&[2, 3])], |t| t[0].gt(&t[1])),
        c("lt", vec![f(&[2, 3]), f(&[2, 3])], |t| t[0].lt(&t[1])),
        c("neg", vec![f(&[2, 3])], |t| t[0].neg()),
        c("exp", vec![f(&[2, 3])], |t| t[0].exp()),
        c("log", vec![pos(&[2, 3])], |t| t[0].log()),
        c("sqrt", vec![pos(&[2, 3])], |t| t[0].sqrt()),
        c("rsqrt", vec![pos(&[2, 3])], |t| t[0].rsqrt()),
        c("pow", vec![pos(&[2, 3])], |t| t[0].powf(2.5)),
        c("abs", vec![f(&[2, 3])], |t| t[0].abs()),
        c("sign", vec![f(&[2, 3])], |t| t[0].sign()),
        c("reciprocal", vec![pos(&[2, 3])], |t| t[0].recip()),
        c("relu", vec![f(&[2, 3])], |t| t[0].relu()),
        c("gelu", vec![f(&[2, 3])], |t| t[0].gelu(GeluApprox::None)),
        c("tanh", vec![f(&[2, 3])], |t| t[0].tanh()),
        c("sigmoid", vec![f(&[2, 3])], |t| t[0].sigmoid()),
        c("silu", vec![f(&[2, 3])], |t| t[0].silu()),
        c("erf", vec![f(&[2, 3])], |t| t[0].erf()),
        c("affine", vec![f(&[2, 3])], |t| t[0].affine(1.5, 0.25)),
        c("to", vec![f(&[2, 3])], |t| t[0].to_dtype(DType::F64)),
        c(
            "where",
            vec![B(mask, &[2, 3]), f(&[2, 3]), f(&[2, 3])],
            |t| ops::where_cond(&t[0], &t[1], &t[2]),
        ),
        c("masked_fill", vec![f(&[2, 3]), B(mask, &[2, 3])], |t| {
            ops::masked_fill(&t[0], &t[1], -1.5)
        }),
        c("sum", vec![f(&[3, 5])], |t| t[0].sum_all()),
        c("mean", vec![f(&[3, 5])], |t| t[0].mean_all()),
        c("max", vec![f(&[3, 5])], |t| Ok(t[0].max_dim(1, false)?.0)),
        c("argmax", vec![f(&[3, 5])], |t| t[0].argmax(1, false)),
        c("softmax", vec![f(&[3, 5])], |t| ops::softmax(&t[0], -1)),
        c("log_softmax", vec![f(&[3, 5])], |t| {
            ops::log_softmax(&t[0], -1)
        }),
        c("layer_norm", vec![f(&[3, 4]), f(&[4]), f(&[4])], |t| {
            ops::layer_norm(&t[0], Some(&t[1]), Some(&t[2]), 1e-5)
        }),
        c("gather", vec![f(&[2, 3]), I(&[2, 0, 1, 1], &[2, 2])], |t| {
            t[0].gather(1, &t[1])
        }),
        c("index_select", vec![f(&[3, 2]), I(&[2, 0], &[2])], |t| {
            t[0].index_select(0, &t[1])
        }),
        c("embedding", vec![I(&[1, 3, 0], &[3]), f(&[4, 2])], |t| {
            ops::embedding(&t[0], &t[1])
        }),
        c("nll_loss", vec![f(&[3, 4]), I(&[0, 3, 1], &[3])], |t| {
            ops::nll_loss(&t[0], &t[1], Reduction::Mean, -100)
        }),
        c(
            "cross_entropy",
            vec![f(&[3, 4]), I(&[0, 3, 1], &[3])],
            |t| ops::cross_entropy(&t[0], &t[1]),
        ),
        c("mse_loss", vec![f(&[2, 3]), f(&[2, 3])], |t| {
            ops::mse_loss(&t[0], &t[1], Reduction::Mean)
        }),
        c("dropout", vec![f(&[2, 3])], |t| {
            ops::dropout(&t[0], 0.5, true, 7)
        }),
        c("cat", vec![f(&[2, 3]), f(&[1, 3])], |t| {
            ops::cat(&[&t[0], &t[1]], 0)
        }),
        c("stack", vec![f(&[2, 3]), f(&[2, 3])], |t| {
            ops::stack(&[&t[0], &t[1]], 0)
        }),
    ]
}

/// How the floating inputs of a case are typed before the op runs.
#[derive(Debug, Clone, Copy)]
enum Variant {
    AllF32,
    /// All in the low dtype that is *not* the region's.
    AllOtherLow,
    /// The first floating input in the region's dtype, the rest f32.
    Mixed,
}

fn build(case: &Case, variant: Variant, region: DType, device: &Device) -> Result<Vec<Tensor>> {
    let other = if region == DType::F16 {
        DType::BF16
    } else {
        DType::F16
    };
    let mut first_float = true;
    case.args
        .iter()
        .enumerate()
        .map(|(i, a)| match a {
            Arg::F(shape, lo, hi) => {
                let t = Tensor::rand_uniform(shape, *lo, *hi, DType::F32, device, 100 + i as u64)?;
                let dtype = match variant {
                    Variant::AllF32 => DType::F32,
                    Variant::AllOtherLow => other,
                    Variant::Mixed if first_float => region,
                    Variant::Mixed => DType::F32,
                };
                first_float = false;
                t.to_dtype(dtype)
            }
            Arg::I(v, shape) => Tensor::from_vec(v.to_vec(), shape, device),
            Arg::B(v, shape) => Tensor::from_vec(v.to_vec(), shape, device),
        })
        .collect()
}

/// The test's own statement of the rules: what a region does to `inputs`.
fn cast_by_hand(rule: CastRule, region: DType, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    let eligible = |t: &Tensor| t.dtype().is_float() && t.dtype() != DType::F64;
    let target = match rule {
        CastRule::LowerPrecision => Some(region),
        CastRule::Float32 => Some(DType::F32),
        CastRule::Promote => {
            let mut widest = None;
            for t in inputs.iter().filter(|t| eligible(t)) {
                widest = Some(match widest {
                    None => t.dtype(),
                    Some(w) => DType::promote(w, t.dtype())?,
                });
            }
            widest
        }
        CastRule::Passthrough => None,
    };
    inputs
        .iter()
        .map(|t| match target {
            Some(d) if eligible(t) => t.to_dtype(d),
            _ => Ok(t.clone()),
        })
        .collect()
}

fn bits(t: &Tensor) -> Vec<u64> {
    t.to_f64_vec()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

fn check_device(device: &Device) {
    let kind = device.kind();
    let policy = Policy::pytorch(kind);
    let mut compared = 0;
    for region in [DType::F16, DType::BF16] {
        for case in cases() {
            let rule = policy.rule(case.name);
            for variant in [Variant::AllF32, Variant::AllOtherLow, Variant::Mixed] {
                let ctx = format!(
                    "{} on {device:?} in a {region} region, inputs {variant:?}, rule {rule}",
                    case.name
                );
                let inputs = build(&case, variant, region, device).unwrap();
                let expected =
                    cast_by_hand(rule, region, &inputs).and_then(|hand| (case.run)(&hand));
                reset_stats();
                let actual = {
                    let _region = Autocast::new(kind).dtype(region).enter().unwrap();
                    (case.run)(&inputs)
                };
                let s = stats();
                assert_eq!(
                    (s.total_ops(), s.ops(rule)),
                    (1, 1),
                    "{ctx}: one op intercepted, with its rule"
                );
                match (expected, actual) {
                    (Ok(e), Ok(a)) => {
                        assert_eq!(a.dtype(), e.dtype(), "{ctx}: dtype");
                        assert_eq!(a.dims(), e.dims(), "{ctx}: shape");
                        assert_eq!(bits(&a), bits(&e), "{ctx}: values");
                        if a.dtype().is_float() && !inputs.iter().any(|t| t.dtype() == DType::F64) {
                            match rule {
                                CastRule::LowerPrecision if case.name != "to" => {
                                    assert_eq!(a.dtype(), region, "{ctx}")
                                }
                                CastRule::Float32 => assert_eq!(a.dtype(), DType::F32, "{ctx}"),
                                _ => {}
                            }
                        }
                        compared += 1;
                    }
                    (Err(e), Err(a)) => {
                        assert_eq!(a.to_string(), e.to_string(), "{ctx}: same error")
                    }
                    (e, a) => panic!("{ctx}: by hand {e:?}, under autocast {a:?}"),
                }
            }
        }
    }
    // Mixed-dtype inputs legitimately fail for some ops (layer_norm's weight
    // must match its input when passed through); the rest must have run.
    assert!(
        compared >= 2 * cases().len() * 2,
        "{device:?}: only {compared} successful comparisons"
    );
}

#[test]
fn cases_cover_every_project_op() {
    let names: BTreeSet<&str> = cases().iter().map(|c| c.name).collect();
    let ops: BTreeSet<&str> = Policy::project_ops().collect();
    assert_eq!(names, ops);
    assert_eq!(names.len(), cases().len());
}

on_every_device!(
    every_op_on_every_device,
    |device: &Device| -> amp_tensor::Result<()> {
        check_device(device);
        Ok(())
    }
);

#[test]
fn every_op_on_a_cuda_kind_device() {
    check_device(&common::fake_cuda());
}

/// The CUDA table installed in a CPU region (as the brief's "re-targeted"
/// policy): the rules follow the policy, not the device.
#[test]
fn cuda_table_retargeted_to_cpu() {
    let device = Device::reference();
    let x = Tensor::randn(&[3, 4], DType::BF16, &device, 1).unwrap();
    let cpu_default = {
        let _r = Autocast::new(device.kind()).enter().unwrap();
        ops::softmax(&x, -1).unwrap()
    };
    assert_eq!(cpu_default.dtype(), DType::BF16);
    let with_cuda_table = {
        let policy = Policy::pytorch(amp_tensor::DeviceKind::Cuda).retarget(device.kind());
        let _r = Autocast::new(device.kind()).policy(policy).enter().unwrap();
        ops::softmax(&x, -1).unwrap()
    };
    assert_eq!(with_cuda_table.dtype(), DType::F32);
    assert_eq!(
        bits(&with_cuda_table),
        bits(&ops::softmax(&x.to_dtype(DType::F32).unwrap(), -1).unwrap())
    );
}
