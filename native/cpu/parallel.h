// The one thread pool of the CPU kernels: `pool_threads()` threads (the cores this process may use;
// RLHF_KERNELS_THREADS overrides), shared by every env of the process. It runs two kinds of work:
//   - parallel_for chunks: a kernel splits [0, n) into chunks of at least `grain` items; the thread that
//     calls parallel_for works too, and idle pool threads help;
//   - tasks (submit): whole async jobs, each run by one pool thread, in the order submitted. A task's kernel
//     calls parallel_for from that pool thread, so its chunks go to the threads that are idle, and at most
//     pool_threads() threads run kernel code for async jobs, however many are in flight.
// A free pool thread takes waiting chunks before a new task: the jobs already started finish first.
// Results never depend on the thread count: each item is computed by one thread, and reductions over items
// happen afterwards, in item order.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

namespace rk {

// A callable borrowed for the length of a call (what parallel_for runs): a pointer and a trampoline, so a
// kernel's lambda is never copied to the heap as a std::function capturing more than two pointers would be.
template <typename F>
class FnRef;
template <typename R, typename... A>
class FnRef<R(A...)> {
 public:
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, FnRef>>>
  FnRef(F&& f)  // NOLINT: implicit, as std::function's
      : obj_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* o, A... a) -> R { return (*static_cast<std::remove_reference_t<F>*>(o))(std::forward<A>(a)...); }) {}
  R operator()(A... a) const { return call_(obj_, std::forward<A>(a)...); }

 private:
  void* obj_;
  R (*call_)(void*, A...);
};

void parallel_for(int64_t n, int64_t grain, FnRef<void(int64_t begin, int64_t end)> fn);

// Threads in the pool: the cores this process may use (Linux: its CPU affinity, capped by a cgroup CPU quota;
// parallel.cc cores_available), at most 256; RLHF_KERNELS_THREADS overrides.
int pool_threads();

// Runs task(true) on a pool thread, never on the caller's. `owner` tags the task for cancel(). The task must
// not throw.
void submit(const void* owner, std::function<void(bool run)> task);

// The tasks of `owner` that no thread has started, taken off the queue and called with false on this thread
// (in submission order); returns how many. Tasks already started are not waited for.
size_t cancel(const void* owner);

}  // namespace rk
