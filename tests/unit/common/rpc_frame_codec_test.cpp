// The control plane's framing, bytes only: round trips, and every way a frame from outside can be wrong.
#include <catch2/catch.hpp>
#include <cstring>
#include <span>
#include <string>

#include "common/rpc/frame_codec.h"
#include "proto/control.pb.h"

namespace recgpt::rpc {
namespace {

std::span<const std::byte, kFrameHeaderBytes> header_of(const std::string& frame) {
  return std::span<const std::byte, kFrameHeaderBytes>(reinterpret_cast<const std::byte*>(frame.data()),
                                                       kFrameHeaderBytes);
}

std::span<const std::byte> body_of(const std::string& frame) {
  return std::span<const std::byte>(reinterpret_cast<const std::byte*>(frame.data()) + kFrameHeaderBytes,
                                    frame.size() - kFrameHeaderBytes);
}

control::Envelope reserve_request(int tokens) {
  control::Envelope envelope;
  envelope.set_request_id(42);
  auto* reserve = envelope.mutable_reserve_kv();
  for (int i = 0; i < tokens; ++i) reserve->add_token_ids(static_cast<uint32_t>(i * 7919 % 151936));
  reserve->set_max_tokens(64);
  return envelope;
}

TEST_CASE("a frame round-trips: its header announces the body, the body parses back to the envelope", "[rpc][frame]") {
  const control::Envelope sent = reserve_request(1000);
  auto frame = encode_frame(sent);
  REQUIRE(frame.is_ok());
  auto length = parse_frame_header(header_of(*frame), kDefaultMaxFrameBytes);
  REQUIRE(length.is_ok());
  CHECK(*length == frame->size() - kFrameHeaderBytes);
  auto received = parse_frame_body(body_of(*frame));
  REQUIRE(received.is_ok());
  CHECK(received->SerializeAsString() == sent.SerializeAsString());
  CHECK(body_name(*received) == "reserve_kv");
}

TEST_CASE("frame headers announcing nothing or more than the limit are refused with the sizes", "[rpc][frame]") {
  const std::byte empty[4] = {};
  auto refused = parse_frame_header(std::span<const std::byte, 4>(empty), kDefaultMaxFrameBytes);
  REQUIRE_FALSE(refused.is_ok());
  CHECK(refused.status().code() == StatusCode::kInvalidArgument);
  const std::byte huge[4] = {std::byte{0x01}, std::byte{0x00}, std::byte{0x00}, std::byte{0x02}};  // 32 MiB + 1
  auto oversized = parse_frame_header(std::span<const std::byte, 4>(huge), kDefaultMaxFrameBytes);
  REQUIRE_FALSE(oversized.is_ok());
  CHECK_THAT(oversized.status().message(),
             Catch::Contains("33554433") && Catch::Contains(std::to_string(kDefaultMaxFrameBytes)));
}

TEST_CASE("frame bodies that are not an envelope with a body are refused as data loss", "[rpc][frame]") {
  const std::string garbage = "\xff\xff\xff\xff this is not protobuf";
  auto not_protobuf =
      parse_frame_body(std::span<const std::byte>(reinterpret_cast<const std::byte*>(garbage.data()), garbage.size()));
  REQUIRE_FALSE(not_protobuf.is_ok());
  CHECK(not_protobuf.status().code() == StatusCode::kDataLoss);

  control::Envelope no_body;
  no_body.set_request_id(7);
  const std::string bytes = no_body.SerializeAsString();
  auto bodiless =
      parse_frame_body(std::span<const std::byte>(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()));
  REQUIRE_FALSE(bodiless.is_ok());
  CHECK_THAT(bodiless.status().message(), Catch::Contains("no known body"));
}

TEST_CASE("an envelope larger than the limit is not encoded", "[rpc][frame]") {
  auto frame = encode_frame(reserve_request(10000), /*max_frame_bytes=*/1024);
  REQUIRE_FALSE(frame.is_ok());
  CHECK(frame.status().code() == StatusCode::kInvalidArgument);
  CHECK_THAT(frame.status().message(), Catch::Contains("reserve_kv"));
}

}  // namespace
}  // namespace recgpt::rpc
