// The router's registry of nodes: a link to each prefill and decode node, kept up (reconnected when it drops),
// their LoadReports (load and prefix index), and the router's own count of calls in flight. Nodes come from flags
// (fixed) and from DNS names (e.g. a Kubernetes headless Service) resolved again every refresh period: an address
// that appears joins, one that disappears leaves (its link is closed; its slot stays, so the indices calls hold
// stay valid, and comes back if the address does). Policies see it through snapshot(); /v1/cluster through
// describe_json().
//
// Threading: one io_context; call every method from its thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/status.h"
#include "node/node_link.h"
#include "node/peer_probe.h"
#include "router/placement_policy.h"

namespace boost::asio {
class io_context;
}

namespace recgpt::router {

enum class Tier { kPrefill, kDecode };

struct ClusterNode {
  node::PeerAddress address;
  Tier tier = Tier::kDecode;
  int dns_source = -1;                   // the DNS name that lists it, or -1 (from a flag)
  bool member = true;                    // false once its DNS name stopped listing it
  std::shared_ptr<node::NodeLink> link;  // null while down
  Status last_error = unavailable("not connected yet");
  control::LoadReport load;  // the latest (prefix fields cleared)
  std::chrono::steady_clock::time_point last_report{};
  std::string node_id;                         // from its latest hello, kept while it is down
  std::unordered_set<uint64_t> prefix_blocks;  // as reported, plus the router's own placements
  // The full blocks of the calls placed here and not ended yet, with their number of calls. A report can predate
  // a call's blocks (a snapshot taken while it was still prefilling, an eviction before it computed them again),
  // so these stay in prefix_blocks whatever a report says; once the call ended, the node's index holds them
  // (it indexes blocks before it answers, on the link its reports take) or a later report says it evicted them.
  std::unordered_map<uint64_t, int> in_flight_blocks;
  int64_t in_flight = 0;
  int64_t in_flight_tokens = 0;

  bool healthy() const;
  std::string name() const;  // the node id from its latest hello, else the address
};

// Why the KV a prefill node writes cannot go into a decode node's cache: their KV layouts differ (dtype, block
// size, layer or head shape; kInvalidArgument naming the field). Ok when it can.
Status kv_layouts_fit(const node::NodeLink& prefill, const node::NodeLink& decode);

class Cluster : public std::enable_shared_from_this<Cluster> {
 public:
  static constexpr std::chrono::milliseconds kReconnectPeriod{1000};
  // A node that sent no LoadReport for this long counts as unhealthy (they come each second).
  static constexpr std::chrono::milliseconds kReportTimeout{5000};
  // A node silent this long (hung, paused, or cut off without a reset) has its link closed: the calls waiting on
  // it fail over to other nodes instead of waiting out their deadlines; it is connected again once it answers.
  static constexpr std::chrono::milliseconds kDefaultSilenceLimit{10000};

  Cluster(boost::asio::io_context& io, std::string model_fingerprint, std::vector<node::PeerAddress> prefill,
          std::vector<node::PeerAddress> decode);
  // A DNS name ("name:port") whose addresses are nodes of `tier`, resolved at start and every `refresh`.
  // Call before start().
  void add_dns_source(Tier tier, node::PeerAddress name, std::chrono::milliseconds refresh);
  // How long a node may stay silent before its link is closed (kDefaultSilenceLimit). Call before start().
  void set_silence_limit(std::chrono::milliseconds limit) { silence_limit_ = limit; }
  // Starts connecting to every node (and keeps reconnecting), and resolving the DNS names.
  void start();
  // The addresses DNS name `source` resolved to now: new ones join (and are connected), missing ones leave.
  void update_members(int source, const std::vector<node::PeerAddress>& addresses);
  void stop();

  ClusterSnapshot snapshot() const;
  ClusterNode& node(Tier tier, int index) { return tier_nodes(tier)[index]; }
  // Every slot of the tier, members or not (a slot's index never changes; references to slots stay valid).
  const std::deque<ClusterNode>& nodes(Tier tier) const { return tier == Tier::kPrefill ? prefill_ : decode_; }
  int healthy_count(Tier tier) const;
  // Healthy prefill nodes whose KV layout fits at least one healthy decode node: the ones calls can use.
  int usable_prefill_count() const;

  // The router placed a call there: count it, and (prefix_aware) expect the node to hold its full blocks.
  void call_started(Tier tier, int index, std::span<const uint64_t> block_hashes, int64_t prefill_tokens);
  // The same arguments as its call_started.
  void call_ended(Tier tier, int index, std::span<const uint64_t> block_hashes, int64_t prefill_tokens);
  // A LoadReport from the node: its load, and its prefix index (a snapshot or the changes since the last report).
  void on_report(Tier tier, int index, const control::LoadReport& report);

  // The nodes, role, health, load and KV usage as JSON (GET /v1/cluster).
  std::string describe_json() const;

 private:
  struct DnsSource {
    Tier tier;
    node::PeerAddress name;
    std::chrono::milliseconds refresh;
  };

  boost::asio::awaitable<void> keep_connected(Tier tier, int index);
  boost::asio::awaitable<void> keep_resolving(int source);
  // Logs once per connection each node of the other tier whose KV layout does not fit the one just connected.
  void warn_of_layout_mismatches(Tier tier, int index) const;
  // The first reason no healthy decode node takes this prefill node's KV, or ok (one does, or none is healthy).
  Status prefill_fit_error(const ClusterNode& prefill) const;
  std::deque<ClusterNode>& tier_nodes(Tier tier) { return tier == Tier::kPrefill ? prefill_ : decode_; }

  boost::asio::io_context& io_;
  const std::string fingerprint_;
  std::deque<ClusterNode> prefill_;
  std::deque<ClusterNode> decode_;
  std::vector<DnsSource> dns_sources_;
  std::chrono::milliseconds silence_limit_ = kDefaultSilenceLimit;
  bool started_ = false;
  bool stopped_ = false;
};

}  // namespace recgpt::router
