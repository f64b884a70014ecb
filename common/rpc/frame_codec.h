// The control plane's framing: each frame is a 4-byte little-endian body length, then the body, one serialized
// recgpt.control.Envelope. Pure functions over bytes (no sockets), so they are unit-tested and fuzzed alone.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "common/status.h"

namespace recgpt::control {
class Envelope;
}

namespace recgpt::rpc {

inline constexpr size_t kFrameHeaderBytes = 4;
// Control messages are small (the largest carries a prompt's token ids); a frame over this is refused.
inline constexpr uint32_t kDefaultMaxFrameBytes = 16u << 20;

// The body length a header announces; kInvalidArgument when it is 0 or over `max_frame_bytes`.
Result<uint32_t> parse_frame_header(std::span<const std::byte, kFrameHeaderBytes> header, uint32_t max_frame_bytes);

// kDataLoss when the body is not an Envelope, or is one with no body set.
Result<control::Envelope> parse_frame_body(std::span<const std::byte> body);

// Header and body of one frame; kInvalidArgument when the envelope serializes to more than `max_frame_bytes`.
Result<std::string> encode_frame(const control::Envelope& envelope, uint32_t max_frame_bytes = kDefaultMaxFrameBytes);

// The name of the envelope's body ("hello", "reserve_kv", ...), for logs and errors.
std::string body_name(const control::Envelope& envelope);

}  // namespace recgpt::rpc
