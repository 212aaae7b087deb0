/*
rlo_common.cuh — hand-written device helpers shared by every generated rlo kernel.

The runtime prepends this file to the generated source before NVRTC compiles it (no include path
and no CUDA header is needed: bf16/f16 are converted by hand), so the PTX depends only on the
text of the two files, the architecture and the options (the cache key).

Conventions (llm.c style):
- every helper that cooperates across a block is called by *all* threads of the block, with the
  same arguments, and ends with __syncthreads() so shared memory can be reused at once;
- blockDim.x is a multiple of 32 and at most 1024 (the runtime launches 256 or 1024 threads);
- reductions are deterministic: each thread folds its elements in a fixed (strided) order, then a
  fixed tree (warp shuffles, then the 32 warp partials in shared memory). No atomics anywhere.
*/
#pragma once

#define RLO_INF __int_as_float(0x7f800000)
#define RLO_NAN __int_as_float(0x7fffffff)

// -----------------------------------------------------------------------------------------------
// storage types of token inputs (math is always f32)

struct rlo_bf16 { unsigned short x; };
struct rlo_f16 { unsigned short x; };

__device__ __forceinline__ float rlo_ld(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float rlo_ld(const rlo_bf16* p, long long i) {
    return __uint_as_float(((unsigned)p[i].x) << 16);
}
__device__ __forceinline__ float rlo_ld(const rlo_f16* p, long long i) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(p[i].x));
    return f;
}

// -----------------------------------------------------------------------------------------------
// elementwise math that must not overflow

__device__ __forceinline__ float rlo_sigmoid(float x) {
    if (x >= 0.0f) { return 1.0f / (1.0f + expf(-x)); }
    const float e = expf(x);
    return e / (1.0f + e);
}
__device__ __forceinline__ float rlo_softplus(float x) {
    return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x)));
}

// psi(x) = d/dx lgamma(x) (autodiff of `lgamma`; `rlo_compiler::special::digamma` in f64):
// reflection below 1/2, recurrence up to x >= 10, asymptotic series; NaN at the poles.
__device__ __noinline__ float rlo_digamma(float xf) {
    double x = (double)xf;
    if (isnan(x) || (x <= 0.0 && x == floor(x))) { return RLO_NAN; }
    double acc = 0.0;
    if (x < 0.5) {
        const double pi = 3.14159265358979323846;
        acc -= pi / tan(pi * x);
        x = 1.0 - x;
    }
    #pragma unroll 1
    while (x < 10.0) { acc -= 1.0 / x; x += 1.0; }
    const double r = 1.0 / (x * x);
    const double series = r * (1.0 / 12.0 - r * (1.0 / 120.0 - r * (1.0 / 252.0 - r * (1.0 / 240.0 - r * (1.0 / 132.0)))));
    return (float)(acc + log(x) - 0.5 / x - series);
}
__device__ __forceinline__ float rlo_b2f(bool b) { return b ? 1.0f : 0.0f; }

// -----------------------------------------------------------------------------------------------
// block reductions (all threads call; result returned to every thread)
//
// The block-wide helpers are __noinline__: a program calls them once per accumulator and sweep,
// never per token, and inlining every call site made NVRTC's work the larger part of a cold
// compile (grpo to PTX: 572 -> 324 ms, dapo 404 -> 240, gspo 376 -> 271 on the dev machine).

struct rlo_op_sum { __device__ static float f(float a, float b) { return a + b; } };
struct rlo_op_max { __device__ static float f(float a, float b) { return fmaxf(a, b); } };
struct rlo_op_min { __device__ static float f(float a, float b) { return fminf(a, b); } };

