// CPU vocabulary kernels (DESIGN §1.1, §1.2); math in native/include/rlhf/vocab.h and src/reference/vocab.ts.
// Rows are spread over the thread pool; each row is reduced with rowmath.h's lane-blocked loops.
#include "rlhf/vocab.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <type_traits>
#include <vector>

#include "parallel.h"
#include "rowmath.h"

namespace rk {
namespace {

// rows per task: enough elements that a task outweighs its scheduling
int64_t row_grain(int64_t V) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, V)); }

template <int L, typename T>
RK_INLINE void log_probs_impl(const LogProbsParams& p, int64_t begin, int64_t end) {
  const T* z = static_cast<const T*>(p.logits.data);
  for (int64_t n = begin; n < end; n++) {
    const int32_t y = p.targets[n];
    if (y == p.ignore_index) {  // an ignored row: every per-row result is 0 (the max token −1)
      p.lse[n] = p.logp[n] = 0.f;
      if (p.entropy) p.entropy[n] = 0.f;
      if (p.sum_prob_sq) p.sum_prob_sq[n] = 0.f;
      if (p.max_prob) p.max_prob[n] = 0.f, p.max_token[n] = -1.f;
      continue;
    }
    const T* row = z + n * p.V;
    // the entropy and Σ p² in the lse's exp pass: one exp per element
    // (the exp pass prefetches the next row: its max pass then reads it from L2)
    const RowAhead<T> ahead{n + 1 < p.N ? row + p.V : nullptr};
    const RowSoftmax r = row_softmax_ahead<L>(ahead, row, p.V, row_temperature(p.temperatures, p.temperature, n), nullptr, nullptr, nullptr,
                                              p.entropy ? p.entropy + n : nullptr, p.sum_prob_sq ? p.sum_prob_sq + n : nullptr);
    p.lse[n] = float(r.lse);
    p.logp[n] = r.logp(load(row, y));
    if (p.max_prob) {
      // max p = exp(log p) at the largest logit m: its first index is found by a vector scan that stops there
      // (m is NaN for a row holding NaN: token −1, probability NaN; all −inf: token 0, probability 0)
      const int64_t a = r.m != r.m ? -1 : r.lse == -INFINITY ? 0 : row_argmax_lanes<L>(row, p.V, r.m);
      p.max_token[n] = float(a);
      p.max_prob[n] = a < 0 ? NAN : exp_approx(r.logp(load(row, a)));
    }
  }
}
RK_ISA_KERNEL(log_probs_rows, log_probs_impl)

template <int L, typename T>
RK_INLINE void backward_impl(const LogProbsBackwardParams& p, int64_t begin, int64_t end) {
  const T* z = static_cast<const T*>(p.logits.data);
  const int64_t V = p.V;
  for (int64_t n = begin; n < end; n++) {
    const T* row = z + n * V;
    float* g = p.grad + n * V;
    const float l = read(p.lse, n);
    const int32_t y = p.targets[n];
    const float gl = p.grad_logp.present() ? read(p.grad_logp, n) : 0.f;
    const float gh = p.grad_entropy.present() ? read(p.grad_entropy, n) : 0.f;
    const float gs = p.grad_sum_prob_sq.present() ? read(p.grad_sum_prob_sq, n) : 0.f;
    if (y == p.ignore_index || l == -INFINITY || (gl == 0.f && gh == 0.f && gs == 0.f)) {
      std::fill(g, g + V, 0.f);
      continue;
    }
    const RowSoftmax r = row_softmax<L>(row, V, row_temperature(p.temperatures, p.temperature, n), &l);
    const float invT = r.invT;
    const float h = gh == 0.f ? 0.f : (p.entropy.present() ? read(p.entropy, n) : row_entropy<L>(row, V, r));
    const float sq = gs == 0.f ? 0.f : (p.sum_prob_sq.present() ? read(p.sum_prob_sq, n) : row_sum_prob_sq<L>(row, V, r));
    // d = [−g_logp·p − g_H·p·(log p + H) + 2 g_Q·p·(p − Q)] / T; the true-class term is then formed in float32
    // as one expression
    row_map<L>(V, g, [&](auto z) {
      const auto lp = r.logp(z);
      const auto q = exp_approx(lp);
      return (-gl * q - xlogy_term(q, gh * (lp + h)) + 2.f * gs * q * (q - sq)) * invT;
    }, row);
    // the true class: 1 − q as −expm1(log q), exact where q is near 1 (1 − q would cancel)
    const float lp = r.logp(load(row, y));
    const float q = exp_approx(lp);
    g[y] = (-gl * std::expm1(lp) - xlogy_term(q, gh * (lp + h)) + 2.f * gs * q * (q - sq)) * invT;
  }
}
RK_ISA_KERNEL(backward_rows, backward_impl)

