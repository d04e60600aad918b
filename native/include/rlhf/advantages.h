// Advantage estimators (DESIGN §1.8): GAE, masked whitening, group advantages. Math in
// src/reference/advantages.ts.
#pragma once
#include "common.h"

namespace rk {

struct GaeParams {
  FloatIn rewards, values, last_values;  // last_values: [num_seqs] or absent
  const int32_t* offsets = nullptr;
  int64_t num_seqs = 0;
  const uint8_t* mask = nullptr;
  double gamma = 1.0, lambda = 0.95;
  float* advantages = nullptr;
  float* returns = nullptr;
};
void gae(const GaeParams& p);

// GAE of sequence s, backwards in time (the CPU loop). A_t accumulates in double: it sums many terms that may
// cancel (float32 was 5e-6 off on advantages of 0.04 after 64 tokens at γ = 0.99, λ = 1).
RK_HD inline void gae_sequence(const GaeParams& p, int64_t s) {
  float next = p.last_values.data ? read(p.last_values, s) : 0.f;
  double acc = 0;
  for (int64_t t = int64_t(p.offsets[s + 1]) - 1; t >= p.offsets[s]; t--) {
    if (p.mask && !p.mask[t]) {
      p.advantages[t] = 0.f;
      p.returns[t] = 0.f;
      continue;
    }
    const float v = read(p.values, t);
    acc = read(p.rewards, t) + p.gamma * next - v + p.gamma * p.lambda * acc;
    next = v;
    p.advantages[t] = float(acc);
    p.returns[t] = float(acc + v);
  }
}

struct WhitenParams {
  FloatIn values;
  const uint8_t* mask = nullptr;
  bool shift_mean = true, unbiased = true;
  double eps = 1e-8;
  float* out = nullptr;
};
void whiten(const WhitenParams& p);

#define RK_GROUP_METHODS(X) X(grpo, "grpo") X(rloo, "rloo") X(mean_centered, "mean-centered")
enum class GroupMethod : int32_t { RK_GROUP_METHODS(RK_ENUM_MEMBER) };

struct GroupAdvantagesParams {
  FloatIn scores;
  const int32_t* offsets = nullptr;
  int64_t num_groups = 0;
  GroupMethod method = GroupMethod::grpo;
  double eps = 1e-6;
  bool unbiased = true;
  float* out = nullptr;
};
void group_advantages(const GroupAdvantagesParams& p);

}  // namespace rk
