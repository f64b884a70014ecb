// "host:port" of --require-peer: names, IPv4 and bracketed IPv6 parse; anything else is refused by name.
#include <catch2/catch.hpp>

#include "node/peer_probe.h"

namespace recgpt::node {
namespace {

TEST_CASE("peer addresses parse as host and port, or are refused naming the text", "[peer_probe]") {
  auto name = parse_peer_address("decode-0.decode.svc.cluster.local:7100");
  REQUIRE(name.is_ok());
  CHECK(name->host == "decode-0.decode.svc.cluster.local");
  CHECK(name->port == 7100);
  auto v6 = parse_peer_address("[::1]:65535");
  REQUIRE(v6.is_ok());
  CHECK(v6->host == "::1");
  CHECK(v6->port == 65535);
  CHECK(v6->text() == "[::1]:65535");
  for (const std::string bad : {"", "host", "host:", "host:x", "host:80x", "host:-1", "host:0", "host:65536", ":80",
                                "::1:80", "[::1:80", "[]:80"}) {
    INFO(bad);
    auto parsed = parse_peer_address(bad);
    CHECK(parsed.status().code() == StatusCode::kInvalidArgument);
    CHECK_THAT(parsed.status().message(), Catch::Contains("'" + bad + "'"));
  }
}

}  // namespace
}  // namespace recgpt::node
