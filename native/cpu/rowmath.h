// Row primitives of the vocabulary kernels, written as lane-blocked loops that GCC and Clang vectorise
// without -ffast-math: LANES independent accumulators per row, combined at the end in a fixed order.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "rlhf/common.h"

namespace rk {

constexpr int LANES = 16;

// exp(x) in float32 (Cephes expf polynomial; ≤ 2 ulp against std::exp, tested in the parity suite).
// x < −87.3 (e.g. −inf) gives exactly 0, so a −inf logit has probability 0; NaN gives NaN.
inline float exp_approx(float x) {
  const float hi = 88.3762626647949f, lo = -87.3365447505531f;
  const bool under = x < lo;
  float xc = x > hi ? hi : x;
  xc = xc < lo ? lo : xc;
  const float n = (xc * 1.44269504088896341f + 12582912.f) - 12582912.f;  // round to nearest (1.5·2^23)
  const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const int32_t e = (int32_t(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &e, 4);
  const float y = p * scale;
  return under ? 0.f : (x == x ? y : x);
}

// max_v x_v·invT over a row, and whether any element is NaN.
template <typename T>
inline float row_max(const T* x, int64_t V, float invT, bool& has_nan) {
  float m[LANES];
  int32_t nan[LANES];
  for (int l = 0; l < LANES; l++) { m[l] = -INFINITY; nan[l] = 0; }
  int64_t v = 0;
  for (; v + LANES <= V; v += LANES) {
    for (int l = 0; l < LANES; l++) {
      const float s = load(x, v + l) * invT;
      m[l] = s > m[l] ? s : m[l];
      nan[l] |= s != s;
    }
  }
  float mx = -INFINITY;
  int32_t any = 0;
  for (int l = 0; l < LANES; l++) { mx = m[l] > mx ? m[l] : mx; any |= nan[l]; }
  for (; v < V; v++) {
    const float s = load(x, v) * invT;
    mx = s > mx ? s : mx;
    any |= s != s;
  }
  has_nan = any != 0;
  return mx;
}

// Σ_v f(v) with per-lane Kahan compensation, f vectorisable; lanes combined in a fixed order.
template <typename F>
inline float lane_sum(int64_t V, F&& f) {
  float s[LANES], c[LANES];
  for (int l = 0; l < LANES; l++) { s[l] = 0.f; c[l] = 0.f; }
  int64_t v = 0;
  for (; v + LANES <= V; v += LANES) {
    for (int l = 0; l < LANES; l++) {
      const float y = f(v + l) - c[l];
      const float t = s[l] + y;
      c[l] = (t - s[l]) - y;
      s[l] = t;
    }
  }
  KahanSum total;
  for (int l = 0; l < LANES; l++) { total.add(s[l]); total.add(-c[l]); }
  for (; v < V; v++) total.add(f(v));
  return total.value();
}

// lse of a row of x·invT: −inf for an all −inf row, NaN if any element is NaN, +inf if one is +inf.
template <typename T>
inline float row_lse(const T* x, int64_t V, float invT) {
  bool has_nan = false;
  const float m = row_max(x, V, invT, has_nan);
  if (has_nan) return NAN;
  if (m == -INFINITY || m == INFINITY) return m;
  const float sum = lane_sum(V, [&](int64_t v) { return exp_approx(load(x, v) * invT - m); });
  return m + std::log(sum);
}

// Entropy −Σ p log p of a row given its lse, with xlogy semantics (p = 0 contributes 0).
template <typename T>
inline float row_entropy(const T* x, int64_t V, float invT, float lse) {
  if (lse == -INFINITY) return 0.f;
  return 0.f - lane_sum(V, [&](int64_t v) {  // 0 − s, not −s: an empty sum gives +0
    const float lp = load(x, v) * invT - lse;
    const float p = exp_approx(lp);
    return p > 0.f ? p * lp : 0.f;
  });
}

}  // namespace rk
