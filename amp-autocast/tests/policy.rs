//! The documented table, custom ops, overrides and policy strings.

use amp_autocast::{
    autocast, default_policy, register_op_rule, stats, Autocast, CastRule, Policy, PolicyParseError,
};
use amp_tensor::dispatch::dispatch;
use amp_tensor::{ops, DType, Device, DeviceKind, Result, Tensor};

/// The crate docs' table rows: (op, CUDA rule, CPU rule).
fn documented_table() -> Vec<(String, CastRule, CastRule)> {
    let source = include_str!("../src/lib.rs");
    source
        .lines()
        .filter_map(|l| l.strip_prefix("//! | `"))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let op = cells[0].trim_end_matches('`').to_string();
            let rule = |s: &str| {
                CastRule::from_name(s).unwrap_or_else(|| panic!("bad rule {s:?} for {op}"))
            };
            (op.clone(), rule(cells[1]), rule(cells[2]))
        })
        .collect()
}

#[test]
fn the_documented_table_is_the_pytorch_policy() {
    let table = documented_table();
    let documented: Vec<&str> = table.iter().map(|r| r.0.as_str()).collect();
    let project: Vec<&str> = Policy::project_ops().collect();
    assert_eq!(
        documented, project,
        "the table lists every project op, in order"
    );
    let (cuda, cpu) = (
        Policy::pytorch(DeviceKind::Cuda),
        Policy::pytorch(DeviceKind::Cpu),
    );
    for (op, on_cuda, on_cpu) in &table {
        assert_eq!(cuda.rule(op), *on_cuda, "CUDA rule of {op}");
        assert_eq!(cpu.rule(op), *on_cpu, "CPU rule of {op}");
    }
}

/// The issue's statement of PyTorch's lists, checked against the policies.
#[test]
fn the_issue_examples_hold() {
    let cuda = Policy::pytorch(DeviceKind::Cuda);
    for op in [
        "softmax",
        "log_softmax",
        "layer_norm",
        "exp",
        "log",
        "pow",
        "sum",
        "mse_loss",
        "nll_loss",
        "cross_entropy",
    ] {
        assert_eq!(cuda.rule(op), CastRule::Float32, "{op}");
    }
    for op in ["matmul", "linear", "bmm", "conv2d"] {
        assert_eq!(cuda.rule(op), CastRule::LowerPrecision, "{op}");
    }
    let cpu = Policy::pytorch(DeviceKind::Cpu);
    for op in ["matmul", "linear", "conv2d"] {
        assert_eq!(cpu.rule(op), CastRule::LowerPrecision, "{op}");
    }
    for op in ["mse_loss", "nll_loss", "cross_entropy"] {
        assert_eq!(cpu.rule(op), CastRule::Float32, "{op}");
    }
    for op in ["cat", "stack"] {
        assert_eq!(cpu.rule(op), CastRule::Promote, "{op}");
    }
    for op in ["softmax", "exp", "sum", "layer_norm", "relu"] {
        assert_eq!(cpu.rule(op), CastRule::Passthrough, "{op}");
    }
}

/// A user-defined op: a scaled dot product written on amp-tensor's ops, named
/// through `dispatch` so autocast sees it.
fn my_scaled_dot(a: &Tensor, b: &Tensor, scale: f64) -> Result<Tensor> {
    dispatch("my_scaled_dot", &[a, b], |t| {
        t[0].mul(&t[1])?.sum_dim(-1, false)?.mul_scalar(scale)
    })
}

#[test]
fn custom_op_rules() {
    let device = Device::reference();
    let a = Tensor::randn(&[3, 4], DType::F32, &device, 0).unwrap();
    let b = Tensor::randn(&[3, 4], DType::F32, &device, 1).unwrap();
    // Unknown ops pass through.
    {
        let _r = autocast(DeviceKind::Cpu, DType::BF16).unwrap();
        assert_eq!(my_scaled_dot(&a, &b, 0.5).unwrap().dtype(), DType::F32);
        assert_eq!(stats().ops(CastRule::Passthrough), 1);
    }
    // A rule for this region only.
    let expected = my_scaled_dot(
        &a.to_dtype(DType::BF16).unwrap(),
        &b.to_dtype(DType::BF16).unwrap(),
        0.5,
    )
    .unwrap();
    {
        let _r = Autocast::new(DeviceKind::Cpu)
            .rule("my_scaled_dot", CastRule::LowerPrecision)
            .enter()
            .unwrap();
        let y = my_scaled_dot(&a, &b, 0.5).unwrap();
        assert_eq!(y.dtype(), DType::BF16);
        assert_eq!(y.to_f64_vec().unwrap(), expected.to_f64_vec().unwrap());
    }
    // Registered process-wide: every later region of that kind uses it.
    assert_eq!(
        register_op_rule(DeviceKind::Cpu, "my_scaled_dot_f32", CastRule::Float32),
        None
    );
    assert_eq!(
        default_policy(DeviceKind::Cpu).rule("my_scaled_dot_f32"),
        CastRule::Float32
    );
    assert_eq!(
        default_policy(DeviceKind::Cuda).rule("my_scaled_dot_f32"),
        CastRule::Passthrough
    );
    let _r = autocast(DeviceKind::Cpu, DType::F16).unwrap();
    let low = a.to_dtype(DType::F16).unwrap();
    let y = dispatch("my_scaled_dot_f32", &[&low, &low], |t| t[0].mul(&t[1])).unwrap();
    assert_eq!(y.dtype(), DType::F32);
}

