//! Regions: defaults, nesting, `enabled(false)`, threads, panics, ignored
//! types, unsupported dtypes, the f32-island helpers.

mod common;

use amp_autocast::{
    autocast, current_dtype, float32, is_cache_enabled, is_enabled, nesting_depth, run_in_f32,
    Autocast, CastRule, Error, Policy,
};
use amp_tensor::ops;
use amp_tensor::{DType, Device, DeviceKind, Tensor};

fn matrix(dtype: DType, seed: u64) -> Tensor {
    Tensor::randn(&[3, 3], dtype, &Device::reference(), seed).unwrap()
}

#[test]
fn defaults_follow_pytorch() {
    assert!(!is_enabled(DeviceKind::Cpu) && !is_enabled(DeviceKind::Cuda));
    assert_eq!(current_dtype(DeviceKind::Cpu), DType::BF16);
    assert_eq!(current_dtype(DeviceKind::Cuda), DType::F16);
    {
        let _cpu = Autocast::new(DeviceKind::Cpu).enter().unwrap();
        assert!(is_enabled(DeviceKind::Cpu));
        assert!(!is_enabled(DeviceKind::Cuda), "regions are per device kind");
        assert_eq!(current_dtype(DeviceKind::Cpu), DType::BF16);
        let y = ops::matmul(&matrix(DType::F32, 1), &matrix(DType::F32, 2)).unwrap();
        assert_eq!(y.dtype(), DType::BF16);
    }
    let _cuda = Autocast::new(DeviceKind::Cuda).enter().unwrap();
    assert_eq!(current_dtype(DeviceKind::Cuda), DType::F16);
    // A CUDA region leaves CPU tensors alone.
    let y = ops::matmul(&matrix(DType::F32, 1), &matrix(DType::F32, 2)).unwrap();
    assert_eq!(y.dtype(), DType::F32);
}

#[test]
fn nesting_and_disabled_regions_restore_state() {
    let (a, b) = (matrix(DType::F32, 1), matrix(DType::F32, 2));
    let kind = DeviceKind::Cpu;
    assert_eq!(nesting_depth(), 0);
    {
        let _outer = autocast(kind, DType::BF16).unwrap();
        assert_eq!(ops::matmul(&a, &b).unwrap().dtype(), DType::BF16);
        {
            let _inner = autocast(kind, DType::F16).unwrap();
            assert_eq!(current_dtype(kind), DType::F16);
            assert_eq!(ops::matmul(&a, &b).unwrap().dtype(), DType::F16);
            {
                let _off = Autocast::new(kind).enabled(false).enter().unwrap();
                assert!(!is_enabled(kind));
                assert_eq!(
                    current_dtype(kind),
                    DType::F16,
                    "a disabled region inherits the dtype"
                );
                assert_eq!(ops::matmul(&a, &b).unwrap().dtype(), DType::F32);
                // A region with no dtype inherits the enclosing one, as in PyTorch.
                let _on = Autocast::new(kind).enter().unwrap();
                assert_eq!(ops::matmul(&a, &b).unwrap().dtype(), DType::F16);
                assert_eq!(nesting_depth(), 4);
            }
            assert!(is_enabled(kind));
            assert_eq!(ops::matmul(&a, &b).unwrap().dtype(), DType::F16);
        }
        assert_eq!(current_dtype(kind), DType::BF16);
        assert_eq!(ops::matmul(&a, &b).unwrap().dtype(), DType::BF16);
        let _no_cache = Autocast::new(kind).cache(false).enter().unwrap();
        assert!(!is_cache_enabled(kind));
    }
    assert!(!is_enabled(kind));
    assert!(is_cache_enabled(kind));
    assert_eq!(nesting_depth(), 0);
    assert_eq!(ops::matmul(&a, &b).unwrap().dtype(), DType::F32);
}

#[test]
fn state_is_restored_on_panic_unwind() {
    let kind = DeviceKind::Cpu;
    let _outer = autocast(kind, DType::BF16).unwrap();
    let result = std::panic::catch_unwind(|| {
        let _inner = autocast(kind, DType::F16).unwrap();
        let _off = Autocast::new(kind).enabled(false).enter().unwrap();
        panic!("model code failed");
    });
    assert!(result.is_err());
    assert!(is_enabled(kind));
    assert_eq!(current_dtype(kind), DType::BF16);
    assert_eq!(nesting_depth(), 1);
    assert_eq!(
        ops::matmul(&matrix(DType::F32, 1), &matrix(DType::F32, 2))
            .unwrap()
            .dtype(),
        DType::BF16
    );
}

