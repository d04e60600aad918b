// KL divergences (DESIGN §1.5): full-vocabulary KL(p‖q) over two logits tensors, and the sampled-token
// estimators. Math in src/reference/kl.ts.
#pragma once
#include <cmath>
#include "common.h"

namespace rk {

struct KlDivergenceParams {
  FloatIn p_logits, q_logits;
  int64_t N = 0, V = 0;
  const uint8_t* mask = nullptr;  // [N] or null
  Reduction reduction = Reduction::mean;
  double temperature = 1.0;
  const float* temperatures = nullptr;  // [rows] or null: row n's T, in place of temperature
  float* per_row = nullptr;  // [N]
  float* grad_q = nullptr;   // [N, V] or null
  float* grad_p = nullptr;   // [N, V] or null
  uint16_t* grad_q16 = nullptr;  // the gradients in the logits' 16-bit dtype instead, or null
  uint16_t* grad_p16 = nullptr;
};
#define RK_KL_DIVERGENCE_FIELDS(X) X("loss", float, loss) X("count", int64_t, count)
struct KlDivergenceResult {
  RK_KL_DIVERGENCE_FIELDS(RK_RESULT_MEMBER)
};
KlDivergenceResult kl_divergence(const KlDivergenceParams& p);

#define RK_KL_ESTIMATORS(X) X(k1, "k1") X(abs, "abs") X(k2, "k2") X(k3, "k3")
enum class KlEstimator : int32_t { RK_KL_ESTIMATORS(RK_ENUM_MEMBER) };

struct KlOptions {
  KlEstimator estimator = KlEstimator::k3;
  float log_ratio_clamp = 20.f;
  float output_clamp = NAN;  // off (is_on), else > 0
};

// Value and d/dlogp of one estimator at δ = logp − refLogp; shared by kl_penalty and ppo_loss.
RK_HD inline void kl_token(float delta, const KlOptions& o, float& k, float& g) {
  k = 0.f;
  g = 0.f;
  switch (o.estimator) {
    case KlEstimator::k1: k = delta; g = 1.f; break;
    case KlEstimator::abs: k = std::fabs(delta); g = delta > 0.f ? 1.f : (delta < 0.f ? -1.f : 0.f); break;
    case KlEstimator::k2: k = 0.5f * delta * delta; g = delta; break;
    case KlEstimator::k3: {
      const float C = o.log_ratio_clamp;
      const float dc = delta > C ? C : (delta < -C ? -C : delta);
      const float e = std::exp(-dc);
      k = e + dc - 1.f;
      g = (delta > C || delta < -C) ? 0.f : 1.f - e;
      break;
    }
  }
  const float K = o.output_clamp;
  if (is_on(K) && (k > K || k < -K)) {
    k = k > K ? K : -K;
    g = 0.f;
  }
}

struct KlPenaltyParams {
  TokenBatch batch;
  FloatIn logp, ref_logp;
  KlOptions opts;
  float* per_token = nullptr;
  float* grad = nullptr;
};
#define RK_KL_PENALTY_FIELDS(X) X("loss", float, loss)
struct KlPenaltyResult {
  RK_KL_PENALTY_FIELDS(RK_RESULT_MEMBER)
};
float kl_penalty(const KlPenaltyParams& p);

}  // namespace rk
