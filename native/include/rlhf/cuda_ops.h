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
// result: loss, count; scratch: N + 1 floats
cudaError_t kl_divergence(const KlDivergenceParams& p, float* result, float* scratch, cudaStream_t stream);
// result: loss, count, correct; scratch: 2·N floats
cudaError_t reward_loss(const RewardLossParams& p, float* result, float* scratch, cudaStream_t stream);
cudaError_t gae(const GaeParams& p, cudaStream_t stream);
// scratch: 2 floats
cudaError_t whiten(const WhitenParams& p, float* scratch, cudaStream_t stream);
cudaError_t group_advantages(const GroupAdvantagesParams& p, cudaStream_t stream);
cudaError_t log_probs_backward(const LogProbsBackwardParams& p, cudaStream_t stream);
// result: loss, policyLoss, kl, valueLoss, approxKl, ratioSum, clippedLow, clippedHigh, dualClipped,
// valueClipped, ratioMax, count; scratch: token_scratch_bytes(num_seqs, 0) + tokens · 9 floats
cudaError_t ppo_loss(const PpoLossParams& p, float* result, void* scratch, cudaStream_t stream);

}  // namespace rk::gpu
