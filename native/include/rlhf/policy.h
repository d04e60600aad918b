// PPO clipped policy loss (DESIGN §1.4) per token, aggregated (§1.9). Math in src/reference/policy.ts.
#pragma once
#include <cmath>
#include "common.h"

namespace rk {

struct PolicyOptions {
  float clip_low = 0.2f, clip_high = 0.2f;
  float dual_clip = NAN;  // off (is_on), else > 1
  float log_ratio_clamp = 20.f;
};

// One token's loss, d loss / d logp and flags; shared by policy_loss and ppo_loss.
struct PolicyToken {
  float loss, grad, ratio;
  bool clipped_low, clipped_high, dual_clipped;
};

RK_HD inline PolicyToken policy_token(float logp, float old, float A, const PolicyOptions& o) {
  const float d = logp - old;
  const float C = o.log_ratio_clamp;
  const float dc = d > C ? C : (d < -C ? -C : d);
  const float r = std::exp(dc);
  const float lo = 1.f - o.clip_low, hi = 1.f + o.clip_high;
  const float surr1 = r * A;
  const float surr2 = (r < lo ? lo : (r > hi ? hi : r)) * A;
  const bool clipped = surr2 < surr1;
  float loss = -(clipped ? surr2 : surr1);
  bool dual = false;
  if (is_on(o.dual_clip) && A < 0.f && -o.dual_clip * A < loss) {
    loss = -o.dual_clip * A;
    dual = true;
  }
  const bool flat = clipped || dual || d > C || d < -C;
  return {loss, flat ? 0.f : -r * A, r, clipped && A < 0.f, clipped && A > 0.f, dual};
}

// The clip metrics of `count` counted tokens from their sums (ratio; clipped low, high, dual: counts of type N)
// and the ratio's max, into any result with these fields: the CPU kernels (ClipStats, N = int64_t) and the
// CUDA result blocks (rlhf/cuda_ops.h, N = float) both form them here.
template <class Result, class N>
inline void write_clip_metrics(Result& r, N count, float ratio_sum, N low, N high, N dual, float ratio_max) {
  const float f = count > N(0) ? 1.f / float(count) : 0.f;
  r.ratio_mean = ratio_sum * f;
  r.ratio_max = count > N(0) ? ratio_max : 0.f;
  r.clip_fraction = float(low + high) * f;
  r.clip_fraction_low = float(low) * f;
  r.clip_fraction_high = float(high) * f;
  r.dual_clip_fraction = float(dual) * f;
}

// The clip metrics over the counted tokens, shared by policy_loss and ppo_loss (host side only).
struct ClipStats {
  KahanSum ratio;
  float ratio_max = -INFINITY;
  int64_t low = 0, high = 0, dual = 0;

  void add(float r, bool clipped_low, bool clipped_high, bool dual_clipped) {
    ratio.add(r);
    ratio_max = r > ratio_max ? r : ratio_max;
    low += clipped_low;
    high += clipped_high;
    dual += dual_clipped;
  }

  // Fractions of the `count` counted tokens, ratio mean and max, into any result with these fields.
  template <class Result>
  void write(Result& r, int64_t count) const {
    write_clip_metrics(r, count, ratio.value(), low, high, dual, ratio_max);
  }
};

struct PolicyLossParams {
  TokenBatch batch;
  FloatIn logp, old_logp, advantages;
  PolicyOptions opts;
  float* per_token = nullptr;
  float* grad = nullptr;
};
#define RK_POLICY_LOSS_FIELDS(X)                                                                           \
  X("loss", float, loss) X("clipFraction", float, clip_fraction) X("clipFractionLow", float, clip_fraction_low) \
  X("clipFractionHigh", float, clip_fraction_high) X("dualClipFraction", float, dual_clip_fraction)           \
  X("approxKl", float, approx_kl) X("ratioMean", float, ratio_mean) X("ratioMax", float, ratio_max)             \
  X("count", int64_t, count)
struct PolicyLossResult {
  RK_POLICY_LOSS_FIELDS(RK_RESULT_MEMBER)
};
PolicyLossResult policy_loss(const PolicyLossParams& p);

}  // namespace rk
