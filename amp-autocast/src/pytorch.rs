//! PyTorch's autocast op lists (`aten/src/ATen/autocast_mode.cpp` and
//! `autocast_mode.h`, PyTorch 2.x), by ATen name with overload suffixes
//! dropped, and the rules of this project's own ops.

use crate::CastRule::{
    self, Float32 as F32, LowerPrecision as Lower, Passthrough as Pass, Promote,
};

/// CUDA `lower_precision_fp` (`AT_FORALL_LOWER_PRECISION_FP` plus the two cudnn convolutions).
pub(crate) const CUDA_LOWER_PRECISION: &[&str] = &[
    "_convolution",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_tbc",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "convolution",
    "prelu",
    "addmm",
    "addmv",
    "addr",
    "matmul",
    "einsum",
    "mm",
    "mv",
    "linalg_vecdot",
    "linear",
    "addbmm",
    "baddbmm",
    "bmm",
    "chain_matmul",
    "linalg_multi_dot",
    "_thnn_fused_lstm_cell",
    "_thnn_fused_gru_cell",
    "lstm_cell",
    "gru_cell",
    "rnn_tanh_cell",
    "rnn_relu_cell",
    "_scaled_dot_product_flash_attention",
    "scaled_dot_product_attention",
    "cudnn_convolution",
    "cudnn_convolution_transpose",
];

/// CUDA `fp32` (`AT_FORALL_FP32`).
pub(crate) const CUDA_FP32: &[&str] = &[
    "acos",
    "asin",
    "cosh",
    "erfinv",
    "exp",
    "expm1",
    "log",
    "log10",
    "log2",
    "log1p",
    "reciprocal",
    "rsqrt",
    "sinh",
    "tan",
    "pow",
    "softplus",
    "layer_norm",
    "native_layer_norm",
    "group_norm",
    "frobenius_norm",
    "nuclear_norm",
    "cosine_similarity",
    "poisson_nll_loss",
    "cosine_embedding_loss",
    "nll_loss",
    "nll_loss2d",
    "hinge_embedding_loss",
    "kl_div",
    "l1_loss",
    "smooth_l1_loss",
    "huber_loss",
    "mse_loss",
    "margin_ranking_loss",
    "multilabel_margin_loss",
    "soft_margin_loss",
    "triplet_margin_loss",
    "multi_margin_loss",
    "binary_cross_entropy_with_logits",
    "dist",
    "pdist",
    "cdist",
    "renorm",
    "logsumexp",
    "upsample_nearest1d",
    "_upsample_nearest_exact1d",
    "upsample_nearest2d",
    "_upsample_nearest_exact2d",
    "upsample_nearest3d",
    "_upsample_nearest_exact3d",
    "upsample_linear1d",
    "upsample_bilinear2d",
    "_upsample_bilinear2d_aa",
    "upsample_trilinear3d",
    "upsample_bicubic2d",
    "_upsample_bicubic2d_aa",
];

/// CUDA `fp32_set_opt_dtype` and `fp32_append_dtype` (`AT_FORALL_FP32_SET_OPT_DTYPE`,
/// `norm`): run in f32 by passing `dtype=float32`, modelled here as [`CastRule::Float32`].
pub(crate) const CUDA_FP32_OUTPUT_DTYPE: &[&str] = &[
    "prod",
    "softmax",
    "log_softmax",
    "cumprod",
    "cumsum",
    "linalg_vector_norm",
    "linalg_matrix_norm",
    "sum",
    "norm",
];

/// CUDA `promote` (`AT_FORALL_PROMOTE`).
pub(crate) const CUDA_PROMOTE: &[&str] = &[
    "addcdiv",
    "addcmul",
    "atan2",
    "bilinear",
    "cross",
    "dot",
    "vdot",
    "grid_sampler",
    "index_put",
    "tensordot",
    "scatter_add",
];

/// CPU `lower_precision_fp`.
pub(crate) const CPU_LOWER_PRECISION: &[&str] = &[
    "conv1d",
    "conv2d",
    "conv3d",
    "bmm",
    "mm",
    "linalg_vecdot",
    "baddbmm",
    "addmm",
    "_addmm_activation",
    "addbmm",
    "linear",
    "_convolution",
    "matmul",
    "conv_tbc",
    "mkldnn_rnn_layer",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "prelu",
    "scaled_dot_product_attention",
    "_native_multi_head_attention",
];