template <class Op>
__device__ __noinline__ float rlo_block_reduce(float v) {
    __shared__ float part[32];
    for (int o = 16; o > 0; o >>= 1) { v = Op::f(v, __shfl_down_sync(0xffffffffu, v, o)); }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = (blockDim.x + 31) >> 5;
    if (lane == 0) { part[warp] = v; }
    __syncthreads();
    if (warp == 0) {
        float w = part[0];
        for (int k = 1; k < nwarps; ++k) { w = Op::f(w, part[k]); }
        if (lane == 0) { part[0] = w; }
    }
    __syncthreads();
    const float r = part[0];
    __syncthreads();
    return r;
}
// v[0..k) reduced over the block at once (op[j]: 0 sum, 1 max, 2 min; k <= RLO_REDUCE_N_MAX);
// every thread gets the results in v. The same order of operations per value as
// rlo_block_reduce (the same bits), with one round of barriers for all k; thread j combines
// value j's warp partials. Loops rolled: unrolled, this helper alone cost ptxas 57 ms (20 now).
#define RLO_REDUCE_N_MAX 64
__device__ __forceinline__ float rlo_op_n(unsigned char op, float a, float b) {
    return op == 0 ? a + b : op == 1 ? fmaxf(a, b) : fminf(a, b);
}
__device__ __noinline__ void rlo_block_reduce_n(float* v, const unsigned char* op, int k) {
    __shared__ float part[32 * RLO_REDUCE_N_MAX];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = (blockDim.x + 31) >> 5;
    #pragma unroll 1
    for (int j = 0; j < k; ++j) {
        float x = v[j];
        #pragma unroll 1
        for (int o = 16; o > 0; o >>= 1) { x = rlo_op_n(op[j], x, __shfl_down_sync(0xffffffffu, x, o)); }
        if (lane == 0) { part[j * 32 + warp] = x; }
    }
    __syncthreads();
    #pragma unroll 1
    for (int j = threadIdx.x; j < k; j += blockDim.x) {
        float w = part[j * 32];
        #pragma unroll 1
        for (int q = 1; q < nwarps; ++q) { w = rlo_op_n(op[j], w, part[j * 32 + q]); }
        part[j * 32] = w;
    }
    __syncthreads();
    #pragma unroll 1
    for (int j = 0; j < k; ++j) { v[j] = part[j * 32]; }
    __syncthreads();
}
__device__ __forceinline__ float rlo_block_sum(float v) { return rlo_block_reduce<rlo_op_sum>(v); }
__device__ __forceinline__ float rlo_block_max(float v) { return rlo_block_reduce<rlo_op_max>(v); }
__device__ __forceinline__ float rlo_block_min(float v) { return rlo_block_reduce<rlo_op_min>(v); }

__device__ __noinline__ unsigned long long rlo_block_count(unsigned long long v) {
    __shared__ unsigned long long part[32];
    for (int o = 16; o > 0; o >>= 1) { v += __shfl_down_sync(0xffffffffu, v, o); }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = (blockDim.x + 31) >> 5;
    if (lane == 0) { part[warp] = v; }
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned long long w = 0;
        for (int k = 0; k < nwarps; ++k) { w += part[k]; }
        part[0] = w;
    }
    __syncthreads();
    const unsigned long long r = part[0];
    __syncthreads();
    return r;
}

// -----------------------------------------------------------------------------------------------
// scans along one sequence (block-cooperative, chunks of blockDim.x tokens with a carry)
//
// All four scans are the linear recurrence y_r = a_r * y_{r-1} + b_r over the tokens in scan
// order r (forward for cumsum and the forward discounted scan `out[t] = x[t] + d[t-1]*out[t-1]`,
// backward for the reverse scans), computed as an inclusive block
// scan of (a, b) pairs under composition (a1,b1) then (a2,b2) = (a2*a1, a2*b1 + b2).

struct rlo_affine { float a, b; };

__device__ __forceinline__ rlo_affine rlo_affine_then(rlo_affine e1, rlo_affine e2) {
    rlo_affine r;
    r.a = e2.a * e1.a;
    r.b = e2.a * e1.b + e2.b;
    return r;
}

// Inclusive scan of one pair per thread in thread order; returns this thread's prefix and writes
// the whole block's composition to *total.
__device__ __noinline__ rlo_affine rlo_block_scan_affine(rlo_affine v, rlo_affine* total) {
    __shared__ rlo_affine part[32];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = (blockDim.x + 31) >> 5;
    for (int o = 1; o < 32; o <<= 1) {
        rlo_affine u;
        u.a = __shfl_up_sync(0xffffffffu, v.a, o);
        u.b = __shfl_up_sync(0xffffffffu, v.b, o);
        if (lane >= o) { v = rlo_affine_then(u, v); }
    }
    if (lane == 31) { part[warp] = v; }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int k = 1; k < nwarps; ++k) { part[k] = rlo_affine_then(part[k - 1], part[k]); }
    }
    __syncthreads();
    if (warp > 0) { v = rlo_affine_then(part[warp - 1], v); }
    *total = part[nwarps - 1];
    __syncthreads();
    return v;
}

