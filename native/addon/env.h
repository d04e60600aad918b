// Per-env state of the addon (napi instance data): one per main thread or worker_thread that loads it.
#pragma once
#include <napi.h>

#include <cstdint>
#include <cstdlib>
#include <deque>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "gpu.h"

namespace rk::addon {

// The most scalar results (ppoLoss with its metrics: 19) and output arrays (logProbs: 6) of one call (the
// outputs are held inline by each job: args.h Outputs).
constexpr size_t kMaxScalars = 64;
constexpr size_t kMaxOutputs = 8;

// The output arrays of one call, in the order the job made them: what the result object holds besides scalars.
struct OutputList {
  const char* names[kMaxOutputs];
  napi_value values[kMaxOutputs];
  size_t n = 0;
  void add(const char* name, napi_value value) {
    if (n == kMaxOutputs) throw std::length_error("more than kMaxOutputs outputs");
    names[n] = name;
    values[n++] = value;
  }
};

// A JavaScript function that makes the result object of one op for one set of outputs (job.h result_of):
// made once per env, so every result of that op and output set has one hidden class.
struct ResultShape {
  const char* op;                   // the op's name (J::name: the same pointer for every call of the op)
  const char* const* scalar_names;  // the op's scalar field list (J::fields)
  std::vector<const char*> arrays;  // the output names
  Napi::FunctionReference make;
};

// The small output arrays of sync cpu calls, as Node's Buffer.allocUnsafe pools small Buffers: views into
// one ArrayBuffer of kBytes (marked untransferable), each range handed out once and zeroed when handed out.
// A result array of at most kMaxArray bytes is such a view, so a tiny call makes no ArrayBuffer (V8 makes
// each with four allocations, which its sweeper thread frees while the next calls allocate: on 2 cores, half
// of a 64-token call's time). Async calls' outputs, written off the JS thread, are never pooled.
struct ResultPool {
  static constexpr size_t kBytes = 16384, kMaxArray = 2048, kAlign = 64;
  Napi::Reference<Napi::ArrayBuffer> buffer;  // the current one (empty before the first)
  char* base = nullptr;                       // its memory when made (a detached one no longer has it)
  size_t used = 0;
  Napi::FunctionReference untransferable;  // worker_threads.markAsUntransferable, given by setup()
};

struct EnvData {
  uint32_t id = 0;
  ResultPool pool;
  Napi::FunctionReference error_class;  // RlhfKernelsError, given by setup() when the package loads the addon
  int64_t max_array_length = int64_t(1) << 32;  // the engine's longest typed array (setup(); Node 20's by default)
  // the scalar results of the call whose result is being made, read by its ResultShape at once (JS thread only)
  Napi::Reference<Napi::Float64Array> scalars;
  double* scalar_data = nullptr;
  std::vector<ResultShape> result_shapes;
  Napi::FunctionReference snapshot_reader;  // args.h kSnapshotReader, made on first use
  std::deque<std::string> snapshot_names;   // the strings the reader interned, by id (copied once each)
  std::shared_ptr<void> snapshot_store;     // args.h SnapshotStore: the reads' entries, reused between calls
#if RLHF_KERNELS_HAVE_CUDA
  bool gpu_tried = false;
  std::string gpu_why;          // why CUDA could not start, when it could not
  std::shared_ptr<GpuEnv> gpu;  // shared with the device tensors' handles, which may outlive the env
#endif
};

// The error of a native failure: an instance of the package's RlhfKernelsError (new RlhfKernelsError(code,
// message)) once setup() gave the class, else an Error with the same `code` (a raw addon before setup).
// Every coded error of the addon, cpu and cuda, is made here.
inline Napi::Error coded_error(Napi::Env env, const std::string& code, const std::string& message) {
  EnvData* data = env.GetInstanceData<EnvData>();
  if (data != nullptr && !data->error_class.IsEmpty()) {
    return Napi::Error(env, data->error_class.New({Napi::String::New(env, code), Napi::String::New(env, message)}));
  }
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

// The TypeError and RangeError of a bad argument, as "op: msg": the addon's argument errors are thrown here.
[[noreturn]] inline void throw_type(Napi::Env env, const std::string& op, const std::string& msg) {
  throw Napi::TypeError::New(env, op + ": " + msg);
}
[[noreturn]] inline void throw_range(Napi::Env env, const std::string& op, const std::string& msg) {
  throw Napi::RangeError::New(env, op + ": " + msg);
}

// Whether the engine can make a host typed array of n elements of es bytes: V8 aborts the process when a
// typed array made through the API is longer than it allows or cannot be allocated, so both are asked first
// (too long: RangeError; no memory: ERR_OUT_OF_MEMORY).
inline void check_host_array(Napi::Env env, const char* op, const char* name, int64_t n, size_t es) {
  const EnvData* data = env.GetInstanceData<EnvData>();
  if (n > data->max_array_length) {
    throw_range(env, op, std::string(name) + " would have " + std::to_string(n) + " elements, more than a typed array holds (" +
                             std::to_string(data->max_array_length) + ")");
  }
  if (size_t(n) * es < (size_t(1) << 20)) return;  // a process that cannot allocate less has nothing left to report with
  void* probe = std::malloc(size_t(n) * es);
  if (probe == nullptr && n > 0) throw coded_error(env, "ERR_OUT_OF_MEMORY", std::string(op) + ": out of memory for " + name);
  std::free(probe);
}

}  // namespace rk::addon
