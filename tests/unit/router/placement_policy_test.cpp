// The placement policies as pure functions: unhealthy nodes never ranked, round robin takes turns, least loaded
// prefers idle nodes, prefix aware follows held prefixes until the balance guard overrides it.
#include "router/placement_policy.h"

#include <catch2/catch.hpp>

namespace recgpt::router {
namespace {

NodeLoad node(int64_t in_flight = 0, int64_t kv_used = 0, const std::unordered_set<uint64_t>* held = nullptr) {
  NodeLoad load;
  load.healthy = true;
  load.in_flight = in_flight;
  load.kv_blocks_used = kv_used;
  load.kv_blocks_free = 1000 - kv_used;
  load.prefix_blocks = held;
  return load;
}

TEST_CASE("policies are parsed by name and unknown names are refused naming the choices", "[router][policy]") {
  CHECK(parse_policy("prefix_aware").value() == PolicyKind::kPrefixAware);
  CHECK(policy_name(parse_policy("least_loaded").value()) == std::string("least_loaded"));
  auto bad = parse_policy("random");
  CHECK(bad.status().code() == StatusCode::kInvalidArgument);
  CHECK_THAT(bad.status().message(), Catch::Contains("round_robin"));
}

TEST_CASE("round robin takes healthy nodes in turn and skips unhealthy ones", "[router][policy]") {
  ClusterSnapshot cluster{{node(), node()}, {node(), node(), node()}};
  cluster.decode[1].healthy = false;
  PolicyOptions options{PolicyKind::kRoundRobin};
  const std::vector<uint64_t> hashes;
  const CallShape call{hashes, 32, 8, 16};
  std::vector<int> first_decode;
  for (uint64_t counter = 0; counter < 4; ++counter) {
    const Ranking ranking = rank_nodes(options, cluster, call, counter);
    REQUIRE(ranking.decode.size() == 2);
    first_decode.push_back(ranking.decode.front());
    CHECK(ranking.prefill.front() == static_cast<int>(counter % 2));
  }
  CHECK(first_decode == std::vector<int>{0, 2, 2, 0});
  cluster.prefill[0].healthy = cluster.prefill[1].healthy = false;
  CHECK(rank_nodes(options, cluster, call, 0).prefill.empty());
}

TEST_CASE("least loaded prefers the node with fewer calls, then the freer KV pool", "[router][policy]") {
  ClusterSnapshot cluster{{node(3), node(1)}, {node(2, 10), node(2, 5), node(4, 0)}};
  const std::vector<uint64_t> hashes;
  const Ranking ranking = rank_nodes({PolicyKind::kLeastLoaded}, cluster, {hashes, 32, 8, 16}, 0);
  CHECK(ranking.prefill == std::vector<int>{1, 0});
  CHECK(ranking.decode == std::vector<int>{1, 0, 2});
}

TEST_CASE("prefix aware goes where the prompt's prefix is held, unless the tier is out of balance",
          "[router][policy]") {
  const std::vector<uint64_t> hashes = {11, 12, 13, 14};
  const std::unordered_set<uint64_t> holds_three = {11, 12, 13};
  const std::unordered_set<uint64_t> holds_gap = {12, 13, 14};  // not a prefix: counts for nothing
  ClusterSnapshot cluster{{node(0, 0, &holds_gap), node(0, 0, &holds_three)},
                          {node(0, 0, &holds_gap), node(0, 0, &holds_three)}};
  const CallShape call{hashes, 70, 16, 16};
  const Ranking ranking = rank_nodes({PolicyKind::kPrefixAware}, cluster, call, 0);
  CHECK(ranking.prefill == std::vector<int>{1, 0});
  CHECK(ranking.decode == std::vector<int>{1, 0});
  CHECK(held_prefix_blocks(hashes, &holds_three) == 3);
  CHECK(held_prefix_blocks(hashes, &holds_gap) == 0);

  // Equal nodes and no prefix anywhere: the counter spreads calls.
  ClusterSnapshot empty{{node(), node()}, {node(), node()}};
  CHECK(rank_nodes({PolicyKind::kPrefixAware}, empty, call, 0).decode.front() !=
        rank_nodes({PolicyKind::kPrefixAware}, empty, call, 1).decode.front());

  // The holder is swamped (40 calls against 2): the guard sends the call to the idle node.
  cluster.decode[1].in_flight = 40;
  cluster.decode[0].in_flight = 2;
  CHECK(rank_nodes({PolicyKind::kPrefixAware}, cluster, call, 0).decode.front() == 0);
}

}  // namespace
}  // namespace recgpt::router

namespace recgpt::router {
namespace {

TEST_CASE("a workflow's preferred pair comes first under any policy while healthy and in balance",
          "[router][policy][affinity]") {
  const std::vector<uint64_t> hashes;
  for (PolicyKind kind : {PolicyKind::kRoundRobin, PolicyKind::kLeastLoaded, PolicyKind::kPrefixAware}) {
    INFO(policy_name(kind));
    ClusterSnapshot cluster{{node(), node(5)}, {node(), node(3), node()}};
    CallShape call{hashes, 32, 8, 16};
    call.preferred_prefill = 1;
    call.preferred_decode = 1;
    for (uint64_t counter = 0; counter < 3; ++counter) {
      const Ranking ranking = rank_nodes(PolicyOptions{kind}, cluster, call, counter);
      CHECK(ranking.prefill.front() == 1);
      CHECK(ranking.decode.front() == 1);
      CHECK(ranking.decode.size() == 3);
    }
    cluster.decode[1].healthy = false;  // gone: the policy's own choice
    CHECK(rank_nodes(PolicyOptions{kind}, cluster, call, 0).decode.front() != 1);
    cluster.decode[1].healthy = true;
    cluster.decode[1].in_flight = 100;  // far busier than the others: the balance guard wins
    CHECK(rank_nodes(PolicyOptions{kind}, cluster, call, 0).decode.front() != 1);
  }
}

}  // namespace
}  // namespace recgpt::router
