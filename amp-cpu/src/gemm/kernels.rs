//! GEMM micro-kernels: `C[MR×NR] += A_panel · B_panel` over a packed depth.
//!
//! Packed layouts: A is `[p][MR]`, B is `[p][NR]`, both f32. Each kernel adds
//! its tile into `c` (row stride `ldc`).

use crate::isa::Isa;
use amp_dtype::DType;

/// Largest `NR` of any kernel.
pub(crate) const MAX_NR: usize = 32;

/// A micro-kernel, chosen once per product by [`Kernel::select`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// Portable Rust, 4 × 16.
    Portable,
    /// AVX2 + FMA, 6 × 16.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512F, 12 × 32.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// AVX512-BF16 `vdpbf16ps`, 12 × 32, on bf16 pair-interleaved panels (bf16 inputs only).
    #[cfg(target_arch = "x86_64")]
    Avx512Bf16,
    /// AMX-BF16 tiles, 32 × 32 (four 16 × 16 f32 accumulator tiles), on row-major
    /// bf16 A panels and pair-interleaved B panels, depth padded to 32 (bf16 inputs only).
    #[cfg(target_arch = "x86_64")]
    Amx,
}

impl Kernel {
    /// The kernel for `isa` and input dtype `dtype` (f32, bf16 or f16; all packed to f32).
    ///
    /// bf16 inputs take the AMX tile kernel at [`Isa::Amx`] and the `vdpbf16ps`
    /// kernel at [`Isa::Avx512Bf16`]; everything else runs on f32 panels.
    pub(crate) fn select(isa: Isa, dtype: DType) -> Kernel {
        let _ = dtype;
        #[cfg(target_arch = "x86_64")]
        {
            if isa >= Isa::Amx && dtype == DType::BF16 {
                return Kernel::Amx;
            }
            if isa >= Isa::Avx512Bf16 && dtype == DType::BF16 {
                return Kernel::Avx512Bf16;
            }
            if isa >= Isa::Avx512 {
                return Kernel::Avx512;
            }
            if isa >= Isa::Avx2 {
                return Kernel::Avx2;
            }
        }
        let _ = isa;
        Kernel::Portable
    }

    /// Tile height.
    pub(crate) fn mr(self) -> usize {
        match self {
            Kernel::Portable => 4,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => 6,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 | Kernel::Avx512Bf16 => 12,
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => 32,
        }
    }

    /// Tile width.
    pub(crate) fn nr(self) -> usize {
        match self {
            Kernel::Portable => 16,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => 16,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 | Kernel::Avx512Bf16 | Kernel::Amx => 32,
        }
    }

