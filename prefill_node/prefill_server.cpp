#include "prefill_node/prefill_server.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "common/admin/admin_server.h"
#include "common/log.h"
#include "common/rpc/connection.h"
#include "common/rpc/listener.h"
#include "engine/block_hash.h"
#include "engine/entity_store.h"
#include "engine/model_files.h"
#include "engine/model_fingerprint.h"
#include "kv_transfer/kv_stream.h"
#include "kv_transfer/transfer_engine.h"
#include "node/node_protocol.h"
#include "prefill_node/prefill_executor.h"

namespace recgpt::prefill {
namespace {

namespace asio = boost::asio;

constexpr std::chrono::milliseconds kDefaultDeadline(30000);
constexpr std::chrono::milliseconds kMaxDeadline(600000);

// The engine side: one thread, one request at a time, owning the backend, the cache and the transfer engine's
// connections to decode nodes.
class PrefillWorker {
 public:
  using Done = std::function<void(Result<control::PrefillDone>)>;

  PrefillWorker(const ModelFiles& model, std::unique_ptr<Backend> backend, std::unique_ptr<KvCache> cache,
                std::unique_ptr<kv::TransferEngine> transfer, std::optional<EntityStore> entities)
      : model_(model),
        entities_(std::move(entities)),
        backend_(std::move(backend)),
        cache_(std::move(cache)),
        transfer_(std::move(transfer)),
        executor_(model.config(), *backend_, *cache_) {
    thread_ = std::thread([this] { run(); });
  }

  ~PrefillWorker() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }

  Status register_cache() {
    RECGPT_ASSIGN_OR_RETURN(region_, transfer_->register_memory(
                                         {cache_->storage_data(), cache_->storage_bytes(), kv::MemoryKind::kHost, -1}));
    return Status::ok();
  }

  // Whether a request is queued or running.
  bool busy() const { return pending_.load() > 0; }

  void submit(control::PrefillRequest request, Done done) {
    ++pending_;
    {
      std::lock_guard lock(mutex_);
      queue_.emplace_back(std::move(request), std::move(done));
    }
    wake_.notify_all();
  }

  const KvCache& cache() const { return *cache_; }
  // Blocks held by requests in progress (0 between requests: the rest are free or cached prefixes).
  int64_t used_blocks() const { return used_blocks_.load(); }

 private:
  void run() {
    for (;;) {
      std::pair<control::PrefillRequest, Done> job;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (stopping_) break;
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      Result<control::PrefillDone> result = prefill(job.first);
      used_blocks_ = cache_->blocks().num_used_blocks();
      job.second(std::move(result));
      --pending_;
    }
    std::lock_guard lock(mutex_);
    for (auto& [request, done] : queue_) done(unavailable("the prefill node is stopping"));
  }

  // The transfer peer and imported KV region of a decode node, connected on first use.
  Result<std::pair<kv::PeerId, kv::RemoteRegionId>> decode_destination(const control::PrefillRequest& request,
                                                                       kv::Deadline deadline) {
    const std::string key = request.decode_transfer_endpoint() + request.decode_kv_region_key();
    auto known = destinations_.find(key);
    if (known != destinations_.end() && transfer_->peer_status(known->second.first).is_ok()) return known->second;
    const auto* endpoint = reinterpret_cast<const std::byte*>(request.decode_transfer_endpoint().data());
    RECGPT_ASSIGN_OR_RETURN(
        kv::PeerId peer, transfer_->connect(std::span(endpoint, request.decode_transfer_endpoint().size()), deadline));
    const auto* region_key = reinterpret_cast<const std::byte*>(request.decode_kv_region_key().data());
    RECGPT_ASSIGN_OR_RETURN(
        kv::RemoteRegionId region,
        transfer_->import_region(peer, std::span(region_key, request.decode_kv_region_key().size())));
    destinations_[key] = {peer, region};
    return destinations_[key];
  }