#[test]
fn two_threads_do_not_see_each_other() {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let spawn = |dtype: Option<DType>| {
        let barrier = barrier.clone();
        std::thread::spawn(move || {
            let _region = dtype.map(|d| autocast(DeviceKind::Cpu, d).unwrap());
            barrier.wait(); // both threads are inside their regions (or none) now
            let y = ops::matmul(&matrix(DType::F32, 1), &matrix(DType::F32, 2)).unwrap();
            let seen = (
                is_enabled(DeviceKind::Cpu),
                current_dtype(DeviceKind::Cpu),
                y.dtype(),
            );
            barrier.wait();
            seen
        })
    };
    let f16 = spawn(Some(DType::F16));
    let none = spawn(None);
    assert_eq!(f16.join().unwrap(), (true, DType::F16, DType::F16));
    assert_eq!(none.join().unwrap(), (false, DType::BF16, DType::F32));
}

#[test]
fn ignored_types_pass_untouched() {
    let device = Device::reference();
    let _region = autocast(DeviceKind::Cpu, DType::BF16).unwrap();
    // f64 stays f64 under a lower-precision op.
    let a64 = matrix(DType::F64, 1);
    let y = ops::matmul(&a64, &matrix(DType::F64, 2)).unwrap();
    assert_eq!(y.dtype(), DType::F64);
    // f64 under an f32 op stays f64; the f32 partner is not cast either.
    let l = ops::mse_loss(&a64, &matrix(DType::F32, 2), ops::Reduction::Mean).unwrap();
    assert_eq!(l.dtype(), DType::F64);
    // I64 indices pass through an f32 op; the logits are cast.
    let logits = Tensor::randn(&[2, 3], DType::BF16, &device, 3).unwrap();
    let targets = Tensor::from_vec(vec![0i64, 2], &[2], &device).unwrap();
    let ce = ops::cross_entropy(&logits, &targets).unwrap();
    assert_eq!(ce.dtype(), DType::F32);
    // I64 under a lower-precision op (an embedding table used via index_select is passthrough;
    // use a custom lower-precision op to see integers untouched).
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let s = seen.clone();
    let _r = Autocast::new(DeviceKind::Cpu)
        .rule("probe_ints", CastRule::LowerPrecision)
        .enter()
        .unwrap();
    let x = matrix(DType::F32, 4);
    amp_tensor::dispatch::dispatch("probe_ints", &[&targets, &x], |t| {
        s.borrow_mut().extend(t.iter().map(|t| t.dtype()));
        Ok(())
    })
    .unwrap();
    assert_eq!(*seen.borrow(), vec![DType::I64, DType::BF16]);
    // Tensors on another device kind are not cast by this region.
    let cuda_x = Tensor::randn(&[3, 3], DType::F32, &common::fake_cuda(), 1).unwrap();
    assert_eq!(ops::matmul(&cuda_x, &cuda_x).unwrap().dtype(), DType::F32);
}

#[test]
fn f64_mixed_into_a_lower_precision_op_is_an_error() {
    let _region = autocast(DeviceKind::Cpu, DType::BF16).unwrap();
    let err = ops::matmul(&matrix(DType::F32, 1), &matrix(DType::F64, 2))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("matmul:"), "{err}");
    assert!(
        err.contains("input 1 is f64") && err.contains("bf16") && err.contains("[f32, f64]"),
        "{err}"
    );
    let err = ops::linear(&matrix(DType::BF16, 1), &matrix(DType::F64, 2), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("linear:") && err.contains("[bf16, f64]"),
        "{err}"
    );
}

#[test]
fn unsupported_dtypes_are_errors_that_say_why() {
    for dtype in [DType::F32, DType::F64, DType::I64, DType::F8E4M3] {
        let e = autocast(DeviceKind::Cpu, dtype).unwrap_err();
        assert!(
            matches!(e, Error::NotLowPrecision { dtype: d, .. } if d == dtype),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains(&format!("dtype {dtype} is not supported")),
            "{e}"
        );
    }
    let (old_gpu, _) = common::fake_device("old-gpu", DeviceKind::Cuda, false);
    let e = Autocast::new(DeviceKind::Cuda)
        .dtype(DType::BF16)
        .device(&old_gpu)
        .enter()
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::UnsupportedDType { .. }), "{msg}");
    assert!(
        msg.contains("bf16") && msg.contains("is_bf16_supported() is false") && msg.contains("f16"),
        "{msg}"
    );
    assert!(!is_enabled(DeviceKind::Cuda), "no region was opened");
    // f16 is fine there, and bf16 on a device that has it.
    drop(
        Autocast::new(DeviceKind::Cuda)
            .dtype(DType::F16)
            .device(&old_gpu)
            .enter()
            .unwrap(),
    );
    drop(
        Autocast::new(DeviceKind::Cuda)
            .dtype(DType::BF16)
            .device(&common::fake_cuda())
            .enter()
            .unwrap(),
    );
    // A device of the wrong kind, a policy for the wrong kind.
    let e = Autocast::new(DeviceKind::Cuda)
        .device(&Device::reference())
        .enter()
        .unwrap_err();
    assert!(matches!(e, Error::DeviceKindMismatch { .. }), "{e}");
    let e = Autocast::new(DeviceKind::Cpu)
        .policy(Policy::pytorch(DeviceKind::Cuda))
        .enter()
        .unwrap_err();
    assert!(
        matches!(e, Error::PolicyKindMismatch { .. }) && e.to_string().contains("retarget"),
        "{e}"
    );
    // A disabled region needs no valid dtype.
    drop(
        Autocast::new(DeviceKind::Cpu)
            .dtype(DType::F32)
            .enabled(false)
            .enter()
            .unwrap(),
    );
    assert_eq!(amp_autocast::nesting_depth(), 0);
}

