// A fixed pool of threads for the CPU kernels' data-parallel loops.
//
// Built for many short parallel loops (decode calls parallel_for ~200 times per token): the calling thread takes
// part in the work, idle workers spin for a short while (kSpinMicroseconds) before they sleep on a futex, and the
// caller never waits for a worker that is asleep — it runs the remaining tasks itself.
#pragma once

#include <algorithm>
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

  // Whether the pool sets OpenBLAS's thread count to its own: the compute pools do; a pool for other work (the
  // generator's sampling) leaves it as the compute pool set it.
  enum class Blas { kConfigure, kLeave };

  // `num_threads` >= 1 counts the calling thread: the pool starts num_threads - 1 workers. kConfigure configures
  // OpenBLAS for num_threads threads (configure_openblas; OpenBLAS is only called from outside parallel_for).
  explicit ThreadPool(int num_threads, Blas blas = Blas::kConfigure);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // `requested` threads, or one per available core where it is 0 or less (BackendOptions::num_threads' rule).
  static int threads_for(int requested) {
    return requested > 0 ? requested : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  }

  // Calls body(begin, end) on disjoint ranges covering [0, num_tasks), on the calling thread and the workers, and
  // returns when all have finished. Each thread owns a contiguous share of the tasks and claims it from the front
  // in halving chunks, so a thread's claims continue one another (the weight streams of a matmul stay sequential
  // per thread); a thread done with its share steals halves of the others' unclaimed tasks from their back ends, so
  // threads finish within about one task of each other.
  // `body` must not throw. Call from one thread at a time; a parallel_for called from inside a body runs serially
  // on the calling thread.
  void parallel_for(int64_t num_tasks, const std::function<void(int64_t begin, int64_t end)>& body);

 private:
  // A thread's share of the current loop: high 32 bits its next unclaimed task, low 32 bits its end. The owner
  // claims from the front, thieves from the back, each by a compare-exchange on the one word.
  struct alignas(64) Share {
    std::atomic<uint64_t> range{0};
  };

  void worker_main(int index);
  // Claims and runs chunks of the current loop, of `index`'s share and then of the others', until none are left.
  void run_chunks(int index);
  // Runs one claimed chunk of `share` (from its front, or from its back when stealing); false once it is empty.
  bool run_one_claim(Share& share, bool from_front);

  const int num_threads_;
  std::vector<std::thread> workers_;
  std::vector<Share> shares_;  // one per thread, the caller's first

  // The current loop's body, written by the caller before it publishes the loop's shares.
  std::atomic<const std::function<void(int64_t, int64_t)>*> body_{nullptr};
  // Tasks of the current loop that have finished.
  alignas(64) std::atomic<int64_t> done_tasks_{0};
  // Bumped to start a loop; workers wait on it.
  alignas(64) std::atomic<uint32_t> generation_{0};
  std::atomic<bool> stopping_{false};
};

}  // namespace recgpt
