// gemm.cpp: fp32 GEMM for nn.Linear / 1x1 conv at inference, C[M, N] = act(A[M, K] @ B[K, N] + bias) or
// C += A @ B + bias, with B (= weight^T) packed once into 16-column panels [ceil(N/16), K, 16] (zero padded).
// A 6x16 register-blocked AVX2/FMA microkernel; the epilogue (bias, ReLU / exact GELU, accumulate, per-image
// column sums of squares for GlobalResponseNorm) runs on the last K block while the C tile is in registers;
// a per-image scale of A's columns (GRN folded into the next linear) is applied while packing A.
// Plain C ABI (no torch headers). OpenMP threads take tasks (row chunk x panel chunk) from a shared counter.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

namespace {

constexpr int MR = 6;   // rows of the microkernel tile
constexpr int NR = 16;  // columns: one packed panel, two ymm vectors

enum Act : int { ACT_NONE = 0, ACT_RELU = 1, ACT_GELU = 2 };

// Blocking, in floats. K blocks of up to kc: the B micro-panel (kc x 16, up to 64 KiB) then streams from L2,
// which on Zen 3 measured as fast as L1-sized blocks (kc 256..384) and saves C reloads and A packing; row
// blocks (and M-split tasks) of up to mc rows keep a packed A block (mc x kc) mostly in L2.
int g_kc = 1024;
int g_mc = 144;
int g_pack_a = 2;  // 0 never (unless a_scale), 1 always, 2 when K is blocked
int g_sched = 1;   // 1 dynamic tasks, 0 static split (for A/B tests)

inline __m256i tail_mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Exact GELU, 0.5 x (1 + erf(x / sqrt 2)) = relu(x) - |x| erfc(|x| / sqrt 2) / 2, on V vectors at once
// (interleaved: the polynomial chains are latency bound one vector at a time). erf(z) = z P(z^2) / Q(z^2) is the
// rational minimax fit used by Eigen / XLA (~6e-8 in exact arithmetic); here with z^2 = x^2 / 2 and 1 / sqrt 2
// folded into the coefficients, and erfc = (Q - z P) / Q, which keeps the error absolute (no 1 + erf
// cancellation): |gelu - torch.gelu| <= 9.6e-7 (checked on a 1e-4 grid of [-12, 12]; beyond, exactly relu(x)),
// ~1e-7 for |x| < 1. No exp, one divide.
// Beyond |x| = 5.3, |x| erfc / 2 < 3.1e-7 is dropped. +inf -> +inf, -inf -> 0, NaN -> NaN.
template <int V>
__attribute__((always_inline)) inline void gelu(__m256* x) {
    const __m256 lim = _mm256_set1_ps(5.3f);
    __m256 ax[V], keep[V], u[V], p[V], q[V];
#define EACH(stmt) _Pragma("GCC unroll 16") for (int i = 0; i < V; ++i) { stmt; }
    EACH(ax[i] = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x[i]))
    EACH(keep[i] = _mm256_cmp_ps(ax[i], lim, _CMP_LT_OQ))
    EACH(ax[i] = _mm256_min_ps(ax[i], lim))  // NaN -> lim (and keep = 0), so the result is relu(NaN) = NaN
    EACH(u[i] = _mm256_mul_ps(ax[i], ax[i]))
    EACH(p[i] = _mm256_fmadd_ps(_mm256_set1_ps(-3.011990180e-12f), u[i], _mm256_set1_ps(6.122398699e-10f)))
    EACH(q[i] = _mm256_fmadd_ps(_mm256_set1_ps(-9.103794696e-07f), u[i], _mm256_set1_ps(-2.667175613e-05f)))
    EACH(p[i] = _mm256_fmadd_ps(p[i], u[i], _mm256_set1_ps(-9.285302127e-08f)))
    EACH(q[i] = _mm256_fmadd_ps(q[i], u[i], _mm256_set1_ps(-4.207067541e-04f)))
    EACH(p[i] = _mm256_fmadd_ps(p[i], u[i], _mm256_set1_ps(-5.031512501e-06f)))
    EACH(q[i] = _mm256_fmadd_ps(q[i], u[i], _mm256_set1_ps(-3.686664626e-03f)))
    EACH(p[i] = _mm256_fmadd_ps(p[i], u[i], _mm256_set1_ps(-1.299292198e-04f)))
    EACH(q[i] = _mm256_fmadd_ps(q[i], u[i], _mm256_set1_ps(-1.426473912e-02f)))
    EACH(p[i] = _mm256_fmadd_ps(p[i], u[i], _mm256_set1_ps(-1.044608769e-03f)))
    EACH(p[i] = _mm256_fmadd_ps(p[i], u[i], _mm256_set1_ps(-1.138161402e-02f)))
    // half_erfc = (Q - |x| P) / (2 Q)
    EACH(p[i] = _mm256_and_ps(_mm256_div_ps(_mm256_fnmadd_ps(p[i], ax[i], q[i]), _mm256_add_ps(q[i], q[i])), keep[i]))
    EACH(x[i] = _mm256_fnmadd_ps(ax[i], p[i], _mm256_max_ps(_mm256_setzero_ps(), x[i])))
#undef EACH
}

