// CPU vocabulary kernels (DESIGN §1.1, §1.2); math in native/include/rlhf/vocab.h and src/reference/vocab.ts.
// Rows are spread over the thread pool; each row is reduced with rowmath.h's lane-blocked loops.
#include "rlhf/vocab.h"

#include <algorithm>
#include <vector>

#include "parallel.h"
#include "rowmath.h"

namespace rk {
namespace {

// rows per task: enough elements that a task outweighs its scheduling
int64_t row_grain(int64_t V) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, V)); }

template <typename T>
RK_ROW_KERNEL void log_probs_rows(const LogProbsParams& p, int64_t begin, int64_t end) {
  const T* z = static_cast<const T*>(p.logits.data);
  const float invT = 1.f / p.temperature;
  for (int64_t n = begin; n < end; n++) {
    const T* row = z + n * p.V;
    const float l = row_lse(row, p.V, invT);
    p.lse[n] = l;
    const int32_t y = p.targets[n];
    p.logp[n] = y == p.ignore_index ? 0.f : (l == -INFINITY ? -INFINITY : load(row, y) * invT - l);
    if (p.entropy) p.entropy[n] = row_entropy(row, p.V, invT, l);
  }
}

template <typename T>
RK_ROW_KERNEL void backward_rows(const LogProbsBackwardParams& p, int64_t begin, int64_t end) {
  const T* z = static_cast<const T*>(p.logits.data);
  const float invT = 1.f / p.temperature;
  const int64_t V = p.V;
  for (int64_t n = begin; n < end; n++) {
    const T* row = z + n * V;
    float* g = p.grad + n * V;
    const float l = read(p.lse, n);
    const int32_t y = p.targets[n];
    const float gl = (!p.grad_logp.present() || y == p.ignore_index) ? 0.f : read(p.grad_logp, n);
    const float gh = p.grad_entropy.present() ? read(p.grad_entropy, n) : 0.f;
    if (l == -INFINITY || (gl == 0.f && gh == 0.f)) {
      std::fill(g, g + V, 0.f);
      continue;
    }
    const float h = gh == 0.f ? 0.f : (p.entropy.present() ? read(p.entropy, n) : row_entropy(row, V, invT, l));
    // d = [−g_logp·p − g_H·p·(log p + H)] / T; the true-class term is then formed in float32 as one expression
    row_map(row, V, g, [&](auto z) {
      const auto lp = z * invT - l;
      const auto q = exp_approx(lp);
      return (-gl * q - xlogy_term(q, gh * (lp + h))) * invT;
    });
    if (y != p.ignore_index && y >= 0 && y < V) {
      const float lp = load(row, y) * invT - l;
      const float q = exp_approx(lp);
      const float ent = q > 0.f ? gh * q * (lp + h) : 0.f;
      g[y] = (gl * (1.f - q) - ent) * invT;
    }
  }
}

template <typename T>
RK_ROW_KERNEL void cross_entropy_rows(const CrossEntropyParams& p, const float* cw, float W, float scale, int64_t begin, int64_t end) {
  const T* z = static_cast<const T*>(p.logits.data);
  const int64_t V = p.V;
  const float eps = p.label_smoothing;
  for (int64_t n = begin; n < end; n++) {
    const T* row = z + n * V;
    const float l = row_lse(row, V, 1.f);
    p.lse[n] = l;
    const int32_t y = p.targets[n];
    float* g = p.grad ? p.grad + n * V : nullptr;
    if (y == p.ignore_index || l == -INFINITY) {
      p.losses[n] = y == p.ignore_index ? 0.f : INFINITY;
      if (g) std::fill(g, g + V, 0.f);
      continue;
    }
    const float wy = cw ? cw[y] : 1.f;
    const float tw = p.token_weights.present() ? read(p.token_weights, n) : 1.f;
    float loss = (1.f - eps) * wy * (l - load(row, y));
    if (eps != 0.f) {
      // Σ_v w_v (lse − z_v); a −inf logit makes it +inf, as in PyTorch
      const float smooth = cw ? row_sum2(row, cw, V, [&](auto z, auto w) { return w * (l - z); })
                              : row_sum(row, V, [&](auto z) { return l - z; });
      loss += eps / float(V) * smooth;
    }
    if (p.z_loss != 0.f) loss += p.z_loss * l * l;
    p.losses[n] = tw * loss;
    if (!g) continue;
    const float gs = scale * tw;
    const float cp = (1.f - eps) * wy + eps * W / float(V) + 2.f * p.z_loss * l;
    const float e = eps / float(V);
    if (cw) row_map2(row, cw, V, g, [&](auto z, auto w) { return gs * (cp * exp_approx(z - l) - e * w); });
    else row_map(row, V, g, [&](auto z) { return gs * (cp * exp_approx(z - l) - e); });
    // the true-class gradient, formed in float32 as one expression (no cancellation against a stored value)
    const float py = exp_approx(load(row, y) - l);
    g[y] = gs * (cp * py - (1.f - eps) * wy - e * (cw ? cw[y] : 1.f));
  }
}

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
