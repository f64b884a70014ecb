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

ThreadPool::ThreadPool(int num_threads) : num_threads_(num_threads) {
  RECGPT_CHECK(num_threads >= 1);
  configure_openblas(num_threads);
  workers_.reserve(num_threads - 1);
  for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this] { worker_main(); });
}

ThreadPool::~ThreadPool() {
  stopping_.store(true, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  for (auto& worker : workers_) worker.join();
}

void ThreadPool::worker_main() {
  inside_parallel_for = true;  // a body running here must not start a nested loop
  uint32_t seen = 0;
  for (;;) {
    seen = wait_for_change(generation_, seen);
    if (stopping_.load(std::memory_order_acquire)) return;
    run_chunks();
  }
}

void ThreadPool::run_chunks() {
  for (;;) {
    uint64_t cursor = cursor_.load(std::memory_order_acquire);
    int64_t begin, end;
    for (;;) {
      int64_t num_tasks = static_cast<int64_t>(cursor >> 32);
      begin = static_cast<int64_t>(cursor & 0xffffffffu);
      if (begin >= num_tasks) return;
      end = begin + std::max<int64_t>(1, (num_tasks - begin) / (2 * num_threads_));
      uint64_t claimed = (static_cast<uint64_t>(num_tasks) << 32) | static_cast<uint64_t>(end);
      if (cursor_.compare_exchange_weak(cursor, claimed, std::memory_order_acq_rel)) break;
    }
    // The claim read the word the caller published for the current loop (or a later claim of it), so body_ is
    // that loop's body, and the loop cannot end before this chunk is counted.
    (*body_.load(std::memory_order_relaxed))(begin, end);
    done_tasks_.fetch_add(end - begin, std::memory_order_release);
  }
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
  cursor_.store(static_cast<uint64_t>(num_tasks) << 32, std::memory_order_release);  // publishes the loop
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();

  run_chunks();
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