// act over N vectors (GELU two at a time: more in flight spills registers, measured slower)
template <int ACT, int N>
__attribute__((always_inline)) inline void act(__m256* v) {
    if constexpr (ACT == ACT_RELU) {
        for (int i = 0; i < N; ++i) v[i] = _mm256_max_ps(_mm256_setzero_ps(), v[i]);
    } else if constexpr (ACT == ACT_GELU) {
        constexpr int G = 2;
        for (int i = 0; i + G <= N; i += G) gelu<G>(v + i);
        if constexpr (N % G) gelu<N % G>(v + N / G * G);
    }
}

// What the microkernel does with its tile once the K loop is done.
struct Tile {
    float* c;             // top-left of the C tile
    int64_t ldc;
    int ncols;            // valid columns of the tile, 1..16
    bool load_c;          // add the C already there (a previous K block, or accumulate=True)
    bool last;            // last K block: apply bias, activation, sums of squares
    const float* bias;    // 16 floats of this panel (zero padded), or nullptr
    float* ssq;           // partial sums of squares of this panel, [images from ssq_img0][ld_ssq], or nullptr
    int64_t ld_ssq;
    int64_t ssq_img0;
    int64_t row0;         // global row of the tile's first row
    int64_t rows_per_image;
    const float* prefetch;  // the B micro-panel that comes next (kc x 16): one line per step of k goes to L2
};

// C tile (R rows x 8*NV columns) = A micro-panel x B micro-panel (kc x 16), then the epilogue. A micro-panel:
// PACKED, [kc][MR] (row r of step k at a[k * MR + r]); else R rows of A itself, a[r * lda + k].
template <int R, int NV, int ACT, bool PACKED, bool PREFETCH = false>
void ukernel(int kc, const float* a, int64_t lda, const float* b, const Tile& t) {
    __m256 acc[R][NV];
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_ps();
    const float* ar[R];
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) ar[r] = PACKED ? a + r : a + r * lda;
    constexpr int ks = PACKED ? MR : 1;
    const char* pf = reinterpret_cast<const char*>(t.prefetch);
    if (t.load_c) {  // the C tile (accumulate: the residual) is read in the epilogue; start fetching it now
#pragma GCC unroll 6
        for (int r = 0; r < R; ++r) {
            _mm_prefetch(reinterpret_cast<const char*>(t.c + r * t.ldc), _MM_HINT_T0);
            _mm_prefetch(reinterpret_cast<const char*>(t.c + r * t.ldc + 8 * NV - 1), _MM_HINT_T0);
        }
    }
