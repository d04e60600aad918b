// Binding of the PPO policy loss (src/policy.ts → native/include/rlhf/policy.h).
#include <initializer_list>
#include <type_traits>

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
  // the variant options (src/options.ts policyVariantOptions); absent: token-level PPO, no correction
  auto pick = [&](const char* key, std::initializer_list<const char*> names, auto& out) {
    if (!a.has(key)) return;
    const std::string v = a.string(key);
    int i = 0;
    for (const char* n : names) {
      if (v == n) {
        out = static_cast<std::remove_reference_t<decltype(out)>>(i);
        return;
      }
      i++;
    }
    throw_range(a.env(), a.op(), std::string("unknown ") + key + " " + v);
  };
  pick("variant", {"ppo", "cispo", "dppo-tv", "dppo-kl"}, o.variant);
  pick("isLevel", {"token", "sequence", "sequence-token"}, o.is_level);
  pick("rolloutCorrection", {"none", "token-truncate", "token-mask", "sequence-truncate", "sequence-mask"}, o.rollout);
  if (o.variant != PolicyVariant::ppo) o.dual_clip = 0.f;
  o.ratio_cap = float(a.number_or("ratioCap", 20.0));
  o.rollout_high = float(a.number_or("rolloutIsHigh", 2.0));
  o.rollout_low = float(a.number_or("rolloutIsLow", 1.0 / double(o.rollout_high)));
  o.opsm_delta = a.has("opsmDelta") ? float(a.number("opsmDelta")) : -1.f;
  if (!(o.ratio_cap > 0.f) || !(o.rollout_high > 0.f) || !(o.rollout_low >= 0.f) || !(o.opsm_delta >= 0.f || !a.has("opsmDelta"))) {
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

void export_policy(Napi::Env env, Napi::Object exports) { export_job<PolicyLossJob>(env, exports); }

}  // namespace rk::addon
