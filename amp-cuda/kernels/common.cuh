// Shared prelude of every amp-cuda kernel source (prepended by the Rust side,
// so that NVRTC needs no include path for it).
//
// Conventions:
// - Storage types: float, double, __half, __nv_bfloat16, long long, unsigned char, bool.
// - Every kernel uses 64-bit element indices and a grid-stride loop, so any
//   element count works with any grid size.
// - Conversions round to nearest even, once: narrow formats go through f64 or
//   (when the input is f32 or narrower) f32, which is exact.
// - fp8 (OCP E4M3FN and E5M2) is stored as raw bytes (`f8e4m3`, `f8e5m2`) and
//   only cast and moved; the encoder and decoder below are plain bit
//   manipulation (no cuda_fp8.h), bit-identical with amp-dtype's.
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

// ---- fp8: OCP E4M3FN and E5M2 ------------------------------------------------
// AMP_FP8_BEGIN (this section is plain C++ apart from the CUDA intrinsics it calls)
struct f8e4m3 { unsigned char bits; };
struct f8e5m2 { unsigned char bits; };

// E4M3FN: bias 7, no infinities, S.1111.111 is NaN, max 448 (0x7E); overflow is NaN.
struct E4M3Format {
    static constexpr int MANTISSA = 3;
    static constexpr int BIAS = 7;
    static constexpr int MAX_EXP = 8;          // unbiased exponent of the top binade
    static constexpr unsigned MAX_CODE = 0x7E; // largest finite magnitude
    static constexpr unsigned NAN_CODE = 0x7F;
    static constexpr unsigned OVERFLOW_CODE = 0x7F;
    static constexpr bool HAS_INF = false;
};
// E5M2: bias 15, IEEE-like top binade (0x7C = inf, above = NaN), max 57344 (0x7B); overflow is inf.
struct E5M2Format {
    static constexpr int MANTISSA = 2;
    static constexpr int BIAS = 15;
    static constexpr int MAX_EXP = 15;
    static constexpr unsigned MAX_CODE = 0x7B;
    static constexpr unsigned NAN_CODE = 0x7E;
    static constexpr unsigned OVERFLOW_CODE = 0x7C;
    static constexpr bool HAS_INF = true;
};

// Rounds `x` to the format once, nearest even, sign kept (also for zero and NaN).
template <typename F> __device__ __forceinline__ unsigned char fp8_encode(double x) {
    const u64 bits = (u64)__double_as_longlong(x);
    const unsigned sign = (unsigned)(bits >> 63) << 7;
    const u64 mag = bits & 0x7fffffffffffffffULL;
    if (mag > 0x7ff0000000000000ULL) return (unsigned char)(sign | F::NAN_CODE);
    if (mag == 0x7ff0000000000000ULL) return (unsigned char)(sign | F::OVERFLOW_CODE);
    const int biased = (int)(mag >> 52);
    // Zero, or an f64 subnormal: far below half the smallest fp8 subnormal.
    if (biased == 0) return (unsigned char)sign;
    const int exp = biased - 1023;
    if (exp > F::MAX_EXP) return (unsigned char)(sign | F::OVERFLOW_CODE);
    // The quantum around x is 2^(e - MANTISSA), e clamped to the smallest normal exponent.
    const int min_exp = 1 - F::BIAS;
    const int e = exp > min_exp ? exp : min_exp;
    const int shift = 52 - F::MANTISSA + (e - exp);  // significand bits below the quantum
    if (shift > 63) return (unsigned char)sign;       // below a quarter of the smallest subnormal
    const u64 sig = (mag & 0x000fffffffffffffULL) | (1ULL << 52);
    const u64 lower = sig >> shift;
    const u64 rem = sig & ((1ULL << shift) - 1);
    const u64 half = 1ULL << (shift - 1);
    const u64 q = lower + ((rem > half || (rem == half && (lower & 1))) ? 1 : 0);
    // q quanta of 2^(e - MANTISSA): adding q to the field of exponent e - 1 carries into
    // the exponent when q reaches 2^(MANTISSA + 1), and gives subnormals when e is the minimum.
    const unsigned code = ((unsigned)(e + F::BIAS - 1) << F::MANTISSA) + (unsigned)q;
    return (unsigned char)(sign | (code > F::MAX_CODE ? F::OVERFLOW_CODE : code));
}

// The exact value of a bit pattern as f32 (NaN is the positive quiet NaN 0x7FC00000,
// as amp-dtype decodes it).
template <typename F> __device__ __forceinline__ float fp8_decode(unsigned char b) {
    const unsigned mag = b & 0x7Fu;
    const unsigned sign = (unsigned)(b & 0x80u) << 24;
    const unsigned exp = mag >> F::MANTISSA;
    const unsigned man = mag & ((1u << F::MANTISSA) - 1);
    if (F::HAS_INF ? mag > F::OVERFLOW_CODE : mag == F::NAN_CODE) return __uint_as_float(0x7fc00000u);
    unsigned out;
    if (F::HAS_INF && mag == F::OVERFLOW_CODE) {
        out = 0x7f800000u;
    } else if (exp == 0) {
        // man * 2^(1 - BIAS - MANTISSA): exact (a small integer times a normal power of two).
        const float unit = __uint_as_float((unsigned)(127 + 1 - F::BIAS - F::MANTISSA) << 23);
        out = __float_as_uint(__fmul_rn((float)man, unit));
    } else {
        out = ((exp - F::BIAS + 127) << 23) | (man << (23 - F::MANTISSA));
    }
    return __uint_as_float(sign | out);
}
// AMP_FP8_END

__device__ __forceinline__ double fp8_to_f64(float decoded) { return decoded != decoded ? amp_nan() : (double)decoded; }

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
__device__ __forceinline__ double to_f64(f8e4m3 x) { return fp8_to_f64(fp8_decode<E4M3Format>(x.bits)); }
__device__ __forceinline__ double to_f64(f8e5m2 x) { return fp8_to_f64(fp8_decode<E5M2Format>(x.bits)); }

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
template <> __device__ __forceinline__ f8e4m3 from_f64<f8e4m3>(double x) {
    f8e4m3 r;
    r.bits = fp8_encode<E4M3Format>(x);
    return r;
}
template <> __device__ __forceinline__ f8e5m2 from_f64<f8e5m2>(double x) {
    f8e5m2 r;
    r.bits = fp8_encode<E5M2Format>(x);
    return r;
}

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

// Maximum that ignores NaN, as f64::max.
struct MaxIgnoreNanOp {
    template <typename V> __device__ __forceinline__ V operator()(V a, V b) const {
        if (amp_isnan(a)) return b;
        if (amp_isnan(b)) return a;
        return a > b ? a : b;
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
