// The lane path of the policy loss (native/cpu/policy.cc): the plain PPO clip, L tokens at a time. Included
// twice by policy.cc, into namespace RK_POLICY_LANES with RK_LANES_V4 0 or 1: as plain code (the v3 and
// baseline builds) and between RK_V4_BEGIN and RK_V4_END for the AVX-512 build's 16 lanes (rowmath.h,
// RK_ISA_KERNEL_V4: why). No include guard: each inclusion defines the namespace it is given.

namespace rk {
namespace {
namespace RK_POLICY_LANES {

// The token-level PPO clip (PolicyOptions::plain(), the common case), L tokens at a time: per lane the math of
// ppo_clip_token with d = logp − old,
//   dc = clamp(d, ±C), r = exp(dc), s1 = rA, s2 = clip(r, 1 − ε_low, 1 + ε_high)A, clipped = s2 < s1,
//   ℓ = −min(s1, s2), with dual clip c (A < 0, −cA < ℓ): ℓ = −cA; dℓ/dlogp = 0 when clipped, dual-clipped or
//   |d| > C, else −rA,
// with exp_approx (≤ 2 ulp) for std::exp (the CUDA kernels keep the scalar form); masked tokens are selected
// out (0 outputs, nothing summed). Loss, KL and ratio sums in float32 lanes over 16 steps, then in double lanes. T = float: every input float32.
template <int ISA_L, typename T>
RK_INLINE void plain_impl(const PolicyLossParams& p, const float* const& ws, const int64_t& begin, const int64_t& end, BlockSums* const& out) {
  constexpr int L = RK_LANES_V4 ? ISA_L : token_lanes<ISA_L>();  // all 16 compiled for v4, else at most 8
  constexpr bool F32 = std::is_same_v<T, float>;
  using vf = typename Lanes<L>::f;
  using vi = typename Lanes<L>::i;
  using vd = typename DLanes<L>::d;
  const PolicyOptions& o = p.opts;
  const float C = o.log_ratio_clamp, lo = 1.f - o.clip_low, hi = 1.f + o.clip_high, c = o.dual_clip;
  const bool dual_on = is_on(c);
  vd loss_sum = {}, kl_sum = {}, ratio_sum = {};
  const vf zero = {}, one = zero + 1.f;
  vf ratio_max = zero - INFINITY, low = zero, high = zero, duals = zero;  // counts of at most TOKEN_BLOCK, exact
  // the sums' float32 lanes over kRun steps (each lane ≤ kRun terms), then added to the double lanes
  constexpr int kRun = 16;
  vf loss_run = zero, kl_run = zero, ratio_run = zero;
  int run = 0;
  auto flush = [&] {
    loss_sum += widen<L>(loss_run), kl_sum += widen<L>(kl_run), ratio_sum += widen<L>(ratio_run);
    loss_run = kl_run = ratio_run = zero;
    run = 0;
  };
  token_runs<L>(p.batch, ws, begin, end, [&](int64_t t, int64_t n, float w) {
    const vf lp = token_load<L, F32>(p.logp, t, n), old = token_load<L, F32>(p.old_logp, t, n), A = token_load<L, F32>(p.advantages, t, n);
    // the counted lanes as floats (−1 or 0), compared here: a select on mask_lanes' int lanes, folded for the
    // baseline, is an internal compiler error in GCC 12 once inlined into the v4 build
    const vf m = __builtin_convertvector(n == L && p.batch.mask ? mask_lanes<vi>(p.batch.mask + t) : token_counted<L>(p.batch.mask, t, n), vf);
    const vf d = lp - old;
    const vf dc = d > C ? C : (d < -C ? -C : d);
    const vf r = exp_approx(dc);
    const vf s1 = r * A, s2 = (r < lo ? lo : (r > hi ? hi : r)) * A;
    const vf clipped = s2 < s1 ? one : zero;
    vf loss = s2 < s1 ? -s2 : -s1, dual = zero;
    if (dual_on) {
      const vf cA = -c * A;
      dual = A < 0.f ? (cA < loss ? one : zero) : zero;
      loss = dual != 0.f ? cA : loss;
    }
    const vf g0 = d > C ? zero : (d < -C ? zero : -r * A);
    const vf g = clipped + dual != 0.f ? zero : g0;
    token_store<L>(p.per_token, t, n, m != 0.f ? loss : zero);
    token_store<L>(p.grad, t, n, m != 0.f ? w * g : zero);
    loss_run += m != 0.f ? w * loss : zero;
    kl_run += m != 0.f ? w * (old - lp) : zero;
    ratio_run += m != 0.f ? r : zero;
    if (++run == kRun) flush();
    const vf rm = m != 0.f ? r : zero - INFINITY;
    ratio_max = rm > ratio_max ? rm : ratio_max;
    low += m != 0.f ? (A < 0.f ? clipped : zero) : zero;
    high += m != 0.f ? (A > 0.f ? clipped : zero) : zero;
    duals += m != 0.f ? dual : zero;
  });
  flush();
  BlockSums& s = *out;
  s.loss += lane_sum(loss_sum), s.kl += lane_sum(kl_sum), s.ratio += lane_sum(ratio_sum);
  for (int l = 0; l < L; l++) {
    s.ratio_max = ratio_max[l] > s.ratio_max ? ratio_max[l] : s.ratio_max;
    s.low += int64_t(low[l]), s.high += int64_t(high[l]), s.dual += int64_t(duals[l]);
  }
}

}  // namespace RK_POLICY_LANES
}  // namespace
}  // namespace rk
