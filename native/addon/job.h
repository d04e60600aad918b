// One op call as a job: read the arguments and make the outputs on the JS thread, run the kernel (here, or on
// the kernels' pool for the …Async form: scheduler.h), then build the result object on the JS thread.
#pragma once
#include <napi.h>

#include <exception>
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
  virtual void run() = 0;                              // the kernel: no Node calls, never on the JS thread for async
  virtual void finish(Napi::Object result) const = 0;  // scalars into the result (outputs are added by put)
#if RLHF_KERNELS_HAVE_CUDA
  std::unique_ptr<GpuCall> gpu;
  // The CUDA kernels, enqueued on gpu->stream(); scalars go to gpu->result(), read back by the runner.
  virtual cudaError_t launch(GpuCall& g) = 0;
  // The scalar results as the CPU kernel returns them (what finish() reads), from the result block.
  virtual void collect(const float* result) { (void)result; }
#endif
};

inline Napi::Value result_of(Napi::Env env, const Job& job) {
  job.out.deliver();
  Napi::Object result = Napi::Object::New(env);
  job.out.put(result);
  job.finish(result);
  return result;
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

// The argument object read once (Snapshot), with the depth of the nesting the bindings read.
inline Snapshot snapshot(Napi::Env env, const char* op, Napi::Value v) {
  if (!v.IsObject()) throw_type(env, op, "arguments must be an object");
  return Snapshot(v.As<Napi::Object>(), 2);
}

// Reads and checks the arguments into a job: read once, then check. A copy the job cannot allocate is an
// ERR_OUT_OF_MEMORY error, as a failed kernel allocation is.
template <class J>
void prepare_job(Napi::Env env, J& job, const Snapshot& s, Placement placement, GpuCall* gpu = nullptr) {
  job.out.op = J::name;
  // caller-provided outputs (Outputs::make reads them); an async job writes them when it settles
  if (const Snapshot::Entry* given = s.find("out"); given != nullptr && !given->value.IsUndefined() && !given->value.IsNull()) {
    if (!given->object) throw_type(env, J::name, "out must be an object of output arrays");
    job.out.given = given->object.get();
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
// arrays are not read after this returns) and queues its kernel on the kernels' pool (scheduler.h). `deferred`
// is the promise of a call that waited (settled here or by the lane; returns undefined), or null for a new
// call (returns its promise). A bad argument rejects the promise, as the TypeScript layer does.
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
    const Snapshot s = snapshot(env, J::name, args);
    prepare_job(env, *job, s, Placement::copy);
    bytes = typed_bytes(s);
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
    auto job = std::make_unique<J>(env);
    prepare_job(env, *job, snapshot(env, J::name, info[0]), Placement::in_place);
    const std::string failure = run_guarded(*job);
    if (!failure.empty()) throw coded_error(env, failure.substr(0, failure.find(':')), "native kernel failed: " + failure);
    return result_of(env, *job);
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
  const Snapshot s = snapshot(env, J::name, args_value);
  const Snapshot::Entry* results = s.find("deviceResults");
  job->gpu = std::make_unique<GpuCall>(env, g, results != nullptr && results->value.ToBoolean().Value());
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

inline Napi::Number num(Napi::Env env, double v) { return Napi::Number::New(env, v); }

// A job's scalar results from its op's field list (RK_<OP>_FIELDS, rlhf/common.h): the result struct `r`,
// finish() that sets them on the result object, and their names (exported as resultFields[name]).
#define RK_FIELD_NAME(js, type, member) js,
#define RK_FIELD_SET(js, type, member) o.Set(js, num(o.Env(), double(r.member)));
#define RK_JOB_RESULT(Result, FIELDS)                          \
  Result r;                                                     \
  static constexpr const char* fields[] = {FIELDS(RK_FIELD_NAME)}; \
  void finish(Napi::Object o) const override { FIELDS(RK_FIELD_SET) }

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
