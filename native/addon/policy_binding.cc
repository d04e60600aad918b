// Binding of the PPO policy loss (src/policy.ts → native/include/rlhf/policy.h).
#include "bindings.h"
#if RLHF_KERNELS_HAVE_CUDA
#include "rlhf/cuda_ops.h"
#endif
#include "rlhf/policy.h"

namespace rk::addon {

PolicyOptions read_policy_options(const Args& a) {
  PolicyOptions o;
  o.clip_low = float(a.number("clipLow"));
  o.clip_high = float(a.number("clipHigh"));
  o.dual_clip = float(a.optional("dualClip"));
  o.log_ratio_clamp = log_ratio_clamp(a);
  return o;
}

namespace {

struct PolicyLossJob : Job {
  static constexpr const char* name = "policyLoss";
  using Job::Job;
  PolicyLossParams p;
  RK_JOB_RESULT(PolicyLossResult, RK_POLICY_LOSS_FIELDS)
  void prepare(const Args& a) {
    p.batch = a.token_batch();
    const int64_t M = p.batch.tokens;
    p.logp = a.floats("logp", M);
    p.old_logp = a.floats("oldLogp", M);
    p.advantages = a.floats("advantages", M);
    p.opts = read_policy_options(a);
    p.per_token = out.make("perToken", M);
    p.grad = out.make("gradLogp", M);
  }
  void run() override { r = policy_loss(p); }
#if RLHF_KERNELS_HAVE_CUDA
  cudaError_t launch(GpuCall& g) override {
    return gpu::policy_loss(p, g.result(), g.scratch(gpu::policy_scratch_bytes(p)), g.stream());
  }
  void collect(const float* result) override { r = gpu::policy_result(result); }
#endif
};

}  // namespace

void export_policy(Napi::Env env, Napi::Object exports) { export_job<PolicyLossJob>(env, exports); }

}  // namespace rk::addon
