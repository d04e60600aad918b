// Promises settled on the JS thread by work that finishes on another thread (CUDA stream callbacks), safe
// across the env's teardown (a worker terminated with work in flight).
//
// Node 20 frees an env's thread-safe functions at its teardown whatever their thread count
// (nodejs/node#55706), so a foreign thread must never touch one after that. A Completions owns one
// thread-safe function, made before the env cleanup hook is registered; hooks run in reverse order of
// registration, so teardown() runs before Node's own clean-up of the function:
//   1. before_close(): the owner waits until no thread will post again (the GPU: synchronise the stream,
//      which runs every stream callback);
//   2. the channel closes under its mutex, and the thread-safe function is aborted: completions already
//      queued are handed back with no env and only freed; a post that finds the channel closed, or is
//      refused, leaves its completion to be freed here (on the JS thread);
//   3. after_close(): the owner frees what the work used (the GPU: pools and stream).
// Nothing CUDA-specific lives here, so the same code runs (and is tested) on machines without a GPU.
#pragma once
#include <napi.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace rk::addon {

class Completions : public std::enable_shared_from_this<Completions> {
 public:
  // The promise's value from the work's status, on the JS thread; a thrown Napi::Error rejects it.
  using Settle = std::function<Napi::Value(Napi::Env, int status)>;

  struct Item {
    napi_deferred deferred;
    Settle settle;
    Completions* owner;
    int status = 0;
  };

  // null, with the reason, when the thread-safe function or the cleanup hook cannot be made.
  static std::shared_ptr<Completions> make(Napi::Env env, std::function<void()> before_close, std::function<void()> after_close,
                                           std::string& why);
  ~Completions();
  Completions(const Completions&) = delete;
  Completions& operator=(const Completions&) = delete;

  // JS thread: a pending promise and the item to post once the work is done. The event loop stays alive
  // while any item is pending.
  std::pair<Napi::Promise, Item*> expect(Napi::Env env, Settle settle);
  // The same for a promise already made (napi_create_promise), whose deferred the item then settles.
  Item* expect(Napi::Env env, napi_deferred deferred, Settle settle);
  // Any thread, once per item: the work is done with `status`; the promise settles on the JS thread.
  void post(Item* item, int status);
  // JS thread: an item that will never be posted (the work could not be enqueued) is settled now.
  void settle_now(Napi::Env env, Item* item, int status);

 private:
  Completions() = default;
  static void call_js(napi_env env, napi_value, void* context, void* data);
  static void teardown(void* self);
  void settled(Napi::Env env);

  napi_threadsafe_function tsfn_ = nullptr;
  std::function<void()> before_close_, after_close_;
  std::mutex mu_;
  bool closing_ = false;
  std::vector<Item*> orphans_;  // posted after (or refused during) closing: freed by teardown()
  int64_t pending_ = 0;         // JS thread only
};

// The _probeCompletions(count, delayMs) export: `count` promises settled from a plain thread after delayMs,
// with values 0..count−1, through a Completions of their own. It exercises the teardown path on any machine
// (test/completions.test.ts terminates workers while the thread sleeps).
void export_completions_probe(Napi::Env env, Napi::Object exports);

}  // namespace rk::addon
