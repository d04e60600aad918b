// CUDA advantage estimators (DESIGN §1.8); math in src/reference/advantages.ts.
// v1 GAE: one thread per sequence, the recursion run backwards sequentially (correct; a reverse scan of the
// affine maps A_t = δ_t + γλ A_{t+1} is the fast version, see bench/NOTES.md).
#include "common.cuh"
#include "rlhf/cuda_ops.h"

namespace rk::gpu {
namespace {

__global__ void gae_kernel(GaeParams p) {
  const int64_t s = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (s < p.num_seqs) gae_sequence(p, s);
}

// one block: mean and 1/sqrt(var + eps) of the counted values into stats[0..1]
__global__ void whiten_stats_kernel(WhitenParams p, float* stats) {
  float sum = 0.f, n = 0.f;
  for (int64_t i = threadIdx.x; i < p.values.size; i += blockDim.x) {
    if (p.mask && !p.mask[i]) continue;
    sum += read(p.values, i);
    n += 1.f;
  }
  sum = block_sum(sum);
  n = block_sum(n);
  const float mean = n > 0.f ? sum / n : 0.f;
  float ss = 0.f;
  for (int64_t i = threadIdx.x; i < p.values.size; i += blockDim.x) {
    if (p.mask && !p.mask[i]) continue;
    const float d = read(p.values, i) - mean;
    ss += d * d;
  }
  ss = block_sum(ss);
  if (threadIdx.x == 0) {
    const float den = p.unbiased ? n - 1.f : n;
    const float var = (n >= 2.f && den > 0.f) ? ss / den : 0.f;
    stats[0] = mean;
    stats[1] = rsqrtf(var + p.eps);
  }
}

__global__ void whiten_apply_kernel(WhitenParams p, const float* stats) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.values.size) return;
  p.out[i] = (p.mask && !p.mask[i]) ? 0.f : (read(p.values, i) - stats[0]) * stats[1] + (p.shift_mean ? 0.f : stats[0]);
}

__global__ void group_kernel(GroupAdvantagesParams p) {
  const int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (g >= p.num_groups) return;
  const int64_t a = p.offsets[g], K = p.offsets[g + 1] - a;
  if (K < 2) {
    for (int64_t i = 0; i < K; i++) p.out[a + i] = 0.f;
    return;
  }
  float sum = 0.f;
  for (int64_t i = 0; i < K; i++) sum += read(p.scores, a + i);
  const float mean = sum / float(K);
  float ss = 0.f;
  for (int64_t i = 0; i < K; i++) ss += (read(p.scores, a + i) - mean) * (read(p.scores, a + i) - mean);
  const float sd = sqrtf(ss / float(p.unbiased ? K - 1 : K));
  for (int64_t i = 0; i < K; i++) {
    const float r = read(p.scores, a + i);
    p.out[a + i] = p.method == GroupMethod::rloo ? r - (sum - r) / float(K - 1)
                 : p.method == GroupMethod::mean_centered ? r - mean
                 : (r - mean) / (sd + p.eps);
  }
}

}  // namespace

cudaError_t gae(const GaeParams& p, cudaStream_t stream) {
  if (p.num_seqs > 0) gae_kernel<<<unsigned((p.num_seqs + 127) / 128), 128, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t whiten(const WhitenParams& p, float* scratch, cudaStream_t stream) {
  whiten_stats_kernel<<<1, 1024, 0, stream>>>(p, scratch);
  if (p.values.size > 0) whiten_apply_kernel<<<unsigned((p.values.size + 255) / 256), 256, 0, stream>>>(p, scratch);
  return cudaGetLastError();
}

cudaError_t group_advantages(const GroupAdvantagesParams& p, cudaStream_t stream) {
  if (p.num_groups > 0) group_kernel<<<unsigned((p.num_groups + 127) / 128), 128, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace rk::gpu
