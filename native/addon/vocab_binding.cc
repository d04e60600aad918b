// Bindings of the vocabulary ops (src/vocab.ts → native/include/rlhf/vocab.h).
#include "bindings.h"
#if RLHF_KERNELS_HAVE_CUDA
#include "rlhf/cuda_ops.h"
#endif
#include "rlhf/vocab.h"

namespace rk::addon {
namespace {

// logits [N, V], targets [N] in [0, V) or ignoreIndex: what every vocabulary job reads first
struct Rows {
  FloatIn logits;
  int64_t N, V, NV;  // NV = N * V, checked
  const int32_t* targets;
  int32_t ignore_index;
};

Rows read_rows(const Args& a) {
  Rows r;
  r.N = a.count("N");
  r.V = a.count("V");
  r.NV = a.product("logits", r.N, r.V);
  r.logits = a.floats("logits", r.NV);
  r.targets = a.int32s("targets", r.N);
  r.ignore_index = a.int32("ignoreIndex");
  a.check_indices("targets", r.targets, r.N, r.V, true, r.ignore_index);
  return r;
}

struct LogProbsJob : Job {
  static constexpr const char* name = "logProbs";
  using Job::Job;
  LogProbsParams p;
  void prepare(const Args& a) {
    const Rows r = read_rows(a);
    p.logits = r.logits; p.N = r.N; p.V = r.V; p.targets = r.targets; p.ignore_index = r.ignore_index;
    temperature(a, p.N, p.temperature, p.temperatures);
    p.logp = out.make("logp", p.N);
    p.lse = out.make("lse", p.N);
    if (a.boolean("entropy")) p.entropy = out.make("entropy", p.N);
    if (a.boolean("sumProbSq")) p.sum_prob_sq = out.make("sumProbSq", p.N);
    if (a.boolean("maxProb")) {
      if (p.V > (int64_t(1) << 24)) throw_range(a.env(), name, "maxProb needs V <= 2^24 (the token is returned through float32)");
      p.max_prob = out.make("maxProb", p.N);
      p.max_token = out.make("maxToken", p.N);
    }
  }
  void run() override { log_probs(p); }
#if RLHF_KERNELS_HAVE_CUDA
  cudaError_t launch(GpuCall& g) override { return gpu::log_probs(p, g.flags(), g.stream()); }
#endif
  void finish(Napi::Object) const override {}
};

struct LogProbsBackwardJob : Job {
  static constexpr const char* name = "logProbsBackward";
  using Job::Job;
  LogProbsBackwardParams p;
  void prepare(const Args& a) {
    const Rows r = read_rows(a);
    p.logits = r.logits; p.N = r.N; p.V = r.V; p.targets = r.targets; p.ignore_index = r.ignore_index;
    temperature(a, p.N, p.temperature, p.temperatures);
    p.lse = a.floats("lse", p.N);
    p.grad_logp = a.floats_or_absent("gradLogp", p.N);
    p.grad_entropy = a.floats_or_absent("gradEntropy", p.N);
    p.entropy = a.floats_or_absent("entropy", p.N);
    p.grad_sum_prob_sq = a.floats_or_absent("gradSumProbSq", p.N);
    p.sum_prob_sq = a.floats_or_absent("sumProbSq", p.N);
    p.grad = out.make("gradLogits", r.NV);
  }
  void run() override { log_probs_backward(p); }
#if RLHF_KERNELS_HAVE_CUDA
  cudaError_t launch(GpuCall& g) override { return gpu::log_probs_backward(p, g.flags(), g.stream()); }
#endif
  void finish(Napi::Object) const override {}
};

struct CrossEntropyJob : Job {
  static constexpr const char* name = "crossEntropy";
  using Job::Job;
  CrossEntropyParams p;
  RK_JOB_RESULT(CrossEntropyResult, RK_CROSS_ENTROPY_FIELDS)
  void prepare(const Args& a) {
    const Rows rows = read_rows(a);
    p.logits = rows.logits; p.N = rows.N; p.V = rows.V; p.targets = rows.targets; p.ignore_index = rows.ignore_index;
    p.reduction = a.reduction();
    p.label_smoothing = float(a.number("labelSmoothing"));
    p.z_loss = float(a.number("zLoss"));
    p.class_weights = a.floats_or_absent("classWeights", p.V);
    p.token_weights = a.floats_or_absent("tokenWeights", p.N);
    p.losses = out.make("losses", p.N);
    p.lse = out.make("lse", p.N);
    if (a.boolean("grad")) {
      if (a.grad16(p.logits.dtype)) p.grad16 = out.make16("gradLogits", rows.NV, p.logits.dtype);
      else p.grad = out.make("gradLogits", rows.NV);
    }
  }
  void run() override { r = cross_entropy(p); }
#if RLHF_KERNELS_HAVE_CUDA
  cudaError_t launch(GpuCall& g) override {
    if (p.grad16 && !gpu::cross_entropy_single_pass(p)) p.grad = static_cast<float*>(g.scratch(size_t(p.N * p.V) * sizeof(float), 1));
    return gpu::cross_entropy(p, g.result(), static_cast<float*>(g.scratch(size_t(p.N + 1) * sizeof(float))), g.flags(), g.stream());
  }
  void collect(const float* result) override { r = gpu::cross_entropy_result(result); }
#endif
};

}  // namespace

void export_vocab(Napi::Env env, Napi::Object exports) {
  export_job<LogProbsJob>(env, exports);
  export_job<LogProbsBackwardJob>(env, exports);
  export_job<CrossEntropyJob>(env, exports);
}

}  // namespace rk::addon
