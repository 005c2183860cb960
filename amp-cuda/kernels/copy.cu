// Data movement: dtype casts, strided copies, fills, where, index_select and
// gather. Kernels that only move bits are instantiated per element size
// (b1, b2, b4, b8) rather than per dtype; fp8 uses the b1 ones.

template <typename I, typename O> struct Convert {
    static __device__ __forceinline__ O apply(I x) { return from_f64<O>(to_f64(x)); }
};
// f32 and narrower floats to f32 and narrower: through f32, which is exact.
#define AMP_CONVERT_VIA_F32(I, O)                                                      \
    template <> struct Convert<I, O> {                                                 \
        static __device__ __forceinline__ O apply(I x) { return from_f32<O>(to_f32(x)); } \
    };
AMP_CONVERT_VIA_F32(float, f16)
AMP_CONVERT_VIA_F32(float, bf16)
AMP_CONVERT_VIA_F32(f16, float)
AMP_CONVERT_VIA_F32(bf16, float)
AMP_CONVERT_VIA_F32(f16, bf16)
AMP_CONVERT_VIA_F32(bf16, f16)

// fp8 targets: one rounding from the exactly widened value. A NaN keeps its
// sign (amp-dtype encodes -NaN as S=1), so f32/f16/bf16 NaNs are widened by
// their bits rather than by a hardware conversion that may canonicalise them.
__device__ __forceinline__ double signed_nan_f64(unsigned negative) {
    return __longlong_as_double((i64)(negative ? 0xfff8000000000000ULL : 0x7ff8000000000000ULL));
}
__device__ __forceinline__ double widen_keep_nan_sign(float x) {
    const unsigned b = __float_as_uint(x);
    return (b & 0x7fffffffu) > 0x7f800000u ? signed_nan_f64(b >> 31) : (double)x;
}
__device__ __forceinline__ double widen_keep_nan_sign(f16 x) {
    const unsigned b = __half_as_ushort(x);
    return (b & 0x7fffu) > 0x7c00u ? signed_nan_f64(b >> 15) : (double)__half2float(x);
}
__device__ __forceinline__ double widen_keep_nan_sign(bf16 x) {
    const unsigned b = __bfloat16_as_ushort(x);
    return (b & 0x7fffu) > 0x7f80u ? signed_nan_f64(b >> 15) : (double)__bfloat162float(x);
}
#define AMP_CONVERT_TO_FP8(I, O)                                                                  \
    template <> struct Convert<I, O> {                                                            \
        static __device__ __forceinline__ O apply(I x) { return from_f64<O>(widen_keep_nan_sign(x)); } \
    };
AMP_CONVERT_TO_FP8(float, f8e4m3)
AMP_CONVERT_TO_FP8(float, f8e5m2)
AMP_CONVERT_TO_FP8(f16, f8e4m3)
AMP_CONVERT_TO_FP8(f16, f8e5m2)
AMP_CONVERT_TO_FP8(bf16, f8e4m3)
AMP_CONVERT_TO_FP8(bf16, f8e5m2)

// fp8 sources: decoding is exact; a NaN becomes the format's canonical positive
// NaN, as amp-dtype's decoder (f64::NAN) followed by its encoders gives.
template <typename O> __device__ __forceinline__ O from_fp8_value(float v) { return from_f64<O>(fp8_to_f64(v)); }
template <> __device__ __forceinline__ float from_fp8_value<float>(float v) { return v; }
template <> __device__ __forceinline__ f16 from_fp8_value<f16>(float v) {
    return v != v ? __ushort_as_half((unsigned short)0x7E00u) : __float2half_rn(v);
}
template <> __device__ __forceinline__ bf16 from_fp8_value<bf16>(float v) {
    return v != v ? __ushort_as_bfloat16((unsigned short)0x7FC0u) : __float2bfloat16_rn(v);
}
#define AMP_CONVERT_FROM_FP8(I, FMT, O)                                                                 \
    template <> struct Convert<I, O> {                                                                  \
        static __device__ __forceinline__ O apply(I x) { return from_fp8_value<O>(fp8_decode<FMT>(x.bits)); } \
    };
#define AMP_CONVERT_FROM_FP8_ALL(I, FMT)  \
    AMP_CONVERT_FROM_FP8(I, FMT, float)   \
    AMP_CONVERT_FROM_FP8(I, FMT, double)  \
    AMP_CONVERT_FROM_FP8(I, FMT, f16)     \
    AMP_CONVERT_FROM_FP8(I, FMT, bf16)    \
    AMP_CONVERT_FROM_FP8(I, FMT, i64)     \
    AMP_CONVERT_FROM_FP8(I, FMT, u8)      \
    AMP_CONVERT_FROM_FP8(I, FMT, bool)    \
    AMP_CONVERT_FROM_FP8(I, FMT, f8e4m3)  \
    AMP_CONVERT_FROM_FP8(I, FMT, f8e5m2)
AMP_CONVERT_FROM_FP8_ALL(f8e4m3, E4M3Format)
AMP_CONVERT_FROM_FP8_ALL(f8e5m2, E5M2Format)

