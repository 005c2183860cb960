//! The numbers the kernels switch on, defined once. Each table below gives
//! the Rust side its code function and the `.cu` sources a `#define` per code
//! (prepended to every module by [`crate::kernels::KernelSource::translation_unit`]),
//! so the kernels say `case AMP_UNARY_EXP:` and no number is kept in step by hand.

use amp_dtype::DType;
use amp_tensor::backend::{BinaryOp, ReduceOp, UnaryOp};

/// Defines `fn $code(op) -> i32` and the `#define` lines of its table.
macro_rules! codes {
    ($(#[$doc:meta])* $code:ident, $defines:ident, $ty:ty, $prefix:literal, { $($pat:pat => $name:ident = $value:literal),+ $(,)? }) => {
        $(#[$doc])*
        pub(crate) fn $code(op: $ty) -> i32 {
            match op {
                $($pat => $value,)+
            }
        }

        /// The table's `#define`s for the kernel sources.
        pub(crate) const $defines: &str = concat!(
            $("#define ", $prefix, stringify!($name), " ", stringify!($value), "\n",)+
        );
    };
}

codes!(
    /// The code of a unary op (its scalar parameters travel separately, see [`unary_params`]).
    unary, UNARY_DEFINES, UnaryOp, "AMP_UNARY_", {
        UnaryOp::Neg => NEG = 0,
        UnaryOp::Exp => EXP = 1,
        UnaryOp::Log => LOG = 2,
        UnaryOp::Sqrt => SQRT = 3,
        UnaryOp::Rsqrt => RSQRT = 4,
        UnaryOp::Abs => ABS = 5,
        UnaryOp::Relu => RELU = 6,
        UnaryOp::GeluErf => GELU_ERF = 7,
        UnaryOp::GeluTanh => GELU_TANH = 8,
        UnaryOp::Tanh => TANH = 9,
        UnaryOp::Sigmoid => SIGMOID = 10,
        UnaryOp::Silu => SILU = 11,
        UnaryOp::Erf => ERF = 12,
        UnaryOp::Recip => RECIP = 13,
        UnaryOp::Sign => SIGN = 14,
        UnaryOp::Powf(_) => POWF = 15,
        UnaryOp::Affine { .. } => AFFINE = 16,
        UnaryOp::Identity => IDENTITY = 17,
        UnaryOp::NonZero => NONZERO = 18,
    }
);

/// The scalar parameters of a unary op: `p0` (the exponent, or the multiplier) and `p1` (the addend).
pub(crate) fn unary_params(op: UnaryOp) -> (f64, f64) {
    match op {
        UnaryOp::Powf(p) => (p, 0.0),
        UnaryOp::Affine { mul, add } => (mul, add),
        _ => (0.0, 0.0),
    }
}

codes!(
    /// The code of a binary op.
    binary, BINARY_DEFINES, BinaryOp, "AMP_BINARY_", {
        BinaryOp::Add => ADD = 0,
        BinaryOp::Sub => SUB = 1,
        BinaryOp::Mul => MUL = 2,
        BinaryOp::Div => DIV = 3,
        BinaryOp::Maximum => MAXIMUM = 4,
        BinaryOp::Minimum => MINIMUM = 5,
        BinaryOp::Eq => EQ = 6,
        BinaryOp::Gt => GT = 7,
        BinaryOp::Lt => LT = 8,
        BinaryOp::ReluBackward => RELU_BACKWARD = 9,
        BinaryOp::GeluErfBackward => GELU_ERF_BACKWARD = 10,
        BinaryOp::GeluTanhBackward => GELU_TANH_BACKWARD = 11,
        BinaryOp::TanhBackward => TANH_BACKWARD = 12,
        BinaryOp::SigmoidBackward => SIGMOID_BACKWARD = 13,
        BinaryOp::SiluBackward => SILU_BACKWARD = 14,
    }
);

codes!(
    /// The code of a value reduction (the arg-reductions have kernels of their own).
    reduction, REDUCE_DEFINES, ReduceOp, "AMP_REDUCE_", {
        ReduceOp::Sum => SUM = 0,
        ReduceOp::Mean => MEAN = 1,
        ReduceOp::Max => MAX = 2,
        ReduceOp::Min => MIN = 3,
        ReduceOp::ArgMax => ARGMAX = 4,
        ReduceOp::ArgMin => ARGMIN = 5,
    }
);

codes!(
    /// The code of a gradient buffer's dtype in the fused unscale's table
    /// (`None`-like `-1` for dtypes it does not take).
    unscale_dtype, DTYPE_DEFINES, DType, "AMP_DTYPE_", {
        DType::F32 => F32 = 0,
        DType::F16 => F16 = 1,
        DType::BF16 => BF16 = 2,
        DType::F64 => F64 = 3,
        DType::I64 => I64 = -1,
        DType::U8 => U8 = -2,
        DType::Bool => BOOL = -3,
        DType::F8E4M3 => F8E4M3 = -4,
        DType::F8E5M2 => F8E5M2 = -5,
    }
);

/// Every table's `#define`s, as the kernel sources see them.
pub(crate) fn defines() -> String {
    [UNARY_DEFINES, BINARY_DEFINES, REDUCE_DEFINES, DTYPE_DEFINES].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defines_name_the_codes_the_functions_return() {
        let d = defines();
        assert!(d.contains(&format!("#define AMP_UNARY_EXP {}\n", unary(UnaryOp::Exp))));
        assert!(d.contains(&format!(
            "#define AMP_UNARY_AFFINE {}\n",
            unary(UnaryOp::Affine { mul: 2.0, add: 1.0 })
        )));
        assert!(d.contains(&format!(
            "#define AMP_BINARY_SILU_BACKWARD {}\n",
            binary(BinaryOp::SiluBackward)
        )));
        assert!(d.contains(&format!(
            "#define AMP_REDUCE_MIN {}\n",
            reduction(ReduceOp::Min)
        )));
        assert!(d.contains(&format!(
            "#define AMP_DTYPE_BF16 {}\n",
            unscale_dtype(DType::BF16)
        )));
        assert_eq!(unary_params(UnaryOp::Powf(1.5)), (1.5, 0.0));
    }
}
