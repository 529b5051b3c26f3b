// kernels.cpp: row-wise archdsl kernels (LayerNorm, bias + activation with per-image sums of squares,
// per-channel scaling) and the ABI version. The depthwise convs live in dwconv.cpp; all of csrc/*.cpp is
// built into one shared library with a plain C ABI (no torch headers), loaded through ctypes.
#include <vector>

#include "common.h"

using namespace ak;

namespace {

// One row of n columns: h = act(h + b); optionally acc += h^2. 32 columns per step (4 vectors in flight).
template <int ACT, bool SUMSQ>
void bias_act_row(float* h, const float* b, int n, float* acc) {
    constexpr int V = 4;
    int c = 0;
    for (; c + 8 * V <= n; c += 8 * V) {
        __m256 y[V];
        for (int i = 0; i < V; ++i) {
            y[i] = _mm256_loadu_ps(h + c + 8 * i);
            if (b) y[i] = _mm256_add_ps(y[i], _mm256_loadu_ps(b + c + 8 * i));
        }
        if constexpr (ACT == ACT_GELU) gelu_n<V>(y);
        else for (int i = 0; i < V; ++i) y[i] = act256<ACT>(y[i]);
        for (int i = 0; i < V; ++i) {
            _mm256_storeu_ps(h + c + 8 * i, y[i]);
            if constexpr (SUMSQ)
                _mm256_storeu_ps(acc + c + 8 * i, _mm256_fmadd_ps(y[i], y[i], _mm256_loadu_ps(acc + c + 8 * i)));
        }
    }
    for (; c < n; c += 8) {
        const int k = n - c;
        __m256 y = load_n(h + c, k);
        if (b) y = _mm256_add_ps(y, load_n(b + c, k));
        y = act256<ACT>(y);
        store_n(h + c, y, k);
        if constexpr (SUMSQ) store_n(acc + c, _mm256_fmadd_ps(y, y, load_n(acc + c, k)), k);
    }
}

template <int ACT, bool SUMSQ>
void bias_act_impl(float* h, const float* b, int64_t M, int N, int nimg, float* sumsq, int nthreads) {
    const int64_t rows_per_img = SUMSQ ? M / nimg : M;
    const int T = std::max(1, nthreads);
    std::vector<float> parts(SUMSQ ? (size_t)T * nimg * N : 0, 0.0f);
#pragma omp parallel num_threads(T) if (T > 1 && M * N >= 8192)
    {
        const int nt = omp_get_num_threads(), t = omp_get_thread_num();
        const int64_t lo = M * t / nt, hi = M * (t + 1) / nt;
        float* part = SUMSQ ? parts.data() + (size_t)t * nimg * N : nullptr;
        for (int64_t i = lo; i < hi; ++i)
            bias_act_row<ACT, SUMSQ>(h + i * N, b, N, SUMSQ ? part + (i / rows_per_img) * N : nullptr);
    }
    if constexpr (SUMSQ) {  // fixed order: deterministic for a given thread count
        for (int64_t k = 0; k < (int64_t)nimg * N; ++k) {
            float s = 0.0f;
            for (int t = 0; t < T; ++t) s += parts[(size_t)t * nimg * N + k];
            sumsq[k] = s;
        }
    }
}

template <int ACT>
void bias_act_dispatch(float* h, const float* b, int64_t M, int N, int nimg, float* sumsq, int nthreads) {
    if (nimg > 0) bias_act_impl<ACT, true>(h, b, M, N, nimg, sumsq, nthreads);
    else bias_act_impl<ACT, false>(h, b, M, N, 0, nullptr, nthreads);
}

}  // namespace

extern "C" {

int ak_abi_version() { return 2; }

// a = [x, gamma, beta, out, M, C, nthreads]: x, out [M, C] rows (out may be x); gamma / beta: [C] or null.
void ak_layernorm_rows(const int64_t* a, float eps) {
    const float* x = ptr<const float>(a[0]);
    const float* gamma = ptr<const float>(a[1]);
    const float* beta = ptr<const float>(a[2]);
    float* out = ptr<float>(a[3]);
    const int64_t M = a[4];
    const int C = (int)a[5], nthreads = (int)a[6];
#pragma omp parallel for schedule(static) num_threads(std::max(1, nthreads)) if (nthreads > 1 && M * C >= 8192)
    for (int64_t i = 0; i < M; ++i) layernorm_row(x + i * C, out + i * C, C, gamma, beta, eps);
}

// a = [h, b, M, N, act, nimg, sumsq, nthreads]. h: [M, N] in place, h = act(h + b); b: [N] or null. If nimg > 0
// (M divisible by nimg), also sumsq[i, c] = sum over the rows of image i (rows i*M/nimg ...) of h[row, c]^2
// after the activation.
void ak_bias_act(const int64_t* a) {
    float* h = ptr<float>(a[0]);
    const float* b = ptr<const float>(a[1]);
    const int64_t M = a[2];
    const int N = (int)a[3], act = (int)a[4], nimg = (int)a[5], nthreads = (int)a[7];
    float* sumsq = ptr<float>(a[6]);
    if (act == ACT_GELU) bias_act_dispatch<ACT_GELU>(h, b, M, N, nimg, sumsq, nthreads);
    else if (act == ACT_RELU) bias_act_dispatch<ACT_RELU>(h, b, M, N, nimg, sumsq, nthreads);
    else bias_act_dispatch<ACT_NONE>(h, b, M, N, nimg, sumsq, nthreads);
}

// a = [x, s, N, P, C, nthreads]: x [N, P, C] in place, x[n, p, c] *= s[n, c].
void ak_scale_channels(const int64_t* a) {
    float* x = ptr<float>(a[0]);
    const float* s = ptr<const float>(a[1]);
    const int N = (int)a[2], C = (int)a[4], nthreads = (int)a[5];
    const int64_t P = a[3], rows = (int64_t)N * P;
#pragma omp parallel for schedule(static) num_threads(std::max(1, nthreads)) if (nthreads > 1 && rows * C >= 8192)
    for (int64_t i = 0; i < rows; ++i) {
        float* r = x + i * C;
        const float* sc = s + (i / P) * C;
        for (int c = 0; c < C; c += 8)
            store_n(r + c, _mm256_mul_ps(load_n(r + c, C - c), load_n(sc + c, C - c)), C - c);
    }
}

}  // extern "C"