#pragma GCC unroll 4
    for (int k = 0; k < kc; ++k) {
        if (PREFETCH) _mm_prefetch(pf + 64 * k, _MM_HINT_T1);
        __m256 bv[NV];
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v) bv[v] = _mm256_loadu_ps(b + k * NR + 8 * v);
#pragma GCC unroll 6
        for (int r = 0; r < R; ++r) {
            const __m256 av = _mm256_broadcast_ss(ar[r] + k * ks);
#pragma GCC unroll 2
            for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
        }
    }
    // epilogue: C (previous K blocks, or accumulate) + bias, activation, sums of squares, store
    constexpr int NVEC = R * NV;
    __m256 v[NVEC];  // a copy, so that acc's address is never taken and acc stays in registers in the K loop
#pragma GCC unroll 12
    for (int i = 0; i < NVEC; ++i) v[i] = acc[i / NV][i % NV];
    const bool full = t.ncols == 8 * NV;
    __m256i mask[NV];
#pragma GCC unroll 2
    for (int j = 0; j < NV; ++j) mask[j] = tail_mask(t.ncols - 8 * j);
    if (t.load_c) {
#pragma GCC unroll 12
        for (int i = 0; i < NVEC; ++i) {
            const float* src = t.c + (i / NV) * t.ldc + 8 * (i % NV);
            v[i] = _mm256_add_ps(v[i], full ? _mm256_loadu_ps(src) : _mm256_maskload_ps(src, mask[i % NV]));
        }
    }
    if (t.last) {
        if (t.bias) {
            __m256 bias[NV];
#pragma GCC unroll 2
            for (int j = 0; j < NV; ++j) bias[j] = _mm256_loadu_ps(t.bias + 8 * j);
#pragma GCC unroll 12
            for (int i = 0; i < NVEC; ++i) v[i] = _mm256_add_ps(v[i], bias[i % NV]);
        }
        act<ACT, NVEC>(v);
        if (t.ssq) {  // rows summed in registers per image, then one update per image the tile touches
            // (the padded columns of v are act(0 + 0) = 0 for every act: the full-width update is exact)
            int64_t img = t.row0 / t.rows_per_image, end = (img + 1) * t.rows_per_image;
            __m256 sq[NV];
            for (int j = 0; j < NV; ++j) sq[j] = _mm256_setzero_ps();
            for (int r = 0; r < R; ++r) {
                if (t.row0 + r >= end) {
                    float* s = t.ssq + (img - t.ssq_img0) * t.ld_ssq;
                    for (int j = 0; j < NV; ++j) {
                        _mm256_storeu_ps(s + 8 * j, _mm256_add_ps(sq[j], _mm256_loadu_ps(s + 8 * j)));
                        sq[j] = _mm256_setzero_ps();
                    }
                    img = (t.row0 + r) / t.rows_per_image;
                    end = (img + 1) * t.rows_per_image;
                }
                for (int j = 0; j < NV; ++j) sq[j] = _mm256_fmadd_ps(v[r * NV + j], v[r * NV + j], sq[j]);
            }
            float* s = t.ssq + (img - t.ssq_img0) * t.ld_ssq;
            for (int j = 0; j < NV; ++j) _mm256_storeu_ps(s + 8 * j, _mm256_add_ps(sq[j], _mm256_loadu_ps(s + 8 * j)));
        }
    }
#pragma GCC unroll 12
    for (int i = 0; i < NVEC; ++i) {
        float* dst = t.c + (i / NV) * t.ldc + 8 * (i % NV);
        if (full) _mm256_storeu_ps(dst, v[i]);
        else _mm256_maskstore_ps(dst, mask[i % NV], v[i]);
    }
}

using Ukernel = void (*)(int, const float*, int64_t, const float*, const Tile&);

template <int NV, int ACT, bool PACKED>
constexpr Ukernel pick_rows(int r) {
    switch (r) {
        case 1: return ukernel<1, NV, ACT, PACKED>;
        case 2: return ukernel<2, NV, ACT, PACKED>;
        case 3: return ukernel<3, NV, ACT, PACKED>;
        case 4: return ukernel<4, NV, ACT, PACKED>;
        case 5: return ukernel<5, NV, ACT, PACKED>;
        case -1: return ukernel<MR, NV, ACT, PACKED, true>;  // full tile that prefetches the next B
        default: return ukernel<MR, NV, ACT, PACKED>;
    }
}

