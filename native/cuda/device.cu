// The CUDA runtime's view of this machine, for backends(): device count, error, versions, names.
// Built only when nvcc is found; native/cpu/device_none.cc stands in otherwise.
#include <cuda_runtime.h>

#include <cstring>

#include "rlhf/device.h"

namespace rk {

DeviceQuery query_devices() {
  DeviceQuery q;
  q.compiled = true;
  cudaRuntimeGetVersion(&q.runtime_version);
  cudaDriverGetVersion(&q.driver_version);
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  q.error = int(err);
  std::strncpy(q.error_name, cudaGetErrorName(err), sizeof(q.error_name) - 1);
  std::strncpy(q.error_string, cudaGetErrorString(err), sizeof(q.error_string) - 1);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return q;
  }
  q.count = n;
  for (int d = 0; d < n && d < 16; d++) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, d) != cudaSuccess) continue;
    std::strncpy(q.devices[d].name, prop.name, sizeof(q.devices[d].name) - 1);
    q.devices[d].major = prop.major;
    q.devices[d].minor = prop.minor;
    q.devices[d].total_memory = prop.totalGlobalMem;
    q.devices[d].l2_cache_bytes = prop.l2CacheSize;
  }
  return q;
}

}  // namespace rk