    /// `c[r·ldc + j] += Σ_p a[p·MR + r] · b[p·NR + j]` for the whole tile (`=`
    /// with `overwrite`: C's prior contents are not read).
    ///
    /// Panics if a slice is too short for `kc` steps of this kernel's tile
    /// (an internal invariant of the packing, not user input).
    ///
    /// The AVX-512 kernel computes and writes only the first `rows` rows
    /// (rounded up to a multiple of 4), as [`Kernel::run_bf16`]; the others
    /// compute all `MR`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run(
        self,
        kc: usize,
        rows: usize,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        ldc: usize,
        overwrite: bool,
    ) {
        let (mr, nr) = (self.mr(), self.nr());
        // Rows written: `rows` rounded up to 4 for the AVX-512 kernel, all others.
        let live = match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => rows.clamp(1, mr).div_ceil(4) * 4,
            _ => mr,
        };
        assert!(
            a.len() >= kc * mr
                && b.len() >= kc * nr
                && c.len() >= (live - 1) * ldc + nr
                && ldc >= nr
        );
        match self {
            Kernel::Portable => portable(kc, a, b, c, ldc, overwrite),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX2/FMA present (this kernel is only selected at Isa::Avx2 or above);
            // the slice lengths were checked above.
            Kernel::Avx2 => unsafe {
                x86::avx2_6x16(kc, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), ldc, overwrite)
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512F present (only selected at Isa::Avx512 or above); lengths checked.
            Kernel::Avx512 => unsafe {
                let (a, b, c) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
                match live {
                    4 => x86::avx512_rows_x32::<4>(kc, a, b, c, ldc, overwrite),
                    8 => x86::avx512_rows_x32::<8>(kc, a, b, c, ldc, overwrite),
                    _ => x86::avx512_rows_x32::<12>(kc, a, b, c, ldc, overwrite),
                }
            },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Bf16 | Kernel::Amx => {
                unreachable!("the bf16 kernels run on bf16 panels: run_bf16, run_amx_row")
            }
        }
    }

    /// True for the kernels on f32 panels ([`Kernel::run`]).
    pub(crate) fn is_f32(self) -> bool {
        !self.is_amx() && !self.packs_bf16_pairs()
    }

    /// True for the AMX tile kernel ([`Kernel::run_amx_row`]).
    pub(crate) fn is_amx(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            self == Kernel::Amx
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// True if this kernel takes bf16 pair-interleaved panels ([`Kernel::run_bf16`]).
    pub(crate) fn packs_bf16_pairs(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            self == Kernel::Avx512Bf16
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// `c[r·ldc + j] += Σ_p a[p][r] · b[p][j]` on bf16 pair-interleaved panels: A is
    /// `[kp][MR][2]`, B `[kp][NR][2]` (bf16 bits), `kp` pairs of depth. Products are
    /// exact in f32 and accumulate in f32 (`vdpbf16ps`: round to nearest even,
    /// subnormal inputs and outputs flushed to zero).
    ///
    /// Panics if this is not a bf16 kernel or a slice is too short (internal invariants).
    ///
    /// Only the first `rows` rows of the tile (at most `MR`) are computed and
    /// written, in steps of four: the rows of a product's last, partial A
    /// panel past its end are zero padding, and a 64-row product would spend
    /// a tenth of its time on them in whole 12-row tiles.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_bf16(
        self,
        kp: usize,
        rows: usize,
        a: &[u16],
        b: &[u16],
        c: &mut [f32],
        ldc: usize,
        overwrite: bool,
    ) {
        let (mr, nr) = (self.mr(), self.nr());
        assert!(self.packs_bf16_pairs());
        // Rows computed: `rows` rounded up to a multiple of 4.
        let live = rows.clamp(1, mr).div_ceil(4) * 4;
        assert!(
            a.len() >= kp * mr * 2
                && b.len() >= kp * nr * 2
                && c.len() >= (live - 1) * ldc + nr
                && ldc >= nr
        );
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX512-BF16 present (only selected at Isa::Avx512Bf16 or above); lengths
        // checked (A panels of 12 rows, `live` rows of C).
        unsafe {
            let (a, b, c) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
            match live {
                4 => x86::avx512bf16_rows_x32::<4>(kp, a, b, c, ldc, overwrite),
                8 => x86::avx512bf16_rows_x32::<8>(kp, a, b, c, ldc, overwrite),
                _ => x86::avx512bf16_rows_x32::<12>(kp, a, b, c, ldc, overwrite),
            }
        }
    }
}

impl Kernel {
    /// `c[r·ldc + j] += Σ_p A[r][p] · B[p][j]` (with `overwrite`, `=`) for 32
    /// rows and `panels·32` columns: one A panel (`[32][kd]`) against `panels`
    /// consecutive B panels (each `[kd/2][32][2]`), in one tile-configured
    /// block. C is read into the accumulator tiles (or, with `overwrite`, they
    /// start at zero and C is never read) and written back from them directly
    /// (no scratch tile); the tile configuration is loaded once for the row.
    ///
    /// Panics if this is not the AMX kernel or a slice is too short (internal invariants).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_amx_row(
        self,
        kd: usize,
        a: &[u16],
        b: &[u16],
        panels: usize,
        c: &mut [f32],
        ldc: usize,
        overwrite: bool,
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            assert!(self == Kernel::Amx && kd.is_multiple_of(32) && kd > 0 && panels > 0);
            assert!(
                a.len() >= 32 * kd
                    && b.len() >= panels * 32 * kd
                    && ldc >= panels * 32
                    && c.len() >= 31 * ldc + panels * 32
            );
            // SAFETY: this kernel is only selected at Isa::Amx, which is detected only
            // when CPUID reports AMX-TILE/AMX-BF16 and the OS granted the tile state;
            // the extents were checked above.
            unsafe {
                x86::amx_32xn(
                    kd,
                    a.as_ptr(),
                    b.as_ptr(),
                    panels,
                    c.as_mut_ptr(),
                    ldc,
                    overwrite,
                )
            };
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (kd, a, b, panels, c, ldc, overwrite);
            unreachable!("the AMX kernel exists on x86-64 only");
        }
    }
}

