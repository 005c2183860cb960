// Row kernels for rows too long for one block: few rows of many elements (a
// sum over a whole tensor, a softmax over a long sequence) would otherwise run
// on as many SMs as there are rows. Each row is cut into `parts` chunks,
// chunk p covering [p * len, min(n, (p + 1) * len)) with len = ceil(n / parts);
// one block reduces each chunk into a partial, a second kernel combines a
// row's partials, and (softmax, layer norm) a third writes the outputs in a
// grid-stride pass over every element. Accumulation as in reduce.cu: f16/bf16
// in f32, f32 and f64 in f64; the results match the one-block kernels' up to
// the order of the additions.

__device__ __forceinline__ void chunk_range(i64 n, i64 parts, i64 p, i64* lo, i64* hi) {
    const i64 len = (n + parts - 1) / parts;
    i64 a = p * len;
    if (a > n) a = n;
    i64 b = a + len;
    if (b > n) b = n;
    *lo = a;
    *hi = b;
}

// op: AMP_REDUCE_SUM, _MEAN, _MAX or _MIN. partials[row * parts + p].
template <typename T>
__device__ void split_reduce_partial(const T* __restrict__ x, typename Acc<T>::type* __restrict__ partials,
                                     i64 rows, i64 n, i64 parts, int op) {
    typedef typename Acc<T>::type A;
    __shared__ A smem[32];
    const A low = -(A)amp_inf(), high = (A)amp_inf();
    for (i64 b = blockIdx.x; b < rows * parts; b += gridDim.x) {
        const i64 row = b / parts;
        i64 lo, hi;
        chunk_range(n, parts, b % parts, &lo, &hi);
        const T* r = x + row * n;
        A acc;
        if (op == AMP_REDUCE_SUM || op == AMP_REDUCE_MEAN) {
            acc = (A)0;
            for (i64 j = lo + threadIdx.x; j < hi; j += blockDim.x) acc += load_acc(r[j]);
            acc = block_reduce(acc, SumOp(), (A)0, smem);
        } else if (op == AMP_REDUCE_MAX) {
            acc = low;
            for (i64 j = lo + threadIdx.x; j < hi; j += blockDim.x) acc = MaxOp()(acc, load_acc(r[j]));
            acc = block_reduce(acc, MaxOp(), low, smem);
        } else {
            acc = high;
            for (i64 j = lo + threadIdx.x; j < hi; j += blockDim.x) acc = MinOp()(acc, load_acc(r[j]));
            acc = block_reduce(acc, MinOp(), high, smem);
        }
        if (threadIdx.x == 0) partials[b] = acc;
    }
}

// Combines each row's partials; one block per row.
template <typename T>
__device__ void split_reduce_finish(const typename Acc<T>::type* __restrict__ partials, T* __restrict__ out,
                                    i64 rows, i64 n, i64 parts, int op) {
    typedef typename Acc<T>::type A;
    __shared__ A smem[32];
    const A low = -(A)amp_inf(), high = (A)amp_inf();
    for (i64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const A* p = partials + row * parts;
        A acc;
        if (op == AMP_REDUCE_SUM || op == AMP_REDUCE_MEAN) {
            acc = (A)0;
            for (i64 j = threadIdx.x; j < parts; j += blockDim.x) acc += p[j];
            acc = block_reduce(acc, SumOp(), (A)0, smem);
            if (op == AMP_REDUCE_MEAN) acc = acc / (A)n;
        } else if (op == AMP_REDUCE_MAX) {
            acc = low;
            for (i64 j = threadIdx.x; j < parts; j += blockDim.x) acc = MaxOp()(acc, p[j]);
            acc = block_reduce(acc, MaxOp(), low, smem);
        } else {
            acc = high;
            for (i64 j = threadIdx.x; j < parts; j += blockDim.x) acc = MinOp()(acc, p[j]);
            acc = block_reduce(acc, MinOp(), high, smem);
        }
        if (threadIdx.x == 0) out[row] = store_acc<T>(acc);
    }
}

