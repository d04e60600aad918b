// The fused PPO objective from logits (DESIGN §1.7): policy term, KL (full-vocabulary or sampled) and value
// term in one pass over each logits row. Math in src/reference/ppo.ts.
#pragma once
#include "common.h"
#include "kl.h"
#include "policy.h"
#include "value.h"

namespace rk {

// ppoLoss trustRegion's names in ordinal order (src/choices.ts TRUST_REGIONS)
#define RK_TRUST_REGIONS(X) X(binary, "binary") X(full, "full")
enum class TrustRegion : int32_t { RK_TRUST_REGIONS(RK_ENUM_MEMBER) };

struct PpoLossParams {
  TokenBatch batch;  // tokens = rows of the logits
  FloatIn logits;
  int64_t V = 0;
  const int32_t* actions = nullptr;
  FloatIn old_logp;       // absent: from anchor_logits
  FloatIn anchor_logits;  // π_old or π_ref logits, or absent
  FloatIn ref_logp;       // for sampled estimators, or absent
  FloatIn behavior_logp;  // the rollout correction's behavior log-probs, or absent
  FloatIn advantages;
  FloatIn values, returns, old_values;  // values/returns absent: no value term
  double temperature = 1.0;
  const float* temperatures = nullptr;  // [rows] or null: row n's T, in place of temperature
  PolicyOptions policy;
  // trustRegion 'full' (variant dppo-*, anchor_logits = π_old): the DPPO mask by each position's
  // full-vocabulary TV ½Σ|π − π_old| (dppo-tv) or KL(π_old ‖ π) (dppo-kl) instead of the binary one
  bool trust_full = false;
  float beta = 0.f, c1 = 0.1f;
  bool full_kl = true;
  KlOptions kl;
  ValueOptions value;
  float* grad_logits = nullptr;  // [tokens, V]
  uint16_t* grad_logits16 = nullptr;  // [tokens, V] in the logits' 16-bit dtype instead, or null
  float* grad_values = nullptr;  // [tokens] or null
  float* logp = nullptr;         // [tokens]
};
// The result's top-level scalars, then those of its `metrics` object.
#define RK_PPO_LOSS_FIELDS(X) \
  X("loss", float, loss) X("policyLoss", float, policy_loss) X("kl", float, kl) X("valueLoss", float, value_loss)
#define RK_PPO_METRICS_FIELDS(X)                                                                            \
  X("clipFraction", float, clip_fraction) X("clipFractionLow", float, clip_fraction_low)                       \
  X("clipFractionHigh", float, clip_fraction_high) X("dualClipFraction", float, dual_clip_fraction)           \
  X("approxKl", float, approx_kl) X("ratioMean", float, ratio_mean) X("ratioMax", float, ratio_max)             \
  X("valueClipFraction", float, value_clip_fraction) X("count", int64_t, count) RK_ROLLOUT_METRICS_FIELDS(X)
struct PpoLossResult {
  RK_PPO_LOSS_FIELDS(RK_RESULT_MEMBER)
  RK_PPO_METRICS_FIELDS(RK_RESULT_MEMBER)
};
PpoLossResult ppo_loss(const PpoLossParams& p);
// Whether the policy term is more than the token-level PPO clip (a variant, a sequence level, a rollout
// correction, OPSM): then every token's log-prob is formed first and the policy terms come from policy_loss.
inline bool ppo_policy_first(const PpoLossParams& p) { return !p.policy.plain() || p.behavior_logp.present(); }
// The policy metrics of a policy_loss result into ppo_loss's (the policy-first path; the policy loss itself
// is ppo_loss's own sum of the same token terms).
inline void ppo_take_policy(PpoLossResult& r, const PolicyLossResult& pr) {
  r.clip_fraction = pr.clip_fraction, r.clip_fraction_low = pr.clip_fraction_low, r.clip_fraction_high = pr.clip_fraction_high;
  r.dual_clip_fraction = pr.dual_clip_fraction, r.ratio_mean = pr.ratio_mean, r.ratio_max = pr.ratio_max;
#define RK_TAKE(js, type, member) r.member = pr.member;
  RK_ROLLOUT_METRICS_FIELDS(RK_TAKE)
#undef RK_TAKE
}

}  // namespace rk
