// Row primitives of the vocabulary kernels. Each row is processed L floats at a time with GCC/Clang
// vector extensions (L = 16, 8 or 4: the widest vectors the CPU runs natively), sums blocked and
// compensated (row_sum), then a scalar tail; the order of every sum is fixed by the row length and L.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "parallel.h"
#include "rlhf/aggregate.h"
#include "rlhf/common.h"
#include "scratch.h"

#define RK_INLINE inline __attribute__((always_inline))

namespace rk {

// The row kernels are written once as templates on the lane count L (`impl<L, T>(args…)`) and built for
// three ISAs on x86-64 Linux with GCC: x86-64-v4 (AVX-512, L = 16), x86-64-v3 (AVX2 + FMA, L = 8) and the
// baseline (SSE2, L = 4: 16-byte vectors, which SSE2 runs natively, instead of wider ones lowered piecewise).
// RK_ISA_KERNEL(name, impl) defines name<T>(args…) calling the build for this CPU. `flatten` inlines every
// call inside each build, so no helper compiled for one ISA is ever called from code built for another.
// RLHF_KERNELS_ISA = baseline | x86-64-v3 caps the choice (to test the narrower builds on a wider CPU).
enum class Isa { baseline = 0, v3 = 1, v4 = 2 };
Isa host_isa();
const char* isa_name(Isa isa);

//
// Token kernels whose lanes select on comparisons are written apart, in a header of lane code included twice:
// as plain code, and between RK_V4_BEGIN and RK_V4_END into a namespace of its own, compiled for x86-64-v4.
// RK_ISA_KERNEL_V4(name, impl_v4, impl) builds the v4 kernel from the latter. (Code compiled for the baseline
// and inlined into a v4 function has had its selects folded for the baseline first; GCC 12 then lowers 16-lane
// selects lane by lane, 3-5x slower than 8 lanes, where code compiled for v4 keeps mask selects.)
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && !defined(RK_NO_MULTIVERSION)
#define RK_MULTIVERSION 1
#define RK_V4_BEGIN _Pragma("GCC push_options") _Pragma("GCC target(\"arch=x86-64-v4\")")
#define RK_V4_END _Pragma("GCC pop_options")
#define RK_ISA_KERNEL_V4(name, impl_v4, impl)                                                                  \
  template <typename T, typename... A>                                                                       \
  __attribute__((target("arch=x86-64-v4"), flatten, noinline)) void name##_v4(const A&... a) { impl_v4<16, T>(a...); } \
  template <typename T, typename... A>                                                                       \
  __attribute__((target("arch=x86-64-v3"), flatten, noinline)) void name##_v3(const A&... a) { impl<8, T>(a...); }  \
  template <typename T, typename... A>                                                                       \
  __attribute__((flatten, noinline)) void name##_base(const A&... a) { impl<4, T>(a...); }                    \
  template <typename T, typename... A>                                                                       \
  void name(const A&... a) {                                                                                 \
    switch (host_isa()) {                                                                                    \
      case Isa::v4: return name##_v4<T>(a...);                                                               \
      case Isa::v3: return name##_v3<T>(a...);                                                               \
      default: return name##_base<T>(a...);                                                                  \
    }                                                                                                        \
  }
#define RK_ISA_KERNEL(name, impl) RK_ISA_KERNEL_V4(name, impl, impl)
#else
#define RK_MULTIVERSION 0
#define RK_ISA_KERNEL(name, impl) \
  template <typename T, typename... A> __attribute__((flatten)) void name(const A&... a) { impl<8, T>(a...); }
#define RK_ISA_KERNEL_V4(name, impl_v4, impl) RK_ISA_KERNEL(name, impl)
#endif

// L float lanes, and the int32 lanes of the same width
template <int L>
struct Lanes {
  typedef float f __attribute__((vector_size(4 * L)));
  typedef int32_t i __attribute__((vector_size(4 * L)));
};

// exp(x) in float32: Cephes' expf (range reduction by ln 2, degree-6 polynomial), ≤ 2 ulp from std::exp
// (tested against it in test/parity.test.ts through every op). x < −87.3 (−inf included) gives exactly 0,
// so a −inf logit has probability 0; NaN gives NaN. The same code serves L lanes and one.
// exp_poly: the polynomial and the exponent bits at x within the range (no clamps); exp_body clamps first.
template <typename V, typename I>
RK_INLINE V exp_poly(V x, I& e) {
  const V n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;  // round to nearest (1.5·2^23)
  const V r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
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

template <typename V, typename I>
RK_INLINE V exp_body(V x, I& e) {
  const float hi = 88.3762626647949f, lo = -87.3365447505531f;
  V xc = x > hi ? hi : x;
  xc = xc < lo ? lo : xc;
  return exp_poly(xc, e);
}

// (A NaN input needs no select of its own: it makes r, and so p and the result, NaN.)
RK_INLINE float exp_approx(float x) {
  int32_t e;
  const float p = exp_body(x, e);
  float scale;
  std::memcpy(&scale, &e, 4);
  return x < -87.3365447505531f ? 0.f : p * scale;
}

template <typename V>
RK_INLINE V exp_approx(V x) {
  decltype(x < x) e;  // the int32 lanes of V
  const V p = exp_body(x, e);
  return x < -87.3365447505531f ? 0.f : p * (V)e;
}

// exp_approx(x) of x ≤ 0 (or −inf), as L lanes, without the range clamps: below −87.3 the result is the select's
// 0 whatever the polynomial gave (−inf too: its NaN is dropped), and above 0 nothing comes. Bit for bit
// exp_approx there, 4 instructions a vector fewer.
template <typename V>
RK_INLINE V exp_nonpos(V x) {
  decltype(x < x) e;  // the int32 lanes of V
  const V p = exp_poly(x, e);
  return x < -87.3365447505531f ? 0.f : p * (V)e;
}

// L elements from p + i as float32: one vector load for float; bf16 widened as a vector (bits << 16); the
// other dtypes element by element.
template <int L, typename T>
RK_INLINE typename Lanes<L>::f vload(const T* p, int64_t i) {
  typename Lanes<L>::f r;
  if constexpr (std::is_same_v<T, float>) {
    std::memcpy(&r, p + i, sizeof r);
  } else if constexpr (std::is_same_v<T, bf16>) {
    typedef uint16_t h __attribute__((vector_size(2 * L)));
    h bits;
    std::memcpy(&bits, p + i, sizeof bits);
    const typename Lanes<L>::i u = __builtin_convertvector(bits, typename Lanes<L>::i) << 16;
    std::memcpy(&r, &u, sizeof r);
  } else {
    for (int l = 0; l < L; l++) r[l] = load(p, i + l);
  }
  return r;
}

template <typename V>
RK_INLINE void vstore(float* p, int64_t i, V x) { std::memcpy(p + i, &x, sizeof(V)); }

// max_v x_v over a row, and whether any element is NaN. The vector loop only flags a row holding NaN or ±inf
// (x − x is NaN for both: an add, where a NaN comparison was scalarised in the AVX-512 build); such a row is
// then scanned for NaN.
template <int L, typename T>
RK_INLINE float row_max(const T* x, int64_t V, bool& has_nan) {
  using vf = typename Lanes<L>::f;
  vf m0 = vf{} - INFINITY, m1 = m0, flag = {};
  int64_t v = 0;
  for (; v + 2 * L <= V; v += 2 * L) {
    const vf a = vload<L>(x, v), b = vload<L>(x, v + L);
    m0 = a > m0 ? a : m0;
    m1 = b > m1 ? b : m1;
    flag += (a - a) + (b - b);
  }
  float mx = -INFINITY, f = 0.f;
  for (int l = 0; l < L; l++) {
    mx = m0[l] > mx ? m0[l] : mx;
    mx = m1[l] > mx ? m1[l] : mx;
    f += flag[l];
  }
  int64_t scan = f == f ? v : 0;  // from 0 when a lane was flagged
  for (; v < V; v++) {
    const float s = load(x, v);
    mx = s > mx ? s : mx;
  }
  has_nan = false;
  for (; scan < V; scan++) {
    const float s = load(x, scan);
    has_nan |= s != s;
  }
  return mx;
}

// Σ_v f(x_v, y_v, …) over one or more rows, f generic over vectors and float. Blocked summation: plain
// float32 sums within a block of BLOCK elements (L lanes × 2 accumulators), then each block's partial sum
// added to the row total with Kahan–Babuška compensation.
constexpr int64_t BLOCK = 256;
template <int L, typename F, typename... P>
RK_INLINE float row_sum(int64_t V, F&& f, const P*... x) {
  KahanSum total;
  int64_t v = 0;
  for (; v + BLOCK <= V; v += BLOCK) {
    auto s0 = f(vload<L>(x, v)...), s1 = f(vload<L>(x, v + L)...);
    for (int64_t i = v + 2 * L; i < v + BLOCK; i += 2 * L) {
      s0 += f(vload<L>(x, i)...);
      s1 += f(vload<L>(x, i + L)...);
    }
    const auto s = s0 + s1;
    float b = 0.f;
    for (int l = 0; l < L; l++) b += s[l];
    total.add(b);
  }
  for (; v < V; v++) total.add(f(load(x, v)...));
  return total.value();
}

// out_v = f(x_v, y_v, …) over one or more rows (out may be one of them: element v is read before it is written).
template <int L, typename F, typename... P>
RK_INLINE void row_map(int64_t V, float* out, F&& f, const P*... x) {
  int64_t v = 0;
  for (; v + L <= V; v += L) vstore(out, v, f(vload<L>(x, v)...));
  for (; v < V; v++) out[v] = f(load(x, v)...);
}

// xlogy-safe p·t: 0 where p = 0 (a −inf logit), whatever t is; a NaN p (a row holding NaN) stays NaN.
template <typename V>
RK_INLINE V xlogy_term(V p, V t) { return p != 0.f ? p * t : 0.f; }

// Prefetch hints for the row after this one, issued from a row's exp pass: the bytes of `x` (the next row's
// input) and of `out` (its output) at the offsets the pass is at, so the next row's max pass reads it from L2
// (the exp pass computes while the memory streams in) and its first stores do not wait for their lines.
template <typename T>
struct RowAhead {
  const T* x = nullptr;
  float* out = nullptr;
};

// prefetch the bytes of the n elements of `ahead` from i (for reading; for writing into `out`)
template <int64_t n, typename T>
RK_INLINE void prefetch_ahead(const RowAhead<T>& ahead, int64_t i) {
  constexpr int64_t line = 64;
  if (ahead.x) for (int64_t b = 0; b < n * int64_t(sizeof(T)); b += line) __builtin_prefetch(reinterpret_cast<const char*>(ahead.x + i) + b, 0, 3);
  if (ahead.out) for (int64_t b = 0; b < n * int64_t(sizeof(float)); b += line) __builtin_prefetch(reinterpret_cast<const char*>(ahead.out + i) + b, 1, 3);
}

// e_v = exp((x_v − m)·invT) of a row with a finite max m, written to out when out is given, with
// S = Σ_v e_v, (Entropy) U = Σ_v xlogy(e_v, (x_v − m)·invT) and (Squares) Q = Σ_v e_v²: one exp per element.
// Sums blocked as row_sum. `ahead`: the next row, prefetched as the pass goes.
template <int L, bool Entropy, bool Squares = false, typename T>
RK_INLINE void row_exps_ahead(const T* x, int64_t V, float m, float invT, float* out, double& S, float& U, float* Q, const RowAhead<T>& ahead) {
  // The maxima (e = 1) are counted apart from the others' sum, and the two added in double: in float32 the
  // others' small terms would be lost next to the 1s, and with them 1 − p of a confident row.
  // Each block's partial sums are added to per-lane row totals with TwoSum compensation, the lanes kept apart
  // until the row's end and then summed in double (a horizontal sum per block cost as much as the block's exps).
  using vf = typename Lanes<L>::f;
  const vf zero = {}, one = zero + 1.f;
  auto step = [&](auto z, int64_t i, auto& s, auto& u, auto& t, auto& q) {
    const auto d = (z - m) * invT;
    const auto e = exp_nonpos(d);  // d ≤ 0
    if (out) vstore(out, i, e);
    const auto top = z == m;
    s = top ? s : s + e;  // masked adds (the same sums as adding 0)
    t = top ? t + one : t;
    if constexpr (Entropy) u += xlogy_term(e, d);
    if constexpr (Squares) q += e * e;
  };
  auto two_sum = [](vf& sum, vf& c, vf x) {  // sum + c += x, the rounding error of sum + x kept in c
    const vf t = sum + x, z = t - sum;
    c += (sum - (t - z)) + (x - z);
    sum = t;
  };
  vf sS = zero, cS = zero, sU = zero, cU = zero, sQ = zero, cQ = zero, tt = zero;
  double ties = 0;
  int64_t v = 0, blocks = 0;
  for (; v + BLOCK <= V; v += BLOCK) {
    vf s0 = zero, s1 = zero, u0 = zero, u1 = zero, t0 = zero, t1 = zero, q0 = zero, q1 = zero;
    for (int64_t i = v; i < v + BLOCK; i += 2 * L) {
      prefetch_ahead<2 * L>(ahead, i);
      step(vload<L>(x, i), i, s0, u0, t0, q0);
      step(vload<L>(x, i + L), i + L, s1, u1, t1, q1);
    }
    two_sum(sS, cS, s0 + s1);
    if constexpr (Entropy) two_sum(sU, cU, u0 + u1);
    if constexpr (Squares) two_sum(sQ, cQ, q0 + q1);
    tt += t0 + t1;
    if (++blocks % 4096 == 0) {  // the tie counts into double while each lane's stays exact (≤ 2^16 < 2^24)
      for (int l = 0; l < L; l++) ties += tt[l];
      tt = zero;
    }
  }
  double s = 0, u = 0, q = 0;
  for (int l = 0; l < L; l++) {
    ties += tt[l];
    s += double(sS[l]) + double(cS[l]);
    u += double(sU[l]) + double(cU[l]);
    q += double(sQ[l]) + double(cQ[l]);
  }
  for (; v < V; v++) {  // the tail, in double
    const float z = load(x, v), d = (z - m) * invT, e = exp_approx(d);
    if (out) out[v] = e;
    if (z == m) ties += 1;
    else s += e;
    if constexpr (Entropy) u += xlogy_term(e, d);
    if constexpr (Squares) q += double(e) * double(e);
  }
  S = ties + s;
  U = float(u);
  if constexpr (Squares) *Q = float(q);
}
template <int L, bool Entropy, bool Squares = false, typename T>
RK_INLINE void row_exps(const T* x, int64_t V, float m, float invT, float* out, double& S, float& U, float* Q = nullptr) {
  row_exps_ahead<L, Entropy, Squares>(x, V, m, invT, out, S, U, Q, RowAhead<T>{});
}

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
  // whether the lse is finite: then row_softmax wrote the row's exps e_v = p_v·S when asked, and p_v = e_v/S
  bool finite() const { return std::isfinite(lse); }
};

// From the row alone, or (given_lse) from the lse the caller passes, as the backward does: c = m/T − lse.
// Without given_lse, in the exp pass of the lse itself: `exps` (when given, and the lse finite) receives each
// e_v = exp((x_v − m)·invT) and `inv_sum` 1/Σ e_v, so p_v = e_v·inv_sum; `entropy` (when given) receives
// −Σ p log p = log S − Σ e_v (x_v − m)/T / S (0 for an all −inf row, NaN for a row holding NaN or +inf);
// `sum_sq` (when given) Σ p² = Σ e_v² / S² (0 for an all −inf row, NaN for a row holding NaN or +inf).
// row_softmax_ahead: the same, its exp pass prefetching the next row (RowAhead).
template <int L, typename T>
RK_INLINE RowSoftmax row_softmax_ahead(const RowAhead<T>& ahead, const T* x, int64_t V, double temperature, const float* given_lse = nullptr,
                                       float* exps = nullptr, float* inv_sum = nullptr, float* entropy = nullptr, float* sum_sq = nullptr) {
  const float invT = float(1.0 / temperature);
  bool has_nan = false;
  const float m = row_max<L>(x, V, has_nan);
  if (has_nan || m == INFINITY) {
    if (entropy) *entropy = NAN;
    if (sum_sq) *sum_sq = NAN;
    return has_nan ? RowSoftmax{NAN, NAN, invT, NAN} : RowSoftmax{INFINITY, 0.f, invT, INFINITY};
  }
  if (m == -INFINITY) {
    if (entropy) *entropy = 0.f;
    if (sum_sq) *sum_sq = 0.f;
    return {0.f, -INFINITY, invT, -INFINITY};
  }
  if (given_lse) return {m, float(double(m) / temperature - double(*given_lse)), invT, double(*given_lse)};
  double S;
  float U, Q = 0.f;
  if (sum_sq) {
    if (entropy) row_exps_ahead<L, true, true>(x, V, m, invT, exps, S, U, &Q, ahead);
    else row_exps_ahead<L, false, true>(x, V, m, invT, exps, S, U, &Q, ahead);
  } else if (entropy) {
    row_exps_ahead<L, true>(x, V, m, invT, exps, S, U, nullptr, ahead);
  } else {
    row_exps_ahead<L, false>(x, V, m, invT, exps, S, U, nullptr, ahead);
  }
  const double s = std::log(S);
  if (entropy) *entropy = float(s - double(U) / double(S));
  if (sum_sq) *sum_sq = float(double(Q) / (S * S));
  if (inv_sum) *inv_sum = float(1.0 / double(S));
  return {m, float(-s), invT, double(m) / temperature + s};
}
template <int L, typename T>
RK_INLINE RowSoftmax row_softmax(const T* x, int64_t V, double temperature, const float* given_lse = nullptr,
                                 float* exps = nullptr, float* inv_sum = nullptr, float* entropy = nullptr, float* sum_sq = nullptr) {
  return row_softmax_ahead<L>(RowAhead<T>{}, x, V, temperature, given_lse, exps, inv_sum, entropy, sum_sq);
}

// p_v (log p_v − log q_v) with xlogy semantics, and +inf wherever q_v = 0 under a finite p logit: float32
// may round such a p_v to 0, but the KL is +inf however small p_v is.
template <typename V>
RK_INLINE V kl_term(V p, V lr) { return lr == INFINITY ? lr : xlogy_term(p, lr); }

// log p_v − log q_v − k of two rows at one temperature, given c = c_p − c_q − k:
// ((x_v − m_p) − (y_v − m_q))·invT + c. Each shift is exact (Sterbenz) where its row has mass, so the
// difference keeps its rounding relative to itself whatever |z|/T is; (x − y)·invT − (lse_p − lse_q) would
// cancel two terms of size |z|/T.
template <typename V>
RK_INLINE V log_ratio(const RowSoftmax& p, const RowSoftmax& q, V x, V y, float c) {
  return ((x - p.m) - (y - q.m)) * p.invT + c;
}

// Σ p² of a row (the backward's recomputation): 0 for an all −inf row, NaN for a row holding NaN.
template <int L, typename T>
RK_INLINE float row_sum_prob_sq(const T* x, int64_t V, const RowSoftmax& r) {
  if (r.lse == -INFINITY) return 0.f;
  return row_sum<L>(V, [&](auto z) {
    const auto q = exp_approx(r.logp(z));
    return q * q;
  }, x);
}

// The first index of the largest element of a row whose max is m (found by row_max; a row without NaN).
template <typename T>
inline int64_t row_argmax(const T* x, int64_t V, float m) {
  for (int64_t v = 0; v < V; v++) if (load(x, v) == m) return v;
  return 0;  // not reached: m is an element
}

// row_argmax, 4L elements at a time: the vector compares find the block of the first maximum, row_argmax the
// element in it. (The compares as selects of float lanes: a compare's int32 mask lanes were scalarised in the
// AVX-512 build.)
template <int L, typename T>
RK_INLINE int64_t row_argmax_lanes(const T* x, int64_t V, float m) {
  using vf = typename Lanes<L>::f;
  const vf zero = {}, one = zero + 1.f;
  int64_t v = 0;
  for (; v + 4 * L <= V; v += 4 * L) {
    const vf a = vload<L>(x, v), b = vload<L>(x, v + L), c = vload<L>(x, v + 2 * L), d = vload<L>(x, v + 3 * L);
    const vf hit = ((a == m ? one : zero) + (b == m ? one : zero)) + ((c == m ? one : zero) + (d == m ? one : zero));
    uint64_t w[sizeof(vf) / 8], any = 0;
    std::memcpy(w, &hit, sizeof hit);
    for (uint64_t b : w) any |= b;
    if (any) break;
  }
  // v = V only when no element equals m any more: a shared row another thread rewrote since row_max; then
  // any index in the row will do, and none past it is read
  return v < V ? v + row_argmax(x + v, V - v, m) : 0;
}

// Entropy −Σ p log p of a row, with xlogy semantics: 0 for an all −inf row, NaN for a row holding NaN.
template <int L, typename T>
RK_INLINE float row_entropy(const T* x, int64_t V, const RowSoftmax& r) {
  if (r.lse == -INFINITY) return 0.f;
  return 0.f - row_sum<L>(V, [&](auto z) {  // 0 − s, not −s: an empty sum gives +0
    const auto lp = r.logp(z);
    return xlogy_term(exp_approx(lp), lp);
  }, x);
}

// float32 → bfloat16 / float16 bits, to nearest even, exactly as src/dtypes.ts floatToBf16 / floatToF16
// (NaN: bf16 keeps the top payload bits and sets the quiet bit; f16 is 0x7e00 with the sign; f16 overflow
// is ±inf): the 16-bit gradients of gradDtype 'input'.
inline uint16_t bf16_bits(float v) {
  uint32_t x;
  std::memcpy(&x, &v, 4);
  if ((x & 0x7f800000u) == 0x7f800000u && (x & 0x7fffffu) != 0) return uint16_t((x >> 16) | 0x40u);
  return uint16_t((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}
inline uint16_t f16_bits(float v) {
  uint32_t x;
  std::memcpy(&x, &v, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const int32_t exp = int32_t((x >> 23) & 0xffu);
  uint32_t frac = x & 0x7fffffu;
  if (exp == 0xff) return uint16_t(sign | 0x7c00u | (frac ? 0x200u : 0u));
  int32_t e = exp - 127 + 15;
  if (e >= 31) return uint16_t(sign | 0x7c00u);
  if (e <= 0) {
    if (e < -10) return uint16_t(sign);
    frac |= 0x800000u;
    const int32_t shift = 14 - e;
    const uint32_t half = 1u << (shift - 1);
    uint32_t m = frac >> shift;
    const uint32_t rest = frac & ((1u << shift) - 1u);
    if (rest > half || (rest == half && (m & 1u))) m++;
    return uint16_t(sign | m);
  }
  uint32_t m = frac >> 13;
  const uint32_t rest = frac & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (m & 1u))) {
    m++;
    if (m == 0x400u) {
      m = 0;
      e++;
      if (e >= 31) return uint16_t(sign | 0x7c00u);
    }
  }
  return uint16_t(sign | (uint32_t(e) << 10) | m);
}

// Where a kernel writes row n of a [rows, V] logits gradient: the float32 output itself, or, for a 16-bit
// output (gradDtype 'input'), a per-thread float32 row (`stage`) that is rounded into it when this object
// goes out of scope at the end of the row's iteration (every `continue` included). The float32 values are
// the same either way, so a 16-bit gradient is the float32 one rounded once. null when neither is made.
class GradRow {
 public:
  GradRow(float* f32, uint16_t* out16, DType dtype, int64_t n, int64_t V, std::vector<float>& stage)
      : out16_(f32 == nullptr && out16 != nullptr ? out16 + n * V : nullptr), V_(V), bf16_(dtype == DType::bf16) {
    if (f32) {
      g_ = f32 + n * V;
    } else if (out16_) {
      if (stage.size() < size_t(V)) stage.resize(size_t(V));
      g_ = stage.data();
    }
  }
  GradRow(const GradRow&) = delete;
  GradRow& operator=(const GradRow&) = delete;
  ~GradRow() {
    if (out16_ == nullptr) return;
    if (bf16_) for (int64_t v = 0; v < V_; v++) out16_[v] = bf16_bits(g_[v]);
    else for (int64_t v = 0; v < V_; v++) out16_[v] = f16_bits(g_[v]);
  }
  float* get() const { return g_; }

 private:
  float* g_ = nullptr;
  uint16_t* out16_;
  int64_t V_;
  bool bf16_;
};

// ---- Token ops (policyLoss, valueLoss, klPenalty): L consecutive tokens of one sequence at a time ----

// double lanes, L of them (two or more registers): per-token sums of a block are kept in double
template <int L>
struct DLanes {
  typedef double d __attribute__((vector_size(8 * L)));
};
template <int L, typename V>
RK_INLINE typename DLanes<L>::d widen(V x) { return __builtin_convertvector(x, typename DLanes<L>::d); }
template <typename V>
RK_INLINE double lane_sum(V x) {
  double s = 0;
  for (int l = 0; l < int(sizeof(V) / sizeof(x[0])); l++) s += x[l];
  return s;
}

// n ≤ L elements of x from t as float32 lanes, 0 past n. F32: x is float32, read directly; else read()
// converts each element from its dtype.
template <int L, bool F32>
RK_INLINE typename Lanes<L>::f token_load(const FloatIn& x, int64_t t, int64_t n) {
  typename Lanes<L>::f r = {};
  if (F32 && n == L) {
    std::memcpy(&r, static_cast<const float*>(x.data) + t, sizeof r);
    return r;
  }
  for (int64_t l = 0; l < n; l++) r[l] = F32 ? static_cast<const float*>(x.data)[t + l] : read(x, t + l);
  return r;
}
// n ≤ L elements of a typed row from p + i as float32 lanes, 0 past n (vload when n = L)
template <int L, typename T>
RK_INLINE typename Lanes<L>::f vload_n(const T* p, int64_t i, int64_t n) {
  if (n == L) return vload<L>(p, i);
  typename Lanes<L>::f r = {};
  for (int64_t l = 0; l < n; l++) r[l] = load(p, i + l);
  return r;
}
// the int64 lanes of L doubles, and a float/int32 lane mask (−1 / 0) widened to them, to select double lanes
template <int L>
struct LLanes {
  typedef int64_t l __attribute__((vector_size(8 * L)));
};
template <int L, typename I>
RK_INLINE typename LLanes<L>::l widen_mask(I m) { return __builtin_convertvector(m, typename LLanes<L>::l); }
// the lanes below n (−1), as int32 lanes: one compare of the lane indices
template <int L>
RK_INLINE typename Lanes<L>::i lanes_below(int64_t n) {
  using vi = typename Lanes<L>::i;
  vi index;
  for (int l = 0; l < L; l++) index[l] = l;
  return index < vi{} + int32_t(std::min<int64_t>(std::max<int64_t>(n, 0), L));
}

// vload_n where p[0, end) may be read: a whole vector with its lanes from n on cleared (an and with a lane
// mask) when it lies below end. vload_n's element loads go through memory (GCC makes them a memcpy), and the
// vector reload then waits for the stores: ~20 ns a partial vector, most of a small group's time.
template <int L, typename T>
RK_INLINE typename Lanes<L>::f vload_within(const T* p, int64_t i, int64_t n, int64_t end) {
  if (n == L) return vload<L>(p, i);
  if (i + L > end) return vload_n<L>(p, i, n);
  using vi = typename Lanes<L>::i;
  return (typename Lanes<L>::f)((vi)vload<L>(p, i) & lanes_below<L>(n));
}
// token_store where p[0, end) may be written and every element of [t + n, end) is written again afterwards by the
// same thread (the scores after this group's belong to the groups that follow it in the thread's range): a whole
// vector when it lies below end.
template <int L, typename V>
RK_INLINE void vstore_within(float* p, int64_t t, int64_t n, V v, int64_t end) {
  if (n == L || t + L <= end) return vstore(p, t, v);
  for (int64_t l = 0; l < n; l++) p[t + l] = v[l];
}

// the first n ≤ L lanes of v into p + t
template <int L, typename V>
RK_INLINE void token_store(float* p, int64_t t, int64_t n, V v) {
  if (n == L) return vstore(p, t, v);
  for (int64_t l = 0; l < n; l++) p[t + l] = v[l];
}
// the counted lanes of n ≤ L tokens from t (−1 counted, 0 masked or past n)
template <int L>
RK_INLINE typename Lanes<L>::i token_counted(const uint8_t* mask, int64_t t, int64_t n) {
  using vi = typename Lanes<L>::i;
  if (n == L) {
    if (!mask) return vi{} - 1;
    return mask_lanes<vi>(mask + t);  // a broadcast and a compare per 32-bit word, not a byte insert per lane
  }
  vi c = {};
  for (int64_t l = 0; l < n; l++) c[l] = !mask || mask[t + l] ? -1 : 0;
  return c;
}

// f(t, n, w) over tokens [t0, t1) of b, L at a time inside each sequence (n ≤ L tokens from t, w the
// sequence's aggregation weight ws[s]); a sequence's last n < L tokens come as one call, so every token takes
// the same vector arithmetic whatever its position.
template <int L, typename F>
RK_INLINE void token_runs(const TokenBatch& b, const float* ws, int64_t t0, int64_t t1, F&& f) {
  for_sequence_runs(b, t0, t1, [&](int64_t begin, int64_t end, int64_t s) {
    const float w = ws[s];
    int64_t t = begin;
    for (; t + L <= end; t += L) f(t, int64_t(L), w);
    if (t < end) f(t, end - t, w);
  });
}

// The lanes a token kernel runs with: at most 8. With 16 (AVX-512) GCC scalarises the token kernels'
// selects on comparisons (226 vcomiss in policyLoss's loop, 2.5x slower); 8 lanes of the same ISA keep them
// vectors. A kernel whose lane code is compiled for v4 (RK_ISA_KERNEL_V4) runs all 16.
template <int L>
constexpr int token_lanes() { return L < 8 ? L : 8; }

// Sum of one block of tokens [begin, end) of a per-token op's aggregated loss, L tokens at a time
// (token_runs): token(t, n, loss, g, flag) gives the lanes of the n tokens from t (flag 0 or 1); then
// per_token = loss and grad = w·g where counted, 0 where masked (selected, never multiplied by the mask).
// Returns Σ w·loss over counted tokens (double lanes, then their sum) and adds the counted flags to `flags`.
template <int L, bool F32, typename Token>
RK_INLINE double token_loss_block(const TokenBatch& b, const float* ws, float* per_token, float* grad, int64_t begin, int64_t end,
                                  int64_t& flags, Token&& token) {
  using vf = typename Lanes<L>::f;
  typename DLanes<L>::d sum = {};
  const vf zero = {};
  vf count = zero;  // at most TOKEN_BLOCK per lane: exact
  token_runs<L>(b, ws, begin, end, [&](int64_t t, int64_t n, float w) {
    const auto m = token_counted<L>(b.mask, t, n);
    vf loss = zero, g = zero, flag = zero;
    token(t, n, loss, g, flag);
    token_store<L>(per_token, t, n, m ? loss : zero);
    token_store<L>(grad, t, n, m ? w * g : zero);
    sum += widen<L>(m ? w * loss : zero);
    count += m ? flag : zero;
  });
  for (int l = 0; l < L; l++) flags += int64_t(count[l]);
  return lane_sum(sum);
}

// One S per TOKEN_BLOCK block of [0, tokens), block(t0, t1, s) filling it, the blocks over the pool; the caller
// adds them in block order, so results do not depend on the thread count.
template <typename S, typename Block>
SmallArray<S> token_block_sums(int64_t tokens, Block&& block) {
  SmallArray<S> sums(static_cast<size_t>((tokens + TOKEN_BLOCK - 1) / TOKEN_BLOCK));
  parallel_for(int64_t(sums.size()), 1, [&](int64_t bb, int64_t be) {
    for (int64_t k = bb; k < be; k++) block(k * TOKEN_BLOCK, std::min(tokens, (k + 1) * TOKEN_BLOCK), sums[size_t(k)]);
  });
  return sums;
}

}  // namespace rk
