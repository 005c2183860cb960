//! The CPU's data caches, read from CPUID once per process, and the GEMM
//! blocking chosen from them ([`Blocking`]), so the packed panels fit the
//! caches of whichever CPU runs — not constants tuned on one box.
//!
//! Sizes come from CPUID's deterministic cache parameters (leaf 4 on Intel,
//! leaf `0x8000001D` on AMD; ways × partitions × line × sets per level),
//! else AMD's legacy leaves `0x80000005`/`0x80000006`, else [`Caches::FALLBACK`].
//! `AMP_CPU_CACHES=l1d,l2,l3` (sizes in bytes, or with a `K`/`M` suffix,
//! e.g. `48K,2M,105M`) replaces what CPUID says — to try another machine's
//! blocking, and how the tests run the GEMM with small, odd blocks.

use std::sync::OnceLock;

/// Per-core data cache sizes in bytes (L3: the whole shared cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caches {
    /// L1 data cache of one core.
    pub l1d: usize,
    /// L2 of one core.
    pub l2: usize,
    /// The last-level (L3) cache, 0 when there is none.
    pub l3: usize,
}

impl Caches {
    /// Used where CPUID says nothing: a common server core.
    pub const FALLBACK: Caches = Caches {
        l1d: 32 << 10,
        l2: 1 << 20,
        l3: 32 << 20,
    };

    /// Parses `AMP_CPU_CACHES`'s form: three sizes `l1d,l2,l3`, each bytes
    /// or a number with a `K` or `M` suffix.
    pub fn parse(text: &str) -> Option<Caches> {
        let sizes: Vec<usize> = text
            .split(',')
            .map(|s| {
                let s = s.trim().to_ascii_uppercase();
                let (digits, unit) = match s.strip_suffix('K') {
                    Some(d) => (d.to_string(), 1 << 10),
                    None => match s.strip_suffix('M') {
                        Some(d) => (d.to_string(), 1 << 20),
                        None => (s.clone(), 1),
                    },
                };
                digits.trim().parse::<usize>().ok().map(|v| v * unit)
            })
            .collect::<Option<_>>()?;
        match sizes[..] {
            [l1d, l2, l3] if l1d > 0 && l2 > 0 => Some(Caches { l1d, l2, l3 }),
            _ => None,
        }
    }
}

/// The caches of this CPU (or `AMP_CPU_CACHES`), read once.
pub fn caches() -> Caches {
    static CACHES: OnceLock<Caches> = OnceLock::new();
    *CACHES.get_or_init(|| {
        std::env::var("AMP_CPU_CACHES")
            .ok()
            .and_then(|v| Caches::parse(&v))
            .or_else(cpuid_caches)
            .unwrap_or(Caches::FALLBACK)
    })
}

/// The sizes CPUID reports, if it reports an L1 data cache and an L2.
#[cfg(target_arch = "x86_64")]
fn cpuid_caches() -> Option<Caches> {
    use std::arch::x86_64::{__cpuid_count, CpuidResult};
    // SAFETY: CPUID exists on every x86-64 CPU; leaves above the maximum
    // reported one are not queried.
    #[allow(unused_unsafe)]
    let cpuid = |leaf: u32, sub: u32| -> CpuidResult { unsafe { __cpuid_count(leaf, sub) } };
    let vendor = cpuid(0, 0);
    let max_basic = vendor.eax;
    let amd = vendor.ebx == u32::from_le_bytes(*b"Auth");
    let max_ext = cpuid(0x8000_0000, 0).eax;
    let deterministic = if amd {
        (max_ext >= 0x8000_001D).then_some(0x8000_001D)
    } else {
        (max_basic >= 4).then_some(4)
    };
    let mut found = Caches {
        l1d: 0,
        l2: 0,
        l3: 0,
    };
    if let Some(leaf) = deterministic {
        for sub in 0..16 {
            let r = cpuid(leaf, sub);
            let kind = r.eax & 0x1F; // 0: no more caches, 1: data, 2: instruction, 3: unified
            if kind == 0 {
                break;
            }
            let level = (r.eax >> 5) & 0x7;
            let ways = ((r.ebx >> 22) & 0x3FF) as usize + 1;
            let partitions = ((r.ebx >> 12) & 0x3FF) as usize + 1;
            let line = (r.ebx & 0xFFF) as usize + 1;
            let sets = r.ecx as usize + 1;
            let size = ways * partitions * line * sets;
            match (level, kind) {
                (1, 1) | (1, 3) => found.l1d = size,
                (2, 1) | (2, 3) => found.l2 = size,
                (3, 1) | (3, 3) => found.l3 = size,
                _ => {}
            }
        }
    }
    if amd && (found.l1d == 0 || found.l2 == 0) && max_ext >= 0x8000_0006 {
        // The legacy leaves: L1d in KiB, L2 in KiB, L3 in 512 KiB units.
        found.l1d = ((cpuid(0x8000_0005, 0).ecx >> 24) as usize) << 10;
        let l = cpuid(0x8000_0006, 0);
        found.l2 = ((l.ecx >> 16) as usize) << 10;
        found.l3 = ((l.edx >> 18) as usize) << 19;
    }
    (found.l1d > 0 && found.l2 > 0).then_some(found)
}

