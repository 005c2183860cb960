// Mixed-precision helpers: the fused multi-tensor non-finite check and
// unscale, and the fused AdamW update.

// One buffer of the fused unscale: dtype is AMP_DTYPE_F32, _F16, _BF16 or _F64.
struct UnscaleBuffer {
    u64 ptr;
    i64 len;
    i64 dtype;
};

// One block's share of the work: elements [start, start + len) of buffer `buffer`.
struct UnscaleChunk {
    i64 buffer;
    i64 start;
    i64 len;
};

// Multiplies every element by inv_scale in place (in f32 for f32 and narrower,
// rounded once to the buffer's dtype; f64 for f64) and counts the infs and NaNs
// among the stored results: counts[2 b] += infs, counts[2 b + 1] += NaNs of
// buffer b, so a value that overflows when unscaled is never written unseen.
extern "C" __global__ void non_finite_check_and_unscale(const UnscaleBuffer* __restrict__ buffers,
                                                        const UnscaleChunk* __restrict__ chunks, i64 num_chunks,
                                                        u64* __restrict__ counts, float inv_scale) {
    __shared__ u64 smem[32];
    for (i64 c = blockIdx.x; c < num_chunks; c += gridDim.x) {
        const UnscaleChunk chunk = chunks[c];
        const UnscaleBuffer buf = buffers[chunk.buffer];
        u64 infs = 0, nans = 0;
        const i64 end = chunk.start + chunk.len;
        if (buf.dtype == AMP_DTYPE_F32) {
            float* p = (float*)buf.ptr;
            for (i64 i = chunk.start + threadIdx.x; i < end; i += blockDim.x) {
                const float r = p[i] * inv_scale;
                p[i] = r;
                nans += (r != r);
                infs += isinf(r) ? 1 : 0;
            }
        } else if (buf.dtype == AMP_DTYPE_F16) {
            f16* p = (f16*)buf.ptr;
            for (i64 i = chunk.start + threadIdx.x; i < end; i += blockDim.x) {
                const f16 h = __float2half_rn(__half2float(p[i]) * inv_scale);
                p[i] = h;
                const float r = __half2float(h);
                nans += (r != r);
                infs += isinf(r) ? 1 : 0;
            }
        } else if (buf.dtype == AMP_DTYPE_BF16) {
            bf16* p = (bf16*)buf.ptr;
            for (i64 i = chunk.start + threadIdx.x; i < end; i += blockDim.x) {
                const bf16 h = __float2bfloat16_rn(__bfloat162float(p[i]) * inv_scale);
                p[i] = h;
                const float r = __bfloat162float(h);
                nans += (r != r);
                infs += isinf(r) ? 1 : 0;
            }
        } else {
            double* p = (double*)buf.ptr;
            for (i64 i = chunk.start + threadIdx.x; i < end; i += blockDim.x) {
                const double r = p[i] * (double)inv_scale;
                p[i] = r;
                nans += (r != r);
                infs += isinf(r) ? 1 : 0;
            }
        }
        infs = block_reduce(infs, SumOp(), (u64)0, smem);
        nans = block_reduce(nans, SumOp(), (u64)0, smem);
        if (threadIdx.x == 0 && (infs | nans) != 0) {
            atomicAdd(counts + 2 * chunk.buffer, infs);
            atomicAdd(counts + 2 * chunk.buffer + 1, nans);
        }
    }
}

// One AdamW update in place (torch.optim.AdamW, amsgrad off) of a parameter of
// any of f32/f16/bf16 with a gradient of any of them and f32 moments, in f32,
// every operation rounded on its own (no fused multiply-adds) so that the
// result is bit-identical with the CPU backend's. The coefficients are the
// step's, rounded to f32 on the host (amp_tensor's AdamWCoefficients).
template <typename P, typename G>
__device__ void adamw_impl(P* __restrict__ param, const G* __restrict__ grad, float* __restrict__ exp_avg,
                           float* __restrict__ exp_avg_sq, i64 n, float decay, float one_minus_beta1, float beta2,
                           float one_minus_beta2, float bias_correction2_sqrt, float eps, float step_size) {
    GRID_STRIDE_LOOP(i, n) {
        const float g = to_f32(grad[i]);
        const float m = __fadd_rn(exp_avg[i], __fmul_rn(__fsub_rn(g, exp_avg[i]), one_minus_beta1));
        const float v = __fadd_rn(__fmul_rn(exp_avg_sq[i], beta2), __fmul_rn(__fmul_rn(g, g), one_minus_beta2));
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), bias_correction2_sqrt), eps);
        const float p = __fsub_rn(__fmul_rn(to_f32(param[i]), decay), __fmul_rn(step_size, __fdiv_rn(m, denom)));
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        param[i] = from_f32<P>(p);
    }
}

#define AMP_ADAMW(NAME, P, G)                                                                               \
    extern "C" __global__ void adamw_##NAME(P* param, const G* grad, float* exp_avg, float* exp_avg_sq,       \
                                            i64 n, float decay, float one_minus_beta1, float beta2,           \
                                            float one_minus_beta2, float bias_correction2_sqrt, float eps,    \
                                            float step_size) {                                                \
        adamw_impl<P, G>(param, grad, exp_avg, exp_avg_sq, n, decay, one_minus_beta1, beta2, one_minus_beta2, \
                         bias_correction2_sqrt, eps, step_size);                                              \
    }

AMP_ADAMW(f32_f32, float, float)
AMP_ADAMW(f32_f16, float, f16)
AMP_ADAMW(f32_bf16, float, bf16)
AMP_ADAMW(f16_f32, f16, float)
AMP_ADAMW(f16_f16, f16, f16)
AMP_ADAMW(f16_bf16, f16, bf16)
AMP_ADAMW(bf16_f32, bf16, float)
AMP_ADAMW(bf16_f16, bf16, f16)
AMP_ADAMW(bf16_bf16, bf16, bf16)
