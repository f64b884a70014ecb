#include "router/cluster.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include "common/log.h"
#include "kv_transfer/kv_layout.h"
#include "node/node_protocol.h"

namespace recgpt::router {

namespace asio = boost::asio;

bool ClusterNode::healthy() const {
  return member && link != nullptr && link->is_open() &&
         std::chrono::steady_clock::now() - last_report < Cluster::kReportTimeout;
}

std::string ClusterNode::name() const { return node_id.empty() ? address.text() : node_id; }

Status kv_layouts_fit(const node::NodeLink& prefill, const node::NodeLink& decode) {
  return kv::check_layouts_match(node::kv_layout_from_proto(prefill.hello().kv_layout()),
                                 node::kv_layout_from_proto(decode.hello().kv_layout()));
}

Cluster::Cluster(asio::io_context& io, std::string model_fingerprint, std::vector<node::PeerAddress> prefill,
                 std::vector<node::PeerAddress> decode)
    : io_(io), fingerprint_(std::move(model_fingerprint)) {
  for (auto [addresses, tier] : {std::pair{&prefill, Tier::kPrefill}, std::pair{&decode, Tier::kDecode}}) {
    for (auto& address : *addresses) {
      ClusterNode entry;
      entry.address = std::move(address);
      entry.tier = tier;
      (tier == Tier::kPrefill ? prefill_ : decode_).push_back(std::move(entry));
    }
  }
}

void Cluster::add_dns_source(Tier tier, node::PeerAddress name, std::chrono::milliseconds refresh) {
  dns_sources_.push_back({tier, std::move(name), refresh});
}

void Cluster::start() {
  started_ = true;
  for (Tier tier : {Tier::kPrefill, Tier::kDecode}) {
    for (size_t i = 0; i < nodes(tier).size(); ++i) {
      asio::co_spawn(
          io_, [self = shared_from_this(), tier, i] { return self->keep_connected(tier, static_cast<int>(i)); },
          asio::detached);
    }
  }
  for (size_t source = 0; source < dns_sources_.size(); ++source) {
    asio::co_spawn(
        io_, [self = shared_from_this(), source] { return self->keep_resolving(static_cast<int>(source)); },
        asio::detached);
  }
}

void Cluster::update_members(int source, const std::vector<node::PeerAddress>& addresses) {
  const Tier tier = dns_sources_.at(static_cast<size_t>(source)).tier;
  std::deque<ClusterNode>& slots = tier_nodes(tier);
  std::unordered_set<std::string> listed;
  for (const node::PeerAddress& address : addresses) listed.insert(address.text());
  for (ClusterNode& slot : slots) {
    if (slot.dns_source != source) {
      listed.erase(slot.address.text());  // a node another source lists already
      continue;
    }
    const bool member = listed.erase(slot.address.text()) > 0;
    if (member == slot.member) continue;
    slot.member = member;
    log_event(LogLevel::kInfo, "router", member ? "node joined" : "node left",
              {{"address", slot.address.text()}, {"dns", dns_sources_[static_cast<size_t>(source)].name.text()}});
    if (!member && slot.link) slot.link->close();
  }
  for (const node::PeerAddress& address : addresses) {
    if (listed.erase(address.text()) == 0) continue;  // known already, or listed twice
    ClusterNode entry;
    entry.address = address;
    entry.tier = tier;
    entry.dns_source = source;
    slots.push_back(std::move(entry));
    log_event(LogLevel::kInfo, "router", "node joined",
              {{"address", address.text()}, {"dns", dns_sources_[static_cast<size_t>(source)].name.text()}});
    if (started_) {
      asio::co_spawn(
          io_,
          [self = shared_from_this(), tier, index = static_cast<int>(slots.size() - 1)] {
            return self->keep_connected(tier, index);
          },
          asio::detached);
    }
  }
}

asio::awaitable<void> Cluster::keep_resolving(int source) {
  auto self = shared_from_this();
  asio::ip::tcp::resolver resolver(io_);
  asio::steady_timer timer(io_);
  Status last = Status::ok();
  while (!stopped_) {
    const DnsSource& dns = dns_sources_[static_cast<size_t>(source)];
    boost::system::error_code error;
    auto results = co_await resolver.async_resolve(dns.name.host, std::to_string(dns.name.port),
                                                   asio::redirect_error(asio::use_awaitable, error));
    if (stopped_) co_return;
    if (error) {
      // A name that does not resolve now (no pod ready yet, DNS hiccup) keeps the last members.
      if (last.message() != error.message()) {
        log_event(LogLevel::kWarning, "router", "cannot resolve node name",
                  {{"dns", dns.name.text()}, {"reason", error.message()}});
      }
      last = unavailable(error.message());
    } else {
      last = Status::ok();
      std::vector<node::PeerAddress> addresses;
      for (const auto& entry : results) {
        addresses.push_back({entry.endpoint().address().to_string(), entry.endpoint().port()});
      }
      update_members(source, addresses);
    }
    timer.expires_after(dns.refresh);
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, error));
  }
}

