// Internal to kv_transfer's ucx backend: the layouts of its opaque bytes (endpoints, region keys) and of its
// active-message headers, and their checked encoding. No UCX types: the UCX data travel as payload bytes.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>

#include "common/status.h"
#include "kv_transfer/transfer_engine.h"

namespace recgpt::kv {

constexpr uint32_t kEndpointMagic = 0x45435552;   // "RUCE": recgpt ucx endpoint
constexpr uint32_t kRegionKeyMagic = 0x4b435552;  // "RUCK": recgpt ucx region key
constexpr uint32_t kNotifyMagic = 0x4e435552;     // "RUCN": recgpt ucx notification
constexpr uint32_t kWriteMagic = 0x57435552;      // "RUCW": recgpt ucx write (active-message path)

// Headers of the opaque bytes, each followed by `payload_bytes` of UCX data (a worker address, a packed rkey).
// Native byte order: the ucx backend does not span machines of different endianness.
struct EndpointWire {
  uint32_t magic = kEndpointMagic;
  uint32_t payload_bytes = 0;  // worker address
  uint64_t engine_uuid = 0;
};

// RegionKeyWire::flags: device memory this UCX cannot reach, staged through host memory by its owner; no rkey
// follows, and writes into it are active messages.
constexpr uint32_t kRegionStaged = 1;

struct RegionKeyWire {
  uint32_t magic = kRegionKeyMagic;
  uint32_t payload_bytes = 0;  // packed rkey (none for a staged region)
  uint64_t engine_uuid = 0;
  uint64_t base_address = 0;
  uint64_t bytes = 0;
  LocalRegionId region = 0;  // the exporter's id, named by active-message writes
  uint32_t flags = 0;
};

// The active-message header of a write (setting write_op=am); the data is the bytes to write.
struct WriteWire {
  uint32_t magic = kWriteMagic;
  LocalRegionId region = 0;  // the receiver's id
  uint64_t offset = 0;
  uint64_t bytes = 0;
};

// The active-message header of a notification; the data is the sender's endpoint bytes then the message.
struct NotifyWire {
  uint32_t magic = kNotifyMagic;
  uint32_t endpoint_bytes = 0;
  uint64_t sender_uuid = 0;
};

static_assert(std::has_unique_object_representations_v<EndpointWire>, "no padding on the wire");
static_assert(std::has_unique_object_representations_v<RegionKeyWire>, "no padding on the wire");
static_assert(std::has_unique_object_representations_v<NotifyWire>, "no padding on the wire");
static_assert(std::has_unique_object_representations_v<WriteWire>, "no padding on the wire");

template <typename Wire>
Bytes to_bytes(const Wire& wire, const void* payload, size_t payload_bytes) {
  Bytes bytes(sizeof(Wire) + payload_bytes);
  std::memcpy(bytes.data(), &wire, sizeof(Wire));
  if (payload_bytes > 0) std::memcpy(bytes.data() + sizeof(Wire), payload, payload_bytes);
  return bytes;
}

// The header of `bytes`; its payload (possibly empty) follows it.
template <typename Wire>
Result<Wire> parse_wire(std::span<const std::byte> bytes, uint32_t magic, const std::string& what) {
  if (bytes.size() < sizeof(Wire)) {
    return invalid_argument(what + " must be at least " + std::to_string(sizeof(Wire)) + " bytes, got " +
                            std::to_string(bytes.size()));
  }
  Wire wire;
  std::memcpy(&wire, bytes.data(), sizeof(Wire));
  if (wire.magic != magic) return invalid_argument(what + " is not from the ucx transfer backend (bad magic)");
  if (wire.payload_bytes != bytes.size() - sizeof(Wire)) {
    return invalid_argument(what + " announces " + std::to_string(wire.payload_bytes) + " payload bytes but carries " +
                            std::to_string(bytes.size() - sizeof(Wire)));
  }
  return wire;
}

}  // namespace recgpt::kv
