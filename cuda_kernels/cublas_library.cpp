#include "cuda_kernels/cublas_library.h"

#include <dlfcn.h>

#include <mutex>
#include <string>

namespace recgpt::cuda {
namespace {

template <typename Function>
bool find(void* library, const char* name, Function& function) {
  function = reinterpret_cast<Function>(dlsym(library, name));
  return function != nullptr;
}

}  // namespace

Result<const CublasLibrary*> CublasLibrary::get() {
  static CublasLibrary library;
  static Status opened;
  static std::once_flag once;
  std::call_once(once, [] {
    const std::string file = "libcublas.so." + std::to_string(CUBLAS_VER_MAJOR);
    void* handle = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);  // kept open for the process's life
    if (handle == nullptr) {
      opened = unavailable("cannot open " + file + ": " + dlerror());
      return;
    }
    const bool found =
        find(handle, "cublasCreate_v2", library.create) && find(handle, "cublasDestroy_v2", library.destroy) &&
        find(handle, "cublasSetStream_v2", library.set_stream) &&
        find(handle, "cublasSetWorkspace_v2", library.set_workspace) && find(handle, "cublasGemmEx", library.gemm) &&
        find(handle, "cublasGetStatusName", library.status_name) &&
        find(handle, "cublasGetStatusString", library.status_string);
    if (!found) opened = unavailable(file + " lacks a function the CUDA backend calls: " + dlerror());
  });
  if (!opened.is_ok()) return opened;
  return &library;
}

Status CublasLibrary::check(cublasStatus_t status, const char* what) const {
  if (status == CUBLAS_STATUS_SUCCESS) return Status::ok();
  return unavailable(std::string("cuBLAS ") + what + ": " + status_name(status) + " (" + status_string(status) + ")");
}

}  // namespace recgpt::cuda
