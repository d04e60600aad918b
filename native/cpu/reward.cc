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

int64_t first_candidate(const RewardLossParams& p, int64_t n) { return p.offsets ? p.offsets[n] : n * p.K; }

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
    const int64_t a = first_candidate(p, n);
    const int64_t K = first_candidate(p, n + 1) - a;
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

// log(1 + x) in float32 for x ≥ 0 (NaN gives NaN): Goldberg's log(u) · x / (u − 1) with u = 1 + x, exact where
// u rounds to 1, and log(u) of Cephes' logf (u = f · 2^e with f in [√½, √2), a degree-9 polynomial in f − 1,
// e·ln 2 in two parts), a few ulp; every lane takes the same arithmetic.
template <typename V>
RK_INLINE V log1p_approx(V x) {
  using I = decltype(x < x);
  const V u = 1.f + x, d = u - 1.f;
  I bits;
  std::memcpy(&bits, &u, sizeof bits);
  const I fbits = (bits & 0x007fffff) | 0x3f000000;  // the mantissa of u as f in [0.5, 1)
  V f;
  std::memcpy(&f, &fbits, sizeof f);
  const I below = f < 0.707106781186547524f;  // −1 where f is below √½: take 2f − 1, one power of 2 less
  const V e = __builtin_convertvector(((bits >> 23) & 0xff) - 126 + below, V);
  f = below ? f + f - 1.f : f - 1.f;
  const V z = f * f;
  V y = 7.0376836292e-2f * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  y = y * f * z - 2.12194440e-4f * e - 0.5f * z;
  const V log_u = (f + y) + 0.693359375f * e;
  const V r = d == 0.f ? x : log_u * (x / (d == 0.f ? 1.f : d));
  return x == x ? r : x;
}

// Prompts [begin, end) of p.K candidates each (2 ≤ K ≤ VECTOR_MAX_K), a hard label, no margins or centering;
// L prompts a lane each, their scores transposed through the stack (x[i] holds candidate i of the L prompts).
// Per lane the math of reward_prompts: m the max, e_i = exp_approx(s_i − m) (s − m rounded once to float32,
// as there), Σe and Σ_{i≠b} e_i in double in candidate order, p_i = e_i · (1/Σe), the chosen gradient
// −Σ_{i≠b} e_i / Σe, and the loss log Σe − (s_b − m) as log1p(Σe − 1) + (m − s_b): both terms ≥ 0 (the max
// gives e = 1), so nothing cancels where p_b is near 1. Ignored prompts (b = ignoreIndex) are selected out.
template <int ISA_L, typename T>
RK_INLINE void uniform_impl(const RewardLossParams& p, const float& scale, const int64_t& begin, const int64_t& end, BlockSums* const& out) {
  constexpr int L = token_lanes<ISA_L>();
  using vf = typename Lanes<L>::f;
  using vi = typename Lanes<L>::i;
  using vd = typename DLanes<L>::d;
  const T* scores = static_cast<const T*>(p.scores.data);
  const int64_t K = p.K;
  const vf zero = {};
  const vd one_d = vd{} + 1.0;
  vd loss_sum = {};
  vi correct = {};  // −1 per prompt ranking its label first: at most PROMPT_BLOCK per lane
  float buf[L * VECTOR_MAX_K];
  vf x[VECTOR_MAX_K];
  for (int64_t n0 = begin; n0 < end; n0 += L) {
    const int64_t count = std::min<int64_t>(L, end - n0), a = n0 * K, len = count * K;
    vi b;
    for (int l = 0; l < L; l++) b[l] = l < count ? p.chosen[n0 + l] : p.ignore_index;
    const vi counted = b != p.ignore_index;
    if constexpr (std::is_same_v<T, float>) std::memcpy(buf, scores + a, size_t(len) * sizeof(float));
    else for (int64_t j = 0; j < len; j++) buf[j] = load(scores, a + j);
    for (int64_t j = len; j < L * K; j++) buf[j] = 0.f;
    for (int64_t i = 0; i < K; i++) for (int l = 0; l < L; l++) x[i][l] = buf[l * K + i];
    vf m = zero - INFINITY, sb = zero;
    for (int64_t i = 0; i < K; i++) {
      m = x[i] > m ? x[i] : m;
      sb = b == int32_t(i) ? x[i] : sb;
    }
    vi top = counted;  // strictly above every other raw score (NaN or a tie: not first)
    for (int64_t i = 0; i < K; i++) top &= (b == int32_t(i)) | (sb > x[i]);
    vd se = {}, others = {};
    for (int64_t i = 0; i < K; i++) {
      x[i] = exp_approx(x[i] - m);
      se += __builtin_convertvector(x[i], vd);
      others += __builtin_convertvector(b == int32_t(i) ? zero : x[i], vd);
    }
    const vf inv = __builtin_convertvector(one_d / se, vf), gb = __builtin_convertvector(-others / se, vf);
    const vf loss = counted ? log1p_approx(__builtin_convertvector(se - one_d, vf)) + (m - sb) : zero;
    loss_sum += __builtin_convertvector(loss, vd);
    correct += top;
    if (p.losses) token_store<L>(p.losses, n0, count, loss);
    for (int64_t i = 0; i < K; i++) {
      const vf pr = x[i] * inv;
      for (int l = 0; l < L; l++) buf[l * K + i] = pr[l];
    }
    std::memcpy(p.probs + a, buf, size_t(len) * sizeof(float));
    for (int64_t i = 0; i < K; i++) {
      const vf g = counted ? scale * (b == int32_t(i) ? gb : x[i] * inv) : zero;
      for (int l = 0; l < L; l++) buf[l * K + i] = g[l];
    }
    std::memcpy(p.grad + a, buf, size_t(len) * sizeof(float));
  }
  out->loss += lane_sum(loss_sum);
  for (int l = 0; l < L; l++) out->correct -= correct[l];
}
RK_ISA_KERNEL(uniform_block, uniform_impl)

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
      int64_t ignored = 0;
      if (q.chosen) for (int64_t n = 0; n < q.N; n++) ignored += q.chosen[n] == q.ignore_index;
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
