// CPU policy loss (DESIGN §1.4) and its variants; math in native/include/rlhf/policy.h (policy_token,
// policy_term). Token-level options: tokens run in fixed blocks over the thread pool; the plain PPO clip
// (no variant, no behavior log-probs) L tokens at a time with a vectorised exp (plain_impl). Options that need a
// sequence's sums (isLevel 'sequence*', sequence-level rollout correction, OPSM): sequences run over the
// pool, each in three phases (its sums, its tokens, and for GSPO through the mean its gradient spread over
// its tokens). Each block or sequence sums in double and they are added in order, so results do not depend
// on the thread count.
#include "rlhf/policy.h"

#include <type_traits>
#include <vector>

#include "parallel.h"
#include "rlhf/aggregate.h"
#include "rowmath.h"
#include "scratch.h"

namespace rk {
namespace {

struct BlockSums {
  double loss = 0, kl = 0, ratio = 0;
  float ratio_max = -INFINITY;
  int64_t low = 0, high = 0, dual = 0;
  RolloutSums<int64_t> rollout;

  void add(const BlockSums& s) {
    loss += s.loss, kl += s.kl, ratio += s.ratio;
    ratio_max = s.ratio_max > ratio_max ? s.ratio_max : ratio_max;
    low += s.low, high += s.high, dual += s.dual;
    rollout.add(s.rollout);
  }
};

// F32: every input is float32, read directly (the common case) instead of through its dtype.
template <bool F32>
struct Inputs {
  const PolicyLossParams& p;
  float operator()(const FloatIn& x, int64_t t) const { return F32 ? static_cast<const float*>(x.data)[t] : read(x, t); }
};

// One counted token t of a sequence with part q: its terms into s; returns w_t · d(ρℓ)/dlogp.
template <bool F32>
float policy_one(const PolicyLossParams& p, const Inputs<F32>& in, float w, int64_t t, const PolicySeq& q, BlockSums& s) {
  const float lp = in(p.logp, t), old = in(p.old_logp, t);
  float behavior = 0.f;
  if (p.behavior_logp.present()) behavior = in(p.behavior_logp, t);
  const float div = p.divergence.present() ? in(p.divergence, t) : NAN;
  const PolicyTerm k = policy_term(lp, old, in(p.advantages, t), p.behavior_logp.present() ? &behavior : nullptr, q, p.opts, div);
  p.per_token[t] = k.loss;
  s.loss += double(w * k.loss);
  s.kl += double(w * (old - lp));
  s.ratio += double(k.k.ratio);
  s.ratio_max = k.k.ratio > s.ratio_max ? k.k.ratio : s.ratio_max;
  s.low += k.k.clipped_low;
  s.high += k.k.clipped_high;
  s.dual += k.k.dual_clipped;
  s.rollout.add(k, p.behavior_logp.present());
  return w * k.grad;
}

template <bool F32>
void policy_block(const PolicyLossParams& p, const float* ws, int64_t begin, int64_t end, BlockSums& s) {
  const Inputs<F32> in{p};
  const PolicySeq none;
  for_sequence_runs(p.batch, begin, end, [&](int64_t b, int64_t e, int64_t seq) {
    for (int64_t t = b; t < e; t++) {
      if (p.batch.mask && !p.batch.mask[t]) {
        p.per_token[t] = 0.f;
        p.grad[t] = 0.f;
        continue;
      }
      p.grad[t] = policy_one(p, in, ws[seq], t, none, s);
    }
  });
}

}  // namespace
}  // namespace rk

#define RK_POLICY_LANES lanes
#define RK_LANES_V4 0
#include "policy_lanes.h"
#undef RK_POLICY_LANES
#undef RK_LANES_V4
#if RK_MULTIVERSION
RK_V4_BEGIN
#define RK_POLICY_LANES lanes_v4
#define RK_LANES_V4 1
#include "policy_lanes.h"
#undef RK_POLICY_LANES
#undef RK_LANES_V4
RK_V4_END
#endif

