// Bindings of the vocabulary ops (src/vocab.ts → native/include/rlhf/vocab.h).
#include "bindings.h"
#if RLHF_KERNELS_HAVE_CUDA
#include "rlhf/cuda_ops.h"
#endif
#include "rlhf/vocab.h"

namespace rk::addon {
namespace {

// logits [N, V], targets [N] in [0, V) or ignoreIndex, and the temperature: what every vocabulary job reads
// first; returns N·V, checked. An optional temperature (crossEntropy's, newer than its other arguments) is 1
// when the key is absent.
int64_t read_rows(const Args& a, VocabRowParams& p, bool optional_temperature = false) {
  p.N = a.count("N");
  p.V = a.count("V");
  const int64_t NV = a.product("logits", p.N, p.V);
  p.logits = a.floats("logits", NV);
  p.targets = a.int32s("targets", p.N);
  p.ignore_index = a.int32("ignoreIndex");
  a.check_indices("targets", p.targets, p.N, p.V, true, p.ignore_index);
  if (!optional_temperature || a.has("temperature")) temperature(a, p.N, p.temperature, p.temperatures);
  return NV;
}

struct LogProbsJob : Job {
  static constexpr const char* name = "logProbs";
  using Job::Job;
  LogProbsParams p;
  void prepare(const Args& a) {
    read_rows(a, p);
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
};

struct LogProbsBackwardJob : Job {
  static constexpr const char* name = "logProbsBackward";
  using Job::Job;
  LogProbsBackwardParams p;
  void prepare(const Args& a) {
    const int64_t NV = read_rows(a, p);
    p.lse = a.floats("lse", p.N);
    p.grad_logp = a.floats_or_absent("gradLogp", p.N);
    p.grad_entropy = a.floats_or_absent("gradEntropy", p.N);
    p.entropy = a.floats_or_absent("entropy", p.N);
    p.grad_sum_prob_sq = a.floats_or_absent("gradSumProbSq", p.N);
    p.sum_prob_sq = a.floats_or_absent("sumProbSq", p.N);
    p.grad = out.make("gradLogits", NV);
  }
  void run() override { log_probs_backward(p); }
#if RLHF_KERNELS_HAVE_CUDA
  cudaError_t launch(GpuCall& g) override { return gpu::log_probs_backward(p, g.flags(), g.stream()); }
#endif
};

struct CrossEntropyJob : Job {
  static constexpr const char* name = "crossEntropy";
  using Job::Job;
  CrossEntropyParams p;
  RK_JOB_RESULT(CrossEntropyResult, RK_CROSS_ENTROPY_FIELDS)
  void prepare(const Args& a) {
    const int64_t NV = read_rows(a, p, true);
    p.reduction = a.reduction();
    p.label_smoothing = float(a.number("labelSmoothing"));
    p.z_loss = float(a.number("zLoss"));
    p.class_weights = a.floats_or_absent("classWeights", p.V);
    p.token_weights = a.floats_or_absent("tokenWeights", p.N);
    p.losses = out.make("losses", p.N);
    p.lse = out.make("lse", p.N);
    if (a.boolean("grad")) {
      if (a.grad16(p.logits.dtype)) p.grad16 = out.make16("gradLogits", NV, p.logits.dtype);
      else p.grad = out.make("gradLogits", NV);
    }
  }
  void run() override { r = cross_entropy(p); }
#if RLHF_KERNELS_HAVE_CUDA
  cudaError_t launch(GpuCall& g) override {
    if (p.grad16 && !gpu::cross_entropy_single_pass(p)) p.grad = static_cast<float*>(g.scratch(size_t(p.N * p.V) * sizeof(float), 1));
    return gpu::cross_entropy(p, g.result(), static_cast<float*>(g.scratch(size_t(gpu::cross_entropy_scratch_floats(p.N)) * sizeof(float))), g.flags(), g.stream());
  }
  void collect(const float* result) override { r = gpu::cross_entropy_result(result); }
#endif
};

struct KeptLogProbsJob : Job {
  static constexpr const char* name = "keptLogProbs";
  using Job::Job;
  KeptLogProbsParams p;
  void prepare(const Args& a) {
    const int64_t NV = read_rows(a, p);
    if (a.has("keepOffsets")) {
      // CSR, copied before it is checked: offsets from 0 to the token count, each row's tokens strictly increasing in [0, V)
      int64_t n = 0, nnz = 0;
      p.keep_offsets = a.offsets("keepOffsets", n);
      if (n != p.N + 1) throw_range(a.env(), name, "keepOffsets must have N + 1 elements");
      p.keep_tokens = a.typed<int32_t, napi_int32_array>("keepTokens", -1, "an Int32Array", &nnz);
      a.check_offsets("keepOffsets", p.keep_offsets, n, nnz);
      const int32_t* off = a.host_view(p.keep_offsets);
      const int32_t* tok = a.host_view(p.keep_tokens);
      if (tok == nullptr && nnz > 0) throw_type(a.env(), name, "keepTokens must be host data (an Int32Array)");
      for (int64_t row = 0; row < p.N; row++) {
        for (int64_t i = off[row]; i < off[row + 1]; i++) {
          if (tok[i] < 0 || tok[i] >= p.V || (i > off[row] && tok[i] <= tok[i - 1])) {
            throw_range(a.env(), name, "keepTokens[" + std::to_string(i) + "] must be in [0, V) and above the row's previous token");
          }
        }
      }
    } else {
      // copied (uploaded on the cuda backend from that copy), then checked: host data only
      p.top_k = a.typed<int32_t, napi_int32_array>("topK", p.N, "an Int32Array");
      p.top_p = a.typed<float, napi_float32_array>("topP", p.N, "a Float32Array");
      p.min_p = a.typed<float, napi_float32_array>("minP", p.N, "a Float32Array");
      const int32_t* k = a.host_view(p.top_k);
      const float* tp = a.host_view(p.top_p);
      const float* mp = a.host_view(p.min_p);
      if (p.N > 0 && (k == nullptr || tp == nullptr || mp == nullptr)) throw_type(a.env(), name, "topK, topP and minP must be host data (typed arrays)");
      for (int64_t n = 0; n < p.N; n++) {
        if (k[n] < 0) throw_range(a.env(), name, "topK must be >= 0");
        if (!(tp[n] > 0.f && tp[n] <= 1.f)) throw_range(a.env(), name, "topP must be in (0, 1]");
        if (!(mp[n] >= 0.f && mp[n] <= 1.f)) throw_range(a.env(), name, "minP must be in [0, 1]");
      }
    }
    p.grad_logp = a.floats_or_absent("gradLogp", p.N);
    p.logp = out.make("logp", p.N);
    p.lse = out.make("lse", p.N);
    if (p.grad_logp.present()) p.grad = out.make("gradLogits", NV);
  }
  void run() override { kept_log_probs(p); }
#if RLHF_KERNELS_HAVE_CUDA
  cudaError_t launch(GpuCall& g) override { return gpu::kept_log_probs(p, g.flags(), g.stream()); }
#endif
};

}  // namespace

void export_vocab(Napi::Env env, Napi::Object exports) {
  export_job<KeptLogProbsJob>(env, exports);
  export_job<LogProbsJob>(env, exports);
  export_job<LogProbsBackwardJob>(env, exports);
  export_job<CrossEntropyJob>(env, exports);
}

}  // namespace rk::addon
