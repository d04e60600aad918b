// Advantage estimators (DESIGN §1.8): GAE, masked whitening, group advantages. Math in
// src/reference/advantages.ts.
#pragma once
#include "common.h"

namespace rk {

struct GaeParams {
  FloatIn rewards, values, last_values;  // last_values: [num_seqs] or absent
  const int32_t* offsets = nullptr;
  int64_t num_seqs = 0;
  const uint8_t* mask = nullptr;
  double gamma = 1.0, lambda = 0.95;
  float* advantages = nullptr;
  float* returns = nullptr;
};
void gae(const GaeParams& p);

// One step of the recursion at a counted token t, in double: A_t = r_t + γ·V_next − V_t + (γλ)·A_{t+1} (gl = γλ).
// Generic over double and double lanes (the CPU runs several sequences at once, one per lane), so every
// sequence takes the same arithmetic wherever it runs.
template <typename D>
RK_HD inline D gae_step(D r, D next, D v, D acc, double gamma, double gl) { return r + gamma * next - v + gl * acc; }

// GAE of tokens t, t − 1, …, begin of one sequence, backwards in time from the running advantage acc and the
// next counted value `next` (the CPU's scalar loop). A_t accumulates in double: it sums many terms that may
// cancel (float32 was 5e-6 off on advantages of 0.04 after 64 tokens at γ = 0.99, λ = 1).
RK_HD inline void gae_steps(const GaeParams& p, int64_t t, int64_t begin, double acc, double next) {
  for (; t >= begin; t--) {
    if (p.mask && !p.mask[t]) {
      p.advantages[t] = 0.f;
      p.returns[t] = 0.f;
      continue;
    }
    const double v = read(p.values, t);
    acc = gae_step<double>(read(p.rewards, t), next, v, acc, p.gamma, p.gamma * p.lambda);
    next = v;
    p.advantages[t] = float(acc);
    p.returns[t] = float(acc + v);
  }
}

// GAE of sequence s: from its last token, with A = 0 and V_next = lastValues[s] (0 when absent).
RK_HD inline void gae_sequence(const GaeParams& p, int64_t s) {
  gae_steps(p, int64_t(p.offsets[s + 1]) - 1, p.offsets[s], 0.0, p.last_values.data ? read(p.last_values, s) : 0.f);
}

struct WhitenParams {
  FloatIn values;
  const uint8_t* mask = nullptr;
  bool shift_mean = true, unbiased = true;
  double eps = 1e-8;
  float* out = nullptr;
};
void whiten(const WhitenParams& p);

#define RK_GROUP_METHODS(X) X(grpo, "grpo") X(rloo, "rloo") X(mean_centered, "mean-centered")
enum class GroupMethod : int32_t { RK_GROUP_METHODS(RK_ENUM_MEMBER) };

struct GroupAdvantagesParams {
  FloatIn scores;
  const int32_t* offsets = nullptr;  // ragged groups: [num_groups + 1]; null with group_size
  int64_t num_groups = 0;
  int64_t group_size = 0;  // > 0: uniform groups of this size (offsets unused; CPU only)
  GroupMethod method = GroupMethod::grpo;
  double eps = 1e-6;
  bool unbiased = true;
  float* out = nullptr;
};
void group_advantages(const GroupAdvantagesParams& p);

}  // namespace rk
