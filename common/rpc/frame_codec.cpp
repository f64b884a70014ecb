#include "common/rpc/frame_codec.h"

#include "proto/control.pb.h"

namespace recgpt::rpc {

Result<uint32_t> parse_frame_header(std::span<const std::byte, kFrameHeaderBytes> header, uint32_t max_frame_bytes) {
  uint32_t length = 0;
  for (size_t i = 0; i < kFrameHeaderBytes; ++i) length |= std::to_integer<uint32_t>(header[i]) << (8 * i);
  if (length == 0) return invalid_argument("a frame announces an empty body");
  if (length > max_frame_bytes) {
    return invalid_argument("a frame announces " + std::to_string(length) + " bytes, over the limit of " +
                            std::to_string(max_frame_bytes));
  }
  return length;
}

Result<control::Envelope> parse_frame_body(std::span<const std::byte> body) {
  control::Envelope envelope;
  if (!envelope.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
    return data_loss("a frame of " + std::to_string(body.size()) + " bytes is not a control envelope");
  }
  if (envelope.body_case() == control::Envelope::BODY_NOT_SET) {
    return data_loss("a control envelope carries no known body (a newer peer, or garbage that parsed)");
  }
  return envelope;
}

Result<std::string> encode_frame(const control::Envelope& envelope, uint32_t max_frame_bytes) {
  const size_t body_bytes = envelope.ByteSizeLong();
  if (body_bytes == 0 || body_bytes > max_frame_bytes) {
    return invalid_argument("a " + body_name(envelope) + " frame of " + std::to_string(body_bytes) +
                            " bytes is outside 1.." + std::to_string(max_frame_bytes));
  }
  std::string frame(kFrameHeaderBytes + body_bytes, '\0');
  for (size_t i = 0; i < kFrameHeaderBytes; ++i) frame[i] = static_cast<char>((body_bytes >> (8 * i)) & 0xff);
  if (!envelope.SerializeToArray(frame.data() + kFrameHeaderBytes, static_cast<int>(body_bytes))) {
    return internal_error("serializing a " + body_name(envelope) + " frame failed");
  }
  return frame;
}

std::string body_name(const control::Envelope& envelope) {
  if (envelope.body_case() == control::Envelope::BODY_NOT_SET) return "empty";
  const auto* field = control::Envelope::descriptor()->FindFieldByNumber(envelope.body_case());
  return field != nullptr ? field->name() : "unknown";
}

}  // namespace recgpt::rpc
