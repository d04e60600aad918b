// Value loss (DESIGN §1.6), aggregated (§1.9). Math in src/reference/value.ts.
#pragma once
#include "common.h"

namespace rk {

struct ValueOptions {
  float clip = NAN;  // off (is_on), else ≥ 0
  bool half = false;
};

// One token's loss and d/dV; returns whether the clipped term was the larger. Shared with ppo_loss.
RK_HD inline bool value_token(float V, float R, float V_old, const ValueOptions& o, float& loss, float& grad) {
  const float h = o.half ? 0.5f : 1.f;
  const float e1 = V - R;
  float u = e1 * e1;
  bool clipped = false;
  if (is_on(o.clip)) {
    const float lo = V_old - o.clip, hi = V_old + o.clip;
    const float e2 = (V < lo ? lo : (V > hi ? hi : V)) - R;
    if (e2 * e2 > u) {
      u = e2 * e2;
      clipped = true;
    }
  }
  loss = h * u;
  grad = clipped ? 0.f : 2.f * h * e1;
  return clipped;
}

struct ValueLossParams {
  TokenBatch batch;
  FloatIn values, returns, old_values;
  ValueOptions opts;
  float* per_token = nullptr;
  float* grad = nullptr;
};
#define RK_VALUE_LOSS_FIELDS(X) X("loss", float, loss) X("clipFraction", float, clip_fraction)
struct ValueLossResult {
  RK_VALUE_LOSS_FIELDS(RK_RESULT_MEMBER)
};
ValueLossResult value_loss(const ValueLossParams& p);

}  // namespace rk
