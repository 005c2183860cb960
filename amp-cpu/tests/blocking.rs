//! The GEMM with blocks chosen for other caches than this CPU's: tiny caches
//! (`AMP_CPU_CACHES`, read once per process — this file is its own process)
//! give 64-deep blocks and 256-column blocks, so products of a few hundred
//! rows, columns and depth cross every block edge of every schedule. Each
//! product and convolution is checked against the reference backend's exact
//! f64 computation on every ISA level of this machine.

use amp_cpu::{Caches, Isa};
use amp_tensor::ops::{self, Conv2dOptions};
use amp_tensor::{DType, Device, Result, Tensor};
use amp_testkit::{assert_close, Tolerance};

#[test]
fn products_with_blocks_for_tiny_caches_match_the_reference() -> Result<()> {
    // Before anything reads the caches in this process.
    std::env::set_var("AMP_CPU_CACHES", "4K,16K,64K");
    let tiny = Caches {
        l1d: 4 << 10,
        l2: 16 << 10,
        l3: 64 << 10,
    };
    assert_eq!(amp_cpu::caches(), tiny);
    let reference = Device::reference();
    for isa in Isa::available() {
        let d = amp_cpu::device_with_isa(isa)?;
        for dtype in [DType::F32, DType::BF16] {
            // Edge tiles, several depth and column blocks, a short and wide product
            // (the column schedule), a batch, transposed operands, and deep
            // products with small outputs (the split-depth schedule: two and
            // three depth parts, one of odd depth).
            for (b, m, k, n, transposed) in [
                (1, 37, 300, 530, false),
                (1, 300, 129, 700, true),
                (3, 45, 200, 61, false),
                (1, 8, 1000, 600, true),
                (1, 30, 2049, 50, false),
                (1, 20, 3100, 40, true),
            ] {
                let a = Tensor::randn(&[b, m, k], DType::F32, &d, 1)?.to_dtype(dtype)?;
                let w = if transposed {
                    Tensor::randn(&[b, n, k], DType::F32, &d, 2)?
                        .to_dtype(dtype)?
                        .transpose(1, 2)?
                } else {
                    Tensor::randn(&[b, k, n], DType::F32, &d, 2)?.to_dtype(dtype)?
                };
                let got = ops::matmul(&a, &w)?;
                let want = ops::matmul(
                    &a.to_device(&reference)?.to_dtype(DType::F64)?,
                    &w.to_device(&reference)?.to_dtype(DType::F64)?,
                )?;
                let tol = Tolerance::for_dtype(dtype)
                    .scale(4.0)
                    .scale_abs(f64::sqrt(k as f64));
                assert_close(&got, &want, tol).map_err(|e| {
                    amp_tensor::Error::invalid(
                        "matmul",
                        format!("{isa} {dtype} {b}x{m}x{k}x{n}: {e}"),
                    )
                })?;
            }
            // A convolution (the implicit GEMM) whose depth, 20·9, spans three blocks.
            let x = Tensor::randn(&[2, 20, 9, 11], DType::F32, &d, 3)?.to_dtype(dtype)?;
            let w = Tensor::randn(&[33, 20, 3, 3], DType::F32, &d, 4)?.to_dtype(dtype)?;
            let options = Conv2dOptions::default().padding(1);
            let got = ops::conv2d(&x, &w, None, options)?;
            let want = ops::conv2d(
                &x.to_device(&reference)?.to_dtype(DType::F64)?,
                &w.to_device(&reference)?.to_dtype(DType::F64)?,
                None,
                options,
            )?;
            let tol = Tolerance::for_dtype(dtype).scale(4.0).scale_abs(15.0);
            assert_close(&got, &want, tol)
                .map_err(|e| amp_tensor::Error::invalid("conv2d", format!("{isa} {dtype}: {e}")))?;
        }
    }
    Ok(())
}
