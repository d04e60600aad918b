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
#if RLHF_KERNELS_HAVE_CUDA
  bool gpu_tried = false;
  std::string gpu_why;          // why CUDA could not start, when it could not
  std::shared_ptr<GpuEnv> gpu;  // shared with the device tensors' handles, which may outlive the env
#endif
};

}  // namespace rk::addon
