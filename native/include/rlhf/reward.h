// K-wise reward-model loss (DESIGN §1.3) over ragged prompts. Math in src/reference/reward.ts.
#pragma once
#include "common.h"

namespace rk {

struct RewardLossParams {
  FloatIn scores;                  // [total]
  const int32_t* offsets = nullptr;  // [N + 1]; null when K > 0
  int64_t N = 0;
  int64_t K = 0;                     // > 0: every prompt has K candidates, prompt n from n·K (offsets null)
  const int32_t* chosen = nullptr;   // [N] or null (then target_probs)
  int64_t ignored = -1;              // the prompts whose chosen is ignore_index when the caller counted them, else −1
  FloatIn target_probs;            // [total] or absent
  FloatIn margins;                 // [total] or absent
  float center_coef = 0.f;
  Reduction reduction = Reduction::mean;
  int32_t ignore_index = -100;
  float* probs = nullptr;   // [total]
  float* grad = nullptr;    // [total]
  float* losses = nullptr;  // [N]
};
#define RK_REWARD_LOSS_FIELDS(X) X("loss", float, loss) X("count", int64_t, count) X("accuracy", float, accuracy)
struct RewardLossResult {
  RK_REWARD_LOSS_FIELDS(RK_RESULT_MEMBER)
};
RewardLossResult reward_loss(const RewardLossParams& p);

// The first candidate of prompt n (0 ≤ n ≤ N): offsets[n], or n·K for a uniform K
RK_HD inline int64_t reward_first(const RewardLossParams& p, int64_t n) { return p.offsets ? int64_t(p.offsets[n]) : n * p.K; }

}  // namespace rk
