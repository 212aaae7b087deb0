/*
emu.h — runs rlo's generated CUDA C unchanged on the host, for tests (tests/cuda_emu.rs).

Prepended (with `rlo_common.cuh`) to the generated programs and compiled by g++ -std=c++20.
Every CUDA thread of a block is a *fiber* (its own stack, cooperative switches on the calling OS
thread); the blocks of a launch run one after another, so `__shared__` can be `static`.

- `__syncthreads()` parks the fiber; when every live thread of the block is parked at a barrier,
  all are released. A barrier that not all threads reach (one waits while another has returned,
  or two threads wait at different `__syncthreads()` sites) is reported as an error: on a GPU it
  is undefined behaviour (a hang or a wrong result).
- `__shfl_{down,up}_sync(0xffffffff, ..)`: the 32 lanes of a warp meet at a warp barrier, exchange
  values, and meet again; a lane that is missing (returned, or waiting elsewhere) is an error.
- The blocks of a launch run in ascending, descending or a seeded permuted order (with the
  thread order below), so results that depend on which block runs first change too.
- Between two barriers the threads run one at a time, in an order chosen per launch: ascending
  warp and lane index, descending, or seeded random permutations. A warp runs ahead of the
  others up to the next `__syncthreads()` (through its shuffles), as it may on a GPU. Code whose
  result depends on that order has a data race between barriers (a missing `__syncthreads()`);
  the tests run every program under several orders and require the same bits.
- Math is the host's libm in f32 (`expf`, `log1pf`, ...): within an ulp or two of CUDA's.

What it cannot see: timing, the GPU memory model beyond barriers (no reordering of plain loads and
stores, no warp-level lockstep assumptions other than the ones above), NVRTC-specific behaviour.
*/
#pragma once

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <mutex>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __restrict__ __restrict
// blocks of one launch run one after another, so per-block shared memory can be static; it is
// all in one section, filled with 0xff bytes (NaN floats, huge integers) before every block, so
// a read of shared memory that no thread of the block has written yet shows
#define __shared__ __attribute__((section("rlo_emu_shared"))) static
extern "C" char __start_rlo_emu_shared[], __stop_rlo_emu_shared[];

struct rlo_emu_dim3 { unsigned x, y, z; };
// external linkage (not static) and a memory clobber after every switch: the compiler must reload
// them after a barrier, where the scheduler has run other threads
rlo_emu_dim3 threadIdx, blockIdx, blockDim, gridDim;

static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }

// IEEE half → float (replaces the PTX `cvt.f32.f16` of rlo_common.cuh)
static inline float rlo_emu_h2f(unsigned short h) {
    const unsigned sign = (unsigned)(h >> 15) << 31, exp = (h >> 10) & 31u, man = h & 1023u;
    unsigned u;
    if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        u = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) {
        u = sign;
    } else {  // subnormal half: normalize
        int e = -1;
        unsigned m = man;
        do { ++e; m <<= 1; } while ((m & 1024u) == 0);
        u = sign | ((unsigned)(112 - e) << 23) | ((m & 1023u) << 13);
    }
    return __uint_as_float(u);
}

// -----------------------------------------------------------------------------------------------
// fibers

#if defined(__x86_64__) && !defined(RLO_EMU_UCONTEXT)
// rlo_emu_switch(&save_sp, new_sp): saves the callee-saved registers on the current stack, stores
// the stack pointer, switches to new_sp and restores the registers saved there.
extern "C" void rlo_emu_switch(void** save_sp, void* new_sp);
asm(R"(
    .text
    .p2align 4
    .type rlo_emu_switch, @function
rlo_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size rlo_emu_switch, .-rlo_emu_switch
)");
#else
#include <ucontext.h>
#undef RLO_EMU_UCONTEXT
#define RLO_EMU_UCONTEXT 1
#endif

enum rlo_emu_state { RLO_RUN, RLO_BAR, RLO_WARP, RLO_DONE };

