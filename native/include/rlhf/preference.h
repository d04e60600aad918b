// The preference family (README "Preference losses"): sequence log-probs from token log-probs, and the preference losses
// (DPO/cDPO, robust, IPO, hinge, SimPO, Plackett–Luce) over K_n candidates per prompt. Math in
// src/reference/preference.ts. The per-prompt math below is compiled for the CPU kernel
// (native/cpu/preference.cc) and the CUDA kernel (native/cuda/preference.cu) alike, in double: K is small, and
// both backends then agree with the float64 reference up to the float32 rounding of their outputs.
#pragma once
#include <cmath>

#include "common.h"

namespace rk {

struct SequenceLogProbsParams {
  FloatIn logp;              // [tokens]
  TokenBatch batch;          // layout and mask (its aggregation is unused)
  bool mean = false;         // 'mean': over max(1, counted tokens); else the sum
  FloatIn grad_seq;          // [num_seqs] or absent
  float* seq_logp = nullptr;  // [num_seqs]
  float* lengths = nullptr;   // [num_seqs]
  float* grad_logp = nullptr; // [tokens] when grad_seq is present
};
void sequence_log_probs(const SequenceLogProbsParams& p);

#define RK_PREFERENCE_TYPES(X)                                                                                 \
  X(dpo, "dpo") X(robust, "robust") X(ipo, "ipo") X(hinge, "hinge") X(simpo, "simpo") X(plackett_luce, "plackett-luce")
enum class PreferenceType : int32_t { RK_PREFERENCE_TYPES(RK_ENUM_MEMBER) };

struct PreferenceLossParams {
  FloatIn logp;                       // [total]
  FloatIn ref_logp;                   // [total], absent for simpo
  FloatIn lengths;                    // [total] or absent
  const int32_t* offsets = nullptr;   // [N + 1]
  int64_t N = 0;
  const int32_t* chosen = nullptr;    // [N], or null (then ranking)
  const int32_t* ranking = nullptr;   // [total], each prompt's slice a permutation of 0..K_n−1
  PreferenceType type = PreferenceType::dpo;
  double beta = 0.1, label_smoothing = 0, gamma = 0;
  Reduction reduction = Reduction::mean;
  int32_t ignore_index = -100;
  float* rewards = nullptr;   // [total]
  float* grad = nullptr;      // [total]
  float* grad_ref = nullptr;  // [total] or null
  float* losses = nullptr;    // [N]
};
#define RK_PREFERENCE_LOSS_FIELDS(X)                                                                  \
  X("loss", float, loss) X("count", int64_t, count) X("accuracy", float, accuracy)                   \
  X("chosenReward", float, chosen_reward) X("rejectedReward", float, rejected_reward) X("margin", float, margin)
struct PreferenceLossResult {
  RK_PREFERENCE_LOSS_FIELDS(RK_RESULT_MEMBER)
};
PreferenceLossResult preference_loss(const PreferenceLossParams& p);

// Per-candidate working space of the per-prompt math, [total] each (the caller's: a vector, or device scratch).
struct PreferenceWork {
  double* u;       // the normalised log-ratios
  double* du;      // dℓ/du
  double* lse;     // Plackett–Luce: log-sum-exp of the not-yet-ranked rewards, by rank
  int32_t* order;  // the prompt's order π, best first
};

// What one prompt adds to the batch sums.
struct PreferenceTerms {
  double loss = 0, chosen = 0, rejected = 0, correct = 0;
};

RK_HD inline bool preference_counted(const PreferenceLossParams& p, int64_t n) {
  return p.offsets[n + 1] - p.offsets[n] >= 2 && (p.chosen == nullptr || p.chosen[n] != p.ignore_index);
}

RK_HD inline double read_double(const FloatIn& x, int64_t i) {
  return x.dtype == DType::f64 ? static_cast<const double*>(x.data)[i] : double(read(x, i));
}

RK_HD inline double preference_log_sigmoid(double h) { return fmin(h, 0.0) - log1p(exp(-fabs(h))); }
RK_HD inline double preference_sigmoid(double h) { return h >= 0 ? 1.0 / (1.0 + exp(-h)) : exp(h) / (1.0 + exp(h)); }

// A pairwise type's loss f(Δ) and df/dΔ, Δ = u_w − u_l.
RK_HD inline void preference_pair(const PreferenceLossParams& p, double delta, double& f, double& g) {
  const double beta = p.beta, e = p.label_smoothing;
  switch (p.type) {
    case PreferenceType::ipo: {
      const double d = delta - 1.0 / (2.0 * beta);
      f = d * d;
      g = 2.0 * d;
      return;
    }
    case PreferenceType::hinge: {
      const double m = 1.0 - beta * delta;
      f = m > 0 ? m : 0.0;
      g = m > 0 ? -beta : 0.0;
      return;
    }
    case PreferenceType::robust: {
      const double h = beta * delta;
      f = (-(1.0 - e) * preference_log_sigmoid(h) + e * preference_log_sigmoid(-h)) / (1.0 - 2.0 * e);
      g = beta * (preference_sigmoid(h) - (1.0 - e) / (1.0 - 2.0 * e));
      return;
    }
    default: {  // dpo, simpo
      const double h = beta * delta - (p.type == PreferenceType::simpo ? p.gamma : 0.0);
      f = -(1.0 - e) * preference_log_sigmoid(h) - e * preference_log_sigmoid(-h);
      g = beta * (preference_sigmoid(h) - (1.0 - e));
      return;
    }
  }
}

// Prompt n: its rewards, gradients and loss (into p's outputs; scale is the reduction's factor) and its terms.
RK_HD inline PreferenceTerms preference_prompt(const PreferenceLossParams& p, int64_t n, double scale, const PreferenceWork& w) {
  PreferenceTerms out;
  const int64_t a = p.offsets[n], K = p.offsets[n + 1] - a;
  double* u = w.u + a;
  double* du = w.du + a;
  int32_t* pi = w.order + a;
  auto length = [&](int64_t i) { return p.lengths.data != nullptr ? fmax(1.0, read_double(p.lengths, a + i)) : 1.0; };
  for (int64_t i = 0; i < K; i++) {
    u[i] = (read_double(p.logp, a + i) - (p.ref_logp.data != nullptr ? read_double(p.ref_logp, a + i) : 0.0)) / length(i);
    du[i] = 0;
    p.rewards[a + i] = float(p.beta * u[i]);
  }
  p.losses[n] = 0.f;
  if (!preference_counted(p, n)) {
    for (int64_t i = 0; i < K; i++) {
      p.grad[a + i] = 0.f;
      if (p.grad_ref) p.grad_ref[a + i] = 0.f;
    }
    return out;
  }
  if (p.ranking) {
    for (int64_t i = 0; i < K; i++) pi[i] = p.ranking[a + i];
  } else {
    const int32_t b = p.chosen[n];
    pi[0] = b;
    for (int32_t i = 0, k = 1; i < K; i++) if (i != b) pi[k++] = i;
  }
  double loss = 0;
  if (p.type == PreferenceType::plackett_luce) {
    const int64_t D = p.ranking ? K - 1 : 1;
    double* L = w.lse + a;
    L[K - 1] = p.beta * u[pi[K - 1]];
    for (int64_t k = K - 2; k >= 0; k--) {
      const double x = p.beta * u[pi[k]], y = L[k + 1], hi = fmax(x, y);
      L[k] = hi + log1p(exp(fmin(x, y) - hi));
    }
    for (int64_t k = 0; k < D; k++) loss += L[k] - p.beta * u[pi[k]];
    double A = 0;
    for (int64_t m = 0; m < K; m++) {
      const int64_t q = m < D - 1 ? m : D - 1;
      if (m <= D - 1) A = m == 0 ? 1.0 : A * exp(L[m] - L[m - 1]) + 1.0;
      du[pi[m]] = p.beta * (exp(p.beta * u[pi[m]] - L[q]) * A - (m < D ? 1.0 : 0.0));
    }
  } else {
    const int64_t last = p.ranking ? K - 1 : 1;
    const double weight = 1.0 / (p.ranking ? double(K) * double(K - 1) / 2.0 : double(K - 1));
    for (int64_t x = 0; x < last; x++) {
      for (int64_t y = x + 1; y < K; y++) {
        const int32_t wi = pi[x], li = pi[y];
        double f, g;
        preference_pair(p, u[wi] - u[li], f, g);
        loss += weight * f;
        du[wi] += weight * g;
        du[li] -= weight * g;
      }
    }
  }
  p.losses[n] = float(loss);
  for (int64_t i = 0; i < K; i++) {
    const double g = scale * du[i] / length(i);
    p.grad[a + i] = float(g);
    if (p.grad_ref) p.grad_ref[a + i] = float(-g);
  }
  const int32_t t = pi[0];
  double others = 0;
  bool best = true;
  for (int64_t i = 0; i < K; i++) {
    if (i == t) continue;
    others += p.beta * u[i];
    if (!(u[t] > u[i])) best = false;
  }
  out.loss = loss;
  out.chosen = p.beta * u[t];
  out.rejected = others / double(K - 1);
  out.correct = best ? 1.0 : 0.0;
  return out;
}

// The batch result from the sums over counted prompts (CPU: in prompt order; CUDA: the grid sum's order).
RK_HD inline PreferenceLossResult preference_totals(double count, const PreferenceTerms& sum, double scale) {
  PreferenceLossResult r;
  const double per = count > 0 ? 1.0 / count : 0.0;
  r.loss = float(sum.loss * scale);
  r.count = int64_t(count);
  r.accuracy = float(sum.correct * per);
  r.chosen_reward = float(sum.chosen * per);
  r.rejected_reward = float(sum.rejected * per);
  r.margin = float((sum.chosen - sum.rejected) * per);
  return r;
}

RK_HD inline double preference_scale(Reduction reduction, double count) {
  return reduction == Reduction::mean ? (count > 0 ? 1.0 / count : 0.0) : 1.0;
}

}  // namespace rk
