// Binding of the fused PPO objective (src/ppo.ts → native/include/rlhf/ppo.h).
#include "bindings.h"
#if RLHF_KERNELS_HAVE_CUDA
#include "rlhf/cuda_ops.h"
#endif
#include "rlhf/ppo.h"

namespace rk::addon {

PolicyOptions read_policy_options(const Args& a);

// klEstimator's names in ordinal order: the sampled-token estimators, then the full KL (src/choices.ts
// PPO_KL_ESTIMATORS)
constexpr const char* kPpoKlEstimators[] = {RK_KL_ESTIMATORS(RK_ENUM_NAME) "full"};
constexpr int32_t kFullKl = int32_t(sizeof(kPpoKlEstimators) / sizeof(kPpoKlEstimators[0])) - 1;
constexpr const char* kTrustRegions[] = {RK_TRUST_REGIONS(RK_ENUM_NAME)};

namespace {

#define RK_METRIC_NAME(js, type, member) "metrics." js,

struct PpoLossJob : Job {
  static constexpr const char* name = "ppoLoss";
  using Job::Job;
  PpoLossParams p;
  PpoLossResult r;
  static constexpr const char* fields[] = {RK_PPO_LOSS_FIELDS(RK_FIELD_NAME)};
  static constexpr const char* metric_fields[] = {RK_PPO_METRICS_FIELDS(RK_FIELD_NAME)};
  void prepare(const Args& a) {
    p.batch = a.token_batch();
    const int64_t M = p.batch.tokens;
    p.V = a.count("V");
    const int64_t MV = a.product("logits", M, p.V);
    p.logits = a.floats("logits", MV);
    p.actions = a.int32s("actions", M);
    a.check_indices("actions", p.actions, M, p.V, false, 0);
    p.anchor_logits = a.floats_or_absent("anchorLogits", MV);
    if (p.anchor_logits.present() && p.anchor_logits.dtype != p.logits.dtype) {
      throw_type(a.env(), name, "the anchor logits must have the dtype of logits");
    }
    p.old_logp = a.floats_or_absent("oldLogp", M);
    if (!p.old_logp.present() && !p.anchor_logits.present()) throw_type(a.env(), name, "oldLogp (or oldLogits) must be given");
    p.ref_logp = a.floats_or_absent("refLogp", M);
    p.advantages = a.floats("advantages", M);
    p.behavior_logp = a.floats_or_absent("behaviorLogp", M);
    p.values = a.floats_or_absent("values", M);
    p.returns = a.floats_or_absent("returns", M);
    p.old_values = a.floats_or_absent("oldValues", M);
    temperature(a, M, p.temperature, p.temperatures);
    p.policy = read_policy_options(a);
    if (p.policy.rollout != RolloutCorrection::none && !p.behavior_logp.present()) throw_type(a.env(), name, "rolloutCorrection needs behaviorLogp");
    if (a.has("trustRegion")) p.trust_full = a.choice<TrustRegion>("trustRegion", kTrustRegions) == TrustRegion::full;
    if (p.trust_full && p.policy.variant != PolicyVariant::dppo_tv && p.policy.variant != PolicyVariant::dppo_kl) {
      throw_type(a.env(), name, "trustRegion 'full' belongs to variant 'dppo-tv' / 'dppo-kl'");
    }
    if (p.trust_full && !p.anchor_logits.present()) throw_type(a.env(), name, "trustRegion 'full' needs oldLogits");
    p.beta = float(a.number("beta"));
    p.c1 = float(a.number("c1"));
    const int32_t kl = a.choice<int32_t>("klEstimator", kPpoKlEstimators);
    p.full_kl = kl == kFullKl;
    if (p.full_kl && !p.anchor_logits.present()) throw_type(a.env(), name, "klEstimator 'full' needs oldLogits or refLogits");
    if (!p.full_kl) p.kl.estimator = KlEstimator(kl);
    p.kl.log_ratio_clamp = p.policy.log_ratio_clamp;
    p.kl.output_clamp = float(a.optional("klOutputClamp"));
    p.value.clip = float(a.optional("valueClip"));
    if (is_on(p.value.clip) && !p.old_values.present()) throw_type(a.env(), name, "oldValues must be given when valueClip is set");
    p.value.half = a.boolean("half");
    if (a.grad16(p.logits.dtype)) p.grad_logits16 = out.make16("gradLogits", MV, p.logits.dtype);
    else p.grad_logits = out.make("gradLogits", MV);
    p.logp = out.make("logp", M);
    if (p.values.present() && p.returns.present()) p.grad_values = out.make("gradValues", M);
  }
  void run() override { r = ppo_loss(p); }
#if RLHF_KERNELS_HAVE_CUDA
  cudaError_t launch(GpuCall& g) override {
    if (p.grad_logits16 && !gpu::ppo_single_pass(p)) p.grad_logits = static_cast<float*>(g.scratch(size_t(p.batch.tokens * p.V) * sizeof(float), 1));
    return gpu::ppo_loss(p, g.result(), g.scratch(gpu::ppo_scratch_bytes(p)), g.flags(), g.stream());
  }
  void collect(const float* result) override { r = gpu::ppo_result(result); }
#endif
  // the loss fields, then the metrics as a nested object (result_of: a scalar "g.x" goes to object g)
  static constexpr const char* result_names[] = {RK_PPO_LOSS_FIELDS(RK_FIELD_NAME) RK_PPO_METRICS_FIELDS(RK_METRIC_NAME)};
  static_assert(std::size(result_names) <= kMaxScalars);
  Scalars scalars(double* s) const override {
    size_t i = 0;
    RK_PPO_LOSS_FIELDS(RK_FIELD_STORE)
    RK_PPO_METRICS_FIELDS(RK_FIELD_STORE)
    return {result_names, i};
  }
};

}  // namespace

void export_ppo(Napi::Env env, Napi::Object exports) {
  export_job<PpoLossJob>(env, exports);
  export_fields(env, exports, std::string(PpoLossJob::name) + ".metrics", PpoLossJob::metric_fields);
  export_enum(env, exports, "PPO_KL_ESTIMATORS", kPpoKlEstimators);
  export_enum(env, exports, "TRUST_REGIONS", kTrustRegions);
}

}  // namespace rk::addon
