// CUDA value loss (DESIGN §1.6); per-token math shared with the CPU (rlhf/value.h).
#include "rlhf/cuda_ops.h"
#include "tokens.cuh"

namespace rk::gpu {
namespace {

struct ValueOp {
  static constexpr int K = ValueSlot::K;
  static constexpr bool kMaxLast = false;
  FloatIn values, returns, old_values;
  ValueOptions opts;
  float *per_token, *grad;
  __device__ void masked(int64_t t) const { per_token[t] = 0.f; grad[t] = 0.f; }
  __device__ void operator()(int64_t t, float w, float* acc) const {
    float l, g;
    const bool clipped = value_token(read(values, t), read(returns, t), old_values.data ? read(old_values, t) : 0.f, opts, l, g);
    per_token[t] = l;
    grad[t] = w * g;
    acc[ValueSlot::loss] += w * l;
    acc[ValueSlot::clipped] += clipped;
    acc[ValueSlot::count] += 1.f;
  }
};

}  // namespace

cudaError_t value_loss(const ValueLossParams& p, float* result, void* scratch, cudaStream_t stream) {
  return launch_token_op(p.batch, ValueOp{p.values, p.returns, p.old_values, p.opts, p.per_token, p.grad}, result, scratch, stream);
}

}  // namespace rk::gpu