template <int L, typename T>
RK_INLINE void cross_entropy_impl(const CrossEntropyParams& p, const float* cw, float W, float scale, int64_t begin, int64_t end) {
  thread_local std::vector<float> stage;  // a 16-bit gradient's float32 row (GradRow)
  const T* z = static_cast<const T*>(p.logits.data);
  const int64_t V = p.V;
  const float eps = p.label_smoothing;
  for (int64_t n = begin; n < end; n++) {
    const T* row = z + n * V;
    const int32_t y = p.targets[n];
    const GradRow grad_row(p.grad, p.grad16, p.logits.dtype, n, V, stage);
    float* g = grad_row.get();
    // with a gradient, the lse pass keeps the row's exps in g (rescaled below): one exp per element
    float inv_sum = 0.f;
    // the exp pass prefetches the next row's logits (and its float32 gradient row, to be written)
    const bool next = n + 1 < p.N;
    const RowAhead<T> ahead{next ? row + V : nullptr, next && p.grad ? p.grad + (n + 1) * V : nullptr};
    const RowSoftmax r = y == p.ignore_index ? RowSoftmax{0.f, 0.f, 1.f, 0.0}
                                             : row_softmax_ahead<L>(ahead, row, V, row_temperature(p.temperatures, p.temperature, n), nullptr, g, &inv_sum);
    const float l = float(r.lse);
    p.lse[n] = l;
    if (y == p.ignore_index || l == -INFINITY) {  // ignored: 0 everywhere; no mass anywhere: +inf, zero gradient
      p.losses[n] = y == p.ignore_index ? 0.f : INFINITY;
      if (g) std::fill(g, g + V, 0.f);
      continue;
    }
    const float wy = cw ? cw[y] : 1.f;
    const float tw = p.token_weights.present() ? read(p.token_weights, n) : 1.f;
    float loss = -(1.f - eps) * wy * r.logp(load(row, y));
    if (eps != 0.f) {
      // Σ_v w_v (lse − z_v) = −Σ_v w_v log p_v; a −inf logit makes it +inf, as in PyTorch
      const float smooth = cw ? row_sum<L>(V, [&](auto z, auto w) { return -w * r.logp(z); }, row, cw)
                              : row_sum<L>(V, [&](auto z) { return -r.logp(z); }, row);
      loss += eps / float(V) * smooth;
    }
    if (p.z_loss != 0.f) loss += p.z_loss * l * l;
    p.losses[n] = tw * loss;
    if (!g) continue;
    const float gs = scale * tw * r.invT;  // the gradient in z/T, times 1/T
    const float rest = eps * W / float(V) + 2.f * p.z_loss * l;  // cp − (1−ε) w_y
    const float cp = (1.f - eps) * wy + rest;
    const float e = eps / float(V);
    if (r.finite()) {  // p_v = e_v / S from the exps kept in g
      const float a = gs * cp * inv_sum;
      if (cw) row_map<L>(V, g, [&](auto ev, auto w) { return a * ev - gs * e * w; }, g, cw);
      else row_map<L>(V, g, [&](auto ev) { return a * ev - gs * e; }, g);
    } else if (cw) {
      row_map<L>(V, g, [&](auto z, auto w) { return gs * (cp * exp_approx(r.logp(z)) - e * w); }, row, cw);
    } else {
      row_map<L>(V, g, [&](auto z) { return gs * (cp * exp_approx(r.logp(z)) - e); }, row);
    }
    // the true class: cp·p_y − (1−ε) w_y = cp·expm1(log p_y) + rest, exact where p_y is near 1
    g[y] = gs * (cp * std::expm1(r.logp(load(row, y))) + rest - e * (cw ? cw[y] : 1.f));
  }
}
RK_ISA_KERNEL(cross_entropy_rows, cross_entropy_impl)

}  // namespace

void log_probs(const LogProbsParams& p) {
  dispatch_dtype(p.logits.dtype, [&]<typename T>() {
    parallel_for(p.N, row_grain(p.V), [&](int64_t b, int64_t e) { log_probs_rows<T>(p, b, e); });
  });
}

void log_probs_backward(const LogProbsBackwardParams& p) {
  dispatch_dtype(p.logits.dtype, [&]<typename T>() {
    parallel_for(p.N, row_grain(p.V), [&](int64_t b, int64_t e) { backward_rows<T>(p, b, e); });
  });
}

