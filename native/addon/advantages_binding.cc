// Bindings of the advantage estimators (src/advantages.ts → native/include/rlhf/advantages.h).
#include "bindings.h"
#if RLHF_KERNELS_HAVE_CUDA
#include "rlhf/cuda_ops.h"
#endif
#include "rlhf/advantages.h"

namespace rk::addon {
namespace {

// the group methods' names in ordinal order (src/choices.ts GROUP_METHODS)
constexpr const char* kGroupMethods[] = {RK_GROUP_METHODS(RK_ENUM_NAME)};

struct GaeJob : Job {
  static constexpr const char* name = "gae";
  using Job::Job;
  GaeParams p;
  void prepare(const Args& a) {
    Args layout = a.object("layout");
    const int64_t M = layout.count("tokens");
    int64_t n = 0;
    p.offsets = layout.offsets("offsets", n);
    layout.check_offsets("layout.offsets", p.offsets, n, M);
    p.num_seqs = n - 1;
    p.rewards = a.floats("rewards", M);
    p.values = a.floats("values", M);
    p.last_values = a.floats_or_absent("lastValues", p.num_seqs);
    p.mask = a.mask("mask", M);
    p.gamma = a.number("gamma");
    p.lambda = a.number("lambda");
    p.advantages = out.make("advantages", M);
    p.returns = out.make("returns", M);
  }
  void run() override { gae(p); }
#if RLHF_KERNELS_HAVE_CUDA
  cudaError_t launch(GpuCall& g) override { return gpu::gae(p, g.stream()); }
#endif
};

struct WhitenJob : Job {
  static constexpr const char* name = "whiten";
  using Job::Job;
  WhitenParams p;
  void prepare(const Args& a) {
    p.values = a.floats("values", -1);
    p.mask = a.mask("mask", p.values.size);
    p.shift_mean = a.boolean("shiftMean");
    p.unbiased = a.boolean("unbiased");
    p.eps = positive(a, "eps");
    p.out = out.make("out", p.values.size);
  }
  void run() override { whiten(p); }
#if RLHF_KERNELS_HAVE_CUDA
  cudaError_t launch(GpuCall& g) override { return gpu::whiten(p, g.scratch(gpu::whiten_scratch_bytes(p.values.size)), g.stream()); }
#endif
};

struct GroupAdvantagesJob : Job {
  static constexpr const char* name = "groupAdvantages";
  using Job::Job;
  GroupAdvantagesParams p;
  void prepare(const Args& a) {
    p.scores = a.floats("scores", -1);
    if (a.has("groupSize")) {  // uniform groups: no offsets (src/advantages.ts passes them for cuda inputs)
      if (a.on_gpu()) throw_type(a.env(), a.op(), "groupSize is for host scores; cuda takes offsets");
      p.group_size = a.count("groupSize");
      if (p.group_size < 1 || p.scores.size % p.group_size != 0) {
        throw_range(a.env(), a.op(), "groupSize must be ≥ 1 and divide the score count " + std::to_string(p.scores.size));
      }
      p.num_groups = p.scores.size / p.group_size;
    } else {
      p.num_groups = groups(a, "offsets", p.scores.size, p.offsets);
    }
    p.method = a.choice<GroupMethod>("method", kGroupMethods);
    p.eps = positive(a, "eps");
    p.unbiased = a.boolean("unbiased");
    p.out = out.make("out", p.scores.size);
  }
  void run() override { group_advantages(p); }
#if RLHF_KERNELS_HAVE_CUDA
  cudaError_t launch(GpuCall& g) override { return gpu::group_advantages(p, g.stream()); }
#endif
};

}  // namespace

void export_advantages(Napi::Env env, Napi::Object exports) {
  export_job<GaeJob>(env, exports);
  export_job<WhitenJob>(env, exports);
  export_job<GroupAdvantagesJob>(env, exports);
  export_enum(env, exports, "GROUP_METHODS", kGroupMethods);
}

}  // namespace rk::addon
