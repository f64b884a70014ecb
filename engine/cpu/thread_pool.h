// A fixed pool of threads for the CPU kernels' data-parallel loops.
//
// Built for many short parallel loops (decode calls parallel_for ~200 times per token): the calling thread takes
// part in the work, idle workers spin for a short while (kSpinMicroseconds) before they sleep on a futex, and the
// caller never waits for a worker that is asleep — it runs the remaining tasks itself.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace recgpt {

class ThreadPool {
 public:
  // How long an idle worker polls for the next loop before it sleeps.
  static constexpr int kSpinMicroseconds = 100;

  // `num_threads` >= 1 counts the calling thread: the pool starts num_threads - 1 workers. Also configures
  // OpenBLAS for num_threads threads (configure_openblas; OpenBLAS is only called from outside parallel_for).
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Calls body(begin, end) on disjoint ranges covering [0, num_tasks), on the calling thread and the workers, and
  // returns when all have finished. Ranges are handed out dynamically, guided: each claim takes 1 / (2 threads)
  // of the tasks still unclaimed (at least one), so early claims are long and the last ones short, and threads
  // finish within about one task of each other.
  // `body` must not throw. Call from one thread at a time; a parallel_for called from inside a body runs serially
  // on the calling thread.
  void parallel_for(int64_t num_tasks, const std::function<void(int64_t begin, int64_t end)>& body);

 private:
  void worker_main();
  // Claims and runs chunks of the current loop until none are left.
  void run_chunks();

  const int num_threads_;
  std::vector<std::thread> workers_;

  // The current loop's body, written by the caller before it publishes the loop in cursor_.
  std::atomic<const std::function<void(int64_t, int64_t)>*> body_{nullptr};
  // High 32 bits: the loop's number of tasks; low 32 bits: its next unclaimed task. Claims are compare-exchanges
  // on this one word, so a worker that arrives late from an earlier loop can only claim tasks of the current one.
  alignas(64) std::atomic<uint64_t> cursor_{0};
  // Tasks of the current loop that have finished.
  alignas(64) std::atomic<int64_t> done_tasks_{0};
  // Bumped to start a loop; workers wait on it.
  alignas(64) std::atomic<uint32_t> generation_{0};
  std::atomic<bool> stopping_{false};
};

}  // namespace recgpt