#define RLO_SCAN_CUMSUM 0
#define RLO_SCAN_REVCUMSUM 1
#define RLO_SCAN_DISCOUNTED 2
#define RLO_SCAN_DISCOUNTED_FWD 3
#define RLO_SCAN_NEXT 4
#define RLO_SCAN_PREV 5

// x(t): the value at position t; d(t): the discount at t (only for RLO_SCAN_DISCOUNTED);
// st(t, y): stores the result at t. The shifts (out[t] = x[t+1] or x[t-1], 0 past an end) are
// no scan: each position reads its neighbour.
template <class X, class D, class S>
__device__ void rlo_seq_scan(int kind, long long len, X x, D d, S st) {
    if (kind == RLO_SCAN_NEXT || kind == RLO_SCAN_PREV) {
        for (long long t = threadIdx.x; t < len; t += blockDim.x) {
            const long long u = kind == RLO_SCAN_NEXT ? t + 1 : t - 1;
            st(t, u >= 0 && u < len ? x(u) : 0.0f);
        }
        __syncthreads();
        return;
    }
    float carry = 0.0f;
    for (long long base = 0; base < len; base += blockDim.x) {
        const long long r = base + threadIdx.x;
        const bool live = r < len;
        const bool fwd = kind == RLO_SCAN_CUMSUM || kind == RLO_SCAN_DISCOUNTED_FWD;
        const long long t = fwd ? r : len - 1 - r;
        rlo_affine e;
        e.a = 1.0f;
        e.b = 0.0f;
        if (live) {
            e.b = x(t);
            if (kind == RLO_SCAN_DISCOUNTED) { e.a = (t == len - 1) ? 0.0f : d(t); }
            if (kind == RLO_SCAN_DISCOUNTED_FWD) { e.a = (t == 0) ? 0.0f : d(t - 1); }
        }
        rlo_affine total;
        const rlo_affine p = rlo_block_scan_affine(e, &total);
        if (live) { st(t, p.a * carry + p.b); }
        carry = total.a * carry + total.b;
    }
    __syncthreads();
}

// -----------------------------------------------------------------------------------------------
// order statistics
//
// The order of Rank and Quantile (spec): IEEE, -0 == +0, NaN after every number, NaNs equal.

__device__ __forceinline__ bool rlo_before(float y, float x) {
    return y == y && (x != x || y < x);
}
__device__ __forceinline__ bool rlo_same(float y, float x) {
    return y == x || (y != y && x != x);
}
//
// `each(f)` calls f(value) for this thread's share of the elements of one set (block version) or
// for all elements in a fixed order (serial version). Ties do not matter for the value.

