// One op call as a job: read the arguments and make the outputs on the JS thread, run the kernel (here, or on
// the kernels' pool for the …Async form: scheduler.h), then build the result object on the JS thread (result_of).
#pragma once
#include <napi.h>

#include <cstring>
#include <exception>
#include <iterator>
#include <stdexcept>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "args.h"
#include "scheduler.h"

namespace rk::addon {

struct Job {
  Pins pins;
  Outputs out;
  explicit Job(Napi::Env env) : out(env, pins) {}
  virtual ~Job() = default;
  virtual void run() = 0;  // the kernel: no Node calls, never on the JS thread for async
  // The scalar results: written into s[0 .. count) in the order of `names` (RK_JOB_RESULT), their names returned.
  struct Scalars {
    const char* const* names = nullptr;
    size_t count = 0;
  };
  virtual Scalars scalars(double* s) const { (void)s; return {}; }
#if RLHF_KERNELS_HAVE_CUDA
  std::unique_ptr<GpuCall> gpu;
  // The CUDA kernels, enqueued on gpu->stream(); scalars go to gpu->result(), read back by the runner.
  virtual cudaError_t launch(GpuCall& g) = 0;
  // The scalar results as the CPU kernel returns them (what scalars() reads), from the result block.
  virtual void collect(const float* result) { (void)result; }
#endif
};

// The source of a ResultShape's function: (s, a0, a1, …) => ({ array0: a0, …, scalar0: s[0], … }), the output
// arrays first (in the order made), then the scalars; a scalar "g.x" goes to a nested object g ("metrics.count").
inline std::string result_source(const char* const* arrays, size_t n_arrays, const char* const* scalars, size_t n_scalars) {
  auto name = [](const char* from, const char* to) {
    for (const char* c = from; c != to; c++) {
      if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_')) throw std::logic_error("a result name must be an identifier");
    }
    std::string quoted = "\"";
    quoted.append(from, to);
    return quoted += "\": ";
  };
  std::string src = "(function (s";
  for (size_t i = 0; i < n_arrays; i++) src += ", a" + std::to_string(i);
  src += ") { return {";
  for (size_t i = 0; i < n_arrays; i++) src += name(arrays[i], arrays[i] + std::strlen(arrays[i])) + "a" + std::to_string(i) + ", ";
  std::string group;  // the nested object being written
  for (size_t i = 0; i < n_scalars; i++) {
    const char* key = scalars[i];
    const char* dot = std::strchr(key, '.');
    const std::string g = dot ? std::string(key, dot) : "";
    if (g != group) {
      if (!group.empty()) src += "}, ";
      if (!g.empty()) src += name(key, dot) + "{";
      group = g;
    }
    src += name(dot ? dot + 1 : key, key + std::strlen(key)) + "s[" + std::to_string(i) + "], ";
  }
  if (!group.empty()) src += "}";
  return src + "}; })";
}

// The ResultShape of op for these outputs: found, or made once per env.
inline Napi::Function result_shape(Napi::Env env, EnvData& data, const char* op, const Job::Scalars& s, const OutputList& arrays) {
  for (ResultShape& r : data.result_shapes) {
    if (r.op != op || r.scalar_names != s.names || r.arrays.size() != arrays.n) continue;
    bool same = true;
    for (size_t i = 0; i < arrays.n && same; i++) same = std::strcmp(r.arrays[i], arrays.names[i]) == 0;
    if (same) return r.make.Value();
  }
  Napi::Function make = env.RunScript(result_source(arrays.names, arrays.n, s.names, s.count)).As<Napi::Function>();
  data.result_shapes.push_back({op, s.names, std::vector<const char*>(arrays.names, arrays.names + arrays.n), Napi::Persistent(make)});
  return make;
}

// The result object, on the JS thread once the kernel is done (sync or async, cpu or cuda alike): the output
// arrays and the scalars, made by the op's ResultShape from the env's scalar block, which it reads at once.
// No N-API call per field, and every result of one op and output set has one hidden class.
inline Napi::Value result_of(Napi::Env env, const Job& job) {
  job.out.deliver();
  EnvData& data = *env.GetInstanceData<EnvData>();
  if (data.scalar_data == nullptr) {
    Napi::Float64Array block = Napi::Float64Array::New(env, kMaxScalars);  // off the V8 heap: its data never moves
    data.scalars = Napi::Persistent(block);
    data.scalar_data = block.Data();
  }
  const Job::Scalars s = job.scalars(data.scalar_data);
  OutputList arrays;
  job.out.put(arrays);
  napi_value argv[1 + kMaxOutputs];
  argv[0] = data.scalars.Value();
  for (size_t i = 0; i < arrays.n; i++) argv[1 + i] = arrays.values[i];
  return result_shape(env, data, job.out.op, s, arrays).Call(1 + arrays.n, argv);
}

// Runs a kernel and turns an exception (allocation failure is the only one expected) into a message.
inline std::string run_guarded(Job& job) {
  try {
    job.run();
    return "";
  } catch (const std::bad_alloc&) {
    return "ERR_OUT_OF_MEMORY";
  } catch (const std::exception& e) {
    return std::string("ERR_NATIVE: ") + e.what();
  }
}

// The argument object read once (Snapshot: args.h kSnapshotReader, two levels deep).
inline SnapshotRead snapshot(Napi::Env env, const char* op, Napi::Value v) {
  if (!v.IsObject()) throw_type(env, op, "arguments must be an object");
  EnvData& data = *env.GetInstanceData<EnvData>();
  if (data.snapshot_reader.IsEmpty()) data.snapshot_reader = Napi::Persistent(env.RunScript(kSnapshotReader).As<Napi::Function>());
  // through the function's handle (a FunctionReference's Call opens an escapable scope: an allocation)
  return SnapshotRead(env, data, data.snapshot_reader.Value().Call({v}));
}

// Reads and checks the arguments into a job: read once, then check. A copy the job cannot allocate is an
// ERR_OUT_OF_MEMORY error, as a failed kernel allocation is.
template <class J>
void prepare_job(Napi::Env env, J& job, const Snapshot& s, Placement placement, GpuCall* gpu = nullptr) {
  job.out.op = J::name;
  // caller-provided outputs (Outputs::make reads them); an async job writes them when it settles
  if (const Snapshot::Entry* given = s.find("out"); given != nullptr && !given->nullish()) {
    if (!given->object) throw_type(env, J::name, "out must be an object of output arrays");
    job.out.given = given->object;
    job.out.deferred = placement == Placement::copy;
  }
  try {
    job.prepare(Args(env, J::name, s, job.pins, placement, gpu));
  } catch (const std::bad_alloc&) {
    throw coded_error(env, "ERR_OUT_OF_MEMORY", std::string(J::name) + ": out of memory for the call's inputs");
  }
  job.out.check_given();
}

// Starts an async cpu call: reads and checks its arguments, copies its inputs (Placement::copy: the caller's
// arrays are not read after this returns, but for views of a SharedArrayBuffer, which the job holds) and
// queues its kernel on the kernels' pool (scheduler.h). `deferred` is the promise of a call that waited
// (settled here or by the lane; returns undefined), or null for a new call (returns its promise). A bad
// argument rejects the promise, as the TypeScript layer does.
template <class J>
Napi::Value start_async_job(Napi::Env env, Napi::Value args, napi_deferred deferred) {
  auto reject = [&](napi_value e) -> Napi::Value {
    if (deferred != nullptr) {
      napi_reject_deferred(env, deferred, e);
      return env.Undefined();
    }
    Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
    d.Reject(e);
    return d.Promise();
  };
  auto job = std::make_shared<J>(env);
  int64_t bytes = 0;
  try {
    const SnapshotRead s = snapshot(env, J::name, args);
    prepare_job(env, *job, s, Placement::copy);
    bytes = job->pins.held_bytes();
  } catch (const Napi::Error& e) {
    return reject(e.Value());
  }
  J* kernel = job.get();  // the pool's task does not own the job: it is freed on the JS thread
  try {
    return AsyncLane::of(env).run(
        env, deferred, bytes, [kernel] { return run_guarded(*kernel); }, [job](Napi::Env e) { return result_of(e, *job); });
  } catch (const Napi::Error& e) {
    return reject(e.Value());
  }
}

// The sync and async entry points of one job type. An async call starts now when its env's calls in flight
// hold fewer input bytes than the limit (scheduler.h), else it waits in line, unread.
template <class J>
Napi::Value run_job(const Napi::CallbackInfo& info, bool async) {
  Napi::Env env = info.Env();
  if (!async) {
    // the job on this frame, its outputs held as this call's handles (small ones from the result pool)
    J job(env);
    job.out.local = true;
    {
      const SnapshotRead s = snapshot(env, J::name, info[0]);
      pool_apart_from(env, *env.GetInstanceData<EnvData>(), s);
      prepare_job(env, job, s, Placement::in_place);
    }
    const std::string failure = run_guarded(job);
    if (!failure.empty()) throw coded_error(env, failure.substr(0, failure.find(':')), "native kernel failed: " + failure);
    return result_of(env, job);
  }
  AsyncLane& lane = AsyncLane::of(env);
  if (!lane.admits() && info[0].IsObject()) {
    return lane.wait(env, info[0], [](Napi::Env e, Napi::Value args, napi_deferred d) { start_async_job<J>(e, args, d); });
  }
  return start_async_job<J>(env, info[0], nullptr);
}

#if RLHF_KERNELS_HAVE_CUDA

// Prepares a job for the cuda backend (its arguments read, uploaded or taken from device tensors) and
// enqueues its kernels and the copies back. Throws on a bad argument or a failed launch.
template <class J>
std::unique_ptr<J> enqueue_gpu_job(Napi::Env env, Napi::Value args_value, bool launch = true) {
  auto g = gpu_env(env);
  // a non-sticky error an earlier call left behind (and reported) must not fail this one
  cudaGetLastError();
  auto job = std::make_unique<J>(env);
  const SnapshotRead s = snapshot(env, J::name, args_value);
  const Snapshot::Entry* results = s.find("deviceResults");
  job->gpu = std::make_unique<GpuCall>(env, g, results != nullptr && results->truthy());
  job->out.gpu = job->gpu.get();
  prepare_job(env, *job, s, Placement::copy, job->gpu.get());
  job->gpu->begin(env);
  if (!launch) return job;
  cudaError_t err = job->launch(*job->gpu);
  if (err == cudaSuccess) err = job->gpu->read_back();
  if (err != cudaSuccess) {
    cudaGetLastError();  // reported here, not by the next op
    g->fail(err);
    throw cuda_error(env, J::name, err);
  }
  return job;
}

// After the stream passed the job: its errors, its index flag, then the result object.
inline Napi::Value complete_gpu_job(Napi::Env env, const char* name, Job& job, cudaError_t status) {
  if (status != cudaSuccess) {
    job.gpu->env().fail(status);
    throw cuda_error(env, name, status);
  }
  job.gpu->done();
  job.gpu->check_flags(env, name);
  job.collect(job.gpu->host_result());
  return result_of(env, job);
}

template <class J>
Napi::Value run_gpu_job(const Napi::CallbackInfo& info, bool async) {
  Napi::Env env = info.Env();
  if (!async) {
    auto job = enqueue_gpu_job<J>(env, info[0]);
    return complete_gpu_job(env, J::name, *job, cudaStreamSynchronize(job->gpu->stream()));
  }
  std::shared_ptr<J> job;
  try {
    job = enqueue_gpu_job<J>(env, info[0]);
  } catch (const Napi::Error& e) {
    Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
    d.Reject(e.Value());
    return d.Promise();
  }
  return when_stream_done(env, job->gpu->env(), [job](Napi::Env env, cudaError_t status) {
    return complete_gpu_job(env, J::name, *job, status);
  });
}

// Times the job's kernels with CUDA events: `iterations` launches after one warm-up, on inputs prepared
// once. Returns the milliseconds of each launch (the op's own work: no uploads, no copies back).
template <class J>
Napi::Value time_gpu_job(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto job = enqueue_gpu_job<J>(env, info[0], false);
  const int iterations = info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : 10;
  cudaStream_t stream = job->gpu->stream();
  std::vector<cudaEvent_t> events(size_t(iterations) + 1);
  for (auto& e : events) cudaEventCreate(&e);
  cudaError_t err = job->launch(*job->gpu);
  for (int i = 0; i < iterations && err == cudaSuccess; i++) {
    cudaEventRecord(events[size_t(i)], stream);
    err = job->launch(*job->gpu);
  }
  if (err == cudaSuccess) err = cudaEventRecord(events[size_t(iterations)], stream);
  if (err == cudaSuccess) err = job->gpu->read_back();
  if (err == cudaSuccess) err = cudaStreamSynchronize(stream);
  Napi::Float64Array ms = Napi::Float64Array::New(env, size_t(iterations));
  for (int i = 0; i < iterations && err == cudaSuccess; i++) {
    float t = 0.f;
    err = cudaEventElapsedTime(&t, events[size_t(i)], events[size_t(i) + 1]);
    ms[size_t(i)] = t;
  }
  for (auto& e : events) cudaEventDestroy(e);
  if (err != cudaSuccess) {
    job->gpu->env().fail(err);
    throw cuda_error(env, J::name, err);
  }
  job->gpu->done();
  job->gpu->check_flags(env, J::name);
  return ms;
}

#endif

// A job's scalar results from its op's field list (RK_<OP>_FIELDS, rlhf/common.h): the result struct `r`,
// scalars() that writes them for result_of, and their names (exported as resultFields[name]).
#define RK_FIELD_NAME(js, type, member) js,
#define RK_FIELD_STORE(js, type, member) s[i++] = double(r.member);
#define RK_JOB_RESULT(Result, FIELDS)                                   \
  Result r;                                                             \
  static constexpr const char* fields[] = {FIELDS(RK_FIELD_NAME)};      \
  static_assert(std::size(fields) <= kMaxScalars);                      \
  Scalars scalars(double* s) const override {                           \
    size_t i = 0;                                                       \
    FIELDS(RK_FIELD_STORE)                                              \
    return {fields, i};                                                 \
  }

// exports.resultFields[key] = names: what the TypeScript side checks its result types against.
template <size_t N>
void export_fields(Napi::Env env, Napi::Object exports, const std::string& key, const char* const (&names)[N]) {
  if (!exports.Has("resultFields")) exports.Set("resultFields", Napi::Object::New(env));
  Napi::Array a = Napi::Array::New(env, N);
  for (size_t i = 0; i < N; i++) a.Set(uint32_t(i), Napi::String::New(env, names[i]));
  exports.Get("resultFields").As<Napi::Object>().Set(key, a);
}

// Exports name and nameAsync (cpu backend) and, in a CUDA build, cuda.name, cuda.nameAsync and
// cuda.nameTime (the cuda backend and its event timing); and the job's result field names.
template <class J>
void export_job(Napi::Env env, Napi::Object exports) {
  if constexpr (requires { J::fields; }) export_fields(env, exports, J::name, J::fields);
  exports.Set(J::name, Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return run_job<J>(info, false); }, J::name));
  const std::string async_name = std::string(J::name) + "Async";
  exports.Set(async_name, Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return run_job<J>(info, true); }, async_name));
#if RLHF_KERNELS_HAVE_CUDA
  Napi::Object cuda = exports.Get("cuda").As<Napi::Object>();
  cuda.Set(J::name, Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return run_gpu_job<J>(info, false); }, J::name));
  cuda.Set(async_name, Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return run_gpu_job<J>(info, true); }, async_name));
  const std::string time_name = std::string(J::name) + "Time";
  cuda.Set(time_name, Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return time_gpu_job<J>(info); }, time_name));
#endif
}

}  // namespace rk::addon
