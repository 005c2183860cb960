//! The MPI process group, data-parallel gradients and the scaler across ranks,
//! on a real `mpirun -np 2`.
//!
//! Run by `cargo test -p amp-dist --features mpi --test mpi`: without an MPI
//! launcher in the environment this program is the driver, which launches
//! itself under `mpirun` once per scenario and checks each run's exit status
//! and output; under `mpirun` it is a rank and runs the scenario named by its
//! argument. Each rank's expectations are computed independently (exact
//! arithmetic on both ranks' known inputs), not taken from the other rank.

use amp_dist::{
    check_scalers_agree, DdpConfig, DistributedDataParallel, Error, Launch, MpiGroup, ProcessGroup,
    ReduceOp, ScalerReduce,
};
use amp_scaler::{GradScaler, Optimizer, StepOutcome};
use amp_tensor::{DType, Device, Tensor};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SCENARIOS: [&str; 3] = ["collectives", "ddp", "scaler"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if Launch::from_env().is_some() {
        return rank_main(args.get(1).map_or("", String::as_str));
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for scenario in SCENARIOS {
        let out = amp_testkit::mpirun(2)
            .arg(&exe)
            .arg(scenario)
            .output()
            .expect("mpirun runs (Open MPI: apt-get install openmpi-bin libopenmpi-dev)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let ok = out.status.success()
            && (0..2).all(|r| text.contains(&format!("rank {r}: {scenario} ok")));
        println!(
            "test mpi::{scenario} ... {}",
            if ok { "ok" } else { "FAILED" }
        );
        if ok {
            passed += 1;
        } else {
            failed += 1;
            println!("{text}");
        }
    }
    // NCCL (feature `nccl`): on as many GPUs as there are, up to 2, when a
    // GPU is present; NCCL refuses two ranks on one GPU.
    #[cfg(feature = "nccl")]
    {
        let gpus = if amp_cuda::is_available() {
            amp_cuda::device_count().min(2)
        } else {
            0
        };
        if gpus == 0 {
            println!("test mpi::nccl ... skipped: no usable GPU");
            skipped += 1;
        } else {
            let out = amp_testkit::mpirun(gpus)
                .arg(&exe)
                .arg("nccl")
                .output()
                .expect("mpirun runs");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let ok = out.status.success()
                && (0..gpus).all(|r| text.contains(&format!("rank {r}: nccl ok")));
            println!(
                "test mpi::nccl ({gpus} GPU ranks) ... {}",
                if ok { "ok" } else { "FAILED" }
            );
            if ok {
                passed += 1;
            } else {
                failed += 1;
                println!("{text}");
            }
        }
    }
    // A rank that dies, and one that hangs: the other stops with a clear
    // error within a bounded time. A rank that exits makes mpirun end the job
    // at once; a hung one is caught by the collective's timeout (3 s here).
    for (scenario, test, needle) in [
        ("die", "a_dead_rank_stops_the_job", "exited"),
        (
            "hang",
            "a_hung_rank_times_out",
            "did not complete within 3s",
        ),
    ] {
        let start = Instant::now();
        let out = amp_testkit::mpirun(2)
            .arg(&exe)
            .arg(scenario)
            .output()
            .expect("mpirun runs");
        let took = start.elapsed();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let ok = !out.status.success()
            && took < Duration::from_secs(60)
            && text.contains(needle)
            && !text.contains(&format!("rank 0: {scenario} ok"));
        println!(
            "test mpi::{test} ... {} ({:.1} s, exit {:?})",
            if ok { "ok" } else { "FAILED" },
            took.as_secs_f64(),
            out.status.code()
        );
        if ok {
            passed += 1;
        } else {
            failed += 1;
            println!("{text}");
        }
    }
    #[cfg(not(feature = "nccl"))]
    {
        println!("test mpi::nccl ... skipped: built without the nccl feature");
        skipped += 1;
    }
    println!("mpi: {passed} passed, {failed} failed, {skipped} skipped");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn rank_main(scenario: &str) -> ExitCode {
    #[cfg(feature = "nccl")]
    if scenario == "nccl" {
        return nccl::run();
    }
    let timeout = match scenario {
        "die" => 10,
        "hang" => 3,
        _ => 120,
    };
    let group = match MpiGroup::init_with_timeout("mpi-test", Duration::from_secs(timeout)) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("init: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rank = group.rank();
    let result = match scenario {
        "collectives" => collectives(&group),
        "ddp" => ddp(Arc::new(group.clone())),
        "scaler" => scaler(Arc::new(group.clone())),
        "die" => die(&group),
        "hang" => hang(&group),
        other => Err(format!("unknown scenario {other:?}")),
    };
    match result {
        Ok(()) => {
            println!("rank {rank}: {scenario} ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rank {rank}: {scenario} FAILED: {e}");
            group.abort(1)
        }
    }
}

type R = std::result::Result<(), String>;

fn check(cond: bool, what: impl FnOnce() -> String) -> R {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

fn devices() -> Vec<Device> {
    vec![Device::reference(), amp_cpu::device()]
}

/// Rank r's input: element i is (r + 1) · (i − 2.5) / 3, some of them inexact in binary.
fn input(rank: usize, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| (rank as f64 + 1.0) * (i as f64 - 2.5) / 3.0)
        .collect()
}

/// Rounding of an f64 to `dtype` (f32 or f64), as a tensor of it holds the value.
fn rounding(dtype: DType) -> impl Fn(f64) -> f64 + Copy {
    move |v| {
        if dtype == DType::F32 {
            v as f32 as f64
        } else {
            v
        }
    }
}

fn collectives(group: &MpiGroup) -> R {
    let (rank, world) = (group.rank(), group.world_size());
    check(world == 2, || format!("world size {world}"))?;
    let e = |e: Error| e.to_string();
    for device in devices() {
        for dtype in [DType::F32, DType::F64] {
            let round = rounding(dtype);
            let mine = Tensor::from_f64_slice(&input(rank, 7), &[7], dtype, &device)
                .map_err(|e| e.to_string())?;
            let a: Vec<f64> = input(0, 7).into_iter().map(round).collect();
            let b: Vec<f64> = input(1, 7).into_iter().map(round).collect();
            for (op, want) in [
                (
                    ReduceOp::Sum,
                    a.iter()
                        .zip(&b)
                        .map(|(x, y)| round(x + y))
                        .collect::<Vec<_>>(),
                ),
                (
                    ReduceOp::Avg,
                    a.iter().zip(&b).map(|(x, y)| round(x + y) * 0.5).collect(),
                ),
                (
                    ReduceOp::Max,
                    a.iter().zip(&b).map(|(x, y)| x.max(*y)).collect(),
                ),
                (
                    ReduceOp::Min,
                    a.iter().zip(&b).map(|(x, y)| x.min(*y)).collect(),
                ),
            ] {
                let got = group.all_reduce(&mine, op).map_err(e)?;
                check(
                    got.dtype() == dtype && got.device().same_device(&device),
                    || format!("{op:?} result on {} {}", got.device(), got.dtype()),
                )?;
                let got = got.to_f64_vec().map_err(|e| e.to_string())?;
                check(got == want, || {
                    format!("{op:?} {dtype} on {device}: {got:?} vs {want:?}")
                })?;
            }
            // A transposed view reduces by its logical order.
            let m = Tensor::from_f64_slice(&input(rank, 6), &[2, 3], dtype, &device)
                .and_then(|t| t.t())
                .map_err(|e| e.to_string())?;
            let got = group.all_reduce(&m, ReduceOp::Sum).map_err(e)?;
            let want: Vec<f64> = [0, 3, 1, 4, 2, 5]
                .iter()
                .map(|&i| round(round(input(0, 6)[i]) + round(input(1, 6)[i])))
                .collect();
            check(
                got.dims() == [3, 2] && got.to_f64_vec().unwrap() == want,
                || format!("transposed sum {:?}", got.to_f64_vec()),
            )?;
            // Broadcast from rank 1 keeps -0.0 and exact bits.
            let special =
                Tensor::from_f64_slice(&[-0.0, 1.0 / 3.0, rank as f64], &[3], dtype, &device)
                    .map_err(|e| e.to_string())?;
            let got = group
                .broadcast(&special, 1)
                .map_err(e)?
                .to_f64_vec()
                .unwrap();
            check(
                got[0].to_bits() == (-0.0f64).to_bits()
                    && got[1] == round(1.0 / 3.0)
                    && got[2] == 1.0,
                || format!("broadcast {got:?}"),
            )?;
        }
        // Only f32/f64 are reduced: a clear error, raised before any collective.
        let half = Tensor::zeros(&[4], DType::BF16, &device).unwrap();
        let m = group
            .all_reduce(&half, ReduceOp::Sum)
            .unwrap_err()
            .to_string();
        check(m.contains("bf16") && m.contains("[4]"), || m.clone())?;
        let m = group
            .broadcast(&Tensor::zeros(&[1], DType::F32, &device).unwrap(), 2)
            .unwrap_err()
            .to_string();
        check(m.contains("root rank 2"), || m.clone())?;
    }
    let mut flags = [rank as f64, 1.0, -(rank as f64)];
    group.all_reduce_f64(&mut flags, ReduceOp::Max).map_err(e)?;
    check(flags == [1.0, 1.0, 0.0], || format!("{flags:?}"))?;
    group.barrier().map_err(e)
}

/// A two-layer model whose parameters start different on each rank.
fn params(device: &Device, rank: usize) -> Vec<(String, Tensor)> {
    let mk = |name: &str, shape: &[usize], seed: u64| {
        let t = Tensor::randn(shape, DType::F32, device, seed + 100 * rank as u64).unwrap();
        t.set_requires_grad(true).unwrap();
        (name.to_string(), t)
    };
    vec![
        mk("0.weight", &[16, 8], 1),
        mk("0.bias", &[16], 2),
        mk("1.weight", &[4, 16], 3),
        mk("1.bias", &[4], 4),
    ]
}

/// The loss of rank `r`'s batch: mean of (W1·tanh(W0·x + b0) + b1)².
fn loss(p: &[(String, Tensor)], device: &Device, r: usize) -> amp_tensor::Result<Tensor> {
    let x = Tensor::randn(&[5, 8], DType::F32, device, 7 + r as u64)?;
    let h = amp_tensor::ops::linear(&x, &p[0].1, Some(&p[1].1))?.tanh()?;
    let y = amp_tensor::ops::linear(&h, &p[2].1, Some(&p[3].1))?;
    y.mul(&y)?.mean_all()
}

fn ddp(group: Arc<dyn ProcessGroup>) -> R {
    let rank = group.rank();
    let s = |e: amp_tensor::Error| e.to_string();
    for device in devices() {
        for (label, config) in [
            ("one bucket, overlapped", DdpConfig::default()),
            // 512-byte buckets: three all-reduces, in flight during backward.
            (
                "small buckets, overlapped",
                DdpConfig {
                    bucket_cap_mb: 0.5 / 1024.0,
                    first_bucket_mb: 0.25 / 1024.0,
                    overlap: true,
                },
            ),
            (
                "small buckets, after backward",
                DdpConfig {
                    bucket_cap_mb: 0.5 / 1024.0,
                    first_bucket_mb: 0.25 / 1024.0,
                    overlap: false,
                },
            ),
        ] {
            let mine = params(&device, rank);
            let ddp = DistributedDataParallel::new(group.clone(), mine.clone(), config)
                .map_err(|e| e.to_string())?;
            // Rank 0's values everywhere.
            let zero = params(&device, 0);
            for ((n, p), (_, q)) in mine.iter().zip(&zero) {
                check(p.to_f64_vec().unwrap() == q.to_f64_vec().unwrap(), || {
                    format!("{label}: {n} not broadcast")
                })?;
            }
            ddp.check_parameters_agree().map_err(|e| e.to_string())?;
            if config.bucket_cap_mb < 0.01 {
                check(ddp.buckets().len() >= 3, || {
                    format!("{label}: buckets {:?}", ddp.buckets())
                })?;
            }
            check(ddp.buckets()[0][0] == "1.bias", || {
                format!("{label}: buckets in reverse order {:?}", ddp.buckets())
            })?;
            // Expected gradient: the mean of both ranks' gradients, computed here.
            let mut want = vec![vec![0.0f64; 0]; 4];
            for r in 0..2 {
                let local = params(&device, 0);
                loss(&local, &device, r).map_err(s)?.backward().map_err(s)?;
                for (k, (_, p)) in local.iter().enumerate() {
                    let g = p.grad().unwrap().to_f64_vec().unwrap();
                    if want[k].is_empty() {
                        want[k] = vec![0.0; g.len()];
                    }
                    want[k].iter_mut().zip(&g).for_each(|(w, x)| *w += x / 2.0);
                }
            }
            for step in 0..2 {
                mine.iter().for_each(|(_, p)| p.zero_grad());
                loss(&mine, &device, rank)
                    .map_err(s)?
                    .backward()
                    .map_err(s)?;
                ddp.synchronize().map_err(|e| e.to_string())?;
                for (k, (n, p)) in mine.iter().enumerate() {
                    let g = p.grad().unwrap().to_f64_vec().unwrap();
                    for (a, b) in g.iter().zip(&want[k]) {
                        check((a - b).abs() <= 1e-6 * b.abs().max(1e-3), || {
                            format!("{label} step {step} on {device}: grad of {n}: {a} vs {b}")
                        })?;
                    }
                }
            }
            // Two backward passes before synchronize accumulate, then reduce.
            mine.iter().for_each(|(_, p)| p.zero_grad());
            for _ in 0..2 {
                loss(&mine, &device, rank)
                    .map_err(s)?
                    .backward()
                    .map_err(s)?;
            }
            ddp.synchronize().map_err(|e| e.to_string())?;
            let g = mine[0].1.grad().unwrap().to_f64_vec().unwrap();
            for (a, b) in g.iter().zip(&want[0]) {
                check((a - 2.0 * b).abs() <= 2e-6 * b.abs().max(1e-3), || {
                    format!("{label}: accumulated grad {a} vs {}", 2.0 * b)
                })?;
            }
        }
        // Different models on the ranks: a clear error on both, before any training.
        let mut other = params(&device, 0);
        if rank == 1 {
            other.pop();
        }
        let m = DistributedDataParallel::new(group.clone(), other, DdpConfig::default())
            .unwrap_err()
            .to_string();
        check(m.contains("parameter count from 3 to 4"), || m.clone())?;
    }
    Ok(())
}

/// Plain SGD over named parameters.
struct Sgd(Vec<(String, Tensor)>);

impl Optimizer for Sgd {
    fn params(&self) -> Vec<(String, Tensor)> {
        self.0.clone()
    }
    fn step(&mut self) -> amp_scaler::Result<()> {
        let _no_grad = amp_tensor::no_grad();
        for (_, p) in &self.0 {
            if let Some(g) = p.grad() {
                p.assign(&p.sub(&g.mul_scalar(0.1)?)?)?;
            }
        }
        Ok(())
    }
    fn zero_grad(&mut self) {
        self.0.iter().for_each(|(_, p)| p.zero_grad());
    }
}

fn scaler(group: Arc<dyn ProcessGroup>) -> R {
    let rank = group.rank();
    let s = |e: amp_tensor::Error| e.to_string();
    let device = amp_cpu::device();
    let mine = params(&device, rank);
    let ddp = DistributedDataParallel::new(group.clone(), mine.clone(), DdpConfig::default())
        .map_err(|e| e.to_string())?;
    let mut scaler = GradScaler::builder()
        .init_scale(1024.0)
        .found_inf_reduce(Arc::new(ScalerReduce::for_ddp(&ddp)))
        .build()
        .map_err(|e| e.to_string())?;
    let mut opt = Sgd(mine.clone());
    for step in 0..4 {
        opt.zero_grad();
        let loss = loss(&mine, &device, rank).map_err(s)?;
        // Step 1: an inf in rank 1's loss only (so in its gradients only).
        let loss = if step == 1 && rank == 1 {
            loss.mul_scalar(f64::INFINITY).map_err(s)?
        } else {
            loss
        };
        let before: Vec<Vec<f64>> = mine.iter().map(|(_, p)| p.to_f64_vec().unwrap()).collect();
        scaler
            .scale(&loss)
            .map_err(|e| e.to_string())?
            .backward()
            .map_err(s)?;
        ddp.synchronize().map_err(|e| e.to_string())?;
        let outcome = scaler.step(&mut opt).map_err(|e| e.to_string())?;
        let scale_before = scaler.get_scale();
        scaler.update().map_err(|e| e.to_string())?;
        if step == 1 {
            // Both ranks skip, and both name rank 1 alone (its gradients were
            // inf before averaging; after averaging both ranks hold the infs).
            match &outcome {
                StepOutcome::Skipped {
                    ranks,
                    inf_params,
                    nan_params,
                } => {
                    check(ranks == &vec![1], || format!("ranks {ranks:?}"))?;
                    check(!inf_params.is_empty() || !nan_params.is_empty(), || {
                        "no parameter named".into()
                    })?;
                }
                other => return Err(format!("step 1 on rank {rank}: {other:?}")),
            }
            check(scaler.get_scale() == scale_before / 2.0, || {
                format!("scale {}", scaler.get_scale())
            })?;
            let after: Vec<Vec<f64>> = mine.iter().map(|(_, p)| p.to_f64_vec().unwrap()).collect();
            check(after == before, || {
                "a skipped step changed the weights".into()
            })?;
        } else {
            check(outcome.is_stepped(), || format!("step {step}: {outcome:?}"))?;
        }
        check_scalers_agree(group.as_ref(), &scaler).map_err(|e| e.to_string())?;
        ddp.check_parameters_agree().map_err(|e| e.to_string())?;
    }
    check(
        (scaler.steps(), scaler.skips(), scaler.get_scale()) == (3, 1, 512.0),
        || {
            format!(
                "steps {} skips {} scale {}",
                scaler.steps(),
                scaler.skips(),
                scaler.get_scale()
            )
        },
    )?;
    // A scaler that differs on one rank is caught, on both ranks.
    let odd = GradScaler::builder()
        .init_scale(if rank == 0 { 8.0 } else { 16.0 })
        .build()
        .unwrap();
    let m = check_scalers_agree(group.as_ref(), &odd)
        .unwrap_err()
        .to_string();
    check(m.contains("loss scale from 8 to 16"), || m.clone())
}

fn die(group: &MpiGroup) -> R {
    if group.rank() == 1 {
        eprintln!("rank 1: exiting without a word, as a crashed rank would");
        std::process::exit(7);
    }
    std::thread::sleep(Duration::from_millis(200));
    let t = Tensor::ones(&[4], DType::F32, &amp_cpu::device()).unwrap();
    match group.all_reduce(&t, ReduceOp::Sum) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("as expected, the survivor stops: {e}")),
    }
}

fn hang(group: &MpiGroup) -> R {
    if group.rank() == 1 {
        // Stuck (a deadlock, a stalled device): never joins the collective.
        std::thread::sleep(Duration::from_secs(30));
        return Ok(());
    }
    let t = Tensor::ones(&[4], DType::F32, &amp_cpu::device()).unwrap();
    match group.all_reduce(&t, ReduceOp::Sum) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("as expected, the waiting rank stops: {e}")),
    }
}

