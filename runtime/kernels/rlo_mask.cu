// rlo_mask_to_len: the runtime's own kernel, compiled once per device into a module of its own
// (after rlo_common.cuh, for rlo_block_count). It lived in rlo_common.cuh, where being a
// kernel made NVRTC compile it into every objective's module: 22 ms of each cold compile.

// padded layouts: lengths from a right-padded mask (one block per sequence, grid-stride).
// err[0] is set to 1 when a mask is not a prefix (a valid token after a padded one).

extern "C" __global__ void rlo_mask_to_len(const float* mask, long long n_seqs, long long stride,
                                           int* len, int* err) {
    for (long long s = blockIdx.x; s < n_seqs; s += gridDim.x) {
        unsigned long long n = 0, bad = 0;
        for (long long t = threadIdx.x; t < stride; t += blockDim.x) {
            const bool on = mask[s * stride + t] != 0.0f;
            n += on ? 1ull : 0ull;
            if (on && t > 0 && mask[s * stride + t - 1] == 0.0f) { bad = 1; }
        }
        n = rlo_block_count(n);
        bad = rlo_block_count(bad);
        if (threadIdx.x == 0) {
            len[s] = (int)n;
            if (bad != 0) { err[0] = 1; }
        }
    }
}
