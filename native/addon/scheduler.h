// Async cpu jobs: run on the kernels' own pool (native/cpu/parallel.h `submit`), settled on the JS thread
// through one thread-safe function per env (Completions), with the memory their input copies hold bounded.
//
// A job is one pool task: a pool thread runs its kernel, whose parallel_for chunks go to the pool threads that
// are idle. So the threads running kernels are the pool's, whatever the number of calls in flight: no libuv
// pool thread runs or waits on a kernel, and the cores are not oversubscribed.
//
// Memory: an async call copies its inputs (args.h, Placement::copy; not those over a SharedArrayBuffer).
// Each env counts the bytes of the copies and outputs (Pins::held_bytes) of the calls it has started and not
// yet settled; a new call starts only while that count is below the limit (asyncLimit; RLHF_KERNELS_ASYNC_MB,
// default 512 MiB, the copy pool's cache) or nothing is in flight, so an env holds at most limit + one call's
// bytes of copies and outputs. A call that does not start waits in line, not read and not copied (only its
// argument object is referenced); as calls settle, the waiting ones start in order, on the JS thread: their
// argument objects are read and checked then, and their inputs copied then. A bad argument found then
// rejects that call's promise.
#pragma once
#include <napi.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "completions.h"

namespace rk::addon {

class AsyncLane : public std::enable_shared_from_this<AsyncLane> {
 public:
  // Prepares a call that waited and hands it to run(); settles `deferred` itself on a bad argument.
  using Start = std::function<void(Napi::Env, Napi::Value args, napi_deferred deferred)>;
  // Pool thread: the kernel; a message when it failed, empty when it succeeded. Must not throw.
  using Kernel = std::function<std::string()>;
  // JS thread: the promise's value once the kernel succeeded (a thrown Napi::Error rejects it).
  using Finish = std::function<Napi::Value(Napi::Env)>;

  // This env's lane, made on its first async call (with its Completions and the env cleanup hook).
  static AsyncLane& of(Napi::Env env);

  // The process-wide limit on the bytes of inputs of an env's calls in flight.
  static int64_t limit();
  static void set_limit(int64_t bytes);

  // JS thread. Whether a call may start now: nothing in flight, or fewer than limit() bytes and none waiting.
  bool admits() const;
  // JS thread. A call that waits: its argument object is referenced, and start() runs when its turn comes.
  Napi::Promise wait(Napi::Env env, Napi::Value args, Start start);
  // JS thread. A prepared call of `bytes` bytes of inputs: kernel() runs on the pool, then finish() settles
  // the promise (`deferred`, one made by wait(), or a new one when null: returned).
  Napi::Value run(Napi::Env env, napi_deferred deferred, int64_t bytes, Kernel kernel, Finish finish);

  // What the _asyncScheduler probe reports.
  int64_t jobs() const { return jobs_; }
  int64_t bytes() const { return bytes_; }
  int64_t peak_bytes() const { return peak_; }
  size_t waiting() const { return waiting_.size(); }
  void reset_peak() { peak_ = bytes_; }

 private:
  struct Waiting {
    Napi::ObjectReference args;
    napi_deferred deferred;
    Start start;
  };
  AsyncLane() = default;
  void settled(Napi::Env env, int64_t bytes);  // JS thread: a call's bytes freed, the waiting ones started
  void close();                                // the env's teardown, before its Completions closes

  napi_env env_ = nullptr;
  std::shared_ptr<Completions> completions_;
  // JS thread only
  int64_t jobs_ = 0, bytes_ = 0, peak_ = 0;
  std::deque<Waiting> waiting_;
  // tasks submitted to the pool and not yet posted back (any thread)
  std::mutex mu_;
  std::condition_variable idle_;
  int64_t outstanding_ = 0;
};

// _asyncScheduler([limitBytes]) → { limit, jobs, bytes, peakBytes, waiting, threads }: this env's lane; given a
// number, it first sets the process-wide limit and restarts peakBytes (the most bytes in flight) from now.
void export_scheduler(Napi::Env env, Napi::Object exports);

}  // namespace rk::addon
