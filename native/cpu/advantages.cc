// CPU advantage estimators (DESIGN §1.8); math in src/reference/advantages.ts. GAE's recursion runs in
// double, backwards through each sequence, several sequences at once in double lanes; the statistics of
// whiten and group_advantages in double lanes. The dtype is dispatched once per call (templates), and each
// kernel is built per ISA (RK_ISA_KERNEL) with at most 8 lanes (token_lanes).
#include "rlhf/advantages.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <utility>
#include <vector>

#include "parallel.h"
#include "rowmath.h"

namespace rk {
namespace {

// ---- gae ----

// An 8 × 8 transpose of float lanes in registers (unpack, 64-bit pairs, 128-bit halves): a[i][j] → a[j][i].
template <typename V>
RK_INLINE void transpose8(V (&a)[8]) {
  V t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shufflevector(a[i], a[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = __builtin_shufflevector(a[i], a[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4) {
    for (int h = 0; h < 2; h++) {
      u[i + 2 * h] = __builtin_shufflevector(t[i + h], t[i + h + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      u[i + 2 * h + 1] = __builtin_shufflevector(t[i + h], t[i + h + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  }
  for (int j = 0; j < 4; j++) {
    a[j] = __builtin_shufflevector(u[j], u[j + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    a[j + 4] = __builtin_shufflevector(u[j], u[j + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

// Sequences [s0, s1) of p, W at a time: lane l walks one sequence backwards, and when it reaches the
// sequence's first token takes the next one not yet started (in sequence order), so the recursion's latency
// (one dependent add per token) overlaps across W sequences. Per step, lane l at token t_l:
//   counted: A = r + γ·V_next − V + γλ·A (gae_step, in double), V_next = V, outputs A and A + V;
//   masked:  A and V_next carried unchanged (selected), outputs 0.
// When no sequence is left to take, the lanes still running finish one by one in gae_steps (the same
// arithmetic: gae_step). A sequence's values do not depend on its lane nor on the thread count.
// T = float: rewards and values float32, read directly (else each through its dtype).
template <int ISA_L, typename T>
RK_INLINE void gae_impl(const GaeParams& p, const int64_t& s0, const int64_t& s1) {
  constexpr int W = token_lanes<ISA_L>();  // 8 lanes ran faster than 4 or 16 in the AVX-512 build
  constexpr bool F32 = std::is_same_v<T, float>;
  using vf = typename Lanes<W>::f;
  using vi = typename Lanes<W>::i;
  using vd = typename DLanes<W>::d;
  using vl = typename LLanes<W>::l;
  const double gamma = p.gamma, gl = p.gamma * p.lambda;
  auto in = [](const FloatIn& x, int64_t t) -> float { return F32 ? static_cast<const float*>(x.data)[t] : read(x, t); };
  int64_t t[W], begin[W];
  vd acc = {}, next = {};
  int64_t s = s0;
  // lane l takes the next non-empty sequence; false when none is left
  auto take = [&](int l) {
    while (s < s1 && p.offsets[s + 1] == p.offsets[s]) s++;
    if (s == s1) return false;
    t[l] = int64_t(p.offsets[s + 1]) - 1, begin[l] = p.offsets[s];
    acc[l] = 0;
    next[l] = p.last_values.data ? read(p.last_values, s) : 0.f;
    s++;
    return true;
  };
  int filled = 0;
  while (filled < W && take(filled)) filled++;
  if (filled == W) {
    for (;;) {
      int64_t steps = t[0] - begin[0] + 1;  // until the first lane finishes its sequence
      for (int l = 1; l < W; l++) steps = std::min(steps, t[l] - begin[l] + 1);
      int64_t k = 0;
      if constexpr (W == 8 && F32) {
        // 8 steps of the 8 lanes at once: each lane's 8 tokens [t − k − 7, t − k] by one vector load, transposed
        // so that vector j holds token t_l − k − 7 + j of every lane (the mask: its 8 bytes as one int64 lane,
        // byte j selected by a shift), then the same steps as below from j = 7 down to 0, and the outputs
        // transposed back and stored by vector
        auto chunks = [&]<bool MASKED>() {
          const float* rp = static_cast<const float*>(p.rewards.data);
          const float* vp = static_cast<const float*>(p.values.data);
          for (; k + 8 <= steps; k += 8) {
            vf R[8], V[8], A[8], Q[8];
            vl bytes = {};  // lane l: the 8 mask bytes of its tokens, token j in byte j
            for (int l = 0; l < 8; l++) {
              const int64_t i = t[l] - k - 7;
              R[l] = vload<8>(rp, i);
              V[l] = vload<8>(vp, i);
              if constexpr (MASKED) std::memcpy(&bytes[l], p.mask + i, 8);  // little-endian x86-64
            }
            transpose8(R);
            transpose8(V);
            for (int j = 7; j >= 0; j--) {
              const vd r = widen<W>(R[j]), v = widen<W>(V[j]), zero = {};
              const vd a = gae_step<vd>(r, next, v, acc, gamma, gl);
              if constexpr (MASKED) {
                const vl m = ((bytes >> (8 * j)) & 0xff) != 0;
                acc = m ? a : acc;
                next = m ? v : next;
                A[j] = __builtin_convertvector(m ? a : zero, vf), Q[j] = __builtin_convertvector(m ? a + v : zero, vf);
              } else {
                acc = a, next = v;
                A[j] = __builtin_convertvector(a, vf), Q[j] = __builtin_convertvector(a + v, vf);
              }
            }
            transpose8(A);
            transpose8(Q);
            for (int l = 0; l < 8; l++) {
              const int64_t i = t[l] - k - 7;
              vstore(p.advantages, i, A[l]);
              vstore(p.returns, i, Q[l]);
            }
          }
        };
        if (p.mask) chunks.template operator()<true>();
        else chunks.template operator()<false>();
      }
      for (; k < steps; k++) {
        vf rf = {}, vv = {};
        vi mi = {};
        for (int l = 0; l < W; l++) {
          const int64_t i = t[l] - k;
          rf[l] = in(p.rewards, i);
          vv[l] = in(p.values, i);
          mi[l] = p.mask && !p.mask[i] ? 0 : -1;
        }
        const vd r = widen<W>(rf), v = widen<W>(vv), zero = {};
        const vl m = widen_mask<W>(mi);
        const vd a = gae_step<vd>(r, next, v, acc, gamma, gl);
        acc = m ? a : acc;
        next = m ? v : next;
        const vf adv = __builtin_convertvector(m ? a : zero, vf), ret = __builtin_convertvector(m ? a + v : zero, vf);
        for (int l = 0; l < W; l++) {
          const int64_t i = t[l] - k;
          p.advantages[i] = adv[l];
          p.returns[i] = ret[l];
        }
      }
      bool out = false;
      for (int l = 0; l < W; l++) {
        t[l] -= steps;
        if (t[l] < begin[l] && !take(l)) out = true;
      }
      if (out) break;
    }
  }
  // no sequence left to take: finish the lanes still inside one
  for (int l = 0; l < filled; l++) {
    if (t[l] >= begin[l]) gae_steps(p, t[l], begin[l], acc[l], next[l]);
  }
}
RK_ISA_KERNEL(gae_block, gae_impl)


// ---- whiten ----

// Sums of the counted values of one block [b, e), shifted by K (a counted value of the whole input):
// n, S1 = Σ (x − K), S2 = Σ (x − K)², in double lanes (the lanes' order fixed), masked values selected out.
struct Moments {
  int64_t n = 0;
  double s1 = 0, s2 = 0;
};

template <int ISA_L, typename T>
RK_INLINE void whiten_sums_impl(const WhitenParams& p, const float& K, const int64_t& b, const int64_t& e, Moments* const& out) {
  constexpr int L = token_lanes<ISA_L>();
  using vf = typename Lanes<L>::f;
  using vi = typename Lanes<L>::i;
  using vd = typename DLanes<L>::d;
  const T* x = static_cast<const T*>(p.values.data);
  const vf k = vf{} + K;
  vd s1 = {}, s2 = {};
  vi count = {};  // −1 per counted value: at most a block per lane
  int64_t i = b;
  for (; i + L <= e; i += L) {
    vf v = vload<L>(x, i);
    if (p.mask) {
      const vi m = token_counted<L>(p.mask, i, L);
      v = m ? v : k;  // a masked value contributes x − K = 0
      count += m;
    }
    const vd d = widen<L>(v) - double(K);
    s1 += d;
    s2 += d * d;
  }
  int64_t n = i - b;
  if (p.mask) {
    n = 0;
    for (int l = 0; l < L; l++) n -= count[l];
  }
  double t1 = 0, t2 = 0;
  for (; i < e; i++) {
    if (p.mask && !p.mask[i]) continue;
    const double d = double(load(x, i)) - double(K);
    t1 += d, t2 += d * d;
    n++;
  }
  *out = {n, lane_sum(s1) + t1, lane_sum(s2) + t2};
}
RK_ISA_KERNEL(whiten_sums, whiten_sums_impl)

// out = (x − mean)·inv + shift over [b, e) in double, 0 where masked (selected)
template <int ISA_L, typename T>
RK_INLINE void whiten_apply_impl(const WhitenParams& p, const double& mean, const double& inv, const double& shift, const int64_t& b, const int64_t& e) {
  constexpr int L = token_lanes<ISA_L>();
  using vf = typename Lanes<L>::f;
  using vd = typename DLanes<L>::d;
  const T* x = static_cast<const T*>(p.values.data);
  const vf zero = {};
  int64_t i = b;
  for (; i + L <= e; i += L) {
    const vd y = (widen<L>(vload<L>(x, i)) - mean) * inv + shift;
    vf o = __builtin_convertvector(y, vf);
    if (p.mask) o = token_counted<L>(p.mask, i, L) ? o : zero;
    vstore(p.out, i, o);
  }
  for (; i < e; i++) p.out[i] = !p.mask || p.mask[i] ? float((double(load(x, i)) - mean) * inv + shift) : 0.f;
}
RK_ISA_KERNEL(whiten_apply, whiten_apply_impl)

// ---- group_advantages ----

// 1/(sqrt(var) + eps) in each lane: grpo's scale of L groups at once (a sqrt per lane; GCC makes it one
// vector sqrt)
template <typename VD>
RK_INLINE VD inv_std_eps(const VD& var, double eps) {
  VD sd;
  for (int l = 0; l < int(sizeof(VD) / sizeof(double)); l++) sd[l] = __builtin_sqrt(var[l]);
  return 1.0 / (sd + eps);
}

// The largest group that runs one group per lane (ragged_lanes, strided_groups): its rows (kStridedGroup
// vectors of L) stay in L1.
constexpr int64_t kStridedGroup = 64;

// Ragged groups [g, g + L), one group per lane (sizes K_k ≤ kStridedGroup): row j is score j of each group, 0
// past a group's end, so the statistics are vertical operations on the L groups at once, as strided_groups
// does for uniform ones; the lanes past a group's end are cleared (and-ed with a lane mask) before they are
// squared. The arithmetic of groups_impl per group but for the order of the sums (in j order, as the js
// kernel) and the mean (S/K, not S·(1/K): exact for a constant group); a group of fewer than 2 gives 0.
template <int L, typename T>
RK_INLINE void ragged_lanes(const GroupAdvantagesParams& p, int64_t g, int64_t Kmax) {
  using vf = typename Lanes<L>::f;
  using vd = typename DLanes<L>::d;
  using vl = typename LLanes<L>::l;
  using vi = typename Lanes<L>::i;
  const T* x = static_cast<const T*>(p.scores.data);
  const GroupMethod method = p.method;
  int64_t a[L], K[L];
  vl Kl;
  for (int k = 0; k < L; k++) a[k] = p.offsets[g + k], K[k] = p.offsets[g + k + 1] - a[k], Kl[k] = K[k];
  const vi Ki = __builtin_convertvector(Kl, vi);
  const vd Kd = __builtin_convertvector(Kl, vd);
  // without a branch per lane (the sizes vary): each lane loads at min(a + j, last score) and is cleared past
  // its group's end; a lane past its end writes to a scratch float
  const int64_t last = p.scores.size - 1;  // ≥ 0: some group of these has a score
  vf rows[kStridedGroup];
  vd S = {};
  for (int64_t j = 0; j < Kmax; j++) {
    vf r;
    for (int k = 0; k < L; k++) r[k] = load(x, std::min(a[k] + j, last));
    r = (vf)((vi)r & (vi{} + int32_t(j) < Ki));
    rows[j] = r;
    S += widen<L>(r);
  }
  const vd one = vd{} + 1.0, mean = S / (Kd > one ? Kd : one);  // (a lane of K < 2 is never written from)
  vd scale = one;
  if (method == GroupMethod::grpo) {
    vd ss = {};
    for (int64_t j = 0; j < Kmax; j++) {
      const vd d = (vd)((vl)(widen<L>(rows[j]) - mean) & (vl{} + j < Kl));
      ss += d * d;
    }
    const vd den = p.unbiased ? Kd - 1.0 : Kd;
    scale = inv_std_eps(ss / (den > one ? den : one), p.eps);
  } else if (method == GroupMethod::rloo) {
    scale = 1.0 / (Kd > 2.0 ? Kd - 1.0 : one);
  }
  for (int64_t j = 0; j < Kmax; j++) {
    const vd r = widen<L>(rows[j]);
    const vd y = method == GroupMethod::rloo ? r - (S - r) * scale : method == GroupMethod::mean_centered ? r - mean : (r - mean) * scale;
    const vf f = __builtin_convertvector(y, vf);
    float scratch;
    for (int k = 0; k < L; k++) *(j < K[k] ? p.out + a[k] + j : &scratch) = K[k] < 2 ? 0.f : f[k];
  }
}

// Groups [g0, g1), each L scores at a time (a group's last n < L in one partial vector): its sum and the sum
// of squared deviations from its mean in double lanes (two passes over a group, which is in cache), then
//   mean = sum·(1/K), std = sqrt(Σ (r − mean)² · 1/(K − 1 or K)),
//   grpo (r − mean)·(1/(std + eps)), rloo r − (sum − r)·(1/(K − 1)), mean-centered r − mean,
// all in double (a reciprocal in place of each division: one more rounding of 2⁻⁵³); a group of fewer than 2
// gives 0.
template <int ISA_L, typename T>
RK_INLINE void groups_impl(const GroupAdvantagesParams& p, const int64_t& g0, const int64_t& g1) {
  constexpr int L = token_lanes<ISA_L>();
  using vf = typename Lanes<L>::f;
  using vd = typename DLanes<L>::d;
  const T* x = static_cast<const T*>(p.scores.data);
  const GroupMethod method = p.method;
  int64_t last = -1;  // the size whose reciprocals these are (groups often share one size)
  double inv_k = 0, inv_den = 0, inv_k1 = 0;
  const int64_t end_in = p.scores.size, end_out = p.offsets[g1];  // what may be read; what this range writes
  for (int64_t g = g0; g < g1; g++) {
    // L groups of at most kStridedGroup scores, whose rows are at least half used, run one group per lane
    // (ragged_lanes); whether is a matter of the data and of g − g0, a multiple of L (never of the threads)
    if ((g - g0) % L == 0 && g + L <= g1) {
      int64_t Kmax = 0;
      for (int k = 0; k < L; k++) Kmax = std::max<int64_t>(Kmax, p.offsets[g + k + 1] - p.offsets[g + k]);
      if (Kmax <= kStridedGroup && Kmax * L <= 2 * (p.offsets[g + L] - p.offsets[g]) + 8 * L) {
        ragged_lanes<L, T>(p, g, Kmax);
        g += L - 1;
        continue;
      }
    }
    const int64_t a = p.offsets[g], K = p.offsets[g + 1] - a;
    if (K < 2) {
      std::fill(p.out + a, p.out + a + K, 0.f);
      continue;
    }
    if (K != last) last = K, inv_k = 1.0 / double(K), inv_den = 1.0 / double(p.unbiased ? K - 1 : K), inv_k1 = 1.0 / double(K - 1);
    vd sum = {};
    for (int64_t i = 0; i < K; i += L) sum += widen<L>(vload_within<L>(x, a + i, std::min<int64_t>(L, K - i), end_in));
    const double S = lane_sum(sum), mean = S * inv_k;
    double scale = 1.0;
    if (method == GroupMethod::grpo) {
      vd ss = {};
      for (int64_t i = 0; i < K; i += L) {
        const int64_t n = std::min<int64_t>(L, K - i);
        vd d = widen<L>(vload_within<L>(x, a + i, n, end_in)) - mean;
        if (n < L) d = widen_mask<L>(lanes_below<L>(n)) ? d : vd{};  // the lanes past the group count 0
        ss += d * d;
      }
      scale = 1.0 / (std::sqrt(lane_sum(ss) * inv_den) + p.eps);
    } else if (method == GroupMethod::rloo) {
      scale = inv_k1;
    }
    for (int64_t i = 0; i < K; i += L) {
      const int64_t n = std::min<int64_t>(L, K - i);
      const vd r = widen<L>(vload_within<L>(x, a + i, n, end_in));
      const vd y = method == GroupMethod::rloo ? r - (S - r) * scale : method == GroupMethod::mean_centered ? r - mean : (r - mean) * scale;
      vstore_within<L>(p.out, a + i, n, __builtin_convertvector(y, vf), end_out);
    }
  }
}
RK_ISA_KERNEL(groups, groups_impl)

// The lane sums of L double vectors at once: lane k of the result is the sum of the lanes of a[k]. A tree of
// log2 L levels; at each, pairs of vectors fold their halves (block size H: the lanes [0, H) of each 2H-block
// plus [H, 2H)), so every vector's lanes are added in the same order, ((a0 + a4) + (a2 + a6)) + ((a1 + a5) +
// (a3 + a7)) at L = 8, wherever it sits. The inputs are taken in bit-reversed order, which the tree undoes.
template <int L, int H, bool HI, typename V, size_t... J>
RK_INLINE V fold_pick(V z, V w, std::index_sequence<J...>) {
  return __builtin_shufflevector(z, w, (((J / H) % 2 ? L : 0) + (J / H / 2) * 2 * H + J % H + (HI ? H : 0))...);
}
constexpr int bit_reverse(int i, int L) {
  int r = 0;
  for (int b = 1; b < L; b <<= 1, i >>= 1) r = (r << 1) | (i & 1);
  return r;
}
template <int L, int H, typename V>
RK_INLINE void fold_levels(V* v) {
  constexpr int n = H;  // pairs at this level (L/2 at the first, H = L/2)
  for (int i = 0; i < n; i++) {
    v[i] = fold_pick<L, H, false>(v[2 * i], v[2 * i + 1], std::make_index_sequence<L>{}) +
           fold_pick<L, H, true>(v[2 * i], v[2 * i + 1], std::make_index_sequence<L>{});
  }
  if constexpr (H > 1) fold_levels<L, H / 2>(v);
}
template <int L, typename V>
RK_INLINE V lane_sums(const V (&a)[L]) {
  V v[L];
  for (int i = 0; i < L; i++) v[i] = a[bit_reverse(i, L)];
  fold_levels<L, L / 2>(v);
  return v[0];
}

// Lane k: x[a + k·G] as float32, the vector built in registers (a constructor of L loads: no scalar store
// followed by a vector load, which the store buffer cannot forward).
template <int L, typename T, size_t... K>
RK_INLINE typename Lanes<L>::f strided_load(const T* x, int64_t a, int64_t G, std::index_sequence<K...>) {
  return typename Lanes<L>::f{load(x, a + int64_t(K) * G)...};
}

// Uniform groups of a size G that is not a multiple of L (G ≤ kStridedGroup), [g0, g1), L groups at a time,
// one group per lane: row j is score j of each of the L groups (strided loads), so every statistic is a
// vertical operation on L groups, with no partial vector per group (a group of G = 4 in an 8-lane vector cost
// ~12 ns a score that way, 20× the G = 8 path).
//   S = Σ_j r_j (in j order, as the js kernel), mean = S/G, std = sqrt(Σ_j (r_j − mean)² / (G − 1 or G)),
//   grpo (r − mean)·(1/(std + eps)), rloo r − (S − r)/(G − 1), mean-centered r − mean, in double; row j's
// outputs are written back lane by lane. A last block of fewer than L groups goes to uniform_groups' loop.
template <int L, typename T>
RK_INLINE int64_t strided_groups(const GroupAdvantagesParams& p, int64_t g0, int64_t g1) {
  using vf = typename Lanes<L>::f;
  using vd = typename DLanes<L>::d;
  const T* x = static_cast<const T*>(p.scores.data);
  const GroupMethod method = p.method;
  const int64_t G = p.group_size;
  const double den = double(p.unbiased ? G - 1 : G);
  vf rows[kStridedGroup];
  int64_t g = g0;
  for (; g + L <= g1; g += L) {
    const int64_t a = g * G;
    vd S = {};
    for (int64_t j = 0; j < G; j++) {
      rows[j] = strided_load<L>(x, a + j, G, std::make_index_sequence<L>{});
      S += widen<L>(rows[j]);
    }
    const vd mean = S / double(G);  // exact for a constant group (no reciprocal)
    vd scale = vd{} + 1.0;
    if (method == GroupMethod::grpo) {
      vd ss = {};
      for (int64_t j = 0; j < G; j++) {
        const vd d = widen<L>(rows[j]) - mean;
        ss += d * d;
      }
      scale = inv_std_eps(ss / den, p.eps);
    }
    for (int64_t j = 0; j < G; j++) {
      const vd r = widen<L>(rows[j]);
      const vd y = method == GroupMethod::rloo ? r - (S - r) / double(G - 1) : method == GroupMethod::mean_centered ? r - mean : (r - mean) * scale;
      const vf f = __builtin_convertvector(y, vf);
      for (int k = 0; k < L; k++) p.out[a + k * G + j] = f[k];
    }
  }
  return g;
}

// Uniform groups of G = p.group_size, [g0, g1), L groups at a time, a group's scores in its own vector(s) as
// in groups_impl (G/L vectors, the last one partial): its partial sums vector per group, then the L groups'
// sums at once (lane_sums), and so their means, the sums of squared deviations, the std and the scale all in
// one vector of L groups (one sqrt and one division per L groups): mean = S/G, std = sqrt(SS/(G − 1 or G)),
// grpo (r − mean)·(1/(std + eps)), rloo r − (S − r)/(G − 1), mean-centered r − mean, in double; dividing by G
// (no reciprocal) keeps a constant group's mean exact, so its outputs are exactly 0. The outputs are written
// group by group, contiguous. A group's arithmetic does not depend on its place among the L (a missing group
// is all zeros), nor on the block or the thread.
template <int ISA_L, typename T>
RK_INLINE void uniform_groups_impl(const GroupAdvantagesParams& p, const int64_t& g0, const int64_t& g1) {
  constexpr int L = token_lanes<ISA_L>();
  using vf = typename Lanes<L>::f;
  using vd = typename DLanes<L>::d;
  using vl = typename LLanes<L>::l;
  const T* x = static_cast<const T*>(p.scores.data);
  const GroupMethod method = p.method;
  const int64_t G = p.group_size;
  const double den = double(p.unbiased ? G - 1 : G);
  const vl tail = widen_mask<L>(lanes_below<L>(G % L == 0 ? L : G % L));  // the lanes of a group's last vector
  if (G == L) {  // a group is one vector: loaded once, kept in registers (the arithmetic of the loop below)
    for (int64_t g = g0; g < g1; g += L) {
      const int n = int(std::min<int64_t>(L, g1 - g));
      vd X[L], D[L];
      for (int k = 0; k < L; k++) X[k] = k < n ? widen<L>(vload<L>(x, (g + k) * L)) : vd{};
      const vd S = lane_sums<L>(X), mean = S / double(G);
      vd scale = vd{} + 1.0;
      if (method == GroupMethod::grpo) {
        for (int k = 0; k < L; k++) D[k] = X[k] - mean[k], D[k] *= D[k];
        scale = inv_std_eps(lane_sums<L>(D) / den, p.eps);
      }
      for (int k = 0; k < n; k++) {
        const vd r = X[k];
        const vd y = method == GroupMethod::rloo ? r - (S[k] - r) / double(G - 1) : method == GroupMethod::mean_centered ? r - mean[k] : (r - mean[k]) * scale[k];
        vstore(p.out, (g + k) * L, __builtin_convertvector(y, vf));
      }
    }
    return;
  }
  const int64_t first = G % L != 0 && G <= kStridedGroup ? strided_groups<L, T>(p, g0, g1) : g0;
  const int64_t end_in = p.scores.size, end_out = g1 * G;  // what may be read; what this range writes
  for (int64_t g = first; g < g1; g += L) {
    const int n = int(std::min<int64_t>(L, g1 - g));
    vd part[L];
    for (int k = 0; k < L; k++) {
      part[k] = vd{};
      if (k >= n) continue;
      const int64_t a = (g + k) * G;
      for (int64_t i = 0; i < G; i += L) part[k] += widen<L>(vload_within<L>(x, a + i, std::min<int64_t>(L, G - i), end_in));
    }
    const vd S = lane_sums<L>(part), mean = S / double(G);  // exact for a constant group (no reciprocal)
    vd scale = vd{} + 1.0;
    if (method == GroupMethod::grpo) {
      for (int k = 0; k < L; k++) {
        part[k] = vd{};
        if (k >= n) continue;
        const int64_t a = (g + k) * G;
        for (int64_t i = 0; i < G; i += L) {
          const int64_t m = std::min<int64_t>(L, G - i);
          vd d = widen<L>(vload_within<L>(x, a + i, m, end_in)) - mean[k];
          if (m < L) d = tail ? d : vd{};  // the lanes past the group count 0
          part[k] += d * d;
        }
      }
      scale = inv_std_eps(lane_sums<L>(part) / den, p.eps);
    }
    for (int k = 0; k < n; k++) {
      const int64_t a = (g + k) * G;
      const double mk = mean[k], sk = scale[k], Sk = S[k];
      for (int64_t i = 0; i < G; i += L) {
        const int64_t m = std::min<int64_t>(L, G - i);
        const vd r = widen<L>(vload_within<L>(x, a + i, m, end_in));
        const vd y = method == GroupMethod::rloo ? r - (Sk - r) / double(G - 1) : method == GroupMethod::mean_centered ? r - mk : (r - mk) * sk;
        vstore_within<L>(p.out, a + i, m, __builtin_convertvector(y, vf), end_out);
      }
    }
  }
}
RK_ISA_KERNEL(uniform_groups, uniform_groups_impl)

}  // namespace

// Fixed blocks of sequences (by the data alone: ~4 token blocks each, at least one lane set), over the pool.
void gae(const GaeParams& p) {
  if (p.num_seqs <= 0) return;
  const int64_t tokens = std::max<int64_t>(1, p.offsets[p.num_seqs] - p.offsets[0]);
  const int64_t per = std::min(p.num_seqs, std::max<int64_t>(8, p.num_seqs * 4 * TOKEN_BLOCK / tokens));
  const int64_t blocks = (p.num_seqs + per - 1) / per;
  const bool f32 = p.rewards.dtype == DType::f32 && p.values.dtype == DType::f32;
  parallel_for(blocks, 1, [&](int64_t bb, int64_t be) {
    for (int64_t k = bb; k < be; k++) {
      const int64_t s0 = k * per, s1 = std::min(p.num_seqs, s0 + per);
      if (f32) gae_block<float>(p, s0, s1);
      else gae_block<void>(p, s0, s1);
    }
  });
}

// The statistics are summed, and the values centred, in double: a float32 mean of rewards 5 ± 0.005 is off by
// 2.4e-7, which whitening turns into 5e-5 on values of size 1. One pass of shifted sums per block of
// TOKEN_BLOCK values (blocks over the pool, added in block order): with K one of the counted values,
//   mean = K + S1/n,  Σ (x − mean)² = S2 − S1²/n,
// whose cancellation is bounded: (K − mean)² ≤ Σ (x − mean)², so S1²/n ≤ n·Σ (x − mean)² and the relative
// error of the variance stays within ~n·2⁻⁵³ (1e-10 at n = 2^20), never the (mean/std)²·2⁻⁵³ of raw sums.
// Then out = (x − mean)/sqrt(var + eps) (+ mean without shiftMean) in a second pass.
void whiten(const WhitenParams& p) {
  const int64_t N = p.values.size;
  int64_t first = 0;
  if (p.mask) while (first < N && !p.mask[first]) first++;
  if (first == N) {  // nothing counted (or nothing at all): every output 0
    std::fill(p.out, p.out + N, 0.f);
    return;
  }
  const float K = read(p.values, first);
  const int64_t blocks = (N + TOKEN_BLOCK - 1) / TOKEN_BLOCK;
  std::vector<Moments> sums(static_cast<size_t>(blocks));
  dispatch_dtype(p.values.dtype, [&]<typename T>() {
    parallel_for(blocks, 4, [&](int64_t bb, int64_t be) {
      for (int64_t k = bb; k < be; k++) whiten_sums<T>(p, K, k * TOKEN_BLOCK, std::min(N, (k + 1) * TOKEN_BLOCK), &sums[size_t(k)]);
    });
  });
  Moments all;
  for (const Moments& m : sums) all.n += m.n, all.s1 += m.s1, all.s2 += m.s2;
  const int64_t n = all.n, den = p.unbiased ? n - 1 : n;
  const double mean = double(K) + all.s1 / double(n);
  const double ss = all.s2 - all.s1 * (all.s1 / double(n));
  const double var = (n >= 2 && den > 0) ? (ss < 0 ? 0.0 : ss) / double(den) : 0.0;  // NaN stays NaN
  const double inv = 1.0 / std::sqrt(var + p.eps), shift = p.shift_mean ? 0.0 : mean;
  dispatch_dtype(p.values.dtype, [&]<typename T>() {
    parallel_for(blocks, 4, [&](int64_t bb, int64_t be) {
      whiten_apply<T>(p, mean, inv, shift, bb * TOKEN_BLOCK, std::min(N, be * TOKEN_BLOCK));
    });
  });
}

// Groups over the pool, ~TOKEN_BLOCK scores per block; each group is computed by one thread alone.
void group_advantages(const GroupAdvantagesParams& p) {
  if (p.num_groups <= 0) return;
  if (p.group_size > 0) {  // uniform groups: blocks of whole lane sets of groups
    const int64_t G = p.group_size;
    if (G < 2) return std::fill(p.out, p.out + p.num_groups * G, 0.f);
    const int64_t grain = std::max<int64_t>(8, (TOKEN_BLOCK / G + 7) / 8 * 8);
    dispatch_dtype(p.scores.dtype, [&]<typename T>() {
      const int64_t blocks = (p.num_groups + grain - 1) / grain;
      parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) { uniform_groups<T>(p, b0 * grain, std::min(p.num_groups, b1 * grain)); });
    });
    return;
  }
  // blocks of a multiple of 16 groups (any build's lanes), fixed by the data alone: where groups_impl runs
  // groups one per lane depends on the block, never on the threads
  const int64_t N = std::max<int64_t>(1, p.offsets[p.num_groups] - p.offsets[0]);
  const int64_t grain = (std::max<int64_t>(1, TOKEN_BLOCK * p.num_groups / N) + 15) / 16 * 16;
  const int64_t blocks = (p.num_groups + grain - 1) / grain;
  dispatch_dtype(p.scores.dtype, [&]<typename T>() {
    parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) { groups<T>(p, b0 * grain, std::min(p.num_groups, b1 * grain)); });
  });
}

}  // namespace rk
