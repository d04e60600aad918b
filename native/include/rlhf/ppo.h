// The fused PPO objective from logits (DESIGN §1.7): policy term, KL (full-vocabulary or sampled) and value
// term in one pass over each logits row. Math in src/reference/ppo.ts.
#pragma once
#include "common.h"
#include "kl.h"
#include "policy.h"
#include "value.h"

namespace rk {

struct PpoLossParams {
  TokenBatch batch;  // tokens = rows of the logits
  FloatIn logits;
  int64_t V = 0;
  const int32_t* actions = nullptr;
  FloatIn old_logp;       // absent: from anchor_logits
  FloatIn anchor_logits;  // π_old or π_ref logits, or absent
  FloatIn ref_logp;       // for sampled estimators, or absent
  FloatIn advantages;
  FloatIn values, returns, old_values;  // values/returns absent: no value term
  double temperature = 1.0;
  const float* temperatures = nullptr;  // [rows] or null: row n's T, in place of temperature
  PolicyOptions policy;
  float beta = 0.f, c1 = 0.1f;
  bool full_kl = true;
  KlOptions kl;
  ValueOptions value;
  float* grad_logits = nullptr;  // [tokens, V]
  uint16_t* grad_logits16 = nullptr;  // cuda: [tokens, V] in the logits' 16-bit dtype instead, or null
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
  X("valueClipFraction", float, value_clip_fraction) X("count", int64_t, count)
struct PpoLossResult {
  RK_PPO_LOSS_FIELDS(RK_RESULT_MEMBER)
  RK_PPO_METRICS_FIELDS(RK_RESULT_MEMBER)
};
PpoLossResult ppo_loss(const PpoLossParams& p);

}  // namespace rk
