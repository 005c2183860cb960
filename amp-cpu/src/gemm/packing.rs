//! The packers: how A and B are laid out in panels for each kernel ([`Packer`]):
//! f32 panels ([`F32Packer`], [`pack`]), bf16 pair-interleaved panels
//! ([`PairPacker`], [`pack_pairs`]), AMX tiles ([`AmxPacker`]), and an f32 B
//! rounded to A's dtype as it is packed ([`RoundB`]).

use super::panels::Scratch;
#[cfg(target_arch = "x86_64")]
use super::x86;
use super::{kernels, Kernel, Operand};
use crate::convert::F32Convert;
use crate::isa::Isa;
use amp_dtype::bf16;

/// `count` lines of `depth` elements to pack: element `p` of line `r` is
/// `data[base + r·x_stride + p·p_stride]` (the lines are rows of A, columns of B).
#[derive(Debug)]
pub(crate) struct Lines<'a, T> {
    /// The storage.
    pub data: &'a [T],
    /// Element 0 of line 0.
    pub base: usize,
    /// Stride between lines.
    pub x_stride: usize,
    /// Stride along a line (the depth).
    pub p_stride: usize,
    /// Number of lines.
    pub count: usize,
    /// Elements per line.
    pub depth: usize,
}

impl<T> Clone for Lines<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Lines<'_, T> {}

impl<'a, T> Operand<'a, T> {
    /// `count` rows of `depth` elements from element `base` (A's lines).
    #[inline]
    pub(super) fn rows(&self, base: usize, count: usize, depth: usize) -> Lines<'a, T> {
        Lines {
            data: self.data,
            base,
            x_stride: self.row_stride,
            p_stride: self.col_stride,
            count,
            depth,
        }
    }

    /// `count` columns of `depth` elements from element `base` (B's lines).
    #[inline]
    pub(super) fn columns(&self, base: usize, count: usize, depth: usize) -> Lines<'a, T> {
        Lines {
            data: self.data,
            base,
            x_stride: self.col_stride,
            p_stride: self.row_stride,
            count,
            depth,
        }
    }
}

/// Where a kernel call writes its `mr` rows of C: from `c[0]`, rows `ldc`
/// apart, added into — or, with `overwrite`, set without being read.
#[derive(Debug)]
pub(super) struct Accum<'c> {
    /// C from the call's first element.
    pub c: &'c mut [f32],
    /// Stride between rows of C.
    pub ldc: usize,
    /// Set C rather than add into it.
    pub overwrite: bool,
    /// The tile's rows that are the product's (the rest of its A panel is
    /// zero padding): the AVX-512 kernels (f32 and `vdpbf16ps`) compute only
    /// these, rounded up to a multiple of 4, and leave C's other rows as they
    /// were; the other kernels compute all `mr`.
    pub rows: usize,
}

