#include "prefill_node/prefill_server.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <optional>
#include <unordered_map>

#include "common/admin/admin_server.h"
#include "common/log.h"
#include "common/rpc/connection.h"
#include "common/rpc/listener.h"
#include "engine/entity_store.h"
#include "engine/model_files.h"
#include "engine/model_fingerprint.h"
#include "kv_transfer/transfer_engine.h"
#include "node/constraints.h"
#include "node/entity_inputs.h"
#include "node/node_protocol.h"
#include "node/peer_probe.h"
#include "prefill_node/prefill_worker.h"

namespace recgpt::prefill {
namespace {

namespace asio = boost::asio;

// Raises a counter to a total the worker keeps.
void catch_up(prometheus::Counter& counter, int64_t total) {
  const auto value = static_cast<double>(total);
  if (value > counter.Value()) counter.Increment(value - counter.Value());
}

class Server : public std::enable_shared_from_this<Server> {
 public:
  Server(asio::io_context& io, const ModelFiles& model, PrefillServerOptions options)
      : io_(io), model_(model), options_(std::move(options)) {}

  Status open() {
    node::route_protobuf_logs();
    RECGPT_ASSIGN_OR_RETURN(fingerprint_, model_fingerprint(model_));
    const ModelConfig& config = model_.config();
    KvCacheConfig cache_config{config.num_hidden_layers, config.num_key_value_heads, config.head_dim,
                               options_.block_size,      options_.kv_dtype,          0};
    cache_config.num_blocks = cache_config.num_blocks_for_budget(options_.kv_cache_bytes);
    BackendOptions backend_options;
    backend_options.num_threads = options_.threads;
    backend_options.repack_weights = options_.repack_weights;
    backend_options.cuda_device = options_.cuda_device;
    RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend,
                            create_backend(options_.backend, model_, backend_options));
    RECGPT_ASSIGN_OR_RETURN(KvCache cache, backend->create_kv_cache(cache_config));
    kv::TransferEngineOptions transfer_options;
    transfer_options.name = options_.node_id;
    transfer_options.settings = options_.transfer_settings;
    transfer_options.metrics = registry_;
    RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<kv::TransferEngine> transfer,
                            kv::create_transfer_engine(options_.transfer_backend, transfer_options));
    // In the hello, for the router to name this node's engine to the decode nodes it writes to (PrefillAttempt).
    RECGPT_ASSIGN_OR_RETURN(kv::Bytes endpoint, transfer->local_endpoint());
    RECGPT_ASSIGN_OR_RETURN(std::optional<EntityStore> entities,
                            node::open_entity_store(options_.entity_store, config));
    RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<node::Constraints> constraints,
                            node::Constraints::create(model_, options_.catalogues));
    worker_ = std::make_unique<PrefillWorker>(model_, std::move(backend), std::make_unique<KvCache>(std::move(cache)),
                                              std::move(transfer), std::move(entities), std::move(constraints),
                                              options_.limits);
    RECGPT_RETURN_IF_ERROR(worker_->register_cache());
    RECGPT_ASSIGN_OR_RETURN(listener_, rpc::Listener::open(io_, options_.address, options_.port));
    admin::AdminOptions admin_options;
    admin_options.address = options_.address;
    admin_options.port = options_.admin_port;
    admin_options.registry = registry_;
    RECGPT_ASSIGN_OR_RETURN(peer_probe_,
                            node::probe_peers(io_, options_.required_peers, control::ROLE_PREFILL, fingerprint_));
    admin_options.readiness = [weak = weak_from_this()]() -> Status {
      auto self = weak.lock();
      if (self == nullptr) return unavailable("the prefill node is stopping");
      if (self->draining_) return unavailable("the prefill node is draining");
      return self->peer_probe_->status();
    };
    RECGPT_ASSIGN_OR_RETURN(admin_, admin::AdminServer::start(io_, admin_options));
    auto& tokens = prometheus::BuildCounter()
                       .Name("recgpt_prefill_tokens_total")
                       .Help("Prompt tokens by how they were served")
                       .Register(*registry_);
    tokens_computed_ = &tokens.Add({{"role", "prefill"}, {"node", options_.node_id}, {"kind", "computed"}});
    tokens_cached_ = &tokens.Add({{"role", "prefill"}, {"node", options_.node_id}, {"kind", "cached"}});
    auto& blocks = prometheus::BuildGauge().Name("recgpt_kv_blocks").Help("KV blocks by state").Register(*registry_);
    blocks_used_ = &blocks.Add({{"role", "prefill"}, {"node", options_.node_id}, {"state", "used"}});
    blocks_free_ = &blocks.Add({{"role", "prefill"}, {"node", options_.node_id}, {"state", "free"}});
    auto& requests = prometheus::BuildGauge().Name("recgpt_requests").Help("Requests by state").Register(*registry_);
    waiting_ = &requests.Add({{"role", "prefill"}, {"node", options_.node_id}, {"state", "waiting"}});
    running_ = &requests.Add({{"role", "prefill"}, {"node", options_.node_id}, {"state", "running"}});
    refresh_gauges();
    batches_ = &prometheus::BuildCounter()
                    .Name("recgpt_prefill_batches_total")
                    .Help("Forward passes of the prefill node (each runs every request it batched)")
                    .Register(*registry_)
                    .Add({{"role", "prefill"}, {"node", options_.node_id}});
    dropped_ = &prometheus::BuildCounter()
                    .Name("recgpt_prefill_requests_dropped_total")
                    .Help("Prefill requests dropped before their KV was pushed: the caller cancelled them or went away")
                    .Register(*registry_)
                    .Add({{"role", "prefill"}, {"node", options_.node_id}});
    hello_ = node::make_hello(control::ROLE_PREFILL, options_.node_id, fingerprint_, options_.transfer_backend,
                              worker_->cache());
    hello_.mutable_hello()->set_transfer_endpoint(endpoint.data(), endpoint.size());
    return Status::ok();
  }

  void run() {
    listener_->run(
        [self = shared_from_this()](std::shared_ptr<rpc::Connection> connection) { self->accept(connection); });
    asio::co_spawn(
        io_, [self = shared_from_this()] { return self->report_load(); }, asio::detached);
  }

  uint16_t port() const { return listener_->port(); }
  uint16_t admin_port() const { return admin_->port(); }

  void drain(std::chrono::milliseconds within, std::function<void()> drained) {
    log_event(LogLevel::kInfo, "prefill", "draining", {{"node", options_.node_id}, {"within_ms", within.count()}});
    draining_ = true;
    if (listener_) listener_->close();
    auto self = shared_from_this();
    node::call_when_idle(
        io_, within, [self] { return self->worker_ == nullptr || !self->worker_->busy(); }, std::move(drained));
  }

  void stop() {
    stopped_ = true;
    if (listener_) listener_->close();
    auto connections = connections_;
    for (auto& [connection, peer] : connections) connection->close(unavailable("the prefill node is stopping"));
    if (admin_) admin_->stop();
    if (peer_probe_) peer_probe_->stop();
  }

  // Joins the engine thread (on the io thread, never from one of its callbacks).
  void shutdown() {
    stop();
    worker_.reset();
  }

 private:
  // Each second, tells every greeted peer (routers) how many requests wait or run here and the blocks in use.
  asio::awaitable<void> report_load() {
    auto self = shared_from_this();
    asio::steady_timer timer(io_);
    while (worker_ != nullptr && listener_ != nullptr && !stopped_) {
      timer.expires_after(std::chrono::seconds(1));
      boost::system::error_code error;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, error));
      if (error || worker_ == nullptr || stopped_) co_return;
      refresh_gauges();
      control::LoadReport load;
      load.set_queue_depth(static_cast<uint32_t>(worker_->pending()));
      load.set_kv_blocks_used(static_cast<uint32_t>(worker_->used_blocks()));
      load.set_kv_blocks_free(static_cast<uint32_t>(worker_->cache().blocks().num_blocks() - worker_->used_blocks()));
      std::vector<node::ReportPeer> peers;
      for (auto& [connection, peer] : connections_) {
        if (peer.greeted) peers.push_back({connection.get(), &peer.has_prefix_index});
      }
      node::send_load_reports(load, worker_->prefix_journal(), peers);
    }
  }

  void refresh_gauges() {
    const int64_t used = worker_->used_blocks();
    blocks_used_->Set(static_cast<double>(used));
    blocks_free_->Set(static_cast<double>(worker_->cache().blocks().num_blocks() - used));
    const int64_t running = worker_->computing();
    running_->Set(static_cast<double>(running));
    waiting_->Set(static_cast<double>(std::max<int64_t>(0, worker_->pending() - running)));
  }

  void accept(const std::shared_ptr<rpc::Connection>& connection) {
    connections_[connection] = Peer{};
    std::weak_ptr<rpc::Connection> weak = connection;
    auto self = shared_from_this();
    connection->start(
        [self, weak](control::Envelope envelope) {
          if (auto connection = weak.lock()) self->on_frame(connection, std::move(envelope));
        },
        [self, weak](const Status&) {
          auto connection = weak.lock();
          if (connection == nullptr) return;
          auto peer = self->connections_.find(connection);
          if (peer == self->connections_.end()) return;
          // Nobody waits for its requests still queued or computing: they are dropped.
          for (auto& [id, abandoned] : peer->second.live) abandoned->store(true);
          self->connections_.erase(peer);
        });
  }

  void on_frame(const std::shared_ptr<rpc::Connection>& connection, control::Envelope envelope) {
    auto known = connections_.find(connection);
    if (known == connections_.end() || worker_ == nullptr) return;
    const uint64_t id = envelope.request_id();
    if (!known->second.greeted) {
      known->second.greeted = node::answer_first_frame(*connection, envelope, hello_, fingerprint_);
      return;
    }
    Peer& peer = known->second;
    if (envelope.has_cancel()) {  // one-way: a request already answered (or unknown) is left alone
      if (auto live = peer.live.find(id); live != peer.live.end()) live->second->store(true);
      return;
    }
    if (draining_) {
      (void)connection->send(rpc::error_frame(id, unavailable("the prefill node is draining")));
      return;
    }
    if (!envelope.has_prefill_request()) {
      (void)connection->send(rpc::error_frame(
          id, invalid_argument("a prefill node does not take " + rpc::body_name(envelope) + " frames")));
      return;
    }
    if (id == 0 || peer.live.contains(id)) {  // a Cancel could not name it, or would name two
      (void)connection->send(rpc::error_frame(
          id, invalid_argument("request id " + std::to_string(id) + " is 0 or names a prefill request in progress")));
      return;
    }
    auto abandoned = std::make_shared<std::atomic<bool>>(false);
    peer.live.emplace(id, abandoned);
    const uint64_t reservation = envelope.prefill_request().reservation_id();
    worker_->submit(std::move(*envelope.mutable_prefill_request()), answer_to(connection, id, reservation),
                    std::move(abandoned));
  }

  // Answers a prefill request on its connection (if still open) from the io thread, and counts and logs it.
  PrefillWorker::Done answer_to(const std::shared_ptr<rpc::Connection>& connection, uint64_t id, uint64_t reservation) {
    std::weak_ptr<rpc::Connection> weak = connection;
    return [self = shared_from_this(), weak, id, reservation](Result<control::PrefillDone> result) {
      asio::post(self->io_, [self, weak, id, reservation, result = std::move(result)] {
        if (self->worker_ != nullptr) {
          self->blocks_used_->Set(static_cast<double>(self->worker_->used_blocks()));
          catch_up(*self->batches_, self->worker_->batches());
          catch_up(*self->dropped_, self->worker_->dropped());
        }
        if (result.is_ok()) {
          log_event(LogLevel::kInfo, "prefill", "prefilled",
                    {{"node", self->options_.node_id},
                     {"request_id", id},
                     {"reservation_id", reservation},
                     {"computed", result->tokens_computed()},
                     {"cached", result->tokens_cached()},
                     {"kv_bytes", result->kv_bytes_moved()}});
        } else {
          log_event(LogLevel::kWarning, "prefill", "prefill failed",
                    {{"node", self->options_.node_id},
                     {"request_id", id},
                     {"reservation_id", reservation},
                     {"error", result.status().to_string()}});
        }
        if (result.is_ok()) {
          self->tokens_computed_->Increment(result->tokens_computed());
          self->tokens_cached_->Increment(result->tokens_cached());
        }
        auto connection = weak.lock();
        if (connection == nullptr) return;
        if (auto peer = self->connections_.find(connection); peer != self->connections_.end())
          peer->second.live.erase(id);
        control::Envelope reply;
        reply.set_request_id(id);
        if (result.is_ok()) {
          *reply.mutable_prefill_done() = result.value();
        } else {
          reply = rpc::error_frame(id, result.status());
        }
        (void)connection->send(reply);
      });
    };
  }

  asio::io_context& io_;
  const ModelFiles& model_;
  PrefillServerOptions options_;
  std::string fingerprint_;
  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
  std::unique_ptr<PrefillWorker> worker_;
  std::shared_ptr<rpc::Listener> listener_;
  bool draining_ = false;
  bool stopped_ = false;
  std::unique_ptr<admin::AdminServer> admin_;
  std::shared_ptr<node::PeerProbe> peer_probe_;
  control::Envelope hello_;
  struct Peer {
    bool greeted = false;
    bool has_prefix_index = false;  // a LoadReport gave it this node's whole prefix index
    // Its prefill requests not answered yet, by request id: each one's flag is set when a Cancel names it or the
    // connection closes (PrefillWorker::Abandoned).
    std::unordered_map<uint64_t, std::shared_ptr<std::atomic<bool>>> live;
  };
  std::unordered_map<std::shared_ptr<rpc::Connection>, Peer> connections_;
  prometheus::Counter* tokens_computed_ = nullptr;
  prometheus::Counter* tokens_cached_ = nullptr;
  prometheus::Gauge* blocks_used_ = nullptr;
  prometheus::Gauge* blocks_free_ = nullptr;
  prometheus::Gauge* waiting_ = nullptr;
  prometheus::Gauge* running_ = nullptr;
  prometheus::Counter* batches_ = nullptr;
  prometheus::Counter* dropped_ = nullptr;
};

class ServerHandle final : public PrefillServer {
 public:
  explicit ServerHandle(std::shared_ptr<Server> server) : server_(std::move(server)) {}
  ~ServerHandle() override { server_->shutdown(); }
  uint16_t port() const override { return server_->port(); }
  uint16_t admin_port() const override { return server_->admin_port(); }
  void stop() override { server_->stop(); }
  void drain(std::chrono::milliseconds within, std::function<void()> drained) override {
    server_->drain(within, std::move(drained));
  }

 private:
  std::shared_ptr<Server> server_;
};

}  // namespace

Result<std::unique_ptr<PrefillServer>> PrefillServer::start(asio::io_context& io, const ModelFiles& model,
                                                            PrefillServerOptions options) {
  auto server = std::make_shared<Server>(io, model, std::move(options));
  RECGPT_RETURN_IF_ERROR(server->open());
  server->run();
  return std::unique_ptr<PrefillServer>(std::make_unique<ServerHandle>(std::move(server)));
}

}  // namespace recgpt::prefill
