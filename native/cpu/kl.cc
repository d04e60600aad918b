// CPU KL divergences (DESIGN §1.5); math in native/include/rlhf/kl.h and src/reference/kl.ts.
#include "rlhf/kl.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "parallel.h"
#include "rlhf/aggregate.h"
#include "rowmath.h"

namespace rk {
namespace {

// Asks for the cache lines of x[i, i + n) (prefetch into all levels): the next row, read while this one is
// computed from L2, so that its passes find it there instead of waiting for memory.
template <typename T>
RK_INLINE void prefetch_span(const T* x, int64_t i, int64_t n) {
  const char* b = reinterpret_cast<const char*>(x + i);
  for (int64_t k = 0; k < n * int64_t(sizeof(T)); k += 64) __builtin_prefetch(b + k, 0, 3);
}

// row_sum<L>(V, f, x…) (the same blocks, lanes and order, so the same value) that also writes
// out_v = g(x_v…) in the same pass, and asks for next[0, V) of each row in `next` (null: nothing).
template <int L, typename F, typename G, typename N, typename... P>
RK_INLINE float row_sum_map(int64_t V, F&& f, float* out, G&& g, const N* const (&next)[2], const P*... x) {
  KahanSum total;
  auto both = [&](int64_t i, auto& s) {
    s += f(vload<L>(x, i)...);
    vstore(out, i, g(vload<L>(x, i)...));
  };
  int64_t v = 0;
  for (; v + BLOCK <= V; v += BLOCK) {
    if (next[0]) for (const N* n : next) prefetch_span(n, v, BLOCK);
    typename Lanes<L>::f s0 = {}, s1 = {};
    for (int64_t i = v; i < v + BLOCK; i += 2 * L) {
      both(i, s0);
      both(i + L, s1);
    }
    const auto s = s0 + s1;
    float b = 0.f;
    for (int l = 0; l < L; l++) b += s[l];
    total.add(b);
  }
  if (next[0]) for (const N* n : next) prefetch_span(n, v, V - v);
  for (; v < V; v++) {
    total.add(f(load(x, v)...));
    out[v] = g(load(x, v)...);
  }
  return total.value();
}

// Two exps per element: each row's lse pass keeps its exps (p's in a per-thread row, q's in gq), and the KL
// and the gradients rescale them. The passes over the KL and the gradients (ML lanes: at 16, GCC scalarises
// kl_term's selects) run from L2; with only the q gradient they are one pass, which asks for the next rows.
template <int L, typename T>
RK_INLINE void kl_impl(const KlDivergenceParams& p, float scale, int64_t begin, int64_t end) {
  constexpr int ML = token_lanes<L>();
  thread_local std::vector<float> p_exps;
  thread_local std::vector<float> stage_q, stage_p;  // 16-bit gradients' float32 rows (GradRow)
  p_exps.resize(size_t(p.V));
  float* ep = p_exps.data();
  const T* zp = static_cast<const T*>(p.p_logits.data);
  const T* zq = static_cast<const T*>(p.q_logits.data);
  const int64_t V = p.V;
  for (int64_t n = begin; n < end; n++) {
    const T* rp = zp + n * V;
    const T* rq = zq + n * V;
    const GradRow q_row(p.grad_q, p.grad_q16, p.p_logits.dtype, n, V, stage_q), p_row(p.grad_p, p.grad_p16, p.p_logits.dtype, n, V, stage_p);
    float* gq = q_row.get();
    float* gp = p_row.get();
    if (p.mask && !p.mask[n]) {
      p.per_row[n] = 0.f;
      if (gq) std::fill(gq, gq + V, 0.f);
      if (gp) std::fill(gp, gp + V, 0.f);
      continue;
    }
    float ip = 0.f, iq = 0.f;  // p_v = ep_v·ip, q_v = gq_v·iq
    const double temp = row_temperature(p.temperatures, p.temperature, n);
    // p's exp pass asks for q's row (whose max pass comes next), q's for p's next row
    const RowSoftmax sp = row_softmax_ahead<L>(RowAhead<T>{rq}, rp, V, temp, nullptr, ep, &ip);
    const RowSoftmax sq = row_softmax_ahead<L>(RowAhead<T>{n + 1 < end ? rp + V : nullptr}, rq, V, temp, nullptr, gq, &iq);
    const float invT = sp.invT, s = scale * invT;
    // A NaN in either row makes the row NaN. Else a p without mass (all −inf) has KL 0, and a q without mass
    // KL +inf (as cross-entropy's all −inf row), neither with a gradient.
    const bool nan = sp.lse != sp.lse || sq.lse != sq.lse;
    if (nan || sp.lse == -INFINITY || sq.lse == -INFINITY) {
      p.per_row[n] = nan ? NAN : sp.lse == -INFINITY ? 0.f : INFINITY;
      if (gq) std::fill(gq, gq + V, nan ? NAN : 0.f);
      if (gp) std::fill(gp, gp + V, nan ? NAN : 0.f);
      continue;
    }
    // Σ_v p_v (log p_v − log q_v), xlogy: p_v = 0 contributes 0; log p − log q from the two shifted forms
    // (log_ratio). An infinite lse (a +inf logit) keeps no exps: its probabilities exp(log p) are formed here instead
    if (!sp.finite()) {
      row_map<L>(V, ep, [&](auto a) { return exp_approx(sp.logp(a)); }, rp);
      ip = 1.f;
    }
    if (gq && !sq.finite()) {
      row_map<L>(V, gq, [&](auto b) { return exp_approx(sq.logp(b)); }, rq);
      iq = 1.f;
    }
    const float dc = sp.c - sq.c;
    auto term = [&](auto e, auto a, auto b, auto) { return kl_term(e * ip, log_ratio(sp, sq, a, b, dc)); };
    auto grad_q = [&](auto f, auto, auto, auto e) { return s * (e * iq - f * ip); };
    float kl;
    if (gq && !gp) {
      const bool last = n + 1 == end;
      const T* const next[2] = {last ? nullptr : rp + V, last ? nullptr : rq + V};
      kl = row_sum_map<ML>(V, term, gq, grad_q, next, ep, rp, rq, static_cast<const float*>(gq));
    } else {
      kl = row_sum<ML>(V, [&](auto e, auto a, auto b) { return term(e, a, b, e); }, ep, rp, rq);
      if (gq) row_map<ML>(V, gq, [&](auto e, auto f) { return grad_q(f, e, e, e); }, gq, ep);
    }
    p.per_row[n] = kl;
    if (gp) {
      // an infinite KL (p > 0 where q = 0) has no finite gradient wrt p: 0 there
      if (kl == INFINITY) std::fill(gp, gp + V, 0.f);
      else row_map<ML>(V, gp, [&](auto e, auto a, auto b) { return s * xlogy_term(e * ip, log_ratio(sp, sq, a, b, dc - kl)); }, ep, rp, rq);
    }
  }
}
RK_ISA_KERNEL(kl_rows, kl_impl)

// kl_token per lane at δ = logp − refLogp: k1 δ (1); abs |δ| (sign δ); k2 ½δ² (δ); k3 with δ_c = clamp(δ, ±C):
// e^(−δ_c) + δ_c − 1 (0 where |δ| > C, else 1 − e^(−δ_c)), e^x by exp_approx (≤ 2 ulp; the CUDA kernels keep
// std::exp); then the output clamp K: |k| > K gives ±K and gradient 0. T = float: both inputs float32.
template <int ISA_L, typename T>
RK_INLINE void kl_penalty_impl(const KlPenaltyParams& p, const float* const& ws, const int64_t& begin, const int64_t& end, double* const& out) {
  constexpr int L = token_lanes<ISA_L>();
  constexpr bool F32 = std::is_same_v<T, float>;
  using vf = typename Lanes<L>::f;
  const KlOptions& o = p.opts;
  const float C = o.log_ratio_clamp, K = o.output_clamp;
  const bool clamp_out = is_on(K);
  const vf zero = {}, one = zero + 1.f;
  int64_t unused = 0;
  *out = token_loss_block<L, F32>(p.batch, ws, p.per_token, p.grad, begin, end, unused, [&](int64_t t, int64_t n, vf& k, vf& g, vf& flag) {
    const vf delta = token_load<L, F32>(p.logp, t, n) - token_load<L, F32>(p.ref_logp, t, n);
    flag = zero;
    switch (o.estimator) {
      case KlEstimator::k1: k = delta, g = one; break;
      case KlEstimator::abs: k = delta < 0.f ? -delta : (delta == 0.f ? zero : delta), g = delta > 0.f ? one : (delta < 0.f ? -one : zero); break;
      case KlEstimator::k2: k = 0.5f * delta * delta, g = delta; break;
      case KlEstimator::k3: {
        const vf dc = delta > C ? C : (delta < -C ? -C : delta);
        const vf e = exp_approx(-dc);
        k = e + dc - 1.f;
        g = delta > C ? zero : (delta < -C ? zero : 1.f - e);
        break;
      }
    }
    if (clamp_out) {
      g = k > K ? zero : (k < -K ? zero : g);
      k = k > K ? K : (k < -K ? -K : k);
    }
  });
}
RK_ISA_KERNEL(kl_penalty_block, kl_penalty_impl)

}  // namespace

KlDivergenceResult kl_divergence(const KlDivergenceParams& p) {
  KlDivergenceResult r;
  for (int64_t n = 0; n < p.N; n++) r.count += (p.mask == nullptr || p.mask[n]) ? 1 : 0;
  const float scale = p.reduction == Reduction::mean ? (r.count > 0 ? 1.f / float(r.count) : 0.f) : 1.f;
  dispatch_dtype(p.p_logits.dtype, [&]<typename T>() {
    parallel_for(p.N, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, p.V)), [&](int64_t b, int64_t e) { kl_rows<T>(p, scale, b, e); });
  });
  KahanSum total;
  for (int64_t n = 0; n < p.N; n++) total.add(p.per_row[n]);
  r.loss = total.value() * scale;
  return r;
}

float kl_penalty(const KlPenaltyParams& p) {
  const TokenBatch& b = p.batch;
  SmallArray<float> ws(static_cast<size_t>(b.num_seqs));
  sequence_weights(b, ws.data());
  const bool f32 = p.logp.dtype == DType::f32 && p.ref_logp.dtype == DType::f32;
  const SmallArray<double> sums = token_block_sums<double>(b.tokens, [&](int64_t t0, int64_t t1, double& s) {
    if (f32) kl_penalty_block<float>(p, ws.data(), t0, t1, &s);
    else kl_penalty_block<void>(p, ws.data(), t0, t1, &s);
  });
  double loss = 0;
  for (double s : sums) loss += s;
  return float(loss);
}

}  // namespace rk
