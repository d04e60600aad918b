// Stand-in for native/cuda/device.cu in a build without CUDA.
#include <cstring>

#include "rlhf/device.h"

namespace rk {

DeviceQuery query_devices() {
  DeviceQuery q;
  q.compiled = false;
  std::strncpy(q.error_string, "built without CUDA (no nvcc was found at build time)", sizeof(q.error_string) - 1);
  return q;
}

}  // namespace rk
