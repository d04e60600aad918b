// CPU value loss (DESIGN §1.6); math in native/include/rlhf/value.h (value_token). Tokens run in fixed
// blocks over the thread pool, L at a time (value_impl); each block sums in double and the blocks are added
// in order, so results do not depend on the thread count.
#include "rlhf/value.h"

#include <type_traits>
#include <vector>

#include "parallel.h"
#include "rlhf/aggregate.h"
#include "rowmath.h"

namespace rk {
namespace {

struct ValueSums {
  double loss = 0;
  int64_t clipped = 0;
};

// value_token per lane: e₁ = V − R, u = e₁²; with clip ε: e₂ = clamp(V, V_old ± ε) − R, and u = e₂² where
// e₂² > e₁² (clipped); ℓ = h·u, dℓ/dV = 0 where clipped, else 2h·e₁ (h = ½ or 1). T = float: every input float32.
template <int ISA_L, typename T>
RK_INLINE void value_impl(const ValueLossParams& p, const float* const& ws, const int64_t& begin, const int64_t& end, ValueSums* const& out) {
  constexpr int L = token_lanes<ISA_L>();
  constexpr bool F32 = std::is_same_v<T, float>;
  using vf = typename Lanes<L>::f;
  const float h = p.opts.half ? 0.5f : 1.f, eps = p.opts.clip;
  const bool clip = is_on(eps), old = p.old_values.present();
  const vf zero = {}, one = zero + 1.f;
  out->loss = token_loss_block<L, F32>(p.batch, ws, p.per_token, p.grad, begin, end, out->clipped, [&](int64_t t, int64_t n, vf& loss, vf& g, vf& flag) {
    const vf V = token_load<L, F32>(p.values, t, n), R = token_load<L, F32>(p.returns, t, n);
    const vf e1 = V - R;
    vf u = e1 * e1;
    flag = zero;
    if (clip) {
      const vf V_old = old ? token_load<L, F32>(p.old_values, t, n) : zero;
      const vf lo = V_old - eps, hi = V_old + eps;
      const vf e2 = (V < lo ? lo : (V > hi ? hi : V)) - R;
      flag = e2 * e2 > u ? one : zero;
      u = flag != 0.f ? e2 * e2 : u;
    }
    loss = h * u;
    g = flag != 0.f ? zero : 2.f * h * e1;
  });
}
RK_ISA_KERNEL(value_block, value_impl)

}  // namespace

ValueLossResult value_loss(const ValueLossParams& p) {
  const TokenBatch& b = p.batch;
  SmallArray<float> ws(static_cast<size_t>(b.num_seqs));
  const int64_t count = sequence_weights(b, ws.data());
  const bool f32 = p.values.dtype == DType::f32 && p.returns.dtype == DType::f32 && (!p.old_values.present() || p.old_values.dtype == DType::f32);
  const SmallArray<ValueSums> sums = token_block_sums<ValueSums>(b.tokens, [&](int64_t t0, int64_t t1, ValueSums& s) {
    if (f32) value_block<float>(p, ws.data(), t0, t1, &s);
    else value_block<void>(p, ws.data(), t0, t1, &s);
  });
  double loss = 0;
  int64_t clipped = 0;
  for (const ValueSums& s : sums) loss += s.loss, clipped += s.clipped;
  return {float(loss), count > 0 ? float(double(clipped) / double(count)) : 0.f};
}

}  // namespace rk
