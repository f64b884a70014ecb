#include "common/huge_page_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

namespace recgpt {

Result<HugePageMemory> HugePageMemory::allocate(size_t bytes) {
  HugePageMemory memory;
  if (bytes == 0) return memory;
  memory.mapped_bytes_ = bytes + kHugePageBytes;  // room to start on a boundary
  if (memory.mapped_bytes_ < bytes) return resource_exhausted("cannot map " + std::to_string(bytes) + " bytes");
  void* mapping = ::mmap(nullptr, memory.mapped_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapping == MAP_FAILED) {
    return resource_exhausted("cannot map " + std::to_string(bytes) + " bytes: " + std::strerror(errno));
  }
  memory.mapping_ = mapping;
  const auto start = (reinterpret_cast<uintptr_t>(mapping) + kHugePageBytes - 1) & ~uintptr_t{kHugePageBytes - 1};
  memory.data_ = reinterpret_cast<std::byte*>(start);
  memory.size_ = bytes;
  (void)::madvise(memory.data_, bytes, MADV_HUGEPAGE);
  return memory;
}

Status HugePageMemory::commit() {
  if (size_ == 0 || ::madvise(data_, size_, MADV_POPULATE_WRITE) == 0) return Status::ok();
  if (errno != EINVAL) {
    return resource_exhausted("cannot commit " + std::to_string(size_) + " bytes: " + std::strerror(errno));
  }
  const auto page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  for (size_t offset = 0; offset < size_; offset += page) {
    static_cast<volatile std::byte*>(static_cast<void*>(data_))[offset] = std::byte{0};  // Linux before 5.14
  }
  return Status::ok();
}

HugePageMemory::HugePageMemory(HugePageMemory&& other) noexcept
    : mapping_(std::exchange(other.mapping_, nullptr)),
      mapped_bytes_(std::exchange(other.mapped_bytes_, 0)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

HugePageMemory& HugePageMemory::operator=(HugePageMemory&& other) noexcept {
  if (this != &other) {
    if (mapping_ != nullptr) ::munmap(mapping_, mapped_bytes_);
    mapping_ = std::exchange(other.mapping_, nullptr);
    mapped_bytes_ = std::exchange(other.mapped_bytes_, 0);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

HugePageMemory::~HugePageMemory() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapped_bytes_);
  mapping_ = nullptr;
}

}  // namespace recgpt
