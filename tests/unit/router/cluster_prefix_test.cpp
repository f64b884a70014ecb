// The router's copy of a node's prefix index: reports (a snapshot, then changes) and the router's own placements.
// A report can predate the blocks of a call still in flight there, so while the call lasts its blocks count as
// held whatever the report says; once it ended, the reports decide. Nothing is connected (the io_context never runs).
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <vector>

#include "proto/control.pb.h"
#include "router/cluster.h"

namespace recgpt::router {
namespace {

control::LoadReport report(bool snapshot, std::vector<uint64_t> added, std::vector<uint64_t> evicted = {}) {
  control::LoadReport load;
  load.set_prefix_blocks_snapshot(snapshot);
  load.mutable_prefix_blocks_added()->Assign(added.begin(), added.end());
  load.mutable_prefix_blocks_evicted()->Assign(evicted.begin(), evicted.end());
  return load;
}

int64_t held(const Cluster& cluster, const std::vector<uint64_t>& hashes) {
  return held_prefix_blocks(hashes, cluster.snapshot().prefill[0].prefix_blocks);
}

TEST_CASE("a report taken before an in-flight call's blocks does not erase the router's placement",
          "[router][cluster]") {
  boost::asio::io_context io;
  auto cluster =
      std::make_shared<Cluster>(io, "fingerprint", std::vector{node::parse_peer_address("10.0.0.1:7000").value()},
                                std::vector<node::PeerAddress>{});
  const std::vector<uint64_t> call{11, 12, 13};
  const std::vector<uint64_t> other{21, 22};
  cluster->call_started(Tier::kPrefill, 0, call, 48);
  CHECK(held(*cluster, call) == 3);

  // The node's first report, a snapshot taken while the call was still prefilling: it lists other blocks only.
  cluster->on_report(Tier::kPrefill, 0, report(true, other));
  CHECK(held(*cluster, call) == 3);
  CHECK(held(*cluster, other) == 2);

  // An eviction of one of the call's blocks, recorded before the call computed it again, leaves it held too.
  cluster->on_report(Tier::kPrefill, 0, report(false, {}, {12, 22}));
  CHECK(held(*cluster, call) == 3);
  CHECK(held(*cluster, other) == 1);

  // A second call on the same prefix, then the first ends: the second still holds the blocks in flight.
  cluster->call_started(Tier::kPrefill, 0, std::span(call).first(2), 32);
  cluster->call_ended(Tier::kPrefill, 0, call, 48);
  cluster->on_report(Tier::kPrefill, 0, report(true, {}));
  CHECK(held(*cluster, call) == 2);

  // Once no call is in flight, the reports decide: evicted blocks go, and a snapshot replaces the rest.
  cluster->call_ended(Tier::kPrefill, 0, std::span(call).first(2), 32);
  cluster->on_report(Tier::kPrefill, 0, report(false, {13}, {11}));
  CHECK(held(*cluster, call) == 0);
  CHECK(cluster->snapshot().prefill[0].prefix_blocks->contains(13));
  cluster->on_report(Tier::kPrefill, 0, report(true, {11, 12}));
  CHECK(held(*cluster, call) == 2);
  CHECK_FALSE(cluster->snapshot().prefill[0].prefix_blocks->contains(13));
  CHECK(cluster->snapshot().prefill[0].in_flight == 0);
}

}  // namespace
}  // namespace recgpt::router
