// A persistent worker pool: one thread per core beside the caller, started
// on first use and kept for the life of the process, so that a call pays a
// wake-up (none while the workers still spin, a futex wake once they sleep)
// instead of starting and joining threads.
//
// run(count, task) runs task(i) for every i in [0, count) on the caller and
// the workers, each item claimed under a lock, and returns when all have
// run. Items never wait for one another (a recurrence's row slices or
// runs), so a worker that wakes late only finds nothing left to claim. A
// call that finds the workers busy with another (XLA runs independent
// custom calls concurrently) runs its items on its own thread.
//
// RECURRENT_JAX_CPU_THREADS caps the threads (caller included).

#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace rj {

// A spin-wait hint to the core.
inline void relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

class Pool {
 public:
  // Never destroyed: workers sleeping at exit are simply dropped.
  static Pool& instance() {
    static Pool* pool = new Pool(configured_threads());
    return *pool;
  }

  int64_t threads() const { return static_cast<int64_t>(workers_.size()) + 1; }

  template <class F>
  void run(int64_t count, F& task) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (count <= 1 || workers_.empty() || !busy.owns_lock()) {
      for (int64_t i = 0; i < count; ++i) task(i);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = Job{&call<F>, &task, count, 0};
      done_.store(0, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    work(generation_.load(std::memory_order_relaxed));
    // A worker preempted inside its item (a loaded machine) is waited for
    // without taking its core.
    for (int64_t spins = 0; done_.load(std::memory_order_acquire) < count; ++spins) {
      if (spins < kCallerSpins) {
        relax();
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  struct Job {
    void (*fn)(void*, int64_t) = nullptr;
    void* context = nullptr;
    int64_t count = 0, next = 0;
  };

  template <class F>
  static void call(void* context, int64_t i) {
    (*static_cast<F*>(context))(i);
  }

  static int64_t configured_threads() {
    int64_t n = std::max(1u, std::thread::hardware_concurrency());
    if (const char* cap = std::getenv("RECURRENT_JAX_CPU_THREADS")) {
      n = std::clamp<int64_t>(std::atoll(cap), 1, n);
    }
    return n;
  }

  explicit Pool(int64_t threads) {
    for (int64_t w = 1; w < threads; ++w) workers_.emplace_back([this] { serve(); });
    for (auto& worker : workers_) worker.detach();
  }

  // Claims and runs items of job `generation` until none is left.
  void work(uint64_t generation) {
    for (;;) {
      Job job;
      int64_t i;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (generation_.load(std::memory_order_relaxed) != generation || job_.next >= job_.count)
          return;
        job = job_;
        i = job_.next++;
      }
      job.fn(job.context, i);
      done_.fetch_add(1, std::memory_order_release);
    }
  }

  // A worker: spins for kSpin after each job (the next call of a training
  // step often follows at once), then sleeps until the next.
  void serve() {
    uint64_t seen = generation_.load(std::memory_order_acquire);
    for (;;) {
      const auto start = std::chrono::steady_clock::now();
      int64_t spins = 0;
      while (generation_.load(std::memory_order_acquire) == seen) {
        relax();
        if (++spins % 64 == 0 && std::chrono::steady_clock::now() - start > kSpin) {
          std::unique_lock<std::mutex> lock(mutex_);
          wake_.wait(lock, [&] { return generation_.load(std::memory_order_relaxed) != seen; });
        }
      }
      seen = generation_.load(std::memory_order_acquire);
      work(seen);
    }
  }

  static constexpr std::chrono::microseconds kSpin{50};
  static constexpr int64_t kCallerSpins = 4096;
  std::vector<std::thread> workers_;
  std::mutex busy_, mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int64_t> done_{0};
  Job job_;
};

// Runs task(i) for i in [0, count), on the pool when `parallel`.
template <class F>
void parallel_for(int64_t count, bool parallel, F task) {
  if (!parallel) {
    for (int64_t i = 0; i < count; ++i) task(i);
    return;
  }
  Pool::instance().run(count, task);
}

}  // namespace rj
