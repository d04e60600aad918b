// Per-token ops on the GPU (policy, KL penalty, value; the token terms of the fused PPO): one block per
// sequence, so each token knows its sequence's count for the aggregation weight (DESIGN §1.9); per-sequence
// partial sums, then one block sums them in sequence order. Deterministic, no float atomics.
#pragma once
#include "common.cuh"
#include "rlhf/cuda_ops.h"

namespace rk::gpu {
namespace {  // internal to each .cu that includes this: its kernels are not shared symbols

constexpr int TOKEN_THREADS = 256;

// Counted tokens of each sequence, then the batch denominators: totals = { 1/tokDen, 1/seqDen, 1/norm, count }.
__global__ void seq_counts_kernel(TokenBatch b, int32_t* counts) {
  const int64_t s = blockIdx.x;
  int32_t n = 0;
  for (int64_t t = b.offsets[s] + threadIdx.x; t < b.offsets[s + 1]; t += blockDim.x) n += b.mask ? (b.mask[t] != 0) : 1;  // a device mask counts where nonzero
  const float total = block_sum(float(n));
  if (threadIdx.x == 0) counts[s] = int32_t(total);
}

__global__ void agg_totals_kernel(TokenBatch b, const int32_t* counts, float* totals) {
  float tokens = 0.f, seqs = 0.f;
  for (int64_t s = threadIdx.x; s < b.num_seqs; s += blockDim.x) {
    tokens += float(counts[s]);
    seqs += counts[s] > 0 ? 1.f : 0.f;
  }
  tokens = block_sum(tokens);
  seqs = block_sum(seqs);
  if (threadIdx.x == 0) {
    const float tok_den = fmaxf(1.f, is_on(b.global_tokens) ? float(b.global_tokens) : tokens);
    const float seq_den = fmaxf(1.f, is_on(b.global_seqs) ? float(b.global_seqs) : seqs);
    const float norm = is_on(b.norm_const) ? float(b.norm_const) : fmaxf(1.f, float(b.width));
    totals[0] = 1.f / tok_den;
    totals[1] = 1.f / seq_den;
    totals[2] = 1.f / norm;
    totals[3] = tokens;
  }
}

__device__ __forceinline__ float seq_weight(Aggregation mode, const float* totals, int32_t n) {
  switch (mode) {
    case Aggregation::token_mean: return totals[0];
    case Aggregation::seq_mean_token_mean: return totals[1] / float(max(1, n));
    case Aggregation::seq_mean_token_sum: return totals[1];
    default: return totals[1] * totals[2];
  }
}

// Scratch a token op needs (token_scratch_bytes, rlhf/cuda_ops.h): counts [S] int32, totals [4 of
// TOKEN_TOTALS], partials [S·K].
struct TokenScratch {
  int32_t* counts;
  float* totals;
  float* partials;
};

inline cudaError_t launch_token_weights(const TokenBatch& b, const TokenScratch& s, cudaStream_t stream) {
  if (b.num_seqs > 0) seq_counts_kernel<<<unsigned(b.num_seqs), TOKEN_THREADS, 0, stream>>>(b, s.counts);
  agg_totals_kernel<<<1, 1024, 0, stream>>>(b, s.counts, s.totals);
  return cudaGetLastError();
}

}  // namespace
}  // namespace rk::gpu

namespace rk::gpu {
namespace {  // internal to each .cu that includes this: its kernels are not shared symbols

// One block per sequence: op(t, w, acc) for each counted token, op.masked(t) for the others; the K
// accumulators are reduced per block (the last by max when Op::kMaxLast) into partials[s·K + k].
template <class Op>
__global__ void __launch_bounds__(TOKEN_THREADS, blocks_within(TOKEN_THREADS, 64)) token_kernel(TokenBatch b, const int32_t* counts, const float* totals, Op op, float* partials) {
  const int64_t s = blockIdx.x;
  const float w = seq_weight(b.mode, totals, counts[s]);
  float acc[Op::K];
  for (int k = 0; k < Op::K; k++) acc[k] = (Op::kMaxLast && k == Op::K - 1) ? -INFINITY : 0.f;
  for (int64_t t = b.offsets[s] + threadIdx.x; t < b.offsets[s + 1]; t += blockDim.x) {
    if (b.mask && !b.mask[t]) op.masked(t);
    else op(t, w, acc);
  }
  for (int k = 0; k < Op::K; k++) {
    const float v = (Op::kMaxLast && k == Op::K - 1) ? block_max(acc[k]) : block_sum(acc[k]);
    if (threadIdx.x == 0) partials[s * Op::K + k] = v;
  }
}

// Σ over sequences in order (the partials from max_from on by max).
__global__ void reduce_partials_kernel(const float* partials, int64_t S, int K, int max_from, float* out) {
  for (int k = 0; k < K; k++) {
    const bool is_max = k >= max_from;
    float v = is_max ? -INFINITY : 0.f;
    for (int64_t s = threadIdx.x; s < S; s += blockDim.x) v = is_max ? fmaxf(v, partials[s * K + k]) : v + partials[s * K + k];
    v = is_max ? block_max(v) : block_sum(v);
    if (threadIdx.x == 0) out[k] = v;
  }
}

inline TokenScratch token_scratch(void* scratch, int64_t S) {
  char* p = static_cast<char*>(scratch);
  TokenScratch s;
  s.counts = reinterpret_cast<int32_t*>(p);
  s.totals = reinterpret_cast<float*>(p + token_counts_bytes(S));
  s.partials = s.totals + TOKEN_TOTALS;
  return s;
}

template <class Op>
cudaError_t launch_token_op(const TokenBatch& b, const Op& op, float* result, void* scratch, cudaStream_t stream) {
  const TokenScratch s = token_scratch(scratch, b.num_seqs);
  cudaError_t err = launch_token_weights(b, s, stream);
  if (err != cudaSuccess) return err;
  if (b.num_seqs > 0) token_kernel<Op><<<unsigned(b.num_seqs), TOKEN_THREADS, 0, stream>>>(b, s.counts, s.totals, op, s.partials);
  reduce_partials_kernel<<<1, 1024, 0, stream>>>(s.partials, b.num_seqs, Op::K, Op::kMaxLast ? Op::K - 1 : Op::K, result);
  return cudaGetLastError();
}

}  // namespace
}  // namespace rk::gpu
