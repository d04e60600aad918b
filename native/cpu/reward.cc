// CPU K-wise reward-model loss (DESIGN §1.3); math in src/reference/reward.ts. Prompts run in fixed blocks of
// PROMPT_BLOCK over the thread pool; each block sums its losses in double and the blocks are added in order,
// so results do not depend on the thread count. Every prompt with the same K ≥ 2 (K given, or offsets all K
// apart) and a hard label without margins or centering (the common case) runs L prompts at a time
// (uniform_impl); the other cases prompt by prompt (reward_prompts).
#include "rlhf/reward.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "parallel.h"
#include "rowmath.h"

namespace rk {

namespace {

constexpr int64_t PROMPT_BLOCK = 4096;
constexpr int64_t VECTOR_MAX_K = 16;  // the vector path keeps a block's K × L scores on the stack

struct BlockSums {
  double loss = 0;
  int64_t correct = 0;
};

// Prompts [begin, end): probs, grad and losses, and the counted prompts that rank their label first.
// Scores are read through their storage type T (no per-element dtype switch).
template <typename T>
void reward_prompts(const RewardLossParams& p, float scale, int64_t begin, int64_t end, BlockSums& out) {
  const T* scores = static_cast<const T*>(p.scores.data);
  constexpr int64_t SMALL = 64;  // candidates kept on the stack; a larger prompt uses a per-thread vector
  double small[SMALL];  // a prompt's scores plus margins, in double: K is small, and s + m would round
  thread_local std::vector<double> large;
  KahanSum block_loss;
  for (int64_t n = begin; n < end; n++) {
    const int64_t a = reward_first(p, n);
    const int64_t K = reward_first(p, n + 1) - a;
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
    if (p.losses) p.losses[n] = 0.f;
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
    if (p.losses) p.losses[n] = loss.value();
    block_loss.add(loss.value());
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
    out.correct += top;
  }
  out.loss += double(block_loss.value());
}

}  // namespace
}  // namespace rk

#define RK_REWARD_LANES lanes
#define RK_LANES_V4 0
#include "reward_lanes.h"
#undef RK_REWARD_LANES
#undef RK_LANES_V4
#if RK_MULTIVERSION
RK_V4_BEGIN
#define RK_REWARD_LANES lanes_v4
#define RK_LANES_V4 1
#include "reward_lanes.h"
#undef RK_REWARD_LANES
#undef RK_LANES_V4
RK_V4_END
#endif

namespace rk {
namespace {

RK_ISA_KERNEL_V4(uniform_block, lanes_v4::uniform_impl, lanes::uniform_impl)

// K when every prompt has K candidates (given, or offsets all K apart), else 0
int64_t uniform_k(const RewardLossParams& p) {
  if (p.K > 0 || p.N == 0) return p.K;
  const int64_t K = p.offsets[1] - p.offsets[0];
  bool same = true;
  for (int64_t n = 1; n <= p.N; n++) same &= int64_t(p.offsets[n]) - p.offsets[n - 1] == K;
  return same ? K : 0;
}

}  // namespace

RewardLossResult reward_loss(const RewardLossParams& p) {
  RewardLossResult r;
  RewardLossParams q = p;
  q.K = uniform_k(p);
  if (q.K > 0) q.offsets = nullptr;
  if (q.K > 0) {
    if (q.K >= 2) {
      int64_t ignored = q.chosen ? q.ignored : 0;
      if (ignored < 0) {
        ignored = 0;
        for (int64_t n = 0; n < q.N; n++) ignored += q.chosen[n] == q.ignore_index;
      }
      r.count = q.N - ignored;
    }
  } else {
    for (int64_t n = 0; n < q.N; n++) {
      r.count += q.offsets[n + 1] - q.offsets[n] >= 2 && (q.chosen == nullptr || q.chosen[n] != q.ignore_index);
    }
  }
  const float scale = q.reduction == Reduction::mean ? (r.count > 0 ? 1.f / float(r.count) : 0.f) : 1.f;
  const bool vector = q.K >= 2 && q.K <= VECTOR_MAX_K && q.chosen && !q.target_probs.present() && !q.margins.present() && q.center_coef == 0.f;
  const int64_t blocks = (q.N + PROMPT_BLOCK - 1) / PROMPT_BLOCK;
  std::vector<BlockSums> sums(static_cast<size_t>(blocks));
  dispatch_dtype(q.scores.dtype, [&]<typename T>() {
    parallel_for(blocks, 1, [&](int64_t bb, int64_t be) {
      for (int64_t k = bb; k < be; k++) {
        const int64_t n0 = k * PROMPT_BLOCK, n1 = std::min(q.N, n0 + PROMPT_BLOCK);
        if (vector) uniform_block<T>(q, scale, n0, n1, &sums[size_t(k)]);
        else reward_prompts<T>(q, scale, n0, n1, sums[size_t(k)]);
      }
    });
  });
  double total = 0;  // in block order, whatever the thread count (a prompt not counted adds nothing)
  int64_t correct = 0;
  for (const BlockSums& s : sums) {
    total += s.loss;
    correct += s.correct;
  }
  r.loss = float(total * scale);
  r.accuracy = r.count > 0 ? float(double(correct) / double(r.count)) : 0.f;
  return r;
}

}  // namespace rk
