// Device helpers shared by the CUDA kernels: dtype loads, the (max, sum) pair of online softmax and its
// reductions. Every reduction runs in a fixed order (shuffle trees, then one warp over the warp results),
// so results are bitwise reproducible; no float atomics anywhere.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "rlhf/common.h"

namespace rk::gpu {

// Occupancy is declared with each kernel: __launch_bounds__(threads, blocks_within(threads, registers))
// caps a thread at `registers` (65536 per SM over the resident blocks), so the number of blocks per SM a
// kernel gets is chosen where it is written, and a change that needs more registers shows as a spill in the
// build's ptxas report (-warn-spills) instead of silently halving occupancy.
constexpr int blocks_within(int threads, int registers) { return 65536 / (threads * registers); }

template <typename T> __device__ __forceinline__ float to_float(T x);
template <> __device__ __forceinline__ float to_float<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_float<double>(double x) { return float(x); }
template <> __device__ __forceinline__ float to_float<bf16>(bf16 x) { return __uint_as_float(uint32_t(x.bits) << 16); }
template <> __device__ __forceinline__ float to_float<f16>(f16 x) { return __half2float(__ushort_as_half(x.bits)); }

// float32 → the bits of a 16-bit float, rounded to nearest even (gradients in the logits' dtype).
template <typename T> __device__ __forceinline__ uint16_t to_bits(float x);
template <> __device__ __forceinline__ uint16_t to_bits<bf16>(float x) { return __bfloat16_as_ushort(__float2bfloat16_rn(x)); }
template <> __device__ __forceinline__ uint16_t to_bits<f16>(float x) { return __half_as_ushort(__float2half_rn(x)); }

// Running max m and Σ exp(x − m) of a set of values; −inf values add nothing (the −inf − −inf trap is guarded).
// A NaN makes s NaN, also while m is still −inf (an all-NaN row), and maxsum_lse gives NaN then.
struct MaxSum {
  float m, s;
};

// With invT (T > 0), the values are raw logits z and s = Σ exp((z − m)·invT): the differences from the max
// are scaled, never z·invT itself, whose float32 rounding (|z|/T·2⁻²⁴, 6e-4 at 1e4) would reach every result.
__device__ __forceinline__ MaxSum maxsum_combine(MaxSum a, MaxSum b, float invT = 1.f) {
  if (a.m == -INFINITY) return {b.m, b.s + a.s};  // a.s is 0, or NaN when a saw a NaN
  if (b.m == -INFINITY) return {a.m, a.s + b.s};
  const float m = fmaxf(a.m, b.m);
  return {m, a.s * __expf((a.m - m) * invT) + b.s * __expf((b.m - m) * invT)};
}

__device__ __forceinline__ MaxSum maxsum_add(MaxSum a, float x, float invT = 1.f) {
  if (x == -INFINITY) return a;
  if (x > a.m) return {x, a.s * __expf((a.m - x) * invT) + 1.f};  // a.m = −inf gives exp(−inf) = 0
  return {a.m, a.s + __expf((x - a.m) * invT)};
}

// lse = m + log s: −inf for a row without mass (s = 0), NaN for a row holding NaN.
__device__ __forceinline__ double maxsum_lse(MaxSum all) {
  return all.m == -INFINITY && all.s == 0.f ? -INFINITY : double(all.m) + log(double(all.s));
}

__device__ __forceinline__ MaxSum warp_maxsum(MaxSum v, float invT = 1.f) {
  for (int o = 16; o > 0; o >>= 1) {
    MaxSum w{__shfl_xor_sync(0xffffffffu, v.m, o), __shfl_xor_sync(0xffffffffu, v.s, o)};
    v = maxsum_combine(v, w, invT);
  }
  return v;
}

template <typename F>
__device__ __forceinline__ F warp_sum(F v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Block-wide reductions (blockDim.x a multiple of 32, ≤ 1024); every thread gets the result.
__device__ __forceinline__ MaxSum block_maxsum(MaxSum v, float invT = 1.f) {
  __shared__ float sm[32], ss[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_maxsum(v, invT);
  __syncthreads();  // the buffers may still be read by a previous reduction
  if (lane == 0) { sm[warp] = v.m; ss[warp] = v.s; }
  __syncthreads();
  MaxSum r = lane < warps ? MaxSum{sm[lane], ss[lane]} : MaxSum{-INFINITY, 0.f};
  return warp_maxsum(r, invT);
}

template <typename F>
__device__ __forceinline__ F block_sum(F v) {
  __shared__ F s[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) s[warp] = v;
  __syncthreads();
  return warp_sum(lane < warps ? s[lane] : F(0));
}

// lse of row·invT over the block, in double: the KL takes differences of two of them, which would otherwise
// carry each one's float32 rounding (native/cpu/rowmath.h does the same). Every thread gets it.
template <typename T>
__device__ double block_lse_exact(const T* row, int64_t V, float invT) {
  MaxSum ms{-INFINITY, 0.f};
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) ms = maxsum_add(ms, to_float(row[v]) * invT);
  return maxsum_lse(block_maxsum(ms));
}

// A row's log-softmax at temperature T in shifted form, as on the cpu (rowmath.h RowSoftmax):
//   log p_v = (z_v − m)·invT + c,  m the largest raw logit, c = −log Σ_v exp((z_v − m)·invT).
// Only differences from the max are scaled: z·invT and lse would each carry |z|/T·2⁻²⁴ (6e-4 at 1e4).
// A row without mass: m 0 and c −inf, so every log p is −inf. A row holding NaN: c NaN. A row holding one
// +inf: m +inf and c 0, so log p is −inf at finite logits and NaN at the +inf (as z·invT − lse would give).
struct RowShift {
  float m, c;
  __device__ __forceinline__ float logp(float z, float invT) const { return (z - m) * invT + c; }
};

__device__ __forceinline__ RowShift row_shift(MaxSum all) {
  if (all.m == -INFINITY && all.s == 0.f) return {0.f, -INFINITY};
  return {all.m, float(-log(double(all.s)))};
}

// row_shift of a row of raw logits over the block, one read; every thread gets it.
template <typename T>
__device__ RowShift block_row_shift(const T* row, int64_t V, float invT) {
  MaxSum ms{-INFINITY, 0.f};
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) ms = maxsum_add(ms, to_float(row[v]), invT);
  return row_shift(block_maxsum(ms, invT));
}

}  // namespace rk::gpu

