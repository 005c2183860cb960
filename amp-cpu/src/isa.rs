//! Run-time instruction-set detection, decided once per process.
//!
//! The levels are ordered: each one implies the ones below it. Detection runs
//! once (a [`OnceLock`]); the `AMP_CPU_ISA` environment variable
//! (`scalar`, `avx2`, `avx512`, `avx512bf16`, `amx`) may force a *lower*
//! level, never a higher one than the CPU has. Kernels receive an [`Isa`] and
//! call `#[target_feature]` functions only for levels at or below the one
//! detected, which is what makes those calls sound.

use std::fmt;
use std::sync::OnceLock;

/// An instruction-set level the kernels can run at, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable Rust, no explicit SIMD (runs on every target).
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// AVX-512 F/BW/VL/DQ (with AVX2, FMA, F16C).
    Avx512,
    /// AVX-512 plus AVX512-BF16 (`vdpbf16ps`, `vcvtne2ps2bf16`).
    Avx512Bf16,
    /// AVX512-BF16 plus AMX-TILE and AMX-BF16 with the Linux tile-data permission granted.
    Amx,
}

impl Isa {
    /// Every level, lowest first.
    pub const ALL: [Isa; 5] = [
        Isa::Scalar,
        Isa::Avx2,
        Isa::Avx512,
        Isa::Avx512Bf16,
        Isa::Amx,
    ];

    /// The name accepted by `AMP_CPU_ISA`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Bf16 => "avx512bf16",
            Isa::Amx => "amx",
        }
    }

    /// Parses a name accepted by `AMP_CPU_ISA`.
    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name() == name.trim().to_ascii_lowercase())
    }

    /// Every level this CPU supports (the detected one and all below it).
    pub fn available() -> Vec<Isa> {
        let best = detected();
        Isa::ALL.into_iter().filter(|&i| i <= best).collect()
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The best level this CPU (and OS) supports, ignoring `AMP_CPU_ISA`.
pub fn detected() -> Isa {
    static DETECTED: OnceLock<Isa> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

/// The level kernels use by default: [`detected`], lowered by `AMP_CPU_ISA` if set.
///
/// An unknown or too-high value is ignored with a message on stderr.
pub fn isa() -> Isa {
    static CHOSEN: OnceLock<Isa> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let best = detected();
        match std::env::var("AMP_CPU_ISA") {
            Ok(v) => match Isa::from_name(&v) {
                Some(forced) if forced <= best => forced,
                Some(forced) => {
                    eprintln!("amp-cpu: AMP_CPU_ISA={forced} is not supported by this CPU; using {best}");
                    best
                }
                None => {
                    eprintln!("amp-cpu: unknown AMP_CPU_ISA={v:?} (valid: scalar, avx2, avx512, avx512bf16, amx); using {best}");
                    best
                }
            },
            Err(_) => best,
        }
    })
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Isa {
    let avx2 = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c");
    if !avx2 {
        return Isa::Scalar;
    }
    let avx512 = is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512dq");
    if !avx512 {
        return Isa::Avx2;
    }
    if !is_x86_feature_detected!("avx512bf16") {
        return Isa::Avx512;
    }
    if amx_bf16_available() {
        Isa::Amx
    } else {
        Isa::Avx512Bf16
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Isa {
    Isa::Scalar
}

/// True if the CPU has AMX-TILE and AMX-BF16 (CPUID leaf 7, EDX bits 24 and 22)
/// and the kernel granted this process the tile-data state
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)` on Linux). Asked once.
pub fn amx_bf16_available() -> bool {
    static AMX: OnceLock<bool> = OnceLock::new();
    *AMX.get_or_init(|| amx_cpuid() && amx_request_permission())
}

#[cfg(target_arch = "x86_64")]
fn amx_cpuid() -> bool {
    // CPUID exists on every x86-64 CPU; leaf 7 is valid when the max leaf is >= 7.
    let max_leaf = std::arch::x86_64::__cpuid(0).eax;
    if max_leaf < 7 {
        return false;
    }
    let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
    let amx_bf16 = edx & (1 << 22) != 0;
    let amx_tile = edx & (1 << 24) != 0;
    amx_bf16 && amx_tile
}

#[cfg(not(target_arch = "x86_64"))]
fn amx_cpuid() -> bool {
    false
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn amx_request_permission() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with ARCH_REQ_XCOMP_PERM only reads its integer
    // argument; it returns 0 when the permission is granted, an error otherwise.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    rc == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn amx_request_permission() -> bool {
    false
}

/// Defines `fn $name(isa: Isa, args...)` from one portable body, compiled three
/// times: for AVX-512, for AVX2+FMA+F16C and plain, and dispatched on `isa`
/// (half-rs's `convert_fn!` shape). The body must be ordinary safe Rust; the
/// compiler vectorises it for each feature set.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($isa:ident: Isa $(, $arg:ident: $ty:ty)* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($isa: $crate::isa::Isa $(, $arg: $ty)*) $(-> $ret)? {
            #[inline(always)]
            #[allow(unused_variables)]
            fn body($isa: $crate::isa::Isa $(, $arg: $ty)*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
                unsafe fn avx512($isa: $crate::isa::Isa $(, $arg: $ty)*) $(-> $ret)? {
                    body($isa $(, $arg)*)
                }
                #[target_feature(enable = "avx2,fma,f16c")]
                unsafe fn avx2($isa: $crate::isa::Isa $(, $arg: $ty)*) $(-> $ret)? {
                    body($isa $(, $arg)*)
                }
                if $isa >= $crate::isa::Isa::Avx512 {
                    // SAFETY: an `Isa` at or above Avx512 is only used when detected.
                    return unsafe { avx512($isa $(, $arg)*) };
                }
                if $isa >= $crate::isa::Isa::Avx2 {
                    // SAFETY: an `Isa` at or above Avx2 is only used when detected.
                    return unsafe { avx2($isa $(, $arg)*) };
                }
            }
            body($isa $(, $arg)*)
        }
    };
}
pub(crate) use multiversion;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_levels_are_ordered() {
        for i in Isa::ALL {
            assert_eq!(Isa::from_name(i.name()), Some(i));
        }
        assert!(
            Isa::Scalar < Isa::Avx2 && Isa::Avx512 < Isa::Avx512Bf16 && Isa::Avx512Bf16 < Isa::Amx
        );
        assert_eq!(Isa::from_name("sse9"), None);
        assert!(isa() <= detected());
        assert!(Isa::available().contains(&Isa::Scalar));
    }
}