/// How panels are packed and multiplied: f32 panels for the f32 kernels, bf16
/// pair-interleaved panels for `vdpbf16ps` and AMX. `TA` and `TB` are the
/// element types A and B are read from (the same but for [`RoundB`]).
pub(super) trait Packer<TA, TB = TA>: Sync {
    /// Element of the packed panels.
    type Elem: Scratch;
    /// Stored depth of one panel line for a depth block of `kc`.
    fn depth(&self, kc: usize) -> usize;
    /// Packs `src` (lines are columns of B) into panels of `width` lines
    /// (zero-padded).
    fn pack_b(&self, src: Lines<'_, TB>, width: usize, out: &mut [Self::Elem]);
    /// Packs B like [`Packer::pack_b`] from f32 values rounded to this
    /// packer's element type, when it has a fused path for that ([`RoundB`]);
    /// `false` (nothing written) otherwise.
    fn pack_b_rounding(
        &self,
        _src: Lines<'_, f32>,
        _width: usize,
        _out: &mut [Self::Elem],
    ) -> bool {
        false
    }
    /// Packs the A side (lines are rows of the product).
    fn pack_a(&self, src: Lines<'_, TA>, width: usize, out: &mut [Self::Elem]);
    /// Runs the kernel on one pair of panels of depth block `kc` into C's tile.
    fn run(&self, kernel: Kernel, kc: usize, a: &[Self::Elem], b: &[Self::Elem], acc: Accum<'_>);
    /// Runs the kernel on one A panel against `panels` consecutive full B
    /// panels, into `panels·nr` columns of `mr` rows of C (with `overwrite`,
    /// their prior contents need not be zero).
    #[inline]
    fn run_row(
        &self,
        kernel: Kernel,
        kc: usize,
        a: &[Self::Elem],
        b: &[Self::Elem],
        panels: usize,
        acc: Accum<'_>,
    ) {
        let (nr, kd) = (kernel.nr(), self.depth(kc));
        let Accum {
            c,
            ldc,
            overwrite,
            rows,
        } = acc;
        for jp in 0..panels {
            self.run(
                kernel,
                kc,
                a,
                &b[jp * nr * kd..(jp + 1) * nr * kd],
                Accum {
                    c: &mut c[jp * nr..],
                    ldc,
                    overwrite,
                    rows,
                },
            );
        }
    }
}

/// f32 panels, widened while packing.
pub(super) struct F32Packer {
    pub isa: Isa,
}

impl<T: F32Convert> Packer<T> for F32Packer {
    type Elem = f32;
    #[inline]
    fn depth(&self, kc: usize) -> usize {
        kc
    }
    #[inline]
    fn pack_b(&self, src: Lines<'_, T>, width: usize, out: &mut [f32]) {
        pack(self.isa, src, width, out)
    }
    #[inline]
    fn pack_a(&self, src: Lines<'_, T>, width: usize, out: &mut [f32]) {
        self.pack_b(src, width, out)
    }
    #[inline]
    fn run(&self, kernel: Kernel, kc: usize, a: &[f32], b: &[f32], acc: Accum<'_>) {
        kernel.run(kc, acc.rows, a, b, acc.c, acc.ldc, acc.overwrite)
    }
}

/// bf16 panels `[pair][line][2]`: two consecutive depth steps side by side.
pub(super) struct PairPacker;

impl Packer<bf16> for PairPacker {
    type Elem = u16;
    #[inline]
    fn depth(&self, kc: usize) -> usize {
        kc.div_ceil(2) * 2
    }
    #[inline]
    fn pack_b(&self, src: Lines<'_, bf16>, width: usize, out: &mut [u16]) {
        let stored = src.depth.div_ceil(2) * 2;
        pack_pairs(src, width, stored, out)
    }
    #[inline]
    fn pack_b_rounding(&self, src: Lines<'_, f32>, width: usize, out: &mut [u16]) -> bool {
        let stored = src.depth.div_ceil(2) * 2;
        pack_pairs(src, width, stored, out);
        true
    }
    #[inline]
    fn pack_a(&self, src: Lines<'_, bf16>, width: usize, out: &mut [u16]) {
        self.pack_b(src, width, out)
    }
    #[inline]
    fn run(&self, kernel: Kernel, kc: usize, a: &[u16], b: &[u16], acc: Accum<'_>) {
        kernel.run_bf16(
            kc.div_ceil(2),
            acc.rows,
            a,
            b,
            acc.c,
            acc.ldc,
            acc.overwrite,
        )
    }
}

/// B read from f32 and rounded to the A side's dtype `T` (nearest even) as it
/// is packed: the product equals the product with B cast to `T` first, without
/// the cast copy (an f32 weight used under autocast). Each packed group is
/// first converted into a small buffer that keeps the source's contiguous
/// direction (SIMD conversion), then packed by `inner`.
pub(super) struct RoundB<P> {
    pub isa: Isa,
    pub inner: P,
}

impl<T: F32Convert, P: Packer<T>> Packer<T, f32> for RoundB<P> {
    type Elem = P::Elem;
    #[inline]
    fn depth(&self, kc: usize) -> usize {
        self.inner.depth(kc)
    }
    fn pack_b(&self, src: Lines<'_, f32>, width: usize, out: &mut [Self::Elem]) {
        let inner = &self.inner;
        if inner.pack_b_rounding(src, width, out) {
            return;
        }
        let Lines {
            data,
            base,
            x_stride,
            p_stride,
            count,
            depth,
        } = src;
        let mut stage = vec![T::from_f32(0.0); count * depth];
        if x_stride == 1 && p_stride != 1 {
            // Lines side by side along x (a row-major B): stage [depth][count].
            for p in 0..depth {
                let s = base + p * p_stride;
                T::store(
                    self.isa,
                    &data[s..s + count],
                    &mut stage[p * count..(p + 1) * count],
                );
            }
            let staged = Lines {
                data: &stage[..],
                base: 0,
                x_stride: 1,
                p_stride: count,
                count,
                depth,
            };
            self.inner.pack_b(staged, width, out)
        } else {
            // Each line along the depth (a transposed B, a linear weight): stage [count][depth].
            for (r, line) in stage.chunks_mut(depth.max(1)).take(count).enumerate() {
                let s = base + r * x_stride;
                if p_stride == 1 {
                    T::store(self.isa, &data[s..s + depth], line);
                } else {
                    for (p, v) in line.iter_mut().enumerate() {
                        *v = T::from_f32(data[s + p * p_stride]);
                    }
                }
            }
            let staged = Lines {
                data: &stage[..],
                base: 0,
                x_stride: depth,
                p_stride: 1,
                count,
                depth,
            };
            self.inner.pack_b(staged, width, out)
        }
    }
    #[inline]
    fn pack_a(&self, src: Lines<'_, T>, width: usize, out: &mut [Self::Elem]) {
        self.inner.pack_a(src, width, out)
    }
    #[inline]
    fn run(&self, kernel: Kernel, kc: usize, a: &[Self::Elem], b: &[Self::Elem], acc: Accum<'_>) {
        self.inner.run(kernel, kc, a, b, acc)
    }
    #[inline]
    fn run_row(
        &self,
        kernel: Kernel,
        kc: usize,
        a: &[Self::Elem],
        b: &[Self::Elem],
        panels: usize,
        acc: Accum<'_>,
    ) {
        self.inner.run_row(kernel, kc, a, b, panels, acc)
    }
}

/// bf16 panels for the AMX kernel, depth padded to 32: A as the 16 × 32 bf16
/// tiles `tileloadd` reads, one after another (`[depth / 32][line][32]`, each
/// tile row one cache line), B pair-interleaved as for
/// `vdpbf16ps` (16 pairs × 16 columns per tile).
pub(super) struct AmxPacker;

impl Packer<bf16> for AmxPacker {
    type Elem = u16;
    #[inline]
    fn depth(&self, kc: usize) -> usize {
        kc.div_ceil(32) * 32
    }
    #[inline]
    fn pack_b(&self, src: Lines<'_, bf16>, width: usize, out: &mut [u16]) {
        let stored = <Self as Packer<bf16>>::depth(self, src.depth);
        pack_pairs(src, width, stored, out)
    }
    #[inline]
    fn pack_b_rounding(&self, src: Lines<'_, f32>, width: usize, out: &mut [u16]) -> bool {
        let stored = <Self as Packer<bf16>>::depth(self, src.depth);
        pack_pairs(src, width, stored, out);
        true
    }
    fn pack_a(&self, src: Lines<'_, bf16>, width: usize, out: &mut [u16]) {
        let Lines {
            data,
            base,
            x_stride,
            p_stride,
            count,
            depth,
        } = src;
        let stored = <Self as Packer<bf16>>::depth(self, depth);
        // Element (r, p) of a panel: step p / 32 holds its 32 rows of 32 values.
        let at = |r: usize, p: usize| ((p / 32) * width + r) * 32 + p % 32;
        for q in 0..count.div_ceil(width) {
            let panel = &mut out[q * width * stored..(q + 1) * width * stored];
            let lines = width.min(count - q * width);
            if lines < width || depth < stored {
                panel.fill(0);
            }
            if p_stride == 1 {
                for r in 0..lines {
                    let s = base + (q * width + r) * x_stride;
                    let runs = data[s..s + depth].chunks_exact(32);
                    let (rest, whole) = (runs.remainder(), depth / 32);
                    for (t, run) in runs.enumerate() {
                        // Fixed-size copies: one vector move each, not a `memcpy` call
                        // per 64 bytes (measured: 14% of a 2048³ product's time).
                        let run: &[bf16; 32] = run.try_into().expect("32 values");
                        let dst: &mut [u16; 32] = (&mut panel[at(r, 32 * t)..][..32])
                            .try_into()
                            .expect("32 values");
                        for (d, v) in dst.iter_mut().zip(run) {
                            *d = v.to_bits();
                        }
                    }
                    if !rest.is_empty() {
                        let dst = &mut panel[at(r, 32 * whole)..][..rest.len()];
                        for (d, v) in dst.iter_mut().zip(rest) {
                            *d = v.to_bits();
                        }
                    }
                }
            } else {
                // Strided along the depth (a transposed A): 32 × 32 blocks
                // transposed in registers where whole, else read along the lines.
                let s0 = base + q * width * x_stride;
                let mut p0 = 0;
                #[cfg(target_arch = "x86_64")]
                if x_stride == 1 && lines == 32 && std::arch::is_x86_feature_detected!("avx512bw") {
                    while p0 + 32 <= depth {
                        let s = s0 + p0 * p_stride;
                        assert!(s + 31 * p_stride + 32 <= data.len());
                        let dst = &mut panel[at(0, p0)..at(0, p0) + 1024];
                        // SAFETY: AVX-512F/BW detected above; 32 rows of 32 values
                        // at stride p_stride from s lie inside `data` (checked); 1024 written.
                        unsafe {
                            x86::transpose_32x32(
                                data.as_ptr().add(s) as *const u16,
                                p_stride,
                                dst.as_mut_ptr(),
                            )
                        };
                        p0 += 32;
                    }
                }
                for p in p0..depth {
                    let s = s0 + p * p_stride;
                    for r in 0..lines {
                        panel[at(r, p)] = data[s + r * x_stride].to_bits();
                    }
                }
            }
        }
    }
    #[inline]
    fn run(&self, kernel: Kernel, kc: usize, a: &[u16], b: &[u16], acc: Accum<'_>) {
        kernel.run_amx_row(kc.div_ceil(32) * 32, a, b, 1, acc.c, acc.ldc, acc.overwrite)
    }
    #[inline]
    fn run_row(
        &self,
        kernel: Kernel,
        kc: usize,
        a: &[u16],
        b: &[u16],
        panels: usize,
        acc: Accum<'_>,
    ) {
        kernel.run_amx_row(
            kc.div_ceil(32) * 32,
            a,
            b,
            panels,
            acc.c,
            acc.ldc,
            acc.overwrite,
        )
    }
}

/// How [`pack_pairs`] loads a value as bf16 bits — the one thing its two uses
/// differ in: a bf16 value as it is, an f32 value rounded to bf16 (nearest
/// even, as `f32_to_bf16_bits`: the panels equal those packed from the cast
/// values). Each load has its scalar form and its AVX-512 forms.
pub(crate) trait PairLoad: Copy + Sync {
    /// The value's bf16 bits.
    fn bits(self) -> u16;

    /// `out[2j] = bits(r0[j])`, `out[2j + 1] = bits(r1[j])` for 32 `j`.
    ///
    /// # Safety
    /// AVX-512F/BW available; `r0`, `r1` hold 32 values, `out` 64.
    #[cfg(target_arch = "x86_64")]
    unsafe fn interleave_rows(r0: *const Self, r1: *const Self, out: *mut u16);

    /// `out[2j] = bits(r0[j])`, `out[2j + 1] = bits(r1[j])` for `j < n ≤ 16`;
    /// `false` (nothing written) where this type has no such path.
    ///
    /// # Safety
    /// AVX-512F/BW available; `r0`, `r1` hold `n` values, `out` `2n`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn interleave_short(r0: *const Self, r1: *const Self, n: usize, out: *mut u16) -> bool {
        let _ = (r0, r1, n, out);
        false
    }

    /// Packs the leading depth steps of a full panel of `width` lines whose
    /// lines are contiguous along the depth (a row-major A panel, a transposed
    /// B): line `r` from `data[first + r·x_stride]`, `depth` values. Returns
    /// the steps packed (even, 0 where this type has no path for `width`);
    /// the caller packs the rest.
    ///
    /// # Safety
    /// AVX-512F/BW available.
    #[cfg(target_arch = "x86_64")]
    unsafe fn pack_depth_lines(
        data: &[Self],
        first: usize,
        x_stride: usize,
        width: usize,
        depth: usize,
        panel: &mut [u16],
    ) -> usize;
}

impl PairLoad for bf16 {
    #[inline]
    fn bits(self) -> u16 {
        self.to_bits()
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    unsafe fn interleave_rows(r0: *const bf16, r1: *const bf16, out: *mut u16) {
        // SAFETY: the caller's contract is the callee's (bf16 values are their u16 bits).
        unsafe { x86::interleave_rows(r0 as *const u16, r1 as *const u16, out) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    unsafe fn interleave_short(r0: *const bf16, r1: *const bf16, n: usize, out: *mut u16) -> bool {
        // SAFETY: the caller's contract is the callee's (bf16 values are their u16 bits).
        unsafe { x86::interleave_short(r0 as *const u16, r1 as *const u16, n, out) };
        true
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    unsafe fn pack_depth_lines(
        data: &[bf16],
        first: usize,
        x_stride: usize,
        width: usize,
        depth: usize,
        panel: &mut [u16],
    ) -> usize {
        let pairs = depth / 2;
        if pairs == 0 || width == 0 || !width.is_multiple_of(4) {
            return 0;
        }
        // The last line's pairs end inside `data`; the panel holds every pair step.
        assert!(first + (width - 1) * x_stride + 2 * pairs <= data.len());
        assert!(panel.len() >= pairs * 2 * width);
        // SAFETY: AVX-512F available (the caller's contract); the lines' extents and
        // the panel's were checked above.
        unsafe {
            x86::transpose_line_pairs(
                data.as_ptr().add(first) as *const u16,
                x_stride,
                width,
                pairs,
                panel.as_mut_ptr(),
            )
        };
        2 * pairs
    }
}

impl PairLoad for f32 {
    #[inline]
    fn bits(self) -> u16 {
        crate::convert::f32_to_bf16_bits(self)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    unsafe fn interleave_rows(r0: *const f32, r1: *const f32, out: *mut u16) {
        // SAFETY: the caller's contract is the callee's.
        unsafe { x86::round_interleave_rows(r0, r1, out) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    unsafe fn pack_depth_lines(
        data: &[f32],
        first: usize,
        x_stride: usize,
        width: usize,
        depth: usize,
        panel: &mut [u16],
    ) -> usize {
        if width != 32 {
            // Narrower f32 panels are rounded by the general loop.
            return 0;
        }
        let mut p0 = 0;
        while p0 + 32 <= depth {
            // 32 lines × 32 steps: the last line's 32 values end inside `data`.
            let s = first + p0;
            let last = s + 31 * x_stride + 32;
            assert!(last <= data.len());
            let dst = &mut panel[(p0 / 2) * 64..(p0 / 2 + 16) * 64];
            // SAFETY: AVX-512F/BW available (the caller's contract); 32 lines of 32 values
            // from `s` at `x_stride` (the last ends inside `data`, checked); 1024 written.
            unsafe { x86::round_transpose_pairs(data[s..].as_ptr(), x_stride, dst.as_mut_ptr()) };
            p0 += 32;
        }
        p0
    }
}

/// Packs the `count` lines of `depth` values of `src`, each loaded as bf16
/// bits by `E` ([`PairLoad`]: bf16 as it is, f32 rounded), into
/// pair-interleaved panels of `width` lines, `[panel][p / 2][width][p % 2]`,
/// zero-padding the depth to `stored` (even) and the last panel to `width`
/// lines. A row-major B in whole 32-line panels takes [`row_pairs`]; with
/// AVX-512, other full panels whose lines are contiguous along the depth (a
/// row-major A, a transposed B) are transposed in registers
/// ([`PairLoad::pack_depth_lines`]), and full 32-line panels whose lines run
/// across it are interleaved two rows at a time.
pub(crate) fn pack_pairs<E: PairLoad>(
    src: Lines<'_, E>,
    width: usize,
    stored: usize,
    out: &mut [u16],
) {
    #[cfg(target_arch = "x86_64")]
    if row_pairs(src, width, stored, out) {
        return;
    }
    let Lines {
        data,
        base,
        x_stride,
        p_stride,
        count,
        depth,
    } = src;
    for q in 0..count.div_ceil(width) {
        let panel = &mut out[q * width * stored..(q + 1) * width * stored];
        let lines = width.min(count - q * width);
        if lines < width || depth < stored {
            panel.fill(0);
        }
        let first = base + q * width * x_stride;
        // A full panel, with AVX-512: lines contiguous along the depth are
        // transposed in registers (any width that is a multiple of 4: A's 12,
        // a transposed B's 32); rows of a row-major B interleaved in pairs.
        #[cfg(target_arch = "x86_64")]
        let bw = std::arch::is_x86_feature_detected!("avx512bw");
        #[cfg(not(target_arch = "x86_64"))]
        let bw = false;
        let simd = lines == width && bw;
        // Depth steps already packed (even).
        let mut p0 = 0;
        #[cfg(target_arch = "x86_64")]
        if simd && p_stride == 1 {
            // SAFETY: AVX-512F/BW detected above.
            p0 = unsafe { E::pack_depth_lines(data, first, x_stride, width, depth, panel) };
        } else if simd && width == 32 && x_stride == 1 {
            while p0 + 2 <= depth {
                let (r0, r1) = (first + p0 * p_stride, first + (p0 + 1) * p_stride);
                let (l0, l1) = (&data[r0..r0 + 32], &data[r1..r1 + 32]);
                let dst = &mut panel[(p0 / 2) * 64..(p0 / 2) * 64 + 64];
                // SAFETY: AVX-512F/BW detected above; 32 values from each row, 64 written.
                unsafe { E::interleave_rows(l0.as_ptr(), l1.as_ptr(), dst.as_mut_ptr()) };
                p0 += 2;
            }
        } else if bw && width <= 16 && x_stride == 1 {
            // A narrow panel (an A panel of a transposed A, full or the last):
            // one masked interleave of its lines per pair of depth steps.
            while p0 + 2 <= depth {
                let (r0, r1) = (first + p0 * p_stride, first + (p0 + 1) * p_stride);
                let (l0, l1) = (&data[r0..r0 + lines], &data[r1..r1 + lines]);
                let dst = &mut panel[(p0 / 2) * 2 * width..][..2 * lines];
                // SAFETY: AVX-512F/BW detected above; `lines` values from each row,
                // `2·lines` written.
                let done = unsafe {
                    E::interleave_short(l0.as_ptr(), l1.as_ptr(), lines, dst.as_mut_ptr())
                };
                if !done {
                    break;
                }
                p0 += 2;
            }
        }
        if p_stride == 1 {
            // Each line is contiguous along the depth (a transposed B, e.g. a linear weight).
            for r in 0..lines {
                let s = first + r * x_stride;
                let line = &data[s..s + depth];
                for (pp, pair) in line.chunks(2).enumerate().skip(p0 / 2) {
                    let at = pp * width * 2 + r * 2;
                    panel[at] = pair[0].bits();
                    if let Some(v) = pair.get(1) {
                        panel[at + 1] = v.bits();
                    }
                }
            }
        } else {
            for p in p0..depth {
                let s = first + p * p_stride;
                let row = &mut panel[(p / 2) * width * 2..(p / 2 + 1) * width * 2];
                let e = p % 2;
                if x_stride == 1 {
                    for (r, v) in data[s..s + lines].iter().enumerate() {
                        row[r * 2 + e] = v.bits();
                    }
                } else {
                    for r in 0..lines {
                        row[r * 2 + e] = data[s + r * x_stride].bits();
                    }
                }
            }
        }
    }
}

/// Pair-interleaved panels of a row-major B in whole 32-line panels, with
/// AVX-512BW: each pair of rows is read once, left to right, across every
/// panel (a row-major walk the prefetchers follow); 32 values of each row
/// are packed into 64 by [`PairLoad::interleave_rows`]. `false` (nothing
/// written) when the block does not qualify.
#[cfg(target_arch = "x86_64")]
fn row_pairs<E: PairLoad>(src: Lines<'_, E>, width: usize, stored: usize, out: &mut [u16]) -> bool {
    let Lines {
        data,
        base,
        x_stride,
        p_stride,
        count,
        depth,
    } = src;
    if !(width == 32
        && x_stride == 1
        && count.is_multiple_of(32)
        && depth == stored
        && std::arch::is_x86_feature_detected!("avx512bw"))
    {
        return false;
    }
    // Rows this far ahead are prefetched: each row is a short run far from the
    // last one, which the hardware prefetchers do not follow in time.
    const AHEAD: usize = 8;
    let line_elems = (64 / std::mem::size_of::<E>().max(1)).max(1);
    for pp in 0..depth / 2 {
        let (r0, r1) = (base + 2 * pp * p_stride, base + (2 * pp + 1) * p_stride);
        let (l0, l1) = (&data[r0..r0 + count], &data[r1..r1 + count]);
        if 2 * pp + AHEAD + 1 < depth {
            for r in [r0 + AHEAD * p_stride, r1 + AHEAD * p_stride] {
                for e in (0..count).step_by(line_elems) {
                    // SAFETY: a prefetch is only a hint; the address is inside `data`
                    // (the row is one of this block's, read later).
                    unsafe {
                        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                            data[r + e..].as_ptr() as *const i8,
                        )
                    };
                }
            }
        }
        for q in 0..count / 32 {
            let at = q * 32 * stored + pp * 64;
            let rows = (&l0[32 * q..32 * q + 32], &l1[32 * q..32 * q + 32]);
            let dst = &mut out[at..at + 64];
            // SAFETY: AVX-512F/BW detected above; 32 values from each row, 64 written.
            unsafe { E::interleave_rows(rows.0.as_ptr(), rows.1.as_ptr(), dst.as_mut_ptr()) }
        }
    }
    true
}

/// [`pack`] for f32 lines with AVX-512: lines contiguous along the depth by
/// 16 × 16 register transposes, lines contiguous across it by masked copies;
/// with AVX2, lines contiguous along the depth by 8 × 8 transposes (a
/// row-major A, a linear layer's weight as B: element by element, these were
/// a product's slowest packing). `false` (nothing written) when the ISA or
/// the layout does not qualify.
#[cfg(target_arch = "x86_64")]
fn pack_f32_simd(isa: Isa, src: Lines<'_, f32>, width: usize, out: &mut [f32]) -> bool {
    if isa == Isa::Avx2 && src.p_stride == 1 {
        pack_transposing(isa, src, width, out);
        return true;
    }
    let src_lines = src;
    let Lines {
        data: src,
        base,
        x_stride,
        p_stride,
        count,
        depth,
    } = src;
    if !(isa >= Isa::Avx512 && width <= kernels::MAX_NR) {
        return false;
    }
    let panels = count.div_ceil(width);
    if p_stride == 1 {
        // Lines contiguous along p (a row-major A, a transposed B).
        pack_transposing(
            isa,
            Lines {
                data: src,
                ..src_lines
            },
            width,
            out,
        );
        return true;
    }
    if x_stride == 1 {
        // Lines contiguous along x (a row-major B): each step one masked copy.
        for q in 0..panels {
            let panel = &mut out[q * width * depth..(q + 1) * width * depth];
            let first = base + q * width;
            let lines = width.min(count - q * width);
            assert!(depth == 0 || first + (depth - 1) * p_stride + lines <= src.len());
            // SAFETY: AVX-512F present (isa ≥ Avx512); step p reads `lines` values
            // at `first + p·p_stride`, inside `src` (checked above); the panel
            // holds `depth` rows of `width ≤ 32`.
            unsafe {
                x86::copy_lines_f32(
                    src.as_ptr().add(first),
                    p_stride,
                    lines,
                    depth,
                    panel.as_mut_ptr(),
                    width,
                )
            }
        }
        return true;
    }
    false
}

/// [`pack`] for lines contiguous along x (a row-major B) of f32, bf16 or
/// f16 on the AVX2 level, panels a multiple of 8 wide: step by step across
/// the full panels, widened in registers ([`x86::copy_rows_avx2`]), then the
/// last panel's lines and zeros. `false` (nothing written) when the ISA, the
/// layout or the element type does not qualify.
#[cfg(target_arch = "x86_64")]
fn pack_rows_avx2<T: F32Convert>(
    isa: Isa,
    src: Lines<'_, T>,
    width: usize,
    out: &mut [f32],
) -> bool {
    let Lines {
        data,
        base,
        x_stride,
        p_stride,
        count,
        depth,
    } = src;
    if !(isa == Isa::Avx2 && x_stride == 1 && width.is_multiple_of(8)) {
        return false;
    }
    let kind = if T::as_f32(data).is_some() {
        x86::RowSource::F32
    } else if T::as_bf16(data).is_some() {
        x86::RowSource::Bf16
    } else if T::as_f16(data).is_some() {
        x86::RowSource::F16
    } else {
        return false;
    };
    let full = count / width;
    assert!(depth == 0 || base + (depth - 1) * p_stride + full * width <= data.len());
    assert!(out.len() >= count.div_ceil(width) * width * depth);
    // SAFETY: AVX2 and F16C are this level; step p reads `full·width` values
    // of `kind` (T itself) from `base + p·p_stride`, inside `data`, and `out`
    // holds `width · depth` values per panel (both checked above); nothing is
    // read when there are no steps or no full panels.
    unsafe {
        x86::copy_rows_avx2(
            kind,
            data.as_ptr().wrapping_add(base) as *const u8,
            p_stride,
            full,
            width,
            depth,
            out.as_mut_ptr(),
        )
    };
    let lines = count - full * width;
    if lines > 0 {
        let panel = &mut out[full * width * depth..(full + 1) * width * depth];
        for (p, row) in panel.chunks_exact_mut(width).enumerate() {
            let s = base + full * width + p * p_stride;
            T::load(isa, &data[s..s + lines], &mut row[..lines]);
            row[lines..].fill(0.0);
        }
    }
    true
}

/// [`pack_f32_simd`] for lines contiguous along the depth (`p_stride` 1):
/// register transposes of 16 lines × 16 steps with AVX-512, 8 × 8 with AVX2.
#[cfg(target_arch = "x86_64")]
fn pack_transposing(isa: Isa, src: Lines<'_, f32>, width: usize, out: &mut [f32]) {
    let Lines {
        data: src,
        base,
        x_stride,
        count,
        depth,
        ..
    } = src;
    let block = if isa >= Isa::Avx512 { 16 } else { 8 };
    for q in 0..count.div_ceil(width) {
        let panel = &mut out[q * width * depth..(q + 1) * width * depth];
        let first = base + q * width * x_stride;
        let lines = width.min(count - q * width);
        // The last line read ends inside `src`.
        assert!(lines == 0 || first + (lines - 1) * x_stride + depth <= src.len());
        for r0 in (0..width).step_by(block) {
            let lanes = block.min(width - r0);
            let valid = lines.saturating_sub(r0).min(lanes);
            // Offsets only (a block past the last line reads nothing).
            let from = src.as_ptr().wrapping_add(first + r0 * x_stride);
            let to = panel.as_mut_ptr().wrapping_add(r0);
            // SAFETY: the caller's isa is AVX-512F (16-lane blocks) or AVX2 (8);
            // lines r0..r0 + valid start at `first + r·x_stride` and hold `depth`
            // values (checked above); the panel holds `depth` rows of `width`,
            // and lanes r0..r0 + lanes lie within a row.
            unsafe {
                if block == 16 {
                    x86::transpose_lines_f32(from, x_stride, valid, depth, to, width, lanes)
                } else {
                    x86::transpose_lines_f32_avx2(from, x_stride, valid, depth, to, width, lanes)
                }
            }
        }
    }
}

/// Packs the `count` lines (along x) of `depth` elements (along p) of `src`
/// into panels of `width` lines, `[panel][p][width]`, zero-padding the last panel.
pub(crate) fn pack<T: F32Convert>(isa: Isa, src: Lines<'_, T>, width: usize, out: &mut [f32]) {
    let Lines {
        data,
        base,
        x_stride,
        p_stride,
        count,
        depth,
    } = src;
    let panels = count.div_ceil(width);
    #[cfg(target_arch = "x86_64")]
    if pack_rows_avx2(isa, src, width, out) {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(src) = T::as_f32(data) {
        let src = Lines {
            data: src,
            base,
            x_stride,
            p_stride,
            count,
            depth,
        };
        if pack_f32_simd(isa, src, width, out) {
            return;
        }
    }
    #[cfg(target_arch = "x86_64")]
    let simd = isa == Isa::Avx2 || isa >= Isa::Avx512 && width <= kernels::MAX_NR;
    #[cfg(target_arch = "x86_64")]
    if simd && T::as_f32(data).is_none() && p_stride == 1 && depth > 0 {
        // bf16/f16 lines contiguous along the depth: each panel's lines widened
        // to f32 (SIMD conversions), then transposed as f32 lines are.
        let mut wide = vec![0f32; width * depth];
        for q in 0..panels {
            let lines = width.min(count - q * width);
            for r in 0..lines {
                let s = base + (q * width + r) * x_stride;
                T::load(
                    isa,
                    &data[s..s + depth],
                    &mut wide[r * depth..(r + 1) * depth],
                );
            }
            let src = Lines {
                data: &wide[..],
                base: 0,
                x_stride: depth,
                p_stride: 1,
                count: lines,
                depth,
            };
            let panel = &mut out[q * width * depth..(q + 1) * width * depth];
            let packed = pack_f32_simd(isa, src, width, panel);
            debug_assert!(packed, "f32 lines along the depth pack on every SIMD level");
        }
        return;
    }
    let mut line = vec![0f32; if p_stride == 1 { depth } else { 0 }];
    for q in 0..panels {
        let panel = &mut out[q * width * depth..(q + 1) * width * depth];
        let lines = width.min(count - q * width);
        if x_stride == 1 && lines == width {
            // Contiguous along x: each p is one load of `width` elements.
            for p in 0..depth {
                let s = base + q * width + p * p_stride;
                T::load(
                    isa,
                    &data[s..s + width],
                    &mut panel[p * width..(p + 1) * width],
                );
            }
            continue;
        }
        for r in 0..width {
            if r >= lines {
                for p in 0..depth {
                    panel[p * width + r] = 0.0;
                }
                continue;
            }
            let s = base + (q * width + r) * x_stride;
            if p_stride == 1 {
                T::load(isa, &data[s..s + depth], &mut line);
                for (p, &v) in line.iter().enumerate() {
                    panel[p * width + r] = v;
                }
            } else {
                for p in 0..depth {
                    panel[p * width + r] = data[s + p * p_stride].to_f32();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amp_dtype::f16;

    /// The panels of `count` lines by definition: `[panel][p][width]`, line `r`
    /// of panel `q` holding `data[base + (q·width + r)·x_stride + p·p_stride]`.
    fn panels_by_definition(src: Lines<'_, f32>, width: usize) -> Vec<f32> {
        let panels = src.count.div_ceil(width);
        let mut out = vec![0f32; panels * width * src.depth];
        for q in 0..panels {
            for p in 0..src.depth {
                for r in 0..width.min(src.count - q * width) {
                    let s = src.base + (q * width + r) * src.x_stride + p * src.p_stride;
                    out[(q * src.depth + p) * width + r] = src.data[s];
                }
            }
        }
        out
    }

    /// [`pack`] of `data` read as `like` reads its f32 values (same base,
    /// strides and extents), into a NaN-filled buffer.
    fn packed<T: F32Convert>(isa: Isa, data: &[T], like: Lines<'_, f32>, width: usize) -> Vec<f32> {
        let src = Lines {
            data,
            base: like.base,
            x_stride: like.x_stride,
            p_stride: like.p_stride,
            count: like.count,
            depth: like.depth,
        };
        let mut out = vec![f32::NAN; like.count.div_ceil(width) * width * like.depth];
        pack(isa, src, width, &mut out);
        out
    }

    /// [`pack_pairs`] of `data` from element 7 with the given `(x_stride,
    /// p_stride, count, depth)`, into a buffer of all-ones bits.
    fn pairs_of<E: PairLoad>(
        data: &[E],
        (x_stride, p_stride, count, depth): (usize, usize, usize, usize),
        width: usize,
        stored: usize,
    ) -> Vec<u16> {
        let mut out = vec![0xFFFFu16; count.div_ceil(width) * width * stored];
        let src = Lines {
            data,
            base: 7,
            x_stride,
            p_stride,
            count,
            depth,
        };
        pack_pairs(src, width, stored, &mut out);
        out
    }

    #[test]
    fn pair_panels_equal_their_definition() {
        // Widths of A (12) and B (32) panels; lines contiguous along the depth
        // (a row-major A, a transposed B: the register transposes, 16 and 4
        // pairs at a time, then single pairs) and across it; odd depths (the
        // last pair padded with zero); partial last panels; bf16 lines and f32
        // lines rounded while packed.
        let data: Vec<f32> = (0..60_000).map(|i| (i % 89) as f32 * 0.25 - 9.0).collect();
        let data16: Vec<bf16> = data.iter().map(|&v| bf16::from_f32(v)).collect();
        for width in [4, 12, 32] {
            for (count, depth) in [
                (12usize, 1usize),
                (24, 39),
                (32, 64),
                (37, 71),
                (64, 40),
                (13, 130),
            ] {
                for transposed in [true, false] {
                    let (x_stride, p_stride) = if transposed {
                        (depth + 3, 1)
                    } else {
                        (1, count + 5)
                    };
                    let stored = depth.div_ceil(2) * 2;
                    let panels = count.div_ceil(width);
                    let mut want = vec![0u16; panels * width * stored];
                    for l in 0..count {
                        let (q, r) = (l / width, l % width);
                        for p in 0..depth {
                            let v = data16[7 + l * x_stride + p * p_stride].to_bits();
                            want[q * width * stored + (p / 2) * width * 2 + r * 2 + p % 2] = v;
                        }
                    }
                    let what = format!(
                        "width {width} count {count} depth {depth} transposed {transposed}"
                    );
                    let geometry = (x_stride, p_stride, count, depth);
                    assert_eq!(
                        pairs_of(&data16, geometry, width, stored),
                        want,
                        "bf16 {what}"
                    );
                    assert_eq!(
                        pairs_of(&data, geometry, width, stored),
                        want,
                        "f32 rounded {what}"
                    );
                }
            }
        }
    }

    #[test]
    fn f32_panels_equal_their_definition_on_every_isa() {
        // Lines contiguous along the depth (the transposing packs) and across it,
        // panel widths of every kernel, depths and line counts off every vector;
        // f32 lines and bf16 and f16 lines (widened while packed), whose values
        // bf16 and f16 hold.
        let data: Vec<f32> = (0..40_000).map(|i| (i % 97) as f32 * 0.5 - 7.0).collect();
        let data16: Vec<bf16> = data.iter().map(|&v| bf16::from_f32(v)).collect();
        let data_h: Vec<f16> = data.iter().map(|&v| f16::from_f32(v)).collect();
        for isa in Isa::available() {
            for width in [6, 12, 16, 32] {
                for (count, depth) in [(1, 1), (7, 9), (16, 8), (37, 23), (6, 64), (33, 130)] {
                    for transposed in [true, false] {
                        let (x_stride, p_stride) = if transposed {
                            (depth + 3, 1)
                        } else {
                            (1, count + 5)
                        };
                        let src = Lines {
                            data: &data,
                            base: 11,
                            x_stride,
                            p_stride,
                            count,
                            depth,
                        };
                        let what = format!("{isa} width {width} count {count} depth {depth} transposed {transposed}");
                        let want = panels_by_definition(src, width);
                        assert_eq!(packed(isa, &data, src, width), want, "f32 {what}");
                        assert_eq!(packed(isa, &data16, src, width), want, "bf16 {what}");
                        assert_eq!(packed(isa, &data_h, src, width), want, "f16 {what}");
                    }
                }
            }
        }
    }
}
