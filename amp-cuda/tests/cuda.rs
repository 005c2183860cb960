//! What only the CUDA backend has: opening a device (or saying why not) and
//! loading its libraries without panicking. Its kernels are tested with every
//! other device's, by the shared suite (`amp-testkit/tests/`), which runs on
//! CUDA when a GPU is present — and then, or with `AMP_REQUIRE_CUDA=1` (as
//! the GPU bundle sets), fails instead of skipping when it cannot be used.

use amp_cuda::CudaError;

#[test]
fn without_a_gpu_device_is_an_error_not_a_panic() {
    let count = amp_cuda::device_count();
    if count == 0 {
        assert!(!amp_cuda::is_available());
        match amp_cuda::device(0) {
            Err(CudaError::NoCudaDevice { reason }) => assert!(!reason.is_empty()),
            other => panic!("expected NoCudaDevice, got {other:?}"),
        }
        eprintln!("skipped: no CUDA device (checked that device(0) is NoCudaDevice)");
    } else {
        assert!(amp_cuda::is_available());
        let d = amp_cuda::device(0).expect("GPU 0 opens");
        assert_eq!(d.kind(), amp_tensor::DeviceKind::Cuda);
        assert!(matches!(
            amp_cuda::device(count),
            Err(CudaError::NoCudaDevice { .. })
        ));
        let b = amp_cuda::backend(0).expect("backend");
        assert_eq!(d.is_bf16_supported(), b.compute_capability().0 >= 8);
        eprintln!(
            "cuda:0 is {} (sm_{}{})",
            b.device_name(),
            b.compute_capability().0,
            b.compute_capability().1
        );
    }
}

#[test]
fn library_status_never_panics() {
    let s = amp_cuda::libs::library_status();
    if amp_cuda::device_count() > 0 {
        assert!(s.driver.is_ok());
    }
    // The error texts name what was tried.
    for e in [&s.driver, &s.nvrtc, &s.cublas]
        .into_iter()
        .filter_map(|r| r.as_ref().err())
    {
        assert!(e.contains(".so"), "{e}");
    }
}
