//! Backward through autocast: f32 parameters used in low-precision ops get
//! f32 gradients close to the pure-f32 ones.

use amp_autocast::autocast;
use amp_tensor::ops::{self, Reduction};
use amp_tensor::{DType, Device, DeviceKind, Tensor};
use amp_testkit::on_every_device;

fn grads(device: &Device, region: Option<DType>) -> (Vec<f64>, Vec<f64>, DType) {
    let w = Tensor::randn(&[8, 16], DType::F32, device, 0)
        .unwrap()
        .mul_scalar(0.25)
        .unwrap()
        .detach();
    let b = Tensor::randn(&[8], DType::F32, device, 1)
        .unwrap()
        .mul_scalar(0.1)
        .unwrap()
        .detach();
    w.set_requires_grad(true).unwrap();
    b.set_requires_grad(true).unwrap();
    let x = Tensor::randn(&[32, 16], DType::F32, device, 2).unwrap();
    let target = Tensor::randn(&[32, 8], DType::F32, device, 3).unwrap();
    let loss = {
        let _region = region.map(|d| autocast(DeviceKind::Cpu, d).unwrap());
        let y = ops::linear(&x, &w, Some(&b)).unwrap();
        assert_eq!(y.dtype(), region.unwrap_or(DType::F32));
        ops::mse_loss(&y, &target, Reduction::Mean).unwrap()
    };
    assert_eq!(loss.dtype(), DType::F32);
    loss.backward().unwrap();
    let gw = w.grad().unwrap();
    assert_eq!(b.grad().unwrap().dtype(), DType::F32);
    (
        gw.to_f64_vec().unwrap(),
        b.grad().unwrap().to_f64_vec().unwrap(),
        gw.dtype(),
    )
}

fn check(device: &Device) {
    let (gw32, gb32, _) = grads(device, None);
    for (dtype, eps) in [(DType::BF16, 2f64.powi(-8)), (DType::F16, 2f64.powi(-11))] {
        let (gw, gb, gdtype) = grads(device, Some(dtype));
        assert_eq!(gdtype, DType::F32);
        let scale = gw32.iter().fold(0f64, |m, v| m.max(v.abs()));
        // Inputs, weights, activations and the output gradient are each rounded
        // to the low dtype once or twice: allow a few ulps of it relative to the scale.
        let tol = 8.0 * eps * scale;
        for (i, (a, e)) in gw.iter().zip(&gw32).enumerate() {
            assert!(
                (a - e).abs() <= tol,
                "{dtype} weight grad {i}: {a} vs f32 {e} (tol {tol})"
            );
        }
        let scale_b = gb32.iter().fold(0f64, |m, v| m.max(v.abs()));
        for (i, (a, e)) in gb.iter().zip(&gb32).enumerate() {
            assert!(
                (a - e).abs() <= 8.0 * eps * scale_b,
                "{dtype} bias grad {i}: {a} vs f32 {e}"
            );
        }
        assert!(
            gw.iter().zip(&gw32).any(|(a, e)| a != e),
            "{dtype}: the low-precision path really ran"
        );
    }
}

on_every_device!(
    f32_weights_get_f32_gradients_close_to_pure_f32,
    |device: &Device| -> amp_tensor::Result<()> {
        check(device);
        Ok(())
    }
);