#[cfg(not(target_arch = "x86_64"))]
fn cpuid_caches() -> Option<Caches> {
    None
}

/// The block sizes of the packed GEMM for one micro-kernel (its `NR`
/// columns of f32-wide packed values) on a CPU with `caches`:
///
/// - `kc`, the depth block of the column-parallel and direct schedules: one
///   `NR × kc` B panel in two thirds of L1, the rest for the A panel and C;
/// - `kc_rows`, the depth block of the row-block schedule, where one B panel
///   serves every A panel streaming past it: a third of L1 (in bytes: twice
///   the depth for bf16 pair panels, [`Blocking::for_bf16_pairs`]);
/// - `nc`, the column block: the `kc × nc` packed B block, shared by every
///   thread, in a quarter of L3 (or in L2 without an L3), at most 2048
///   columns (the tuned value; an L2-sized block measured slower on an
///   AVX2 EPYC with a 512 KiB L2: 1024³ f32 even to −20%, 2048³ −7%).
///
/// Depth blocks are multiples of 32 (the AMX and pair packers' steps), column
/// blocks multiples of 32 (every `NR`). On the Xeon the constants were tuned
/// on (48 KiB L1d, 2 MiB L2, NR 32) this gives the tuned 256, 128 and 2048;
/// on an AVX2 EPYC (32 KiB L1d, NR 16) 320, 160 and 2048 (measured against
/// 256 and 128 there, alternating: f32 1024³ +7%, other shapes even).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Blocking {
    /// Depth block of the column and direct schedules.
    pub kc: usize,
    /// Depth block of the row-block schedule.
    pub kc_rows: usize,
    /// Column block.
    pub nc: usize,
}

impl Blocking {
    /// The blocking for a kernel `nr` columns wide on `caches`.
    pub(crate) fn for_caches(caches: Caches, nr: usize) -> Blocking {
        let panel_bytes = nr.max(1) * 4;
        let kc = round_down(2 * caches.l1d / 3 / panel_bytes, 32).clamp(64, 512);
        let kc_rows = round_down(caches.l1d / 3 / panel_bytes, 32).clamp(32, 512);
        let shared = caches.l2.max(caches.l3 / 4);
        let nc = round_down(shared / (kc * 4), 32).clamp(256, 2048);
        Blocking { kc, kc_rows, nc }
    }

    /// The blocking for the `vdpbf16ps` kernel, `nr` columns wide, whose
    /// panels hold bf16 pairs: half the bytes per depth step, so the
    /// row-block schedule's B panel holds twice the depth in the same third
    /// of L1 (measured on a Zen 4 EPYC, one process alternating: 2048³ +7%,
    /// with B transposed +12%; `kc` doubled as well measured even, so the
    /// column and direct schedules keep the f32 depth).
    pub(crate) fn for_bf16_pairs(caches: Caches, nr: usize) -> Blocking {
        let pairs = Blocking::for_caches(caches, nr.div_ceil(2));
        Blocking {
            kc_rows: pairs.kc_rows,
            ..Blocking::for_caches(caches, nr)
        }
    }