#[test]
fn float32_islands() {
    let kind = DeviceKind::Cpu;
    let (a, b) = (matrix(DType::F32, 1), matrix(DType::F32, 2));
    let _region = autocast(kind, DType::BF16).unwrap();
    let h = ops::matmul(&a, &b).unwrap();
    assert_eq!(h.dtype(), DType::BF16);
    // float32: autocast off inside the closure, on again after.
    let y = float32(kind, || {
        assert!(!is_enabled(kind));
        ops::matmul(&a, &b)
    })
    .unwrap();
    assert_eq!(y.dtype(), DType::F32);
    assert!(is_enabled(kind));
    // run_in_f32 casts bf16 inputs to f32; i64 and f64 inputs are left alone.
    let idx = Tensor::from_vec(vec![1i64], &[1], &Device::reference()).unwrap();
    let d = matrix(DType::F64, 3);
    let out = run_in_f32(kind, &[&h, &b, &idx, &d], |t| {
        assert_eq!(
            t.iter().map(|t| t.dtype()).collect::<Vec<_>>(),
            [DType::F32, DType::F32, DType::I64, DType::F64]
        );
        ops::matmul(&t[0], &t[1])
    })
    .unwrap();
    assert_eq!(out.dtype(), DType::F32);
    let expected = float32(kind, || ops::matmul(&h.to_dtype(DType::F32)?, &b)).unwrap();
    assert_eq!(out.to_f64_vec().unwrap(), expected.to_f64_vec().unwrap());
    // Outside a region, run_in_f32 passes the inputs as they are (PyTorch's custom_fwd).
    drop(_region);
    run_in_f32(kind, &[&h], |t| {
        assert_eq!(t[0].dtype(), DType::BF16);
        Ok::<_, amp_tensor::Error>(())
    })
    .unwrap();
}

#[test]
fn guards_dropped_out_of_order_leave_a_region_that_does_what_it_reports() {
    let (a, b) = (matrix(DType::F32, 1), matrix(DType::F32, 2));
    let kind = DeviceKind::Cpu;
    let outer = autocast(kind, DType::BF16).unwrap();
    let inner = autocast(kind, DType::F16).unwrap();
    drop(outer); // out of order: the f16 region is the only one left
    assert_eq!(nesting_depth(), 1);
    assert!(is_enabled(kind));
    assert_eq!(current_dtype(kind), DType::F16);
    // The op runs as reported: in f16 (it ran in f32 when the interceptor was lost).
    assert_eq!(ops::matmul(&a, &b).unwrap().dtype(), DType::F16);
    assert_eq!(ops::linear(&a, &b, None).unwrap().dtype(), DType::F16);
    drop(inner);
    assert!(!is_enabled(kind));
    assert_eq!(nesting_depth(), 0);
    assert_eq!(ops::matmul(&a, &b).unwrap().dtype(), DType::F32);

    // The other order, with an f32 island in between, dropped from the middle.
    let low = autocast(kind, DType::BF16).unwrap();
    let island = Autocast::new(kind).enabled(false).enter().unwrap();
    let top = autocast(kind, DType::F16).unwrap();
    drop(island);
    assert_eq!(current_dtype(kind), DType::F16);
    assert_eq!(ops::matmul(&a, &b).unwrap().dtype(), DType::F16);
    drop(top);
    assert_eq!(current_dtype(kind), DType::BF16);
    assert_eq!(ops::matmul(&a, &b).unwrap().dtype(), DType::BF16);
    drop(low);
    assert_eq!(ops::matmul(&a, &b).unwrap().dtype(), DType::F32);
}
