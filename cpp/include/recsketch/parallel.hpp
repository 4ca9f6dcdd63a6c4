// A parallel for-loop over independent work items, run by a small pool of threads that sleep
// (on a condition variable) whenever they have no work.
//
// Design notes
// - Why not `#pragma omp parallel for`: OpenMP runtimes busy-wait between parallel regions by
//   default, and the wait policy can only be set through the environment before the runtime
//   starts. A recursion made of many short products then spends a core spinning; on a machine
//   where another process (or torch's own thread pool) is busy, the spinning thread competes
//   with the thread doing the work, and two threads ran 5x slower than one. Pool threads here
//   block on their own condition variable, so an idle thread costs nothing and a loaded
//   machine slows a call down at most to its one-thread speed plus a wake-up per helper used.
// - The pool never has more threads than the hardware (a larger num_threads gives the same
//   bits with fewer threads), and a loop wakes only the helpers it uses.
// - Items are handed out one at a time from an atomic counter and the caller works too, so a
//   thread that the OS preempts delays only the item it holds.
// - Work items must write disjoint outputs: results then do not depend on the thread count or
//   on which thread ran what, which is the reproducibility contract of recsketch.
// - A loop started from inside a pool thread, or while another caller's loop runs, runs
//   serially in the calling thread (same bits), so nested and concurrent calls never wait on
//   each other.
// - OpenMP, when built in, only chooses the default thread count (it honours OMP_NUM_THREADS
//   and the process's CPU affinity); without it the default is the hardware's thread count.
// - A body may throw: the first exception is kept, no further items are handed out, and it is
//   rethrown in the caller once every helper has left the loop (the body and everything it
//   references live on the caller's stack, so leaving earlier would be a use-after-free).
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

namespace recsketch {

// The most threads any call accepts (a larger num_threads is a ValueError in every entry
// point; it is far beyond any machine this runs on and bounds the pool's size).
inline constexpr int kMaxThreads = 256;

inline constexpr bool has_openmp() noexcept {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

// Threads used when the caller passes num_threads <= 0.
inline int default_num_threads() noexcept {
#ifdef _OPENMP
  const int n = omp_get_max_threads();
#else
  const int n = static_cast<int>(std::thread::hardware_concurrency());
#endif
  return std::clamp(n, 1, kMaxThreads);
}

// num_threads as given (<= 0: the default), never above kMaxThreads.
inline int resolve_threads(int num_threads) noexcept {
  return num_threads > 0 ? std::min(num_threads, kMaxThreads) : default_num_threads();
}

// For entry points: refuses a thread count above kMaxThreads (std::invalid_argument, which the
// bindings turn into ValueError).
inline int check_threads(int num_threads) {
  if (num_threads > kMaxThreads)
    throw std::invalid_argument("num_threads must be at most " + std::to_string(kMaxThreads) +
                                ", got " + std::to_string(num_threads));
  return resolve_threads(num_threads);
}


namespace detail {

class ThreadPool {
 public:
  static ThreadPool& global() {
    // Never destroyed: worker threads must not be joined during static destruction (the
    // interpreter may be tearing down), and the OS reclaims them at exit.
    static ThreadPool* once = [] {
#if defined(__unix__) || defined(__APPLE__)
      // A forked child has none of the parent's threads: it starts with an empty pool (the
      // parent's is leaked, its locks may be held by threads that do not exist there).
      pthread_atfork(nullptr, nullptr, [] { instance() = new ThreadPool(); });
#endif
      return instance() = new ThreadPool();
    }();
    (void)once;
    return *instance();
  }

  // Runs body(0..n-1) on up to `threads` threads, the caller included. Returns false, having
  // run nothing, if the pool is busy with another caller's loop or the caller is a pool thread.
  bool try_run(std::int64_t n, int threads, const std::function<void(std::int64_t)>& body) {
    if (in_worker()) return false;
    std::unique_lock<std::mutex> caller(busy_, std::try_to_lock);
    if (!caller.owns_lock()) return false;
    // More threads than hardware threads only adds context switches (results do not depend on
    // the thread count), so the pool never grows past the hardware.
    const int helpers = grow(std::min<std::int64_t>({threads, n, hardware_threads()}) - 1);
    if (helpers == 0) return false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      body_ = &body;
      n_ = n;
      next_.store(0, std::memory_order_relaxed);
      ++generation_;
      open_ = true;
      // Only the helpers this loop wants are woken, each on its own condition variable: a
      // pool grown by an earlier wide call must not wake all its threads for a narrow one.
      for (int id = 0; id < helpers; ++id) workers_[static_cast<std::size_t>(id)]->go = generation_;
    }
    for (int id = 0; id < helpers; ++id) workers_[static_cast<std::size_t>(id)]->wake.notify_one();
    drain();
    std::exception_ptr error;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      // Helpers that have not joined yet find the loop closed and go back to sleep: the caller
      // waits only for those still inside it.
      open_ = false;
      done_.wait(lock, [&] { return active_ == 0; });
      body_ = nullptr;
      error = std::exchange(error_, nullptr);
    }
    if (error) std::rethrow_exception(error);
    return true;
  }

  struct Stats {
    std::int64_t threads, wakeups, joined;
  };
  // Pool threads created, times a pool thread woke up, times one joined a loop (test hooks).
  Stats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {static_cast<std::int64_t>(workers_.size()), wakeups_, joined_};
  }

