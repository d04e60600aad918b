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
struct PpoLossResult {
  float loss = 0.f, policy_loss = 0.f, kl = 0.f, value_loss = 0.f;
  float clip_fraction = 0.f, clip_fraction_low = 0.f, clip_fraction_high = 0.f, dual_clip_fraction = 0.f;
  float approx_kl = 0.f, ratio_mean = 0.f, ratio_max = 0.f, value_clip_fraction = 0.f;
  int64_t count = 0;
};
PpoLossResult ppo_loss(const PpoLossParams& p);

}  // namespace rk
