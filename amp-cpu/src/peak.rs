//! The machine's peak rate for the instruction each GEMM kernel is built on,
//! measured: `cargo xtask bench` reports every GEMM row as a fraction of it,
//! so that figures from different CPUs (an AMX Xeon, a Zen 4 EPYC) compare,
//! and a kernel that loses ground shows.
//!
//! Each peak loop keeps enough independent accumulators in registers to hide
//! the instruction's latency on both FMA ports and runs on every thread of
//! the pool at once: f32 `vfmadd` (16 zmm or 12 ymm chains), `vdpbf16ps`
//! (16 zmm chains) and AMX `tdpbf16ps` (four accumulator tiles). Their
//! operands are ones, so a loop's result is its own count of instructions —
//! what the tests check — and its value is returned so the loop is not
//! optimised away.

use crate::isa::Isa;
use amp_dtype::DType;
use std::time::Instant;

/// The instruction a GEMM kernel is built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instruction {
    /// Portable Rust (no peak is measured).
    Portable,
    /// 256-bit `vfmadd` (AVX2 + FMA): 16 flops each.
    Fma256,
    /// 512-bit `vfmadd` (AVX-512F): 32 flops each.
    Fma512,
    /// `vdpbf16ps` (AVX512-BF16): 64 flops each.
    Dpbf16,
    /// AMX `tdpbf16ps` on 16 × 16 f32 tiles: 16,384 flops each.
    Tdpbf16,
}

impl Instruction {
    /// The instruction of the kernel the GEMM chooses for `dtype` at `isa`
    /// (bf16 and f16 products widen to f32 panels below AVX512-BF16; f16 always does).
    pub fn of_gemm(isa: Isa, dtype: DType) -> Instruction {
        match (isa, dtype) {
            (Isa::Amx, DType::BF16) => Instruction::Tdpbf16,
            (Isa::Avx512Bf16, DType::BF16) => Instruction::Dpbf16,
            (Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx, _) => Instruction::Fma512,
            (Isa::Avx2, _) => Instruction::Fma256,
            (Isa::Scalar, _) => Instruction::Portable,
        }
    }

    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Instruction::Portable => "portable",
            Instruction::Fma256 => "fma256",
            Instruction::Fma512 => "fma512",
            Instruction::Dpbf16 => "vdpbf16ps",
            Instruction::Tdpbf16 => "tdpbf16ps",
        }
    }

    /// Floating-point operations of one loop iteration ([`run`]).
    fn flops_per_iteration(self) -> f64 {
        match self {
            Instruction::Portable => 0.0,
            Instruction::Fma256 => 12.0 * 16.0,
            Instruction::Fma512 => 16.0 * 32.0,
            Instruction::Dpbf16 => 16.0 * 64.0,
            Instruction::Tdpbf16 => 4.0 * 16384.0,
        }
    }

    /// The ISA level the loop needs.
    fn needs(self) -> Isa {
        match self {
            Instruction::Portable => Isa::Scalar,
            Instruction::Fma256 => Isa::Avx2,
            Instruction::Fma512 => Isa::Avx512,
            Instruction::Dpbf16 => Isa::Avx512Bf16,
            Instruction::Tdpbf16 => Isa::Amx,
        }
    }
}

