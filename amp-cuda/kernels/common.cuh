// Shared prelude of every amp-cuda kernel source (prepended by the Rust side,
// so that NVRTC needs no include path for it).
//
// Conventions:
// - Storage types: float, double, __half, __nv_bfloat16, long long, unsigned char, bool.
// - Every kernel uses 64-bit element indices and a grid-stride loop, so any
//   element count works with any grid size.
// - Conversions round to nearest even, once: narrow formats go through f64 or
//   (when the input is f32 or narrower) f32, which is exact.
#include <cuda_fp16.h>
#include <cuda_bf16.h>

typedef __half f16;
typedef __nv_bfloat16 bf16;
typedef unsigned char u8;
typedef long long i64;
typedef unsigned long long u64;

#define AMP_MAX_DIMS 8

// Shape and up to three stride sets of views that are walked together in
// row-major logical order (strides in elements, already coalesced).
struct StridedMeta {
    i64 ndim;
    i64 shape[AMP_MAX_DIMS];
    i64 strides0[AMP_MAX_DIMS];
    i64 strides1[AMP_MAX_DIMS];
    i64 strides2[AMP_MAX_DIMS];
};

#define GRID_STRIDE_LOOP(i, n) \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)

// Storage offsets of logical element `flat` in up to three views.
__device__ __forceinline__ void strided_offsets(const StridedMeta& m, i64 flat, i64* o0, i64* o1, i64* o2) {
    i64 a = 0, b = 0, c = 0;
    for (int d = (int)m.ndim - 1; d >= 0; --d) {
        i64 size = m.shape[d];
        i64 idx = flat % size;
        flat /= size;
        a += idx * m.strides0[d];
        b += idx * m.strides1[d];
        c += idx * m.strides2[d];
    }
    *o0 = a;
    *o1 = b;
    *o2 = c;
}

__device__ __forceinline__ double amp_inf() { return __longlong_as_double(0x7ff0000000000000LL); }
__device__ __forceinline__ double amp_nan() { return __longlong_as_double(0x7ff8000000000000LL); }

// ---- NaN tests that also accept integer types -------------------------------
__device__ __forceinline__ bool amp_isnan(float x) { return x != x; }
__device__ __forceinline__ bool amp_isnan(double x) { return x != x; }
__device__ __forceinline__ bool amp_isnan(i64) { return false; }

