//! Each SIMD path against the portable scalar path on this machine: casts,
//! elementwise ops, sums, softmax and layer norm give the same bits (the same
//! f32/f64 operations in the same order, only wider); GEMM (FMA and other
//! block orders) agrees within the f32 dot-product tolerance.

use amp_cpu::Isa;
use amp_tensor::ops::{self, GeluApprox};
use amp_tensor::{DType, Device, Result, Tensor};
use amp_testkit::{check, Tolerance, FLOATS};

fn scalar() -> Device {
    amp_cpu::device_with_isa(Isa::Scalar).unwrap()
}

/// Runs `f` on the scalar device and on `device` (inputs built from the same seed) and compares.
fn same(
    case: &str,
    device: &Device,
    tolerance: Tolerance,
    f: impl Fn(&Device) -> Result<Tensor>,
) -> Result<()> {
    check(case, &f(device)?, &f(&scalar())?, tolerance)
}

#[test]
fn every_level_agrees_with_the_scalar_path() -> Result<()> {
    for isa in Isa::available() {
        let device = amp_cpu::device_with_isa(isa)?;
        let d = &device;
        for dtype in FLOATS {
            let case = |op: &str| format!("{isa} {op} {dtype}");
            let x = |dev: &Device| {
                Tensor::randn(&[37, 129], dtype, dev, 1).and_then(|t| t.mul_scalar(3.0))
            };
            for other in [DType::F32, DType::BF16, DType::F16, DType::F8E4M3] {
                same(
                    &case(&format!("cast to {other}")),
                    d,
                    Tolerance::EXACT,
                    |dev| x(dev)?.to_dtype(other),
                )?;
            }
            same(&case("gelu"), d, Tolerance::EXACT, |dev| {
                x(dev)?.gelu(GeluApprox::None)
            })?;
            same(&case("gelu_tanh"), d, Tolerance::EXACT, |dev| {
                x(dev)?.gelu(GeluApprox::Tanh)
            })?;
            same(&case("exp"), d, Tolerance::EXACT, |dev| x(dev)?.exp())?;
            same(&case("tanh"), d, Tolerance::EXACT, |dev| x(dev)?.tanh())?;
            same(&case("silu"), d, Tolerance::EXACT, |dev| x(dev)?.silu())?;
            same(&case("add"), d, Tolerance::EXACT, |dev| {
                x(dev)?.add(&x(dev)?.t()?.contiguous()?.t()?.sqrt()?)
            })?;
            same(&case("sum"), d, Tolerance::EXACT, |dev| {
                x(dev)?.sum_dims(&[1], false)
            })?;
            same(&case("sum over rows"), d, Tolerance::EXACT, |dev| {
                x(dev)?.sum_dims(&[0], false)
            })?;
            same(&case("softmax"), d, Tolerance::EXACT, |dev| {
                ops::softmax(&x(dev)?, -1)
            })?;
            same(&case("log_softmax"), d, Tolerance::EXACT, |dev| {
                ops::log_softmax(&x(dev)?, -1)
            })?;
            same(&case("layer_norm"), d, Tolerance::EXACT, |dev| {
                ops::layer_norm(&x(dev)?, None, None, 1e-5)
            })?;
            // GEMM: FMA vs separate multiply-add, other tile orders: the dot-product tolerance.
            for (m, k, n) in [(37, 129, 41), (5, 1000, 3), (64, 64, 64)] {
                let a = |dev: &Device| Tensor::randn(&[m, k], dtype, dev, 2);
                let b = |dev: &Device| Tensor::randn(&[k, n], dtype, dev, 3);
                let t = Tolerance::for_dtype(dtype).scale_abs((k as f64).sqrt() * 4.0);
                same(&case(&format!("matmul {m}x{k}x{n}")), d, t, |dev| {
                    a(dev)?.matmul(&b(dev)?)
                })?;
            }
        }
    }
    Ok(())
}

#[test]
fn forcing_a_level_above_the_cpu_is_an_error() {
    let best = amp_cpu::detected_isa();
    assert!(amp_cpu::isa() <= best);
    for isa in Isa::ALL {
        assert_eq!(amp_cpu::device_with_isa(isa).is_ok(), isa <= best, "{isa}");
    }
    // bf16 is "supported" only with native bf16 arithmetic.
    assert_eq!(
        amp_cpu::device().is_bf16_supported(),
        amp_cpu::isa() >= Isa::Avx512Bf16
    );
    assert!(!amp_cpu::device_with_isa(Isa::Scalar)
        .unwrap()
        .is_bf16_supported());
    assert_eq!(amp_cpu::device().backend_name(), "cpu");
    assert_eq!(amp_cpu::device().kind(), amp_tensor::DeviceKind::Cpu);
}
