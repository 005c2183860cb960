//! The cast cache: what is cached, when it is emptied, and that it frees memory.

mod common;

use amp_testkit::on_every_device;

use amp_autocast::{autocast, cache_len, reset_stats, stats, Autocast};
use amp_tensor::ops::{self, Reduction};
use amp_tensor::{no_grad, DType, Device, DeviceKind, Tensor};
use std::sync::atomic::Ordering;

fn param(shape: &[usize], device: &Device, seed: u64) -> Tensor {
    let t = Tensor::randn(shape, DType::F32, device, seed).unwrap();
    t.set_requires_grad(true).unwrap();
    t
}

on_every_device!(
    a_weight_used_three_times_is_cast_once,
    |device: &Device| -> amp_autocast::Result<()> {
        let w = param(&[4, 4], device, 0);
        let x = Tensor::randn(&[2, 4], DType::F32, device, 1).unwrap();
        reset_stats();
        {
            let _region = autocast(device.kind(), DType::BF16).unwrap();
            let h1 = ops::linear(&x, &w, None).unwrap();
            let h2 = ops::linear(&h1, &w, None).unwrap();
            let h3 = ops::linear(&h2, &w, None).unwrap();
            assert_eq!(h3.dtype(), DType::BF16);
            assert_eq!(cache_len(), 1);
            let s = stats();
            // x is cast once (not cached: it needs no grad), w once, then two hits.
            assert_eq!((s.casts, s.cache_inserts, s.cache_hits), (2, 1, 2));
        }
        assert_eq!(
            cache_len(),
            0,
            "the outermost region's close empties the cache"
        );
        Ok(())
    }
);

on_every_device!(
    the_cache_lives_until_the_outermost_region_closes,
    |device: &Device| -> amp_autocast::Result<()> {
        let w = param(&[3, 3], device, 0);
        let _outer = autocast(device.kind(), DType::BF16).unwrap();
        {
            let _inner = autocast(device.kind(), DType::BF16).unwrap();
            ops::matmul(&w, &w).unwrap();
            assert_eq!(cache_len(), 1);
        }
        assert_eq!(cache_len(), 1, "an inner region's close keeps the cache");
        // Another dtype gets its own entry (keyed by tensor and target dtype).
        {
            let _f16 = autocast(device.kind(), DType::F16).unwrap();
            assert_eq!(ops::matmul(&w, &w).unwrap().dtype(), DType::F16);
        }
        assert_eq!(cache_len(), 2);
        drop(_outer);
        assert_eq!(cache_len(), 0);
        Ok(())
    }
);

on_every_device!(
    only_f32_leaves_that_require_grad_are_cached,
    |device: &Device| -> amp_autocast::Result<()> {
        let x = Tensor::randn(&[3, 3], DType::F32, device, 0).unwrap();
        let w = param(&[3, 3], device, 1);
        let _region = autocast(device.kind(), DType::BF16).unwrap();
        // No grad needed: not cached.
        ops::matmul(&x, &x).unwrap();
        assert_eq!(cache_len(), 0);
        // A non-leaf (the result of an op on a parameter): not cached.
        let non_leaf = w.mul_scalar(2.0).unwrap();
        assert!(!non_leaf.is_leaf() && non_leaf.requires_grad());
        ops::matmul(&non_leaf, &non_leaf).unwrap();
        assert_eq!(cache_len(), 0);
        // An f16 leaf that requires grad: cast, not cached (only f32 sources are).
        let h = param(&[3, 3], device, 2);
        let h16 = h.to_dtype(DType::F16).unwrap().detach();
        h16.set_requires_grad(true).unwrap();
        ops::matmul(&h16, &h16).unwrap();
        assert_eq!(cache_len(), 0);
        // Casts to f32 (a Float32 op) are not cached either.
        let wb = param(&[3], device, 3);
        let wbf = wb.to_dtype(DType::BF16).unwrap().detach();
        wbf.set_requires_grad(true).unwrap();
        ops::mse_loss(&wbf, &wbf, Reduction::Mean).unwrap();
        assert_eq!(cache_len(), 0);
        // A disabled cache caches nothing.
        {
            let _nocache = Autocast::new(device.kind()).cache(false).enter().unwrap();
            ops::matmul(&w, &w).unwrap();
            assert_eq!(cache_len(), 0);
        }
        ops::matmul(&w, &w).unwrap();
        assert_eq!(cache_len(), 1);
        Ok(())
    }
);

// PyTorch #158232: a `no_grad` forward inside a region cached a cast without
// autograd history, and a later forward that needs gradients reused it, so
// the loss had no grad_fn and the weight got no gradient.
on_every_device!(
    no_grad_forward_does_not_poison_a_later_training_forward,
    |device: &Device| -> amp_autocast::Result<()> {
        let w = param(&[2, 4], device, 0);
        let x = Tensor::randn(&[3, 4], DType::F32, device, 1).unwrap();
        let target = Tensor::randn(&[3, 2], DType::F32, device, 2).unwrap();
        let loss = {
            let _region = autocast(device.kind(), DType::BF16).unwrap();
            {
                let _ng = no_grad();
                let y = ops::linear(&x, &w, None).unwrap();
                assert!(!y.requires_grad());
                assert_eq!(cache_len(), 0, "casts under no_grad are not cached");
            }
            let y = ops::linear(&x, &w, None).unwrap();
            assert!(y.requires_grad(), "the training forward records the cast");
            assert_eq!(cache_len(), 1);
            // A no_grad forward after it may use the cached cast (it has history; nothing is recorded).
            {
                let _ng = no_grad();
                assert!(!ops::linear(&x, &w, None).unwrap().requires_grad());
            }
            ops::mse_loss(&y, &target, Reduction::Mean).unwrap()
        };
        loss.backward().unwrap();
        let g = w.grad().expect("the weight receives a gradient");
        assert_eq!(g.dtype(), DType::F32);
        assert!(g.to_f64_vec().unwrap().iter().any(|v| *v != 0.0));
        Ok(())
    }
);

#[test]
fn the_cast_weight_is_freed_when_the_region_closes() {
    let (device, live) = common::fake_device("counting", DeviceKind::Cpu, true);
    let w = param(&[4, 4], &device, 0);
    let x = Tensor::randn(&[2, 4], DType::F32, &device, 1).unwrap();
    let before = live.load(Ordering::SeqCst);
    assert_eq!(before, 2);
    {
        let _region = autocast(DeviceKind::Cpu, DType::BF16).unwrap();
        let y = ops::linear(&x, &w, None).unwrap();
        drop(y);
        // The output is gone; the cache still holds the bf16 copy of w.
        assert_eq!(cache_len(), 1);
        assert_eq!(
            live.load(Ordering::SeqCst),
            before + 1,
            "only the cached cast is alive"
        );
    }
    assert_eq!(cache_len(), 0);
    assert_eq!(
        live.load(Ordering::SeqCst),
        before,
        "the cast weight was freed with the region"
    );
    // The cached cast never shared the weight's storage.
    let _region = autocast(DeviceKind::Cpu, DType::BF16).unwrap();
    let y = ops::linear(&x, &w, None).unwrap();
    assert!(!y.shares_storage_with(&w));
    drop(y);
    drop(_region);
    drop(w);
    drop(x);
    assert_eq!(
        live.load(Ordering::SeqCst),
        0,
        "nothing outlives the tensors"
    );
}
