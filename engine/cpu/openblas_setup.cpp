#include "engine/cpu/openblas_setup.h"

#include <cblas.h>

#include <cstdlib>
#include <mutex>

#include "engine/cpu/cpu_features.h"

// Exported by OpenBLAS's DYNAMIC_ARCH builds (driver/others/dynamic.c): quit forgets the selected kernel table,
// init selects one again (honouring OPENBLAS_CORETYPE) and initialises its blocking parameters.
extern "C" void gotoblas_dynamic_init(void);
extern "C" void gotoblas_dynamic_quit(void);
// Exported by OpenBLAS's pthread server (driver/others/): re-reads the OPENBLAS_* variables; stops the worker
// threads; starts them, reading the thread timeout.
extern "C" void openblas_read_env(void);
extern "C" int blas_thread_shutdown_(void);
extern "C" int blas_thread_init(void);

namespace recgpt {
namespace {

// The kernel sets of OpenBLAS 0.3.21 that use AVX-512 for sgemm.
bool has_avx512_kernels(const std::string& core) {
  return core == "SkylakeX" || core == "Cooperlake" || core == "SapphireRapids";
}

void repair_core_detection() {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;
  const std::string detected = openblas_core_name();
  CpuFeatures features = detected_cpu_features();
  const char* core = features.avx512_bf16 ? "Cooperlake"
                     : features.avx512    ? "SkylakeX"
                     : features.avx2_fma  ? "Haswell"
                                          : nullptr;
  if (core == nullptr) return;  // a CPU where Prescott is right
  // Unknown CPUs get Prescott; a CPU with AVX-512 on AVX2 kernels ("Zen", "Haswell") loses 1.7-1.8x at sgemm
  // (measured on Zen 5 against SkylakeX's, 2 threads, Qwen3-0.6B's prefill shapes).
  bool repair = detected == "Prescott" || (features.avx512 && !has_avx512_kernels(detected));
  if (!repair) return;
  setenv("OPENBLAS_CORETYPE", core, 1);
  gotoblas_dynamic_quit();
  gotoblas_dynamic_init();
  unsetenv("OPENBLAS_CORETYPE");
}

// OpenBLAS workers poll for 2^28 cycles (~0.1 s) after every call, taking a core from the pool for that long
// after each f32 GEMM (measured: ~70-90 ms of CPU burnt per call). 2^4 cycles, the minimum, makes them sleep at
// once; waking them costs microseconds per (millisecond-long) GEMM.
void shorten_thread_timeout() {
  if (std::getenv("OPENBLAS_THREAD_TIMEOUT") != nullptr) return;
  setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1);
  openblas_read_env();
  blas_thread_shutdown_();
  blas_thread_init();
  unsetenv("OPENBLAS_THREAD_TIMEOUT");
  openblas_read_env();
}

void configure_once() {
  repair_core_detection();
  shorten_thread_timeout();
}

}  // namespace

void configure_openblas(int num_threads) {
  static std::once_flag configured;
  std::call_once(configured, configure_once);
  openblas_set_num_threads(num_threads);
}

std::string openblas_core_name() { return openblas_get_corename(); }

}  // namespace recgpt
