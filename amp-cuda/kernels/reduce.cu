// Row-wise kernels over a contiguous [rows, n] buffer: reductions, argmax /
// argmin, softmax / log-softmax and layer norm. One block per row (grid-stride
// over rows); low-precision inputs accumulate in f32, f32 and f64 in f64.

// op: AMP_REDUCE_SUM, _MEAN, _MAX or _MIN (NaN propagates through max and min).
template <typename T>
__device__ void reduce_rows(const T* __restrict__ x, T* __restrict__ out, i64 rows, i64 n, int op) {
    typedef typename Acc<T>::type A;
    __shared__ A smem[32];
    for (i64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* r = x + row * n;
        A acc;
        if (op == AMP_REDUCE_SUM || op == AMP_REDUCE_MEAN) {
            acc = (A)0;
            for (i64 j = threadIdx.x; j < n; j += blockDim.x) acc += load_acc(r[j]);
            acc = block_reduce(acc, SumOp(), (A)0, smem);
        } else if (op == AMP_REDUCE_MAX) {
            bool any = false;
            acc = (A)0;
            for (i64 j = threadIdx.x; j < n; j += blockDim.x) {
                const A v = load_acc(r[j]);
                acc = any ? MaxOp()(acc, v) : v;
                any = true;
            }
            // Threads without elements contribute their first... nothing: use the row's first element.
            if (!any && n > 0) acc = load_acc(r[0]);
            acc = block_reduce(acc, MaxOp(), acc, smem);
        } else {
            bool any = false;
            acc = (A)0;
            for (i64 j = threadIdx.x; j < n; j += blockDim.x) {
                const A v = load_acc(r[j]);
                acc = any ? MinOp()(acc, v) : v;
                any = true;
            }
            if (!any && n > 0) acc = load_acc(r[0]);
            acc = block_reduce(acc, MinOp(), acc, smem);
        }
        if (threadIdx.x == 0) {
            if (op == AMP_REDUCE_MEAN) {
                // The mean of nothing is 0/0 = NaN (0 for integers).
                out[row] = n == 0 ? from_f64<T>(amp_nan()) : store_acc<T>(acc / (A)n);
            } else if ((op == AMP_REDUCE_MAX || op == AMP_REDUCE_MIN) && n == 0) {
                // Empty max / min: -inf / +inf, as the reference's fold.
                out[row] = from_f64<T>(op == AMP_REDUCE_MAX ? -amp_inf() : amp_inf());
            } else {
                out[row] = store_acc<T>(acc);
            }
        }
    }
}

// The first index of the max (better = greater) or min; a NaN counts as best.
struct ArgPair {
    double v;
    i64 i;  // -1: no element
};

__device__ __forceinline__ ArgPair arg_combine(ArgPair a, ArgPair b, bool greater) {
    if (a.i < 0) return b;
    if (b.i < 0) return a;
    const bool an = a.v != a.v, bn = b.v != b.v;
    if (an && bn) return a.i <= b.i ? a : b;
    if (an) return a;
    if (bn) return b;
    if (greater ? (a.v > b.v) : (a.v < b.v)) return a;
    if (greater ? (b.v > a.v) : (b.v < a.v)) return b;
    return a.i <= b.i ? a : b;
}

template <typename T>
__device__ void argreduce_rows(const T* __restrict__ x, i64* __restrict__ out, i64 rows, i64 n, int greater) {
    __shared__ double sv[32];
    __shared__ i64 si[32];
    const bool g = greater != 0;
    for (i64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* r = x + row * n;
        ArgPair best;
        best.v = 0.0;
        best.i = -1;
        for (i64 j = threadIdx.x; j < n; j += blockDim.x) {
            ArgPair c;
            c.v = to_f64(r[j]);
            c.i = j;
            best = arg_combine(best, c, g);
        }
        for (int o = 16; o > 0; o >>= 1) {
            ArgPair other;
            other.v = __shfl_down_sync(0xffffffffu, best.v, o);
            other.i = __shfl_down_sync(0xffffffffu, best.i, o);
            best = arg_combine(best, other, g);
        }
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
        __syncthreads();
        if (lane == 0) {
            sv[warp] = best.v;
            si[warp] = best.i;
        }
        __syncthreads();
        if (warp == 0) {
            best.v = lane < nwarps ? sv[lane] : 0.0;
            best.i = lane < nwarps ? si[lane] : -1;
            for (int o = 16; o > 0; o >>= 1) {
                ArgPair other;
                other.v = __shfl_down_sync(0xffffffffu, best.v, o);
                other.i = __shfl_down_sync(0xffffffffu, best.i, o);
                best = arg_combine(best, other, g);
            }
            if (lane == 0) out[row] = best.i < 0 ? 0 : best.i;
        }
    }
}


