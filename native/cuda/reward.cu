// CUDA K-wise reward-model loss (DESIGN §1.3); math in src/reference/reward.ts. K is small: one thread per
// prompt (its K scores in registers' reach). Two launches, each a grid with a last-block-done reduction
// (common.cuh, grid_sum): the counted prompts (the mean's denominator), then the per-prompt terms with
// the batch loss and accuracy. Deterministic: fixed-order sums, no float atomics.
#include "common.cuh"
#include "rlhf/cuda_ops.h"

namespace rk::gpu {
namespace {

__device__ __forceinline__ bool counted(const RewardLossParams& p, int64_t n) {
  return reward_first(p, n + 1) - reward_first(p, n) >= 2 && (p.chosen == nullptr || p.chosen[n] != p.ignore_index);
}

constexpr int REWARD_THREADS = 256;

// Scratch: two tickets, then the blocks' partial sums (count; loss, correct).
struct RewardScratch {
  unsigned* tickets;
  float* partials;
};

__global__ void __launch_bounds__(REWARD_THREADS, blocks_within(REWARD_THREADS, 64)) reward_count_kernel(RewardLossParams p, RewardScratch s, float* result) {
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const float c[1] = {n < p.N && counted(p, n) ? 1.f : 0.f};
  grid_sum(c, s.partials, s.tickets, [&](const float* total) {
    result[RewardSlot::count] = total[0];
    result[RewardSlot::scale] = p.reduction == Reduction::mean ? (total[0] > 0.f ? 1.f / total[0] : 0.f) : 1.f;
  });
}

// One prompt's probabilities, loss, gradient and whether its label scores highest; loss and correct go to
// the caller's grid sum.
__device__ __forceinline__ void reward_prompt(const RewardLossParams& p, int64_t n, const float* result, float& loss_out, float& correct_out,
                                              DeviceFlags* flags) {
  loss_out = correct_out = 0.f;
  const int64_t a = reward_first(p, n), K = reward_first(p, n + 1) - a;
  const int32_t b = p.chosen ? p.chosen[n] : -1;
  if (p.chosen && b != p.ignore_index && (b < 0 || b >= K)) {  // device labels: flagged, never read out of the group
    atomicMin(&flags->first_bad_row, int32_t(n));
    for (int64_t i = 0; i < K; i++) p.probs[a + i] = p.grad[a + i] = 0.f;
    p.losses[n] = 0.f;
    return;
  }
  // As native/cpu/reward.cc: the shifted scores s_i = R_i + m_i, their max M, Σ exp(s_i − M) and log Σ in
  // double (K is small, and R + m would round); p_i = float(exp(s_i − M))·float(1/Σ) and
  // log p_i = float((s_i − M) − log Σ), from s − M, never s − lse (which cancels two terms of size |s|).
  auto shifted = [&](int64_t i) { return double(read(p.scores, a + i)) + (p.margins.data && i != b ? read(p.margins, a + i) : 0.f); };
  double m = -INFINITY;
  for (int64_t i = 0; i < K; i++) m = fmax(m, shifted(i));  // NaN skipped, as std::max(m, NaN); its p is NaN
  double se = 0;
  for (int64_t i = 0; i < K; i++) se += exp(shifted(i) - m);
  const double ls = log(se);
  const float inv = float(1.0 / se);
  for (int64_t i = 0; i < K; i++) p.probs[a + i] = float(exp(shifted(i) - m)) * inv;
  auto logp = [&](int64_t i) { return float((shifted(i) - m) - ls); };
  p.losses[n] = 0.f;
  if (!counted(p, n)) {
    for (int64_t i = 0; i < K; i++) p.grad[a + i] = 0.f;
    return;
  }
  const bool soft = p.target_probs.data != nullptr;
  KahanSum loss;
  float y_sum = 1.f;
  int64_t label = b;
  if (!soft) {
    loss.add(-logp(b));
  } else {
    label = 0;
    KahanSum ys;
    for (int64_t i = 0; i < K; i++) {
      const float y = read(p.target_probs, a + i);
      ys.add(y);
      if (y != 0.f) loss.add(-y * logp(i));
      if (y > read(p.target_probs, a + label)) label = i;
    }
    y_sum = ys.value();
  }
  float center = 0.f;
  if (p.center_coef != 0.f) {
    KahanSum s;
    for (int64_t i = 0; i < K; i++) s.add(read(p.scores, a + i));
    loss.add(p.center_coef * s.value() * s.value());
    center = 2.f * p.center_coef * s.value();
  }
  p.losses[n] = loss.value();
  loss_out = loss.value();
  const float scale = result[RewardSlot::scale];
  for (int64_t i = 0; i < K; i++) {
    // the chosen candidate's p − 1 as expm1(log p), exact where p is near 1 (p − 1 would cancel)
    const float d = soft ? p.probs[a + i] * y_sum - read(p.target_probs, a + i) : i == b ? expm1f(logp(i)) : p.probs[a + i];
    p.grad[a + i] = scale * (d + center);
  }
  bool best = true;
  const float rb = read(p.scores, a + label);
  for (int64_t i = 0; i < K; i++) if (i != label && !(rb > read(p.scores, a + i))) best = false;
  correct_out = best ? 1.f : 0.f;
}

__global__ void __launch_bounds__(REWARD_THREADS, blocks_within(REWARD_THREADS, 64)) reward_prompt_kernel(RewardLossParams p, RewardScratch s, float* result, DeviceFlags* flags) {
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  float v[2] = {0.f, 0.f};  // loss, correct
  if (n < p.N) reward_prompt(p, n, result, v[0], v[1], flags);
  grid_sum(v, s.partials + gridDim.x, s.tickets + 1, [&](const float* total) {
    result[RewardSlot::loss] = total[0] * result[RewardSlot::scale];
    result[RewardSlot::correct] = total[1];
  });
}

}  // namespace

size_t reward_scratch_bytes(int64_t N) {
  const int64_t blocks = (N + REWARD_THREADS - 1) / REWARD_THREADS;
  return 256 + size_t(blocks > 0 ? blocks : 1) * 3 * sizeof(float);
}

cudaError_t reward_loss(const RewardLossParams& p, float* result, void* scratch, DeviceFlags* flags, cudaStream_t stream) {
  const RewardScratch s{static_cast<unsigned*>(scratch), reinterpret_cast<float*>(static_cast<char*>(scratch) + 256)};
  const unsigned blocks = unsigned(p.N > 0 ? (p.N + REWARD_THREADS - 1) / REWARD_THREADS : 1);
  cudaError_t err = cudaMemsetAsync(s.tickets, 0, 2 * sizeof(unsigned), stream);
  if (err != cudaSuccess) return err;
  reward_count_kernel<<<blocks, REWARD_THREADS, 0, stream>>>(p, s, result);
  reward_prompt_kernel<<<blocks, REWARD_THREADS, 0, stream>>>(p, s, result, flags);
  return cudaGetLastError();
}

}  // namespace rk::gpu
