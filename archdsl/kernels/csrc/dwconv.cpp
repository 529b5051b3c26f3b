// dwconv.cpp: the NHWC depthwise-conv engine behind ak_dwconv_nhwc, ak_mixer_nhwc and ak_dwconv_ln_nhwc.
//
// Layouts: x [N, H, W, C] and out [N, Ho, Wo, C] contiguous; a "group" is a channel range [c0, c0 + cw) with
// its own kernel (kh x kw, padding, dilation) and a packed weight [ceil(cw / 16)][kh][kw][16] (zero-padded
// channels), bias [ceil(cw / 16) * 16] or null. A plain depthwise conv is one group covering all channels.
//
// How it runs: a task is (group, image, 16-channel blocks, range of output rows). It keeps a ring of the
// input rows it needs, copied once each into a zero-margined buffer [block][W + 2M][16], so the inner loop
// has no bounds checks and reads 64 contiguous bytes per pixel. Output pixels are computed in tiles of B
// along W (B x 16 channels of accumulators in registers, each weight vector loaded once per tap and reused
// B times); a tile only visits the taps that touch the image for at least one of its pixels, so a 31 x 31
// kernel on a 7 x 7 image costs ~the valid taps, not 961. The bias comes with the accumulators' start; the
// activation (or LayerNorm over C, for dwconv_ln) runs over each output row while it is hot in L1.
#include <vector>

#include "common.h"

