// Bindings of the preference family (src/preference.ts → native/include/rlhf/preference.h).
#include "bindings.h"
#if RLHF_KERNELS_HAVE_CUDA
#include "rlhf/cuda_ops.h"
#endif
#include "rlhf/preference.h"

namespace rk::addon {

// preferenceLoss's types in ordinal order (src/choices.ts PREFERENCE_TYPES)
constexpr const char* kPreferenceTypes[] = {RK_PREFERENCE_TYPES(RK_ENUM_NAME)};

namespace {

struct SequenceLogProbsJob : Job {
  static constexpr const char* name = "sequenceLogProbs";
  using Job::Job;
  SequenceLogProbsParams p;
  void prepare(const Args& a) {
    p.batch = a.token_batch();
    p.logp = a.floats("logp", p.batch.tokens);
    // 'sum' or 'mean' (src/choices.ts SEQUENCE_REDUCTIONS), passed as its ordinal in the reductions' list
    const Reduction reduction = a.reduction();
    if (reduction == Reduction::none) throw_range(a.env(), name, "reduction must be the ordinal of 'sum' or 'mean'");
    p.mean = reduction == Reduction::mean;
    p.grad_seq = a.floats_or_absent("gradSeq", p.batch.num_seqs);
    p.seq_logp = out.make("seqLogp", p.batch.num_seqs);
    p.lengths = out.make("lengths", p.batch.num_seqs);
    if (p.grad_seq.present()) p.grad_logp = out.make("gradLogp", p.batch.tokens);
  }
  void run() override { sequence_log_probs(p); }
#if RLHF_KERNELS_HAVE_CUDA
  cudaError_t launch(GpuCall& g) override { return gpu::sequence_log_probs(p, g.stream()); }
#endif
};

struct PreferenceLossJob : Job {
  static constexpr const char* name = "preferenceLoss";
  using Job::Job;
  PreferenceLossParams p;
  RK_JOB_RESULT(PreferenceLossResult, RK_PREFERENCE_LOSS_FIELDS)
  void prepare(const Args& a) {
    p.logp = a.floats("logp", -1);
    const int64_t total = p.logp.size;
    p.N = groups(a, "offsets", total, p.offsets);
    const int32_t* offsets = a.host_view(p.offsets);
    p.type = a.choice<PreferenceType>("type", kPreferenceTypes);
    p.ref_logp = a.floats_or_absent("refLogp", total);
    if ((p.type == PreferenceType::simpo) == p.ref_logp.present()) {
      throw_type(a.env(), name, p.ref_logp.present() ? "refLogp must be absent for type 'simpo'" : "refLogp must be given (every type but 'simpo')");
    }
    p.lengths = a.floats_or_absent("lengths", total);
    if (p.type == PreferenceType::simpo && !p.lengths.present()) throw_type(a.env(), name, "lengths must be given for type 'simpo'");
    p.beta = a.number("beta");
    if (!(p.beta > 0 && p.beta < INFINITY)) throw_range(a.env(), name, "beta must be a finite number > 0");
    p.label_smoothing = a.number("labelSmoothing");
    const double e_max = p.type == PreferenceType::robust ? 0.5 : 1.0;
    if (!(p.label_smoothing >= 0 && (p.label_smoothing < e_max || (p.type != PreferenceType::robust && p.label_smoothing == 1.0)))) {
      throw_range(a.env(), name, "labelSmoothing must be in [0, 1] (robust: [0, 0.5))");
    }
    p.gamma = a.number("gamma");
    if (!std::isfinite(p.gamma)) throw_range(a.env(), name, "gamma must be finite");
    p.ignore_index = a.int32("ignoreIndex");
    p.reduction = a.reduction();
    if (a.has("chosen")) {
      p.chosen = a.int32s("chosen", p.N);
      const int32_t* chosen = a.host_view(p.chosen);
      if (chosen == nullptr) throw_type(a.env(), name, "chosen must be host data (an Int32Array), not a device tensor");
      a.check_group_labels("chosen", chosen, offsets, p.N, p.ignore_index);
    } else {
      p.ranking = a.int32s("ranking", total);
      const int32_t* ranking = a.host_view(p.ranking);
      if (ranking == nullptr) throw_type(a.env(), name, "ranking must be host data (an Int32Array), not a device tensor");
      std::vector<uint8_t> seen(size_t(total), 0);
      for (int64_t i = 0; i < p.N; i++) {
        const int64_t b = offsets[i], K = offsets[i + 1] - b;
        for (int64_t k = b; k < b + K; k++) {
          const int32_t j = ranking[k];
          if (j < 0 || j >= K || seen[size_t(b + j)]) {
            throw_range(a.env(), name, "ranking of prompt " + std::to_string(i) + " must be a permutation of 0.." + std::to_string(K - 1) + ", got " + std::to_string(j) + " at ranking[" + std::to_string(k) + "]");
          }
          seen[size_t(b + j)] = 1;
        }
      }
    }
    p.rewards = out.make("rewards", total);
    p.grad = out.make("gradLogp", total);
    if (a.has("refGrad") && a.boolean("refGrad")) {
      if (!p.ref_logp.present()) throw_type(a.env(), name, "refGrad needs refLogp");
      p.grad_ref = out.make("gradRefLogp", total);
    }
    p.losses = out.make("losses", p.N);
  }
  void run() override { r = preference_loss(p); }
#if RLHF_KERNELS_HAVE_CUDA
  cudaError_t launch(GpuCall& g) override {
    return gpu::preference_loss(p, g.result(), g.scratch(gpu::preference_scratch_bytes(p)), g.stream());
  }
  void collect(const float* result) override { r = gpu::preference_result(result); }
#endif
};

}  // namespace

void export_preference(Napi::Env env, Napi::Object exports) {
  export_job<SequenceLogProbsJob>(env, exports);
  export_job<PreferenceLossJob>(env, exports);
  export_enum(env, exports, "PREFERENCE_TYPES", kPreferenceTypes);
}

}  // namespace rk::addon
