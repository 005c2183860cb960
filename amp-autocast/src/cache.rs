//! The cast cache: low-precision copies of f32 leaf parameters, made once per
//! outermost region on a thread.

use crate::stats;
use amp_dtype::DType;
use amp_tensor::{Result, Tensor};
use std::cell::RefCell;
use std::collections::HashMap;

thread_local! {
    /// Keyed by (source tensor id, target dtype). Tensor ids come from a
    /// process-wide counter and are never reused, so a key cannot alias a
    /// later tensor (PyTorch keys by `TensorImpl*` and holds a weak reference
    /// for that reason).
    static CACHE: RefCell<HashMap<(u64, DType), Tensor>> = RefCell::new(HashMap::new());
}

/// Number of casts held in this thread's cast cache (0 outside any region).
pub fn cache_len() -> usize {
    CACHE.with(|c| c.borrow().len())
}

pub(crate) fn clear() {
    // Take the map out first so the tensors drop outside the borrow.
    let old = CACHE.try_with(|c| std::mem::take(&mut *c.borrow_mut()));
    drop(old);
}

/// Casts `t` to `target`, through the cache when `cacheable`.
pub(crate) fn cast(t: &Tensor, target: DType, cacheable: bool) -> Result<Tensor> {
    let key = (t.id(), target);
    if cacheable {
        if let Some(hit) = CACHE.with(|c| c.borrow().get(&key).cloned()) {
            stats::record(|s| s.cache_hits += 1);
            return Ok(hit);
        }
    }
    // Deferred: a backend that reads the source as cast (the CPU products)
    // never computes it; every other op computes it once, on first read.
    let cast = t.to_dtype_deferred(target)?;
    stats::record(|s| s.casts += 1);
    if cacheable {
        CACHE.with(|c| c.borrow_mut().insert(key, cast.clone()));
        stats::record(|s| s.cache_inserts += 1);
    }
    Ok(cast)
}