namespace ak {
namespace {

constexpr int BMAX1 = 12;  // pixels per tile with one 8-channel vector (12 accumulators)
constexpr int BMAX2 = 6;   // pixels per tile with two vectors (12 accumulators)

struct Geo {
    int c0, cw, kh, kw, ph, pw, dh, dw;
    const float* w;
    const float* b;
    bool pointwise() const { return kh == 1 && kw == 1 && ph == 0 && pw == 0; }
    int nblocks() const { return static_cast<int>(ceil_div(cw, 16)); }
};

struct Img {
    const float* x;
    float* out;
    int N, H, W, C, Ho, Wo, sh, sw, act;
};

struct LnEpi {  // LayerNorm over C after the conv, and optionally resid = x + rb (stride 1, same size)
    const float* gamma;
    const float* beta;
    float eps;
    const float* rb;
    float* resid;
};

struct Tile {
    int ow0, b, t0, t1;  // first output column, pixels, tap range [t0, t1) that touches the image
};

// B output pixels x VB 8-channel vectors. xr[r] / wr[r]: ring row / weight row of the r-th valid kernel row,
// at offsets xofs (the tile's first pixel at tap 0) / wofs (floats); dws / sws: floats between taps / pixels.
// Stores conv + bias; the activation is a separate pass over the (L1-hot) output row.
template <int B, int VB, int SW>
__attribute__((always_inline)) inline void tile(const float* const* xr, const float* const* wr, int nr, int64_t xofs,
                                                int64_t wofs, int t0, int t1, int dws, int sws_rt, const float* bias,
                                                float* o, int ostride, int cvalid) {
    const int sws = SW ? SW * 16 : sws_rt;
    __m256 acc[B][VB];
#pragma GCC unroll 4
    for (int v = 0; v < VB; ++v) {
        const __m256 bv = bias ? _mm256_loadu_ps(bias + 8 * v) : _mm256_setzero_ps();
#pragma GCC unroll 16
        for (int j = 0; j < B; ++j) acc[j][v] = bv;
    }
    for (int r = 0; r < nr; ++r) {
        const float* xp = xr[r] + (xofs + static_cast<int64_t>(t0) * dws);
        const float* wp = wr[r] + (wofs + t0 * 16);
        for (int t = t0; t < t1; ++t, xp += dws, wp += 16) {
            __m256 wv[VB];
#pragma GCC unroll 4
            for (int v = 0; v < VB; ++v) wv[v] = _mm256_loadu_ps(wp + 8 * v);
#pragma GCC unroll 16
            for (int j = 0; j < B; ++j) {
#pragma GCC unroll 4
                for (int v = 0; v < VB; ++v)
                    acc[j][v] = _mm256_fmadd_ps(_mm256_load_ps(xp + j * sws + 8 * v), wv[v], acc[j][v]);
            }
        }
    }
    if (cvalid == 8 * VB) {
#pragma GCC unroll 16
        for (int j = 0; j < B; ++j) {
#pragma GCC unroll 4
            for (int v = 0; v < VB; ++v) _mm256_storeu_ps(o + j * ostride + 8 * v, acc[j][v]);
        }
    } else {
#pragma GCC unroll 16
        for (int j = 0; j < B; ++j) {
#pragma GCC unroll 4
            for (int v = 0; v < VB; ++v) store_n(o + j * ostride + 8 * v, acc[j][v], cvalid - 8 * v);
        }
    }
}

struct Plan {  // per group, shared by its tasks: the tiles of an output row for one and two vectors
    std::vector<Tile> tiles1, tiles2;
};

struct RowArgs {     // one output row of channel blocks [cb0, cb1)
    int nr, M, pw, dws, sw, cb0, cb1, cw;
    size_t cbstride;  // floats between the blocks of a ring row
    size_t wblock;    // floats per block of packed weight (kh * kw * 16)
    const float* bias;  // group's padded bias or null
    float* o;           // output row at the group's first channel
    int ostride;
};

// One tile of one block: the tile bodies (1..BMAX pixels) are inlined behind a switch.
template <int VB, int SW>
__attribute__((always_inline)) inline void tile_at(const Tile& t, int cb, const float* const* xr,
                                                   const float* const* wr, const RowArgs& a) {
    const int64_t xofs = ((int64_t)a.M - a.pw + (int64_t)t.ow0 * a.sw) * 16 + (int64_t)(cb - a.cb0) * a.cbstride;
    const int64_t wofs = (int64_t)cb * a.wblock;
    const float* bias = a.bias ? a.bias + cb * 16 : nullptr;
    float* ot = a.o + (size_t)t.ow0 * a.ostride + cb * 16;
    const int cvalid = std::min(16, a.cw - cb * 16);
#define AK_TILE(b)                                                                                               \
    case b:                                                                                                      \
        if constexpr (b <= (VB == 2 ? BMAX2 : BMAX1))                                                            \
            tile<b, VB, SW>(xr, wr, a.nr, xofs, wofs, t.t0, t.t1, a.dws, a.sw * 16, bias, ot, a.ostride, cvalid); \
        break;
    switch (t.b) {
        AK_TILE(1) AK_TILE(2) AK_TILE(3) AK_TILE(4) AK_TILE(5) AK_TILE(6)
        AK_TILE(7) AK_TILE(8) AK_TILE(9) AK_TILE(10) AK_TILE(11) AK_TILE(12)
        default: break;
    }
#undef AK_TILE
}

// Every tile x block of one output row. PM (pixel-major): tiles outer, so each output pixel's channels are
// written together (sequential stores, better for large memory-bound tensors, when all the blocks' weights
// fit in L1); else blocks outer (one block's weights and ring rows stay hot across the row).
template <int SW, bool PM>
void conv_row(const Plan& plan, const float* const* xr, const float* const* wr, const RowArgs& a) {
    if constexpr (PM) {
        for (const Tile& t : plan.tiles2)
            for (int cb = a.cb0; cb < a.cb1; ++cb) {
                if (a.cw - cb * 16 > 8) tile_at<2, SW>(t, cb, xr, wr, a);
                else tile_at<1, SW>(t, cb, xr, wr, a);
            }
    } else {
        for (int cb = a.cb0; cb < a.cb1; ++cb) {
            if (a.cw - cb * 16 > 8) {
                for (const Tile& t : plan.tiles2) tile_at<2, SW>(t, cb, xr, wr, a);
            } else {
                for (const Tile& t : plan.tiles1) tile_at<1, SW>(t, cb, xr, wr, a);
            }
        }
    }
}

// In-place activation of n pixels (stride ostride floats) x cvalid <= 16 channels.
void act_pixels(float* o, int n, int ostride, int cvalid, int act) {
    for (int j = 0; j < n; ++j, o += ostride) {
        __m256 y[2] = {load_n(o, cvalid), load_n(o + 8, cvalid - 8)};
        if (act == ACT_GELU) {
            gelu_n<2>(y);
        } else {
            y[0] = relu256(y[0]);
            y[1] = relu256(y[1]);
        }
        store_n(o, y[0], cvalid);
        store_n(o + 8, y[1], cvalid - 8);
    }
}

// Split the Wo output columns into near-equal tiles of at most bmax pixels, with each tile's tap range.
void plan_tiles(const Img& im, const Geo& g, int bmax, std::vector<Tile>& out) {
    out.clear();
    const int nb = static_cast<int>(ceil_div(im.Wo, bmax));
    int ow0 = 0;
    for (int i = 0; i < nb; ++i) {
        const int b = static_cast<int>((int64_t)im.Wo * (i + 1) / nb - (int64_t)im.Wo * i / nb);
        // tap t is valid for column ow when 0 <= ow * sw - pw + t * dw <= W - 1; take the union over the tile
        int64_t lo = ceil_div(g.pw - (int64_t)(ow0 + b - 1) * im.sw, g.dw);
        int64_t hi = floor_div(im.W - 1 + g.pw - (int64_t)ow0 * im.sw, g.dw) + 1;
        lo = std::max<int64_t>(lo, 0);
        hi = std::min<int64_t>(hi, g.kw);
        out.push_back({ow0, b, static_cast<int>(lo), static_cast<int>(std::max(lo, hi))});
        ow0 += b;
    }
}

// Copy input row src (x + ((n * H + ih) * W) * C + c0) of blocks [cb0, cb1) into the ring slot dst.
void copy_row(const float* src, int W, int C, int cw, int cb0, int cb1, float* dst, size_t cbstride, int M) {
    for (int iw = 0; iw < W; ++iw) {
        const float* s = src + (size_t)iw * C;
        float* d = dst + (size_t)(M + iw) * 16;
        for (int cb = cb0; cb < cb1; ++cb, d += cbstride) {
            const int rem = cw - cb * 16;
            if (rem >= 16) {
                _mm256_store_ps(d, _mm256_loadu_ps(s + cb * 16));
                _mm256_store_ps(d + 8, _mm256_loadu_ps(s + cb * 16 + 8));
            } else {
                _mm256_store_ps(d, load_n(s + cb * 16, rem));
                _mm256_store_ps(d + 8, load_n(s + cb * 16 + 8, rem - 8));
            }
        }
    }
}

template <class T>
T* thread_array(size_t n) {  // per-thread reusable array (no allocation per task)
    static thread_local std::vector<T> v;
    if (v.size() < n) v.resize(n);
    return v.data();
}

void conv_rows(const Img& im, const Geo& g, const Plan& plan, int n, int cb0, int cb1, int oh0, int oh1,
               const LnEpi* ln) {
    const int ncb = cb1 - cb0;
    const int span = (g.kh - 1) * g.dh + 1;
    const int nslot = std::min(span, im.H);
    const int M = std::min(g.pw, (BMAX1 - 1) * im.sw);
    const int Wp = im.W + 2 * M;
    const size_t cbstride = (size_t)Wp * 16;
    const size_t slot = (size_t)ncb * cbstride;
    float* ring = thread_scratch((size_t)nslot * slot);
    for (int s = 0; s < nslot; ++s)
        for (int cb = 0; cb < ncb; ++cb) {
            float* p = ring + s * slot + cb * cbstride;
            std::memset(p, 0, sizeof(float) * 16 * M);
            std::memset(p + (size_t)(M + im.W) * 16, 0, sizeof(float) * 16 * M);
        }
    int* tag = thread_array<int>(nslot);
    std::fill(tag, tag + nslot, -1);
    const float** wr = thread_array<const float*>(2 * (size_t)g.kh);
    const float** rowp = wr + g.kh;
    const bool s1 = im.sw == 1;
    // pixel-major when several blocks' weights fit in L1 together (small kernels, memory-bound rows)
    const bool pm = s1 && ncb > 1 && (size_t)ncb * g.kh * g.kw * 16 * sizeof(float) <= (24 << 10);
    const float* xn = im.x + (size_t)n * im.H * im.W * im.C + g.c0;

    for (int oh = oh0; oh < oh1; ++oh) {
        const int ib = oh * im.sh - g.ph;
        const int r0 = static_cast<int>(std::max<int64_t>(0, ceil_div(-ib, g.dh)));
        const int r1 = static_cast<int>(std::min<int64_t>(g.kh, floor_div(im.H - 1 - ib, g.dh) + 1));
        const int nr = std::max(0, r1 - r0);
        for (int i = 0; i < nr; ++i) {
            const int ih = ib + (r0 + i) * g.dh;
            const int s = ih % nslot;
            if (tag[s] != ih) {
                copy_row(xn + (size_t)ih * im.W * im.C, im.W, im.C, g.cw, cb0, cb1, ring + s * slot, cbstride, M);
                tag[s] = ih;
            }
            rowp[i] = ring + s * slot;
        }
        float* orow = im.out + ((size_t)n * im.Ho + oh) * im.Wo * im.C;
        for (int i = 0; i < nr; ++i) wr[i] = g.w + (size_t)(r0 + i) * g.kw * 16;
        const RowArgs ra{nr, M, g.pw, g.dw * 16, im.sw, cb0, cb1, g.cw, cbstride, (size_t)g.kh * g.kw * 16, g.b,
                         orow + g.c0, im.C};
        if (pm) conv_row<1, true>(plan, rowp, wr, ra);
        else if (s1) conv_row<1, false>(plan, rowp, wr, ra);
        else conv_row<0, false>(plan, rowp, wr, ra);
        if (im.act != ACT_NONE)
            for (int cb = cb0; cb < cb1; ++cb)
                act_pixels(orow + g.c0 + cb * 16, im.Wo, im.C, std::min(16, g.cw - cb * 16), im.act);
        if (ln) {
            for (int ow = 0; ow < im.Wo; ++ow) {
                float* p = orow + (size_t)ow * im.C;
                layernorm_row(p, p, im.C, ln->gamma, ln->beta, ln->eps);
            }
            if (ln->resid) {  // resid row oh = x row oh + rb (stride 1 "same": Ho == H, Wo == W)
                const float* xs = xn + (size_t)oh * im.W * im.C;
                float* rs = ln->resid + ((size_t)n * im.H + oh) * im.W * im.C;
                for (int iw = 0; iw < im.W; ++iw)
                    for (int c = 0; c < im.C; c += 8) {
                        const size_t k = (size_t)iw * im.C + c;
                        store_n(rs + k, _mm256_add_ps(load_n(xs + k, im.C - c), load_n(ln->rb + c, im.C - c)),
                                im.C - c);
                    }
            }
        }
    }
}

// 1 x 1 kernel, no padding: out = act(x * w + b) per channel (any stride).
void pointwise_rows(const Img& im, const Geo& g, int n, int oh0, int oh1) {
    for (int oh = oh0; oh < oh1; ++oh) {
        const float* xs = im.x + ((size_t)n * im.H + (size_t)oh * im.sh) * im.W * im.C + g.c0;
        float* os = im.out + ((size_t)n * im.Ho + oh) * im.Wo * im.C + g.c0;
        for (int ow = 0; ow < im.Wo; ++ow) {
            const float* s = xs + (size_t)ow * im.sw * im.C;
            float* d = os + (size_t)ow * im.C;
            for (int c = 0; c < g.cw; c += 8) {
                const int k = g.cw - c;
                __m256 y = _mm256_fmadd_ps(load_n(s + c, k), load_n(g.w + c, k),
                                           g.b ? load_n(g.b + c, k) : _mm256_setzero_ps());
                if (im.act == ACT_RELU) y = relu256(y);
                else if (im.act == ACT_GELU) y = gelu256(y);
                store_n(d + c, y, k);
            }
        }
    }
}

struct Task {
    int g, n, cb0, cb1, oh0, oh1;  // g < 0: every group, all channels (a mixer's row band)
};

// Bytes of ring buffer a task needs per 16-channel block.
size_t ring_bytes_per_block(const Img& im, const Geo& g) {
    const int M = std::min(g.pw, (BMAX1 - 1) * im.sw);
    return (size_t)std::min((g.kh - 1) * g.dh + 1, im.H) * (im.W + 2 * M) * 16 * sizeof(float);
}

void run(const Img& im, const std::vector<Geo>& geos, const LnEpi* ln, int nthreads) {
    if (im.N <= 0 || im.Ho <= 0 || im.Wo <= 0 || im.C <= 0 || geos.empty()) return;
    nthreads = std::max(1, nthreads);
    std::vector<Plan> plans(geos.size());
    for (size_t i = 0; i < geos.size(); ++i) {
        plan_tiles(im, geos[i], BMAX1, plans[i].tiles1);
        plan_tiles(im, geos[i], BMAX2, plans[i].tiles2);
    }
    std::vector<Task> tasks;
    if (ln) {  // LayerNorm needs every channel of a pixel: tasks own all blocks of a range of rows
        const int nch = static_cast<int>(std::clamp<int64_t>(ceil_div(2 * nthreads, im.N), 1, im.Ho));
        for (int n = 0; n < im.N; ++n)
            for (int c = 0; c < nch; ++c)
                tasks.push_back({0, n, 0, geos[0].nblocks(), im.Ho * c / nch, im.Ho * (c + 1) / nch});
    } else if (geos.size() > 1) {
        // A mixer: tasks are bands of <= ~8 rows of one image running every group in turn, so the band's
        // input and output rows (all channels) stay in L2 between groups and go to memory once.
        const int64_t row_bytes = (int64_t)im.W * im.C * sizeof(float);
        const int64_t by_cache = std::max<int64_t>(1, (256 << 10) / std::max<int64_t>(1, 2 * row_bytes));
        const int64_t by_tasks = ceil_div((int64_t)im.N * im.Ho, 4 * nthreads);
        const int rows = static_cast<int>(std::clamp<int64_t>(std::min(by_cache, by_tasks), 1, 8));
        for (int n = 0; n < im.N; ++n)
            for (int oh = 0; oh < im.Ho; oh += rows) tasks.push_back({-1, n, 0, 0, oh, std::min(oh + rows, im.Ho)});
    } else {
        // Aim at ~4 tasks per thread: tasks are (image, a few channel blocks, all rows) while there are enough
        // blocks (several blocks per task when images are small; a task's ring stays <= 128 KiB), else rows
        // are split too.
        const Geo& g = geos[0];
        const int64_t want = nthreads == 1 ? 1 : 4 * nthreads;
        const int nb = g.pointwise() ? 1 : g.nblocks();
        const int64_t units = nb * (int64_t)im.N;
        const int nch = static_cast<int>(std::clamp<int64_t>(ceil_div(want, units), 1, im.Ho));
        const int64_t cap = std::max<int64_t>(1, (128 << 10) / ring_bytes_per_block(im, g));
        const int per = static_cast<int>(std::clamp<int64_t>(units / want, 1, cap));
        for (int n = 0; n < im.N; ++n)
            for (int cb = 0; cb < nb; cb += per)
                for (int c = 0; c < nch; ++c)
                    tasks.push_back({0, n, cb, std::min(cb + per, nb), im.Ho * c / nch, im.Ho * (c + 1) / nch});
    }
    const int64_t nt = static_cast<int64_t>(tasks.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) if (nthreads > 1 && nt > 1)
    for (int64_t i = 0; i < nt; ++i) {
        const Task& t = tasks[i];
        for (int gi = std::max(t.g, 0); gi < (t.g < 0 ? (int)geos.size() : t.g + 1); ++gi) {
            const Geo& g = geos[gi];
            const int cb1 = t.g < 0 ? g.nblocks() : t.cb1;
            if (g.pointwise() && !ln) pointwise_rows(im, g, t.n, t.oh0, t.oh1);
            else conv_rows(im, g, plans[gi], t.n, t.cb0, cb1, t.oh0, t.oh1, ln);
        }
    }
}

}  // namespace
}  // namespace ak