CrossEntropyResult cross_entropy(const CrossEntropyParams& p) {
  CrossEntropyResult r;
  KahanSum W, denom;
  std::vector<float> cw;  // class weights decoded once, read by every row
  if (p.class_weights.present()) {
    cw.resize(size_t(p.V));
    for (int64_t v = 0; v < p.V; v++) W.add(cw[v] = read(p.class_weights, v));
  }
  for (int64_t n = 0; n < p.N; n++) {
    const int32_t y = p.targets[n];
    if (y == p.ignore_index) continue;
    r.count++;
    denom.add(cw.empty() ? 1.f : cw[y]);
  }
  const float Wv = cw.empty() ? float(p.V) : W.value();
  const float d = denom.value();
  const float scale = p.reduction == Reduction::mean ? (d > 0.f ? 1.f / d : 0.f) : 1.f;
  dispatch_dtype(p.logits.dtype, [&]<typename T>() {
    parallel_for(p.N, row_grain(p.V), [&](int64_t b, int64_t e) { cross_entropy_rows<T>(p, cw.empty() ? nullptr : cw.data(), Wv, scale, b, e); });
  });
  KahanSum total;  // in row order, whatever the thread count
  for (int64_t n = 0; n < p.N; n++) total.add(p.losses[n]);
  r.loss = total.value() * scale;
  return r;
}

}  // namespace rk

