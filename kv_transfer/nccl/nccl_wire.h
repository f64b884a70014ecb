// Internal to kv_transfer's nccl backend: the layouts of its opaque bytes (endpoints, region keys) and of the
// messages its control channel carries, with their checked decoding. Native byte order: both ends run on
// machines of one kind. No CUDA or NCCL types: their handles travel as fixed-size byte arrays.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "common/status.h"
#include "kv_transfer/transfer_engine.h"

namespace recgpt::kv::nccl {

constexpr uint32_t kEndpointMagic = 0x45434e52;   // "RNCE": recgpt nccl endpoint
constexpr uint32_t kRegionKeyMagic = 0x4b434e52;  // "RNCK": recgpt nccl region key
constexpr uint32_t kMessageMagic = 0x4d434e52;    // "RNCM": recgpt nccl control message

constexpr size_t kUniqueIdBytes = 128;  // sizeof(ncclUniqueId), checked where NCCL is included
constexpr size_t kIpcHandleBytes = 64;  // sizeof(cudaIpcMemHandle_t), checked likewise
constexpr size_t kBusIdBytes = 32;      // "00000000:00:00.0" and a terminating zero, padded

// Where an engine's GPU is: two engines on the same device of the same host cannot share an NCCL
// communicator (NCCL refuses two ranks on one GPU), so they move bytes through CUDA IPC instead.
struct DeviceLocation {
  uint64_t host_hash = 0;  // hostname and boot id
  char bus_id[kBusIdBytes] = {};

  bool operator==(const DeviceLocation& other) const {
    return host_hash == other.host_hash && std::memcmp(bus_id, other.bus_id, kBusIdBytes) == 0;
  }
};

// Followed by `control_bytes` of the control engine's (ucx) endpoint.
struct EndpointWire {
  uint32_t magic = kEndpointMagic;
  uint32_t control_bytes = 0;
  uint64_t engine_uuid = 0;
  DeviceLocation location;
  uint64_t process_token = 0;  // engines of one process on one GPU write each other's memory directly
};

struct RegionKeyWire {
  uint32_t magic = kRegionKeyMagic;
  LocalRegionId region = 0;  // the exporter's id, named by write descriptors
  uint64_t engine_uuid = 0;
  uint64_t bytes = 0;
  uint64_t base_address = 0;          // in the exporter's process
  uint64_t offset_in_allocation = 0;  // where the region starts in the allocation the IPC handle opens
  unsigned char ipc_handle[kIpcHandleBytes] = {};
};

enum class MessageType : uint32_t {
  kHello = 1,   // a writer connected: payload HelloWire
  kWrites = 2,  // a batch of NCCL sends follows: payload WriteCountWire, then that many WriteDescriptorWire
  kNotify = 3,  // payload: the caller's message
};

// Every control message starts with this.
struct MessageHeader {
  uint32_t magic = kMessageMagic;
  MessageType type = MessageType::kHello;
  uint64_t sender_uuid = 0;
};

struct HelloWire {
  uint32_t use_nccl = 0;  // 0: same device, the writer copies through CUDA IPC and sends no kWrites
  uint32_t reserved = 0;
  unsigned char unique_id[kUniqueIdBytes] = {};  // the writer's ncclUniqueId; the receiver joins as rank 0
};

struct WriteCountWire {
  uint64_t count = 0;
};

// One receive the receiver posts, in the order of the writer's sends.
struct WriteDescriptorWire {
  LocalRegionId region = 0;  // the receiver's id
  uint32_t reserved = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
};

static_assert(std::has_unique_object_representations_v<EndpointWire>, "no padding on the wire");
static_assert(std::has_unique_object_representations_v<RegionKeyWire>, "no padding on the wire");
static_assert(std::has_unique_object_representations_v<MessageHeader>, "no padding on the wire");
static_assert(std::has_unique_object_representations_v<HelloWire>, "no padding on the wire");
static_assert(std::has_unique_object_representations_v<WriteDescriptorWire>, "no padding on the wire");

template <typename Wire>
void append_wire(Bytes& bytes, const Wire& wire) {
  const auto* begin = reinterpret_cast<const std::byte*>(&wire);
  bytes.insert(bytes.end(), begin, begin + sizeof(Wire));
}

// Reads Wire values one after another from bytes that came from outside; every read is bounds-checked.
class WireReader {
 public:
  WireReader(std::span<const std::byte> bytes, std::string what) : bytes_(bytes), what_(std::move(what)) {}

  template <typename Wire>
  Result<Wire> read() {
    if (bytes_.size() < sizeof(Wire)) {
      return invalid_argument(what_ + " is truncated: " + std::to_string(sizeof(Wire)) + " more bytes wanted, " +
                              std::to_string(bytes_.size()) + " left");
    }
    Wire wire;
    std::memcpy(&wire, bytes_.data(), sizeof(Wire));
    bytes_ = bytes_.subspan(sizeof(Wire));
    return wire;
  }

  std::span<const std::byte> rest() const { return bytes_; }
  const std::string& what() const { return what_; }

 private:
  std::span<const std::byte> bytes_;
  std::string what_;
};

}  // namespace recgpt::kv::nccl
