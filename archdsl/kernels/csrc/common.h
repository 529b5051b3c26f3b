// common.h: AVX2/FMA helpers shared by the archdsl kernels (vector exp and exact GELU, tail masks,
// per-thread scratch, OpenMP helpers). Header-only; every .cpp in csrc/ is compiled into one library.
#pragma once

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace ak {

enum Act : int { ACT_NONE = 0, ACT_RELU = 1, ACT_GELU = 2 };

// Lanes [0, n) set, n in [0, 8] (n outside is clamped by the compare).
static inline __m256i tail_mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Load n in [0, 8] floats (the rest of the lanes zero) / store the first n lanes.
static inline __m256 load_n(const float* p, int n) {
    return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, tail_mask(n));
}
static inline void store_n(float* p, __m256 v, int n) {
    if (n >= 8) _mm256_storeu_ps(p, v);
    else if (n > 0) _mm256_maskstore_ps(p, tail_mask(n), v);
}

// exp(x) for x <= 88 (Cephes expf: reduction by ln 2 in two parts, degree-5 polynomial; ~1 ulp).
// Clamped below at -87.33 (result ~1.2e-38 instead of a denormal or 0); NaN is not propagated, callers
// that care mix the input back in.
static inline __m256 exp256(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.33654f)), _mm256_set1_ps(88.0f));
    const __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// Exact GELU x * Phi(x), Phi(x) = 0.5 * erfc(-x / sqrt 2). erfc(|z|) uses the Chebyshev fit of Numerical
// Recipes (erfcc, relative error < 1.1e-7 everywhere), so Phi, and GELU, are accurate to ~2 ulp relative
// on both tails (no 1 + erf cancellation). gelu(+inf) = +inf, gelu(-inf) = 0 (not NaN), NaN -> NaN.
static inline __m256 gelu256(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 z = _mm256_mul_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), x), _mm256_set1_ps(0.70710678118654752f));
    const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.5f), z, one));
    __m256 p = _mm256_set1_ps(0.17087277f);
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.82215223f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.48851587f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.13520398f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.27886807f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.18628806f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.09678418f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.37409196f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.00002368f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.26551223f));
    const __m256 half_erfc = _mm256_mul_ps(_mm256_mul_ps(t, exp256(_mm256_fnmadd_ps(z, z, p))), _mm256_set1_ps(0.5f));
    // blendv picks by the sign bit of x: Phi = erfc/2 for x < 0, 1 - erfc/2 otherwise.
    const __m256 phi = _mm256_blendv_ps(_mm256_sub_ps(one, half_erfc), half_erfc, x);
    // max(-FLT_MAX, x) keeps NaN (second operand) and turns -inf into a finite value so -inf * 0 = 0.
    return _mm256_mul_ps(_mm256_max_ps(_mm256_set1_ps(-FLT_MAX), x), phi);
}

static inline __m256 relu256(__m256 x) { return _mm256_max_ps(_mm256_setzero_ps(), x); }  // NaN stays NaN

template <int ACT>
static inline __m256 act256(__m256 x) {
    if constexpr (ACT == ACT_RELU) return relu256(x);
    else if constexpr (ACT == ACT_GELU) return gelu256(x);
    else return x;
}

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// A 64-byte aligned buffer per thread that only grows; OpenMP threads are pooled, so it is reused.
struct Scratch {
    float* p = nullptr;
    size_t cap = 0;
    ~Scratch() { std::free(p); }
    float* get(size_t n) {
        if (n > cap) {
            std::free(p);
            size_t bytes = ((n * sizeof(float)) + 63) / 64 * 64;
            p = static_cast<float*>(std::aligned_alloc(64, bytes));
            cap = p ? n : 0;
        }
        return p;
    }
};

static inline float* thread_scratch(size_t n, int which = 0) {
    static thread_local Scratch s[2];
    return s[which].get(n);
}

// Floor / ceiling of a / b for b > 0 and any sign of a.
static inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
static inline int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }

// LayerNorm of one row of c floats (biased variance, two passes over the row, which is in L1).
static inline void layernorm_row(const float* x, float* y, int c, const float* g, const float* b, float eps) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= c; i += 16) {
        s0 = _mm256_add_ps(s0, _mm256_loadu_ps(x + i));
        s1 = _mm256_add_ps(s1, _mm256_loadu_ps(x + i + 8));
    }
    for (; i < c; i += 8) s0 = _mm256_add_ps(s0, load_n(x + i, c - i));
    const float mean = hsum(_mm256_add_ps(s0, s1)) / static_cast<float>(c);
    const __m256 m = _mm256_set1_ps(mean);
    __m256 q0 = _mm256_setzero_ps(), q1 = _mm256_setzero_ps();
    for (i = 0; i + 16 <= c; i += 16) {
        const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(x + i), m);
        const __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), m);
        q0 = _mm256_fmadd_ps(d0, d0, q0);
        q1 = _mm256_fmadd_ps(d1, d1, q1);
    }
    for (; i < c; i += 8) {
        const int n = c - i;
        // masked lanes load 0; (0 - mean) must not count, so mask the difference too
        const __m256 d = _mm256_and_ps(_mm256_sub_ps(load_n(x + i, n), m), _mm256_castsi256_ps(tail_mask(n)));
        q0 = _mm256_fmadd_ps(d, d, q0);
    }
    const float var = hsum(_mm256_add_ps(q0, q1)) / static_cast<float>(c);
    const __m256 rstd = _mm256_set1_ps(1.0f / std::sqrt(var + eps));
    for (i = 0; i < c; i += 8) {
        const int n = c - i;
        const __m256 xn = _mm256_mul_ps(_mm256_sub_ps(load_n(x + i, n), m), rstd);
        const __m256 gv = g ? load_n(g + i, n) : _mm256_set1_ps(1.0f);
        const __m256 bv = b ? load_n(b + i, n) : _mm256_setzero_ps();
        store_n(y + i, _mm256_fmadd_ps(xn, gv, bv), n);
    }
}

}  // namespace ak
