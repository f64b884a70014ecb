// cuBLAS, opened when a CUDA backend is first made (dlopen of libcublas.so.<major>) rather than linked: linking
// it costs every process ~210 MB of resident memory at start (the relocations of libcublasLt), CPU nodes and
// every CLI call included. Internal to cuda_kernels/.
#pragma once

#include <cublas_v2.h>

#include "common/status.h"

namespace recgpt::cuda {

struct CublasLibrary {
  decltype(&cublasCreate_v2) create = nullptr;
  decltype(&cublasDestroy_v2) destroy = nullptr;
  decltype(&cublasSetStream_v2) set_stream = nullptr;
  decltype(&cublasSetWorkspace_v2) set_workspace = nullptr;
  // cublasGemmEx's C signature (the header adds C++ overloads, so decltype cannot name it).
  cublasStatus_t (*gemm)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*, const void*,
                         cudaDataType, int, const void*, cudaDataType, int, const void*, void*, cudaDataType, int,
                         cublasComputeType_t, cublasGemmAlgo_t) = nullptr;
  decltype(&cublasGetStatusName) status_name = nullptr;
  decltype(&cublasGetStatusString) status_string = nullptr;

  // The library, opened once per process; kUnavailable naming the file and dlerror() when it is not there.
  static Result<const CublasLibrary*> get();

  // ok, or kUnavailable naming `what` and cuBLAS's error.
  Status check(cublasStatus_t status, const char* what) const;
};

}  // namespace recgpt::cuda
