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
    // a uniform K: prompt n starts at n·K (reward_first), and there are no offsets to copy or check
    if (a.has("K")) {
      p.K = a.count("K");
      if (p.K < 1 || total % p.K != 0) throw_range(a.env(), name, "scores.length must be a multiple of K = " + std::to_string(p.K));
      p.N = total / p.K;
    } else {
      p.N = groups(a, "offsets", total, p.offsets);
    }
    p.ignore_index = a.int32("ignoreIndex");
    if (a.has("chosen")) {
      p.chosen = a.int32s("chosen", p.N);
      const int32_t* chosen = a.host_view(p.chosen);
      const int32_t* offsets = a.host_view(p.offsets);
      if (chosen == nullptr) a.device_indices("chosen", "in [0, K) for its prompt's K candidates, or equal to ignoreIndex (" + std::to_string(p.ignore_index) + ")");
      else if (p.K > 0) check_uniform_labels(a, chosen);
      else a.check_group_labels("chosen", chosen, offsets, p.N, p.ignore_index);
    } else {
      p.target_probs = a.floats("targetProbs", total);
    }
    p.margins = a.floats_or_absent("margins", total);
    p.center_coef = float(a.number("centerCoef"));
    p.reduction = a.reduction();
    p.probs = out.make("probs", total);
    p.grad = out.make("gradScores", total);
    // per-prompt losses are an output of reduction 'none' only (the cpu kernel sums without them)
    p.losses = p.reduction == Reduction::none || a.on_gpu() ? out.make("losses", p.N) : nullptr;
  }
  // every chosen[n] in [0, K) or equal to ignoreIndex, the first bad prompt named; counts the ignored ones
  // for the kernel in the same pass (p.ignored)
  void check_uniform_labels(const Args& a, const int32_t* chosen) {
    const int64_t N = p.N;
    const int32_t skip = p.ignore_index, last = int32_t(std::min<int64_t>(p.K - 1, INT32_MAX));
    int32_t flagged = 0;  // int32 lanes: vectorised (the count in blocks of 2^30 prompts)
    int64_t total = 0;
    for (int64_t n0 = 0; n0 < N; n0 += int64_t(1) << 30) {
      const int64_t n1 = std::min(N, n0 + (int64_t(1) << 30));
      int32_t ignored = 0;
      for (int64_t n = n0; n < n1; n++) {
        const int32_t c = chosen[n];
        flagged |= ((c < 0) | (c > last)) & (c != skip);
        ignored += c == skip;
      }
      total += ignored;
    }
    p.ignored = total;
    const bool ok = flagged == 0;
    if (ok) return;
    int64_t bad = 0;
    while ((chosen[bad] >= 0 && chosen[bad] < p.K) || chosen[bad] == p.ignore_index) bad++;
    throw_range(a.env(), name, "chosen[" + std::to_string(bad) + "] must be in [0, " + std::to_string(p.K) + ") or equal to ignoreIndex (" +
                                   std::to_string(p.ignore_index) + "), got " + std::to_string(chosen[bad]));
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
