// A build without the CUDA runtime has no device copier.
#include "kv_transfer/device_copy.h"

namespace recgpt::kv {

std::shared_ptr<DeviceCopier> cuda_device_copier() { return nullptr; }

}  // namespace recgpt::kv