__device__ __forceinline__ unsigned rlo_key(float f) {
    if (f != f) { return 0xffffffffu; }  // every NaN after +inf
    const unsigned u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float rlo_unkey(unsigned k) {
    const unsigned u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
    return __uint_as_float(u);
}

// k-th smallest (0-based) by radix select over the 32 key bits: 32 counting sweeps.
template <class E>
__device__ float rlo_block_kth(E each, unsigned long long k) {
    unsigned prefix = 0;
    for (int bit = 31; bit >= 0; --bit) {
        const unsigned hi = bit == 31 ? 0u : (0xffffffffu << (bit + 1));
        unsigned long long c = 0;
        each([&](float v) {
            const unsigned key = rlo_key(v);
            if ((key & hi) == prefix && ((key >> bit) & 1u) == 0u) { ++c; }
        });
        c = rlo_block_count(c);
        if (k >= c) {
            k -= c;
            prefix |= (1u << bit);
        }
    }
    return rlo_unkey(prefix);
}

__device__ __forceinline__ float rlo_clamp01(float q) {
    return q != q ? 0.0f : fminf(fmaxf(q, 0.0f), 1.0f);
}

// numpy 'linear' quantile of the set; 0 for an empty set.
template <class E>
__device__ float rlo_block_quantile(E each, float q) {
    unsigned long long n = 0;
    each([&](float) { ++n; });
    n = rlo_block_count(n);
    if (n == 0) { return 0.0f; }
    const double pos = (double)rlo_clamp01(q) * (double)(n - 1);
    const unsigned long long lo = (unsigned long long)floor(pos);
    const unsigned long long hi = lo + 1 < n ? lo + 1 : n - 1;
    const float frac = (float)(pos - (double)lo);
    const float vlo = rlo_block_kth(each, lo);
    const float vhi = hi == lo ? vlo : rlo_block_kth(each, hi);
    return vlo + (vhi - vlo) * frac;
}

// Serial k-th smallest for small sets (one thread per set): the element whose rank (smaller
// elements, then equal ones earlier in the order) is k.
template <class E>
__device__ float rlo_serial_kth(E each, unsigned long long k) {
    float found = 0.0f;
    unsigned long long j = 0;
    each([&](float x) {
        unsigned long long rank = 0, jj = 0;
        each([&](float y) {
            if (rlo_before(y, x) || (rlo_same(y, x) && jj < j)) { ++rank; }
            ++jj;
        });
        if (rank == k) { found = x; }
        ++j;
    });
    return found;
}

template <class E>
__device__ float rlo_serial_quantile(E each, float q) {
    unsigned long long n = 0;
    each([&](float) { ++n; });
    if (n == 0) { return 0.0f; }
    const double pos = (double)rlo_clamp01(q) * (double)(n - 1);
    const unsigned long long lo = (unsigned long long)floor(pos);
    const unsigned long long hi = lo + 1 < n ? lo + 1 : n - 1;
    const float frac = (float)(pos - (double)lo);
    const float vlo = rlo_serial_kth(each, lo);
    const float vhi = hi == lo ? vlo : rlo_serial_kth(each, hi);
    return vlo + (vhi - vlo) * frac;
}

// -----------------------------------------------------------------------------------------------
// ranks of token values over the whole batch: a stable LSD radix sort of (key, slot) pairs,
// 4-bit digits, 8 passes (hist -> scan -> scatter each), over tiles of RLO_SORT_TILE slots.
// Deterministic without atomics: every count is a fixed-order serial sum, and the scatter is
// stable (a tile's slots go in slot order), so equal keys keep slot order: the rank tie-break.
// Keys, slots and counts are stored as bit patterns in float buffers (never used as numbers).
// The pass helpers are __noinline__: every digit pass has its own thin kernel, and inlining the
// helper into each of them multiplied NVRTC's work (clip_cov: 1.6 s -> 1.3 s to PTX).

#define RLO_SORT_TILE 4096
#define RLO_SORT_MAX_THREADS 256

// The rank order as an unsigned key: IEEE order, -0 == +0, every NaN equal and after +inf;
// 0xffffffff (after NaN) marks padding slots.
__device__ __forceinline__ unsigned rlo_rank_key(float x) {
    if (x != x) { return 0xfffffffeu; }
    return rlo_key(x == 0.0f ? 0.0f : x);
}

__device__ __forceinline__ long long rlo_sort_tiles(long long n) {
    return (n + RLO_SORT_TILE - 1) / RLO_SORT_TILE;
}

// Thread u of the block counts the digits of its contiguous share of slots [lo, hi) into
// cnt[d * blockDim.x + u].
__device__ void rlo_sort_count(const float* key, long long lo, long long hi, int shift,
                               unsigned* cnt) {
    const int nt = blockDim.x, u = threadIdx.x;
    const long long per = (RLO_SORT_TILE + nt - 1) / nt;
    for (int d = 0; d < 16; ++d) { cnt[d * nt + u] = 0u; }
    const long long a = lo + u * per;
    const long long b = a + per < hi ? a + per : hi;
    for (long long i = a; i < b; ++i) {
        ++cnt[((__float_as_uint(key[i]) >> shift) & 15u) * nt + u];
    }
    __syncthreads();
}

// hist[d * n_tiles + tile]: how many keys of the tile have digit d at `shift`.
__device__ __noinline__ void rlo_sort_hist(const float* key, long long n, int shift, float* hist) {
    __shared__ unsigned cnt[16 * RLO_SORT_MAX_THREADS];
    const long long n_tiles = rlo_sort_tiles(n);
    for (long long tile = blockIdx.x; tile < n_tiles; tile += gridDim.x) {
        const long long lo = tile * RLO_SORT_TILE;
        const long long hi = lo + RLO_SORT_TILE < n ? lo + RLO_SORT_TILE : n;
        rlo_sort_count(key, lo, hi, shift, cnt);
        if (threadIdx.x < 16) {
            unsigned c = 0;
            for (int u = 0; u < (int)blockDim.x; ++u) { c += cnt[threadIdx.x * blockDim.x + u]; }
            hist[threadIdx.x * n_tiles + tile] = __uint_as_float(c);
        }
        __syncthreads();
    }
}

// Exclusive prefix sums of hist[0, len) in place (one block): digit-major, so entry (d, tile)
// becomes where the tile's keys with digit d start in the output.
__device__ __noinline__ void rlo_sort_scan(float* hist, long long len) {
    __shared__ unsigned part[1024];
    const int nt = blockDim.x, u = threadIdx.x;
    const long long per = (len + nt - 1) / nt;
    const long long a = u * per;
    const long long b = a + per < len ? a + per : len;
    unsigned c = 0;
    for (long long i = a; i < b; ++i) { c += __float_as_uint(hist[i]); }
    part[u] = c;
    __syncthreads();
    if (u == 0) {
        unsigned run = 0;
        for (int k = 0; k < nt; ++k) {
            const unsigned x = part[k];
            part[k] = run;
            run += x;
        }
    }
    __syncthreads();
    unsigned run = part[u];
    for (long long i = a; i < b; ++i) {
        const unsigned x = __float_as_uint(hist[i]);
        hist[i] = __uint_as_float(run);
        run += x;
    }
    __syncthreads();
}

// One stable counting-sort pass by the digit at `shift`: (key, slot) -> (key_out, slot_out).
__device__ __noinline__ void rlo_sort_scatter(const float* key, const float* slot, float* key_out,
                                 float* slot_out, long long n, int shift, const float* hist) {
    __shared__ unsigned cnt[16 * RLO_SORT_MAX_THREADS];
    const long long n_tiles = rlo_sort_tiles(n);
    const int nt = blockDim.x, u = threadIdx.x;
    for (long long tile = blockIdx.x; tile < n_tiles; tile += gridDim.x) {
        const long long lo = tile * RLO_SORT_TILE;
        const long long hi = lo + RLO_SORT_TILE < n ? lo + RLO_SORT_TILE : n;
        rlo_sort_count(key, lo, hi, shift, cnt);
        if (u < 16) {
            unsigned run = __float_as_uint(hist[u * n_tiles + tile]);
            for (int k = 0; k < nt; ++k) {
                const unsigned x = cnt[u * nt + k];
                cnt[u * nt + k] = run;
                run += x;
            }
        }
        __syncthreads();
        const long long per = (RLO_SORT_TILE + nt - 1) / nt;
        const long long a = lo + u * per;
        const long long b = a + per < hi ? a + per : hi;
        for (long long i = a; i < b; ++i) {
            const float k = key[i];
            const unsigned at = cnt[((__float_as_uint(k) >> shift) & 15u) * nt + u]++;
            key_out[at] = k;
            slot_out[at] = slot[i];
        }
        __syncthreads();
    }
}

// rank[slot of the k-th sorted key] = k for the n_valid real tokens (sorted first); 0 at padding.
__device__ __noinline__ void rlo_sort_place(const float* slot, long long n, long long n_valid, float* rank) {
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += step) {
        rank[__float_as_uint(slot[k])] = k < n_valid ? (float)k : 0.0f;
    }
}

