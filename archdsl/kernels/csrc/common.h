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

// A pointer passed as an int64 in an argument block.
template <class T>
static inline T* ptr(int64_t v) {
    return reinterpret_cast<T*>(static_cast<intptr_t>(v));
}

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

// Exact GELU x * Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2 = P(|x|) for x >= 0, 1 - P(|x|) for x < 0 (the
// subtraction is exact: P >= 1/2). P: 4 intervals of width 5.5 / 4 on [0, 5.5], a degree-9 polynomial each
// (minimax-fitted to the exact Phi), coefficients picked per lane by an in-lane vpermilps (1 cycle); P = 1
// beyond 5.5 (where Phi rounds to 1). |P - Phi| <= 8.1e-8 (~1 ulp of Phi), so |gelu error| <= 1.25e-7 |x|: the
// accuracy of an erf correct to ~1 ulp in 0.5 x (1 + erf), as torch computes it (torch's own is 2.7e-7 |x|
// off); like that form it is absolute, not relative, on the far negative tail.
// gelu(+inf) = +inf, gelu(-inf) = 0 (not NaN), NaN -> NaN.
alignas(32) static const float kPhiPoly[10][8] = {  // [coefficient of r^k][interval, twice: one per 128-bit lane]
    {0.5f, 0.915434301f, 0.997020245f, 0.999981463f,
     0.5f, 0.915434301f, 0.997020245f, 0.999981463f},
    {0.54854542f, 0.213141888f, 0.0125036584f, 0.0001107426f,
     0.54854542f, 0.213141888f, 0.0125036584f, 0.0001107426f},
    {7.42001339e-06f, -0.201486394f, -0.0236399584f, -0.000314042409f,
     7.42001339e-06f, -0.201486394f, -0.0236399584f, -0.000314042409f},
    {-0.172945723f, 0.0598270334f, 0.0258588437f, 0.000558650529f,
     -0.172945723f, 0.0598270334f, 0.0258588437f, 0.000558650529f},
    {0.000640397775f, 0.0351319797f, -0.0170100927f, -0.000692122616f,
     0.000640397775f, 0.0351319797f, -0.0170100927f, -0.000692122616f},
    {0.0465846993f, -0.0298999641f, 0.00557327783f, 0.000623461092f,
     0.0465846993f, -0.0298999641f, 0.00557327783f, 0.000623461092f},
    {0.00561923999f, -0.000398463686f, 0.000711539353f, -0.000409800734f,
     0.00561923999f, -0.000398463686f, 0.000711539353f, -0.000409800734f},
    {-0.0189928394f, 0.00853698235f, -0.00161538564f, 0.000189111335f,
     -0.0189928394f, 0.00853698235f, -0.00161538564f, 0.000189111335f},
    {0.00661276048f, -0.00386113604f, 0.000691189489f, -5.50876903e-05f,
     0.00661276048f, -0.00386113604f, 0.000691189489f, -5.50876903e-05f},
    {-0.000637080404f, 0.000594036595f, -0.000111845548f, 7.60565763e-06f,
     -0.000637080404f, 0.000594036595f, -0.000111845548f, 7.60565763e-06f},
};

