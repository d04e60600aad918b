// GPU discovery for backends(): compiled in or not, and what the CUDA runtime says. Never throws.
#pragma once
#include <cstddef>

namespace rk {

struct GpuInfo {
  char name[256];
  int major, minor;
  size_t total_memory;
  int l2_cache_bytes;  // rows of a benchmark smaller than this are served from L2, not HBM
};

struct DeviceQuery {
  bool compiled = false;     // built with CUDA
  int error = 0;             // cudaGetDeviceCount's status (0 = success; 35 = driver too old or absent; 100 = no device)
  char error_name[64] = {};
  char error_string[256] = {};
  int count = 0;
  int runtime_version = 0;
  int driver_version = 0;
  GpuInfo devices[16] = {};
};

DeviceQuery query_devices();

}  // namespace rk