struct rlo_emu_fiber {
    char* stack;
#if RLO_EMU_UCONTEXT
    ucontext_t uc;
#else
    void* sp;
#endif
    int state;
    const char* file;
    int line;
};

static const size_t RLO_EMU_STACK = 512 * 1024;
static const int RLO_EMU_MAX_THREADS = 1024;

rlo_emu_fiber rlo_emu_f[RLO_EMU_MAX_THREADS];
#if RLO_EMU_UCONTEXT
static ucontext_t rlo_emu_main_uc;
#else
static void* rlo_emu_main_sp;
#endif
static int rlo_emu_cur;
static void (*rlo_emu_body)(void*);
static void* rlo_emu_arg;
static char rlo_emu_err[1024];
unsigned long long rlo_emu_xchg[RLO_EMU_MAX_THREADS];

static void rlo_emu_to_main() {
    rlo_emu_fiber& f = rlo_emu_f[rlo_emu_cur];
#if RLO_EMU_UCONTEXT
    swapcontext(&f.uc, &rlo_emu_main_uc);
#else
    rlo_emu_switch(&f.sp, rlo_emu_main_sp);
#endif
    asm volatile("" ::: "memory");
}

static void rlo_emu_entry() {
    rlo_emu_body(rlo_emu_arg);
    rlo_emu_f[rlo_emu_cur].state = RLO_DONE;
    rlo_emu_to_main();
    abort();  // a finished fiber is never resumed
}

static bool rlo_emu_start(int i) {
    rlo_emu_fiber& f = rlo_emu_f[i];
    if (!f.stack) {
        // a guard page below each stack turns an overflow into a crash, not silent corruption
        void* p = mmap(nullptr, RLO_EMU_STACK + 4096, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) { return false; }
        mprotect(p, 4096, PROT_NONE);
        f.stack = (char*)p + 4096;
    }
    f.state = RLO_RUN;
    f.file = "";
    f.line = 0;
#if RLO_EMU_UCONTEXT
    getcontext(&f.uc);
    f.uc.uc_stack.ss_sp = f.stack;
    f.uc.uc_stack.ss_size = RLO_EMU_STACK;
    f.uc.uc_link = nullptr;
    makecontext(&f.uc, rlo_emu_entry, 0);
#else
    // initial frame for rlo_emu_switch: six zero registers, then the return address (16-aligned
    // slot, so rlo_emu_entry starts with rsp = 8 mod 16 as after a call)
    uintptr_t top = ((uintptr_t)(f.stack + RLO_EMU_STACK) & ~(uintptr_t)15) - 16;
    void** sp = (void**)top;
    *sp = (void*)rlo_emu_entry;
    for (int k = 0; k < 6; ++k) { *--sp = nullptr; }
    f.sp = (void*)sp;
#endif
    return true;
}

static void rlo_emu_resume(int i) {
    rlo_emu_cur = i;
    threadIdx.x = (unsigned)i;
    threadIdx.y = threadIdx.z = 0;
    rlo_emu_fiber& f = rlo_emu_f[i];
#if RLO_EMU_UCONTEXT
    swapcontext(&rlo_emu_main_uc, &f.uc);
#else
    rlo_emu_switch(&rlo_emu_main_sp, f.sp);
#endif
    asm volatile("" ::: "memory");
}

static void rlo_emu_park(int state, const char* file, int line) {
    rlo_emu_fiber& f = rlo_emu_f[rlo_emu_cur];
    f.state = state;
    f.file = file;
    f.line = line;
    rlo_emu_to_main();
}

#define __syncthreads() rlo_emu_park(RLO_BAR, __FILE__, __LINE__)