// Softmax (log = 0) or log-softmax (log = 1) of each row, as the reference and
// PyTorch: the row is shifted by its maximum as it is, so a row holding NaN or
// +inf, or all -inf (fully masked), is NaN throughout.
template <typename T>
__device__ void softmax_rows(const T* __restrict__ x, T* __restrict__ y, i64 rows, i64 n, int log) {
    typedef typename Acc<T>::type A;
    __shared__ A smem[32];
    for (i64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* r = x + row * n;
        T* o = y + row * n;
        A mx = -(A)amp_inf();
        for (i64 j = threadIdx.x; j < n; j += blockDim.x) {
            const A v = load_acc(r[j]);
            mx = (v > mx) ? v : mx;  // like f64::max: NaN is ignored
        }
        mx = block_reduce(mx, MaxIgnoreNanOp(), -(A)amp_inf(), smem);
        A sum = (A)0;
        for (i64 j = threadIdx.x; j < n; j += blockDim.x) sum += m_exp(load_acc(r[j]) - mx);
        sum = block_reduce(sum, SumOp(), (A)0, smem);
        const A lse = m_log(sum);
        for (i64 j = threadIdx.x; j < n; j += blockDim.x) {
            const A v = load_acc(r[j]) - mx;
            o[j] = store_acc<T>(log ? v - lse : m_exp(v) / sum);
        }
    }
}

// Layer norm over each row with optional weight and bias (length n, may be null);
// writes the normalised rows and f32 mean and rstd per row.
template <typename T>
__device__ void layer_norm_rows(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                                T* __restrict__ y, float* __restrict__ mean_out, float* __restrict__ rstd_out,
                                i64 rows, i64 n, double eps) {
    typedef typename Acc<T>::type A;
    __shared__ A smem[32];
    for (i64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* r = x + row * n;
        T* o = y + row * n;
        A s = (A)0;
        for (i64 j = threadIdx.x; j < n; j += blockDim.x) s += load_acc(r[j]);
        const A mean = block_reduce(s, SumOp(), (A)0, smem) / (A)n;
        A q = (A)0;
        for (i64 j = threadIdx.x; j < n; j += blockDim.x) {
            const A d = load_acc(r[j]) - mean;
            q += d * d;
        }
        const A var = block_reduce(q, SumOp(), (A)0, smem) / (A)n;
        const A rstd = (A)1 / m_sqrt(var + (A)eps);
        for (i64 j = threadIdx.x; j < n; j += blockDim.x) {
            A v = (load_acc(r[j]) - mean) * rstd;
            if (w) v *= load_acc(w[j]);
            if (b) v += load_acc(b[j]);
            o[j] = store_acc<T>(v);
        }
        if (threadIdx.x == 0) {
            mean_out[row] = (float)mean;
            rstd_out[row] = (float)rstd;
        }
    }
}

#define AMP_ROWS(NAME, T)                                                                                   \
    extern "C" __global__ void reduce_##NAME(const T* x, T* out, i64 rows, i64 n, int op) {                  \
        reduce_rows<T>(x, out, rows, n, op);                                                                 \
    }                                                                                                        \
    extern "C" __global__ void argreduce_##NAME(const T* x, i64* out, i64 rows, i64 n, int greater) {        \
        argreduce_rows<T>(x, out, rows, n, greater);                                                         \
    }

#define AMP_ROWS_FLOAT(NAME, T)                                                                             \
    extern "C" __global__ void softmax_##NAME(const T* x, T* y, i64 rows, i64 n, int log) {                  \
        softmax_rows<T>(x, y, rows, n, log);                                                                 \
    }                                                                                                        \
    extern "C" __global__ void layer_norm_##NAME(const T* x, const T* w, const T* b, T* y, float* mean,      \
                                                 float* rstd, i64 rows, i64 n, double eps) {                 \
        layer_norm_rows<T>(x, w, b, y, mean, rstd, rows, n, eps);                                            \
    }

AMP_ROWS(f32, float)
AMP_ROWS(f16, f16)
AMP_ROWS(bf16, bf16)
AMP_ROWS(f64, double)
AMP_ROWS(i64, i64)
AMP_ROWS_FLOAT(f32, float)
AMP_ROWS_FLOAT(f16, f16)
AMP_ROWS_FLOAT(bf16, bf16)
AMP_ROWS_FLOAT(f64, double)
