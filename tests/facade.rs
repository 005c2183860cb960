//! The facade: devices by name, and one error type for every crate's errors.

use amp::prelude::*;
use amp::DeviceKind;

#[test]
fn devices_by_name() {
    let cpu = Device::cpu();
    assert_eq!(cpu.kind(), DeviceKind::Cpu);
    assert_eq!(cpu.backend_name(), amp_cpu::device().backend_name());
    // Without a usable GPU (this machine, or a build without the `cuda`
    // feature) cuda(n) is an error that says why, and best() is the CPU.
    match Device::cuda(0) {
        Ok(d) => assert_eq!(d.kind(), DeviceKind::Cuda),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("cuda:0"), "{msg}");
            assert_eq!(Device::best().kind(), DeviceKind::Cpu);
        }
    }
}

/// `?` on tensor, autocast, scaler and training calls in one function.
fn mixed(device: &Device) -> amp::Result<()> {
    let x = Tensor::zeros(&[2, 3], DType::F32, device)?; // amp_tensor::Error
    let _region = autocast(device.kind(), DType::F64)?; // amp_autocast::Error: f64 is refused
    let _ = x;
    Ok(())
}

#[test]
fn every_crates_error_converts_into_amp_error() {
    let err = mixed(&Device::reference()).unwrap_err();
    assert!(matches!(err, amp::Error::Autocast(_)), "{err:?}");
    assert!(err.to_string().contains("f64"), "{err}");
    let scaler = GradScaler::builder().growth_factor(0.5).build();
    let err: amp::Error = scaler.unwrap_err().into();
    assert!(matches!(err, amp::Error::Scaler(_)), "{err:?}");
    let err: amp::Error = data::TensorDataset::new(vec![]).unwrap_err().into();
    assert!(matches!(err, amp::Error::Train(_)), "{err:?}");
}
