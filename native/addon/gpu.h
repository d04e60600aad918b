// The cuda backend's side of the addon: per-env GPU state (one stream, the caching pools, the device
// tensors' handles and the release queue their finalisers feed) and one op call's device resources.
//
// Every CUDA call of an env happens on its JS thread and is enqueued on its one stream, so stream order is
// the only synchronisation: a block given back to the pool can be handed out again at once. The JS thread
// only enqueues; a sync op then waits for its stream, an async op resolves from a stream callback.
#pragma once
#include <napi.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#if RLHF_KERNELS_HAVE_CUDA
#include <cuda_runtime.h>

#include "completions.h"
#include "rlhf/cuda_memory.h"
#include "rlhf/cuda_vocab.h"
#endif

namespace rk::addon {

#if RLHF_KERNELS_HAVE_CUDA

class GpuEnv;

// The storage of one device tensor, owned by its JS handle (an External).
struct DeviceBlock {
  std::shared_ptr<GpuEnv> owner;
  void* ptr = nullptr;
  size_t bytes = 0;  // as requested (the pool block may be larger)
};

class GpuEnv : public std::enable_shared_from_this<GpuEnv> {
 public:
  // Starts CUDA on device 0 for this env: null, with the reason, when it cannot.
  static std::shared_ptr<GpuEnv> start(std::string& why);
  // Makes the env's completions (completions.h), whose teardown waits for the stream, closes, then frees
  // the stream and the pools. On the JS thread, once; false, with the reason, when it cannot.
  bool attach(Napi::Env env, std::string& why);
  Completions& completions() const { return *completions_; }
  ~GpuEnv();
  GpuEnv(const GpuEnv&) = delete;
  GpuEnv& operator=(const GpuEnv&) = delete;

  cudaStream_t stream() const { return stream_; }
  gpu::CachingAllocator device{gpu::MemoryKind::device};
  gpu::CachingAllocator pinned{gpu::MemoryKind::pinned};

  // A handle that owns `ptr` (a block of `device`); its bytes are reported to V8 as external memory.
  Napi::Value wrap(Napi::Env env, const std::shared_ptr<GpuEnv>& self, void* ptr, size_t bytes);
  // The live block behind a handle of this env, or null (not a handle, another env's, or disposed).
  DeviceBlock* unwrap(Napi::Value v) const;
  // dispose(): the block back to the pool now; the handle is dead. Safe twice.
  void dispose(Napi::Env env, Napi::Value handle);
  // From a finaliser (any time, no CUDA and no JS calls): the block is freed at the next drain.
  void queue_release(void* ptr, size_t bytes);
  // Queued blocks back to the pool, and V8 told; called on the JS thread before each GPU call.
  void drain(Napi::Env env);

  // After an error that poisons the CUDA context (illegal address, launch failure), every later call fails.
  void fail(cudaError_t err);
  const std::string& broken() const { return broken_; }

  int64_t tensors() const { return tensors_; }
  size_t tensor_bytes() const { return tensor_bytes_; }

 private:
  GpuEnv() = default;
  void account(Napi::Env env, int delta_tensors, int64_t delta_bytes);
  // The stream, the pools: freed at env teardown (after the completions closed) or by the destructor.
  void release();
  cudaStream_t stream_ = nullptr;
  std::shared_ptr<Completions> completions_;
  std::mutex queue_mu_;
  std::vector<std::pair<void*, size_t>> queue_;
  int64_t tensors_ = 0;
  size_t tensor_bytes_ = 0;
  std::string broken_;
};

// The env's GPU state, started on first use; throws ERR_CUDA_UNAVAILABLE when CUDA cannot start.
std::shared_ptr<GpuEnv> gpu_env(Napi::Env env);

// The device resources of one op call: staged inputs, outputs, scratch, the scalar result block and the
// bad-index flag. Made and finished on the JS thread; temporaries go back to the pool with it.
struct OutputList;  // env.h

class GpuCall {
 public:
  GpuCall(Napi::Env js, std::shared_ptr<GpuEnv> env, bool device_results) : js_(js), env_(std::move(env)), device_results_(device_results) {}
  ~GpuCall();
  GpuCall(const GpuCall&) = delete;
  GpuCall& operator=(const GpuCall&) = delete;

