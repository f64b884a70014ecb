// Anonymous memory that asks for 2 MiB pages: for data streamed by the gigabyte (weights repacked at load,
// benchmark buffers), where 4 KiB pages make every few kilobytes read a TLB miss.
#pragma once

#include <cstddef>

#include "common/status.h"

namespace recgpt {

class HugePageMemory {
 public:
  // `bytes` of zeroed memory starting on a 2 MiB boundary, with MADV_HUGEPAGE (best effort: where transparent
  // huge pages are off, the pages are whatever the kernel gives). Pages fault in on first touch.
  // kResourceExhausted when the address space cannot hold it.
  static Result<HugePageMemory> allocate(size_t bytes);

  HugePageMemory() = default;
  HugePageMemory(HugePageMemory&& other) noexcept;
  HugePageMemory& operator=(HugePageMemory&& other) noexcept;
  HugePageMemory(const HugePageMemory&) = delete;
  HugePageMemory& operator=(const HugePageMemory&) = delete;
  ~HugePageMemory();

  // Faults every page in now, zeroed (MADV_POPULATE_WRITE; touching a byte per page before Linux 5.14), so that
  // a short machine fails here and no later access pays for the fault. kResourceExhausted when memory runs out.
  Status commit();

  std::byte* data() const { return data_; }
  size_t size() const { return size_; }

  static constexpr size_t kHugePageBytes = size_t{2} << 20;

 private:
  void* mapping_ = nullptr;  // what mmap returned: up to one huge page before data_
  size_t mapped_bytes_ = 0;
  std::byte* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace recgpt