  Result<control::PrefillDone> prefill(const control::PrefillRequest& request) {
    const kv::Deadline deadline =
        node::deadline_from_unix_ms(request.deadline_unix_ms(), kDefaultDeadline, kMaxDeadline);
    std::vector<int32_t> prompt;
    for (uint32_t token : request.token_ids())
      prompt.push_back(static_cast<int32_t>(std::min<uint32_t>(token, INT32_MAX)));
    std::vector<float> entity_vectors;
    std::vector<uint64_t> entity_keys;  // from ids when given by id (the same entity shares cached blocks)
    const int entity_dim = model_.config().entity_adaptor ? model_.config().entity_adaptor->entity_dim : 0;
    for (const control::EntityInput& entity : request.entities()) {
      if (entity.has_vector()) {
        if (entity.vector().values_size() != entity_dim) {
          return invalid_argument("an entity vector has " + std::to_string(entity.vector().values_size()) +
                                  " values, the model's adaptor takes " + std::to_string(entity_dim));
        }
        entity_vectors.insert(entity_vectors.end(), entity.vector().values().begin(), entity.vector().values().end());
        entity_keys.push_back(entity_key_from_vector(std::span(entity_vectors).last(static_cast<size_t>(entity_dim))));
        continue;
      }
      if (!entities_.has_value()) {
        return unimplemented("entity '" + entity.entity_id() +
                             "' is given by id, but this prefill node has no entity store");
      }
      std::optional<std::span<const float>> vector = entities_->find(entity.entity_id());
      if (!vector) return not_found("entity '" + entity.entity_id() + "' is not in the entity store");
      entity_vectors.insert(entity_vectors.end(), vector->begin(), vector->end());
      entity_keys.push_back(entity_key_from_id(entity.entity_id()));
    }
    SamplingParams sampling;
    sampling.temperature = request.sampling().temperature();
    sampling.top_k = static_cast<int>(request.sampling().top_k());
    sampling.top_p = request.sampling().top_p() == 0 ? 1.0f : request.sampling().top_p();
    sampling.repetition_penalty =
        request.sampling().repetition_penalty() == 0 ? 1.0f : request.sampling().repetition_penalty();
    sampling.seed = request.sampling().seed();
    PrefillInput input{prompt, entity_vectors, entity_keys, sampling};

    const int block_size = executor_.block_size();
    if (request.cached_tokens() % static_cast<uint32_t>(block_size) != 0 || request.cached_tokens() >= prompt.size()) {
      return invalid_argument("the decode node's cached tokens (" + std::to_string(request.cached_tokens()) +
                              ") must be whole blocks before the prompt's last token");
    }
    const size_t first_block = request.cached_tokens() / static_cast<uint32_t>(block_size);
    const size_t prompt_blocks =
        (prompt.size() + static_cast<size_t>(block_size) - 1) / static_cast<size_t>(block_size);
    if (static_cast<size_t>(request.destination_block_ids_size()) < prompt_blocks - first_block) {
      return invalid_argument("the request names " + std::to_string(request.destination_block_ids_size()) +
                              " destination blocks for " + std::to_string(prompt_blocks - first_block) +
                              " uncached prompt blocks");
    }
    RECGPT_ASSIGN_OR_RETURN(auto destination, decode_destination(request, deadline));
    RECGPT_ASSIGN_OR_RETURN(PrefillPlan plan, executor_.plan(input));
    kv::KvStreamWriterConfig config;
    config.peer = destination.first;
    config.source_region = region_;
    config.source_layout = node::describe_kv_cache(*cache_);
    config.destination_region = destination.second;
    config.destination_layout = node::kv_layout_from_proto(request.decode_kv_layout());
    config.source_blocks.assign(plan.blocks.begin() + static_cast<long>(first_block), plan.blocks.end());
    for (size_t i = 0; i < prompt_blocks - first_block; ++i) {
      config.destination_blocks.push_back(
          static_cast<int32_t>(std::min<uint32_t>(request.destination_block_ids(i), INT32_MAX)));
    }
    config.request_id = "reservation-" + std::to_string(request.reservation_id());
    const uint64_t bytes = config.source_blocks.size() * 2 * static_cast<uint64_t>(config.source_layout.num_layers) *
                           config.source_layout.block_bytes();
    Result<std::unique_ptr<kv::KvStreamWriter>> writer = kv::KvStreamWriter::create(*transfer_, config);
    if (!writer.is_ok()) {
      executor_.release(plan);
      return writer.status();
    }
    Result<PrefillOutcome> outcome =
        executor_.compute(input, plan, [&](int32_t layer) { return (*writer)->write_layer(layer); });
    Status finished = outcome.is_ok() ? (*writer)->finish(deadline) : outcome.status();
    if (!outcome.is_ok()) (*writer)->abort();
    executor_.release(plan);
    RECGPT_RETURN_IF_ERROR(finished);
    control::PrefillDone done;
    done.set_first_token(static_cast<uint32_t>(outcome->first_token));
    done.set_tokens_computed(static_cast<uint32_t>(outcome->tokens_computed));
    done.set_tokens_cached(static_cast<uint32_t>(outcome->tokens_cached));
    done.set_kv_bytes_moved(bytes);
    return done;
  }