void Cluster::stop() {
  stopped_ = true;
  for (auto* tier : {&prefill_, &decode_}) {
    for (ClusterNode& node : *tier) {
      if (node.link) node.link->close();
    }
  }
}

asio::awaitable<void> Cluster::keep_connected(Tier tier, int index) {
  auto self = shared_from_this();
  asio::steady_timer timer(io_);
  while (!stopped_) {
    ClusterNode& entry = node(tier, index);
    if (!entry.member) {
      if (entry.link) entry.link->close();
      entry.link.reset();
    } else if (entry.link == nullptr || !entry.link->is_open()) {
      entry.link.reset();
      node::NodeLink::LoadHandler on_load = [weak = weak_from_this(), tier, index](const control::LoadReport& report) {
        if (auto cluster = weak.lock()) cluster->on_report(tier, index, report);
      };
      auto link =
          co_await node::NodeLink::open(entry.address.host, entry.address.port, control::ROLE_ROUTER, fingerprint_,
                                        std::chrono::steady_clock::now() + kReconnectPeriod, std::move(on_load));
      ClusterNode& now = node(tier, index);
      if (stopped_) {
        if (link.is_ok()) (*link)->close();
        co_return;
      }
      if (!now.member) {  // it left while connecting
        if (link.is_ok()) (*link)->close();
        continue;
      }
      if (link.is_ok()) {
        const control::Role expected = tier == Tier::kPrefill ? control::ROLE_PREFILL : control::ROLE_DECODE;
        if ((*link)->hello().role() != expected && (*link)->hello().role() != control::ROLE_COLOCATED) {
          now.last_error = failed_precondition("the node at " + now.address.text() + " is not a " +
                                               (tier == Tier::kPrefill ? "prefill" : "decode") + " node");
          (*link)->close();
        } else {
          now.link = std::move(link).value();
          now.node_id = now.link->hello().node_id();
          now.last_error = Status::ok();
          now.last_report = std::chrono::steady_clock::now();  // healthy from the hello on; reports keep it so
          now.prefix_blocks.clear();  // a (re)connected node's first report carries its whole index
          now.load.Clear();           // until its first report: an idle node with its whole pool free
          now.load.set_kv_blocks_free(now.link->hello().kv_layout().num_blocks());
          log_event(LogLevel::kInfo, "router", "node connected",
                    {{"node", now.name()}, {"address", now.address.text()}});
          warn_of_layout_mismatches(tier, index);
        }
      } else if (now.last_error.message() != link.status().message()) {
        now.last_error = link.status();
        log_event(LogLevel::kWarning, "router", "node unreachable",
                  {{"address", now.address.text()}, {"reason", link.status().message()}});
      }
    } else if (const auto silent = std::chrono::steady_clock::now() - entry.last_report; silent >= silence_limit_) {
      const auto silent_ms = std::chrono::duration_cast<std::chrono::milliseconds>(silent).count();
      entry.last_error = unavailable("the node " + entry.name() + " sent nothing for " + std::to_string(silent_ms) +
                                     " ms; its link was closed");
      log_event(LogLevel::kWarning, "router", "node silent, closing its link",
                {{"node", entry.name()}, {"address", entry.address.text()}, {"silent_ms", silent_ms}});
      entry.link->close(entry.last_error);
    }
    timer.expires_after(kReconnectPeriod);
    boost::system::error_code ignored;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  }
}

void Cluster::on_report(Tier tier, int index, const control::LoadReport& report) {
  ClusterNode& entry = node(tier, index);
  if (report.prefix_blocks_snapshot()) {
    entry.prefix_blocks.clear();
    for (const auto& [hash, calls] : entry.in_flight_blocks) entry.prefix_blocks.insert(hash);
  }
  entry.prefix_blocks.insert(report.prefix_blocks_added().begin(), report.prefix_blocks_added().end());
  for (uint64_t hash : report.prefix_blocks_evicted()) {
    if (!entry.in_flight_blocks.contains(hash)) entry.prefix_blocks.erase(hash);
  }
  entry.load = report;
  entry.load.clear_prefix_blocks_added();
  entry.load.clear_prefix_blocks_evicted();
  entry.last_report = std::chrono::steady_clock::now();
}

ClusterSnapshot Cluster::snapshot() const {
  ClusterSnapshot snapshot;
  for (Tier tier : {Tier::kPrefill, Tier::kDecode}) {
    for (const ClusterNode& entry : nodes(tier)) {
      NodeLoad load;
      load.healthy = entry.healthy();
      load.in_flight = entry.in_flight;
      load.in_flight_tokens = entry.in_flight_tokens;
      load.queue_depth = entry.load.queue_depth();
      load.running = entry.load.running_sequences();
      load.kv_blocks_used = entry.load.kv_blocks_used();
      load.kv_blocks_free = entry.load.kv_blocks_free();
      load.prefix_blocks = &entry.prefix_blocks;
      (tier == Tier::kPrefill ? snapshot.prefill : snapshot.decode).push_back(load);
    }
  }
  return snapshot;
}

