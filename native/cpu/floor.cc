// The host benchmark's floor probe (floor.h). Single-threaded; it allocates and touches `bytes` first, so
// page faults are not timed. Each figure is the best of five passes in thread CPU time.
#include "floor.h"

#include <algorithm>
#include <ctime>
#include <vector>

#include "rowmath.h"

namespace rk {
namespace {

typedef float vf16 __attribute__((vector_size(64)));
typedef int32_t vi16 __attribute__((vector_size(64)));

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && !defined(RK_NO_MULTIVERSION)
#define RK_PROBE __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), flatten, noinline))
#else
#define RK_PROBE __attribute__((flatten, noinline))
#endif

// this thread's CPU time: on a machine shared with other work, time spent descheduled is not counted
double thread_seconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

// Σ of n floats (n a multiple of 64), four 16-lane accumulators so the adds do not serialise.
RK_PROBE float read_pass(const float* x, int64_t n) {
  vf16 a = {}, b = {}, c = {}, d = {};
  for (int64_t i = 0; i < n; i += 64) {
    vf16 t0, t1, t2, t3;
    std::memcpy(&t0, x + i, 64);
    std::memcpy(&t1, x + i + 16, 64);
    std::memcpy(&t2, x + i + 32, 64);
    std::memcpy(&t3, x + i + 48, 64);
    a += t0, b += t1, c += t2, d += t3;
  }
  const vf16 s = (a + b) + (c + d);
  float r = 0;
  for (int l = 0; l < 16; l++) r += s[l];
  return r;
}

// reps passes of exp over n floats in L1 (n a multiple of 32), two independent chains
RK_PROBE float exp_passes(const float* x, int64_t n, int reps) {
  vf16 a = {}, b = {};
  for (int r = 0; r < reps; r++) {
    for (int64_t i = 0; i < n; i += 32) {
      vf16 t[2];
      std::memcpy(t, x + i, sizeof t);
      vi16 e0, e1;
      const vf16 p0 = exp_body(t[0], e0), p1 = exp_body(t[1], e1);
      a += t[0] < -87.3365447505531f ? 0.f : p0 * (vf16)e0;
      b += t[1] < -87.3365447505531f ? 0.f : p1 * (vf16)e1;
    }
  }
  const vf16 s = a + b;
  float r = 0;
  for (int l = 0; l < 16; l++) r += s[l];
  return r;
}

}  // namespace

HostFloor measure_host_floor(int64_t bytes) {
  HostFloor f;
  const int64_t n = std::max<int64_t>(64, bytes / 4 / 64 * 64);
  std::vector<float> big(static_cast<size_t>(n), 1.f);  // written here: its pages are mapped before the timed passes
  volatile float sink = 0;
  double best = 1e30;
  for (int rep = 0; rep < 5; rep++) {
    const double t0 = thread_seconds();
    sink = sink + read_pass(big.data(), n);
    best = std::min(best, thread_seconds() - t0);
  }
  f.read_gbs = double(n) * 4 / best / 1e9;
  constexpr int64_t m = 4096;  // 16 KB: in L1
  std::vector<float> l1(static_cast<size_t>(m));
  for (int64_t i = 0; i < m; i++) l1[size_t(i)] = -10.f + 20.f * float(i) / float(m);
  constexpr int reps = 2000;
  best = 1e30;
  for (int rep = 0; rep < 5; rep++) {
    const double t0 = thread_seconds();
    sink = sink + exp_passes(l1.data(), m, reps);
    best = std::min(best, thread_seconds() - t0);
  }
  f.exp_ns = best / double(m * reps) * 1e9;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  f.isa = __builtin_cpu_supports("x86-64-v4") ? "x86-64-v4" : __builtin_cpu_supports("x86-64-v3") ? "x86-64-v3" : "baseline";
#else
  f.isa = "generic";
#endif
  return f;
}

}  // namespace rk