  GpuEnv& env() const { return *env_; }
  cudaStream_t stream() const { return env_->stream(); }
  bool device_results() const { return device_results_; }

  // A host array's bytes, copied through pinned memory to a temporary device block (enqueued).
  const void* upload(Napi::Env env, const void* host, size_t bytes);
  // The host copy (pinned) behind a device pointer that upload() made (null for a device tensor's data).
  const void* host_of(const void* device) const;
  // An output of n elements of `dtype` (float32, or the 16-bit bfloat16/float16): a device tensor's block
  // (device results) or a temporary read back to the host.
  void* output(Napi::Env env, const char* name, int64_t n, const char* dtype = "float32");
  // Temporary device memory for the kernels; slot k is the same block on every launch of this call.
  void* scratch(size_t bytes, int slot = 0);
  float* result() const { return result_; }
  gpu::DeviceFlags* flags() const { return flags_; }
  // Allocates and clears the result block and the bad-index flag (before the launch).
  void begin(Napi::Env env);
  // Names the device-resident index array the flag is about, and its valid range, for the RangeError.
  void device_indices(std::string key, std::string expected);

  // Enqueues the copies back: the result block and flag, and every output of a host-results call.
  cudaError_t read_back();
  // On the JS thread, after the stream passed read_back: RangeError for a flagged index.
  void check_flags(Napi::Env env, const char* op) const;
  const float* host_result() const { return host_result_; }
  // The stream has passed this call: its pinned buffers may be reused once it is gone.
  void done() { done_ = true; }
  // The outputs into `list`: Float32Arrays, or device handles that take over the blocks.
  void put(Napi::Env env, OutputList& list);

 private:
  struct Output {
    const char* name;
    void* device;
    int64_t n;
    size_t es;          // 4 or 2 bytes
    const char* dtype;  // "float32", "bfloat16", "float16"
    void* host;         // pinned, for host results
  };
  void* take(Napi::Env env, gpu::CachingAllocator& pool, size_t bytes, std::vector<void*>& list);
  Napi::Env js_;
  std::shared_ptr<GpuEnv> env_;
  bool device_results_;
  void* scratch_[3] = {nullptr, nullptr, nullptr};
  size_t scratch_bytes_[3] = {0, 0, 0};
  std::vector<void*> device_temps_, pinned_temps_;
  std::vector<std::pair<const void*, const void*>> staged_;  // device → its pinned host copy
  std::vector<Output> outputs_;
  float* result_ = nullptr;
  gpu::DeviceFlags* flags_ = nullptr;
  float* host_result_ = nullptr;  // pinned: 64 result floats, then the flag
  std::string index_key_ = "targets", index_expected_ = "a valid index";
  bool done_ = false;
};

// Throws the JS error for a failed CUDA call (ERR_CUDA_OOM, or ERR_CUDA with the runtime's name).
[[noreturn]] void throw_cuda(Napi::Env env, const char* op, cudaError_t err);
Napi::Error cuda_error(Napi::Env env, const char* op, cudaError_t err);

// A promise settled on the JS thread once the env's stream has passed every call enqueued so far:
// `complete` gets the stream's status and returns the value (or throws a Napi::Error to reject).
// The stream callback only queues the completion; no CUDA or JS work happens off the JS thread.
using Completion = std::function<Napi::Value(Napi::Env, cudaError_t)>;
Napi::Promise when_stream_done(Napi::Env env, GpuEnv& g, Completion complete);

#else

class GpuCall;

#endif

// The device-memory functions of the addon (upload, download, dispose, memory, bench helpers).
void export_gpu(Napi::Env env, Napi::Object exports);

}  // namespace rk::addon
