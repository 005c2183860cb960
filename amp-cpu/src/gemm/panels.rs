//! Scratch buffers for packed panels and f32 accumulators, on cache lines and
//! reused between products.
//!
//! A product allocates a few buffers per call (packed A and B blocks, tile
//! blocks, column strips, the padded f32 product). Allocated as `vec![0; n]`
//! from memory the heap already holds, each is zeroed by `calloc` first — a
//! pass over the buffer that nothing needs, because every user writes what it
//! later reads (the packers write their zero padding, the kernels overwrite C
//! on the first depth block). Measured with perf before this pool: `memset`
//! was 5–7% of the samples of an f32 or bf16 512³ product.
//!
//! So freed buffers go back to a small process-wide pool, and the next
//! buffer is taken from it as is. Its contents are then whatever an earlier
//! product left there: always initialised values, never a reliable zero. Debug
//! builds (the tests) fill every buffer handed out with NaN bit patterns, so a
//! reader that relied on zeros fails its test instead of passing by luck.

use std::sync::Mutex;

/// Buffers kept for reuse, per element type.
const POOL_BUFFERS: usize = 64;
/// Bytes kept for reuse, per element type; a freed buffer that would exceed it
/// is released to the allocator instead.
const POOL_BYTES: usize = 256 << 20;

/// An element type of scratch buffers: plain values with a pool of their own.
pub(crate) trait Scratch: Copy + Default + Send + Sync + 'static {
    /// What debug builds fill a buffer with when it is handed out (a NaN).
    const POISON: Self;
    /// The pool of freed buffers of this type.
    fn pool() -> &'static Mutex<Vec<Vec<Self>>>;
}

impl Scratch for f32 {
    const POISON: f32 = f32::NAN;
    fn pool() -> &'static Mutex<Vec<Vec<f32>>> {
        static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());
        &POOL
    }
}

impl Scratch for u16 {
    /// A bf16 quiet NaN.
    const POISON: u16 = 0x7FC1;
    fn pool() -> &'static Mutex<Vec<Vec<u16>>> {
        static POOL: Mutex<Vec<Vec<u16>>> = Mutex::new(Vec::new());
        &POOL
    }
}

/// A scratch buffer of `len` elements that starts on a 64-byte boundary, so
/// that every panel line the kernels load (a tile row, a vector) sits in whole
/// cache lines. Its contents start unspecified (see the module docs): its user
/// writes every element it later reads.
pub(crate) struct Panels<E: Scratch> {
    buf: Vec<E>,
    start: usize,
    len: usize,
}

impl<E: Scratch> Panels<E> {
    /// A buffer of `len` elements, taken from the pool when one there is large
    /// enough (the smallest such), else newly allocated.
    pub(crate) fn new(len: usize) -> Panels<E> {
        let size = std::mem::size_of::<E>().max(1);
        let need = len + 64 / size;
        let reused = {
            let mut pool = E::pool().lock().unwrap_or_else(|e| e.into_inner());
            let best = pool
                .iter()
                .enumerate()
                .filter(|(_, b)| b.len() >= need)
                .min_by_key(|(_, b)| b.len())
                .map(|(i, _)| i);
            best.map(|i| pool.swap_remove(i))
        };
        let mut buf = reused.unwrap_or_else(|| vec![E::default(); need]);
        if cfg!(debug_assertions) {
            buf.fill(E::POISON);
        }
        let misalign = buf.as_ptr() as usize % 64;
        let start = if misalign == 0 {
            0
        } else {
            (64 - misalign) / size
        };
        Panels { buf, start, len }
    }
}

impl<E: Scratch> Drop for Panels<E> {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let bytes = |b: &Vec<E>| b.len() * std::mem::size_of::<E>();
        if buf.is_empty() || bytes(&buf) > POOL_BYTES {
            return;
        }
        let mut pool = E::pool().lock().unwrap_or_else(|e| e.into_inner());
        let held: usize = pool.iter().map(bytes).sum();
        if pool.len() < POOL_BUFFERS && held + bytes(&buf) <= POOL_BYTES {
            pool.push(buf);
        }
    }
}

impl<E: Scratch> std::ops::Deref for Panels<E> {
    type Target = [E];
    fn deref(&self) -> &[E] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl<E: Scratch> std::ops::DerefMut for Panels<E> {
    fn deref_mut(&mut self) -> &mut [E] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_start_on_cache_lines_and_freed_ones_are_reused() {
        for len in [1, 15, 16, 1000, 4097] {
            let p = Panels::<u16>::new(len);
            assert_eq!(p.len(), len);
            assert_eq!(p.as_ptr() as usize % 64, 0);
            let q = Panels::<f32>::new(len);
            assert_eq!(q.as_ptr() as usize % 64, 0);
            if cfg!(debug_assertions) {
                assert!(q.iter().all(|v| v.is_nan()), "handed out poisoned");
            }
        }
        // A freed buffer is handed out again (other tests may take it first, so
        // retry with a size no other test in this module asks for).
        let reused = (0..100).any(|_| {
            let p = Panels::<f32>::new(123_457);
            let addr = p.as_ptr() as usize;
            drop(p);
            Panels::<f32>::new(123_457).as_ptr() as usize == addr
        });
        assert!(reused);
    }
}