  const ModelFiles& model_;
  std::optional<EntityStore> entities_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<kv::TransferEngine> transfer_;
  PrefillExecutor executor_;
  kv::LocalRegionId region_ = 0;
  std::map<std::string, std::pair<kv::PeerId, kv::RemoteRegionId>> destinations_;
  std::atomic<int64_t> used_blocks_ = 0;
  std::atomic<int64_t> pending_ = 0;

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::pair<control::PrefillRequest, Done>> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

class Server : public std::enable_shared_from_this<Server> {
 public:
  Server(asio::io_context& io, const ModelFiles& model, PrefillServerOptions options)
      : io_(io), model_(model), options_(std::move(options)) {}

  Status open() {
    node::route_protobuf_logs();
    RECGPT_ASSIGN_OR_RETURN(fingerprint_, model_fingerprint(model_));
    const ModelConfig& config = model_.config();
    KvCacheConfig cache_config{
        config.num_hidden_layers, config.num_key_value_heads, config.head_dim, options_.block_size, DType::kF32, 0};
    cache_config.num_blocks = cache_config.num_blocks_for_budget(options_.kv_cache_bytes);
    RECGPT_ASSIGN_OR_RETURN(KvCache cache, KvCache::create(cache_config));
    BackendOptions backend_options;
    backend_options.num_threads = options_.threads;
    RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, create_backend("cpu", model_, backend_options));
    kv::TransferEngineOptions transfer_options;
    transfer_options.name = options_.node_id;
    transfer_options.settings = options_.transfer_settings;
    transfer_options.metrics = registry_;
    RECGPT_ASSIGN_OR_RETURN(std::unique_ptr<kv::TransferEngine> transfer,
                            kv::create_transfer_engine(options_.transfer_backend, transfer_options));
    std::optional<EntityStore> entities;
    if (!options_.entity_store.empty()) {
      RECGPT_ASSIGN_OR_RETURN(EntityStore store, EntityStore::open(options_.entity_store));
      if (!config.entity_adaptor || store.dim() != config.entity_adaptor->entity_dim) {
        return invalid_argument("entity store " + options_.entity_store + " holds vectors of dim " +
                                std::to_string(store.dim()) + ", which the model's adaptor does not take");
      }
      entities = std::move(store);
    }
    worker_ = std::make_unique<PrefillWorker>(model_, std::move(backend), std::make_unique<KvCache>(std::move(cache)),
                                              std::move(transfer), std::move(entities));
    RECGPT_RETURN_IF_ERROR(worker_->register_cache());
    RECGPT_ASSIGN_OR_RETURN(listener_, rpc::Listener::open(io_, options_.address, options_.port));
    admin::AdminOptions admin_options;
    admin_options.address = options_.address;
    admin_options.port = options_.admin_port;
    admin_options.registry = registry_;
    RECGPT_ASSIGN_OR_RETURN(admin_, admin::AdminServer::start(io_, admin_options));
    auto& tokens = prometheus::BuildCounter()
                       .Name("recgpt_prefill_tokens_total")
                       .Help("Prompt tokens by how they were served")
                       .Register(*registry_);
    tokens_computed_ = &tokens.Add({{"role", "prefill"}, {"node", options_.node_id}, {"kind", "computed"}});
    tokens_cached_ = &tokens.Add({{"role", "prefill"}, {"node", options_.node_id}, {"kind", "cached"}});
    auto& blocks = prometheus::BuildGauge().Name("recgpt_kv_blocks").Help("KV blocks by state").Register(*registry_);
    blocks_used_ = &blocks.Add({{"role", "prefill"}, {"node", options_.node_id}, {"state", "used"}});
    blocks_used_->Set(0);
    hello_ = node::make_hello(control::ROLE_PREFILL, options_.node_id, fingerprint_, options_.transfer_backend,
                              worker_->cache());
    return Status::ok();
  }

