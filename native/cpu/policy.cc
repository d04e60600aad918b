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
  KahanSum loss, kl;
  ClipStats stats;
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
    stats.add(s.ratio, s.clipped_low, s.clipped_high, s.dual_clipped);
  }
  r.loss = loss.value();
  r.approx_kl = kl.value();
  stats.write(r, r.count);
  return r;
}

}  // namespace rk
