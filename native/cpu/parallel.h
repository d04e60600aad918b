// A small persistent thread pool for the CPU kernels. parallel_for splits [0, n) into chunks of at least
// `grain` items; the calling thread works too. Results never depend on the thread count: each item is
// computed by one thread, and reductions over items happen afterwards, in item order.
#pragma once
#include <cstdint>
#include <functional>

namespace rk {

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t begin, int64_t end)>& fn);

// Threads in the pool (the cores of the machine; RLHF_KERNELS_THREADS overrides).
int pool_threads();

}  // namespace rk
