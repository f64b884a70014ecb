#include "router/placement_policy.h"

#include <algorithm>
#include <limits>
#include <numeric>

namespace recgpt::router {
namespace {

int64_t blocks_of(int64_t tokens, int block_size) { return (tokens + block_size - 1) / block_size; }

std::vector<int> healthy(const std::vector<NodeLoad>& nodes) {
  std::vector<int> indexes;
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (nodes[i].healthy) indexes.push_back(static_cast<int>(i));
  }
  return indexes;
}

int64_t calls_at(const NodeLoad& node) { return node.in_flight + node.queue_depth + node.running; }

// SGLang's guard: the tier is out of balance when the busiest node has both many more calls than the idlest
// (absolute) and a multiple of them (relative).
bool imbalanced(const std::vector<NodeLoad>& nodes, const std::vector<int>& candidates, const PolicyOptions& options) {
  if (candidates.size() < 2) return false;
  int64_t most = 0;
  int64_t least = std::numeric_limits<int64_t>::max();
  for (int i : candidates) {
    most = std::max(most, calls_at(nodes[static_cast<size_t>(i)]));
    least = std::min(least, calls_at(nodes[static_cast<size_t>(i)]));
  }
  return most - least > options.balance_abs && static_cast<double>(most) > options.balance_rel * least;
}

double kv_fraction(const NodeLoad& node) {
  const int64_t total = node.kv_blocks_used + node.kv_blocks_free;
  return total > 0 ? static_cast<double>(node.kv_blocks_used) / static_cast<double>(total) : 0.0;
}

// Sorts candidates by cost (lower first); ties go to the node `counter` reaches first, so equal nodes take turns.
template <typename Cost>
void sort_by(std::vector<int>& candidates, size_t tier_size, uint64_t counter, Cost cost) {
  auto turn = [&](int i) { return (static_cast<uint64_t>(i) + tier_size - counter % tier_size) % tier_size; };
  std::stable_sort(candidates.begin(), candidates.end(), [&](int a, int b) {
    const auto ca = cost(a);
    const auto cb = cost(b);
    return ca != cb ? ca < cb : turn(a) < turn(b);
  });
}

std::vector<int> rank_tier(const PolicyOptions& options, const std::vector<NodeLoad>& nodes, const CallShape& call,
                           uint64_t counter, bool prefill_tier) {
  std::vector<int> candidates = healthy(nodes);
  if (candidates.empty()) return candidates;
  PolicyKind kind = options.kind;
  const bool out_of_balance = imbalanced(nodes, candidates, options);
  if (kind == PolicyKind::kPrefixAware && out_of_balance) kind = PolicyKind::kLeastLoaded;
  const int64_t prompt_blocks = blocks_of(call.prompt_tokens, call.block_size);
  switch (kind) {
    case PolicyKind::kRoundRobin: sort_by(candidates, nodes.size(), counter, [](int) { return 0; }); break;
    case PolicyKind::kLeastLoaded:
      sort_by(candidates, nodes.size(), counter, [&](int i) {
        const NodeLoad& node = nodes[static_cast<size_t>(i)];
        return std::pair(calls_at(node), kv_fraction(node));
      });
      break;
    case PolicyKind::kPrefixAware:
      sort_by(candidates, nodes.size(), counter, [&](int i) {
        const NodeLoad& node = nodes[static_cast<size_t>(i)];
        const int64_t held = held_prefix_blocks(call.block_hashes, node.prefix_blocks);
        if (prefill_tier) {
          const int64_t to_compute = std::max<int64_t>(call.prompt_tokens - held * call.block_size, 0);
          return static_cast<double>(node.in_flight_tokens + to_compute) / call.block_size;
        }
        const int64_t new_blocks = prompt_blocks - held + blocks_of(call.max_new_tokens, call.block_size);
        return static_cast<double>(node.kv_blocks_used + new_blocks);
      });
      break;
  }
  // Workflow affinity: the preferred node first while it is healthy and the tier in balance.
  const int preferred = prefill_tier ? call.preferred_prefill : call.preferred_decode;
  auto it = std::find(candidates.begin(), candidates.end(), preferred);
  if (it != candidates.end() && !out_of_balance) std::rotate(candidates.begin(), it, it + 1);
  return candidates;
}

}  // namespace

Result<PolicyKind> parse_policy(const std::string& name) {
  if (name == "round_robin") return PolicyKind::kRoundRobin;
  if (name == "least_loaded") return PolicyKind::kLeastLoaded;
  if (name == "prefix_aware") return PolicyKind::kPrefixAware;
  return invalid_argument("unknown policy '" + name + "' (round_robin, least_loaded, prefix_aware)");
}

const char* policy_name(PolicyKind kind) {
  switch (kind) {
    case PolicyKind::kRoundRobin: return "round_robin";
    case PolicyKind::kLeastLoaded: return "least_loaded";
    case PolicyKind::kPrefixAware: return "prefix_aware";
  }
  return "?";
}

int64_t held_prefix_blocks(std::span<const uint64_t> hashes, const std::unordered_set<uint64_t>* held) {
  if (held == nullptr) return 0;
  int64_t count = 0;
  for (uint64_t hash : hashes) {
    if (held->count(hash) == 0) break;
    ++count;
  }
  return count;
}

Ranking rank_nodes(const PolicyOptions& options, const ClusterSnapshot& cluster, const CallShape& call,
                   uint64_t counter) {
  return {rank_tier(options, cluster.prefill, call, counter, true),
          rank_tier(options, cluster.decode, call, counter, false)};
}

}  // namespace recgpt::router
