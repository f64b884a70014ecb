// The cluster's membership from DNS names: addresses that appear join (a new slot), addresses that disappear
// leave (unhealthy, hidden from /v1/cluster, their slot kept so indices stay valid) and come back in the same
// slot; flag-given nodes are never touched. Nothing is connected here (the io_context never runs).
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "router/cluster.h"

namespace recgpt::router {
namespace {

std::vector<node::PeerAddress> addresses(std::initializer_list<const char*> texts) {
  std::vector<node::PeerAddress> out;
  for (const char* text : texts) out.push_back(node::parse_peer_address(text).value());
  return out;
}

size_t listed_nodes(const Cluster& cluster) { return nlohmann::json::parse(cluster.describe_json())["nodes"].size(); }

TEST_CASE("DNS-resolved nodes join and leave the cluster, flag-given ones stay", "[router][cluster]") {
  boost::asio::io_context io;
  auto cluster = std::make_shared<Cluster>(io, "fingerprint", addresses({"10.0.0.1:7000"}), addresses({}));
  cluster->add_dns_source(Tier::kDecode, node::parse_peer_address("decode.svc:7001").value(),
                          std::chrono::milliseconds(1000));
  cluster->add_dns_source(Tier::kPrefill, node::parse_peer_address("prefill.svc:7000").value(),
                          std::chrono::milliseconds(1000));

  cluster->update_members(0, addresses({"10.0.1.1:7001", "10.0.1.2:7001", "10.0.1.1:7001"}));
  REQUIRE(cluster->nodes(Tier::kDecode).size() == 2);
  CHECK(cluster->nodes(Tier::kDecode)[0].address.text() == "10.0.1.1:7001");
  CHECK(cluster->nodes(Tier::kDecode)[1].member);
  CHECK(listed_nodes(*cluster) == 3);

  // One pod goes away, another comes: the gone one's slot stays (not a member), the new one gets a slot.
  cluster->update_members(0, addresses({"10.0.1.2:7001", "10.0.1.3:7001"}));
  REQUIRE(cluster->nodes(Tier::kDecode).size() == 3);
  CHECK_FALSE(cluster->nodes(Tier::kDecode)[0].member);
  CHECK_FALSE(cluster->nodes(Tier::kDecode)[0].healthy());
  CHECK(cluster->nodes(Tier::kDecode)[1].member);
  CHECK(cluster->nodes(Tier::kDecode)[2].address.text() == "10.0.1.3:7001");
  CHECK(listed_nodes(*cluster) == 3);
  CHECK(cluster->snapshot().decode.size() == 3);  // policies see every slot; non-members are unhealthy

  // The first comes back in its old slot.
  cluster->update_members(0, addresses({"10.0.1.1:7001", "10.0.1.2:7001", "10.0.1.3:7001"}));
  CHECK(cluster->nodes(Tier::kDecode).size() == 3);
  CHECK(cluster->nodes(Tier::kDecode)[0].member);

  // A prefill name listing nothing leaves the flag-given prefill node alone.
  cluster->update_members(1, {});
  REQUIRE(cluster->nodes(Tier::kPrefill).size() == 1);
  CHECK(cluster->nodes(Tier::kPrefill)[0].member);
  cluster->update_members(1, addresses({"10.0.0.1:7000", "10.0.0.2:7000"}));  // the flag's node is not doubled
  CHECK(cluster->nodes(Tier::kPrefill).size() == 2);
  CHECK(cluster->nodes(Tier::kPrefill)[1].address.text() == "10.0.0.2:7000");
}

}  // namespace
}  // namespace recgpt::router
