// The CUDA kernels of the per-token, reward and advantage ops (native/cuda/{policy,kl,value,reward,
// advantages,ppo}.cu), with the CPU kernels' parameter structs and every pointer on the device. Scalar
// results are written to `result` in device memory (RESULT_FLOATS floats), at the slots each op's <Op>Slot
// lists: the kernels write them by name and <op>_result reads them back by name. `scratch` is device memory
// of at least <op>_scratch_bytes(...) bytes. Launches are asynchronous on `stream`.
#pragma once
#include <cuda_runtime.h>

#include "advantages.h"
#include "cuda_vocab.h"
#include "kl.h"
#include "policy.h"
#include "ppo.h"
#include "preference.h"
#include "reward.h"
#include "value.h"

namespace rk::gpu {

// Scratch of a per-token op (tokens.cuh): sequence counts [S] int32 (padded to 256 bytes), the batch
// totals [TOKEN_TOTALS] floats, then K partial sums per sequence, K the op's accumulators (its slot count).
constexpr int TOKEN_TOTALS = 64;
inline size_t token_counts_bytes(int64_t num_seqs) { return size_t((num_seqs * 4 + 255) / 256) * 256; }
inline size_t token_scratch_bytes(int64_t num_seqs, int K) {
  return token_counts_bytes(num_seqs) + TOKEN_TOTALS * sizeof(float) + size_t(num_seqs) * K * sizeof(float);
}

// Result slots of the per-token ops: each is one of the op's accumulators (sums over the counted tokens; a
// max, when the op has one, last), K of them.
// The sums of the counted tokens, then the rollout sums (RolloutSums), then the two maxima (reduced by max
// from w_max on).
struct PolicySlot {
  enum : int {
    loss, approx_kl, ratio_sum, count, clipped_low, clipped_high, dual_clipped,
    w_sum, k1_sum, k3_sum, mismatch, dropped, truncated, opsm, seqs, seq_dropped, seq_truncated,
    w_max, ratio_max, K
  };
};
struct KlPenaltySlot {
  enum : int { loss, K };
};
struct ValueSlot {
  enum : int { loss, clipped, count, K };
};
inline size_t policy_scratch_bytes(const PolicyLossParams& p) { return token_scratch_bytes(p.batch.num_seqs, PolicySlot::K); }
inline size_t kl_penalty_scratch_bytes(const KlPenaltyParams& p) { return token_scratch_bytes(p.batch.num_seqs, KlPenaltySlot::K); }
inline size_t value_scratch_bytes(const ValueLossParams& p) { return token_scratch_bytes(p.batch.num_seqs, ValueSlot::K); }
cudaError_t policy_loss(const PolicyLossParams& p, float* result, void* scratch, cudaStream_t stream);
cudaError_t kl_penalty(const KlPenaltyParams& p, float* result, void* scratch, cudaStream_t stream);
cudaError_t value_loss(const ValueLossParams& p, float* result, void* scratch, cudaStream_t stream);

// scale: the reduction's factor (1/count for the mean), formed before the gradients.
struct KlDivergenceSlot {
  enum : int { loss, count, scale, K };
};
// Whether kl_divergence takes the single-pass kernel (the gradient wrt q only). Else, with 16-bit gradients,
// p.grad_q / p.grad_p must be float32 staging of N·V elements, rounded into grad_q16 / grad_p16.
bool kl_single_pass(const KlDivergenceParams& p);
// scratch: N + 1 floats
cudaError_t kl_divergence(const KlDivergenceParams& p, float* result, float* scratch, cudaStream_t stream);

// correct: the prompts whose chosen candidate scored highest; scale as above.
struct RewardSlot {
  enum : int { loss, count, correct, scale, K };
};
// scratch: reward_scratch_bytes(N). flags: the first prompt whose chosen index is bad.
size_t reward_scratch_bytes(int64_t N);
cudaError_t reward_loss(const RewardLossParams& p, float* result, void* scratch, DeviceFlags* flags, cudaStream_t stream);
cudaError_t gae(const GaeParams& p, cudaStream_t stream);
// scratch: whiten_scratch_bytes(values.size)
size_t whiten_scratch_bytes(int64_t n);
cudaError_t whiten(const WhitenParams& p, void* scratch, cudaStream_t stream);
cudaError_t group_advantages(const GroupAdvantagesParams& p, cudaStream_t stream);
// flags: the first row whose target is bad (its gradient row is zero)
cudaError_t log_probs_backward(const LogProbsBackwardParams& p, DeviceFlags* flags, cudaStream_t stream);

// The fused PPO objective: loss, then the per-token terms summed in token order (policy_loss .. dual_clipped,
// in this order), then the others.
// policy_first: 1 when the policy-first path ran (ppo_policy_first): then the policy metrics are those of
// the policy_loss result block at policy (PolicySlot::K floats).
struct PpoSlot {
  enum : int {
    loss, policy_loss, kl, value_loss, approx_kl, ratio_sum, clipped_low, clipped_high, dual_clipped,
    value_clipped, ratio_max, count, policy_first, policy, K = policy + PolicySlot::K
  };
};
// scratch: ppo_scratch_bytes(p). flags: the first token whose action is bad.
size_t ppo_scratch_bytes(const PpoLossParams& p);
// Whether ppo_loss takes the single-pass kernel; else, with grad_logits16, grad_logits must be float32
// staging of tokens·V elements.
bool ppo_single_pass(const PpoLossParams& p);
cudaError_t ppo_loss(const PpoLossParams& p, float* result, void* scratch, DeviceFlags* flags, cudaStream_t stream);

static_assert(PolicySlot::K <= RESULT_FLOATS && KlDivergenceSlot::K <= RESULT_FLOATS && RewardSlot::K <= RESULT_FLOATS &&
              PpoSlot::K <= RESULT_FLOATS && CrossEntropySlot::K <= RESULT_FLOATS);

// The preference family (native/cuda/preference.cu). sequence_log_probs has no scalar results.
cudaError_t sequence_log_probs(const SequenceLogProbsParams& p, cudaStream_t stream);
struct PreferenceSlot {
  enum : int { loss, count, accuracy, chosen_reward, rejected_reward, margin, K };
};
static_assert(PreferenceSlot::K <= RESULT_FLOATS);
// scratch: preference_scratch_bytes(p)
size_t preference_scratch_bytes(const PreferenceLossParams& p);
cudaError_t preference_loss(const PreferenceLossParams& p, float* result, void* scratch, cudaStream_t stream);

// The result blocks above as the CPU kernels' result structs (fractions and means formed on the host, as
// the CPU kernels form them). A result whose every field is the slot of its name is read from the op's field
// list (RK_SLOT_RESULT: a field without its slot does not compile); the others by hand.
#define RK_SLOT_READ(js, type, member) o.member = type(r[S::member]);
#define RK_SLOT_RESULT(fn, Result, Slot, FIELDS) \
  inline Result fn(const float* r) {             \
    using S = Slot;                              \
    Result o;                                    \
    FIELDS(RK_SLOT_READ)                         \
    return o;                                    \
  }
RK_SLOT_RESULT(cross_entropy_result, CrossEntropyResult, CrossEntropySlot, RK_CROSS_ENTROPY_FIELDS)
RK_SLOT_RESULT(kl_divergence_result, KlDivergenceResult, KlDivergenceSlot, RK_KL_DIVERGENCE_FIELDS)
RK_SLOT_RESULT(kl_penalty_result, KlPenaltyResult, KlPenaltySlot, RK_KL_PENALTY_FIELDS)
RK_SLOT_RESULT(preference_result, PreferenceLossResult, PreferenceSlot, RK_PREFERENCE_LOSS_FIELDS)

inline PolicyLossResult policy_result(const float* r) {
  using S = PolicySlot;
  PolicyLossResult o;
  o.loss = r[S::loss];
  o.approx_kl = r[S::approx_kl];
  o.count = int64_t(r[S::count]);
  write_clip_metrics(o, r[S::count], r[S::ratio_sum], r[S::clipped_low], r[S::clipped_high], r[S::dual_clipped], r[S::ratio_max]);
  RolloutSums<float> ro;
  ro.w = r[S::w_sum], ro.k1 = r[S::k1_sum], ro.k3 = r[S::k3_sum], ro.w_max = r[S::w_max];
  ro.mismatch = r[S::mismatch], ro.dropped = r[S::dropped], ro.truncated = r[S::truncated], ro.opsm = r[S::opsm];
  ro.seqs = r[S::seqs], ro.seq_dropped = r[S::seq_dropped], ro.seq_truncated = r[S::seq_truncated];
  ro.write(o, r[S::count]);
  return o;
}
inline ValueLossResult value_result(const float* r) {
  using S = ValueSlot;
  return {r[S::loss], r[S::count] > 0.f ? float(double(r[S::clipped]) / double(r[S::count])) : 0.f};
}
inline RewardLossResult reward_result(const float* r) {
  using S = RewardSlot;
  RewardLossResult o;
  o.loss = r[S::loss];
  o.count = int64_t(r[S::count]);
  o.accuracy = r[S::count] > 0.f ? float(double(r[S::correct]) / double(r[S::count])) : 0.f;
  return o;
}
inline PpoLossResult ppo_result(const float* r) {
  using S = PpoSlot;
  PpoLossResult o;
  o.loss = r[S::loss];
  o.policy_loss = r[S::policy_loss];
  o.kl = r[S::kl];
  o.value_loss = r[S::value_loss];
  o.approx_kl = r[S::approx_kl];
  o.count = int64_t(r[S::count]);
  write_clip_metrics(o, r[S::count], r[S::ratio_sum], r[S::clipped_low], r[S::clipped_high], r[S::dual_clipped], r[S::ratio_max]);
  o.value_clip_fraction = r[S::value_clipped] * (r[S::count] > 0.f ? 1.f / r[S::count] : 0.f);
  if (r[S::policy_first] != 0.f) ppo_take_policy(o, policy_result(r + S::policy));
  return o;
}

}  // namespace rk::gpu
