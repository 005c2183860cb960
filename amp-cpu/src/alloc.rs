//! Large tensor buffers without page faults — an explicit opt-in.
//!
//! glibc serves every allocation above its mmap threshold (at most 32 MiB even
//! after its dynamic adjustment) with a fresh `mmap`, and `free` unmaps it: a
//! 64 MiB activation or optimizer temporary then costs 16 Ki page faults (and
//! the kernel zeroing every page) each time an op allocates its output. That
//! made a 16 Mi-element f32 `add` run at a quarter of memcpy speed. Raising
//! the mmap and trim thresholds keeps freed buffers in the heap, so the next
//! op of the same size reuses memory that is already mapped — what PyTorch's
//! caching allocators do by other means.
//!
//! That retunes the allocator of the whole process, so the library never does
//! it on its own: a program opts in by calling [`keep_freed_buffers`] (amp's
//! own binaries — `amp-train`, `cargo xtask bench` — do), or its user by
//! setting `AMP_CPU_KEEP_FREED_BUFFERS=1`, read when the first CPU backend is
//! made.

use std::sync::Once;

/// Largest allocation still served from (and freed back to) the heap.
#[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
const THRESHOLD: libc::c_int = 1 << 30;

/// Tells glibc (Linux) to serve allocations up to 1 GiB from the heap and to keep
/// up to 1 GiB of freed memory mapped, once per process; a no-op elsewhere.
///
/// Large elementwise ops then reuse mapped memory instead of faulting in fresh
/// pages (about 4× faster on 64 MiB tensors); the cost is that up to 1 GiB of
/// freed memory stays reserved by the process. Changes glibc's settings for
/// the whole process: call it from a program's `main`, as a decision of the
/// program (see the module docs).
pub fn keep_freed_buffers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator tunables; it is thread-safe and
        // takes effect for later allocations.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, THRESHOLD);
        }
    });
}

/// Opts in when the environment asks for it (`AMP_CPU_KEEP_FREED_BUFFERS=1`).
pub(crate) fn keep_freed_buffers_if_asked() {
    if std::env::var("AMP_CPU_KEEP_FREED_BUFFERS").is_ok_and(|v| v == "1") {
        keep_freed_buffers();
    }
}