// -----------------------------------------------------------------------------------------------
// the batch quantile of token values: an MSD radix select of its two order statistics (lo, hi)
// at once, 4 bits a pass, 8 passes over tiles of RLO_SORT_TILE slots (each: per-tile counts of
// the next digit among the keys that match the prefix found so far, then one block picks the
// digit). Same result as rlo_block_quantile, without one block reading every token 64 times.
// Keys: rlo_key order with every NaN as 0xfffffffe; 0xffffffff marks slots outside the set
// (filtered out, padding). `st` (bit patterns): n, k_lo, k_hi, prefix_lo, prefix_hi, frac.

#define RLO_SEL_COUNTERS 33

__device__ __forceinline__ unsigned rlo_select_key(float x) {
    return x != x ? 0xfffffffeu : rlo_key(x);
}

// hist[c * n_tiles + tile]: c < 16: keys matching prefix_lo above `shift + 4` with digit c;
// 16 <= c < 32: the same for prefix_hi; c = 32: keys in the set (first pass only).
__device__ __noinline__ void rlo_select_hist(const float* key, long long n, int shift, const float* st,
                                float* hist) {
    __shared__ unsigned cnt[RLO_SEL_COUNTERS * RLO_SORT_MAX_THREADS];
    const long long n_tiles = rlo_sort_tiles(n);
    const int nt = blockDim.x, u = threadIdx.x;
    const int above = shift + 4;
    const unsigned plo = above >= 32 ? 0u : __float_as_uint(st[3]) >> above;
    const unsigned phi = above >= 32 ? 0u : __float_as_uint(st[4]) >> above;
    for (long long tile = blockIdx.x; tile < n_tiles; tile += gridDim.x) {
        const long long lo = tile * RLO_SORT_TILE;
        const long long hi = lo + RLO_SORT_TILE < n ? lo + RLO_SORT_TILE : n;
        for (int c = 0; c < RLO_SEL_COUNTERS; ++c) { cnt[c * nt + u] = 0u; }
        const long long per = (RLO_SORT_TILE + nt - 1) / nt;
        const long long a = lo + u * per;
        const long long b = a + per < hi ? a + per : hi;
        for (long long i = a; i < b; ++i) {
            const unsigned k = __float_as_uint(key[i]);
            if (k == 0xffffffffu) { continue; }
            const unsigned d = (k >> shift) & 15u;
            const unsigned top = above >= 32 ? 0u : k >> above;
            if (top == plo) { ++cnt[d * nt + u]; }
            if (top == phi) { ++cnt[(16 + d) * nt + u]; }
            ++cnt[32 * nt + u];
        }
        __syncthreads();
        for (int w = u; w < RLO_SEL_COUNTERS; w += nt) {  // any block size
            unsigned c = 0;
            for (int v = 0; v < nt; ++v) { c += cnt[w * nt + v]; }
            hist[w * n_tiles + tile] = __uint_as_float(c);
        }
        __syncthreads();
    }
}

