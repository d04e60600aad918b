// CPU K-wise reward-model loss (DESIGN §1.3); math in src/reference/reward.ts. K is small, so prompts run
// one after another; sums are compensated.
#include "rlhf/reward.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace rk {

RewardLossResult reward_loss(const RewardLossParams& p) {
  RewardLossResult r;
  auto counted = [&](int64_t n) {
    return p.offsets[n + 1] - p.offsets[n] >= 2 && (p.chosen == nullptr || p.chosen[n] != p.ignore_index);
  };
  for (int64_t n = 0; n < p.N; n++) r.count += counted(n);
  const float scale = p.reduction == Reduction::mean ? (r.count > 0 ? 1.f / float(r.count) : 0.f) : 1.f;
  std::vector<double> shifted;  // a prompt's scores plus margins, in double: K is small, and s + m would round
  KahanSum total;
  int64_t correct = 0;
  for (int64_t n = 0; n < p.N; n++) {
    const int64_t a = p.offsets[n];
    const int64_t K = p.offsets[n + 1] - a;
    shifted.resize(size_t(K));
    const int32_t b = p.chosen ? p.chosen[n] : -1;
    double m = -INFINITY;
    for (int64_t i = 0; i < K; i++) {
      const double s = double(read(p.scores, a + i)) + (p.margins.present() && i != b ? read(p.margins, a + i) : 0.f);
      shifted[i] = s;
      m = std::max(m, s);
    }
    double se = 0;
    for (int64_t i = 0; i < K; i++) se += std::exp(shifted[i] - m);
    // log p_i = (s_i − m) − log Σ, from s − m (never s − lse, which cancels two terms of size |s|)
    const double ls = std::log(se);
    auto logp = [&](int64_t i) { return float((shifted[i] - m) - ls); };
    for (int64_t i = 0; i < K; i++) p.probs[a + i] = std::exp(logp(i));
    p.losses[n] = 0.f;
    if (!counted(n)) {
      std::fill(p.grad + a, p.grad + a + K, 0.f);
      continue;
    }
    KahanSum loss;
    int64_t label = b;
    float y_sum = 1.f;
    if (!p.target_probs.present()) {
      loss.add(-logp(b));
    } else {
      label = 0;
      KahanSum ys;
      for (int64_t i = 0; i < K; i++) {
        const float y = read(p.target_probs, a + i);
        ys.add(y);
        if (y != 0.f) loss.add(-y * logp(i));
        if (y > read(p.target_probs, a + label)) label = i;
      }
      y_sum = ys.value();
    }
    float center = 0.f;
    if (p.center_coef != 0.f) {
      KahanSum s;
      for (int64_t i = 0; i < K; i++) s.add(read(p.scores, a + i));
      loss.add(p.center_coef * s.value() * s.value());
      center = 2.f * p.center_coef * s.value();
    }
    p.losses[n] = loss.value();
    total.add(p.losses[n]);
    for (int64_t i = 0; i < K; i++) {
      // the chosen candidate's p − 1 as expm1(log p), exact where p is near 1
      const float d = p.target_probs.present() ? p.probs[a + i] * y_sum - read(p.target_probs, a + i)
                    : i == b ? std::expm1(logp(i)) : p.probs[a + i];
      p.grad[a + i] = scale * (d + center);
    }
    bool best = true;
    const float rb = read(p.scores, a + label);
    for (int64_t i = 0; i < K; i++) if (i != label && !(rb > read(p.scores, a + i))) best = false;
    correct += best;
  }
  r.loss = total.value() * scale;
  r.accuracy = r.count > 0 ? float(double(correct) / double(r.count)) : 0.f;
  return r;
}

}  // namespace rk
