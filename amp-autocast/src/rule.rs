//! [`CastRule`]: what autocast does to an op's floating inputs.

use std::fmt;

/// What an autocast region does to the floating inputs of one op.
///
/// Only *eligible* inputs are touched: floating-point tensors on the region's
/// device kind that are not f64 (as PyTorch's `is_eligible`). Integer, bool
/// and f64 tensors, and tensors on another device kind, always pass unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CastRule {
    /// Cast eligible inputs to the region's low-precision dtype (f16 or bf16):
    /// PyTorch's `lower_precision_fp` (matmul, linear, conv, …).
    LowerPrecision,
    /// Cast eligible inputs to f32: PyTorch's `fp32`, `fp32_set_opt_dtype`
    /// and `fp32_append_dtype` (softmax, layer_norm, losses, … on CUDA).
    Float32,
    /// Cast eligible inputs to the widest eligible input dtype (by
    /// [`amp_dtype::DType::promote`]): PyTorch's `promote` (cat, stack, …).
    Promote,
    /// Run the op on whatever dtypes arrive (every op not in a list).
    Passthrough,
}

impl CastRule {
    /// Every rule, in a fixed order.
    pub const ALL: [CastRule; 4] = [
        CastRule::LowerPrecision,
        CastRule::Float32,
        CastRule::Promote,
        CastRule::Passthrough,
    ];

    /// The rule's name in policy strings and tables: `lower`, `f32`, `promote`, `passthrough`.
    pub fn name(self) -> &'static str {
        match self {
            CastRule::LowerPrecision => "lower",
            CastRule::Float32 => "f32",
            CastRule::Promote => "promote",
            CastRule::Passthrough => "passthrough",
        }
    }

    /// Parses a rule name: the canonical names above, or PyTorch's spellings
    /// (`lower_precision_fp`, `fp32`, `float32`).
    pub fn from_name(name: &str) -> Option<CastRule> {
        Some(match name {
            "lower" | "lower_precision" | "lower_precision_fp" => CastRule::LowerPrecision,
            "f32" | "fp32" | "float32" => CastRule::Float32,
            "promote" => CastRule::Promote,
            "passthrough" => CastRule::Passthrough,
            _ => return None,
        })
    }

    pub(crate) fn index(self) -> usize {
        match self {
            CastRule::LowerPrecision => 0,
            CastRule::Float32 => 1,
            CastRule::Promote => 2,
            CastRule::Passthrough => 3,
        }
    }
}

impl fmt::Display for CastRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_indices_are_distinct() {
        for (i, rule) in CastRule::ALL.into_iter().enumerate() {
            assert_eq!(CastRule::from_name(rule.name()), Some(rule));
            assert_eq!(rule.index(), i);
        }
        assert_eq!(
            CastRule::from_name("lower_precision_fp"),
            Some(CastRule::LowerPrecision)
        );
        assert_eq!(CastRule::from_name("fp32"), Some(CastRule::Float32));
        assert_eq!(CastRule::from_name("fp16"), None);
    }
}