int Cluster::healthy_count(Tier tier) const {
  int count = 0;
  for (const ClusterNode& entry : nodes(tier)) count += entry.healthy() ? 1 : 0;
  return count;
}

Status Cluster::prefill_fit_error(const ClusterNode& prefill) const {
  Status first = Status::ok();
  for (const ClusterNode& decode : decode_) {
    if (!decode.healthy()) continue;
    Status fit = kv_layouts_fit(*prefill.link, *decode.link);
    if (fit.is_ok()) return fit;
    if (first.is_ok())
      first = failed_precondition("fits no healthy decode node: " + decode.name() + ": " + fit.message());
  }
  return first;
}

int Cluster::usable_prefill_count() const {
  int count = 0;
  for (const ClusterNode& prefill : prefill_) count += prefill.healthy() && prefill_fit_error(prefill).is_ok() ? 1 : 0;
  return count;
}

void Cluster::warn_of_layout_mismatches(Tier tier, int index) const {
  const ClusterNode& connected = nodes(tier)[static_cast<size_t>(index)];
  for (const ClusterNode& other : nodes(tier == Tier::kPrefill ? Tier::kDecode : Tier::kPrefill)) {
    if (!other.member || other.link == nullptr || !other.link->is_open()) continue;
    const ClusterNode& prefill = tier == Tier::kPrefill ? connected : other;
    const ClusterNode& decode = tier == Tier::kPrefill ? other : connected;
    if (Status fit = kv_layouts_fit(*prefill.link, *decode.link); !fit.is_ok()) {
      log_event(LogLevel::kWarning, "router",
                "KV layouts differ: calls placed on this decode node prefill locally, not on this prefill node",
                {{"prefill", prefill.name()}, {"decode", decode.name()}, {"error", fit.message()}});
    }
  }
}

void Cluster::call_started(Tier tier, int index, std::span<const uint64_t> block_hashes, int64_t prefill_tokens) {
  ClusterNode& entry = node(tier, index);
  ++entry.in_flight;
  entry.in_flight_tokens += prefill_tokens;
  entry.prefix_blocks.insert(block_hashes.begin(), block_hashes.end());
  for (uint64_t hash : block_hashes) ++entry.in_flight_blocks[hash];
}

void Cluster::call_ended(Tier tier, int index, std::span<const uint64_t> block_hashes, int64_t prefill_tokens) {
  ClusterNode& entry = node(tier, index);
  --entry.in_flight;
  entry.in_flight_tokens -= prefill_tokens;
  for (uint64_t hash : block_hashes) {
    auto it = entry.in_flight_blocks.find(hash);
    if (it != entry.in_flight_blocks.end() && --it->second == 0) entry.in_flight_blocks.erase(it);
  }
}

std::string Cluster::describe_json() const {
  nlohmann::json nodes_json = nlohmann::json::array();
  for (Tier tier : {Tier::kPrefill, Tier::kDecode}) {
    for (const ClusterNode& entry : nodes(tier)) {
      if (!entry.member) continue;
      nlohmann::json item = {{"node", entry.name()},
                             {"address", entry.address.text()},
                             {"role", tier == Tier::kPrefill ? "prefill" : "decode"},
                             {"healthy", entry.healthy()},
                             {"in_flight", entry.in_flight},
                             {"queue_depth", entry.load.queue_depth()},
                             {"running", entry.load.running_sequences()},
                             {"kv_blocks_used", entry.load.kv_blocks_used()},
                             {"kv_blocks_free", entry.load.kv_blocks_free()},
                             {"prefix_blocks", entry.prefix_blocks.size()}};
      if (entry.link != nullptr) {
        const control::KvLayout& layout = entry.link->hello().kv_layout();
        item["kv_layout"] = {{"dtype", layout.dtype()},
                             {"block_size", layout.block_size()},
                             {"layers", layout.num_layers()},
                             {"kv_heads", layout.num_kv_heads()},
                             {"head_dim", layout.head_dim()}};
      }
      if (!entry.healthy()) {
        item["error"] = entry.last_error.is_ok() ? "no load report lately" : entry.last_error.message();
      } else if (Status fit = tier == Tier::kPrefill ? prefill_fit_error(entry) : Status::ok(); !fit.is_ok()) {
        item["warning"] = "not used: its KV layout " + fit.message();
      }
      nodes_json.push_back(std::move(item));
    }
  }
  return nlohmann::json{{"object", "cluster"}, {"nodes", nodes_json}}.dump();
}

}  // namespace recgpt::router
