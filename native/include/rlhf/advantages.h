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

struct WhitenParams {
  FloatIn values;
  const uint8_t* mask = nullptr;
  bool shift_mean = true, unbiased = true;
  float eps = 1e-8f;
  float* out = nullptr;
};
void whiten(const WhitenParams& p);

enum class GroupMethod : int32_t { grpo = 0, rloo = 1, mean_centered = 2 };

struct GroupAdvantagesParams {
  FloatIn scores;
  const int32_t* offsets = nullptr;
  int64_t num_groups = 0;
  GroupMethod method = GroupMethod::grpo;
  float eps = 1e-6f;
  bool unbiased = true;
  float* out = nullptr;
};
void group_advantages(const GroupAdvantagesParams& p);

}  // namespace rk
