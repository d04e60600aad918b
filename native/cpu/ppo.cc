// CPU fused PPO objective (DESIGN §1.7); math in src/reference/ppo.ts. Each logits row (token) is read for
// its lse (and the anchor's), then once more to write the gradient; the batch sums are taken afterwards in
// token order, so results do not depend on the thread count.
#include "rlhf/ppo.h"

#include <algorithm>
#include <vector>

#include "parallel.h"
#include "rlhf/aggregate.h"
#include "rowmath.h"

namespace rk {
namespace {

struct TokenTerms {
  float policy = 0.f, kl = 0.f, value = 0.f, approx_kl = 0.f, ratio = 0.f;
  uint8_t low = 0, high = 0, dual = 0, vclip = 0;
};

// The policy-first path (ppo_policy_first): each counted row's log-prob into p.logp and its old log-prob
// into old (from the anchor logits when oldLogp is absent); with trust_full, also the row's trust-region
// divergence into div, one more pass over the two rows once both lse are known:
//   tv: ½ Σ_v |q_v − p_v|,  kl: Σ_v p_v (log p_v − log q_v)   (q = π_θ, p = π_old = softmax(anchor / T))
template <int L, typename T>
RK_INLINE void ppo_logp_impl(const PpoLossParams& p, float* old, float* div, int64_t begin, int64_t end) {
  const T* z = static_cast<const T*>(p.logits.data);
  const T* za = static_cast<const T*>(p.anchor_logits.data);
  for (int64_t t = begin; t < end; t++) {
    if (p.batch.mask && !p.batch.mask[t]) {
      p.logp[t] = old[t] = 0.f;
      if (div) div[t] = 0.f;
      continue;
    }
    const int32_t y = p.actions[t];
    const T* row = z + t * p.V;
    const double temp = row_temperature(p.temperatures, p.temperature, t);
    const RowSoftmax sq = row_softmax<L>(row, p.V, temp);
    p.logp[t] = sq.logp(load(row, y));
    const T* arow = za ? za + t * p.V : nullptr;
    const RowSoftmax sa = arow && (div || !p.old_logp.present()) ? row_softmax<L>(arow, p.V, temp) : RowSoftmax{0.f, 0.f, sq.invT, 0.0};
    old[t] = p.old_logp.present() ? read(p.old_logp, t) : sa.logp(load(arow, y));
    if (div && p.policy.variant == PolicyVariant::dppo_kl) {
      const float dc = sa.c - sq.c;  // log p_a − log q, as in ppo_impl's full KL
      div[t] = row_sum<L>(p.V, [&](auto a, auto x) { return kl_term(exp_approx(sa.logp(a)), log_ratio(sa, sq, a, x, dc)); }, arow, row);
    } else if (div) {
      div[t] = 0.5f * row_sum<L>(p.V, [&](auto a, auto x) {
        const auto d = exp_approx(sq.logp(x)) - exp_approx(sa.logp(a));
        return d < 0.f ? -d : d;
      }, arow, row);
    }
  }
}

RK_ISA_KERNEL(ppo_logp_rows, ppo_logp_impl)

// pre_grad: the policy-first path's w_t·dℓ/dlogp (policy_loss's gradient) and pre_loss its ρℓ, else null.
template <int L, typename T>
RK_INLINE void ppo_impl(const PpoLossParams& p, const float* w, TokenTerms* terms, const float* pre_loss, const float* pre_grad, int64_t begin,
                        int64_t end) {
  const T* z = static_cast<const T*>(p.logits.data);
  const T* za = static_cast<const T*>(p.anchor_logits.data);
  const int64_t V = p.V;
  const TokenBatch& b = p.batch;
  thread_local std::vector<float> stage;  // a 16-bit gradient's float32 row (GradRow)
  for (int64_t t = begin; t < end; t++) {
    const T* row = z + t * V;
    const GradRow grad_row(p.grad_logits, p.grad_logits16, p.logits.dtype, t, V, stage);
    float* g = grad_row.get();
    if (b.mask && !b.mask[t]) {
      std::fill(g, g + V, 0.f);
      if (p.grad_values) p.grad_values[t] = 0.f;
      p.logp[t] = 0.f;
      continue;
    }
    const int32_t y = p.actions[t];
    // the lse pass keeps the row's exps in g, rescaled below: one exp per element of the policy row
    float iq = 0.f;
    const double temp = row_temperature(p.temperatures, p.temperature, t);
    const T* arow = za ? za + t * V : nullptr;
    // the exp pass asks for the anchor row (read next) or else the next row, and the next fp32 gradient row
    const bool next = t + 1 < end;
    const RowAhead<T> ahead{arow ? arow : next ? row + V : nullptr, next && p.grad_logits ? p.grad_logits + (t + 1) * V : nullptr};
    const RowSoftmax sq = row_softmax_ahead<L>(ahead, row, V, temp, nullptr, g, &iq);
    if (!sq.finite()) {  // no exps kept: the probabilities exp(log q) instead
      row_map<L>(V, g, [&](auto z) { return exp_approx(sq.logp(z)); }, row);
      iq = 1.f;
    }
    const float invT = sq.invT;
    const float lp = pre_grad ? p.logp[t] : sq.logp(load(row, y));
    p.logp[t] = lp;
    const RowSoftmax sa = arow ? row_softmax<L>(arow, V, temp) : RowSoftmax{0.f, 0.f, invT, 0.0};
    const float anchor_lp = arow ? sa.logp(load(arow, y)) : 0.f;
    const float old = p.old_logp.present() ? read(p.old_logp, t) : anchor_lp;
    const PolicyToken s = pre_grad ? PolicyToken{} : ppo_clip_token(read(p.advantages, t), p.policy, lp - old);
    TokenTerms& tt = terms[t];
    tt.policy = pre_grad ? pre_loss[t] : s.loss;
    tt.approx_kl = old - lp;
    tt.ratio = s.ratio;
    tt.low = s.clipped_low;
    tt.high = s.clipped_high;
    tt.dual = s.dual_clipped;
    float c_logp = pre_grad ? pre_grad[t] : w[t] * s.grad;
    float c_full = 0.f;
    if (p.full_kl) {
      const float dc = sa.c - sq.c;  // log p_a − log q, as in kl.cc
      tt.kl = row_sum<L>(V, [&](auto a, auto z) { return kl_term(exp_approx(sa.logp(a)), log_ratio(sa, sq, a, z, dc)); }, arow, row);
      c_full = p.beta * w[t];
    } else {
      const float ref = p.ref_logp.present() ? read(p.ref_logp, t) : (arow ? anchor_lp : old);
      float k, gk;
      kl_token(lp - ref, p.kl, k, gk);
      tt.kl = k;
      c_logp += p.beta * w[t] * gk;
    }
    // dloss/dz = (1/T)[c_logp (onehot − q) + c_full (q − p_anchor)]
    if (c_full != 0.f) {
      row_map<L>(V, g, [&](auto e, auto a) {
        const auto q = e * iq;
        return invT * (-c_logp * q + c_full * (q - exp_approx(sa.logp(a))));
      }, g, arow);
    } else {
      const float c = -invT * c_logp * iq;
      row_map<L>(V, g, [&](auto e) { return c * e; }, g);
    }
    {
      const float lq = sq.logp(load(row, y));  // 1 − q as −expm1(log q), exact where q is near 1
      const float full = c_full != 0.f ? c_full * (exp_approx(lq) - exp_approx(sa.logp(load(arow, y)))) : 0.f;
      g[y] = invT * (-c_logp * std::expm1(lq) + full);
    }
    if (p.values.present() && p.returns.present()) {
      float l, gv;
      const float old_v = p.old_values.present() ? read(p.old_values, t) : 0.f;
      tt.vclip = value_token(read(p.values, t), read(p.returns, t), old_v, p.value, l, gv);
      tt.value = l;
      if (p.grad_values) p.grad_values[t] = p.c1 * w[t] * gv;
    }
  }
}

RK_ISA_KERNEL(ppo_rows, ppo_impl)

}  // namespace

PpoLossResult ppo_loss(const PpoLossParams& p) {
  const TokenBatch& b = p.batch;
  std::vector<float> w(size_t(b.tokens));
  PpoLossResult r;
  r.count = aggregation_weights(b, w.data());
  std::vector<TokenTerms> terms(size_t(b.tokens));
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, p.V));
  // the policy-first path: every log-prob, then the policy terms of policy_loss, then the rows
  const bool first = ppo_policy_first(p);
  std::vector<float> old, pre_loss, pre_grad, div;
  PolicyLossResult pr;
  if (first) {
    old.resize(size_t(b.tokens)), pre_loss.resize(size_t(b.tokens)), pre_grad.resize(size_t(b.tokens));
    const bool full = p.trust_full && p.anchor_logits.present();
    if (full) div.resize(size_t(b.tokens));
    float* d = full ? div.data() : nullptr;
    dispatch_dtype(p.logits.dtype, [&]<typename T>() {
      parallel_for(b.tokens, grain, [&](int64_t s, int64_t e) { ppo_logp_rows<T>(p, old.data(), d, s, e); });
    });
    PolicyLossParams pp;
    pp.batch = b;
    pp.logp = {p.logp, DType::f32, b.tokens};
    pp.old_logp = {old.data(), DType::f32, b.tokens};
    pp.advantages = p.advantages;
    pp.behavior_logp = p.behavior_logp;
    pp.opts = p.policy;
    if (full) pp.divergence = {div.data(), DType::f32, b.tokens};
    pp.per_token = pre_loss.data();
    pp.grad = pre_grad.data();
    pr = policy_loss(pp);
  }
  const float* pl = first ? pre_loss.data() : nullptr;
  const float* pg = first ? pre_grad.data() : nullptr;
  dispatch_dtype(p.logits.dtype, [&]<typename T>() {
    parallel_for(b.tokens, grain, [&](int64_t s, int64_t e) { ppo_rows<T>(p, w.data(), terms.data(), pl, pg, s, e); });
  });
  KahanSum pol, kl, val, akl;
  ClipStats stats;
  int64_t vclip = 0;
  for (int64_t t = 0; t < b.tokens; t++) {
    if (b.mask && !b.mask[t]) continue;
    const TokenTerms& tt = terms[t];
    pol.add(w[t] * tt.policy);
    kl.add(w[t] * tt.kl);
    val.add(w[t] * tt.value);
    akl.add(w[t] * tt.approx_kl);
    stats.add(tt.ratio, tt.low, tt.high, tt.dual);
    vclip += tt.vclip;
  }
  r.policy_loss = pol.value();
  r.kl = kl.value();
  r.value_loss = val.value();
  r.loss = r.policy_loss + p.beta * r.kl + p.c1 * r.value_loss;
  r.approx_kl = akl.value();
  stats.write(r, r.count);
  r.value_clip_fraction = float(vclip) * (r.count > 0 ? 1.f / float(r.count) : 0.f);
  if (first) ppo_take_policy(r, pr);
  return r;
}

}  // namespace rk