/// `c[r][j] = Σ_p A[r][p] · B[p][j]` for 16 rows of A and 16 columns, on AMX
/// tiles: A is read in place (`lda` elements between rows, `kd` a multiple of
/// 32 contiguous values per row), B is `[kd/32]` tiles of 16 pairs × 16
/// columns × 2 (1024 values each), `c` 16 rows × 16 floats. The narrow
/// products' path: A, read once, is the memory traffic, and one row tile at a
/// time keeps 16 rows streaming per core — few enough for the hardware
/// prefetchers (measured, one process alternating: `[256, 4096] · [4096, 10]`
/// +20% over four row tiles sharing each B tile, +9% over two).
///
/// Panics (internal invariants) if AMX is not the ISA in use or a slice is too short.
pub(crate) fn amx_rows_16(
    isa: crate::isa::Isa,
    kd: usize,
    a: &[u16],
    lda: usize,
    b: &[u16],
    c: &mut [f32; 16 * 16],
) {
    #[cfg(target_arch = "x86_64")]
    {
        assert!(isa >= crate::isa::Isa::Amx && kd.is_multiple_of(32) && kd > 0 && lda >= kd);
        assert!(a.len() >= 15 * lda + kd && b.len() >= 32 * kd);
        // Two accumulators (even and odd 32-steps), so that consecutive tile
        // products do not wait on each other; added at the end.
        let mut acc = [0f32; 2 * 16 * 16];
        // SAFETY: AMX was detected and permitted (the ISA in use is at least Amx,
        // which is only detected then); the extents were checked above.
        unsafe { x86::amx_16x16(kd, a.as_ptr(), lda * 2, b.as_ptr(), acc.as_mut_ptr()) }
        let (even, odd) = acc.split_at(256);
        for ((c, e), o) in c.iter_mut().zip(even).zip(odd) {
            *c = e + o;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, kd, a, lda, b, c);
        unreachable!("the AMX kernel exists on x86-64 only");
    }
}

