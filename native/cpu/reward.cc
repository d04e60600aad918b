// CPU K-wise reward-model loss (DESIGN §1.3); math in src/reference/reward.ts. Prompts are spread over the
// thread pool; the batch sums are taken afterwards in prompt order.
#include "rlhf/reward.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "parallel.h"
#include "rowmath.h"

namespace rk {

namespace {

// Prompts [begin, end): probs, grad and losses, and whether each counted prompt ranks its label first.
// Scores are read through their storage type T (no per-element dtype switch).
template <typename T>
void reward_prompts(const RewardLossParams& p, float scale, uint8_t* best, int64_t begin, int64_t end) {
  const T* scores = static_cast<const T*>(p.scores.data);
  constexpr int64_t SMALL = 64;  // candidates kept on the stack; a larger prompt uses a per-thread vector
  double small[SMALL];  // a prompt's scores plus margins, in double: K is small, and s + m would round
  thread_local std::vector<double> large;
  for (int64_t n = begin; n < end; n++) {
    const int64_t a = p.offsets[n];
    const int64_t K = p.offsets[n + 1] - a;
    const T* sc = scores + a;
    float* probs = p.probs + a;
    if (K > SMALL) large.resize(size_t(K));
    double* shifted = K > SMALL ? large.data() : small;
    const int32_t b = p.chosen ? p.chosen[n] : -1;
    double m = -INFINITY;
    for (int64_t i = 0; i < K; i++) {
      const double s = double(load(sc, i)) + (p.margins.present() && i != b ? read(p.margins, a + i) : 0.f);
      shifted[i] = s;
      m = std::max(m, s);
    }
    // one exp per candidate, in float32 (exp_approx, ≤ 2 ulp) of s − m, the max subtracted in double; kept in
    // probs and rescaled by 1/Σ (Σ in double); log p_i = (s_i − m) − log Σ, from s − m (never s − lse, which
    // cancels two terms of size |s|)
    double se = 0, others = 0;  // others: Σ over the candidates other than the chosen one
    for (int64_t i = 0; i < K; i++) {
      shifted[i] -= m;
      const float e = exp_approx(float(shifted[i]));
      se += e;
      others += i != b ? e : 0.f;
      probs[i] = e;
    }
    const double ls = std::log(se);
    const float inv = float(1.0 / se);
    for (int64_t i = 0; i < K; i++) probs[i] *= inv;
    auto logp = [&](int64_t i) { return float(shifted[i] - ls); };
    p.losses[n] = 0.f;
    best[n] = 0;
    if (!(K >= 2 && (p.chosen == nullptr || b != p.ignore_index))) {
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
      for (int64_t i = 0; i < K; i++) s.add(load(sc, i));
      loss.add(p.center_coef * s.value() * s.value());
      center = 2.f * p.center_coef * s.value();
    }
    p.losses[n] = loss.value();
    for (int64_t i = 0; i < K; i++) {
      // the chosen candidate's p − 1 as −Σ_{j≠b} e_j / Σ e, exact where p is near 1 (no 1 − p cancels; the
      // same precision as expm1(log p), without a libm expm1 per prompt)
      const float d = p.target_probs.present() ? probs[i] * y_sum - read(p.target_probs, a + i)
                    : i == b ? float(-others / se) : probs[i];
      p.grad[a + i] = scale * (d + center);
    }
    bool top = true;
    const float rb = load(sc, label);
    for (int64_t i = 0; i < K; i++) if (i != label && !(rb > load(sc, i))) top = false;
    best[n] = top;
  }
}

}  // namespace

RewardLossResult reward_loss(const RewardLossParams& p) {
  RewardLossResult r;
  for (int64_t n = 0; n < p.N; n++) {
    r.count += p.offsets[n + 1] - p.offsets[n] >= 2 && (p.chosen == nullptr || p.chosen[n] != p.ignore_index);
  }
  const float scale = p.reduction == Reduction::mean ? (r.count > 0 ? 1.f / float(r.count) : 0.f) : 1.f;
  std::vector<uint8_t> best(static_cast<size_t>(p.N));
  dispatch_dtype(p.scores.dtype, [&]<typename T>() {
    parallel_for(p.N, 4096, [&](int64_t b, int64_t e) { reward_prompts<T>(p, scale, best.data(), b, e); });
  });
  KahanSum total;  // in prompt order, whatever the thread count (a prompt not counted adds its loss 0)
  int64_t correct = 0;
  for (int64_t n = 0; n < p.N; n++) {
    total.add(p.losses[n]);
    correct += best[n];
  }
  r.loss = total.value() * scale;
  r.accuracy = r.count > 0 ? float(double(correct) / double(r.count)) : 0.f;
  return r;
}

}  // namespace rk
