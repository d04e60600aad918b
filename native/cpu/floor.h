// This machine's floors for one thread, measured by the host benchmark (npm run bench -- --host) in the
// same run as the kernels: the read bandwidth of a buffer larger than the caches, and the time of one
// vectorised float32 exp at the widest vector width this CPU runs.
#pragma once
#include <cstdint>

namespace rk {

struct HostFloor {
  double read_gbs = 0;   // best of five passes summing `bytes` of floats, in thread CPU time
  double exp_ns = 0;     // per element, the inputs in L1
  const char* isa = "";  // the clone that ran: x86-64-v4, x86-64-v3 or baseline
};

HostFloor measure_host_floor(int64_t bytes);

}  // namespace rk
