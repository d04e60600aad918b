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
  float gamma = 1.f, lambda = 0.95f;
  float* advantages = nullptr;
  float* returns = nullptr;
};
void gae(const GaeParams& p);

// GAE of sequence s, backwards in time (shared by the CPU loop and the CUDA kernel).
RK_HD inline void gae_sequence(const GaeParams& p, int64_t s) {
  float next = p.last_values.data ? read(p.last_values, s) : 0.f;
  float acc = 0.f;
  for (int64_t t = int64_t(p.offsets[s + 1]) - 1; t >= p.offsets[s]; t--) {
    if (p.mask && !p.mask[t]) {
      p.advantages[t] = 0.f;
      p.returns[t] = 0.f;
      continue;
    }
    const float v = read(p.values, t);
    acc = read(p.rewards, t) + p.gamma * next - v + p.gamma * p.lambda * acc;
    next = v;
    p.advantages[t] = acc;
    p.returns[t] = acc + v;
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

enum class GroupMethod : int32_t { grpo = 0, rloo = 1, mean_centered = 2 };

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
