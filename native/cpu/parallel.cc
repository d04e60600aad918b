#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace rk {
namespace {

// One parallel_for call: the caller and the helping pool threads take chunks from `next` until none remain.
struct Job {
  explicit Job(FnRef<void(int64_t, int64_t)> f) : fn(f) {}
  FnRef<void(int64_t, int64_t)> fn;
  int64_t n, chunk;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  int64_t chunks;
  std::mutex m;
  std::condition_variable finished;

  // Runs chunks until there are none left; returns after the last one this thread took.
  void work() {
    for (;;) {
      const int64_t c = next.fetch_add(1);
      if (c >= chunks) return;
      const int64_t b = c * chunk;
      fn(b, std::min(n, b + chunk));
      if (done.fetch_add(1) + 1 == chunks) {
        std::lock_guard<std::mutex> lock(m);
        finished.notify_all();
      }
    }
  }
};

class Pool {
 public:
  explicit Pool(int threads) {
    for (int i = 0; i < threads; i++) workers_.emplace_back([this] { loop(); });
  }
  // The pool lives for the whole process (see instance()); its threads are never joined.
  ~Pool() = delete;

  int size() const { return int(workers_.size()); }

  void run(const std::shared_ptr<Job>& job, int helpers) {
    {
      std::lock_guard<std::mutex> lock(m_);
      for (int i = 0; i < helpers; i++) chunks_.push_back(job);
    }
    if (helpers == 1) cv_.notify_one();
    else cv_.notify_all();
    job->work();
    std::unique_lock<std::mutex> lock(job->m);
    job->finished.wait(lock, [&] { return job->done.load() == job->chunks; });
  }

  void submit(const void* owner, std::function<void(bool)> task) {
    {
      std::lock_guard<std::mutex> lock(m_);
      tasks_.push_back({owner, std::move(task)});
    }
    cv_.notify_one();
  }

  size_t cancel(const void* owner) {
    std::vector<std::function<void(bool)>> taken;
    {
      std::lock_guard<std::mutex> lock(m_);
      for (auto it = tasks_.begin(); it != tasks_.end();) {
        if (it->owner == owner) {
          taken.push_back(std::move(it->run));
          it = tasks_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& t : taken) t(false);
    return taken.size();
  }

  static Pool& instance() {
    static Pool* pool = new Pool(threads_wanted());
    return *pool;
  }

 private:
  struct Task {
    const void* owner;
    std::function<void(bool)> run;
  };

  static int threads_wanted() {
    if (const char* env = std::getenv("RLHF_KERNELS_THREADS")) {
      const int n = std::atoi(env);
      if (n >= 1) return std::min(n, 256);
    }
    return int(std::max(1u, std::thread::hardware_concurrency()));
  }

  // Chunks first (they finish what has started), then tasks in order.
  void loop() {
    for (;;) {
      std::shared_ptr<Job> job;
      Task task;
      {
        std::unique_lock<std::mutex> lock(m_);
        cv_.wait(lock, [&] { return !chunks_.empty() || !tasks_.empty(); });
        if (!chunks_.empty()) {
          job = std::move(chunks_.front());
          chunks_.pop_front();
        } else {
          task = std::move(tasks_.front());
          tasks_.pop_front();
        }
      }
      if (job) job->work();
      else task.run(true);
    }
  }

  std::vector<std::thread> workers_;
  std::deque<std::shared_ptr<Job>> chunks_;
  std::deque<Task> tasks_;
  std::mutex m_;
  std::condition_variable cv_;
};

}  // namespace

int pool_threads() { return Pool::instance().size(); }

void submit(const void* owner, std::function<void(bool)> task) { Pool::instance().submit(owner, std::move(task)); }

size_t cancel(const void* owner) { return Pool::instance().cancel(owner); }

// The caller works, and up to pool_threads() − 1 pool threads help: pool_threads() threads in all, whether
// the caller is the JS thread (a sync call) or a pool thread (an async job).
void parallel_for(int64_t n, int64_t grain, FnRef<void(int64_t, int64_t)> fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  Pool& pool = Pool::instance();
  const int64_t max_chunks = std::max<int64_t>(1, n / grain);
  const int64_t chunks = std::min<int64_t>(max_chunks, int64_t(pool.size()) * 4);
  if (chunks <= 1 || pool.size() == 1) {
    fn(0, n);
    return;
  }
  auto job = std::make_shared<Job>(fn);
  job->n = n;
  job->chunk = (n + chunks - 1) / chunks;
  job->chunks = (n + job->chunk - 1) / job->chunk;
  pool.run(job, int(std::min<int64_t>(job->chunks - 1, pool.size() - 1)));
}

}  // namespace rk
