// Where one agent call runs: pure functions of a snapshot of the cluster, so they are unit-tested and reused by
// the capacity simulator. The router tries the ranked nodes in order: "no room" on a decode node moves to the
// next decode node, a failed prefill to the next prefill node.
//
//   round_robin   healthy nodes in turn, by a counter the caller advances per call.
//   least_loaded  the decode node with the fewest calls (in flight here, running and reserved there) and the
//                 freest KV pool; the prefill node with the shortest queue.
//   prefix_aware  Dynamo's KV-router cost, per tier, lower is better:
//                   prefill:  (tokens it is prefilling for us + this prompt's tokens it does not hold) / block size
//                   decode:   KV blocks in use + blocks this call needs that it does not hold
//                 and SGLang's balance guard: when the busiest node of a tier has more than `balance_abs` calls
//                 above the idlest and more than `balance_rel` times as many, that tier falls back to
//                 least_loaded. Held prefixes come from the nodes' LoadReports plus the router's own placements.
// Any policy: a call with a preferred node (workflow affinity) gets it first, unless the balance guard fires.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <unordered_set>
#include <vector>

#include "common/status.h"

namespace recgpt::router {

enum class PolicyKind { kRoundRobin, kLeastLoaded, kPrefixAware };
// kInvalidArgument naming the choices for anything but round_robin, least_loaded, prefix_aware.
Result<PolicyKind> parse_policy(const std::string& name);
const char* policy_name(PolicyKind kind);

struct NodeLoad {
  bool healthy = false;
  int64_t in_flight = 0;         // calls the router sent there and has not seen end
  int64_t in_flight_tokens = 0;  // prompt tokens of those calls still being prefilled (prefill tier)
  int64_t queue_depth = 0;       // from its LoadReport
  int64_t running = 0;           // from its LoadReport
  int64_t kv_blocks_used = 0;    // from its LoadReport
  int64_t kv_blocks_free = 0;    // from its LoadReport
  const std::unordered_set<uint64_t>* prefix_blocks = nullptr;  // block hashes it holds (approximate)
};

struct ClusterSnapshot {
  std::vector<NodeLoad> prefill;  // index = the router's prefill node index
  std::vector<NodeLoad> decode;
};

struct CallShape {
  std::span<const uint64_t> block_hashes;  // the prompt's full blocks, chained (engine/block_hash.h)
  int64_t prompt_tokens = 0;
  int64_t max_new_tokens = 0;
  int block_size = 16;
  // Workflow affinity: the pair an earlier call of the same workflow ran on (-1: none). Ranked first in its
  // tier while healthy and the tier is not out of balance, whatever the policy.
  int preferred_prefill = -1;
  int preferred_decode = -1;
};

struct PolicyOptions {
  PolicyKind kind = PolicyKind::kPrefixAware;
  int64_t balance_abs = 32;
  double balance_rel = 1.5;
};

// Healthy nodes of each tier, best first (the tiers are ranked independently: the decode side decides where
// the call's KV lives, the prefill side who computes it). `counter` drives round_robin and breaks ties.
struct Ranking {
  std::vector<int> prefill;  // empty: no healthy prefill node (the decode node prefills itself)
  std::vector<int> decode;   // empty: the call cannot run
};
Ranking rank_nodes(const PolicyOptions& options, const ClusterSnapshot& cluster, const CallShape& call,
                   uint64_t counter);

// How many leading blocks of `hashes` are in `held` (a prefix: the first miss ends it).
int64_t held_prefix_blocks(std::span<const uint64_t> hashes, const std::unordered_set<uint64_t>* held);

}  // namespace recgpt::router