// Kept-set log-probs (src/reference/vocab.ts keptLogProbsKernel). Where the set is given (CSR) one pass over
// its tokens; where it comes from the sampling parameters, the row read once into a per-thread buffer, then
// min-p (a compare against the max), top-k (a selection, kth_largest: O(V)) and top-p (the cut of
// rlhf/vocab.h KeptCut, as the CUDA kernel finds it: radix passes over the survivors' order keys with
// fixed-point masses, O(m) for m survivors, no sort).
namespace rk {
namespace {

// s: the row's raw logits (the order of z/T is theirs); differences are scaled by invT in double, so that
// |z|/T up to 1e4 loses nothing to a float32 z/T
// Per-thread buffers of sampling_kept: top-p's order key and mass of each survivor and the candidates left,
// and top-k's buffer of candidate values (kth_largest).
struct CutScratch {
  std::vector<uint32_t> key;
  std::vector<uint64_t> mass;
  std::vector<uint32_t> cand;
  std::vector<float> values;
};

// The k-th largest of x[0, m) (1 ≤ k ≤ m, no NaN): every value ≥ a running bound t goes into buf, and t rises
// to buf's k-th largest whenever buf fills. Exact: a value passed over is below t, and t never exceeds the
// answer (buf holds values of x). O(m) compares, a selection per cap values kept; std::nth_element over the
// whole row instead cost ~300 µs per 32000-token row.
float kth_largest(const float* x, size_t m, size_t k, std::vector<float>& buf) {
  size_t cap = std::max<size_t>(8 * k, 2048);
  buf.clear();
  float t = -INFINITY;
  for (size_t i = 0; i < m; i++) {
    if (x[i] < t) continue;
    buf.push_back(x[i]);
    if (buf.size() < cap) continue;
    std::nth_element(buf.begin(), buf.begin() + ptrdiff_t(k - 1), buf.end(), std::greater<float>());
    t = buf[k - 1];
    size_t w = 0;
    for (const float v : buf) if (v >= t) buf[w++] = v;
    buf.resize(w);
    if (w > cap / 2) cap *= 2;  // many ties at t: room to go on
  }
  std::nth_element(buf.begin(), buf.begin() + ptrdiff_t(k - 1), buf.end(), std::greater<float>());
  return buf[k - 1];
}

// mx: the row's max (row_max)
void sampling_kept(const float* s, int64_t V, float mx, double invT, int32_t k, float top_p, float min_p, std::vector<int32_t>& kept, std::vector<float>& scratch,
                   CutScratch& cut) {
  kept.clear();
  if (min_p == 0.f && k > 0 && int64_t(k) < V) {
    // top-k of the whole row (no min-p): the k-th largest t of the row is that of its finite tokens when more
    // than k are finite (−inf ranks last), and else at most the smallest finite one: either way the kept
    // tokens are the finite ones ≥ t (ties with the k-th stay)
    const float t = kth_largest(s, size_t(V), size_t(k), scratch);
    for (int64_t v = 0; v < V; v++) if (s[v] >= t && s[v] != -INFINITY) kept.push_back(int32_t(v));
    k = 0;
  } else {
    // min-p: exp(s − max) < m drops (p_v < m·p_max); the max itself always stays
    for (int64_t v = 0; v < V; v++) {
      if (s[v] == -INFINITY) continue;
      if (min_p > 0.f && std::exp((double(s[v]) - double(mx)) * invT) < double(min_p)) continue;
      kept.push_back(int32_t(v));
    }
  }
  if (k > 0 && int64_t(k) < int64_t(kept.size())) {
    scratch.resize(kept.size());
    for (size_t i = 0; i < kept.size(); i++) scratch[i] = s[kept[i]];
    const float t = kth_largest(scratch.data(), scratch.size(), size_t(k), cut.values);  // every token tied with it stays
    size_t w = 0;
    for (size_t i = 0; i < kept.size(); i++) if (s[kept[i]] >= t) kept[w++] = kept[i];
    kept.resize(w);
  }
  if (top_p < 1.f && kept.size() > 1) {
    // top-p: the survivors ascending by (z, v) drop the longest prefix of mass ≤ (1 − p)·total, never the last.
    // Masses q in fixed point (kept_mass_bits), each from exp in double; digit by digit from the top of the
    // order key, the first bucket (ascending) whose mass takes the running sum past the limit holds the
    // boundary; its candidates stay in index order, so at the last digit they are the ties of one value z_c
    // with mass q each, and the first (limit − below)/q of them are dropped.
    const size_t m = kept.size();
    const double scale = std::ldexp(1.0, kept_mass_bits(V));
    cut.key.resize(m);
    cut.mass.resize(m);
    uint64_t total = 0;
    uint32_t key_and = ~0u, key_or = 0;
    for (size_t i = 0; i < m; i++) {
      const float z = s[kept[i]];
      const uint32_t key = cut.key[i] = kept_order_key(z);
      key_and &= key, key_or |= key;
      // q rounded to nearest even (nearbyint, as the CUDA kernel's __double2ull_rn) without a libm call: below
      // 2^52 by adding and taking off 2^52, at and above it q is an integer already
      const double q = std::exp((double(z) - double(mx)) * invT) * scale;
      cut.mass[i] = uint64_t(q >= 0x1p52 ? q : (q + 0x1p52) - 0x1p52);
      total += cut.mass[i];
    }
    const uint64_t limit = uint64_t((1.0 - double(top_p)) * double(total));
    cut.cand.resize(m);
    for (size_t i = 0; i < m; i++) cut.cand[i] = uint32_t(i);
    uint64_t below = 0;
    // the digits every survivor's key shares: each such digit's bucket holds the whole mass, so the walk below
    // would pick it and keep every candidate; the walk starts at the first digit where the keys differ
    const uint32_t same = ~(key_and ^ key_or);
    uint32_t prefix = 0;
    int shift = 24;
    for (; shift > 0 && ((same >> shift) & 255) == 255; shift -= 8) prefix |= key_and & (255u << shift);
    bool found = true;
    for (; shift >= 0 && found; shift -= 8) {
      // four histograms, so that runs of one bucket do not wait on each other's adds
      uint64_t hist4[4][256] = {};
      const size_t nc = cut.cand.size();
      size_t j = 0;
      for (; j + 4 <= nc; j += 4) {
        for (int u = 0; u < 4; u++) {
          const uint32_t i = cut.cand[j + size_t(u)];
          hist4[u][(cut.key[i] >> shift) & 255] += cut.mass[i];
        }
      }
      for (; j < nc; j++) hist4[0][(cut.key[cut.cand[j]] >> shift) & 255] += cut.mass[cut.cand[j]];
      uint64_t hist[256];
      for (int b = 0; b < 256; b++) hist[b] = (hist4[0][b] + hist4[1][b]) + (hist4[2][b] + hist4[3][b]);
      int d = 0;
      for (; d < 256 && below + hist[d] <= limit; d++) below += hist[d];
      if (d == 256) {  // the whole mass within the limit (rounding, p near 0): only the last survivor stays
        found = false;
        break;
      }
      prefix |= uint32_t(d) << shift;
      size_t w = 0;  // compacted without a branch (a survivor is in the bucket about as often as not)
      for (const uint32_t i : cut.cand) {
        cut.cand[w] = i;
        w += ((cut.key[i] >> shift) & 255) == uint32_t(d);
      }
      cut.cand.resize(w);
    }
    KeptCut c;
    if (found) {
      c.key = prefix;
      c.index = kept[cut.cand[size_t((limit - below) / cut.mass[cut.cand[0]])]];  // < the tie count
    } else {
      c.key = kept_order_key(mx);
      for (int32_t v : kept) if (kept_order_key(s[v]) == c.key) c.index = v;
    }
    size_t w = 0;
    for (size_t i = 0; i < m; i++) {
      const uint32_t key = cut.key[i];
      kept[w] = kept[i];
      w += (key > c.key) | ((key == c.key) & (kept[i] >= c.index));
    }
    kept.resize(w);
  }
}

// *mx = row_max of one row (and whether it holds NaN), in the build for this CPU's ISA
template <int L, typename T>
RK_INLINE void kept_max_impl(const T* const& row, const int64_t& V, float* const& mx, bool* const& has_nan) { *mx = row_max<L>(row, V, *has_nan); }
RK_ISA_KERNEL(kept_row_max, kept_max_impl)

template <typename T>
void kept_rows(const KeptLogProbsParams& p, int64_t begin, int64_t end) {
  thread_local std::vector<float> s;
  thread_local std::vector<float> scratch;
  thread_local std::vector<int32_t> kept;
  thread_local CutScratch cut;
  const T* z = static_cast<const T*>(p.logits.data);
  const int64_t V = p.V;
  for (int64_t n = begin; n < end; n++) {
    const T* row = z + n * V;
    float* g = p.grad ? p.grad + n * V : nullptr;
    if (g) std::fill(g, g + V, 0.f);
    const int32_t y = p.targets[n];
    if (y == p.ignore_index) {
      p.logp[n] = p.lse[n] = 0.f;
      continue;
    }
    const float invT = float(1.0 / row_temperature(p.temperatures, p.temperature, n));
    // the raw logits (scaled only as differences from the max, (z_v − z_max)/T, exact for |z|/T up to 1e4): of
    // the kept tokens only where the set is given, of the whole row where it is drawn
    s.resize(size_t(V));
    const int32_t* tok;
    int64_t count;
    bool bad = false;  // a NaN or +inf logit among those read: the row's results are NaN
    if (p.keep_offsets) {
      tok = p.keep_tokens + p.keep_offsets[n];
      count = p.keep_offsets[n + 1] - p.keep_offsets[n];
      s[y] = load(row, y);  // first: where y is kept, the value checked below is the one read
      for (int64_t i = 0; i < count; i++) {
        const float x = s[tok[i]] = load(row, tok[i]);
        bad |= x != x || x * invT == INFINITY;
      }
    } else {
      // NaN, or a max that is +inf over T (then so is the row's largest z/T)
      // (of the row's copy, which every later pass reads: a shared row another thread rewrites meanwhile
      // cannot hold a value above mx)
      if constexpr (std::is_same_v<T, float>) std::memcpy(s.data(), row, size_t(V) * sizeof(float));
      else for (int64_t v = 0; v < V; v++) s[v] = load(row, v);
      bool has_nan = false;
      float mx = -INFINITY;
      kept_row_max<float>(s.data(), V, &mx, &has_nan);
      bad = has_nan || mx * invT == INFINITY;
      if (!bad) sampling_kept(s.data(), V, mx, double(invT), p.top_k[n], p.top_p[n], p.min_p[n], kept, scratch, cut);
      tok = kept.data();
      count = int64_t(kept.size());
    }
    if (bad) {
      p.logp[n] = p.lse[n] = NAN;
      if (g) std::fill(g, g + V, NAN);
      continue;
    }
    float m = -INFINITY;
    bool in_k = false;
    for (int64_t i = 0; i < count; i++) {
      m = s[tok[i]] > m ? s[tok[i]] : m;
      in_k |= tok[i] == y;
    }
    KahanSum S;
    if (m != -INFINITY) for (int64_t i = 0; i < count; i++) S.add(exp_approx((s[tok[i]] - m) * invT));
    const double logS = std::log(double(S.value()));
    const double lse = m == -INFINITY ? -INFINITY : double(m) * invT + logS;
    p.lse[n] = float(lse);
    const float lp = in_k && m != -INFINITY ? float((double(s[y]) - double(m)) * invT - logS) : -INFINITY;
    p.logp[n] = lp;
    const float gl = p.grad_logp.present() ? read(p.grad_logp, n) : 0.f;
    if (!g || gl == 0.f || lp == -INFINITY) continue;
    const float c = float(-logS);  // log p_v = (z_v − z_max)/T + c
    for (int64_t i = 0; i < count; i++) {
      const int32_t v = tok[i];
      const float lq = (s[v] - m) * invT + c;
      g[v] = (v == y ? -gl * std::expm1(lq) : -gl * exp_approx(lq)) * invT;
    }
  }
}

}  // namespace

void kept_log_probs(const KeptLogProbsParams& p) {
  dispatch_dtype(p.logits.dtype, [&]<typename T>() {
    parallel_for(p.N, row_grain(p.V), [&](int64_t b, int64_t e) { kept_rows<T>(p, b, e); });
  });
}

}  // namespace rk
