// The vector path of the K-wise reward loss (native/cpu/reward.cc): L prompts a lane each. Included twice by
// reward.cc, into namespace RK_REWARD_LANES with RK_LANES_V4 0 or 1: as plain code (the v3 and baseline
// builds) and between RK_V4_BEGIN and RK_V4_END for the AVX-512 build's 16 lanes (rowmath.h,
// RK_ISA_KERNEL_V4: why). No include guard: each inclusion defines the namespace it is given.

namespace rk {
namespace {
namespace RK_REWARD_LANES {

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
  V f0;
  std::memcpy(&f0, &fbits, sizeof f0);
  // below √½: take 2f − 1, one power of 2 less (each select on its own compare, none on a mask variable)
  const I below = f0 < 0.707106781186547524f ? I{} - 1 : I{};
  const V e = __builtin_convertvector(((bits >> 23) & 0xff) - 126 + below, V);
  const V f = f0 < 0.707106781186547524f ? f0 + f0 - 1.f : f0 - 1.f;
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
  return d == 0.f ? x : log_u * (x / (d == 0.f ? 1.f : d));  // NaN: d and so the product NaN
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
  vi correct = {};  // the prompts ranking their label first: at most PROMPT_BLOCK per lane
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
  const int32_t skip = p.ignore_index;
  for (int64_t n0 = begin; n0 < end; n0 += L) {
    const int64_t count = std::min<int64_t>(L, end - n0), a = n0 * K, len = count * K;
    const bool full = count == L;
    vi b;
    if (full) std::memcpy(&b, p.chosen + n0, sizeof b);
    else for (int l = 0; l < L; l++) b[l] = l < count ? p.chosen[n0 + l] : skip;
    if (!full || KC == 0) {
      for (int64_t j = 0; j < len; j++) buf[j] = load(scores, a + j);
      for (int64_t j = len; j < L * K; j++) buf[j] = 0.f;
    }
    transpose_in(full, a);
    vf m = zero - INFINITY, sb = zero;
    vi first = zero_i;  // the first candidate at the max, whose e is exactly 1
    for (int64_t i = 0; i < K; i++) {
      first = x[i] > m ? int32_t(i) : first;
      m = x[i] > m ? x[i] : m;
      sb = b == int32_t(i) ? x[i] : sb;
    }
    // the label strictly above every other raw score (NaN or a tie: not first): K − 1 scores below sb, counted
    // (x[b] is not below sb)
    vi below = b != skip ? zero_i : zero_i - int32_t(K);
    for (int64_t i = 0; i < K; i++) below += sb > x[i] ? 1 : 0;
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
    const vf loss = b != skip ? (se == se ? lse_less_m + (m - sb) : se) : zero;
    loss_sum += __builtin_convertvector(loss, vd);
    correct += below == int32_t(K - 1) ? 1 : 0;
    if (p.losses) token_store<L>(p.losses, n0, count, loss);
    for (int64_t i = 0; i < K; i++) x[i] = e[i] * inv;
    store(p.probs, a, len);
    for (int64_t i = 0; i < K; i++) x[i] = b != skip ? scale * (b == int32_t(i) ? gb : x[i]) : zero;
    store(p.grad, a, len);
  }
  out.loss += lane_sum(loss_sum);
  for (int l = 0; l < L; l++) out.correct += correct[l];
}

// The lanes of this build: all 16 where this file is compiled for v4 (RK_LANES_V4), else at most 8
template <int ISA_L, typename T>
RK_INLINE void uniform_impl(const RewardLossParams& p, const float& scale, const int64_t& begin, const int64_t& end, BlockSums* const& out) {
  constexpr int L = RK_LANES_V4 ? ISA_L : token_lanes<ISA_L>();
  switch (p.K) {
    case 2: return uniform_prompts<L, 2, T>(p, scale, begin, end, *out);
    case 4: return uniform_prompts<L, 4, T>(p, scale, begin, end, *out);
    case 8: return uniform_prompts<L, 8, T>(p, scale, begin, end, *out);
    case 16: return uniform_prompts<L, 16, T>(p, scale, begin, end, *out);
    default: return uniform_prompts<L, 0, T>(p, scale, begin, end, *out);
  }
}

}  // namespace RK_REWARD_LANES
}  // namespace
}  // namespace rk