/// CPU `fp32`.
pub(crate) const CPU_FP32: &[&str] = &[
    "avg_pool3d",
    "binary_cross_entropy",
    "grid_sampler",
    "polar",
    "prod",
    "quantile",
    "nanquantile",
    "stft",
    "cdist",
    "grid_sampler_2d",
    "_grid_sampler_2d_cpu_fallback",
    "grid_sampler_3d",
    "trace",
    "view_as_complex",
    "cholesky",
    "cholesky_inverse",
    "cholesky_solve",
    "inverse",
    "lu_solve",
    "orgqr",
    "ormqr",
    "pinverse",
    "max_pool3d",
    "max_unpool2d",
    "max_unpool3d",
    "adaptive_avg_pool3d",
    "reflection_pad1d",
    "reflection_pad2d",
    "replication_pad1d",
    "replication_pad2d",
    "replication_pad3d",
    "mse_loss",
    "cosine_embedding_loss",
    "nll_loss",
    "nll_loss2d",
    "hinge_embedding_loss",
    "poisson_nll_loss",
    "smooth_l1_loss",
    "cross_entropy_loss",
    "l1_loss",
    "huber_loss",
    "margin_ranking_loss",
    "soft_margin_loss",
    "triplet_margin_loss",
    "multi_margin_loss",
    "ctc_loss",
    "kl_div",
    "multilabel_margin_loss",
    "binary_cross_entropy_with_logits",
    "fft_fft",
    "fft_ifft",
    "fft_fft2",
    "fft_ifft2",
    "fft_fftn",
    "fft_ifftn",
    "fft_rfft",
    "fft_irfft",
    "fft_rfft2",
    "fft_irfft2",
    "fft_rfftn",
    "fft_irfftn",
    "fft_hfft",
    "fft_ihfft",
    "linalg_cond",
    "linalg_matrix_rank",
    "linalg_solve",
    "linalg_cholesky",
    "linalg_svdvals",
    "linalg_eigvals",
    "linalg_eigvalsh",
    "linalg_inv",
    "linalg_householder_product",
    "linalg_tensorinv",
    "linalg_tensorsolve",
    "fake_quantize_per_tensor_affine",
    "geqrf",
    "_lu_with_info",
    "qr",
    "svd",
    "triangular_solve",
    "fractional_max_pool2d",
    "fractional_max_pool3d",
    "adaptive_max_pool3d",
    "multilabel_margin_loss_forward",
    "linalg_qr",
    "linalg_cholesky_ex",
    "linalg_svd",
    "linalg_eig",
    "linalg_eigh",
    "linalg_lstsq",
    "linalg_inv_ex",
];

/// CPU `promote`.
pub(crate) const CPU_PROMOTE: &[&str] = &["stack", "cat", "index_copy"];

/// The ops of `amp_tensor` (every name its ops pass to `dispatch`), with
/// their rule on CUDA and on CPU. Where an op has a different ATen name, or
/// no autocast entry of its own, the note says how the rule follows from
/// PyTorch's lists. The crate docs show this table; a test keeps them equal.
pub(crate) const PROJECT_OPS: &[(&str, CastRule, CastRule)] = &[
    ("matmul", Lower, Lower),
    ("linear", Lower, Lower),
    ("bmm", Lower, Lower),
    ("baddbmm", Lower, Lower),
    ("scaled_dot_product_attention", Lower, Lower),
    ("conv1d", Lower, Lower),
    ("conv2d", Lower, Lower),
    // batch_norm and the poolings are in no list: they run in the input's
    // dtype (batch_norm with mixed-type f32 parameters); group_norm is CUDA fp32.
    ("batch_norm", Pass, Pass),
    ("group_norm", F32, Pass),
    ("max_pool2d", Pass, Pass),
    ("avg_pool2d", Pass, Pass),
    ("adaptive_avg_pool2d", Pass, Pass),
    ("add", Pass, Pass),
    ("sub", Pass, Pass),
    ("mul", Pass, Pass),
    ("div", Pass, Pass),
    ("maximum", Pass, Pass),
    ("minimum", Pass, Pass),
    ("eq", Pass, Pass),
    ("gt", Pass, Pass),
    ("lt", Pass, Pass),
    ("neg", Pass, Pass),
    ("exp", F32, Pass),
    ("log", F32, Pass),
    ("sqrt", Pass, Pass),
    ("rsqrt", F32, Pass),
    ("pow", F32, Pass),
    ("abs", Pass, Pass),
    ("sign", Pass, Pass),
    ("reciprocal", F32, Pass),
    ("relu", Pass, Pass),
    ("gelu", Pass, Pass),
    ("tanh", Pass, Pass),
    ("sigmoid", Pass, Pass),
    ("silu", Pass, Pass),
    ("erf", Pass, Pass),
    ("affine", Pass, Pass),
    ("to", Pass, Pass),
    ("where", Pass, Pass),
    ("masked_fill", Pass, Pass),
    ("sum", F32, Pass),
    ("mean", Pass, Pass),
    ("max", Pass, Pass),
    ("argmax", Pass, Pass),
    ("softmax", F32, Pass),
    ("log_softmax", F32, Pass),
    ("layer_norm", F32, Pass),
    ("gather", Pass, Pass),
    ("index_select", Pass, Pass),
    ("embedding", Pass, Pass),
    ("nll_loss", F32, F32),
    ("cross_entropy", F32, F32),
    ("mse_loss", F32, F32),
    ("dropout", Pass, Pass),
    ("cat", Pass, Promote),
    ("stack", Pass, Promote),
];