namespace rk {
namespace {

RK_ISA_KERNEL_V4(plain_block, lanes_v4::plain_impl, lanes::plain_impl)

// Sequence i: its sums (phase 1), its tokens (2), and with coupled() each token's gradient (1/n) Σ_u w_u g_u (3).
template <bool F32>
void policy_sequence(const PolicyLossParams& p, const float* ws, int64_t i, BlockSums& s) {
  const Inputs<F32> in{p};
  const TokenBatch& b = p.batch;
  const int64_t begin = b.offsets[i], end = b.offsets[i + 1];
  double d_sum = 0, b_sum = 0;
  int64_t n = 0;
  for (int64_t t = begin; t < end; t++) {
    if (b.mask && !b.mask[t]) continue;
    const float old = in(p.old_logp, t);
    d_sum += double(in(p.logp, t) - old);
    if (p.behavior_logp.present()) b_sum += double(old - in(p.behavior_logp, t));
    n++;
  }
  const PolicySeq q = policy_seq(d_sum, b_sum, n, p.opts);
  if (n > 0) s.rollout.add_seq(q);
  double g_sum = 0;
  for (int64_t t = begin; t < end; t++) {
    if (b.mask && !b.mask[t]) {
      p.per_token[t] = 0.f;
      p.grad[t] = 0.f;
      continue;
    }
    const float g = policy_one(p, in, ws[i], t, q, s);
    if (p.opts.coupled()) g_sum += double(g);
    else p.grad[t] = g;
  }
  if (!p.opts.coupled()) return;
  const float g = n > 0 ? float(g_sum / double(n)) : 0.f;
  // every token written again, masked ones 0: a mask another thread rewrites between the passes (a shared
  // input) must not leave a token unwritten (outputs are not zero-filled)
  for (int64_t t = begin; t < end; t++) p.grad[t] = b.mask && !b.mask[t] ? 0.f : g;
}

}  // namespace

PolicyLossResult policy_loss(const PolicyLossParams& p) {
  const TokenBatch& b = p.batch;
  SmallArray<float> ws(static_cast<size_t>(b.num_seqs));
  PolicyLossResult r;
  r.count = sequence_weights(b, ws.data());
  const bool f32 = p.logp.dtype == DType::f32 && p.old_logp.dtype == DType::f32 && p.advantages.dtype == DType::f32 &&
                   (!p.behavior_logp.present() || p.behavior_logp.dtype == DType::f32) &&
                   (!p.divergence.present() || p.divergence.dtype == DType::f32);
  const bool by_seq = p.opts.needs_sequences(), plain = p.opts.plain() && !p.behavior_logp.present();
  const int64_t blocks = by_seq ? b.num_seqs : (b.tokens + TOKEN_BLOCK - 1) / TOKEN_BLOCK;
  SmallArray<BlockSums> sums(static_cast<size_t>(blocks));
  parallel_for(blocks, 1, [&](int64_t bb, int64_t be) {
    for (int64_t k = bb; k < be; k++) {
      BlockSums& s = sums[size_t(k)];
      if (by_seq) {
        if (f32) policy_sequence<true>(p, ws.data(), k, s);
        else policy_sequence<false>(p, ws.data(), k, s);
        continue;
      }
      const int64_t t0 = k * TOKEN_BLOCK, t1 = std::min(b.tokens, t0 + TOKEN_BLOCK);
      if (plain && f32) plain_block<float>(p, ws.data(), t0, t1, &s);
      else if (plain) plain_block<void>(p, ws.data(), t0, t1, &s);
      else if (f32) policy_block<true>(p, ws.data(), t0, t1, s);
      else policy_block<false>(p, ws.data(), t0, t1, s);
    }
  });
  BlockSums all;
  for (const BlockSums& s : sums) all.add(s);
  r.loss = float(all.loss);
  r.approx_kl = float(all.kl);
  ClipStats stats;
  stats.ratio.add(float(all.ratio));
  stats.ratio_max = all.ratio_max;
  stats.low = all.low, stats.high = all.high, stats.dual = all.dual;
  stats.write(r, r.count);
  all.rollout.write(r, r.count);
  return r;
}

}  // namespace rk