using namespace ak;

// Entry points take one block of int64 arguments (pointers as integers, 0 = null): ctypes converts a
// single pointer argument ~10x faster than a long typed argument list.
extern "C" {

// Depthwise conv, multiplier 1. a = [x, w, b, out, N, H, W, C, kh, kw, sh, sw, ph, pw, dh, dw, act, nthreads].
// w: packed [ceil(C/16)][kh][kw][16]; b: [ceil(C/16)*16] or null; out: [N, Ho, Wo, C] with
// Ho = (H + 2ph - dh(kh-1) - 1) / sh + 1 (likewise Wo).
void ak_dwconv_nhwc(const int64_t* a) {
    const int N = (int)a[4], H = (int)a[5], W = (int)a[6], C = (int)a[7], kh = (int)a[8], kw = (int)a[9];
    const int sh = (int)a[10], sw = (int)a[11], ph = (int)a[12], pw = (int)a[13], dh = (int)a[14], dw = (int)a[15];
    Img im{ptr<const float>(a[0]), ptr<float>(a[3]), N, H, W, C, (H + 2 * ph - dh * (kh - 1) - 1) / sh + 1,
           (W + 2 * pw - dw * (kw - 1) - 1) / sw + 1, sh, sw, (int)a[16]};
    std::vector<Geo> geos{{0, C, kh, kw, ph, pw, dh, dw, ptr<const float>(a[1]), ptr<const float>(a[2])}};
    run(im, geos, nullptr, (int)a[17]);
}

// Several channel ranges with their own "same" kernels (odd kh, kw; stride 1, dilation 1) in one pass.
// a = [x, out, N, H, W, C, ngroups, desc, wbuf, bbuf, act, nthreads]. desc: ngroups rows of int32
// [c0, cw, kh, kw, w_offset, b_offset (-1: none)] into wbuf / bbuf (floats); each group's weight is packed
// like ak_dwconv_nhwc's. The groups must cover [0, C) exactly once.
void ak_mixer_nhwc(const int64_t* a) {
    Img im{ptr<const float>(a[0]), ptr<float>(a[1]), (int)a[2], (int)a[3], (int)a[4], (int)a[5], (int)a[3],
           (int)a[4], 1, 1, (int)a[10]};
    const int32_t* desc = ptr<const int32_t>(a[7]);
    const float* wbuf = ptr<const float>(a[8]);
    const float* bbuf = ptr<const float>(a[9]);
    std::vector<Geo> geos;
    for (int i = 0; i < (int)a[6]; ++i) {
        const int32_t* d = desc + 6 * i;
        geos.push_back({d[0], d[1], d[2], d[3], (d[2] - 1) / 2, (d[3] - 1) / 2, 1, 1, wbuf + d[4],
                        d[5] >= 0 ? bbuf + d[5] : nullptr});
    }
    run(im, geos, nullptr, (int)a[11]);
}

// Stride-1 "same" depthwise conv + bias, then LayerNorm over C per pixel; if rb is not null also
// resid = x + rb. a = [x, w, b, kh, kw, gamma, beta, rb, resid, out, N, H, W, C, nthreads];
// out and resid: [N, H, W, C].
void ak_dwconv_ln_nhwc(const int64_t* a, float eps) {
    const int kh = (int)a[3], kw = (int)a[4], H = (int)a[11], W = (int)a[12];
    Img im{ptr<const float>(a[0]), ptr<float>(a[9]), (int)a[10], H, W, (int)a[13], H, W, 1, 1, ACT_NONE};
    std::vector<Geo> geos{{0, im.C, kh, kw, (kh - 1) / 2, (kw - 1) / 2, 1, 1, ptr<const float>(a[1]),
                           ptr<const float>(a[2])}};
    const float* rb = ptr<const float>(a[7]);
    LnEpi ln{ptr<const float>(a[5]), ptr<const float>(a[6]), eps, rb, rb ? ptr<float>(a[8]) : nullptr};
    run(im, geos, &ln, (int)a[14]);
}

}  // extern "C"