// N vectors at once, step by step, so the dependency chains of N vectors overlap.
template <int N>
static inline void gelu_n(__m256* v) {
    const __m256 amax = _mm256_set1_ps(5.5f), scale = _mm256_set1_ps(4.0f / 5.5f), one = _mm256_set1_ps(1.0f);
    __m256 a[N], r[N], p[N];
    __m256i idx[N];
#define AK_EACH for (int i = 0; i < N; ++i)
    AK_EACH {
        a[i] = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v[i]);
        const __m256 ac = _mm256_min_ps(a[i], amax);  // NaN -> 5.5 (x itself carries the NaN to the result)
        idx[i] = _mm256_min_epi32(_mm256_cvttps_epi32(_mm256_mul_ps(ac, scale)), _mm256_set1_epi32(3));
        r[i] = _mm256_fmsub_ps(ac, scale, _mm256_cvtepi32_ps(idx[i]));  // position in the interval, one rounding
    }
    AK_EACH p[i] = _mm256_permutevar_ps(_mm256_load_ps(kPhiPoly[9]), idx[i]);
    for (int k = 8; k >= 0; --k)
        AK_EACH p[i] = _mm256_fmadd_ps(p[i], r[i], _mm256_permutevar_ps(_mm256_load_ps(kPhiPoly[k]), idx[i]));
    AK_EACH {
        const __m256 pp = _mm256_blendv_ps(p[i], one, _mm256_cmp_ps(a[i], amax, _CMP_GE_OQ));
        const __m256 phi = _mm256_blendv_ps(pp, _mm256_sub_ps(one, pp), v[i]);  // by the sign bit of x
        // max(-FLT_MAX, x) keeps NaN (second operand) and makes -inf finite so that -inf * 0 = 0.
        v[i] = _mm256_mul_ps(_mm256_max_ps(_mm256_set1_ps(-FLT_MAX), v[i]), phi);
    }
#undef AK_EACH
}

static inline __m256 gelu256(__m256 x) {
    gelu_n<1>(&x);
    return x;
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

// LayerNorm of one row of c floats (biased variance; two passes over the row, which is in L1 by then; four
// accumulators per pass so the adds overlap). y may be x.
static inline void layernorm_row(const float* x, float* y, int c, const float* g, const float* b, float eps) {
    __m256 s[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int i = 0;
    for (; i + 32 <= c; i += 32)
        for (int k = 0; k < 4; ++k) s[k] = _mm256_add_ps(s[k], _mm256_loadu_ps(x + i + 8 * k));
    for (; i < c; i += 8) s[0] = _mm256_add_ps(s[0], load_n(x + i, c - i));
    const float mean = hsum(_mm256_add_ps(_mm256_add_ps(s[0], s[1]), _mm256_add_ps(s[2], s[3]))) / (float)c;
    const __m256 m = _mm256_set1_ps(mean);
    for (int k = 0; k < 4; ++k) s[k] = _mm256_setzero_ps();
    for (i = 0; i + 32 <= c; i += 32)
        for (int k = 0; k < 4; ++k) {
            const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8 * k), m);
            s[k] = _mm256_fmadd_ps(d, d, s[k]);
        }
    for (; i < c; i += 8) {
        const int n = c - i;
        // masked lanes load 0; (0 - mean) must not count, so mask the difference too
        const __m256 d = _mm256_and_ps(_mm256_sub_ps(load_n(x + i, n), m), _mm256_castsi256_ps(tail_mask(n)));
        s[0] = _mm256_fmadd_ps(d, d, s[0]);
    }
    const float var = hsum(_mm256_add_ps(_mm256_add_ps(s[0], s[1]), _mm256_add_ps(s[2], s[3]))) / (float)c;
    const __m256 rstd = _mm256_set1_ps(1.0f / std::sqrt(var + eps));
    for (i = 0; i + 8 <= c; i += 8) {
        const __m256 xn = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), m), rstd);
        const __m256 gv = g ? _mm256_loadu_ps(g + i) : _mm256_set1_ps(1.0f);
        const __m256 bv = b ? _mm256_loadu_ps(b + i) : _mm256_setzero_ps();
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(xn, gv, bv));
    }
    if (i < c) {
        const int n = c - i;
        const __m256 xn = _mm256_mul_ps(_mm256_sub_ps(load_n(x + i, n), m), rstd);
        const __m256 gv = g ? load_n(g + i, n) : _mm256_set1_ps(1.0f);
        const __m256 bv = b ? load_n(b + i, n) : _mm256_setzero_ps();
        store_n(y + i, _mm256_fmadd_ps(xn, gv, bv), n);
    }
}

}  // namespace ak
