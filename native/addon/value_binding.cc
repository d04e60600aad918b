// Binding of the value loss (src/value.ts → native/include/rlhf/value.h).
#include "bindings.h"
#if RLHF_KERNELS_HAVE_CUDA
#include "rlhf/cuda_ops.h"
#endif
#include "rlhf/value.h"

namespace rk::addon {
namespace {

struct ValueLossJob : Job {
  static constexpr const char* name = "valueLoss";
  using Job::Job;
  ValueLossParams p;
  RK_JOB_RESULT(ValueLossResult, RK_VALUE_LOSS_FIELDS)
  void prepare(const Args& a) {
    p.batch = a.token_batch();
    const int64_t M = p.batch.tokens;
    p.values = a.floats("values", M);
    p.returns = a.floats("returns", M);
    p.old_values = a.floats_or_absent("oldValues", M);
    p.opts.clip = float(a.optional("clip"));
    if (is_on(p.opts.clip) && !p.old_values.present()) throw_type(a.env(), name, "oldValues must be given when clip is set");
    p.opts.half = a.boolean("half");
    p.per_token = out.make("perToken", M);
    p.grad = out.make("gradValues", M);
  }
  void run() override { r = value_loss(p); }
#if RLHF_KERNELS_HAVE_CUDA
  cudaError_t launch(GpuCall& g) override {
    return gpu::value_loss(p, g.result(), g.scratch(gpu::value_scratch_bytes(p)), g.stream());
  }
  void collect(const float* result) override { r = gpu::value_result(result); }
#endif
};

}  // namespace

void export_value(Napi::Env env, Napi::Object exports) { export_job<ValueLossJob>(env, exports); }

}  // namespace rk::addon
