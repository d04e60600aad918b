// Binding of the PPO policy loss (src/policy.ts → native/include/rlhf/policy.h).
#include "bindings.h"
#if RLHF_KERNELS_HAVE_CUDA
#include "rlhf/cuda_ops.h"
#endif
#include "rlhf/policy.h"

namespace rk::addon {

// the variant options' names in ordinal order (src/choices.ts)
constexpr const char* kPolicyVariants[] = {RK_POLICY_VARIANTS(RK_ENUM_NAME)};
constexpr const char* kIsLevels[] = {RK_IS_LEVELS(RK_ENUM_NAME)};
constexpr const char* kRolloutCorrections[] = {RK_ROLLOUT_CORRECTIONS(RK_ENUM_NAME)};

PolicyOptions read_policy_options(const Args& a) {
  PolicyOptions o;
  o.clip_low = float(a.number("clipLow"));
  o.clip_high = float(a.number("clipHigh"));
  o.dual_clip = float(a.optional("dualClip"));
  o.log_ratio_clamp = log_ratio_clamp(a);
  // the variant options (src/options.ts policyVariantOptions), enums as ordinals; absent: token-level PPO, no correction
  if (a.has("variant")) o.variant = a.choice<PolicyVariant>("variant", kPolicyVariants);
  if (a.has("isLevel")) o.is_level = a.choice<IsLevel>("isLevel", kIsLevels);
  if (a.has("rolloutCorrection")) o.rollout = a.choice<RolloutCorrection>("rolloutCorrection", kRolloutCorrections);
  if (o.variant != PolicyVariant::ppo) o.dual_clip = NAN;
  o.ratio_cap = float(a.number_or("ratioCap", 20.0));
  o.rollout_high = float(a.number_or("rolloutIsHigh", 2.0));
  o.rollout_low = float(a.number_or("rolloutIsLow", 1.0 / double(o.rollout_high)));
  o.opsm_delta = float(a.optional("opsmDelta"));
  if (!(o.ratio_cap > 0.f) || !(o.rollout_high > 0.f) || !(o.rollout_low >= 0.f) || !(o.opsm_delta >= 0.f || !is_on(o.opsm_delta))) {
    throw_range(a.env(), a.op(), "ratioCap and rolloutIsHigh must be > 0, rolloutIsLow and opsmDelta ≥ 0");
  }
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
    p.behavior_logp = a.floats_or_absent("behaviorLogp", M);
    p.opts = read_policy_options(a);
    if (p.opts.rollout != RolloutCorrection::none && !p.behavior_logp.present()) throw_type(a.env(), name, "rolloutCorrection needs behaviorLogp");
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

void export_policy(Napi::Env env, Napi::Object exports) {
  export_job<PolicyLossJob>(env, exports);
  export_enum(env, exports, "POLICY_VARIANTS", kPolicyVariants);
  export_enum(env, exports, "IS_LEVELS", kIsLevels);
  export_enum(env, exports, "ROLLOUT_CORRECTIONS", kRolloutCorrections);
}

}  // namespace rk::addon
