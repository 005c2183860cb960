// scatter_add: zeros of the destination shape into which `src` is added at
// `idx` along `dim`. Accumulates with atomics into an f32 (f64 for f64)
// scratch buffer that the caller then casts to the output dtype.
// `m.shape` is the index's shape, `m.strides0` the destination's contiguous
// strides. Out-of-range indices are skipped.

#define AMP_SCATTER(NAME, T, A)                                                                        \
    extern "C" __global__ void scatter_add_##NAME(const i64* __restrict__ idx, const T* __restrict__ src, \
                                                  A* __restrict__ acc, i64 n, StridedMeta m, i64 dim,     \
                                                  i64 dim_size) {                                        \
        GRID_STRIDE_LOOP(i, n) {                                                                         \
            const i64 s = idx[i];                                                                        \
            if (s < 0 || s >= dim_size) continue;                                                        \
            i64 flat = i, pos = 0;                                                                       \
            for (int d = (int)m.ndim - 1; d >= 0; --d) {                                                 \
                const i64 c = flat % m.shape[d];                                                         \
                flat /= m.shape[d];                                                                      \
                pos += (d == dim ? s : c) * m.strides0[d];                                               \
            }                                                                                            \
            atomicAdd(acc + pos, (A)to_f64(src[i]));                                                     \
        }                                                                                                \
    }

AMP_SCATTER(f32, float, float)
AMP_SCATTER(f16, f16, float)
AMP_SCATTER(bf16, bf16, float)
AMP_SCATTER(f64, double, double)
