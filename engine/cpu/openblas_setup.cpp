#include "engine/cpu/openblas_setup.h"

#include <cblas.h>

#include <cstdlib>
#include <mutex>

#include "engine/cpu/cpu_features.h"

// Exported by OpenBLAS's DYNAMIC_ARCH builds (driver/others/dynamic.c): quit forgets the selected kernel table,
// init selects one again (honouring OPENBLAS_CORETYPE) and initialises its blocking parameters.
extern "C" void gotoblas_dynamic_init(void);
extern "C" void gotoblas_dynamic_quit(void);

namespace recgpt {
namespace {

void repair_core_detection() {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr || openblas_core_name() != "Prescott") return;
  CpuFeatures features = detected_cpu_features();
  const char* core = features.avx512_bf16 ? "Cooperlake"
                     : features.avx512    ? "SkylakeX"
                     : features.avx2_fma  ? "Haswell"
                                          : nullptr;
  if (core == nullptr) return;  // a CPU where Prescott is right
  setenv("OPENBLAS_CORETYPE", core, 1);
  gotoblas_dynamic_quit();
  gotoblas_dynamic_init();
  unsetenv("OPENBLAS_CORETYPE");
}

}  // namespace

void configure_openblas(int num_threads) {
  static std::once_flag repaired;
  std::call_once(repaired, repair_core_detection);
  openblas_set_num_threads(num_threads);
}

std::string openblas_core_name() { return openblas_get_corename(); }

}  // namespace recgpt