template <class T>
static T rlo_emu_shfl(unsigned mask, T v, int delta, bool down, const char* file, int line) {
    static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
    const int me = (int)threadIdx.x, lane = me & 31;
    if (mask != 0xffffffffu) {
        snprintf(rlo_emu_err, sizeof rlo_emu_err, "%s:%d: shuffle with partial mask %#x", file,
                 line, mask);
    }
    unsigned long long w = 0;
    memcpy(&w, &v, sizeof(T));
    rlo_emu_xchg[me] = w;
    rlo_emu_park(RLO_WARP, file, line);
    const int src = down ? lane + delta : lane - delta;
    T r = v;
    if (src >= 0 && src < 32) { memcpy(&r, &rlo_emu_xchg[me - lane + src], sizeof(T)); }
    rlo_emu_park(RLO_WARP, file, line);  // nobody overwrites the slots before all have read
    return r;
}
#define __shfl_down_sync(mask, v, d) rlo_emu_shfl((unsigned)(mask), (v), (int)(d), true, __FILE__, __LINE__)
#define __shfl_up_sync(mask, v, d) rlo_emu_shfl((unsigned)(mask), (v), (int)(d), false, __FILE__, __LINE__)

static unsigned long long rlo_emu_rng;
static unsigned rlo_emu_rand(unsigned n) {
    rlo_emu_rng ^= rlo_emu_rng << 13;
    rlo_emu_rng ^= rlo_emu_rng >> 7;
    rlo_emu_rng ^= rlo_emu_rng << 17;
    return (unsigned)(rlo_emu_rng % n);
}

static bool rlo_emu_same_site(const rlo_emu_fiber& a, const rlo_emu_fiber& b) {
    return a.line == b.line && strcmp(a.file, b.file) == 0;
}

