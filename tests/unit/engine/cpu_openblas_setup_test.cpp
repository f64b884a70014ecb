#include <catch2/catch.hpp>
#include <cstdlib>

#include "engine/cpu/cpu_features.h"
#include "engine/cpu/openblas_setup.h"
#include "engine/cpu/thread_pool.h"

namespace recgpt {
namespace {

TEST_CASE("a thread pool leaves OpenBLAS on kernels that use the CPU's vector units", "[cpu][openblas]") {
  ThreadPool pool(2);
  if (std::getenv("OPENBLAS_CORETYPE") == nullptr && detected_cpu_features().avx2_fma) {
    REQUIRE(openblas_core_name() != "Prescott");  // OpenBLAS's SSE3 fallback for CPUs it does not know
  }
}

}  // namespace
}  // namespace recgpt
