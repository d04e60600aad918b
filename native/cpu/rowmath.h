// Row primitives of the vocabulary kernels. Each row is processed 8 floats at a time with GCC/Clang
// vector extensions, sums blocked and compensated (row_sum2), then a scalar tail; the order of every sum is
// fixed by the row length alone.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "rlhf/common.h"

#define RK_INLINE inline __attribute__((always_inline))

// The row kernels are built twice on x86-64 Linux with GCC, for x86-64-v3 (AVX2 + FMA) and for the
// baseline, and the dynamic loader picks the one this CPU runs. `flatten` inlines every call inside each
// clone, so no helper compiled for one ISA is ever called from code built for the other.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && !defined(RK_NO_MULTIVERSION)
#define RK_ROW_KERNEL __attribute__((target_clones("arch=x86-64-v3", "default"), flatten))
#else
#define RK_ROW_KERNEL __attribute__((flatten))
#endif

namespace rk {

constexpr int W = 8;
typedef float vf __attribute__((vector_size(32)));
typedef int32_t vi __attribute__((vector_size(32)));

// exp(x) in float32: Cephes' expf (range reduction by ln 2, degree-6 polynomial), ≤ 2 ulp from std::exp
// (tested against it in test/parity.test.ts through every op). x < −87.3 (−inf included) gives exactly 0,
// so a −inf logit has probability 0; NaN gives NaN. The same code serves 8 lanes and one.
template <typename V, typename I>
RK_INLINE V exp_body(V x, I& e) {
  const float hi = 88.3762626647949f, lo = -87.3365447505531f;
  V xc = x > hi ? hi : x;
  xc = xc < lo ? lo : xc;
  const V n = (xc * 1.44269504088896341f + 12582912.f) - 12582912.f;  // round to nearest (1.5·2^23)
  const V r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;
  V p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  if constexpr (sizeof(V) == sizeof(float)) e = (int32_t(n) + 127) << 23;
  else e = (__builtin_convertvector(n, I) + 127) << 23;
  return p;
}

// (A NaN input needs no select of its own: it makes r, and so p and the result, NaN.)
RK_INLINE float exp_approx(float x) {
  int32_t e;
  const float p = exp_body(x, e);
  float scale;
  std::memcpy(&scale, &e, 4);
  return x < -87.3365447505531f ? 0.f : p * scale;
}

RK_INLINE vf exp_approx(vf x) {
  vi e;
  const vf p = exp_body(x, e);
  return x < -87.3365447505531f ? 0.f : p * (vf)e;
}

template <typename T>
RK_INLINE vf vload(const T* p, int64_t i) {
  vf r;
  for (int l = 0; l < W; l++) r[l] = load(p, i + l);
  return r;
}

RK_INLINE void vstore(float* p, int64_t i, vf x) { std::memcpy(p + i, &x, sizeof(vf)); }

// max_v x_v over a row, and whether any element is NaN.
template <typename T>
RK_INLINE float row_max(const T* x, int64_t V, bool& has_nan) {
  vf m0 = vf{} - INFINITY, m1 = m0;
  vi nan = {};
  int64_t v = 0;
  for (; v + 2 * W <= V; v += 2 * W) {
    const vf a = vload(x, v), b = vload(x, v + W);
    m0 = a > m0 ? a : m0;
    m1 = b > m1 ? b : m1;
    nan |= (a != a) | (b != b);
  }
  float mx = -INFINITY;
  int32_t any = 0;
  for (int l = 0; l < W; l++) {
    mx = m0[l] > mx ? m0[l] : mx;
    mx = m1[l] > mx ? m1[l] : mx;
    any |= nan[l];
  }
  for (; v < V; v++) {
    const float s = load(x, v);
    mx = s > mx ? s : mx;
    any |= s != s;
  }
  has_nan = any != 0;
  return mx;
}

// Σ_v f(x_v, y_v) over two rows (pass y = x for one), f generic over vf and float. Blocked summation:
// plain float32 sums within a block of BLOCK elements (8 lanes × 2 accumulators, ≤ 16 terms each), then
// each block's partial sum added to the row total with Kahan–Babuška compensation.
constexpr int64_t BLOCK = 256;
template <typename T, typename U, typename F>
RK_INLINE float row_sum2(const T* x, const U* y, int64_t V, F&& f) {
  KahanSum total;
  int64_t v = 0;
  for (; v + BLOCK <= V; v += BLOCK) {
    vf s0 = f(vload(x, v), vload(y, v)), s1 = f(vload(x, v + W), vload(y, v + W));
    for (int64_t i = v + 2 * W; i < v + BLOCK; i += 2 * W) {
      s0 += f(vload(x, i), vload(y, i));
      s1 += f(vload(x, i + W), vload(y, i + W));
    }
    const vf s = s0 + s1;
    float b = 0.f;
    for (int l = 0; l < W; l++) b += s[l];
    total.add(b);
  }
  for (; v < V; v++) total.add(f(load(x, v), load(y, v)));
  return total.value();
}

template <typename T, typename F>
RK_INLINE float row_sum(const T* x, int64_t V, F&& f) {
  return row_sum2(x, x, V, [&](auto a, auto) { return f(a); });
}

// out_v = f(x_v, y_v) over two rows (pass y = x for one).
template <typename T, typename U, typename F>
RK_INLINE void row_map2(const T* x, const U* y, int64_t V, float* out, F&& f) {
  int64_t v = 0;
  for (; v + W <= V; v += W) vstore(out, v, f(vload(x, v), vload(y, v)));
  for (; v < V; v++) out[v] = f(load(x, v), load(y, v));
}

template <typename T, typename F>
RK_INLINE void row_map(const T* x, int64_t V, float* out, F&& f) {
  row_map2(x, x, V, out, [&](auto a, auto) { return f(a); });
}

// xlogy-safe p·t: 0 where p = 0 (a −inf logit), whatever t is; a NaN p (a row holding NaN) stays NaN.
template <typename V>
RK_INLINE V xlogy_term(V p, V t) { return p != 0.f ? p * t : 0.f; }

// A row's log-softmax at temperature T in shifted form: log p_v = (x_v − m)·invT + c, with m the largest
// logit (T > 0 keeps the argmax) and c = m/T − lse. Formed from x − m, never as x·invT − lse, log p keeps
// its rounding relative to itself: x·invT and lse would each carry |x|/T·2⁻²⁴, 6e-4 at |x|/T = 1e4.
//   NaN anywhere: lse, m and c NaN, so every log p and p is NaN (as PyTorch's log_softmax).
//   all −inf:     lse −inf; m 0 and c −inf, so every log p is −inf and p 0.
//   +inf, no NaN: lse +inf; m +inf and c 0, so log p is NaN at a +inf and −inf elsewhere (x·invT − lse).
struct RowSoftmax {
  float m, c, invT;
  double lse;  // in double: lse_p − lse_q (log p − log q) would otherwise carry each one's float32 rounding
  template <typename V>
  RK_INLINE V logp(V x) const { return (x - m) * invT + c; }
};

// From the row alone, or (given_lse) from the lse the caller passes, as the backward does: c = m/T − lse.
template <typename T>
RK_INLINE RowSoftmax row_softmax(const T* x, int64_t V, double temperature, const float* given_lse = nullptr) {
  const float invT = float(1.0 / temperature);
  bool has_nan = false;
  const float m = row_max(x, V, has_nan);
  if (has_nan) return {NAN, NAN, invT, NAN};
  if (m == -INFINITY) return {0.f, -INFINITY, invT, -INFINITY};
  if (m == INFINITY) return {INFINITY, 0.f, invT, INFINITY};
  if (given_lse) return {m, float(double(m) / temperature - double(*given_lse)), invT, double(*given_lse)};
  const double s = std::log(double(row_sum(x, V, [&](auto z) { return exp_approx((z - m) * invT); })));
  return {m, float(-s), invT, double(m) / temperature + s};
}

// Entropy −Σ p log p of a row, with xlogy semantics: 0 for an all −inf row, NaN for a row holding NaN.
template <typename T>
RK_INLINE float row_entropy(const T* x, int64_t V, const RowSoftmax& r) {
  if (r.lse == -INFINITY) return 0.f;
  return 0.f - row_sum(x, V, [&](auto z) {  // 0 − s, not −s: an empty sum gives +0
    const auto lp = r.logp(z);
    return xlogy_term(exp_approx(lp), lp);
  });
}

}  // namespace rk
