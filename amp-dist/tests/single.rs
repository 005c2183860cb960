//! The parts of amp-dist that need no MPI: the single-process group, the
//! data-parallel wrapper over it, the buckets, and reading a launch.

use amp_dist::{
    check_scalers_agree, DdpConfig, DistributedDataParallel, Launch, ProcessGroup, ReduceOp,
    ScalerReduce, SingleProcessGroup,
};
use amp_scaler::{FoundInfReduce, GradScaler};
use amp_tensor::{DType, Device, Tensor};
use std::collections::HashMap;
use std::sync::Arc;

fn leaf(shape: &[usize], seed: u64, device: &Device) -> Tensor {
    let t = Tensor::randn(shape, DType::F32, device, seed).unwrap();
    t.set_requires_grad(true).unwrap();
    t
}

amp_testkit::on_every_device!(
    ddp_on_one_process_leaves_gradients_as_backward_made_them,
    |device: &Device| -> amp_tensor::Result<()> {
        let params: Vec<(String, Tensor)> = vec![
            ("a".into(), leaf(&[64, 32], 1, device)),
            ("b".into(), leaf(&[32], 2, device)),
            ("c".into(), leaf(&[8, 64], 3, device)),
            ("unused".into(), leaf(&[3], 4, device)),
        ];
        for overlap in [true, false] {
            let config = DdpConfig {
                bucket_cap_mb: 4.0 / 1024.0,
                first_bucket_mb: 1.0 / 1024.0,
                overlap,
            };
            let group: Arc<dyn ProcessGroup> = Arc::new(SingleProcessGroup);
            let ddp = DistributedDataParallel::new(group, params.clone(), config).unwrap();
            // Reverse order; the first bucket ≤ 1 KiB (12 B), then c (2 KiB) and b
            // (128 B) ≤ 4 KiB, and a (8 KiB) alone, larger than the cap.
            assert_eq!(
                ddp.buckets(),
                vec![
                    vec!["unused".to_string()],
                    vec!["c".into(), "b".into()],
                    vec!["a".into()]
                ]
            );
            let x = Tensor::randn(&[5, 32], DType::F32, device, 9)?;
            let h =
                amp_tensor::ops::linear(&x, &params[0].1, None)?.add(&params[1].1.sum_all()?)?;
            let y = amp_tensor::ops::linear(&h, &params[2].1, None)?;
            params.iter().for_each(|(_, p)| p.zero_grad());
            y.mul(&y)?.mean_all()?.backward()?;
            let before: HashMap<String, Vec<f64>> = params
                .iter()
                .filter_map(|(n, p)| p.grad().map(|g| (n.clone(), g.to_f64_vec().unwrap())))
                .collect();
            ddp.synchronize().unwrap();
            for (n, p) in &params {
                let got = p
                    .grad()
                    .expect("every parameter has a gradient after synchronize")
                    .to_f64_vec()?;
                match before.get(n) {
                    Some(want) => assert_eq!(&got, want, "{n}"),
                    None => assert_eq!(
                        got,
                        vec![0.0; 3],
                        "a parameter without gradient counts as zeros"
                    ),
                }
            }
            ddp.check_parameters_agree().unwrap();
        }
        Ok(())
    }
);

#[test]
fn the_single_group_and_its_scaler_hook_are_the_identity() {
    let g = SingleProcessGroup;
    let device = Device::reference();
    let t = Tensor::from_f64_slice(&[1.0, -0.0, 3.5], &[3], DType::F32, &device).unwrap();
    for op in [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max, ReduceOp::Min] {
        assert_eq!(
            g.all_reduce(&t, op).unwrap().to_f64_vec().unwrap(),
            t.to_f64_vec().unwrap()
        );
    }
    assert!(g
        .broadcast(&t, 1)
        .unwrap_err()
        .to_string()
        .contains("root rank 1"));
    let m = g
        .all_reduce(&t.to_dtype(DType::F16).unwrap(), ReduceOp::Sum)
        .unwrap_err()
        .to_string();
    assert!(m.contains("f16") && m.contains("[3]"), "{m}");
    let reduce = ScalerReduce::new(Arc::new(g));
    assert_eq!(
        (reduce.rank(), reduce.world_size(), reduce.local_overflow()),
        (0, 1, None)
    );
    check_scalers_agree(&g, &GradScaler::new()).unwrap();
    let bad = DistributedDataParallel::new(
        Arc::new(g),
        vec![],
        DdpConfig {
            bucket_cap_mb: 0.0,
            ..DdpConfig::default()
        },
    );
    assert!(bad
        .unwrap_err()
        .to_string()
        .contains("bucket sizes must be positive"));
}

#[test]
fn a_launch_is_read_from_open_mpi_or_pmi_variables() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    };
    assert_eq!(
        Launch::from_vars(env(&[
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
        ])),
        Some(Launch {
            launcher: "Open MPI",
            rank: 1,
            world_size: 4,
            local_rank: 1,
            local_size: 2
        })
    );
    let pmi = Launch::from_vars(env(&[("PMI_RANK", "0"), ("PMI_SIZE", "2")])).unwrap();
    assert_eq!(
        (pmi.launcher, pmi.rank, pmi.world_size, pmi.local_size),
        ("PMI", 0, 2, 2)
    );
    assert_eq!(pmi.threads_per_rank(2), 1);
    assert_eq!(pmi.threads_per_rank(16), 8);
    assert_eq!(Launch::from_vars(env(&[])), None);
    assert_eq!(
        Launch::from_vars(env(&[("PMI_RANK", "2"), ("PMI_SIZE", "2")])),
        None
    );
}
