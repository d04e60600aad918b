// CPU PPO clipped policy loss (DESIGN §1.4); math in native/include/rlhf/policy.h (policy_token). Tokens run
// in fixed blocks over the thread pool; each block sums in double, and the blocks are added in order, so
// results do not depend on the thread count.
#include "rlhf/policy.h"

#include <vector>

#include "parallel.h"
#include "rlhf/aggregate.h"

namespace rk {
namespace {

constexpr int64_t TOKEN_BLOCK = 4096;

struct BlockSums {
  double loss = 0, kl = 0, ratio = 0;
  float ratio_max = -INFINITY;
  int64_t low = 0, high = 0, dual = 0;
};

// F32: every input is float32, read directly (the common case) instead of through its dtype.
template <bool F32>
void policy_block(const PolicyLossParams& p, const float* w, int64_t begin, int64_t end, BlockSums& s) {
  const TokenBatch& b = p.batch;
  auto in = [](const FloatIn& x, int64_t t) { return F32 ? static_cast<const float*>(x.data)[t] : read(x, t); };
  for (int64_t t = begin; t < end; t++) {
    if (b.mask && !b.mask[t]) {
      p.per_token[t] = 0.f;
      p.grad[t] = 0.f;
      continue;
    }
    const float lp = in(p.logp, t), old = in(p.old_logp, t);
    const PolicyToken k = policy_token(lp, old, in(p.advantages, t), p.opts);
    p.per_token[t] = k.loss;
    p.grad[t] = w[t] * k.grad;
    s.loss += double(w[t] * k.loss);
    s.kl += double(w[t] * (old - lp));
    s.ratio += double(k.ratio);
    s.ratio_max = k.ratio > s.ratio_max ? k.ratio : s.ratio_max;
    s.low += k.clipped_low;
    s.high += k.clipped_high;
    s.dual += k.dual_clipped;
  }
}

}  // namespace

PolicyLossResult policy_loss(const PolicyLossParams& p) {
  const TokenBatch& b = p.batch;
  std::vector<float> w(static_cast<size_t>(b.tokens));
  PolicyLossResult r;
  r.count = aggregation_weights(b, w.data());
  const int64_t blocks = (b.tokens + TOKEN_BLOCK - 1) / TOKEN_BLOCK;
  std::vector<BlockSums> sums(static_cast<size_t>(blocks));
  const bool f32 = p.logp.dtype == DType::f32 && p.old_logp.dtype == DType::f32 && p.advantages.dtype == DType::f32;
  parallel_for(blocks, 1, [&](int64_t bb, int64_t be) {
    for (int64_t k = bb; k < be; k++) {
      const int64_t t0 = k * TOKEN_BLOCK, t1 = std::min(b.tokens, t0 + TOKEN_BLOCK);
      if (f32) policy_block<true>(p, w.data(), t0, t1, sums[size_t(k)]);
      else policy_block<false>(p, w.data(), t0, t1, sums[size_t(k)]);
    }
  });
  BlockSums all;
  for (const BlockSums& s : sums) {
    all.loss += s.loss, all.kl += s.kl, all.ratio += s.ratio;
    all.ratio_max = s.ratio_max > all.ratio_max ? s.ratio_max : all.ratio_max;
    all.low += s.low, all.high += s.high, all.dual += s.dual;
  }
  r.loss = float(all.loss);
  r.approx_kl = float(all.kl);
  ClipStats stats;
  stats.ratio.add(float(all.ratio));
  stats.ratio_max = all.ratio_max;
  stats.low = all.low, stats.high = all.high, stats.dual = all.dual;
  stats.write(r, r.count);
  return r;
}

}  // namespace rk
