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

// The L-lane index vectors of the shuffles below: even / odd elements of a pair of vectors (unzip), and the
// low / high halves of their interleaving (zip). Constants once inlined.
template <typename VI, int L>
RK_INLINE VI shuffle_mask(int kind) {
  VI m;
  for (int l = 0; l < L; l++) {
    m[l] = kind == 0 ? 2 * l : kind == 1 ? 2 * l + 1 : (kind == 2 ? 0 : L / 2) + l / 2 + (l % 2 ? L : 0);
  }
  return m;
}
// K = 2^k vectors holding K·L consecutive values: out[i] = the values i, i + K, i + 2K, … (candidate i of L
// prompts), by k rounds of even/odd splits
template <int K, typename VF, typename VI, int L>
RK_INLINE void unzip(const VF* in, VF* out) {
  if constexpr (K == 1) {
    out[0] = in[0];
  } else {
    const VI even = shuffle_mask<VI, L>(0), odd = shuffle_mask<VI, L>(1);
    VF e[K / 2], o[K / 2], ee[K / 2], oo[K / 2];
    for (int j = 0; j < K / 2; j++) {
      e[j] = __builtin_shuffle(in[2 * j], in[2 * j + 1], even);
      o[j] = __builtin_shuffle(in[2 * j], in[2 * j + 1], odd);
    }
    unzip<K / 2, VF, VI, L>(e, ee);
    unzip<K / 2, VF, VI, L>(o, oo);
    for (int i = 0; i < K / 2; i++) out[2 * i] = ee[i], out[2 * i + 1] = oo[i];
  }
}
// the inverse: out holds in[0][0], in[1][0], …, in[K−1][0], in[0][1], … (prompt after prompt)
template <int K, typename VF, typename VI, int L>
RK_INLINE void zip(const VF* in, VF* out) {
  if constexpr (K == 1) {
    out[0] = in[0];
  } else {
    const VI lo = shuffle_mask<VI, L>(2), hi = shuffle_mask<VI, L>(3);
    VF ie[K / 2], io[K / 2], e[K / 2], o[K / 2];
    for (int i = 0; i < K / 2; i++) ie[i] = in[2 * i], io[i] = in[2 * i + 1];
    zip<K / 2, VF, VI, L>(ie, e);
    zip<K / 2, VF, VI, L>(io, o);
    for (int j = 0; j < K / 2; j++) {
      out[2 * j] = __builtin_shuffle(e[j], o[j], lo);
      out[2 * j + 1] = __builtin_shuffle(e[j], o[j], hi);
    }
  }
}

