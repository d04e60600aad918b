// CUDA PPO clipped policy loss (DESIGN §1.4); per-token math shared with the CPU (rlhf/policy.h).
#include "rlhf/cuda_ops.h"
#include "tokens.cuh"

namespace rk::gpu {
namespace {

struct PolicyOp {
  static constexpr int K = 8;
  static constexpr bool kMaxLast = true;
  FloatIn logp, old_logp, advantages;
  PolicyOptions opts;
  float *per_token, *grad;
  __device__ void masked(int64_t t) const { per_token[t] = 0.f; grad[t] = 0.f; }
  __device__ void operator()(int64_t t, float w, float* acc) const {
    const float lp = read(logp, t), old = read(old_logp, t);
    const PolicyToken s = policy_token(lp, old, read(advantages, t), opts);
    per_token[t] = s.loss;
    grad[t] = w * s.grad;
    acc[0] += w * s.loss;
    acc[1] += w * (old - lp);
    acc[2] += s.ratio;
    acc[3] += 1.f;
    acc[4] += s.clipped_low;
    acc[5] += s.clipped_high;
    acc[6] += s.dual_clipped;
    acc[7] = fmaxf(acc[7], s.ratio);
  }
};

}  // namespace

size_t token_scratch_bytes(int64_t num_seqs, int K) {
  return size_t((num_seqs * 4 + 255) / 256) * 256 + 64 * sizeof(float) + size_t(num_seqs) * K * sizeof(float);
}

cudaError_t policy_loss(const PolicyLossParams& p, float* result, void* scratch, cudaStream_t stream) {
  return launch_token_op(p.batch, PolicyOp{p.logp, p.old_logp, p.advantages, p.opts, p.per_token, p.grad}, result, scratch, stream);
}

}  // namespace rk::gpu