    /// The blocking for a kernel `nr` columns wide on this CPU.
    pub(crate) fn detected(nr: usize) -> Blocking {
        Blocking::for_caches(caches(), nr)
    }
}

fn round_down(v: usize, unit: usize) -> usize {
    v / unit * unit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_fits_the_caches_it_is_chosen_for() {
        let xeon = Caches {
            l1d: 48 << 10,
            l2: 2 << 20,
            l3: 105 << 20,
        };
        // The Xeon's tuned constants, for its 32-wide AVX-512 kernels.
        assert_eq!(
            Blocking::for_caches(xeon, 32),
            Blocking {
                kc: 256,
                kc_rows: 128,
                nc: 2048
            }
        );
        let zen4 = Caches {
            l1d: 32 << 10,
            l2: 1 << 20,
            l3: 32 << 20,
        };
        let zen3 = Caches {
            l1d: 32 << 10,
            l2: 512 << 10,
            l3: 32 << 20,
        };
        let tiny = Caches {
            l1d: 4 << 10,
            l2: 16 << 10,
            l3: 0,
        };
        let huge = Caches {
            l1d: 1 << 20,
            l2: 64 << 20,
            l3: 1 << 30,
        };
        for caches in [xeon, zen4, zen3, tiny, huge] {
            for nr in [16, 32] {
                let b = Blocking::for_caches(caches, nr);
                for (what, v, unit) in [
                    ("kc", b.kc, 32),
                    ("kc_rows", b.kc_rows, 32),
                    ("nc", b.nc, 32),
                ] {
                    assert_eq!(v % unit, 0, "{what} {caches:?} nr {nr}");
                }
                assert!((64..=512).contains(&b.kc) && (32..=512).contains(&b.kc_rows));
                assert!(b.kc_rows <= b.kc && (256..=2048).contains(&b.nc));
                // Unless clamped, the panels fit the fractions of L1 and L2 they are sized for.
                if caches != tiny {
                    assert!(nr * b.kc * 4 <= 2 * caches.l1d / 3, "{caches:?} nr {nr}");
                    assert!(nr * b.kc_rows * 4 <= caches.l1d / 3, "{caches:?} nr {nr}");
                }
                if caches != tiny {
                    assert!(
                        b.kc * b.nc * 4 <= caches.l2.max(caches.l3 / 4),
                        "{caches:?} nr {nr}"
                    );
                }
                // bf16 pair panels: the row-block depth doubles (2-byte values in the
                // same third of L1) until clamped; the other blocks stay.
                let p = Blocking::for_bf16_pairs(caches, nr);
                assert_eq!((p.kc, p.nc), (b.kc, b.nc), "{caches:?} nr {nr}");
                assert!(
                    p.kc_rows.is_multiple_of(32) && p.kc_rows <= p.kc,
                    "{caches:?} nr {nr}"
                );
                if caches != tiny {
                    assert!(nr * p.kc_rows * 2 <= caches.l1d / 3, "{caches:?} nr {nr}");
                }
            }
        }
        // Zen 4's 32 KiB L1d and 32-wide panels: 64 steps of f32, 160 of bf16 pairs.
        assert_eq!(Blocking::for_caches(zen4, 32).kc_rows, 64);
        assert_eq!(Blocking::for_bf16_pairs(zen4, 32).kc_rows, 160);
    }

    #[test]
    fn cache_sizes_parse_and_bad_ones_are_refused() {
        assert_eq!(
            Caches::parse("48K, 2M ,105m"),
            Some(Caches {
                l1d: 48 << 10,
                l2: 2 << 20,
                l3: 105 << 20
            })
        );
        assert_eq!(
            Caches::parse("32768,524288,0"),
            Some(Caches {
                l1d: 32768,
                l2: 524288,
                l3: 0
            })
        );
        for bad in ["", "32K", "32K,1M", "0,1M,2M", "x,1M,2M", "32K,1M,2M,4M"] {
            assert_eq!(Caches::parse(bad), None, "{bad:?}");
        }
        // What this CPU reports is a plausible cache hierarchy.
        let c = caches();
        assert!(c.l1d >= 4 << 10 && c.l2 >= c.l1d, "{c:?}");
    }
}