// One block: totals per counter (fixed order), then the digit of each order statistic. The
// first pass also counts the set and turns q into the two ranks and the interpolation weight.
__device__ __noinline__ void rlo_select_pick(const float* hist, long long n, int shift, bool first, float q,
                                float* st) {
    __shared__ unsigned tot[RLO_SEL_COUNTERS];
    const long long n_tiles = rlo_sort_tiles(n);
    for (int w = threadIdx.x; w < RLO_SEL_COUNTERS; w += blockDim.x) {  // any block size
        unsigned c = 0;
        for (long long t = 0; t < n_tiles; ++t) { c += __float_as_uint(hist[w * n_tiles + t]); }
        tot[w] = c;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        if (first) {
            const unsigned cnt = tot[32];
            unsigned klo = 0, khi = 0;
            float frac = 0.0f;
            if (cnt > 0) {
                const double pos = (double)rlo_clamp01(q) * (double)(cnt - 1);
                klo = (unsigned)floor(pos);
                khi = klo + 1 < cnt ? klo + 1 : cnt - 1;
                frac = (float)(pos - (double)klo);
            }
            st[0] = __uint_as_float(cnt);
            st[1] = __uint_as_float(klo);
            st[2] = __uint_as_float(khi);
            st[3] = __uint_as_float(0u);
            st[4] = __uint_as_float(0u);
            st[5] = frac;
        }
        for (int w = 0; w < 2; ++w) {
            unsigned k = __float_as_uint(st[1 + w]);
            unsigned prefix = __float_as_uint(st[3 + w]);
            for (unsigned d = 0; d < 16; ++d) {
                const unsigned c = tot[16 * w + d];
                if (k < c || d == 15) {
                    prefix |= d << shift;
                    break;
                }
                k -= c;
            }
            st[1 + w] = __uint_as_float(k);
            st[3 + w] = __uint_as_float(prefix);
        }
    }
    __syncthreads();
}

// numpy 'linear' quantile from the two order statistics; 0 for an empty set.
__device__ __forceinline__ float rlo_select_value(const float* st) {
    if (__float_as_uint(st[0]) == 0u) { return 0.0f; }
    const float vlo = rlo_unkey(__float_as_uint(st[3]));
    const float vhi = rlo_unkey(__float_as_uint(st[4]));
    return vlo + (vhi - vlo) * st[5];
}