template <int ACT, bool PACKED>
void fill(Ukernel (&k)[2][MR + 1]) {
    for (int r = 1; r <= MR; ++r) {
        k[0][r - 1] = pick_rows<1, ACT, PACKED>(r);
        k[1][r - 1] = pick_rows<2, ACT, PACKED>(r);
    }
    k[0][MR] = pick_rows<1, ACT, PACKED>(-1);
    k[1][MR] = pick_rows<2, ACT, PACKED>(-1);
}

// [packed][act][nv - 1][rows - 1], and [...][MR]: a full tile that also prefetches the next B micro-panel
struct Table {
    Ukernel k[2][3][2][MR + 1];
    Table() {
        fill<ACT_NONE, false>(k[0][ACT_NONE]);
        fill<ACT_RELU, false>(k[0][ACT_RELU]);
        fill<ACT_GELU, false>(k[0][ACT_GELU]);
        fill<ACT_NONE, true>(k[1][ACT_NONE]);
        fill<ACT_RELU, true>(k[1][ACT_RELU]);
        fill<ACT_GELU, true>(k[1][ACT_GELU]);
    }
};
const Table kTable;

// A per-thread 64-byte aligned buffer that only grows.
float* scratch(size_t n) {
    static thread_local struct Buf {
        float* p = nullptr;
        size_t cap = 0;
        ~Buf() { std::free(p); }
    } buf;
    if (n > buf.cap) {
        std::free(buf.p);
        buf.p = static_cast<float*>(std::aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64));
        buf.cap = buf.p ? n : 0;
    }
    return buf.p;
}

struct Problem {
    const float* a;
    int64_t m, lda;
    int k;
    const float* bp;      // packed B [panels][k][16]
    const float* bias;    // [panels * 16] or nullptr
    int n, panels;
    float* c;
    int64_t ldc;
    int act;
    bool accumulate;
    const float* a_scale;  // [n_images][k] or nullptr
    int64_t rows_per_image;  // for a_scale and the sums of squares (m when neither)
    int64_t n_images;
};

