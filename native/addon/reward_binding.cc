// Binding of the reward-model loss (src/reward.ts → native/include/rlhf/reward.h).
#include "bindings.h"
#if RLHF_KERNELS_HAVE_CUDA
#include "rlhf/cuda_ops.h"
#endif
#include "rlhf/reward.h"

namespace rk::addon {
namespace {

struct RewardLossJob : Job {
  static constexpr const char* name = "rewardLoss";
  using Job::Job;
  RewardLossParams p;
  RK_JOB_RESULT(RewardLossResult, RK_REWARD_LOSS_FIELDS)
  void prepare(const Args& a) {
    p.scores = a.floats("scores", -1);
    const int64_t total = p.scores.size;
    p.N = groups(a, "offsets", total, p.offsets);
    p.ignore_index = a.int32("ignoreIndex");
    if (a.has("chosen")) {
      p.chosen = a.int32s("chosen", p.N);
      const int32_t* chosen = a.host_view(p.chosen);
      const int32_t* offsets = a.host_view(p.offsets);
      if (chosen == nullptr) a.device_indices("chosen", "in [0, K) for its prompt's K candidates, or equal to ignoreIndex (" + std::to_string(p.ignore_index) + ")");
      else a.check_group_labels("chosen", chosen, offsets, p.N, p.ignore_index);
    } else {
      p.target_probs = a.floats("targetProbs", total);
    }
    p.margins = a.floats_or_absent("margins", total);
    p.center_coef = float(a.number("centerCoef"));
    p.reduction = a.reduction();
    p.probs = out.make("probs", total);
    p.grad = out.make("gradScores", total);
    p.losses = out.make("losses", p.N);
  }
  void run() override { r = reward_loss(p); }
#if RLHF_KERNELS_HAVE_CUDA
  cudaError_t launch(GpuCall& g) override {
    return gpu::reward_loss(p, g.result(), g.scratch(gpu::reward_scratch_bytes(p.N)), g.flags(), g.stream());
  }
  void collect(const float* result) override { r = gpu::reward_result(result); }
#endif
};

}  // namespace

void export_reward(Napi::Env env, Napi::Object exports) { export_job<RewardLossJob>(env, exports); }

}  // namespace rk::addon
