#include <catch2/catch.hpp>
#include <cstdlib>
#include <string>

#include "engine/cpu/cpu_features.h"
#include "engine/cpu/openblas_setup.h"
#include "engine/cpu/thread_pool.h"

namespace recgpt {
namespace {

TEST_CASE("a thread pool leaves OpenBLAS on kernels that use the CPU's widest vector units", "[cpu][openblas]") {
  ThreadPool pool(2);
  if (std::getenv("OPENBLAS_CORETYPE") == nullptr && detected_cpu_features().avx2_fma) {
    REQUIRE(openblas_core_name() != "Prescott");  // OpenBLAS's SSE3 fallback for CPUs it does not know
  }
  if (std::getenv("OPENBLAS_CORETYPE") == nullptr && detected_cpu_features().avx512) {
    std::string core = openblas_core_name();
    INFO("OpenBLAS core " << core);
    REQUIRE((core == "SkylakeX" || core == "Cooperlake" || core == "SapphireRapids"));  // AVX-512 sgemm
  }
}

}  // namespace
}  // namespace recgpt
