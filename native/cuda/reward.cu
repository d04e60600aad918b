// CUDA K-wise reward-model loss (DESIGN §1.3); math in src/reference/reward.ts. K is small: one thread per
// prompt; the count, then the per-prompt terms, then the batch sums in prompt order.
#include "common.cuh"
#include "rlhf/cuda_ops.h"

namespace rk::gpu {
namespace {

__device__ __forceinline__ bool counted(const RewardLossParams& p, int64_t n) {
  return p.offsets[n + 1] - p.offsets[n] >= 2 && (p.chosen == nullptr || p.chosen[n] != p.ignore_index);
}

__global__ void reward_count_kernel(RewardLossParams p, float* result) {
  float c = 0.f;
  for (int64_t n = threadIdx.x; n < p.N; n += blockDim.x) c += counted(p, n) ? 1.f : 0.f;
  c = block_sum(c);
  if (threadIdx.x == 0) {
    result[1] = c;
    result[3] = p.reduction == Reduction::mean ? (c > 0.f ? 1.f / c : 0.f) : 1.f;
  }
}

__global__ void reward_prompt_kernel(RewardLossParams p, const float* result, float* correct, DeviceFlags* flags) {
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= p.N) return;
  const int64_t a = p.offsets[n], K = p.offsets[n + 1] - a;
  const int32_t b = p.chosen ? p.chosen[n] : -1;
  if (p.chosen && b != p.ignore_index && (b < 0 || b >= K)) {  // device labels: flagged, never read out of the group
    atomicMin(&flags->first_bad_row, int32_t(n));
    for (int64_t i = 0; i < K; i++) p.probs[a + i] = p.grad[a + i] = 0.f;
    p.losses[n] = correct[n] = 0.f;
    return;
  }
  auto shifted = [&](int64_t i) { return read(p.scores, a + i) + (p.margins.data && i != b ? read(p.margins, a + i) : 0.f); };
  float m = -INFINITY;
  for (int64_t i = 0; i < K; i++) m = fmaxf(m, shifted(i));
  float sum = 0.f;
  for (int64_t i = 0; i < K; i++) sum += expf(shifted(i) - m);
  const float lse = m + logf(sum);
  for (int64_t i = 0; i < K; i++) p.probs[a + i] = expf(shifted(i) - lse);
  p.losses[n] = 0.f;
  correct[n] = 0.f;
  if (!counted(p, n)) {
    for (int64_t i = 0; i < K; i++) p.grad[a + i] = 0.f;
    return;
  }
  const bool soft = p.target_probs.data != nullptr;
  float loss = 0.f, y_sum = 1.f;
  int64_t label = b;
  if (!soft) {
    loss = lse - shifted(b);
  } else {
    label = 0;
    y_sum = 0.f;
    for (int64_t i = 0; i < K; i++) {
      const float y = read(p.target_probs, a + i);
      y_sum += y;
      if (y != 0.f) loss += y * (lse - shifted(i));
      if (y > read(p.target_probs, a + label)) label = i;
    }
  }
  float center = 0.f;
  if (p.center_coef != 0.f) {
    float s = 0.f;
    for (int64_t i = 0; i < K; i++) s += read(p.scores, a + i);
    loss += p.center_coef * s * s;
    center = 2.f * p.center_coef * s;
  }
  p.losses[n] = loss;
  const float scale = result[3];
  for (int64_t i = 0; i < K; i++) {
    const float target = soft ? read(p.target_probs, a + i) : (i == b ? 1.f : 0.f);
    p.grad[a + i] = scale * (p.probs[a + i] * y_sum - target + center);
  }
  bool best = true;
  const float rb = read(p.scores, a + label);
  for (int64_t i = 0; i < K; i++) if (i != label && !(rb > read(p.scores, a + i))) best = false;
  correct[n] = best ? 1.f : 0.f;
}

__global__ void reward_total_kernel(const float* losses, const float* correct, int64_t N, float* result) {
  float l = 0.f, c = 0.f;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    l += losses[n];
    c += correct[n];
  }
  l = block_sum(l);
  c = block_sum(c);
  if (threadIdx.x == 0) {
    result[0] = l * result[3];
    result[2] = c;
  }
}

}  // namespace

cudaError_t reward_loss(const RewardLossParams& p, float* result, float* scratch, DeviceFlags* flags, cudaStream_t stream) {
  reward_count_kernel<<<1, 1024, 0, stream>>>(p, result);
  if (p.N > 0) reward_prompt_kernel<<<unsigned((p.N + 255) / 256), 256, 0, stream>>>(p, result, scratch, flags);
  reward_total_kernel<<<1, 1024, 0, stream>>>(p.losses, scratch, p.N, result);
  return cudaGetLastError();
}

}  // namespace rk::gpu
