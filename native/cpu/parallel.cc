#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>
#if defined(__linux__)
#include <sched.h>
#include <unistd.h>
#endif

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

#if defined(__linux__)
// The CPUs of this process's affinity mask (taskset, a cpuset), or 0 when it cannot be read.
int affinity_cpus() {
  for (int n = 1024; n <= (1 << 16); n *= 4) {
    cpu_set_t* set = CPU_ALLOC(n);
    if (set == nullptr) return 0;
    const size_t size = CPU_ALLOC_SIZE(n);
    // the main thread's mask (its id is the process's): the pool may be made from any thread
    const int got = sched_getaffinity(getpid(), size, set) == 0 ? CPU_COUNT_S(size, set) : -1;
    CPU_FREE(set);
    if (got >= 0) return got;
  }
  return 0;
}

// The first line of a file, or "" when it cannot be read.
std::string first_line(const std::string& path) {
  std::ifstream f(path);
  std::string line;
  std::getline(f, line);
  return line;
}

// The CPUs a cgroup quota allows (quota / period, rounded up), or 0 without one: cgroup v2's cpu.max
// ("max 100000", "200000 100000") or v1's cpu.cfs_quota_us and cpu.cfs_period_us, in this process's cgroup
// (/proc/self/cgroup) and each of its ancestors, the smallest. A container started with --cpus has one.
int quota_cpus() {
  std::ifstream f("/proc/self/cgroup");
  std::string line, v2, v1;
  while (std::getline(f, line)) {  // "0::/path" (v2), "4:cpu,cpuacct:/path" (v1)
    const size_t a = line.find(':'), b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    std::string controllers(1, ',');
    controllers.append(line, a + 1, b - a - 1).push_back(',');
    if (line.compare(0, a, "0") == 0 && b == a + 1) v2 = line.substr(b + 1);
    else if (controllers.find(",cpu,") != std::string::npos) v1 = line.substr(b + 1);
  }
  int best = 0;
  const auto consider = [&](double quota, double period) {
    if (quota > 0 && period > 0) {
      const double n = quota / period;
      const int cpus = n >= 1 << 16 ? 1 << 16 : std::max(1, int(n + 0.999999));
      if (best == 0 || cpus < best) best = cpus;
    }
  };
  // each directory from the process's cgroup up to the hierarchy's root
  const auto walk = [&](const std::string& root, std::string path, auto&& read) {
    for (;;) {
      read(root + (path == "/" ? "" : path));
      if (path.empty() || path == "/") return;
      const size_t slash = path.rfind('/');
      path = slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
    }
  };
  if (!v2.empty()) {
    walk("/sys/fs/cgroup", v2, [&](const std::string& dir) {
      const std::string max = first_line(dir + "/cpu.max");
      const size_t space = max.find(' ');
      if (space != std::string::npos && max.compare(0, space, "max") != 0) {
        consider(std::atof(max.substr(0, space).c_str()), std::atof(max.c_str() + space + 1));
      }
    });
  }
  if (!v1.empty()) {
    walk("/sys/fs/cgroup/cpu", v1, [&](const std::string& dir) {
      consider(std::atof(first_line(dir + "/cpu.cfs_quota_us").c_str()), std::atof(first_line(dir + "/cpu.cfs_period_us").c_str()));
    });
  }
  return best;
}
#endif

// The cores this process may use: the machine's, or (Linux) those of its affinity mask, capped by a cgroup CPU
// quota; at least 1.
int cores_available() {
  int n = int(std::thread::hardware_concurrency());
#if defined(__linux__)
  if (const int a = affinity_cpus(); a > 0) n = a;
  if (const int q = quota_cpus(); q > 0 && (n <= 0 || q < n)) n = q;
#endif
  return std::max(1, n);
}

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
    return std::min(cores_available(), 256);
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
