// Async cpu jobs on the kernels' pool, settled through Completions, with their input bytes bounded
// (scheduler.h).
#include "scheduler.h"

#include <algorithm>
#include <cstdlib>
#include <new>
#include <unordered_map>
#include <utility>

#include "../cpu/parallel.h"
#include "args.h"
#include "env.h"

namespace rk::addon {
namespace {

// How a task ended, as the status its completion carries.
constexpr int kDone = 0, kFailed = 1, kCancelled = 2;

std::mutex lanes_mu;
// Each env's lane, until its teardown (an env's address may be reused after it is freed).
std::unordered_map<napi_env, std::shared_ptr<AsyncLane>>& lanes() {
  static auto* map = new std::unordered_map<napi_env, std::shared_ptr<AsyncLane>>;  // never destroyed
  return *map;
}

std::atomic<int64_t>& limit_bytes() {
  static std::atomic<int64_t> bytes{[] {
    int64_t mib = 512;
    if (const char* v = std::getenv("RLHF_KERNELS_ASYNC_MB")) {
      char* end = nullptr;
      const long long n = std::strtoll(v, &end, 10);
      if (end != v && *end == '\0' && n >= 0) mib = std::min<long long>(n, int64_t(1) << 40);
    }
    return mib << 20;
  }()};
  return bytes;
}

}  // namespace

int64_t AsyncLane::limit() { return limit_bytes().load(); }
void AsyncLane::set_limit(int64_t bytes) { limit_bytes().store(std::max<int64_t>(0, bytes)); }

AsyncLane& AsyncLane::of(Napi::Env env) {
  std::lock_guard<std::mutex> lock(lanes_mu);
  std::shared_ptr<AsyncLane>& slot = lanes()[napi_env(env)];
  if (!slot) {
    std::shared_ptr<AsyncLane> lane(new AsyncLane);
    lane->env_ = env;
    std::string why;
    // the closure holds the lane until the env's teardown, when Completions lets it go
    lane->completions_ = Completions::make(env, [lane] { lane->close(); }, [] {}, why);
    if (!lane->completions_) {
      lanes().erase(napi_env(env));
      throw Napi::Error::New(env, "rlhf-kernels: " + why);
    }
    slot = lane;
  }
  return *slot;
}

bool AsyncLane::admits() const { return jobs_ == 0 || (waiting_.empty() && bytes_ < limit()); }

Napi::Promise AsyncLane::wait(Napi::Env env, Napi::Value args, Start start) {
  napi_deferred deferred;
  napi_value promise;
  if (napi_create_promise(env, &deferred, &promise) != napi_ok) throw Napi::Error::New(env, "cannot create a promise");
  waiting_.push_back({Napi::Persistent(args.As<Napi::Object>()), deferred, std::move(start)});
  return Napi::Promise(env, promise);
}

Napi::Value AsyncLane::run(Napi::Env env, napi_deferred deferred, int64_t bytes, Kernel kernel, Finish finish) {
  napi_value promise = nullptr;
  if (deferred == nullptr && napi_create_promise(env, &deferred, &promise) != napi_ok) {
    throw Napi::Error::New(env, "cannot create a promise");
  }
  auto failure = std::make_shared<std::string>();
  auto self = shared_from_this();
  Completions::Item* item = completions_->expect(env, deferred, [self, bytes, failure, finish = std::move(finish)](Napi::Env e, int status) {
    self->settled(e, bytes);
    if (status == kDone) return finish(e);
    if (status == kFailed) throw coded_error(e, failure->substr(0, failure->find(':')), "native kernel failed: " + *failure);
    throw coded_error(e, "ERR_NATIVE", "native kernel failed: the call was cancelled");
  });
  jobs_++;
  bytes_ += bytes;
  peak_ = std::max(peak_, bytes_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    outstanding_++;
  }
  // The task holds the lane, not the job: the job (JS references) is freed with the completion, on the JS
  // thread. post() is the task's last use of the job.
  try {
    rk::submit(this, [self, item, failure, kernel = std::move(kernel)](bool go) {
      int status = kCancelled;
      if (go) {
        *failure = kernel();
        status = failure->empty() ? kDone : kFailed;
      }
      self->completions_->post(item, status);
      std::lock_guard<std::mutex> lock(self->mu_);
      if (--self->outstanding_ == 0) self->idle_.notify_all();
    });
  } catch (const std::bad_alloc&) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      outstanding_--;
    }
    *failure = "ERR_OUT_OF_MEMORY";
    completions_->settle_now(env, item, kFailed);
  }
  return promise ? Napi::Value(env, promise) : env.Undefined();
}

void AsyncLane::settled(Napi::Env env, int64_t bytes) {
  jobs_--;
  bytes_ -= bytes;
  // the calls that waited, in order, while they fit (one always starts when nothing is in flight)
  while (!waiting_.empty() && (jobs_ == 0 || bytes_ < limit())) {
    Waiting w = std::move(waiting_.front());
    waiting_.pop_front();
    Napi::HandleScope scope(env);
    try {
      w.start(env, w.args.Value(), w.deferred);  // settles its promise itself on a bad argument
    } catch (const Napi::Error& e) {
      napi_reject_deferred(env, w.deferred, e.Value());
    } catch (const std::bad_alloc&) {
      napi_reject_deferred(env, w.deferred, coded_error(env, "ERR_OUT_OF_MEMORY", "out of memory for a call that waited").Value());
    }
  }
}

void AsyncLane::close() {
  {
    std::lock_guard<std::mutex> lock(lanes_mu);
    lanes().erase(env_);
  }
  rk::cancel(this);  // the tasks no thread has started post "cancelled" now
  std::unique_lock<std::mutex> lock(mu_);
  idle_.wait(lock, [&] { return outstanding_ == 0; });
  waiting_.clear();  // their references, freed while the env is alive; their promises never settle
}

void export_scheduler(Napi::Env env, Napi::Object exports) {
  exports.Set("_asyncScheduler", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    Napi::Env env = info.Env();
    if (info.Length() > 0 && info[0].IsNumber()) {
      const double b = info[0].As<Napi::Number>().DoubleValue();
      if (!(b >= 0 && b <= 9007199254740991.0)) throw_range(env, "_asyncScheduler", "the limit must be a byte count");
      AsyncLane::set_limit(int64_t(b));
    }
    AsyncLane& lane = AsyncLane::of(env);
    if (info.Length() > 0 && info[0].IsNumber()) lane.reset_peak();
    Napi::Object o = Napi::Object::New(env);
    o.Set("limit", Napi::Number::New(env, double(AsyncLane::limit())));
    o.Set("jobs", Napi::Number::New(env, double(lane.jobs())));
    o.Set("bytes", Napi::Number::New(env, double(lane.bytes())));
    o.Set("peakBytes", Napi::Number::New(env, double(lane.peak_bytes())));
    o.Set("waiting", Napi::Number::New(env, double(lane.waiting())));
    o.Set("threads", Napi::Number::New(env, pool_threads()));
    return o;
  }, "_asyncScheduler"));
}

}  // namespace rk::addon
