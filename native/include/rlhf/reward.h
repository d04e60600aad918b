// K-wise reward-model loss (DESIGN §1.3) over ragged prompts. Math in src/reference/reward.ts.
#pragma once
#include "common.h"

namespace rk {

struct RewardLossParams {
  FloatIn scores;                  // [total]
  const int32_t* offsets = nullptr;  // [N + 1]
  int64_t N = 0;
  const int32_t* chosen = nullptr;   // [N] or null (then target_probs)
  FloatIn target_probs;            // [total] or absent
  FloatIn margins;                 // [total] or absent
  float center_coef = 0.f;
  Reduction reduction = Reduction::mean;
  int32_t ignore_index = -100;
  float* probs = nullptr;   // [total]
  float* grad = nullptr;    // [total]
  float* losses = nullptr;  // [N]
};
struct RewardLossResult {
  float loss = 0.f;
  int64_t count = 0;
  float accuracy = 0.f;
};
RewardLossResult reward_loss(const RewardLossParams& p);

}  // namespace rk