// In-register transpose of 8 rows of 8 floats.
inline void transpose8(__m256 (&r)[8]) {
    __m256 t[8];
    for (int i = 0; i < 4; ++i) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    __m256 u[8];
    for (int i = 0; i < 2; ++i) {
        u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int i = 0; i < 4; ++i) {
        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}

// A rows [ic, ic + mc), columns [pc, pc + kc) (times the per-image scale) -> dst as MR-row tiles [kc][MR].
// A full tile is written 8 steps of k at a time, each step k an 8-float store at dst + 6k whose 2 extra lanes
// the next store overwrites (the 8th step stores exactly 6).
void pack_a(const Problem& pb, int64_t ic, int64_t mc, int pc, int kc, float* dst) {
    for (int64_t i0 = 0; i0 < mc; i0 += MR) {
        const int rows = (int)std::min<int64_t>(MR, mc - i0);
        float* d = dst + i0 * kc;
        const float* src[MR];
        const float* sc[MR];
        for (int r = 0; r < rows; ++r) {
            const int64_t row = ic + i0 + r;
            src[r] = pb.a + row * pb.lda + pc;
            sc[r] = pb.a_scale ? pb.a_scale + (row / pb.rows_per_image) * pb.k + pc : nullptr;
        }
        int k = 0;
        if (rows == MR) {
            for (; k + 8 <= kc; k += 8) {
                __m256 v[8];
                for (int r = 0; r < MR; ++r) {
                    v[r] = _mm256_loadu_ps(src[r] + k);
                    if (pb.a_scale) v[r] = _mm256_mul_ps(v[r], _mm256_loadu_ps(sc[r] + k));
                }
                v[6] = v[7] = _mm256_setzero_ps();
                transpose8(v);
                for (int j = 0; j < 7; ++j) _mm256_storeu_ps(d + (k + j) * MR, v[j]);
                // the last step stores its 6 floats exactly (the tile may end here, and another thread's begin)
                _mm_storeu_ps(d + (k + 7) * MR, _mm256_castps256_ps128(v[7]));
                _mm_storel_pi(reinterpret_cast<__m64*>(d + (k + 7) * MR + 4), _mm256_extractf128_ps(v[7], 1));
            }
        }
        for (; k < kc; ++k)
            for (int r = 0; r < rows; ++r) d[k * MR + r] = pb.a_scale ? src[r][k] * sc[r][k] : src[r][k];
    }
}

// How a call is cut up: K blocks of kc_max, L2 row blocks of mc_max, tasks of mchunk rows x pchunk panels.
struct Plan {
    int kc_max;
    int64_t mc_max;
    bool pack;            // A goes through pack_a (per-image scale, or K blocked: strided rows alias in L1)
    const float* packed;  // A packed once for all tasks (N split), [K block][row tile][kc][MR], or nullptr
    int64_t m_pad;        // rows of `packed` (a multiple of MR)
};

// One task: rows [m0, m1), panels [p0, p1); ssq: partial sums of squares [images from m0's][panels * 16].
void run_block(const Problem& pb, const Plan& pl, int64_t m0, int64_t m1, int p0, int p1, float* ssq) {
    const int K = pb.k;
    const int64_t ld_ssq = (int64_t)pb.panels * NR;
    float* abuf = pl.pack && !pl.packed ? scratch((size_t)(pl.mc_max + MR) * pl.kc_max) : nullptr;
    for (int64_t ic = m0; ic < m1; ic += pl.mc_max) {
        const int64_t mc = std::min(pl.mc_max, m1 - ic);
        for (int pc = 0; pc < K; pc += pl.kc_max) {
            const int kc = std::min(pl.kc_max, K - pc);
            const bool first = pc == 0, last = pc + kc == K;
            const float* ablk = pb.a + ic * pb.lda + pc;
            int64_t tile_stride = MR * pb.lda;  // from one MR-row tile of A to the next
            if (pl.pack) {
                if (pl.packed) {
                    ablk = pl.packed + pc * pl.m_pad + ic * kc;
                } else {
                    pack_a(pb, ic, mc, pc, kc, abuf);
                    ablk = abuf;
                }
                tile_stride = (int64_t)MR * kc;
            }
            for (int p = p0; p < p1; ++p) {
                const int ncols = std::min(NR, pb.n - p * NR);
                const int nv = ncols > 8 ? 2 : 1;
                Tile t;
                t.ldc = pb.ldc;
                t.ncols = ncols;
                t.load_c = !first || pb.accumulate;
                t.last = last;
                t.bias = pb.bias ? pb.bias + p * NR : nullptr;
                t.ssq = ssq ? ssq + p * NR : nullptr;
                t.ld_ssq = ld_ssq;
                t.ssq_img0 = m0 / pb.rows_per_image;
                t.rows_per_image = pb.rows_per_image;
                const float* bpanel = pb.bp + ((int64_t)p * K + pc) * NR;
                const int act = last ? pb.act : ACT_NONE;
                // the first tile fetches the next panel's B into L2 (B streams from L3 / memory when M is small)
                t.prefetch = p + 1 < p1 ? bpanel + (int64_t)K * NR
                             : pc + kc < K ? pb.bp + ((int64_t)p0 * K + pc + kc) * NR : bpanel;
                for (int64_t ir = 0; ir < mc; ir += MR) {
                    const int rows = (int)std::min<int64_t>(MR, mc - ir);
                    t.c = pb.c + (ic + ir) * pb.ldc + p * NR;
                    t.row0 = ic + ir;
                    const int which = ir == 0 && rows == MR ? MR : rows - 1;
                    kTable.k[pl.pack][act][nv - 1][which](kc, ablk + ir / MR * tile_stride, pb.lda, bpanel, t);
                }
            }
        }
    }
}

// Split T threads into tm (over M) x tn (over N panels): the grid that minimizes one thread's work,
// counted as multiply-adds plus a little for the A rows and B columns it streams.
void grid(int64_t m, int panels, int T, int* tm, int* tn) {
    const int64_t mtiles = (m + MR - 1) / MR;
    double best = 1e300;
    *tm = 1;
    *tn = 1;
    for (int a = 1; a <= T; ++a) {
        if (T % a) continue;
        const int b = T / a;
        if (a > mtiles || b > panels) continue;
        const double rows = (double)((mtiles + a - 1) / a) * MR, cols = (double)((panels + b - 1) / b) * NR;
        const double cost = rows * cols + 2.0 * (rows + cols);
        if (cost < best) {
            best = cost;
            *tm = a;
            *tn = b;
        }
    }
}

}  // namespace

