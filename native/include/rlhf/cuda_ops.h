// The CUDA kernels of the per-token, reward and advantage ops (native/cuda/{policy,kl,value,reward,
// advantages,ppo}.cu), with the CPU kernels' parameter structs and every pointer on the device. Scalar
// results are written to `result` in device memory, in the order listed for each op. `scratch` is device
// memory of at least scratch_bytes(...) bytes. Launches are asynchronous on `stream`.
#pragma once
#include <cuda_runtime.h>

#include "advantages.h"
#include "cuda_vocab.h"
#include "kl.h"
#include "policy.h"
#include "ppo.h"
#include "reward.h"
#include "value.h"

namespace rk::gpu {

// Scratch of a per-token op over a batch of num_seqs sequences with K partial sums each.
size_t token_scratch_bytes(int64_t num_seqs, int K);

// result: loss, approxKl, ratioSum, count, clippedLow, clippedHigh, dualClipped, ratioMax
cudaError_t policy_loss(const PolicyLossParams& p, float* result, void* scratch, cudaStream_t stream);
// result: loss
cudaError_t kl_penalty(const KlPenaltyParams& p, float* result, void* scratch, cudaStream_t stream);
// result: loss, clipped count, count
cudaError_t value_loss(const ValueLossParams& p, float* result, void* scratch, cudaStream_t stream);
// Whether kl_divergence takes the single-pass kernel (the gradient wrt q only). Else, with 16-bit gradients,
// p.grad_q / p.grad_p must be float32 staging of N·V elements, rounded into grad_q16 / grad_p16.
bool kl_single_pass(const KlDivergenceParams& p);
// result: loss, count; scratch: N + 1 floats
cudaError_t kl_divergence(const KlDivergenceParams& p, float* result, float* scratch, cudaStream_t stream);
// result: loss, count, correct, scale; scratch: reward_scratch_bytes(N). flags: the first prompt whose
// chosen index is bad.
size_t reward_scratch_bytes(int64_t N);
cudaError_t reward_loss(const RewardLossParams& p, float* result, void* scratch, DeviceFlags* flags, cudaStream_t stream);
cudaError_t gae(const GaeParams& p, cudaStream_t stream);
// scratch: whiten_scratch_bytes(values.size)
size_t whiten_scratch_bytes(int64_t n);
cudaError_t whiten(const WhitenParams& p, void* scratch, cudaStream_t stream);
cudaError_t group_advantages(const GroupAdvantagesParams& p, cudaStream_t stream);
// flags: the first row whose target is bad (its gradient row is zero)
cudaError_t log_probs_backward(const LogProbsBackwardParams& p, DeviceFlags* flags, cudaStream_t stream);
// result: loss, policyLoss, kl, valueLoss, approxKl, ratioSum, clippedLow, clippedHigh, dualClipped,
// valueClipped, ratioMax, count; scratch: ppo_scratch_bytes(p). flags: the first token whose action is bad.
size_t ppo_scratch_bytes(const PpoLossParams& p);
// Whether ppo_loss takes the single-pass kernel; else, with grad_logits16, grad_logits must be float32
// staging of tokens·V elements.
bool ppo_single_pass(const PpoLossParams& p);
cudaError_t ppo_loss(const PpoLossParams& p, float* result, void* scratch, DeviceFlags* flags, cudaStream_t stream);

// The result blocks above as the CPU kernels' result structs (fractions and means formed on the host, as
// the CPU kernels form them).
template <class R>
inline void clip_metrics(R& r, float count, float ratio_sum, float low, float high, float dual, float ratio_max) {
  const float f = count > 0.f ? 1.f / count : 0.f;
  r.count = int64_t(count);
  r.ratio_mean = ratio_sum * f;
  r.ratio_max = count > 0.f ? ratio_max : 0.f;
  r.clip_fraction = (low + high) * f;
  r.clip_fraction_low = low * f;
  r.clip_fraction_high = high * f;
  r.dual_clip_fraction = dual * f;
}
inline CrossEntropyResult cross_entropy_result(const float* r) { return {r[0], int64_t(r[1])}; }
inline PolicyLossResult policy_result(const float* r) {
  PolicyLossResult o;
  o.loss = r[0];
  o.approx_kl = r[1];
  clip_metrics(o, r[3], r[2], r[4], r[5], r[6], r[7]);
  return o;
}
inline ValueLossResult value_result(const float* r) { return {r[0], r[2] > 0.f ? float(double(r[1]) / double(r[2])) : 0.f}; }
inline KlDivergenceResult kl_divergence_result(const float* r) { return {r[0], int64_t(r[1])}; }
inline RewardLossResult reward_result(const float* r) {
  RewardLossResult o;
  o.loss = r[0];
  o.count = int64_t(r[1]);
  o.accuracy = r[1] > 0.f ? float(double(r[2]) / double(r[1])) : 0.f;
  return o;
}
inline PpoLossResult ppo_result(const float* r) {
  PpoLossResult o;
  o.loss = r[0];
  o.policy_loss = r[1];
  o.kl = r[2];
  o.value_loss = r[3];
  o.approx_kl = r[4];
  clip_metrics(o, r[11], r[5], r[6], r[7], r[8], r[10]);
  o.value_clip_fraction = r[9] * (r[11] > 0.f ? 1.f / r[11] : 0.f);
  return o;
}

}  // namespace rk::gpu