  void run() {
    listener_->run(
        [self = shared_from_this()](std::shared_ptr<rpc::Connection> connection) { self->accept(connection); });
  }

  uint16_t port() const { return listener_->port(); }
  uint16_t admin_port() const { return admin_->port(); }

  void drain(std::chrono::milliseconds within, std::function<void()> drained) {
    log_event(LogLevel::kInfo, "prefill", "draining", {{"node", options_.node_id}, {"within_ms", within.count()}});
    draining_ = true;
    if (listener_) listener_->close();
    asio::co_spawn(
        io_,
        [self = shared_from_this(), within, drained = std::move(drained)]() -> asio::awaitable<void> {
          asio::steady_timer timer(co_await asio::this_coro::executor);
          const auto give_up = std::chrono::steady_clock::now() + within;
          while (!(self->worker_ == nullptr || !self->worker_->busy()) && std::chrono::steady_clock::now() < give_up) {
            timer.expires_after(std::chrono::milliseconds(50));
            boost::system::error_code ignored;
            co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
          }
          drained();
        },
        asio::detached);
  }

  void stop() {
    if (listener_) listener_->close();
    auto connections = connections_;
    for (auto& [connection, greeted] : connections) connection->close(unavailable("the prefill node is stopping"));
    if (admin_) admin_->stop();
  }

  // Joins the engine thread (on the io thread, never from one of its callbacks).
  void shutdown() {
    stop();
    worker_.reset();
  }

 private:
  void accept(const std::shared_ptr<rpc::Connection>& connection) {
    connections_[connection] = false;
    std::weak_ptr<rpc::Connection> weak = connection;
    auto self = shared_from_this();
    connection->start(
        [self, weak](control::Envelope envelope) {
          if (auto connection = weak.lock()) self->on_frame(connection, std::move(envelope));
        },
        [self, weak](const Status&) {
          if (auto connection = weak.lock()) self->connections_.erase(connection);
        });
  }

  void on_frame(const std::shared_ptr<rpc::Connection>& connection, control::Envelope envelope) {
    auto known = connections_.find(connection);
    if (known == connections_.end() || worker_ == nullptr) return;
    const uint64_t id = envelope.request_id();
    if (!known->second) {
      known->second = node::answer_first_frame(*connection, envelope, hello_, fingerprint_);
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
    std::weak_ptr<rpc::Connection> weak = connection;
    const uint64_t reservation = envelope.prefill_request().reservation_id();
    worker_->submit(std::move(*envelope.mutable_prefill_request()),
                    [self = shared_from_this(), weak, id, reservation](Result<control::PrefillDone> result) {
                      asio::post(self->io_, [self, weak, id, reservation, result = std::move(result)] {
                        if (self->worker_ != nullptr) {
                          self->blocks_used_->Set(static_cast<double>(self->worker_->used_blocks()));
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
                        control::Envelope reply;
                        reply.set_request_id(id);
                        if (result.is_ok()) {
                          *reply.mutable_prefill_done() = result.value();
                        } else {
                          reply = rpc::error_frame(id, result.status());
                        }
                        (void)connection->send(reply);
                      });
                    });
  }

  asio::io_context& io_;
  const ModelFiles& model_;
  PrefillServerOptions options_;
  std::string fingerprint_;
  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
  std::unique_ptr<PrefillWorker> worker_;
  std::shared_ptr<rpc::Listener> listener_;
  bool draining_ = false;
  std::unique_ptr<admin::AdminServer> admin_;
  control::Envelope hello_;
  std::unordered_map<std::shared_ptr<rpc::Connection>, bool> connections_;  // -> greeted
  prometheus::Counter* tokens_computed_ = nullptr;
  prometheus::Counter* tokens_cached_ = nullptr;
  prometheus::Gauge* blocks_used_ = nullptr;
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