namespace rk::gpu {

__device__ __forceinline__ float block_max(float v) {
  __shared__ float s[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if (lane == 0) s[warp] = v;
  __syncthreads();
  v = lane < warps ? s[lane] : -INFINITY;
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

}  // namespace rk::gpu

namespace rk::gpu {

// A grid-wide sum of K values per thread in one launch, deterministic: each block sums its threads in a
// fixed tree order and stores the K block sums in `partials`; the last block to finish (an integer ticket,
// no float atomics) adds the blocks' sums in block order and calls done(totals) on its thread 0, then
// rearms the ticket. `ticket` starts at 0; `partials` holds gridDim.x · K values of F (float or double).
template <int K, typename F, class Done>
__device__ __forceinline__ void grid_sum(const F (&v)[K], F* partials, unsigned* ticket, Done&& done) {
  __shared__ bool last;
  F b[K];
#pragma unroll
  for (int k = 0; k < K; k++) b[k] = block_sum(v[k]);
  if (threadIdx.x == 0) {
#pragma unroll
    for (int k = 0; k < K; k++) partials[blockIdx.x * K + k] = b[k];
    __threadfence();  // the partials are visible before the ticket counts this block
    last = atomicAdd(ticket, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  F t[K];
#pragma unroll
  for (int k = 0; k < K; k++) {
    F s = 0;
    for (unsigned i = threadIdx.x; i < gridDim.x; i += blockDim.x) s += __ldcg(partials + size_t(i) * K + k);
    t[k] = block_sum(s);
  }
  if (threadIdx.x == 0) {
    done(t);
    *ticket = 0u;
  }
}

}  // namespace rk::gpu

