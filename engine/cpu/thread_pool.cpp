#include "engine/cpu/thread_pool.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>

#include "common/status.h"
#include "engine/cpu/openblas_setup.h"

namespace recgpt {
namespace {

thread_local bool inside_parallel_for = false;

// Waits until `value` differs from `seen`: spins for kSpinMicroseconds, then sleeps on the futex.
uint32_t wait_for_change(const std::atomic<uint32_t>& value, uint32_t seen) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(ThreadPool::kSpinMicroseconds);
  for (;;) {
    for (int i = 0; i < 32; ++i) {
      uint32_t current = value.load(std::memory_order_acquire);
      if (current != seen) return current;
      _mm_pause();
    }
    if (std::chrono::steady_clock::now() > deadline) break;
  }
  for (;;) {
    value.wait(seen, std::memory_order_acquire);
    uint32_t current = value.load(std::memory_order_acquire);
    if (current != seen) return current;
  }
}

}  // namespace

ThreadPool::ThreadPool(int num_threads, Blas blas) : num_threads_(num_threads), shares_(num_threads) {
  RECGPT_CHECK(num_threads >= 1);
  if (blas == Blas::kConfigure) configure_openblas(num_threads);
  workers_.reserve(num_threads - 1);
  for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this, i] { worker_main(i); });
}

ThreadPool::~ThreadPool() {
  stopping_.store(true, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  for (auto& worker : workers_) worker.join();
}

void ThreadPool::worker_main(int index) {
  inside_parallel_for = true;  // a body running here must not start a nested loop
  uint32_t seen = 0;
  for (;;) {
    seen = wait_for_change(generation_, seen);
    if (stopping_.load(std::memory_order_acquire)) return;
    run_chunks(index);
  }
}

void ThreadPool::run_chunks(int index) {
  while (run_one_claim(shares_[index], /*from_front=*/true)) {
  }
  for (int i = 1; i < num_threads_; ++i) {
    while (run_one_claim(shares_[(index + i) % num_threads_], /*from_front=*/false)) {
    }
  }
}

bool ThreadPool::run_one_claim(Share& share, bool from_front) {
  uint64_t range = share.range.load(std::memory_order_acquire);
  int64_t begin, end;
  for (;;) {
    const auto next = static_cast<int64_t>(range >> 32);
    const auto last = static_cast<int64_t>(range & 0xffffffffu);
    if (next >= last) return false;
    const int64_t take = std::max<int64_t>(1, (last - next) / 2);
    begin = from_front ? next : last - take;
    end = from_front ? next + take : last;
    const uint64_t rest = from_front ? (static_cast<uint64_t>(end) << 32) | static_cast<uint64_t>(last)
                                     : (static_cast<uint64_t>(next) << 32) | static_cast<uint64_t>(begin);
    if (share.range.compare_exchange_weak(range, rest, std::memory_order_acq_rel)) break;
  }
  // The claim read a share the caller published for the current loop (a worker arriving late from an earlier
  // loop finds its shares empty, or the current ones), so body_ is that loop's body, and the loop cannot end
  // before this chunk is counted.
  (*body_.load(std::memory_order_relaxed))(begin, end);
  done_tasks_.fetch_add(end - begin, std::memory_order_release);
  return true;
}

void ThreadPool::parallel_for(int64_t num_tasks, const std::function<void(int64_t, int64_t)>& body) {
  if (num_tasks <= 0) return;
  if (num_threads_ == 1 || num_tasks == 1 || inside_parallel_for) {
    body(0, num_tasks);
    return;
  }
  RECGPT_CHECK(num_tasks < (int64_t{1} << 31));
  inside_parallel_for = true;
  body_.store(&body, std::memory_order_relaxed);
  done_tasks_.store(0, std::memory_order_relaxed);
  for (int i = 0; i < num_threads_; ++i) {  // publishes the loop: equal contiguous shares (within a task)
    const int64_t begin = num_tasks * i / num_threads_, end = num_tasks * (i + 1) / num_threads_;
    shares_[i].range.store((static_cast<uint64_t>(begin) << 32) | static_cast<uint64_t>(end),
                           std::memory_order_release);
  }
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();

  run_chunks(0);
  for (int spins = 0; done_tasks_.load(std::memory_order_acquire) != num_tasks; ++spins) {
    if (spins < 4096) {
      _mm_pause();
    } else {
      std::this_thread::yield();  // a worker holding a chunk was preempted
    }
  }
  inside_parallel_for = false;
}

}  // namespace recgpt
