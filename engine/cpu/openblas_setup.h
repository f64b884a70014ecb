// Process-wide OpenBLAS configuration for the f32 matmul path.
#pragma once

#include <string>

namespace recgpt {

// Sets OpenBLAS's thread count, and once per process repairs its CPU detection: OpenBLAS 0.3.21 (Debian 12)
// does not know CPUs newer than it (e.g. Emerald Rapids) and falls back to its SSE3 "Prescott" kernels, 5x
// slower, and may give AMD CPUs with AVX-512 its AVX2 kernels ("Zen"); then, unless OPENBLAS_CORETYPE is set,
// it is re-initialised with the kernels matching the CPU's features (Cooperlake, SkylakeX or Haswell). Also makes
// OpenBLAS's idle workers sleep at once instead of polling for ~0.1 s after each call (unless OPENBLAS_THREAD_TIMEOUT
// is set), so that they do not compete with the pool's threads. Call from outside any BLAS call (ThreadPool's
// constructor does).
void configure_openblas(int num_threads);

// The kernel set OpenBLAS runs ("Cooperlake", "Haswell", "Prescott", ...).
std::string openblas_core_name();

}  // namespace recgpt
