// Bindings of the KL ops (src/kl.ts → native/include/rlhf/kl.h).
#include "bindings.h"
#if RLHF_KERNELS_HAVE_CUDA
#include "rlhf/cuda_ops.h"
#endif
#include "rlhf/kl.h"

namespace rk::addon {

// the KL estimators' names in ordinal order (src/choices.ts KL_ESTIMATORS)
constexpr const char* kKlEstimators[] = {RK_KL_ESTIMATORS(RK_ENUM_NAME)};

namespace {

struct KlDivergenceJob : Job {
  static constexpr const char* name = "klDivergence";
  using Job::Job;
  KlDivergenceParams p;
  RK_JOB_RESULT(KlDivergenceResult, RK_KL_DIVERGENCE_FIELDS)
  void prepare(const Args& a) {
    p.N = a.count("N");
    p.V = a.count("V");
    const int64_t NV = a.product("pLogits", p.N, p.V);
    p.p_logits = a.floats("pLogits", NV);
    p.q_logits = a.floats("qLogits", NV);
    if (p.p_logits.dtype != p.q_logits.dtype) throw_type(a.env(), name, "pLogits and qLogits must have the same dtype");
    p.mask = a.mask("mask", p.N);
    p.reduction = a.reduction();
    temperature(a, p.N, p.temperature, p.temperatures);
    p.per_row = out.make("perRow", p.N);
    const bool half = (a.boolean("gradQ") || a.boolean("gradP")) && a.grad16(p.p_logits.dtype);
    if (a.boolean("gradQ")) {
      if (half) p.grad_q16 = out.make16("gradQ", NV, p.p_logits.dtype);
      else p.grad_q = out.make("gradQ", NV);
    }
    if (a.boolean("gradP")) {
      if (half) p.grad_p16 = out.make16("gradP", NV, p.p_logits.dtype);
      else p.grad_p = out.make("gradP", NV);
    }
  }
  void run() override { r = kl_divergence(p); }
#if RLHF_KERNELS_HAVE_CUDA
  cudaError_t launch(GpuCall& g) override {
    const size_t staging = size_t(p.N * p.V) * sizeof(float);
    if (p.grad_q16 && !gpu::kl_single_pass(p)) p.grad_q = static_cast<float*>(g.scratch(staging, 1));
    if (p.grad_p16) p.grad_p = static_cast<float*>(g.scratch(staging, 2));
    return gpu::kl_divergence(p, g.result(), static_cast<float*>(g.scratch(size_t(p.N + 1) * sizeof(float))), g.stream());
  }
  void collect(const float* result) override { r = gpu::kl_divergence_result(result); }
#endif
};

struct KlPenaltyJob : Job {
  static constexpr const char* name = "klPenalty";
  using Job::Job;
  KlPenaltyParams p;
  RK_JOB_RESULT(KlPenaltyResult, RK_KL_PENALTY_FIELDS)
  void prepare(const Args& a) {
    p.batch = a.token_batch();
    const int64_t M = p.batch.tokens;
    p.logp = a.floats("logp", M);
    p.ref_logp = a.floats("refLogp", M);
    p.opts.estimator = a.choice<KlEstimator>("estimator", kKlEstimators);
    p.opts.log_ratio_clamp = log_ratio_clamp(a);
    p.opts.output_clamp = float(a.optional("outputClamp"));
    p.per_token = out.make("perToken", M);
    p.grad = out.make("gradLogp", M);
  }
  void run() override { r.loss = kl_penalty(p); }
#if RLHF_KERNELS_HAVE_CUDA
  cudaError_t launch(GpuCall& g) override {
    return gpu::kl_penalty(p, g.result(), g.scratch(gpu::kl_penalty_scratch_bytes(p)), g.stream());
  }
  void collect(const float* result) override { r = gpu::kl_penalty_result(result); }
#endif
};

}  // namespace

void export_kl(Napi::Env env, Napi::Object exports) {
  export_job<KlDivergenceJob>(env, exports);
  export_job<KlPenaltyJob>(env, exports);
  export_enum(env, exports, "KL_ESTIMATORS", kKlEstimators);
}

}  // namespace rk::addon