extern "C" {

// Packs weight [n, k] (row-major, nn.Linear layout) into panels [ceil(n/16)][k][16], zero padded.
void ak_gemm_pack_b(const float* w, int n, int k, float* out) {
    const int panels = (n + NR - 1) / NR;
    for (int p = 0; p < panels; ++p)
        for (int kk = 0; kk < k; ++kk)
            for (int j = 0; j < NR; ++j) {
                const int col = p * NR + j;
                out[((int64_t)p * k + kk) * NR + j] = col < n ? w[(int64_t)col * k + kk] : 0.0f;
            }
}

// C[m, n] (row stride ldc) = act(A[m, k] (row stride lda) @ B + bias), or C += A @ B + bias (accumulate,
// act must be 0). bp: B packed by ak_gemm_pack_b; bias: [ceil(n/16) * 16] zero padded, or null.
// a_scale [ceil(m / rows_per_image)][k] or null: A's row i is multiplied by a_scale[i / rows_per_image].
// sumsq [n_images][n] or null: per-image (rows_per_image rows each) column sums of squares of the output.
// act: 0 none, 1 relu, 2 gelu (exact).
void ak_gemm_f32(const float* a, int64_t m, int k, int64_t lda, const float* bp, const float* bias, int n,
                 float* c, int64_t ldc, int act, int accumulate, const float* a_scale, int64_t rows_per_image,
                 float* sumsq, int nthreads) {
    if (m <= 0 || n <= 0) return;
    const int panels = (n + NR - 1) / NR;
    if (k <= 0) return;  // the Python wrapper handles the empty sum
    Problem pb{a, m, lda, k, bp, bias, n, panels, c, ldc, act, accumulate != 0, a_scale,
               rows_per_image > 0 ? rows_per_image : m, 0};
    pb.n_images = (m + pb.rows_per_image - 1) / pb.rows_per_image;
    int T = std::max(1, nthreads);
    // tiny problems: one thread (the fork costs more than it saves)
    if ((double)m * n * k < 64.0 * 64 * 64) T = 1;
    int tm, tn;
    grid(m, panels, T, &tm, &tn);
    Plan pl{};
    const int nkb = std::max(1, (k + g_kc - 1) / g_kc);
    pl.kc_max = (k + nkb - 1) / nkb;
    pl.mc_max = std::max<int64_t>(MR, g_mc / MR * MR);
    pl.pack = a_scale || g_pack_a == 1 || (g_pack_a == 2 && nkb > 1);
    // Tasks: a grid of (row chunk, panel chunk) blocks handed out dynamically, about 8 per thread, so that a
    // thread that shares its core with another process does less of the work. M split: row chunks of at most
    // an L2 block, all panels. N split: all rows, panel chunks; A, when packed, is packed once up front.
    const int64_t mtiles = (m + MR - 1) / MR;
    int64_t mchunk = m;
    int pchunk = panels;
    if (tm > 1 || T == 1) {
        mchunk = std::min(pl.mc_max, std::max<int64_t>(4, (mtiles + 8 * T - 1) / (8 * T)) * MR);
    } else {
        pchunk = std::max(1, (panels + 8 * T - 1) / (8 * T));
    }
    if (g_sched == 0) {  // static tm x tn split (A/B testing)
        mchunk = (mtiles + tm - 1) / tm * MR;
        pchunk = (panels + tn - 1) / tn;
    }
    const int64_t mt = (m + mchunk - 1) / mchunk, nt = (panels + pchunk - 1) / pchunk, ntasks = mt * nt;
    if (ntasks < T) T = (int)ntasks;
    std::unique_ptr<float[]> shared_a;
    if (pl.pack && mt == 1 && nt > 1 && g_sched) {
        pl.m_pad = mtiles * MR;
        shared_a.reset(new float[(size_t)pl.m_pad * k]);
        pl.packed = shared_a.get();
    }
    // Partial sums of squares per row chunk (its tasks cover disjoint panels), over the images the chunk
    // spans, reduced in chunk order: deterministic for a given thread count.
    const int64_t ld_ssq = (int64_t)panels * NR, rpi = pb.rows_per_image;
    std::vector<int64_t> ssq_off(sumsq ? mt + 1 : 0, 0);
    for (int64_t mi = 0; sumsq && mi < mt; ++mi) {
        const int64_t r0 = mi * mchunk, r1 = std::min(m, r0 + mchunk);
        ssq_off[mi + 1] = ssq_off[mi] + ((r1 - 1) / rpi - r0 / rpi + 1) * ld_ssq;
    }
    std::vector<float> parts(sumsq ? (size_t)ssq_off[mt] : 0, 0.0f);
    std::atomic<int64_t> next{0};
#pragma omp parallel num_threads(T) if (T > 1)
    {
        if (pl.packed) {  // each thread packs a share of the row tiles, for every K block
            const int nth = omp_get_num_threads(), th = omp_get_thread_num();
            const int64_t t0 = mtiles * th / nth * MR, t1 = std::min(m, mtiles * (th + 1) / nth * MR);
            for (int pc = 0; pc < k && t0 < t1; pc += pl.kc_max) {
                const int kc = std::min(pl.kc_max, k - pc);
                pack_a(pb, t0, t1 - t0, pc, kc, const_cast<float*>(pl.packed) + pc * pl.m_pad + t0 * kc);
            }
#pragma omp barrier
        }
        for (;;) {
            const int64_t task = next.fetch_add(1, std::memory_order_relaxed);
            if (task >= ntasks) break;
            const int64_t mi = task / nt, nj = task % nt;
            const int64_t m0 = mi * mchunk, m1 = std::min(m, m0 + mchunk);
            const int p0 = (int)(nj * pchunk), p1 = std::min(panels, p0 + pchunk);
            run_block(pb, pl, m0, m1, p0, p1, sumsq ? parts.data() + ssq_off[mi] : nullptr);
        }
    }
    if (sumsq) {
        std::fill(sumsq, sumsq + pb.n_images * n, 0.0f);
        for (int64_t mi = 0; mi < mt; ++mi) {
            const int64_t r0 = mi * mchunk, r1 = std::min(m, r0 + mchunk);
            for (int64_t img = r0 / rpi; img <= (r1 - 1) / rpi; ++img) {
                const float* src = parts.data() + ssq_off[mi] + (img - r0 / rpi) * ld_ssq;
                for (int j = 0; j < n; ++j) sumsq[img * n + j] += src[j];
            }
        }
    }
}

// Blocking knobs for tuning (floats); values <= 0 leave a knob unchanged.
void ak_gemm_set_blocking(int kc, int mc, int pack_a) {
    if (kc > 0) g_kc = kc;
    if (mc > 0) g_mc = mc;
    if (pack_a >= 0) g_pack_a = pack_a;
}

}  // extern "C"
