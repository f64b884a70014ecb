// Fuzz target: a control-plane frame from outside, as a node's read loop takes it: the 4-byte header, then the
// body it announces. Whatever parses must re-encode to a frame that parses to the same envelope.
#include <cstdint>
#include <span>
#include <string>

#include "common/rpc/frame_codec.h"
#include "common/status.h"
#include "proto/control.pb.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace recgpt;
  if (size < rpc::kFrameHeaderBytes) return 0;
  const auto* bytes = reinterpret_cast<const std::byte*>(data);
  Result<uint32_t> length = rpc::parse_frame_header(std::span<const std::byte, rpc::kFrameHeaderBytes>(bytes, 4),
                                                    /*max_frame_bytes=*/1u << 16);
  if (!length.is_ok()) return 0;
  std::span<const std::byte> rest(bytes + rpc::kFrameHeaderBytes, size - rpc::kFrameHeaderBytes);
  Result<control::Envelope> envelope = rpc::parse_frame_body(rest.first(std::min<size_t>(*length, rest.size())));
  if (!envelope.is_ok()) return 0;
  Result<std::string> frame = rpc::encode_frame(*envelope, 1u << 20);
  RECGPT_CHECK_MSG(frame.is_ok(), frame.status().to_string());
  const auto* encoded = reinterpret_cast<const std::byte*>(frame->data());
  Result<control::Envelope> again =
      rpc::parse_frame_body(std::span<const std::byte>(encoded + rpc::kFrameHeaderBytes, frame->size() - 4));
  RECGPT_CHECK(again.is_ok());
  RECGPT_CHECK(again->SerializeAsString() == envelope->SerializeAsString());
  (void)rpc::body_name(*envelope);
  return 0;
}
