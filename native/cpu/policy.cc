// CPU PPO clipped policy loss (DESIGN §1.4); math in native/include/rlhf/policy.h (policy_token).
#include "rlhf/policy.h"

#include <vector>

#include "rlhf/aggregate.h"

namespace rk {

PolicyLossResult policy_loss(const PolicyLossParams& p) {
  const TokenBatch& b = p.batch;
  std::vector<float> w(size_t(b.tokens));
  PolicyLossResult r;
  r.count = aggregation_weights(b, w.data());
  KahanSum loss, kl, ratio;
  float ratio_max = -INFINITY;
  int64_t low = 0, high = 0, dual = 0;
  for (int64_t t = 0; t < b.tokens; t++) {
    if (b.mask && !b.mask[t]) {
      p.per_token[t] = 0.f;
      p.grad[t] = 0.f;
      continue;
    }
    const float lp = read(p.logp, t), old = read(p.old_logp, t);
    const PolicyToken s = policy_token(lp, old, read(p.advantages, t), p.opts);
    p.per_token[t] = s.loss;
    p.grad[t] = w[t] * s.grad;
    loss.add(w[t] * s.loss);
    kl.add(w[t] * (old - lp));
    ratio.add(s.ratio);
    ratio_max = s.ratio > ratio_max ? s.ratio : ratio_max;
    low += s.clipped_low;
    high += s.clipped_high;
    dual += s.dual_clipped;
  }
  const float f = r.count > 0 ? 1.f / float(r.count) : 0.f;
  r.loss = loss.value();
  r.approx_kl = kl.value();
  r.ratio_mean = ratio.value() * f;
  r.ratio_max = r.count > 0 ? ratio_max : 0.f;
  r.clip_fraction = float(low + high) * f;
  r.clip_fraction_low = float(low) * f;
  r.clip_fraction_high = float(high) * f;
  r.dual_clip_fraction = float(dual) * f;
  return r;
}

}  // namespace rk