/// Runs `iters` iterations of `ins`'s peak loop on this thread; returns the
/// loop's result (its instruction count per accumulator lane, times the
/// lane's increment: 2 for `vdpbf16ps`, 32 for `tdpbf16ps`), or `None` when
/// this machine lacks the instruction.
pub fn run(ins: Instruction, iters: usize) -> Option<f32> {
    if ins == Instruction::Portable || crate::isa::detected() < ins.needs() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let one = std::hint::black_box(1.0f32);
        // SAFETY: the feature each loop needs was checked above.
        unsafe {
            match ins {
                Instruction::Portable => None,
                Instruction::Fma256 => Some(x86::fma256(iters, one)),
                Instruction::Fma512 => Some(x86::fma512(iters, one)),
                Instruction::Dpbf16 => Some(x86::dpbf16(iters, one)),
                Instruction::Tdpbf16 => Some(crate::gemm::amx_peak_loop(iters)),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = iters;
        None
    }
}

/// The measured peak of `ins` in GFLOP/s on `threads` threads running the
/// loop at once (each for about 50 ms), or `None` when this machine lacks it.
pub fn peak_gflops(ins: Instruction, threads: usize) -> Option<f64> {
    run(ins, 1)?;
    // Calibrate on one thread: iterations for about 50 ms.
    let mut iters = 1usize << 12;
    loop {
        let t = Instant::now();
        run(ins, iters)?;
        let dt = t.elapsed().as_secs_f64();
        if dt > 0.005 || iters > 1 << 34 {
            iters = ((iters as f64) * 0.05 / dt.max(1e-9)) as usize;
            break;
        }
        iters *= 4;
    }
    let threads = threads.max(1);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| run(ins, iters));
        }
    });
    let secs = start.elapsed().as_secs_f64();
    Some(ins.flops_per_iteration() * iters as f64 * threads as f64 / secs / 1e9)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `iters` rounds of `$step` on each of `$chains` independent accumulators
    /// (started at `$zero`), then the minimum over the chains (each equals the
    /// first; the minimum keeps every chain live) read out by `$lane0`.
    macro_rules! chains {
        ($iters:expr, $chains:expr, $zero:expr, $min:ident, $lane0:expr, |$a:ident| $step:expr) => {{
            let mut acc = [$zero; $chains];
            for _ in 0..$iters {
                for $a in acc.iter_mut() {
                    *$a = $step;
                }
            }
            let mut m = acc[0];
            for a in &acc[1..] {
                m = $min(m, *a);
            }
            $lane0(m)
        }};
    }

    /// Lane 0 of a 512-bit vector.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn lane0_512(v: __m512) -> f32 {
        _mm_cvtss_f32(_mm512_castps512_ps128(v))
    }

    /// `iters` rounds of 16 chains `a = a·one + one`: lane 0 ends at `iters`.
    ///
    /// # Safety
    /// AVX-512F available.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma512(iters: usize, one: f32) -> f32 {
        let x = _mm512_set1_ps(one);
        chains!(
            iters,
            16,
            _mm512_setzero_ps(),
            _mm512_min_ps,
            lane0_512,
            |a| _mm512_fmadd_ps(*a, x, x)
        )
    }

    /// `iters` rounds of 12 chains `a = a·one + one` on 256-bit vectors.
    ///
    /// # Safety
    /// AVX2 and FMA available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma256(iters: usize, one: f32) -> f32 {
        let x = _mm256_set1_ps(one);
        chains!(
            iters,
            12,
            _mm256_setzero_ps(),
            _mm256_min_ps,
            _mm256_cvtss_f32,
            |a| _mm256_fmadd_ps(*a, x, x)
        )
    }

    /// `iters` rounds of 16 chains `a += one·one + one·one` (bf16 pairs of
    /// ones): lane 0 ends at `2·iters`.
    ///
    /// # Safety
    /// AVX-512F and AVX512-BF16 available.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn dpbf16(iters: usize, one: f32) -> f32 {
        let pair = _mm512_cvtne2ps_pbh(_mm512_set1_ps(one), _mm512_set1_ps(one));
        chains!(
            iters,
            16,
            _mm512_setzero_ps(),
            _mm512_min_ps,
            lane0_512,
            |a| _mm512_dpbf16_ps(*a, pair, pair)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_peak_loop_runs_the_instructions_it_counts() {
        // With operands of one, a loop's result is exact: its iteration count
        // times what one instruction adds to a lane.
        for (ins, per) in [
            (Instruction::Fma256, 1.0),
            (Instruction::Fma512, 1.0),
            (Instruction::Dpbf16, 2.0),
            (Instruction::Tdpbf16, 32.0),
        ] {
            match run(ins, 1000) {
                Some(v) => assert_eq!(v, 1000.0 * per, "{ins:?}"),
                None => {
                    assert!(crate::isa::detected() < ins.needs(), "{ins:?} missing");
                    println!("skipped: {} not on this CPU", ins.name());
                }
            }
            if let Some(v) = run(ins, 0) {
                assert_eq!(v, 0.0, "{ins:?} with no iterations");
            }
        }
        assert_eq!(run(Instruction::Portable, 10), None);
    }

    #[test]
    fn the_instruction_follows_the_gemm_kernel_choice() {
        use crate::gemm::Kernel;
        for isa in Isa::ALL {
            for dtype in [DType::F32, DType::BF16, DType::F16] {
                let kernel = Kernel::select(isa, dtype);
                let want = match kernel {
                    Kernel::Portable => Instruction::Portable,
                    #[cfg(target_arch = "x86_64")]
                    Kernel::Avx2 => Instruction::Fma256,
                    #[cfg(target_arch = "x86_64")]
                    Kernel::Avx512 => Instruction::Fma512,
                    #[cfg(target_arch = "x86_64")]
                    Kernel::Avx512Bf16 => Instruction::Dpbf16,
                    #[cfg(target_arch = "x86_64")]
                    Kernel::Amx => Instruction::Tdpbf16,
                };
                assert_eq!(Instruction::of_gemm(isa, dtype), want, "{isa:?} {dtype}");
            }
        }
    }
}
