// Promises settled from other threads, safe across env teardown (completions.h).
#include "completions.h"

#include <chrono>
#include <thread>

namespace rk::addon {

std::shared_ptr<Completions> Completions::make(Napi::Env env, std::function<void()> before_close, std::function<void()> after_close,
                                               std::string& why) {
  std::shared_ptr<Completions> c(new Completions);
  c->before_close_ = std::move(before_close);
  c->after_close_ = std::move(after_close);
  napi_value name = Napi::String::New(env, "rlhf-kernels:completions");
  if (napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, nullptr, nullptr, c.get(), call_js, &c->tsfn_) != napi_ok) {
    why = "cannot create a thread-safe function (napi_create_threadsafe_function failed)";
    return nullptr;
  }
  napi_unref_threadsafe_function(env, c->tsfn_);  // referenced only while items are pending
  // registered after the function: it runs before Node's clean-up of it; it holds the Completions
  auto* held = new std::shared_ptr<Completions>(c);
  if (napi_add_env_cleanup_hook(env, teardown, held) != napi_ok) {
    delete held;
    napi_release_threadsafe_function(c->tsfn_, napi_tsfn_abort);
    c->tsfn_ = nullptr;
    why = "cannot register an env cleanup hook (napi_add_env_cleanup_hook failed)";
    return nullptr;
  }
  return c;
}

Completions::~Completions() = default;

std::pair<Napi::Promise, Completions::Item*> Completions::expect(Napi::Env env, Settle settle) {
  napi_deferred deferred;
  napi_value promise;
  if (napi_create_promise(env, &deferred, &promise) != napi_ok) throw Napi::Error::New(env, "cannot create a promise");
  return {Napi::Promise(env, promise), expect(env, deferred, std::move(settle))};
}

Completions::Item* Completions::expect(Napi::Env env, napi_deferred deferred, Settle settle) {
  auto* item = new Item{deferred, std::move(settle), this, 0};
  if (pending_++ == 0) napi_ref_threadsafe_function(env, tsfn_);
  return item;
}

void Completions::post(Item* item, int status) {
  std::lock_guard<std::mutex> lock(mu_);
  item->status = status;
  if (closing_ || napi_call_threadsafe_function(tsfn_, item, napi_tsfn_nonblocking) != napi_ok) orphans_.push_back(item);
}

void Completions::settled(Napi::Env env) {
  if (--pending_ == 0) napi_unref_threadsafe_function(env, tsfn_);
}

void Completions::settle_now(Napi::Env env, Item* item, int status) {
  std::unique_ptr<Item> own(item);
  settled(env);
  // Nothing may escape: this runs from a C callback. In an env that is being torn down (a terminated
  // worker) N-API calls fail, and there is no one left to tell, so failures here are dropped.
  napi_value value = nullptr;
  bool resolve = true;
  try {
    value = item->settle(env, status);
  } catch (const Napi::Error& e) {
    resolve = false;
    try {
      value = e.Value();
    } catch (...) {
      return;
    }
  } catch (...) {
    return;
  }
  if (resolve) napi_resolve_deferred(env, item->deferred, value);
  else napi_reject_deferred(env, item->deferred, value);
}

void Completions::call_js(napi_env js, napi_value, void* context, void* data) {
  auto* item = static_cast<Item*>(data);
  if (js == nullptr) {  // the env is going away: the item is only freed
    delete item;
    return;
  }
  static_cast<Completions*>(context)->settle_now(Napi::Env(js), item, item->status);
}

void Completions::teardown(void* self) {
  std::unique_ptr<std::shared_ptr<Completions>> held(static_cast<std::shared_ptr<Completions>*>(self));
  Completions& c = **held;
  if (c.before_close_) c.before_close_();  // no thread posts after this
  std::vector<Item*> orphans;
  {
    std::lock_guard<std::mutex> lock(c.mu_);
    c.closing_ = true;
    orphans.swap(c.orphans_);
  }
  napi_release_threadsafe_function(c.tsfn_, napi_tsfn_abort);
  for (Item* item : orphans) delete item;
  if (c.after_close_) c.after_close_();
  // the closures may hold their owner, which holds this: the cycle ends here
  c.before_close_ = nullptr;
  c.after_close_ = nullptr;
}

// ---- the probe ----

namespace {

Napi::Value ProbeCompletions(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t count = info[0].IsNumber() ? info[0].As<Napi::Number>().Int64Value() : -1;
  const int64_t delay_ms = info[1].IsNumber() ? info[1].As<Napi::Number>().Int64Value() : -1;
  if (count < 0 || count > 100000 || delay_ms < 0 || delay_ms > 60000) {
    throw Napi::RangeError::New(env, "_probeCompletions(count ≤ 100000, delayMs ≤ 60000)");
  }
  auto worker = std::make_shared<std::thread>();
  std::string why;
  // before_close joins the thread: it has posted everything it will post
  auto c = Completions::make(env, [worker] { if (worker->joinable()) worker->join(); }, [] {}, why);
  if (!c) throw Napi::Error::New(env, why);
  std::vector<Completions::Item*> items;
  Napi::Array promises = Napi::Array::New(env, size_t(count));
  for (int64_t i = 0; i < count; i++) {
    auto [promise, item] = c->expect(env, [](Napi::Env e, int status) -> Napi::Value { return Napi::Number::New(e, status); });
    promises.Set(uint32_t(i), promise);
    items.push_back(item);
  }
  *worker = std::thread([c, items, delay_ms] {
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    for (size_t i = 0; i < items.size(); i++) c->post(items[i], int(i));
  });
  return promises;
}

}  // namespace

void export_completions_probe(Napi::Env env, Napi::Object exports) {
  exports.Set("_probeCompletions", Napi::Function::New(env, ProbeCompletions, "_probeCompletions"));
}

}  // namespace rk::addon
