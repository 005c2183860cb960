// Elementwise unary and binary kernels. The op codes (AMP_UNARY_*, AMP_BINARY_*)
// are #defined from the Rust side's one table (src/codes.rs).

#define K_SQRT_2_OVER_PI 0.7978845608028654
#define K_SQRT_1_2 0.7071067811865476
#define K_INV_SQRT_2PI 0.3989422804014327

template <typename C>
__device__ __forceinline__ C unary_math(C x, int op, double p0, double p1) {
    const C zero = (C)0, one = (C)1, half = (C)0.5;
    switch (op) {
        case AMP_UNARY_NEG: return -x;
        case AMP_UNARY_EXP: return m_exp(x);
        case AMP_UNARY_LOG: return m_log(x);
        case AMP_UNARY_SQRT: return m_sqrt(x);
        case AMP_UNARY_RSQRT: return one / m_sqrt(x);
        case AMP_UNARY_ABS: return m_abs(x);
        case AMP_UNARY_RELU: return (x > zero || amp_isnan(x)) ? x : zero;
        case AMP_UNARY_GELU_ERF: return half * x * m_erfc(-x * (C)K_SQRT_1_2);  // 1 + erf(t) = erfc(-t), without cancellation
        case AMP_UNARY_GELU_TANH: {
            const C k = (C)K_SQRT_2_OVER_PI;
            return half * x * (one + m_tanh(k * (x + (C)0.044715 * x * x * x)));
        }
        case AMP_UNARY_TANH: return m_tanh(x);
        case AMP_UNARY_SIGMOID: return one / (one + m_exp(-x));
        case AMP_UNARY_SILU: return x / (one + m_exp(-x));
        case AMP_UNARY_ERF: return m_erf(x);
        case AMP_UNARY_RECIP: return one / x;
        case AMP_UNARY_SIGN: return x > zero ? one : (x < zero ? -one : x);
        case AMP_UNARY_POWF: return m_pow(x, (C)p0);
        case AMP_UNARY_IDENTITY: return x;
        case AMP_UNARY_NONZERO: return x != zero ? one : zero;
        default: return x;
    }
}

// Affine and Powf are evaluated in f64 and rounded once, as the reference does.
template <typename T>
__device__ __forceinline__ T unary_apply(T v, int op, double p0, double p1) {
    if (op == AMP_UNARY_AFFINE) {
        return from_f64<T>(__dadd_rn(__dmul_rn(to_f64(v), p0), p1));
    }
    if (op == AMP_UNARY_POWF) {
        return from_f64<T>(pow(to_f64(v), p0));
    }
    return store_c<T>(unary_math(load_c(v), op, p0, p1));
}

template <typename C>
__device__ __forceinline__ C binary_math(C a, C b, int op) {
    const C zero = (C)0, one = (C)1, half = (C)0.5;
    switch (op) {
        case AMP_BINARY_ADD: return a + b;
        case AMP_BINARY_SUB: return a - b;
        case AMP_BINARY_MUL: return a * b;
        case AMP_BINARY_DIV: return a / b;
        case AMP_BINARY_MAXIMUM: return (amp_isnan(a) || amp_isnan(b)) ? (a + b) : (a > b ? a : b);
        case AMP_BINARY_MINIMUM: return (amp_isnan(a) || amp_isnan(b)) ? (a + b) : (a < b ? a : b);
        case AMP_BINARY_EQ: return a == b ? one : zero;
        case AMP_BINARY_GT: return a > b ? one : zero;
        case AMP_BINARY_LT: return a < b ? one : zero;
        case AMP_BINARY_RELU_BACKWARD: return b > zero ? a : zero;
        case AMP_BINARY_GELU_ERF_BACKWARD: {
            const C cdf = half * m_erfc(-b * (C)K_SQRT_1_2);
            const C pdf = m_exp((C)-0.5 * b * b) * (C)K_INV_SQRT_2PI;
            return a * (cdf + b * pdf);
        }
        case AMP_BINARY_GELU_TANH_BACKWARD: {
            const C k = (C)K_SQRT_2_OVER_PI;
            const C inner = k * (b + (C)0.044715 * b * b * b);
            const C t = m_tanh(inner);
            const C dinner = k * (one + (C)3.0 * (C)0.044715 * b * b);
            return a * (half * (one + t) + half * b * (one - t * t) * dinner);
        }
        case AMP_BINARY_TANH_BACKWARD: return a * (one - b * b);
        case AMP_BINARY_SIGMOID_BACKWARD: return a * b * (one - b);
        case AMP_BINARY_SILU_BACKWARD: {
            const C s = one / (one + m_exp(-b));
            return a * (s * (one + b * (one - s)));
        }
        default: return a;
    }
}

template <typename T>
__device__ __forceinline__ T binary_apply(T a, T b, int op) {
    return store_c<T>(binary_math(load_c(a), load_c(b), op));
}

#define AMP_ELEMENTWISE(NAME, T)                                                                        \
    extern "C" __global__ void unary_##NAME(const T* __restrict__ x, T* __restrict__ y, i64 n, int op,   \
                                            double p0, double p1) {                                      \
        GRID_STRIDE_LOOP(i, n) { y[i] = unary_apply<T>(x[i], op, p0, p1); }                             \
    }                                                                                                    \
    extern "C" __global__ void binary_contig_##NAME(const T* __restrict__ a, const T* __restrict__ b,    \
                                                    T* __restrict__ y, i64 n, int op) {                  \
        GRID_STRIDE_LOOP(i, n) { y[i] = binary_apply<T>(a[i], b[i], op); }                              \
    }                                                                                                    \
    extern "C" __global__ void binary_strided_##NAME(const T* __restrict__ a, const T* __restrict__ b,   \
                                                     T* __restrict__ y, i64 n, int op, StridedMeta m) {  \
        GRID_STRIDE_LOOP(i, n) {                                                                         \
            i64 oa, ob, unused;                                                                          \
            strided_offsets(m, i, &oa, &ob, &unused);                                                    \
            y[i] = binary_apply<T>(a[oa], b[ob], op);                                                    \
        }                                                                                                \
    }

AMP_ELEMENTWISE(f32, float)
AMP_ELEMENTWISE(f16, f16)
AMP_ELEMENTWISE(bf16, bf16)
AMP_ELEMENTWISE(f64, double)
AMP_ELEMENTWISE(i64, i64)
AMP_ELEMENTWISE(u8, u8)
