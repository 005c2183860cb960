// Elementwise unary and binary kernels. Op codes follow the order of
// amp_tensor::UnaryOp / BinaryOp (see src/ops.rs).

#define K_SQRT_2_OVER_PI 0.7978845608028654
#define K_SQRT_1_2 0.7071067811865476
#define K_INV_SQRT_2PI 0.3989422804014327

template <typename C>
__device__ __forceinline__ C unary_math(C x, int op, double p0, double p1) {
    const C zero = (C)0, one = (C)1, half = (C)0.5;
    switch (op) {
        case 0: return -x;
        case 1: return m_exp(x);
        case 2: return m_log(x);
        case 3: return m_sqrt(x);
        case 4: return one / m_sqrt(x);
        case 5: return m_abs(x);
        case 6: return (x > zero || amp_isnan(x)) ? x : zero;
        case 7: return half * x * m_erfc(-x * (C)K_SQRT_1_2);  // 1 + erf(t) = erfc(-t), without cancellation
        case 8: {
            const C k = (C)K_SQRT_2_OVER_PI;
            return half * x * (one + m_tanh(k * (x + (C)0.044715 * x * x * x)));
        }
        case 9: return m_tanh(x);
        case 10: return one / (one + m_exp(-x));
        case 11: return x / (one + m_exp(-x));
        case 12: return m_erf(x);
        case 13: return one / x;
        case 14: return x > zero ? one : (x < zero ? -one : x);
        case 15: return m_pow(x, (C)p0);
        case 17: return x;
        case 18: return x != zero ? one : zero;
        default: return x;
    }
}

// Affine (op 16) and Powf (op 15) are evaluated in f64 and rounded once, as the reference does.
template <typename T>
__device__ __forceinline__ T unary_apply(T v, int op, double p0, double p1) {
    if (op == 16) {
        return from_f64<T>(__dadd_rn(__dmul_rn(to_f64(v), p0), p1));
    }
    if (op == 15) {
        return from_f64<T>(pow(to_f64(v), p0));
    }
    return store_c<T>(unary_math(load_c(v), op, p0, p1));
}

template <typename C>
__device__ __forceinline__ C binary_math(C a, C b, int op) {
    const C zero = (C)0, one = (C)1, half = (C)0.5;
    switch (op) {
        case 0: return a + b;
        case 1: return a - b;
        case 2: return a * b;
        case 3: return a / b;
        case 4: return (amp_isnan(a) || amp_isnan(b)) ? (a + b) : (a > b ? a : b);
        case 5: return (amp_isnan(a) || amp_isnan(b)) ? (a + b) : (a < b ? a : b);
        case 6: return a == b ? one : zero;
        case 7: return a > b ? one : zero;
        case 8: return a < b ? one : zero;
        case 9: return b > zero ? a : zero;
        case 10: {
            const C cdf = half * m_erfc(-b * (C)K_SQRT_1_2);
            const C pdf = m_exp((C)-0.5 * b * b) * (C)K_INV_SQRT_2PI;
            return a * (cdf + b * pdf);
        }
        case 11: {
            const C k = (C)K_SQRT_2_OVER_PI;
            const C inner = k * (b + (C)0.044715 * b * b * b);
            const C t = m_tanh(inner);
            const C dinner = k * (one + (C)3.0 * (C)0.044715 * b * b);
            return a * (half * (one + t) + half * b * (one - t * t) * dinner);
        }
        case 12: return a * (one - b * b);
        case 13: return a * b * (one - b);
        case 14: {
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