#[test]
fn overriding_a_builtin_for_one_region() {
    let device = Device::reference();
    let x = Tensor::randn(&[2, 3], DType::F32, &device, 0).unwrap();
    let w = Tensor::randn(&[4, 3], DType::F32, &device, 1).unwrap();
    let _outer = autocast(DeviceKind::Cpu, DType::BF16).unwrap();
    {
        let _keep_linear_f32 = Autocast::new(DeviceKind::Cpu)
            .rule("linear", CastRule::Float32)
            .enter()
            .unwrap();
        let y = ops::linear(&x.to_dtype(DType::BF16).unwrap(), &w, None).unwrap();
        assert_eq!(y.dtype(), DType::F32);
        assert_eq!(
            ops::matmul(&x, &w.t().unwrap()).unwrap().dtype(),
            DType::BF16,
            "other rules unchanged"
        );
        // A nested region without a policy inherits the override.
        let _inner = Autocast::new(DeviceKind::Cpu).enter().unwrap();
        assert_eq!(ops::linear(&x, &w, None).unwrap().dtype(), DType::F32);
    }
    assert_eq!(
        ops::linear(&x, &w, None).unwrap().dtype(),
        DType::BF16,
        "restored after the region"
    );
    // A whole policy from a string.
    let policy: Policy = "cpu: linear=f32, matmul=passthrough".parse().unwrap();
    let _r = Autocast::new(DeviceKind::Cpu)
        .policy(policy)
        .enter()
        .unwrap();
    assert_eq!(ops::linear(&x, &w, None).unwrap().dtype(), DType::F32);
    assert_eq!(
        ops::matmul(&x, &w.t().unwrap()).unwrap().dtype(),
        DType::F32
    );
    assert_eq!(
        amp_autocast::current_policy(DeviceKind::Cpu).to_string(),
        "cpu: linear=f32, matmul=passthrough"
    );
}

#[test]
fn policy_strings_round_trip() {
    for kind in [DeviceKind::Cpu, DeviceKind::Cuda] {
        let p = Policy::pytorch(kind).with("my_op", CastRule::Promote);
        let text = p.to_string();
        assert!(text.starts_with(&format!("{kind}: ")));
        assert_eq!(text.parse::<Policy>().unwrap(), p);
    }
    let p: Policy = "cuda: matmul=lower, softmax=f32".parse().unwrap();
    assert_eq!(p.to_string(), "cuda: matmul=lower, softmax=f32");
    assert_eq!(
        p.ops_with(CastRule::Float32).collect::<Vec<_>>(),
        ["softmax"]
    );
}

#[test]
fn bad_policy_strings_point_at_the_token() {
    let cases: [(&str, usize, &str); 5] = [
        ("cuda: matmul=lowest", 14, "lowest"),
        ("gpu: matmul=lower", 1, "gpu"),
        ("cuda: matmul lower", 14, "lower"),
        ("cuda: matmul=lower; softmax=f32", 19, ";"),
        ("cuda: matmul=lower,, softmax=f32", 20, ","),
    ];
    for (input, column, token) in cases {
        let e: PolicyParseError = input.parse::<Policy>().unwrap_err();
        assert_eq!((e.column, e.token.as_str()), (column, token), "{input}");
        let shown = e.to_string();
        assert!(
            shown.contains(&format!("column {column}")) && shown.contains(input),
            "{shown}"
        );
        // The error converts into the crate error for `?`.
        let as_crate: amp_autocast::Error = e.into();
        assert!(as_crate.to_string().contains(&format!("column {column}")));
    }
}