 private:
  struct Worker {
    std::condition_variable wake;
    std::uint64_t go = 0;  // the loop this thread is asked to join
  };

  ThreadPool() = default;

  static ThreadPool*& instance() {
    static ThreadPool* pool = nullptr;
    return pool;
  }

  static bool& in_worker() {
    thread_local bool flag = false;
    return flag;
  }

  static std::int64_t hardware_threads() noexcept {
    const unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? kMaxThreads : static_cast<std::int64_t>(hw);
  }

  // Runs items until none are left. Never throws: the first exception is stored for the caller
  // and the remaining items are withdrawn.
  void drain() noexcept {
    for (std::int64_t i; (i = next_.fetch_add(1, std::memory_order_relaxed)) < n_;) {
      try {
        (*body_)(i);
      } catch (...) {
        next_.store(n_, std::memory_order_relaxed);
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
      }
    }
  }

  // Makes sure `want` helper threads exist (fewer if the OS refuses threads); returns how many.
  int grow(std::int64_t want) {
    want = std::clamp<std::int64_t>(want, 0, kMaxThreads - 1);
    std::lock_guard<std::mutex> lock(mutex_);
    while (static_cast<std::int64_t>(workers_.size()) < want) {
      try {
        workers_.push_back(std::make_unique<Worker>());
        Worker* self = workers_.back().get();
        // a new thread waits for the next loop it is asked to join
        std::thread([this, self] { work(*self); }).detach();
      } catch (const std::system_error&) {
        workers_.pop_back();
        break;
      }
    }
    return static_cast<int>(std::min<std::int64_t>(want, static_cast<std::int64_t>(workers_.size())));
  }

  void work(Worker& self) {
    in_worker() = true;
    std::uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        self.wake.wait(lock, [&] { return self.go != seen; });
        seen = self.go;
        ++wakeups_;
        if (!open_ || seen != generation_) continue;  // woken for a loop already finished
        ++active_;
        ++joined_;
      }
      drain();
      std::lock_guard<std::mutex> lock(mutex_);
      if (--active_ == 0 && !open_) done_.notify_one();
    }
  }

  std::mutex busy_;   // held by the caller whose loop the pool runs
  std::mutex mutex_;  // guards everything below except next_
  std::condition_variable done_;
  std::vector<std::unique_ptr<Worker>> workers_;  // threads are detached; these never move
  const std::function<void(std::int64_t)>* body_ = nullptr;
  std::int64_t n_ = 0;
  std::atomic<std::int64_t> next_{0};
  int active_ = 0;  // helpers inside the current loop
  bool open_ = false;  // the current loop still accepts helpers
  std::uint64_t generation_ = 0;
  std::int64_t wakeups_ = 0, joined_ = 0;
  std::exception_ptr error_;  // the first exception a body threw in the current loop
};

}  // namespace detail

// Runs body(i) for i in [0, n) on up to num_threads threads (<= 0: the default).
template <class Body>
void parallel_for(std::int64_t n, int num_threads, Body&& body) {
  const int threads = resolve_threads(num_threads);
  if (threads > 1 && n > 1) {
    const std::function<void(std::int64_t)> f = [&body](std::int64_t i) { body(i); };
    if (detail::ThreadPool::global().try_run(n, threads, f)) return;
  }
  for (std::int64_t i = 0; i < n; ++i) body(i);
}

}  // namespace recsketch