// Softmax, stage 1: per chunk, its maximum m (NaN ignored, as the one-block
// kernel) and s = sum of exp(x - m). A chunk that is all -inf adds 0; a NaN
// always reaches s, so a row holding one ends NaN throughout (PyTorch).
// partials[2 b] = m, partials[2 b + 1] = s.
template <typename T>
__device__ void split_softmax_partial(const T* __restrict__ x, typename Acc<T>::type* __restrict__ partials,
                                      i64 rows, i64 n, i64 parts) {
    typedef typename Acc<T>::type A;
    __shared__ A smem[32];
    const A low = -(A)amp_inf();
    for (i64 b = blockIdx.x; b < rows * parts; b += gridDim.x) {
        const i64 row = b / parts;
        i64 lo, hi;
        chunk_range(n, parts, b % parts, &lo, &hi);
        const T* r = x + row * n;
        A mx = low;
        for (i64 j = lo + threadIdx.x; j < hi; j += blockDim.x) mx = MaxIgnoreNanOp()(mx, load_acc(r[j]));
        mx = block_reduce(mx, MaxIgnoreNanOp(), low, smem);
        A s = (A)0;
        for (i64 j = lo + threadIdx.x; j < hi; j += blockDim.x) {
            const A v = load_acc(r[j]);
            const A d = mx == low ? (v != v ? v : low) : v - mx;
            s += m_exp(d);
        }
        s = block_reduce(s, SumOp(), (A)0, smem);
        if (threadIdx.x == 0) {
            partials[2 * b] = mx;
            partials[2 * b + 1] = s;
        }
    }
}

// Softmax, stage 2: per row, M = max of the chunks' maxima and
// S = sum of s_i * exp(m_i - M); stats[2 row] = M, stats[2 row + 1] = S.
template <typename T>
__device__ void split_softmax_stats(const typename Acc<T>::type* __restrict__ partials,
                                    typename Acc<T>::type* __restrict__ stats, i64 rows, i64 parts) {
    typedef typename Acc<T>::type A;
    __shared__ A smem[32];
    const A low = -(A)amp_inf();
    for (i64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const A* p = partials + 2 * row * parts;
        A mx = low;
        for (i64 j = threadIdx.x; j < parts; j += blockDim.x) mx = MaxIgnoreNanOp()(mx, p[2 * j]);
        mx = block_reduce(mx, MaxIgnoreNanOp(), low, smem);
        A s = (A)0;
        for (i64 j = threadIdx.x; j < parts; j += blockDim.x) {
            const A m = p[2 * j], c = p[2 * j + 1];
            s += m == low ? c : c * m_exp(m - mx);
        }
        s = block_reduce(s, SumOp(), (A)0, smem);
        if (threadIdx.x == 0) {
            stats[2 * row] = mx;
            stats[2 * row + 1] = s;
        }
    }
}

// Softmax, stage 3: every element, exp(x - M) / S or (x - M) - log S.
template <typename T>
__device__ void split_softmax_apply(const T* __restrict__ x, T* __restrict__ y,
                                    const typename Acc<T>::type* __restrict__ stats, i64 rows, i64 n, int log) {
    typedef typename Acc<T>::type A;
    GRID_STRIDE_LOOP(i, rows * n) {
        const i64 row = i / n;
        const A v = load_acc(x[i]) - stats[2 * row];
        const A s = stats[2 * row + 1];
        y[i] = store_acc<T>(log ? v - m_log(s) : m_exp(v) / s);
    }
}

// Layer norm, stages 1 and 3: per chunk, the sum of x (phase 0) or of
// (x - mean)^2 with the row's mean from stats[2 row] (phase 1).
template <typename T>
__device__ void split_layer_norm_partial(const T* __restrict__ x, const typename Acc<T>::type* __restrict__ stats,
                                         typename Acc<T>::type* __restrict__ partials, i64 rows, i64 n, i64 parts,
                                         int phase) {
    typedef typename Acc<T>::type A;
    __shared__ A smem[32];
    for (i64 b = blockIdx.x; b < rows * parts; b += gridDim.x) {
        const i64 row = b / parts;
        i64 lo, hi;
        chunk_range(n, parts, b % parts, &lo, &hi);
        const T* r = x + row * n;
        const A mean = phase == 0 ? (A)0 : stats[2 * row];
        A acc = (A)0;
        for (i64 j = lo + threadIdx.x; j < hi; j += blockDim.x) {
            const A v = load_acc(r[j]);
            if (phase == 0) {
                acc += v;
            } else {
                const A d = v - mean;
                acc += d * d;
            }
        }
        acc = block_reduce(acc, SumOp(), (A)0, smem);
        if (threadIdx.x == 0) partials[b] = acc;
    }
}

