// /readyz of a node that needs peers (--require-peer): 503 naming the peer until it answers a hello, 200 while it
// does, 503 again once it died. A malformed peer address is refused at start by name.
#include "tests/integration/nodes/node_fixtures.h"

namespace recgpt::testing {
namespace {

TEST_CASE("a node is ready only while the peers it requires answer a hello", "[nodes][readiness]") {
  TinyModel tiny;
  auto prefill_node = std::make_unique<Node>("prefill", tiny, "tcp");
  CHECK(prefill_node->becomes_ready(200));  // no required peers: ready once serving
  const std::string prefill_address = "127.0.0.1:" + std::to_string(prefill_node->port);
  Node decode_node("decode", tiny, "tcp", 8, {"--require-peer", prefill_address});
  CHECK(decode_node.becomes_ready(200));

  prefill_node.reset();  // SIGTERM: drains (nothing runs) and exits
  std::string body;
  CHECK(decode_node.becomes_ready(503, &body));
  CHECK_THAT(body, Catch::Contains(prefill_address));
}

TEST_CASE("a node whose required peer never answers, or serves another model, is not ready", "[nodes][readiness]") {
  TinyModel tiny;
  TinyModel other("small");
  Node stranger("prefill", other, "tcp");  // a different model: its hello refuses ours
  const std::string stranger_address = "127.0.0.1:" + std::to_string(stranger.port);
  Node decode_node("decode", tiny, "tcp", 8, {"--require-peer", "127.0.0.1:1", "--require-peer", stranger_address});
  std::string body;
  CHECK(decode_node.becomes_ready(503, &body));
  CHECK_THAT(body, Catch::Contains("127.0.0.1:1"));
  // The first peer stays unreachable, so the stranger is checked by a node that requires only it.
  Node prefill_node("prefill", tiny, "tcp", 8, {"--require-peer", stranger_address});
  CHECK(prefill_node.becomes_ready(503, &body));
  CHECK_THAT(body, Catch::Contains(stranger_address) && Catch::Contains("fingerprint"));
}

TEST_CASE("a malformed --require-peer address stops the node at start, naming it", "[nodes][readiness]") {
  TinyModel tiny;
  for (const std::string address : {"127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "::1:80", ":80"}) {
    INFO(address);
    auto node = Subprocess::spawn({recgpt_program(), "decode", "--model", tiny.dir.string(), "--kv-cache-mib", "8",
                                   "--threads", "1", "--require-peer", address});
    REQUIRE(node.is_ok());
    auto exit_code = node->wait(Clock::now() + seconds(30));
    REQUIRE(exit_code.is_ok());
    CHECK(*exit_code != 0);
  }
}

}  // namespace
}  // namespace recgpt::testing
