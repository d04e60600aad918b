// Module init of the rlhf-kernels addon: the op bindings, info() for backends(), and per-env instance data
// (so the addon loads in any number of worker_threads, each with its own state, freed with its env).
#include <napi.h>

#include <atomic>
#include <mutex>

#include "../cpu/floor.h"
#include "../cpu/parallel.h"
#include "../cpu/rowmath.h"
#include "bindings.h"
#include "completions.h"
#include "env.h"
#include "rlhf/device.h"
#include "scheduler.h"

namespace rk::addon {
namespace {

// The device query runs once per process (CUDA initialisation is process-wide and costs up to a second).
const DeviceQuery& devices() {
  static std::once_flag once;
  static DeviceQuery q;
  std::call_once(once, [] { q = query_devices(); });
  return q;
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const DeviceQuery& q = devices();
  Napi::Object o = Napi::Object::New(env);
  o.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
  o.Set("threads", Napi::Number::New(env, pool_threads()));
  o.Set("isa", Napi::String::New(env, isa_name(host_isa())));
  Napi::Object cuda = Napi::Object::New(env);
  cuda.Set("compiled", Napi::Boolean::New(env, q.compiled));
  cuda.Set("error", Napi::Number::New(env, q.error));
  cuda.Set("errorName", Napi::String::New(env, q.error_name));
  cuda.Set("errorString", Napi::String::New(env, q.error_string));
  cuda.Set("deviceCount", Napi::Number::New(env, q.count));
  cuda.Set("runtimeVersion", Napi::Number::New(env, q.runtime_version));
  cuda.Set("driverVersion", Napi::Number::New(env, q.driver_version));
  Napi::Array list = Napi::Array::New(env);
  for (int d = 0; d < q.count && d < 16; d++) {
    Napi::Object g = Napi::Object::New(env);
    g.Set("name", Napi::String::New(env, q.devices[d].name));
    g.Set("computeCapability", Napi::String::New(env, std::to_string(q.devices[d].major) + "." + std::to_string(q.devices[d].minor)));
    g.Set("totalMemory", Napi::Number::New(env, double(q.devices[d].total_memory)));
    g.Set("l2CacheBytes", Napi::Number::New(env, q.devices[d].l2_cache_bytes));
    list.Set(uint32_t(d), g);
  }
  cuda.Set("devices", list);
  o.Set("cuda", cuda);
  return o;
}

// setup({ errorClass, maxArrayLength, markAsUntransferable }), once per env: the class native failures are made
// of (coded_error in env.h), the engine's longest typed array (buffer.constants.MAX_LENGTH; check_host_array),
// and worker_threads.markAsUntransferable for the result pool's buffers (env.h ResultPool).
Napi::Value Setup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[0].IsObject() ? info[0].As<Napi::Object>() : Napi::Object::New(env);
  Napi::Value cls = o.Get("errorClass");
  Napi::Value max = o.Get("maxArrayLength");
  if (!cls.IsFunction()) throw_type(env, "setup", "errorClass must be a constructor");
  const double m = max.IsUndefined() ? 0 : max.IsNumber() ? max.As<Napi::Number>().DoubleValue() : -1;
  if (!(m >= 0 && m <= 9007199254740991.0)) throw_type(env, "setup", "maxArrayLength must be a count (or absent)");
  EnvData* data = env.GetInstanceData<EnvData>();
  data->error_class = Napi::Persistent(cls.As<Napi::Function>());
  const Napi::Value mark = o.Get("markAsUntransferable");
  if (mark.IsFunction()) data->pool.untransferable = Napi::Persistent(mark.As<Napi::Function>());
  else data->pool.untransferable.Reset();
  if (m > 0) data->max_array_length = int64_t(m);
  return env.Undefined();
}

// The host benchmark's floor probe (bench/host.js): hostFloor(bytes) → { readGBs, expNs, isa }, one thread.
Napi::Value HostFloor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const double bytes = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : 0;
  if (!(bytes >= 1 << 20 && bytes <= double(int64_t(1) << 34))) {
    throw_range(env, "hostFloor", "bytes must be a number in [2^20, 2^34]");
  }
  const rk::HostFloor f = rk::measure_host_floor(int64_t(bytes));
  Napi::Object o = Napi::Object::New(env);
  o.Set("readGBs", Napi::Number::New(env, f.read_gbs));
  o.Set("expNs", Napi::Number::New(env, f.exp_ns));
  o.Set("isa", Napi::String::New(env, f.isa));
  return o;
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  static std::atomic<uint32_t> next_env{0};
  auto* data = new EnvData;
  data->id = next_env++;
  env.SetInstanceData(data);
  exports.Set("info", Napi::Function::New(env, Info, "info"));
  exports.Set("setup", Napi::Function::New(env, Setup, "setup"));
  exports.Set("hostFloor", Napi::Function::New(env, HostFloor, "hostFloor"));
  exports.Set("envId", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), info.Env().GetInstanceData<EnvData>()->id);
  }, "envId"));
#if RLHF_KERNELS_HAVE_CUDA
  exports.Set("cuda", Napi::Object::New(env));  // the cuda backend's entry points (export_job)
#endif
  export_vocab(env, exports);
  export_reward(env, exports);
  export_policy(env, exports);
  export_kl(env, exports);
  export_value(env, exports);
  export_advantages(env, exports);
  export_ppo(env, exports);
  export_preference(env, exports);
  export_gpu(env, exports);
  export_completions_probe(env, exports);
  export_scheduler(env, exports);
  export_enum(env, exports, "REDUCTIONS", kReductions);
  export_enum(env, exports, "AGGREGATIONS", kAggregations);
  return exports;
}

}  // namespace rk::addon

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return rk::addon::Init(env, exports); }

NODE_API_MODULE(rlhf_kernels, InitAddon)