/// The NCCL group on CUDA tensors: collectives against exact values, and
/// data-parallel gradients against their mean computed here.
#[cfg(feature = "nccl")]
mod nccl {
    use super::*;
    use amp_dist::NcclGroup;

    pub fn run() -> ExitCode {
        let group = match NcclGroup::init("mpi-test", None, Duration::from_secs(120)) {
            Ok(g) => Arc::new(g),
            Err(e) => {
                eprintln!("nccl init: {e}");
                return ExitCode::FAILURE;
            }
        };
        let rank = group.rank();
        match check(&group) {
            Ok(()) => {
                println!("rank {rank}: nccl ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rank {rank}: nccl FAILED: {e}");
                group.abort(1)
            }
        }
    }

    fn check(group: &Arc<NcclGroup>) -> R {
        let (rank, world) = (group.rank(), group.world_size());
        let device = group.device().clone();
        let s = |e: amp_dist::Error| e.to_string();
        for dtype in [DType::F32, DType::F64] {
            let round = rounding(dtype);
            let t = Tensor::from_f64_slice(&input(rank, 9), &[9], dtype, &device)
                .map_err(|e| e.to_string())?;
            let sum = group.all_reduce(&t, ReduceOp::Sum).map_err(s)?;
            check_on(&sum, &device)?;
            let want: Vec<f64> = (0..9)
                .map(|i| {
                    (0..world)
                        .map(|r| round(input(r, 9)[i]))
                        .fold(0.0, |a, b| round(a + b))
                })
                .collect();
            let got = sum.to_f64_vec().unwrap();
            super::check(got == want, || {
                format!("NCCL sum {dtype}: {got:?} vs {want:?}")
            })?;
            let max = group
                .all_reduce(&t, ReduceOp::Max)
                .map_err(s)?
                .to_f64_vec()
                .unwrap();
            let want: Vec<f64> = (0..9)
                .map(|i| {
                    (0..world)
                        .map(|r| round(input(r, 9)[i]))
                        .fold(f64::MIN, f64::max)
                })
                .collect();
            super::check(max == want, || {
                format!("NCCL max {dtype}: {max:?} vs {want:?}")
            })?;
            let b = group
                .broadcast(&t, world - 1)
                .map_err(s)?
                .to_f64_vec()
                .unwrap();
            let want: Vec<f64> = input(world - 1, 9).into_iter().map(round).collect();
            super::check(b == want, || format!("NCCL broadcast {dtype}: {b:?}"))?;
        }
        // Data-parallel gradients on the GPU: the mean of every rank's.
        let group: Arc<dyn ProcessGroup> = group.clone();
        let mine = params(&device, rank);
        let ddp = DistributedDataParallel::new(group.clone(), mine.clone(), DdpConfig::default())
            .map_err(s)?;
        loss(&mine, &device, rank)
            .and_then(|l| l.backward())
            .map_err(|e| e.to_string())?;
        ddp.synchronize().map_err(s)?;
        let mut want: Vec<Vec<f64>> = Vec::new();
        for r in 0..world {
            let local = params(&device, 0);
            loss(&local, &device, r)
                .and_then(|l| l.backward())
                .map_err(|e| e.to_string())?;
            for (k, (_, p)) in local.iter().enumerate() {
                let g = p.grad().unwrap().to_f64_vec().unwrap();
                if want.len() <= k {
                    want.push(vec![0.0; g.len()]);
                }
                want[k]
                    .iter_mut()
                    .zip(&g)
                    .for_each(|(w, x)| *w += x / world as f64);
            }
        }
        for (k, (n, p)) in mine.iter().enumerate() {
            let g = p.grad().unwrap().to_f64_vec().unwrap();
            for (a, b) in g.iter().zip(&want[k]) {
                super::check((a - b).abs() <= 1e-5 * b.abs().max(1e-3), || {
                    format!("NCCL DDP grad of {n}: {a} vs {b}")
                })?;
            }
        }
        ddp.check_parameters_agree().map_err(s)
    }

    fn check_on(t: &Tensor, device: &Device) -> R {
        super::check(t.device().same_device(device), || {
            format!("result on {}", t.device())
        })
    }
}