fn portable(kc: usize, a: &[f32], b: &[f32], c: &mut [f32], ldc: usize, overwrite: bool) {
    const MR: usize = 4;
    const NR: usize = 16;
    let mut acc = [[0f32; NR]; MR];
    for p in 0..kc {
        let bp: &[f32; NR] = b[p * NR..p * NR + NR].try_into().expect("NR elements");
        for r in 0..MR {
            let av = a[p * MR + r];
            for j in 0..NR {
                acc[r][j] += av * bp[j];
            }
        }
    }
    for r in 0..MR {
        let row = &mut c[r * ldc..r * ldc + NR];
        if overwrite {
            row.copy_from_slice(&acc[r]);
        } else {
            for (c, acc) in row.iter_mut().zip(acc[r]) {
                *c += acc;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    /// Writes an accumulator tile `acc` of 32 columns to C (row stride `ldc`): added to
    /// C, or with `overwrite` stored over it unread. A macro, not a function:
    /// a call (it was not inlined) spilled the 24 accumulators to the stack.
    /// Used inside `unsafe` blocks whose contract covers `acc`'s rows of 32 floats at `c`.
    macro_rules! store_tile_rows_x32 {
        ($acc:expr, $c:expr, $ldc:expr, $overwrite:expr) => {
            for (r, row) in $acc.iter().enumerate() {
                for (h, &v) in row.iter().enumerate() {
                    let cp = $c.add(r * $ldc + 16 * h);
                    let v = if $overwrite {
                        v
                    } else {
                        _mm512_add_ps(_mm512_loadu_ps(cp), v)
                    };
                    _mm512_storeu_ps(cp, v);
                }
            }
        };
    }

    /// The first `R` rows (4, 8 or 12) of the 12 × 32 `vdpbf16ps` tile: A
    /// panels hold 12 rows whatever `R` is.
    ///
    /// # Safety
    /// AVX512-BF16 available; `a` holds `24·kp`, `b` `64·kp` bf16 values (pair-interleaved),
    /// `c` an `R` × 32 tile with row stride `ldc`; `R` ≤ 12.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn avx512bf16_rows_x32<const R: usize>(
        kp: usize,
        a: *const u16,
        b: *const u16,
        c: *mut f32,
        ldc: usize,
        overwrite: bool,
    ) {
        const MR: usize = 12;
        // SAFETY: every pointer offset stays inside the extents stated in the contract;
        // the transmutes reinterpret 512 bits of bf16 pairs as the `__m512bh` they are.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            let a = a as *const u32;
            for p in 0..kp {
                let b0: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(b.add(p * 64) as *const _));
                let b1: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(b.add(p * 64 + 32) as *const _));
                for (r, row) in acc.iter_mut().enumerate() {
                    let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(
                        a.add(p * MR + r).read_unaligned() as i32,
                    ));
                    row[0] = _mm512_dpbf16_ps(row[0], av, b0);
                    row[1] = _mm512_dpbf16_ps(row[1], av, b1);
                }
            }
            store_tile_rows_x32!(acc, c, ldc, overwrite);
        }
    }

    /// The 64-byte AMX tile configuration (palette 1): tiles 0–3 are the 16 × 16 f32
    /// accumulators, 4–5 the A tiles (16 rows × 32 bf16), 6–7 the B tiles (16 pairs × 16 columns).
    #[repr(C, align(64))]
    struct TileConfig {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        colsb: [u16; 16],
        rows: [u8; 16],
    }

    impl TileConfig {
        /// Tiles 0–7 as 16 rows × 64 bytes; the rest unused.
        fn eight_full_tiles() -> TileConfig {
            let mut cfg = TileConfig {
                palette: 1,
                start_row: 0,
                reserved: [0; 14],
                colsb: [0; 16],
                rows: [0; 16],
            };
            for t in 0..8 {
                cfg.colsb[t] = 64;
                cfg.rows[t] = 16;
            }
            cfg
        }
    }

    /// `iters` rounds of four independent `tdpbf16ps` (16 × 16 f32 tiles
    /// += 16 × 32 bf16 · 32 × 16 bf16) on tiles loaded once from bf16 ones:
    /// the AMX peak loop of [`crate::peak`]. Returns element (0, 0) of the
    /// first accumulator, `32·iters` (exact below 2²⁴).
    ///
    /// # Safety
    /// AMX-TILE and AMX-BF16 available with the tile state permitted.
    pub unsafe fn amx_peak_loop(iters: usize) -> f32 {
        let cfg = TileConfig::eight_full_tiles();
        let ones = [0x3F80u16; 16 * 32];
        let mut out = [0f32; 16 * 16];
        // SAFETY: the caller guarantees AMX; `ones` holds 16 rows of 64 bytes
        // (stride 64) for the source tiles, `out` 16 rows of 64 bytes for the
        // store. The tiles are configured and released inside the block.
        unsafe {
            std::arch::asm!(
                "ldtilecfg [{cfg}]",
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                "tileloadd tmm4, [{src} + {stride}*1]",
                "tileloadd tmm5, [{src} + {stride}*1]",
                "tileloadd tmm6, [{src} + {stride}*1]",
                "tileloadd tmm7, [{src} + {stride}*1]",
                "test {n}, {n}",
                "jz 3f",
                "2:",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "sub {n}, 1",
                "jnz 2b",
                "3:",
                "tilestored [{dst} + {stride}*1], tmm0",
                "tilerelease",
                cfg = in(reg) &cfg as *const TileConfig,
                src = in(reg) ones.as_ptr(),
                dst = in(reg) out.as_mut_ptr(),
                stride = in(reg) 64usize,
                n = inout(reg) iters => _,
                options(nostack),
            );
        }
        out[0]
    }

    /// Tile registers are not renamed: a `tileloadd` waits for every earlier
    /// `tdpbf16ps` that reads the tile it overwrites. Each load is therefore
    /// issued right before its first use, so that the next depth step's A and
    /// B loads overlap the last products of this one (measured on L1-resident
    /// panels: 2.3× the rate of loading all four tiles up front).
    ///
    /// # Safety
    /// AMX-TILE and AMX-BF16 available with the tile state permitted; `a` holds `32·kd`
    /// bf16 values as consecutive 16 × 32 tiles (`[kd/32][32 rows][32]`: rows 0–15,
    /// then rows 16–31 of each 32-deep step; one tile row is one cache line), `b` `panels·32·kd` (consecutive
    /// pair-interleaved panels), `kd` a positive multiple of 32, `panels ≥ 1`; `c`
    /// holds 32 rows of stride `ldc` floats with at least `panels·32` columns each.
    /// With `zero`, the accumulators start at zero and C is only written.
    pub unsafe fn amx_32xn(
        kd: usize,
        a: *const u16,
        b: *const u16,
        panels: usize,
        c: *mut f32,
        ldc: usize,
        zero: bool,
    ) {
        let cfg = TileConfig::eight_full_tiles();
        let stride_c = ldc * 4;
        // SAFETY: the caller guarantees the AMX features and the extents. Per panel,
        // A tiles are read at a + (k/32)·1024 (+512 for rows 16..31), 32 values per
        // row (the A pointer steps back to the panel's start after each B panel), B pair rows at b + (k/2)·64 (+32 for columns
        // 16..31; b runs on through the consecutive panels), and C rows r < 32 at
        // c + r·ldc, 32 floats per panel, read (unless `zero`) and written. The tiles are configured
        // at the start and released before the block ends, so no tile state outlives
        // this call on any path (the block cannot unwind).
        unsafe {
            std::arch::asm!(
                "ldtilecfg [{cfg}]",
                "3:",
                "test {zero}, {zero}",
                "jnz 4f",
                "tileloadd tmm0, [{c} + {sc}*1]",
                "tileloadd tmm1, [{c} + {sc}*1 + 64]",
                "tileloadd tmm2, [{c2} + {sc}*1]",
                "tileloadd tmm3, [{c2} + {sc}*1 + 64]",
                "jmp 5f",
                "4:",
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                "5:",
                "mov {n}, {kblocks}",
                "2:",
                "tileloadd tmm4, [{a} + {sa}*1]",
                "tileloadd tmm6, [{b} + {sb}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b} + {sb}*1 + 64]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a} + {sa}*1 + 1024]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "add {a}, 2048",
                "add {b}, 2048",
                "sub {n}, 1",
                "jnz 2b",
                "tilestored [{c} + {sc}*1], tmm0",
                "tilestored [{c} + {sc}*1 + 64], tmm1",
                "tilestored [{c2} + {sc}*1], tmm2",
                "tilestored [{c2} + {sc}*1 + 64], tmm3",
                "sub {a}, {rewind}",
                "add {c}, 128",
                "add {c2}, 128",
                "sub {panels}, 1",
                "jnz 3b",
                "tilerelease",
                cfg = in(reg) &cfg as *const TileConfig,
                a = inout(reg) a => _,
                b = inout(reg) b => _,
                n = out(reg) _,
                kblocks = in(reg) kd / 32,
                panels = inout(reg) panels => _,
                sa = in(reg) 64usize,
                rewind = in(reg) kd * 64,
                sb = in(reg) 128usize,
                c = inout(reg) c => _,
                c2 = inout(reg) c.add(16 * ldc) => _,
                sc = in(reg) stride_c,
                zero = in(reg) zero as usize,
                options(nostack),
            );
        }
    }

    /// 16 rows × 16 columns, the A tiles loaded straight from the rows of A;
    /// even 32-steps accumulate in tile 0, odd ones in tile 1 (written to
    /// `c[0..256]` and `c[256..512]`, rows of 16 floats).
    ///
    /// # Safety
    /// AMX-TILE and AMX-BF16 available with the tile state permitted; `a` holds 16
    /// rows `lda_bytes` apart of `kd` bf16 values (`kd` a positive multiple of 32),
    /// `b` `kd/32` consecutive 1 KiB tiles, `c` 512 floats.
    pub unsafe fn amx_16x16(
        kd: usize,
        a: *const u16,
        lda_bytes: usize,
        b: *const u16,
        c: *mut f32,
    ) {
        let cfg = TileConfig::eight_full_tiles();
        // SAFETY: the caller guarantees the AMX features and the extents: A tiles
        // read rows 0..15 at a + row·lda_bytes + 2·k (k < kd), B tiles
        // b + (k/32)·1024 bytes; C is written as two 16 × 16 tiles of 64-byte rows.
        // The tiles are configured at the start and released before the block ends.
        unsafe {
            std::arch::asm!(
                "ldtilecfg [{cfg}]",
                "tilezero tmm0",
                "tilezero tmm1",
                "test {pairs}, {pairs}",
                "jz 3f",
                "2:",
                "tileloadd tmm6, [{b} + {s64}*1]",
                "tileloadd tmm4, [{a} + {lda}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b} + {s64}*1 + 1024]",
                "tileloadd tmm5, [{a} + {lda}*1 + 64]",
                "tdpbf16ps tmm1, tmm5, tmm7",
                "add {a}, 128",
                "add {b}, 2048",
                "sub {pairs}, 1",
                "jnz 2b",
                "3:",
                "test {odd}, {odd}",
                "jz 4f",
                "tileloadd tmm6, [{b} + {s64}*1]",
                "tileloadd tmm4, [{a} + {lda}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "4:",
                "tilestored [{c} + {s64}*1], tmm0",
                "tilestored [{c} + {s64}*1 + 1024], tmm1",
                "tilerelease",
                cfg = in(reg) &cfg as *const TileConfig,
                a = inout(reg) a => _,
                b = inout(reg) b => _,
                pairs = inout(reg) kd / 64 => _,
                odd = in(reg) (kd / 32) % 2,
                lda = in(reg) lda_bytes,
                s64 = in(reg) 64usize,
                c = in(reg) c,
                options(nostack),
            );
        }
    }

    /// # Safety
    /// AVX2 and FMA available; `a` holds `6·kc`, `b` `16·kc` floats, `c` a 6 × 16 tile with row stride `ldc`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2_6x16(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        overwrite: bool,
    ) {
        const MR: usize = 6;
        // SAFETY: every pointer offset stays inside the extents stated in the contract.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; MR];
            for p in 0..kc {
                let b0 = _mm256_loadu_ps(b.add(p * 16));
                let b1 = _mm256_loadu_ps(b.add(p * 16 + 8));
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*a.add(p * MR + r));
                    row[0] = _mm256_fmadd_ps(av, b0, row[0]);
                    row[1] = _mm256_fmadd_ps(av, b1, row[1]);
                }
            }
            for (r, row) in acc.iter().enumerate() {
                let cp = c.add(r * ldc);
                if overwrite {
                    _mm256_storeu_ps(cp, row[0]);
                    _mm256_storeu_ps(cp.add(8), row[1]);
                } else {
                    _mm256_storeu_ps(cp, _mm256_add_ps(_mm256_loadu_ps(cp), row[0]));
                    _mm256_storeu_ps(cp.add(8), _mm256_add_ps(_mm256_loadu_ps(cp.add(8)), row[1]));
                }
            }
        }
    }

    /// The first `R` rows (4, 8 or 12) of the 12 × 32 f32 tile: A panels
    /// hold 12 rows whatever `R` is.
    ///
    /// # Safety
    /// AVX-512F available; `a` holds `12·kc`, `b` `32·kc` floats, `c` an `R` × 32 tile with
    /// row stride `ldc`; `R` ≤ 12.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512_rows_x32<const R: usize>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        overwrite: bool,
    ) {
        const MR: usize = 12;
        // SAFETY: every pointer offset stays inside the extents stated in the contract.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            // C's tile is read after the loop: its 24 lines are prefetched
            // meanwhile, one every four steps, so the loads at the end hit L1
            // without a burst of misses competing with the panels' loads
            // (measured, one process alternating: f32 2048³ and 256×4096×4096
            // +5–8%; all 24 at the start was slower).
            let mut lines = if overwrite { 2 * R } else { 0 };
            let mut p = 0;
            while p < kc {
                if lines < 2 * R {
                    let line = c.add((lines / 2) * ldc + (lines % 2) * 16);
                    _mm_prefetch::<_MM_HINT_T0>(line as *const i8);
                    lines += 1;
                }
                for p in p..(p + 4).min(kc) {
                    let b0 = _mm512_loadu_ps(b.add(p * 32));
                    let b1 = _mm512_loadu_ps(b.add(p * 32 + 16));
                    for (r, row) in acc.iter_mut().enumerate() {
                        let av = _mm512_set1_ps(*a.add(p * MR + r));
                        row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                        row[1] = _mm512_fmadd_ps(av, b1, row[1]);
                    }
                }
                p += 4;
            }
            store_tile_rows_x32!(acc, c, ldc, overwrite);
        }
    }
}
