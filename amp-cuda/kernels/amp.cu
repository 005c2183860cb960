// Mixed-precision helpers: the fused multi-tensor non-finite check and
// unscale, and a fused AdamW step that skips itself on a device-side
// found-inf flag (no host round trip).

// One buffer of the fused unscale: dtype 0 = f32, 1 = f16, 2 = bf16, 3 = f64.
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
// buffer b. Sets *found_inf = 1 (when not null) if any result is not finite, so
// a value that overflows when unscaled is never written unseen.
extern "C" __global__ void non_finite_check_and_unscale(const UnscaleBuffer* __restrict__ buffers,
                                                        const UnscaleChunk* __restrict__ chunks, i64 num_chunks,
                                                        u64* __restrict__ counts, float* __restrict__ found_inf,
                                                        float inv_scale) {
    __shared__ u64 smem[32];
    for (i64 c = blockIdx.x; c < num_chunks; c += gridDim.x) {
        const UnscaleChunk chunk = chunks[c];
        const UnscaleBuffer buf = buffers[chunk.buffer];
        u64 infs = 0, nans = 0;
        const i64 end = chunk.start + chunk.len;
        if (buf.dtype == 0) {
            float* p = (float*)buf.ptr;
            for (i64 i = chunk.start + threadIdx.x; i < end; i += blockDim.x) {
                const float r = p[i] * inv_scale;
                p[i] = r;
                nans += (r != r);
                infs += isinf(r) ? 1 : 0;
            }
        } else if (buf.dtype == 1) {
            f16* p = (f16*)buf.ptr;
            for (i64 i = chunk.start + threadIdx.x; i < end; i += blockDim.x) {
                const f16 h = __float2half_rn(__half2float(p[i]) * inv_scale);
                p[i] = h;
                const float r = __half2float(h);
                nans += (r != r);
                infs += isinf(r) ? 1 : 0;
            }
        } else if (buf.dtype == 2) {
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
            if (found_inf) *found_inf = 1.0f;
        }
    }
}

// AdamW (decoupled weight decay, PyTorch's torch.optim.AdamW update) on f32
// master weights and f32 moments; `step` is a one-element f32 device counter
// of steps already taken. If `found_inf` (may be null) holds a non-zero value
// the kernel returns at once: parameters, moments and step are left as they were.
template <typename G>
__device__ void adamw_impl(float* __restrict__ param, const G* __restrict__ grad, float* __restrict__ exp_avg,
                           float* __restrict__ exp_avg_sq, i64 n, const float* __restrict__ step,
                           const float* __restrict__ found_inf, float lr, float beta1, float beta2, float eps,
                           float weight_decay, float grad_scale, int maximize) {
    if (found_inf && *found_inf != 0.0f) return;
    const float t = *step + 1.0f;
    const float bias_correction1 = 1.0f - powf(beta1, t);
    const float bias_correction2 = 1.0f - powf(beta2, t);
    const float step_size = lr / bias_correction1;
    const float bias_correction2_sqrt = sqrtf(bias_correction2);
    const float decay = 1.0f - lr * weight_decay;
    GRID_STRIDE_LOOP(i, n) {
        float g = to_f32(grad[i]) * grad_scale;
        if (maximize) g = -g;
        const float p = param[i] * decay;
        const float m = exp_avg[i] + (g - exp_avg[i]) * (1.0f - beta1);
        const float v = exp_avg_sq[i] * beta2 + (1.0f - beta2) * g * g;
        const float denom = sqrtf(v) / bias_correction2_sqrt + eps;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        param[i] = p - step_size * (m / denom);
    }
}

#define AMP_ADAMW(NAME, G)                                                                                  \
    extern "C" __global__ void adamw_step_##NAME(float* param, const G* grad, float* exp_avg,               \
                                                 float* exp_avg_sq, i64 n, const float* step,               \
                                                 const float* found_inf, float lr, float beta1, float beta2, \
                                                 float eps, float weight_decay, float grad_scale,             \
                                                 int maximize) {                                              \
        adamw_impl<G>(param, grad, exp_avg, exp_avg_sq, n, step, found_inf, lr, beta1, beta2, eps,          \
                      weight_decay, grad_scale, maximize);                                                   \
    }

AMP_ADAMW(f32, float)
AMP_ADAMW(f16, f16)
AMP_ADAMW(bf16, bf16)

// Advances the step counter unless found_inf (may be null) is set. Launch with one thread.
extern "C" __global__ void adamw_advance_step(float* step, const float* found_inf) {
    if (threadIdx.x == 0 && blockIdx.x == 0 && !(found_inf && *found_inf != 0.0f)) *step += 1.0f;
}