#[cfg(test)]
/// The ATen name whose list entry decides a project op's rule, where it differs
/// from the project's name; `None` for ops that PyTorch composes from others.
pub(crate) fn aten_name(op: &str) -> Option<&str> {
    match op {
        // F.cross_entropy calls aten::cross_entropy_loss: in the CPU fp32 list;
        // on CUDA it is composite (log_softmax: fp32, nll_loss: fp32), so f32 too.
        "cross_entropy" => Some("cross_entropy_loss"),
        // Tensor.to / x * a + b with Python scalars: not autocast ops.
        "affine" => None,
        other => Some(other),
    }
}

#[cfg(test)]
/// The rule PyTorch's lists give an ATen name on CUDA (`true`) or CPU.
pub(crate) fn listed_rule(cuda: bool, aten: &str) -> CastRule {
    let lists: [(&[&str], CastRule); 4] = if cuda {
        [
            (CUDA_LOWER_PRECISION, Lower),
            (CUDA_FP32, F32),
            (CUDA_FP32_OUTPUT_DTYPE, F32),
            (CUDA_PROMOTE, Promote),
        ]
    } else {
        [
            (CPU_LOWER_PRECISION, Lower),
            (CPU_FP32, F32),
            (CPU_PROMOTE, Promote),
            (&[], Pass),
        ]
    };
    lists
        .iter()
        .find(|(names, _)| names.contains(&aten))
        .map_or(Pass, |(_, rule)| *rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every project op's rule is the one PyTorch's lists give its ATen name,
    /// except CUDA cross_entropy, which PyTorch composes from two f32 ops.
    #[test]
    fn project_rules_follow_pytorch_lists() {
        for &(op, cuda, cpu) in PROJECT_OPS {
            match aten_name(op) {
                Some(aten) => {
                    let expect_cuda = if op == "cross_entropy" {
                        // log_softmax and nll_loss, the two halves, are both f32 on CUDA.
                        assert_eq!(listed_rule(true, "log_softmax"), F32);
                        assert_eq!(listed_rule(true, "nll_loss"), F32);
                        F32
                    } else {
                        listed_rule(true, aten)
                    };
                    assert_eq!(cuda, expect_cuda, "cuda rule of {op}");
                    assert_eq!(cpu, listed_rule(false, aten), "cpu rule of {op}");
                }
                None => assert_eq!((cuda, cpu), (Pass, Pass), "{op} has no ATen autocast entry"),
            }
        }
    }

    #[test]
    fn lists_have_no_duplicates_or_conflicts() {
        for (name, lists) in [
            (
                "cuda",
                vec![
                    CUDA_LOWER_PRECISION,
                    CUDA_FP32,
                    CUDA_FP32_OUTPUT_DTYPE,
                    CUDA_PROMOTE,
                ],
            ),
            ("cpu", vec![CPU_LOWER_PRECISION, CPU_FP32, CPU_PROMOTE]),
        ] {
            let mut all: Vec<&str> = lists.concat();
            let n = all.len();
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len(), n, "an op appears twice in the {name} lists");
        }
        let mut ops: Vec<&str> = PROJECT_OPS.iter().map(|p| p.0).collect();
        ops.sort_unstable();
        ops.dedup();
        assert_eq!(ops.len(), PROJECT_OPS.len());
    }
}