// ---- widening loads ----------------------------------------------------------
__device__ __forceinline__ double to_f64(float x) { return (double)x; }
__device__ __forceinline__ double to_f64(double x) { return x; }
__device__ __forceinline__ double to_f64(f16 x) { return (double)__half2float(x); }
__device__ __forceinline__ double to_f64(bf16 x) { return (double)__bfloat162float(x); }
__device__ __forceinline__ double to_f64(i64 x) { return (double)x; }
__device__ __forceinline__ double to_f64(u8 x) { return (double)x; }
__device__ __forceinline__ double to_f64(bool x) { return x ? 1.0 : 0.0; }

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(f16 x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(bf16 x) { return __bfloat162float(x); }

// ---- rounding stores (one rounding, nearest even; integers truncate and saturate) ----
template <typename O> __device__ __forceinline__ O from_f64(double x);
template <> __device__ __forceinline__ float from_f64<float>(double x) { return __double2float_rn(x); }
template <> __device__ __forceinline__ double from_f64<double>(double x) { return x; }
template <> __device__ __forceinline__ f16 from_f64<f16>(double x) { return __double2half(x); }
template <> __device__ __forceinline__ bf16 from_f64<bf16>(double x) { return __double2bfloat16(x); }
template <> __device__ __forceinline__ i64 from_f64<i64>(double x) {
    if (x != x) return 0;
    if (x >= 9223372036854775807.0) return 9223372036854775807LL;
    if (x <= -9223372036854775808.0) return (-9223372036854775807LL - 1);
    return (i64)x;
}
template <> __device__ __forceinline__ u8 from_f64<u8>(double x) {
    if (x != x) return 0;
    if (x >= 255.0) return 255;
    if (x <= 0.0) return 0;
    return (u8)x;
}
template <> __device__ __forceinline__ bool from_f64<bool>(double x) { return x != 0.0; }

template <typename O> __device__ __forceinline__ O from_f32(float x) { return from_f64<O>((double)x); }
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ f16 from_f32<f16>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ bf16 from_f32<bf16>(float x) { return __float2bfloat16_rn(x); }

// ---- the type kernels compute in ----------------------------------------------
// Elementwise math: f32 and narrower compute in f32, everything else in f64.
template <typename T> struct Compute { typedef double type; };
template <> struct Compute<float> { typedef float type; };
template <> struct Compute<f16> { typedef float type; };
template <> struct Compute<bf16> { typedef float type; };

__device__ __forceinline__ float load_c(float x) { return x; }
__device__ __forceinline__ float load_c(f16 x) { return __half2float(x); }
__device__ __forceinline__ float load_c(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ double load_c(double x) { return x; }
__device__ __forceinline__ double load_c(i64 x) { return (double)x; }
__device__ __forceinline__ double load_c(u8 x) { return (double)x; }
__device__ __forceinline__ double load_c(bool x) { return x ? 1.0 : 0.0; }

template <typename T> __device__ __forceinline__ T store_c(float x) { return from_f32<T>(x); }
template <typename T> __device__ __forceinline__ T store_c(double x) { return from_f64<T>(x); }

// Reductions, softmax and layer norm: f16/bf16 accumulate in f32, f32 and f64
// in f64, integers in i64.
template <typename T> struct Acc { typedef double type; };
template <> struct Acc<f16> { typedef float type; };
template <> struct Acc<bf16> { typedef float type; };
template <> struct Acc<i64> { typedef i64 type; };

__device__ __forceinline__ float load_acc(f16 x) { return __half2float(x); }
__device__ __forceinline__ float load_acc(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ double load_acc(float x) { return (double)x; }
__device__ __forceinline__ double load_acc(double x) { return x; }
__device__ __forceinline__ i64 load_acc(i64 x) { return x; }

template <typename T> __device__ __forceinline__ T store_acc(float x) { return from_f32<T>(x); }
template <typename T> __device__ __forceinline__ T store_acc(double x) { return from_f64<T>(x); }
template <typename T> __device__ __forceinline__ T store_acc(i64 x) { return (T)x; }

// ---- math overloads for float and double ---------------------------------------
__device__ __forceinline__ float m_exp(float x) { return expf(x); }
__device__ __forceinline__ double m_exp(double x) { return exp(x); }
__device__ __forceinline__ float m_log(float x) { return logf(x); }
__device__ __forceinline__ double m_log(double x) { return log(x); }
__device__ __forceinline__ float m_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double m_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float m_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double m_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float m_erf(float x) { return erff(x); }
__device__ __forceinline__ double m_erf(double x) { return erf(x); }
__device__ __forceinline__ float m_erfc(float x) { return erfcf(x); }
__device__ __forceinline__ double m_erfc(double x) { return erfc(x); }
__device__ __forceinline__ float m_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double m_abs(double x) { return fabs(x); }
__device__ __forceinline__ float m_pow(float x, float p) { return powf(x, p); }
__device__ __forceinline__ double m_pow(double x, double p) { return pow(x, p); }

// ---- block-wide reductions (blockDim.x must be a multiple of 32, at most 1024) ----
template <typename V> __device__ __forceinline__ V shfl_down(V v, int offset) {
    return __shfl_down_sync(0xffffffffu, v, offset);
}

struct SumOp {
    template <typename V> __device__ __forceinline__ V operator()(V a, V b) const { return a + b; }
};
struct MaxOp {  // NaN propagates
    template <typename V> __device__ __forceinline__ V operator()(V a, V b) const {
        if (amp_isnan(a)) return a;
        if (amp_isnan(b)) return b;
        return a > b ? a : b;
    }
};
struct MinOp {  // NaN propagates
    template <typename V> __device__ __forceinline__ V operator()(V a, V b) const {
        if (amp_isnan(a)) return a;
        if (amp_isnan(b)) return b;
        return a < b ? a : b;
    }
};

// Reduces `v` over the block; every thread gets the result. `smem` holds 32 values.
template <typename V, typename F>
__device__ __forceinline__ V block_reduce(V v, F f, V identity, V* smem) {
    for (int o = 16; o > 0; o >>= 1) v = f(v, shfl_down(v, o));
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
    __syncthreads();  // smem may still be read from a previous call
    if (lane == 0) smem[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < nwarps ? smem[lane] : identity;
        for (int o = 16; o > 0; o >>= 1) v = f(v, shfl_down(v, o));
        if (lane == 0) smem[0] = v;
    }
    __syncthreads();
    return smem[0];
}