// Layer norm, stages 2 and 4: per row, the mean (phase 0: stats[2 row]) or
// the reciprocal standard deviation (phase 1: stats[2 row + 1], and the f32
// mean and rstd outputs).
template <typename T>
__device__ void split_layer_norm_stats(const typename Acc<T>::type* __restrict__ partials,
                                       typename Acc<T>::type* __restrict__ stats, float* __restrict__ mean_out,
                                       float* __restrict__ rstd_out, i64 rows, i64 n, i64 parts, int phase,
                                       double eps) {
    typedef typename Acc<T>::type A;
    __shared__ A smem[32];
    for (i64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const A* p = partials + row * parts;
        A acc = (A)0;
        for (i64 j = threadIdx.x; j < parts; j += blockDim.x) acc += p[j];
        acc = block_reduce(acc, SumOp(), (A)0, smem);
        if (threadIdx.x == 0) {
            if (phase == 0) {
                stats[2 * row] = acc / (A)n;
            } else {
                const A rstd = (A)1 / m_sqrt(acc / (A)n + (A)eps);
                stats[2 * row + 1] = rstd;
                mean_out[row] = (float)stats[2 * row];
                rstd_out[row] = (float)rstd;
            }
        }
    }
}

// Layer norm, stage 5: every element, (x - mean) * rstd * w + b.
template <typename T>
__device__ void split_layer_norm_apply(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                                       T* __restrict__ y, const typename Acc<T>::type* __restrict__ stats, i64 rows,
                                       i64 n) {
    typedef typename Acc<T>::type A;
    GRID_STRIDE_LOOP(i, rows * n) {
        const i64 row = i / n, j = i % n;
        A v = (load_acc(x[i]) - stats[2 * row]) * stats[2 * row + 1];
        if (w) v *= load_acc(w[j]);
        if (b) v += load_acc(b[j]);
        y[i] = store_acc<T>(v);
    }
}

#define AMP_SPLIT(NAME, T)                                                                                   \
    typedef Acc<T>::type acc_##NAME;                                                                         \
    extern "C" __global__ void split_reduce_partial_##NAME(const T* x, acc_##NAME* partials, i64 rows, i64 n, \
                                                           i64 parts, int op) {                              \
        split_reduce_partial<T>(x, partials, rows, n, parts, op);                                             \
    }                                                                                                         \
    extern "C" __global__ void split_reduce_finish_##NAME(const acc_##NAME* partials, T* out, i64 rows, i64 n, \
                                                          i64 parts, int op) {                               \
        split_reduce_finish<T>(partials, out, rows, n, parts, op);                                            \
    }                                                                                                         \
    extern "C" __global__ void split_softmax_partial_##NAME(const T* x, acc_##NAME* partials, i64 rows, i64 n, \
                                                            i64 parts) {                                     \
        split_softmax_partial<T>(x, partials, rows, n, parts);                                                \
    }                                                                                                         \
    extern "C" __global__ void split_softmax_stats_##NAME(const acc_##NAME* partials, acc_##NAME* stats,     \
                                                          i64 rows, i64 parts) {                             \
        split_softmax_stats<T>(partials, stats, rows, parts);                                                 \
    }                                                                                                         \
    extern "C" __global__ void split_softmax_apply_##NAME(const T* x, T* y, const acc_##NAME* stats, i64 rows, \
                                                          i64 n, int log) {                                  \
        split_softmax_apply<T>(x, y, stats, rows, n, log);                                                    \
    }                                                                                                         \
    extern "C" __global__ void split_layer_norm_partial_##NAME(const T* x, const acc_##NAME* stats,          \
                                                               acc_##NAME* partials, i64 rows, i64 n,        \
                                                               i64 parts, int phase) {                       \
        split_layer_norm_partial<T>(x, stats, partials, rows, n, parts, phase);                               \
    }                                                                                                         \
    extern "C" __global__ void split_layer_norm_stats_##NAME(const acc_##NAME* partials, acc_##NAME* stats,  \
                                                             float* mean_out, float* rstd_out, i64 rows,     \
                                                             i64 n, i64 parts, int phase, double eps) {      \
        split_layer_norm_stats<T>(partials, stats, mean_out, rstd_out, rows, n, parts, phase, eps);           \
    }                                                                                                         \
    extern "C" __global__ void split_layer_norm_apply_##NAME(const T* x, const T* w, const T* b, T* y,       \
                                                             const acc_##NAME* stats, i64 rows, i64 n) {     \
        split_layer_norm_apply<T>(x, w, b, y, stats, rows, n);                                                \
    }

AMP_SPLIT(f32, float)
AMP_SPLIT(f16, f16)
AMP_SPLIT(bf16, bf16)
AMP_SPLIT(f64, double)
