//! Diagnostics counters: casts, cache hits, ops per rule and per precision.

use crate::CastRule;
use std::cell::RefCell;
use std::fmt;

/// What autocast did on this thread since the last [`reset_stats`]: counted
/// for ops that ran while a region of their device kind was enabled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AutocastStats {
    /// Casts autocast performed (cache hits excluded).
    pub casts: u64,
    /// Casts answered from the cast cache.
    pub cache_hits: u64,
    /// Casts stored in the cast cache.
    pub cache_inserts: u64,
    /// Ops handled, indexed like [`CastRule::ALL`] (see [`AutocastStats::ops`]).
    pub ops_by_rule: [u64; 4],
    /// Ops whose widest floating input, after casting, was f16, bf16 or fp8.
    pub ops_low_precision: u64,
    /// Ops whose widest floating input, after casting, was f32.
    pub ops_f32: u64,
    /// Ops with an f64 input or no floating input at all.
    pub ops_other: u64,
}

impl AutocastStats {
    /// Ops handled with `rule`.
    pub fn ops(&self, rule: CastRule) -> u64 {
        self.ops_by_rule[rule.index()]
    }

    /// All ops handled.
    pub fn total_ops(&self) -> u64 {
        self.ops_by_rule.iter().sum()
    }
}

impl fmt::Display for AutocastStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "autocast: {} ops ({} in low precision, {} in f32, {} other; rules: {} lower, {} f32, {} promote, {} passthrough), \
             {} casts, {} cache hits",
            self.total_ops(),
            self.ops_low_precision,
            self.ops_f32,
            self.ops_other,
            self.ops(CastRule::LowerPrecision),
            self.ops(CastRule::Float32),
            self.ops(CastRule::Promote),
            self.ops(CastRule::Passthrough),
            self.casts,
            self.cache_hits
        )
    }
}

thread_local! {
    static STATS: RefCell<AutocastStats> = RefCell::new(AutocastStats::default());
}

/// This thread's counters.
pub fn stats() -> AutocastStats {
    STATS.with(|s| s.borrow().clone())
}

/// Zeroes this thread's counters.
pub fn reset_stats() {
    STATS.with(|s| *s.borrow_mut() = AutocastStats::default());
}

pub(crate) fn record(f: impl FnOnce(&mut AutocastStats)) {
    STATS.with(|s| f(&mut s.borrow_mut()));
}