#define AMP_CAST(IN, I, ON, O)                                                                          \
    extern "C" __global__ void cast_##IN##_##ON(const I* __restrict__ x, O* __restrict__ y, i64 n) {   \
        GRID_STRIDE_LOOP(i, n) { y[i] = Convert<I, O>::apply(x[i]); }                                  \
    }

#define AMP_CAST_FROM(IN, I)         \
    AMP_CAST(IN, I, f32, float)      \
    AMP_CAST(IN, I, f16, f16)        \
    AMP_CAST(IN, I, bf16, bf16)      \
    AMP_CAST(IN, I, f64, double)     \
    AMP_CAST(IN, I, i64, i64)        \
    AMP_CAST(IN, I, u8, u8)          \
    AMP_CAST(IN, I, bool, bool)      \
    AMP_CAST(IN, I, f8e4m3, f8e4m3)  \
    AMP_CAST(IN, I, f8e5m2, f8e5m2)

AMP_CAST_FROM(f32, float)
AMP_CAST_FROM(f16, f16)
AMP_CAST_FROM(bf16, bf16)
AMP_CAST_FROM(f64, double)
AMP_CAST_FROM(i64, i64)
AMP_CAST_FROM(u8, u8)
AMP_CAST_FROM(bool, bool)
AMP_CAST_FROM(f8e4m3, f8e4m3)
AMP_CAST_FROM(f8e5m2, f8e5m2)

#define AMP_MOVE(B, T)                                                                                  \
    /* dst[strides1 view] = src[strides0 view], n logical elements */                                   \
    extern "C" __global__ void copy_strided_##B(const T* __restrict__ src, T* __restrict__ dst, i64 n, \
                                                StridedMeta m) {                                        \
        GRID_STRIDE_LOOP(i, n) {                                                                        \
            i64 os, od, unused;                                                                         \
            strided_offsets(m, i, &os, &od, &unused);                                                   \
            dst[od] = src[os];                                                                          \
        }                                                                                               \
    }                                                                                                   \
    extern "C" __global__ void fill_##B(T* __restrict__ dst, i64 n, u64 pattern) {                      \
        const T v = (T)pattern;                                                                         \
        GRID_STRIDE_LOOP(i, n) { dst[i] = v; }                                                          \
    }                                                                                                   \
    /* out = cond ? a : b, with cond/a/b read through strides0/1/2 */                                   \
    extern "C" __global__ void where_##B(const bool* __restrict__ cond, const T* __restrict__ a,        \
                                         const T* __restrict__ b, T* __restrict__ out, i64 n,           \
                                         StridedMeta m) {                                               \
        GRID_STRIDE_LOOP(i, n) {                                                                        \
            i64 oc, oa, ob;                                                                             \
            strided_offsets(m, i, &oc, &oa, &ob);                                                       \
            out[i] = cond[oc] ? a[oa] : b[ob];                                                          \
        }                                                                                               \
    }                                                                                                   \
    /* src is contiguous [outer, size, inner]; out is [outer, m, inner]. Out-of-range indices give 0. */ \
    extern "C" __global__ void index_select_##B(const T* __restrict__ src, const i64* __restrict__ idx,  \
                                                T* __restrict__ out, i64 outer, i64 size, i64 inner,    \
                                                i64 m) {                                                \
        const i64 n = outer * m * inner;                                                                \
        GRID_STRIDE_LOOP(i, n) {                                                                        \
            const i64 k = i % inner;                                                                    \
            const i64 j = (i / inner) % m;                                                              \
            const i64 o = i / (inner * m);                                                              \
            const i64 s = idx[j];                                                                       \
            out[i] = (s >= 0 && s < size) ? src[(o * size + s) * inner + k] : (T)0;                     \
        }                                                                                               \
    }                                                                                                   \
    /* out (index's shape, contiguous) = src (contiguous, strides in strides0) with coordinate `dim` */ \
    /* replaced by the index value. Out-of-range indices give 0. */                                     \
    extern "C" __global__ void gather_##B(const T* __restrict__ src, const i64* __restrict__ idx,        \
                                          T* __restrict__ out, i64 n, StridedMeta m, i64 dim,           \
                                          i64 dim_size) {                                               \
        GRID_STRIDE_LOOP(i, n) {                                                                        \
            i64 flat = i, pos = 0;                                                                      \
            const i64 s = idx[i];                                                                       \
            for (int d = (int)m.ndim - 1; d >= 0; --d) {                                                \
                const i64 c = flat % m.shape[d];                                                        \
                flat /= m.shape[d];                                                                     \
                pos += (d == dim ? s : c) * m.strides0[d];                                              \
            }                                                                                           \
            out[i] = (s >= 0 && s < dim_size) ? src[pos] : (T)0;                                        \
        }                                                                                               \
    }

AMP_MOVE(b1, u8)
AMP_MOVE(b2, unsigned short)
AMP_MOVE(b4, unsigned int)
AMP_MOVE(b8, u64)