// Prompts [begin, end) of K candidates each (2 ≤ K ≤ VECTOR_MAX_K), a hard label, no margins or centering;
// L prompts a lane each, x[i] holding candidate i of the L prompts: transposed by shuffles for KC = K a power
// of 2 (KC = 0: any K, through the stack). Per lane the math of reward_prompts: m the max, e_i =
// exp_approx(s_i − m) (s − m rounded once to float32, as there), p_i = e_i · (1/Σe), the chosen gradient
// −Σ_{i≠b} e_i / Σe, and the loss log Σe − (s_b − m) as log1p(r) + (m − s_b) with r = Σe − 1 summed without
// the first max's e = 1: both terms ≥ 0, so nothing cancels where p_b is near 1, and a tiny r keeps its
// digits. The sums over at most VECTOR_MAX_K terms ≥ 0 are in float32 (relative error ≤ K · 2^−24, within
// the parity tolerance) where reward_prompts keeps double; the loss total in double lanes.
// Ignored prompts (b = ignoreIndex) are selected out.
template <int L, int KC, typename T>
RK_INLINE void uniform_prompts(const RewardLossParams& p, float scale, int64_t begin, int64_t end, BlockSums& out) {
  using vf = typename Lanes<L>::f;
  using vi = typename Lanes<L>::i;
  using vd = typename DLanes<L>::d;
  constexpr int KX = KC ? KC : VECTOR_MAX_K;
  const T* scores = static_cast<const T*>(p.scores.data);
  const int64_t K = KC ? KC : p.K;
  const vf zero = {};
  const vi zero_i = {};
  vd loss_sum = {};
  vi correct = {};  // −1 per prompt ranking its label first: at most PROMPT_BLOCK per lane
  float buf[L * KX];
  vf x[KX], flat[KX];
  // the L·K values from buf (count prompts, zeros after) or out of x, prompt after prompt
  auto transpose_in = [&](bool full, int64_t a) {
    if constexpr (KC != 0) {
      if (full) for (int j = 0; j < KC; j++) flat[j] = vload<L>(scores, a + j * L);
      else for (int j = 0; j < KC; j++) flat[j] = vload<L>(buf, j * L);
      unzip<KC, vf, vi, L>(flat, x);
    } else {
      for (int64_t i = 0; i < K; i++) for (int l = 0; l < L; l++) x[i][l] = buf[l * K + i];
    }
  };
  auto store = [&](float* dst, int64_t a, int64_t len) {
    if constexpr (KC != 0) {
      zip<KC, vf, vi, L>(x, flat);
      if (len == L * K) {
        for (int j = 0; j < KC; j++) vstore(dst, a + j * L, flat[j]);
        return;
      }
      for (int j = 0; j < KC; j++) vstore(buf, j * L, flat[j]);
    } else {
      for (int64_t i = 0; i < K; i++) for (int l = 0; l < L; l++) buf[l * K + i] = x[i][l];
    }
    std::memcpy(dst + a, buf, size_t(len) * sizeof(float));
  };
  vf e[KX];
  for (int64_t n0 = begin; n0 < end; n0 += L) {
    const int64_t count = std::min<int64_t>(L, end - n0), a = n0 * K, len = count * K;
    const bool full = count == L;
    vi b;
    for (int l = 0; l < L; l++) b[l] = l < count ? p.chosen[n0 + l] : p.ignore_index;
    const vi counted = b != p.ignore_index;
    if (!full || KC == 0) {
      for (int64_t j = 0; j < len; j++) buf[j] = load(scores, a + j);
      for (int64_t j = len; j < L * K; j++) buf[j] = 0.f;
    }
    transpose_in(full, a);
    vf m = zero - INFINITY, sb = zero;
    vi first = zero_i;  // the first candidate at the max, whose e is exactly 1
    for (int64_t i = 0; i < K; i++) {
      const vi above = x[i] > m;
      first = above ? int32_t(i) : first;
      m = above ? x[i] : m;
      sb = b == int32_t(i) ? x[i] : sb;
    }
    vi top = counted;  // strictly above every other raw score (NaN or a tie: not first)
    for (int64_t i = 0; i < K; i++) top &= (b == int32_t(i)) | (sb > x[i]);
    // Σ e but the first max's e (1, or NaN where the max is +inf or every score −inf), that e, and Σ_{i≠b} e_i:
    // K ≤ 16 terms ≥ 0, in float32
    vf rest = zero, top_e = zero, others = zero;
    for (int64_t i = 0; i < K; i++) {
      e[i] = exp_approx(x[i] - m);
      rest += first == int32_t(i) ? zero : e[i];
      top_e = first == int32_t(i) ? e[i] : top_e;
      others += b == int32_t(i) ? zero : e[i];
    }
    const vf se = top_e + rest, inv = 1.f / se, gb = -others / se;
    const vf lse_less_m = log1p_approx(rest);
    const vf loss = counted ? (se == se ? lse_less_m + (m - sb) : se) : zero;
    loss_sum += __builtin_convertvector(loss, vd);
    correct += top;
    if (p.losses) token_store<L>(p.losses, n0, count, loss);
    for (int64_t i = 0; i < K; i++) x[i] = e[i] * inv;
    store(p.probs, a, len);
    for (int64_t i = 0; i < K; i++) x[i] = counted ? scale * (b == int32_t(i) ? gb : x[i]) : zero;
    store(p.grad, a, len);
  }
  out.loss += lane_sum(loss_sum);
  for (int l = 0; l < L; l++) out.correct -= correct[l];
}

template <int ISA_L, typename T>
RK_INLINE void uniform_impl(const RewardLossParams& p, const float& scale, const int64_t& begin, const int64_t& end, BlockSums* const& out) {
  constexpr int L = token_lanes<ISA_L>();  // 16 AVX-512 lanes: GCC scalarises this loop, 3x slower
  switch (p.K) {
    case 2: return uniform_prompts<L, 2, T>(p, scale, begin, end, *out);
    case 4: return uniform_prompts<L, 4, T>(p, scale, begin, end, *out);
    case 8: return uniform_prompts<L, 8, T>(p, scale, begin, end, *out);
    case 16: return uniform_prompts<L, 16, T>(p, scale, begin, end, *out);
    default: return uniform_prompts<L, 0, T>(p, scale, begin, end, *out);
  }
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
