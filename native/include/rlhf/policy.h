// PPO clipped policy loss (DESIGN §1.4) and its variants (CISPO, DPPO, GSPO isLevel, rollout correction,
// OPSM) per token, aggregated (§1.9). Math in src/reference/policy.ts.
#pragma once
#include <cmath>
#include "common.h"

namespace rk {

#define RK_POLICY_VARIANTS(X) X(ppo, "ppo") X(cispo, "cispo") X(dppo_tv, "dppo-tv") X(dppo_kl, "dppo-kl")
#define RK_IS_LEVELS(X) X(token, "token") X(sequence, "sequence") X(sequence_token, "sequence-token")
#define RK_ROLLOUT_CORRECTIONS(X)                                                                               \
  X(token_truncate, "token-truncate") X(token_mask, "token-mask") X(sequence_truncate, "sequence-truncate")      \
  X(sequence_mask, "sequence-mask")
enum class PolicyVariant : int32_t { RK_POLICY_VARIANTS(RK_ENUM_MEMBER) };
enum class IsLevel : int32_t { RK_IS_LEVELS(RK_ENUM_MEMBER) };
// none: rolloutCorrection absent or null (off); the listed modes are ordinals 0, 1, ...
enum class RolloutCorrection : int32_t { none = -1, RK_ROLLOUT_CORRECTIONS(RK_ENUM_MEMBER) };

struct PolicyOptions {
  float clip_low = 0.2f, clip_high = 0.2f;
  float dual_clip = NAN;  // off (is_on), else > 1
  float log_ratio_clamp = 20.f;
  PolicyVariant variant = PolicyVariant::ppo;
  IsLevel is_level = IsLevel::token;
  float ratio_cap = 20.f;  // c of dppo-*
  RolloutCorrection rollout = RolloutCorrection::none;
  float rollout_low = 0.5f, rollout_high = 2.f;
  float opsm_delta = NAN;  // off (is_on), else ≥ 0
  RK_HD bool sequence_rollout() const { return rollout == RolloutCorrection::sequence_truncate || rollout == RolloutCorrection::sequence_mask; }
  // whether a token's terms need its sequence's sums (the ratio's or the rollout weight's mean, OPSM)
  RK_HD bool needs_sequences() const { return is_level != IsLevel::token || sequence_rollout() || is_on(opsm_delta); }
  // GSPO through the mean ('sequence' with 'ppo'): a token's gradient is its sequence's, spread
  RK_HD bool coupled() const { return is_level == IsLevel::sequence && variant == PolicyVariant::ppo; }
  // anything beyond the token-level PPO clip (ppoLoss then forms the policy terms from all log-probs first)
  RK_HD bool plain() const { return variant == PolicyVariant::ppo && !needs_sequences(); }
};

// One token's loss, d loss / d logp and flags; shared by policy_loss and ppo_loss.
struct PolicyToken {
  float loss, grad, ratio;
  bool clipped_low, clipped_high, dual_clipped;
};

// The PPO clip of one token with log-ratio d (variant 'ppo'; ppoLoss's rows call it directly when the policy
// term is plain()).
RK_HD inline PolicyToken ppo_clip_token(float A, const PolicyOptions& o, float d) {
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

// One token of any variant; d: the log-ratio to use, the token's own logp − old or its sequence's mean (isLevel 'sequence*').
// div: for 'dppo-*', the position's full-vocabulary TV / KL(π_old ‖ π) (ppoLoss trustRegion 'full') in place of
// the binary one; NaN: the binary one.
RK_HD inline PolicyToken policy_token(float logp, float old, float A, const PolicyOptions& o, float d, float div = NAN) {
  const float C = o.log_ratio_clamp;
  const float dc = d > C ? C : (d < -C ? -C : d);
  const float r = std::exp(dc);
  const float lo = 1.f - o.clip_low, hi = 1.f + o.clip_high;
  if (o.variant == PolicyVariant::cispo) {  // −sg(clip(r)) A logp
    const float w = r < lo ? lo : (r > hi ? hi : r);
    return {-w * A * logp, -w * A, r, r < lo, r > hi, false};
  }
  if (o.variant == PolicyVariant::dppo_tv || o.variant == PolicyVariant::dppo_kl) {  // −A sg(min(r, c)) logp on kept tokens
    const float p = std::exp(logp), p_old = std::exp(old);
    bool keep;
    if (is_on(div)) {
      keep = A > 0.f ? (div <= o.clip_high || p <= p_old) : (div <= o.clip_low || p >= p_old);
    } else if (o.variant == PolicyVariant::dppo_tv) {
      keep = A > 0.f ? p - p_old <= o.clip_high : p - p_old >= -o.clip_low;
    } else {
      const float b = p_old * (old - logp) + (1.f - p_old) * std::log((1.f - p_old + 1e-8f) / (1.f - p + 1e-8f));
      keep = A > 0.f ? (b <= o.clip_high || p <= p_old) : (b <= o.clip_low || p >= p_old);
    }
    const float w = r < o.ratio_cap ? r : o.ratio_cap;
    return {keep ? -A * w * logp : 0.f, keep ? -A * w : 0.f, r, !keep && !(A > 0.f), !keep && A > 0.f, keep && r > o.ratio_cap};
  }
  return ppo_clip_token(A, o, d);
}
RK_HD inline PolicyToken policy_token(float logp, float old, float A, const PolicyOptions& o) { return policy_token(logp, old, A, o, logp - old); }

// A sequence's part in its tokens' terms, from its sums over counted tokens: d_mean = mean(logp − old),
// the geometric-mean rollout weight exp(clamp(mean(old − behavior))), and the flags of the sequence-level
// corrections (seq_* only in a 'sequence-*' mode; opsm: mean(old − logp) > δ).
struct PolicySeq {
  float d_mean = 0.f, w_seq = 1.f;
  bool opsm = false, seq_truncated = false, seq_dropped = false;
};
RK_HD inline PolicySeq policy_seq(double d_sum, double b_sum, int64_t n, const PolicyOptions& o) {
  PolicySeq q;
  if (n <= 0) return q;
  q.d_mean = float(d_sum / double(n));
  const float b = float(b_sum / double(n)), C = o.log_ratio_clamp;
  q.w_seq = std::exp(b > C ? C : (b < -C ? -C : b));
  q.opsm = is_on(o.opsm_delta) && -q.d_mean > o.opsm_delta;
  q.seq_truncated = o.rollout == RolloutCorrection::sequence_truncate && q.w_seq > o.rollout_high;
  q.seq_dropped = o.rollout == RolloutCorrection::sequence_mask && (q.w_seq < o.rollout_low || q.w_seq > o.rollout_high);
  return q;
}

// One counted token's terms: the policy token at its level, times ρ (the rollout correction's weight, 0 for
// a dropped token or an OPSM-masked one). loss = ρ ℓ, grad = ρ dℓ/dlogp (for coupled(): dℓ/dlog s_i).
// w: the token's rollout weight exp(clamp(old − behavior)) for the metrics (1 without behavior).
struct PolicyTerm {
  PolicyToken k;
  float loss, grad, w, b;  // b = old − behavior
  bool dropped, truncated, opsm;
};
RK_HD inline PolicyTerm policy_term(float lp, float old, float A, const float* behavior, const PolicySeq& q, const PolicyOptions& o,
                                    float div = NAN) {
  PolicyTerm t;
  t.k = policy_token(lp, old, A, o, o.is_level == IsLevel::token ? lp - old : q.d_mean, div);
  float rho = 1.f;
  t.w = 1.f;
  t.b = 0.f;
  t.dropped = t.truncated = false;
  if (behavior) {
    const float C = o.log_ratio_clamp;
    t.b = old - *behavior;
    t.w = std::exp(t.b > C ? C : (t.b < -C ? -C : t.b));
    const float x = o.sequence_rollout() ? q.w_seq : t.w;
    if (o.rollout == RolloutCorrection::token_truncate || o.rollout == RolloutCorrection::sequence_truncate) {
      t.truncated = x > o.rollout_high;
      rho = t.truncated ? o.rollout_high : x;
    } else if (o.rollout == RolloutCorrection::token_mask || o.rollout == RolloutCorrection::sequence_mask) {
      t.dropped = x < o.rollout_low || x > o.rollout_high;
      rho = t.dropped ? 0.f : x;
    }
  }
  t.opsm = q.opsm && A < 0.f;
  if (t.opsm) rho = 0.f;
  t.loss = rho * t.k.loss;
  t.grad = rho * t.k.grad;
  return t;
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

// The rollout correction's and OPSM's metrics (policyLoss's result, ppoLoss's metrics), from their sums over
// `count` counted tokens and `seqs` sequences with a counted token (N: int64_t on the CPU, float in the CUDA
// result blocks).
#define RK_ROLLOUT_METRICS_FIELDS(X)                                                                          \
  X("rolloutDropFraction", float, rollout_drop_fraction) X("rolloutTruncateFraction", float, rollout_truncate_fraction) \
  X("rolloutSeqDropFraction", float, rollout_seq_drop_fraction)                                                 \
  X("rolloutSeqTruncateFraction", float, rollout_seq_truncate_fraction)                                         \
  X("rolloutWeightMean", float, rollout_weight_mean) X("rolloutWeightMax", float, rollout_weight_max)           \
  X("rolloutKlK1", float, rollout_kl_k1) X("rolloutKlK3", float, rollout_kl_k3)                                 \
  X("rolloutMismatchFraction", float, rollout_mismatch_fraction) X("opsmDropFraction", float, opsm_drop_fraction)
template <class N>
struct RolloutSums {
  double w = 0, k1 = 0, k3 = 0;  // Σ w, Σ (behavior − old), Σ (w − 1 − log w)
  float w_max = -INFINITY;
  N mismatch = 0, dropped = 0, truncated = 0, opsm = 0, seqs = 0, seq_dropped = 0, seq_truncated = 0;
  // a counted token's part (only with behavior for the weight's sums)
  RK_HD void add(const PolicyTerm& t, bool behavior) {
    if (behavior) {
      w += t.w, k1 += -t.b, k3 += t.w - 1.f - t.b;
      w_max = t.w > w_max ? t.w : w_max;
      mismatch += (t.w - 1.f > 0.1f || t.w - 1.f < -0.1f) ? 1 : 0;
    }
    dropped += t.dropped, truncated += t.truncated, opsm += t.opsm;
  }
  RK_HD void add_seq(const PolicySeq& q) { seqs += 1, seq_dropped += q.seq_dropped, seq_truncated += q.seq_truncated; }
  RK_HD void add(const RolloutSums& o) {
    w += o.w, k1 += o.k1, k3 += o.k3;
    w_max = o.w_max > w_max ? o.w_max : w_max;
    mismatch += o.mismatch, dropped += o.dropped, truncated += o.truncated, opsm += o.opsm;
    seqs += o.seqs, seq_dropped += o.seq_dropped, seq_truncated += o.seq_truncated;
  }
  template <class Result>
  void write(Result& r, N count) const {
    const float f = count > N(0) ? 1.f / float(count) : 0.f, fs = seqs > N(0) ? 1.f / float(seqs) : 0.f;
    r.rollout_drop_fraction = float(dropped) * f;
    r.rollout_truncate_fraction = float(truncated) * f;
    r.rollout_seq_drop_fraction = float(seq_dropped) * fs;
    r.rollout_seq_truncate_fraction = float(seq_truncated) * fs;
    r.rollout_weight_mean = float(w) * f;
    r.rollout_weight_max = count > N(0) && w_max > -INFINITY ? w_max : 0.f;
    r.rollout_kl_k1 = float(k1) * f;
    r.rollout_kl_k3 = float(k3) * f;
    r.rollout_mismatch_fraction = float(mismatch) * f;
    r.opsm_drop_fraction = float(opsm) * f;
  }
};

struct PolicyLossParams {
  TokenBatch batch;
  FloatIn logp, old_logp, advantages;
  FloatIn behavior_logp;  // or absent
  PolicyOptions opts;
  FloatIn divergence;  // each token's full-vocabulary trust-region divergence for 'dppo-*' (ppoLoss trustRegion 'full'), or absent
  float* per_token = nullptr;
  float* grad = nullptr;
};
#define RK_POLICY_LOSS_FIELDS(X)                                                                           \
  X("loss", float, loss) X("clipFraction", float, clip_fraction) X("clipFractionLow", float, clip_fraction_low) \
  X("clipFractionHigh", float, clip_fraction_high) X("dualClipFraction", float, dual_clip_fraction)           \
  X("approxKl", float, approx_kl) X("ratioMean", float, ratio_mean) X("ratioMax", float, ratio_max)             \
  X("count", int64_t, count) RK_ROLLOUT_METRICS_FIELDS(X)
struct PolicyLossResult {
  RK_POLICY_LOSS_FIELDS(RK_RESULT_MEMBER)
};
PolicyLossResult policy_loss(const PolicyLossParams& p);

}  // namespace rk