static void rlo_emu_shuffle(int* v, int n) {
    for (int i = n - 1; i > 0; --i) {
        const int j = (int)rlo_emu_rand((unsigned)i + 1);
        const int t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

// Runs warp `w` as far as it goes: its lanes one at a time until each waits (at a shuffle or a
// barrier) or returns; a shuffle that all 32 lanes reach at the same site lets them go on. A warp
// thus runs ahead of the others up to the next __syncthreads(), as it may on a GPU.
static bool rlo_emu_warp(int w, int order) {
    rlo_emu_fiber* f = &rlo_emu_f[w * 32];
    int lanes[32];
    for (int l = 0; l < 32; ++l) { lanes[l] = order == 1 ? 31 - l : l; }
    for (;;) {
        if (order == 2) { rlo_emu_shuffle(lanes, 32); }
        for (int k = 0; k < 32; ++k) {
            const int l = lanes[k];
            while (f[l].state == RLO_RUN) { rlo_emu_resume(w * 32 + l); }
            if (rlo_emu_err[0]) { return false; }
        }
        int at = 0, first = -1;
        for (int l = 0; l < 32; ++l) {
            if (f[l].state == RLO_WARP) {
                ++at;
                if (first < 0) { first = l; }
            }
        }
        if (at == 0) { return true; }
        if (at < 32) {
            snprintf(rlo_emu_err, sizeof rlo_emu_err,
                     "thread %d waits at a warp shuffle (%s:%d) that not all 32 lanes of its warp "
                     "reach",
                     w * 32 + first, f[first].file, f[first].line);
            return false;
        }
        for (int l = 1; l < 32; ++l) {
            if (!rlo_emu_same_site(f[0], f[l])) {
                snprintf(rlo_emu_err, sizeof rlo_emu_err,
                         "warp %d: lanes shuffle at different sites (%s:%d and %s:%d)", w,
                         f[0].file, f[0].line, f[l].file, f[l].line);
                return false;
            }
        }
        for (int l = 0; l < 32; ++l) { f[l].state = RLO_RUN; }
    }
}

// Runs one block of `n` threads (a multiple of 32) to completion; false (and rlo_emu_err) on a
// barrier error. order: 0 ascending warp and lane index, 1 descending, 2 random permutations.
static bool rlo_emu_block(int n, int order) {
    const int nw = n / 32;
    int warps[RLO_EMU_MAX_THREADS / 32];
    for (int i = 0; i < n; ++i) {
        if (!rlo_emu_start(i)) {
            snprintf(rlo_emu_err, sizeof rlo_emu_err, "cannot allocate a fiber stack");
            return false;
        }
    }
    for (int w = 0; w < nw; ++w) { warps[w] = order == 1 ? nw - 1 - w : w; }
    for (;;) {
        if (order == 2) { rlo_emu_shuffle(warps, nw); }
        for (int k = 0; k < nw; ++k) {
            if (!rlo_emu_warp(warps[k], order)) { return false; }
        }
        // every thread waits at a barrier or has returned
        int first_bar = -1, first_done = -1;
        for (int i = 0; i < n; ++i) {
            const int s = rlo_emu_f[i].state;
            if (s == RLO_BAR && first_bar < 0) { first_bar = i; }
            if (s == RLO_DONE && first_done < 0) { first_done = i; }
        }
        if (first_bar < 0) { return true; }  // every thread returned
        if (first_done >= 0) {
            const rlo_emu_fiber& f = rlo_emu_f[first_bar];
            snprintf(rlo_emu_err, sizeof rlo_emu_err,
                     "divergent __syncthreads(): thread %d waits at %s:%d, thread %d has returned",
                     first_bar, f.file, f.line, first_done);
            return false;
        }
        for (int i = 0; i < n; ++i) {
            if (!rlo_emu_same_site(rlo_emu_f[first_bar], rlo_emu_f[i])) {
                snprintf(rlo_emu_err, sizeof rlo_emu_err,
                         "divergent __syncthreads(): thread %d waits at %s:%d, thread %d at %s:%d",
                         first_bar, rlo_emu_f[first_bar].file, rlo_emu_f[first_bar].line, i,
                         rlo_emu_f[i].file, rlo_emu_f[i].line);
                return false;
            }
        }
        for (int i = 0; i < n; ++i) { rlo_emu_f[i].state = RLO_RUN; }
    }
}

static unsigned rlo_emu_gcd(unsigned a, unsigned b) {
    while (b) {
        const unsigned t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static std::mutex rlo_emu_lock;

// Runs `body(arg)` as a grid of `grid` blocks of `block` threads. Returns 0, or 1 with the message
// in err.
static int rlo_emu_launch(void (*body)(void*), void* arg, unsigned grid, unsigned block, int order,
                          unsigned long long seed, char* err, size_t errlen) {
    std::lock_guard<std::mutex> guard(rlo_emu_lock);
    rlo_emu_err[0] = 0;
    if (block == 0 || block > (unsigned)RLO_EMU_MAX_THREADS || block % 32 != 0 || grid == 0) {
        snprintf(err, errlen, "bad launch: %u blocks of %u threads", grid, block);
        return 1;
    }
    rlo_emu_rng = seed * 0x9E3779B97F4A7C15ull | 1;
    rlo_emu_body = body;
    rlo_emu_arg = arg;
    blockDim = {block, 1, 1};
    gridDim = {grid, 1, 1};
    // blocks one after another, in the launch's order too (a race between blocks changes bits)
    unsigned long long brng = seed * 0x2545F4914F6CDD1Dull | 1;
    for (unsigned k = 0; k < grid; ++k) {
        unsigned b = order == 1 ? grid - 1 - k : k;
        if (order == 2) {  // a seeded affine permutation of 0..grid
            unsigned a = (unsigned)(brng % grid) | 1u;
            while (a > 1 && rlo_emu_gcd(a, grid) != 1) { a -= 2; }
            b = (unsigned)(((unsigned long long)a * k + (brng >> 32)) % grid);
        }
        blockIdx = {b, 0, 0};
        memset(__start_rlo_emu_shared, 0xff, (size_t)(__stop_rlo_emu_shared - __start_rlo_emu_shared));
        if (!rlo_emu_block((int)block, order)) {
            snprintf(err, errlen, "block %u: %s", b, rlo_emu_err);
            return 1;
        }
    }
    return 0;
}
