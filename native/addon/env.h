// Per-env state of the addon (napi instance data): one per main thread or worker_thread that loads it.
#pragma once
#include <napi.h>

#include <cstdint>
#include <memory>
#include <string>

#include "gpu.h"

namespace rk::addon {

struct EnvData {
  uint32_t id = 0;
  Napi::FunctionReference error_class;  // RlhfKernelsError, given by setup() when the package loads the addon
#if RLHF_KERNELS_HAVE_CUDA
  bool gpu_tried = false;
  std::string gpu_why;          // why CUDA could not start, when it could not
  std::shared_ptr<GpuEnv> gpu;  // shared with the device tensors' handles, which may outlive the env
#endif
};

// The error of a native failure: an instance of the package's RlhfKernelsError (new RlhfKernelsError(code,
// message)) once setup() gave the class, else an Error with the same `code` (a raw addon before setup).
// Every coded error of the addon, cpu and cuda, is made here.
inline Napi::Error coded_error(Napi::Env env, const std::string& code, const std::string& message) {
  EnvData* data = env.GetInstanceData<EnvData>();
  if (data != nullptr && !data->error_class.IsEmpty()) {
    return Napi::Error(env, data->error_class.New({Napi::String::New(env, code), Napi::String::New(env, message)}));
  }
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

}  // namespace rk::addon
