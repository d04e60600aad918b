// CUDA PPO clipped policy loss (DESIGN §1.4); per-token math shared with the CPU (rlhf/policy.h).
#include "rlhf/cuda_ops.h"
#include "tokens.cuh"

namespace rk::gpu {
namespace {

struct PolicyOp {
  using S = PolicySlot;
  static constexpr int K = S::K;
  static constexpr bool kMaxLast = true;
  static_assert(S::ratio_max == K - 1, "the max accumulator is the last");
  FloatIn logp, old_logp, advantages;
  PolicyOptions opts;
  float *per_token, *grad;
  __device__ void masked(int64_t t) const { per_token[t] = 0.f; grad[t] = 0.f; }
  __device__ void operator()(int64_t t, float w, float* acc) const {
    const float lp = read(logp, t), old = read(old_logp, t);
    const PolicyToken s = policy_token(lp, old, read(advantages, t), opts);
    per_token[t] = s.loss;
    grad[t] = w * s.grad;
    acc[S::loss] += w * s.loss;
    acc[S::approx_kl] += w * (old - lp);
    acc[S::ratio_sum] += s.ratio;
    acc[S::count] += 1.f;
    acc[S::clipped_low] += s.clipped_low;
    acc[S::clipped_high] += s.clipped_high;
    acc[S::dual_clipped] += s.dual_clipped;
    acc[S::ratio_max] = fmaxf(acc[S::ratio_max], s.ratio);
  }
};

}  // namespace

cudaError_t policy_loss(const PolicyLossParams& p, float* result, void* scratch, cudaStream_t stream) {
  return launch_token_op(p.batch, PolicyOp{p.logp, p.old_logp, p.advantages, p.opts, p.per_token, p.grad}, result, scratch, stream);
}

}  // namespace rk::gpu
