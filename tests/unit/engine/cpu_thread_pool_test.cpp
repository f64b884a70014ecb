#include <atomic>
#include <catch2/catch.hpp>
#include <vector>

#include "engine/cpu/thread_pool.h"

namespace recgpt {
namespace {

TEST_CASE("parallel_for runs every task exactly once", "[cpu][thread_pool]") {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int64_t num_tasks : {0, 1, 2, 5, 64, 1000, 4097}) {
      std::vector<std::atomic<int>> runs(num_tasks);
      std::atomic<bool> empty_range{false};  // Catch2 assertions are not thread-safe: check after the loop
      pool.parallel_for(num_tasks, [&](int64_t begin, int64_t end) {
        if (begin >= end) empty_range = true;
        for (int64_t i = begin; i < end; ++i) runs[i].fetch_add(1);
      });
      REQUIRE_FALSE(empty_range.load());
      for (int64_t i = 0; i < num_tasks; ++i) REQUIRE(runs[i].load() == 1);
    }
  }
}

TEST_CASE("parallel_for survives many short loops back to back", "[cpu][thread_pool]") {
  ThreadPool pool(2);
  std::atomic<int64_t> total{0};
  for (int loop = 0; loop < 20000; ++loop) {
    pool.parallel_for(4, [&](int64_t begin, int64_t end) { total.fetch_add(end - begin); });
  }
  REQUIRE(total.load() == 4 * 20000);
}

TEST_CASE("parallel_for runs each task once across loops of changing sizes back to back", "[cpu][thread_pool]") {
  // Workers arriving late from one loop must neither run the next loop's tasks twice nor miscount them.
  ThreadPool pool(2);
  std::atomic<int64_t> runs{0};
  int64_t wrong_loops = 0;
  for (int loop = 0; loop < 200000; ++loop) {
    int64_t num_tasks = 2 + loop % 37;
    runs = 0;
    pool.parallel_for(num_tasks, [&](int64_t begin, int64_t end) { runs.fetch_add(end - begin); });
    if (runs.load() != num_tasks) ++wrong_loops;
  }
  REQUIRE(wrong_loops == 0);
}

TEST_CASE("parallel_for nested in a body runs serially on that thread", "[cpu][thread_pool]") {
  ThreadPool pool(2);
  std::atomic<int64_t> inner{0};
  pool.parallel_for(8, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      pool.parallel_for(10, [&](int64_t inner_begin, int64_t inner_end) { inner.fetch_add(inner_end - inner_begin); });
    }
  });
  REQUIRE(inner.load() == 80);
}

TEST_CASE("thread pool reports its size, the caller included", "[cpu][thread_pool]") {
  ThreadPool pool(3);
  REQUIRE(pool.num_threads() == 3);
}

}  // namespace
}  // namespace recgpt
