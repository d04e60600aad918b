// One op call as a job: read the arguments and make the outputs on the JS thread, run the kernel (here, or on
// the libuv pool for the …Async form), then build the result object on the JS thread.
#pragma once
#include <napi.h>

#include <exception>
#include <memory>
#include <new>
#include <string>

#include "args.h"

namespace rk::addon {

struct Job {
  Pins pins;
  Outputs out;
  explicit Job(Napi::Env env) : out(env, pins) {}
  virtual ~Job() = default;
  virtual void run() = 0;                              // the kernel: no Node calls, never on the JS thread for async
  virtual void finish(Napi::Object result) const = 0;  // scalars into the result (outputs are added by put)
};

inline Napi::Value result_of(Napi::Env env, const Job& job) {
  Napi::Object result = Napi::Object::New(env);
  job.out.put(result);
  job.finish(result);
  return result;
}

inline Napi::Error native_error(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
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

class JobWorker : public Napi::AsyncWorker {
 public:
  JobWorker(Napi::Env env, std::unique_ptr<Job> job)
      : Napi::AsyncWorker(env, "rlhf-kernels"), job_(std::move(job)), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() const { return deferred_.Promise(); }

  void Execute() override {
    failure_ = run_guarded(*job_);
    if (!failure_.empty()) SetError(failure_);
  }
  void OnOK() override { deferred_.Resolve(result_of(Env(), *job_)); }
  void OnError(const Napi::Error&) override {
    deferred_.Reject(native_error(Env(), failure_.substr(0, failure_.find(':')), "native kernel failed: " + failure_).Value());
  }

 private:
  std::unique_ptr<Job> job_;
  Napi::Promise::Deferred deferred_;
  std::string failure_;
};

// The sync and async entry points of one job type.
template <class J>
Napi::Value run_job(const Napi::CallbackInfo& info, bool async) {
  Napi::Env env = info.Env();
  auto job = std::make_unique<J>(env);
  if (async) {
    // a bad argument rejects the promise, as the TypeScript layer does
    try {
      Args args(env, J::name, info[0], job->pins);
      job->prepare(args);
    } catch (const Napi::Error& e) {
      Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
      d.Reject(e.Value());
      return d.Promise();
    }
  } else {
    Args args(env, J::name, info[0], job->pins);
    job->prepare(args);
  }
  if (async) {
    auto* worker = new JobWorker(env, std::move(job));
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
  }
  const std::string failure = run_guarded(*job);
  if (!failure.empty()) throw native_error(env, failure.substr(0, failure.find(':')), "native kernel failed: " + failure);
  return result_of(env, *job);
}

template <class J>
void export_job(Napi::Env env, Napi::Object exports) {
  exports.Set(J::name, Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return run_job<J>(info, false); }, J::name));
  const std::string async_name = std::string(J::name) + "Async";
  exports.Set(async_name, Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return run_job<J>(info, true); }, async_name));
}

inline Napi::Number num(Napi::Env env, double v) { return Napi::Number::New(env, v); }

}  // namespace rk::addon
