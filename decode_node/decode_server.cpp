#include "decode_node/decode_server.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "common/admin/admin_server.h"
#include "common/admin/latency_buckets.h"
#include "common/log.h"
#include "common/rpc/connection.h"
#include "common/rpc/listener.h"
#include "decode_node/decode_core.h"
#include "decode_node/kv_arrivals.h"
#include "engine/model_files.h"
#include "engine/model_fingerprint.h"
#include "kv_transfer/transfer_engine.h"
#include "node/constraints.h"
#include "node/entity_inputs.h"
#include "node/node_protocol.h"
#include "node/peer_probe.h"

namespace recgpt::decode {
namespace {

namespace asio = boost::asio;

// A Prometheus counter that follows a count kept elsewhere (the engine thread's or the arrivals' counters), which
// only grows.
struct MirroredCounter {
  prometheus::Counter* counter = nullptr;
  double seen = 0;
  void follow(double now) {
    counter->Increment(now - seen);
    seen = now;
  }
};

constexpr std::chrono::milliseconds kDefaultReservationLifetime(30000);
constexpr std::chrono::milliseconds kMaxReservationLifetime(600000);
constexpr auto kHousekeepingPeriod = std::chrono::milliseconds(100);
constexpr int kLoadReportEvery = 10;  // housekeeping periods: a LoadReport each second
// How long a StartDecode waits for its prompt's KV to land after the router saw PrefillDone (normally well under
// a millisecond: the last writes are on their way or being copied in).
constexpr std::chrono::seconds kKvArrivalWait(10);
// More prefill attempts into one reservation than a router makes (it tries two prefill nodes).
constexpr uint32_t kMaxPrefillAttempts = 64;
constexpr size_t kMaxEndpointBytes = 64 << 10;  // a transfer engine's endpoint (ucx: a worker address)

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStopToken: return "stop";
    case FinishReason::kLength:
    case FinishReason::kContextFull: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kConstraint: return "constraint";
    case FinishReason::kOutOfKvBlocks:
    case FinishReason::kNone: break;
  }
  return "error";
}

// What one connection reserved or started: ended with it.
struct Session {
  std::shared_ptr<rpc::Connection> connection;
  bool greeted = false;
  bool has_prefix_index = false;                               // a LoadReport gave it this node's whole prefix index
  std::unordered_map<uint64_t, uint64_t> reservation_of_call;  // ReserveKv / StartDecode request id -> reservation
  std::unordered_set<uint64_t> owned;                          // reservations not finished yet
  std::unordered_set<uint64_t> started;                        // of those, the ones a StartDecode fenced

  void finish(uint64_t reservation) {
    owned.erase(reservation);
    started.erase(reservation);
  }
};

// The server's state, shared with its coroutines and callbacks. DecodeCore's thread calls back into it; the
// core is destroyed (its thread joined) by shutdown() on the io thread, never by a callback dropping the last
// reference on the engine thread.
class Server final : public std::enable_shared_from_this<Server> {
 public:
  Server(asio::io_context& io, const ModelFiles& model, DecodeServerOptions options)
      : io_(io), model_(model), options_(std::move(options)), housekeeping_(io) {}

  Status open() {
    node::route_protobuf_logs();
    RECGPT_ASSIGN_OR_RETURN(fingerprint_, model_fingerprint(model_));
    // Before the core, whose engine thread observes it; the registry outlives the core (member order).
    prometheus::Histogram& token_gaps =
        prometheus::BuildHistogram()
            .Name("recgpt_inter_token_latency_seconds")
            .Help("Time between consecutive tokens of a sequence here (for one prefilled elsewhere, from its start)")
            .Register(*registry_)
            .Add({{"role", "decode"}, {"node", options_.node_id}}, admin::token_gap_buckets());
    RECGPT_ASSIGN_OR_RETURN(core_, DecodeCore::create(model_, options_.engine,
                                                      [&token_gaps](double seconds) { token_gaps.Observe(seconds); }));
    RECGPT_ASSIGN_OR_RETURN(entities_, node::open_entity_store(options_.entity_store, model_.config()));
    RECGPT_ASSIGN_OR_RETURN(constraints_, node::Constraints::create(model_, options_.catalogues));
    kv::TransferEngineOptions transfer_options;
    transfer_options.name = options_.node_id;
    transfer_options.settings = options_.transfer_settings;
    transfer_options.metrics = registry_;
    RECGPT_ASSIGN_OR_RETURN(transfer_, kv::create_transfer_engine(options_.transfer_backend, transfer_options));
    KvCache& cache = core_->kv_cache();
    RECGPT_ASSIGN_OR_RETURN(kv::LocalRegionId region, transfer_->register_memory(node::kv_cache_region(cache)));
    RECGPT_ASSIGN_OR_RETURN(kv::Bytes endpoint, transfer_->local_endpoint());
    RECGPT_ASSIGN_OR_RETURN(kv::Bytes key, transfer_->export_region(region));
    arrivals_ = std::make_unique<KvArrivals>(*transfer_);
    hello_ = node::make_hello(control::ROLE_DECODE, options_.node_id, fingerprint_, options_.transfer_backend, cache);
    hello_.mutable_hello()->set_transfer_endpoint(endpoint.data(), endpoint.size());
    hello_.mutable_hello()->set_kv_region_key(key.data(), key.size());
    RECGPT_ASSIGN_OR_RETURN(listener_, rpc::Listener::open(io_, options_.address, options_.port));
    admin::AdminOptions admin_options;
    admin_options.address = options_.address;
    admin_options.port = options_.admin_port;
    admin_options.registry = registry_;
    RECGPT_ASSIGN_OR_RETURN(peer_probe_,
                            node::probe_peers(io_, options_.required_peers, control::ROLE_DECODE, fingerprint_));
    admin_options.readiness = [weak = weak_from_this()]() -> Status {
      auto self = weak.lock();
      if (self == nullptr) return unavailable("the decode node is stopping");
      if (self->draining_) return unavailable("the decode node is draining");
      if (Status receiving = self->arrivals_->receive_status(); !receiving.is_ok()) {
        return unavailable("KV pushed here cannot be received: " + receiving.message());
      }
      return self->peer_probe_->status();
    };
    RECGPT_ASSIGN_OR_RETURN(admin_, admin::AdminServer::start(io_, admin_options));
    auto& blocks = prometheus::BuildGauge().Name("recgpt_kv_blocks").Help("KV blocks by state").Register(*registry_);
    blocks_used_ = &blocks.Add({{"role", "decode"}, {"node", options_.node_id}, {"state", "used"}});
    blocks_free_ = &blocks.Add({{"role", "decode"}, {"node", options_.node_id}, {"state", "free"}});
    auto& requests = prometheus::BuildGauge().Name("recgpt_requests").Help("Requests by state").Register(*registry_);
    running_ = &requests.Add({{"role", "decode"}, {"node", options_.node_id}, {"state", "running"}});
    reserved_ = &requests.Add({{"role", "decode"}, {"node", options_.node_id}, {"state", "reserved"}});
    local_prefills_ = &prometheus::BuildCounter()
                           .Name("recgpt_decode_local_prefills_total")
                           .Help("Calls whose prompt this decode node computed itself (no prefill node could)")
                           .Register(*registry_)
                           .Add({{"role", "decode"}, {"node", options_.node_id}});
    constrained_steps_.counter = &prometheus::BuildCounter()
                                      .Name("recgpt_constraint_steps_total")
                                      .Help("Tokens sampled under a decoding constraint")
                                      .Register(*registry_)
                                      .Add({{"role", "decode"}, {"node", options_.node_id}});
    constraint_seconds_.counter =
        &prometheus::BuildCounter()
             .Name("recgpt_constraint_mask_seconds_total")
             .Help("Time spent masking logits for constrained tokens (per step: divide by the steps)")
             .Register(*registry_)
             .Add({{"role", "decode"}, {"node", options_.node_id}});
    auto& json_masks = prometheus::BuildCounter()
                           .Name("recgpt_json_mask_lookups_total")
                           .Help("JSON token masks looked up in the node's cache, by whether it held them")
                           .Register(*registry_);
    json_mask_hits_.counter = &json_masks.Add({{"role", "decode"}, {"node", options_.node_id}, {"result", "hit"}});
    json_mask_misses_.counter = &json_masks.Add({{"role", "decode"}, {"node", options_.node_id}, {"result", "miss"}});
    sampling_seconds_.counter =
        &prometheus::BuildCounter()
             .Name("recgpt_decode_sampling_seconds_total")
             .Help("Time the step thread spends drawing tokens from logits, constraint masks not included")
             .Register(*registry_)
             .Add({{"role", "decode"}, {"node", options_.node_id}});
    kv_arrival_wait_ = &prometheus::BuildHistogram()
                            .Name("recgpt_decode_kv_arrival_wait_seconds")
                            .Help("From a pushed call's StartDecode to its KV's arrival here (0 when it came first)")
                            .Register(*registry_)
                            .Add({{"role", "decode"}, {"node", options_.node_id}},
                                 prometheus::Histogram::BucketBoundaries{1e-5, 1e-4, 1e-3, 0.01, 0.1, 1, 10});
    kv_arrival_timeouts_ = &prometheus::BuildCounter()
                                .Name("recgpt_decode_kv_arrival_timeouts_total")
                                .Help("Pushed calls refused because their KV did not arrive in time")
                                .Register(*registry_)
                                .Add({{"role", "decode"}, {"node", options_.node_id}});
    blocks_fenced_ = &prometheus::BuildGauge()
                          .Name("recgpt_decode_kv_blocks_fenced")
                          .Help(
                              "KV blocks (also counted as used) kept from reuse while a prefill attempt the router "
                              "gave up on may still write them")
                          .Register(*registry_)
                          .Add({{"role", "decode"}, {"node", options_.node_id}});
    fences_lapsed_.counter = &prometheus::BuildCounter()
                                  .Name("recgpt_decode_kv_fences_lapsed_total")
                                  .Help(
                                      "Fences released at their deadline rather than by their writers' ends (expired "
                                      "reservations, dead or silent prefill nodes, closed router connections)")
                                  .Register(*registry_)
                                  .Add({{"role", "decode"}, {"node", options_.node_id}});
    auto& stream_ends = prometheus::BuildCounter()
                            .Name("recgpt_decode_kv_stream_ends_total")
                            .Help(
                                "Prefill attempts' KV streams over here, by how: completed or aborted by their "
                                "prefill node, or writer_died (the prefill node died before the stream's end)")
                            .Register(*registry_);
    for (auto [end, counter] : {std::pair{"completed", &streams_completed_}, std::pair{"aborted", &streams_aborted_},
                                std::pair{"writer_died", &writers_died_}}) {
      counter->counter = &stream_ends.Add({{"role", "decode"}, {"node", options_.node_id}, {"end", end}});
    }
    sequences_ = &prometheus::BuildCounter()
                      .Name("recgpt_decode_sequences_total")
                      .Help("Sequences this decode node finished, by reason")
                      .Register(*registry_);
    // Every reason at 0 from the start, so that rates see a 0 before the first.
    for (FinishReason finish :
         {FinishReason::kNone, FinishReason::kLength, FinishReason::kStopToken, FinishReason::kContextFull,
          FinishReason::kOutOfKvBlocks, FinishReason::kCancelled, FinishReason::kConstraint}) {
      sequences_->Add({{"role", "decode"}, {"node", options_.node_id}, {"reason", finish_reason_name(finish)}});
    }
    return Status::ok();
  }

  void run() {
    listener_->run(
        [self = shared_from_this()](std::shared_ptr<rpc::Connection> connection) { self->accept(connection); });
    asio::co_spawn(
        io_, [self = shared_from_this()] { return self->housekeeping_loop(); }, asio::detached);
  }

  uint16_t port() const { return listener_->port(); }
  uint16_t admin_port() const { return admin_->port(); }

  // Stops and joins the engine thread: no callback from it runs after this.
  void shutdown() {
    stop();
    arrivals_.reset();  // its open waits end now (their posts find core_ gone), before what they use goes
    core_.reset();
  }

  void drain(std::chrono::milliseconds within, std::function<void()> drained) {
    log_event(LogLevel::kInfo, "decode", "draining", {{"node", options_.node_id}, {"within_ms", within.count()}});
    draining_ = true;
    if (listener_) listener_->close();
    auto self = shared_from_this();
    node::call_when_idle(
        io_, within,
        [self] {
          if (self->core_ == nullptr) return true;
          const DecodeCounters counters = self->core_->counters();
          return counters.running == 0 && counters.reservations == 0;
        },
        std::move(drained));
  }

  void stop() {
    if (listener_) listener_->close();
    housekeeping_.cancel();
    auto sessions = sessions_;  // closing runs handlers that erase from sessions_
    for (auto& [connection, session] : sessions) connection->close(unavailable("the decode node is stopping"));
    if (admin_) admin_->stop();
    if (peer_probe_) peer_probe_->stop();
  }

 private:
  void accept(const std::shared_ptr<rpc::Connection>& connection) {
    sessions_[connection].connection = connection;
    std::weak_ptr<rpc::Connection> weak = connection;
    auto self = shared_from_this();
    connection->start(
        [self, weak](control::Envelope envelope) {
          if (auto connection = weak.lock()) self->on_frame(connection, std::move(envelope));
        },
        [self, weak](const Status&) {
          if (auto connection = weak.lock()) self->on_closed(connection);
        });
  }

  // Refreshes the gauges and sends the load reports.
  asio::awaitable<void> housekeeping_loop() {
    auto self = shared_from_this();
    while (core_ != nullptr) {
      const DecodeCounters counters = core_->counters();
      blocks_used_->Set(static_cast<double>(counters.kv_blocks_used));
      blocks_free_->Set(static_cast<double>(counters.kv_blocks_total - counters.kv_blocks_used));
      running_->Set(static_cast<double>(counters.running));
      reserved_->Set(static_cast<double>(counters.reservations));
      constrained_steps_.follow(static_cast<double>(counters.constrained_steps));
      constraint_seconds_.follow(counters.constraint_seconds);
      if (constraints_ != nullptr) {
        const JsonMaskCache::Stats masks = constraints_->json_mask_stats();
        json_mask_hits_.follow(static_cast<double>(masks.hits));
        json_mask_misses_.follow(static_cast<double>(masks.misses));
      }
      sampling_seconds_.follow(counters.sampling_seconds);
      blocks_fenced_->Set(static_cast<double>(counters.kv_blocks_fenced));
      fences_lapsed_.follow(static_cast<double>(counters.fences_lapsed));
      if (arrivals_ != nullptr) {
        const KvArrivalCounters arrived = arrivals_->counters();
        streams_completed_.follow(static_cast<double>(arrived.completed));
        streams_aborted_.follow(static_cast<double>(arrived.aborted));
        writers_died_.follow(static_cast<double>(arrived.writers_died));
      }
      if (++housekeeping_ticks_ % kLoadReportEvery == 0) send_load_report(counters);
      housekeeping_.expires_after(kHousekeepingPeriod);
      boost::system::error_code error;
      co_await housekeeping_.async_wait(asio::redirect_error(asio::use_awaitable, error));
      if (error) co_return;
    }
  }

  // Tells every greeted peer (routers) how loaded this node is, so they can place the next calls.
  void send_load_report(const DecodeCounters& counters) {
    control::LoadReport load;
    load.set_queue_depth(static_cast<uint32_t>(counters.reservations));
    load.set_running_sequences(static_cast<uint32_t>(counters.running));
    load.set_kv_blocks_used(static_cast<uint32_t>(counters.kv_blocks_used));
    load.set_kv_blocks_free(static_cast<uint32_t>(counters.kv_blocks_total - counters.kv_blocks_used));
    std::vector<node::ReportPeer> peers;
    for (auto& [connection, session] : sessions_) {
      if (session.greeted) peers.push_back({connection.get(), &session.has_prefix_index});
    }
    node::send_load_reports(load, core_->prefix_journal(), peers);
  }

  void on_closed(const std::shared_ptr<rpc::Connection>& connection) {
    auto it = sessions_.find(connection);
    if (it == sessions_.end()) return;
    log_event(LogLevel::kInfo, "decode", "connection closed",
              {{"node", options_.node_id},
               {"peer", connection->peer_name()},
               {"reason", connection->close_reason().message()},
               {"cancelled", it->second.owned.size()}});
    if (core_ != nullptr) {
      for (uint64_t reservation : it->second.owned) {
        // The router named each prefill attempt before sending it (PrefillAttempt): a reservation not started yet
        // stays fenced until those ended; a started one was fenced at its start.
        if (arrivals_ != nullptr && it->second.started.count(reservation) == 0) {
          fence_attempts(reservation, arrivals_->attempts_sent(reservation), 0);
        }
        core_->cancel(reservation);
        if (arrivals_ != nullptr) arrivals_->forget(reservation);
      }
    }
    sessions_.erase(it);
  }

  void on_frame(const std::shared_ptr<rpc::Connection>& connection, control::Envelope envelope) {
    auto it = sessions_.find(connection);
    if (it == sessions_.end() || core_ == nullptr) return;
    Session& session = it->second;
    const uint64_t id = envelope.request_id();
    if (!session.greeted) {
      session.greeted = node::answer_first_frame(*connection, envelope, hello_, fingerprint_);
      return;
    }
    switch (envelope.body_case()) {
      case control::Envelope::kReserveKv:
        if (draining_) {
          (void)connection->send(rpc::error_frame(id, unavailable("the decode node is draining")));
          return;
        }
        return on_reserve(session, id, envelope.reserve_kv());
      case control::Envelope::kStartDecode: return on_start(session, id, envelope.start_decode());
      case control::Envelope::kPrefillAttempt: return on_prefill_attempt(session, envelope.prefill_attempt());
      case control::Envelope::kCancel: {
        auto call = session.reservation_of_call.find(id);
        if (call != session.reservation_of_call.end()) {
          const uint32_t attempts = std::min(envelope.cancel().prefill_attempts(), kMaxPrefillAttempts);
          fence_attempts(call->second, attempts, 0);
          core_->cancel(call->second);
          if (arrivals_ != nullptr) arrivals_->forget(call->second);
          session.finish(call->second);
        }
        return;
      }
      default:
        (void)connection->send(rpc::error_frame(
            id, invalid_argument("a decode node does not take " + rpc::body_name(envelope) + " frames")));
    }
  }

  void on_reserve(Session& session, uint64_t id, const control::ReserveKv& reserve) {
    ReserveRequest request;
    const int32_t vocab = model_.config().vocab_size;
    for (uint32_t token : reserve.token_ids()) {
      if (token >= static_cast<uint32_t>(vocab)) {
        (void)session.connection->send(
            rpc::error_frame(id, invalid_argument("token id " + std::to_string(token) +
                                                  " is outside the vocabulary of " + std::to_string(vocab))));
        return;
      }
      request.prompt.push_back(static_cast<int32_t>(token));
    }
    request.entity_keys.assign(reserve.entity_keys().begin(), reserve.entity_keys().end());
    request.max_new_tokens = static_cast<int32_t>(std::min<uint32_t>(reserve.max_tokens(), 1u << 20));
    request.expires =
        node::deadline_from_unix_ms(reserve.deadline_unix_ms(), kDefaultReservationLifetime, kMaxReservationLifetime);
    const int block_size = core_->kv_cache().config().block_size;
    std::weak_ptr<rpc::Connection> weak = session.connection;
    core_->reserve(std::move(request), [self = shared_from_this(), weak, id, block_size](Result<Reservation> result) {
      asio::post(self->io_, [self, weak, id, block_size, result = std::move(result)] {
        if (self->core_ == nullptr) return;
        auto connection = weak.lock();
        auto session = connection ? self->sessions_.find(connection) : self->sessions_.end();
        if (session == self->sessions_.end()) {
          if (result.is_ok()) self->core_->cancel(result->id);  // the caller is gone
          return;
        }
        control::Envelope reply;
        reply.set_request_id(id);
        if (result.is_ok()) {
          session->second.owned.insert(result->id);
          session->second.reservation_of_call[id] = result->id;
          control::Reservation& reservation = *reply.mutable_reserve_kv_reply()->mutable_reservation();
          reservation.set_reservation_id(result->id);
          reservation.set_cached_tokens(static_cast<uint32_t>(result->cached_tokens));
          for (int32_t block : result->blocks_to_fill(block_size))
            reservation.add_block_ids(static_cast<uint32_t>(block));
        } else if (result.status().code() == StatusCode::kResourceExhausted) {
          log_event(LogLevel::kInfo, "decode", "no room",
                    {{"node", self->options_.node_id}, {"request_id", id}, {"reason", result.status().message()}});
          const DecodeCounters counters = self->core_->counters();
          reply.mutable_reserve_kv_reply()->mutable_no_room()->set_free_blocks(
              static_cast<uint32_t>(counters.kv_blocks_total - counters.kv_blocks_used));
        } else {
          reply = rpc::error_frame(id, result.status());
        }
        (void)connection->send(reply);
      });
    });
  }

  // A one-way frame: a bad one is logged (an attempt without a usable endpoint still counts, unwatched). One for
  // a reservation that ended already is moot.
  void on_prefill_attempt(const Session& session, const control::PrefillAttempt& attempt) {
    if (session.owned.count(attempt.reservation_id()) == 0 || arrivals_ == nullptr) return;
    const std::string& endpoint = attempt.prefill_transfer_endpoint();
    const bool attempt_ok = attempt.attempt() != 0 && attempt.attempt() <= kMaxPrefillAttempts;
    const bool endpoint_ok = !endpoint.empty() && endpoint.size() <= kMaxEndpointBytes;
    if (!attempt_ok || !endpoint_ok) {
      log_event(LogLevel::kWarning, "decode",
                attempt_ok ? "a PrefillAttempt names no usable writer" : "a PrefillAttempt frame was ignored",
                {{"node", options_.node_id},
                 {"peer", session.connection->peer_name()},
                 {"attempt", attempt.attempt()},
                 {"endpoint_bytes", endpoint.size()},
                 {"limits", "attempt 1.." + std::to_string(kMaxPrefillAttempts) + ", endpoint 1.." +
                                std::to_string(kMaxEndpointBytes) + " bytes"}});
      if (!attempt_ok) return;
    }
    const auto* bytes = reinterpret_cast<const std::byte*>(endpoint.data());
    arrivals_->sent(attempt.reservation_id(), attempt.attempt(),
                    endpoint_ok ? kv::Bytes(bytes, bytes + endpoint.size()) : kv::Bytes());
  }

  // kInvalidArgument unless a StartDecode names its prefill attempt sensibly: none with prefill_locally, else
  // one of the attempts sent.
  static Status check_attempts(const control::StartDecode& start) {
    const std::string sent = std::to_string(start.prefill_attempts());
    if (start.prefill_attempts() > kMaxPrefillAttempts) {
      return invalid_argument("prefill_attempts " + sent + " exceeds " + std::to_string(kMaxPrefillAttempts));
    }
    if (start.prefill_locally() && start.prefill_attempt() != 0) {
      return invalid_argument("a StartDecode with prefill_locally names no prefill_attempt");
    }
    if (!start.prefill_locally() &&
        (start.prefill_attempt() == 0 || start.prefill_attempt() > start.prefill_attempts())) {
      return invalid_argument("prefill_attempt " + std::to_string(start.prefill_attempt()) + " is not one of the " +
                              sent + " prefill attempts sent");
    }
    return Status::ok();
  }

  // Prefill attempts 1..attempts other than `decoded_from` may still write the reservation's prompt blocks: they
  // stay fenced (DecodeCore::fence) until those attempts' streams ended here, or the fence lapses.
  void fence_attempts(uint64_t reservation, uint32_t attempts, uint32_t decoded_from) {
    std::vector<uint32_t> others;
    for (uint32_t attempt = 1; attempt <= attempts; ++attempt) {
      if (attempt != decoded_from) others.push_back(attempt);
    }
    if (others.empty()) return;
    const uint64_t fence = core_->fence(reservation);
    if (arrivals_ == nullptr) return;  // stopping: the fence lapses
    arrivals_->when_ended(reservation, std::move(others),
                          Clock::now() + kMaxReservationLifetime + DecodeCore::kLateWriteGrace,
                          [owner = weak_from_this(), fence](bool) {
                            auto self = owner.lock();
                            if (self == nullptr) return;
                            asio::post(self->io_, [self, fence] {
                              if (self->core_ != nullptr) self->core_->release_fence(fence);
                            });
                          });
  }

  void on_start(Session& session, uint64_t id, const control::StartDecode& start) {
    if (session.owned.count(start.reservation_id()) == 0) {
      (void)session.connection->send(rpc::error_frame(
          id, not_found("reservation " + std::to_string(start.reservation_id()) + " is not held by this connection")));
      return;
    }
    Result<SamplingParams> sampling = node::sampling_from_proto(start.sampling());
    if (!sampling.is_ok()) {
      (void)session.connection->send(rpc::error_frame(id, sampling.status()));
      return;
    }
    StartRequest request;
    Result<node::ConstraintMaker> constraint = constraints_->maker(start.sampling());
    if (!constraint.is_ok()) {
      (void)session.connection->send(rpc::error_frame(id, constraint.status()));
      return;
    }
    request.constraint = std::move(constraint).value();
    if (Status attempts = check_attempts(start); !attempts.is_ok()) {
      (void)session.connection->send(rpc::error_frame(id, attempts));
      return;
    }
    if (start.prefill_locally()) {
      const int entity_dim = model_.config().entity_adaptor ? model_.config().entity_adaptor->entity_dim : 0;
      Result<node::ResolvedEntities> entities =
          node::resolve_entities(start.entities(), entity_dim, entities_ ? &*entities_ : nullptr, "decode");
      if (!entities.is_ok()) {  // the reservation stays: the router cancels it
        (void)session.connection->send(rpc::error_frame(id, entities.status()));
        return;
      }
      request.prefill_locally = true;
      request.entity_vectors = std::move(entities->vectors);
      local_prefills_->Increment();
    }
    session.reservation_of_call[id] = start.reservation_id();
    request.reservation_id = start.reservation_id();
    fence_attempts(start.reservation_id(), start.prefill_attempts(), start.prefill_attempt());
    session.started.insert(start.reservation_id());
    request.first_token = static_cast<int32_t>(std::min<uint32_t>(start.first_token(), INT32_MAX));
    request.sampling = *sampling;
    for (uint32_t token : start.sampling().stop_token_ids()) request.stop_tokens.push_back(static_cast<int32_t>(token));
    std::weak_ptr<rpc::Connection> weak = session.connection;
    if (request.prefill_locally) return start_decoding(weak, id, std::move(request));
    // The prompt's KV came from a prefill node: decode once it has landed here (kv_arrivals.h).
    if (arrivals_ == nullptr) {
      (void)session.connection->send(rpc::error_frame(id, unavailable("the decode node is stopping")));
      return;
    }
    const uint64_t reservation = request.reservation_id;
    const auto asked = Clock::now();
    // The wait holds the server weakly: the server owns the waits (through arrivals_).
    arrivals_->when_landed(
        reservation, start.prefill_attempt(), asked + kKvArrivalWait,
        [owner = weak_from_this(), weak, id, asked, request = std::move(request)](Status landed) mutable {
          auto self = owner.lock();
          if (self == nullptr) return;
          if (landed.is_ok()) {
            self->kv_arrival_wait_->Observe(std::chrono::duration<double>(Clock::now() - asked).count());
          } else if (landed.code() == StatusCode::kDeadlineExceeded) {
            self->kv_arrival_timeouts_->Increment();
          }
          asio::post(self->io_, [self, weak, id, landed = std::move(landed), request = std::move(request)]() mutable {
            auto connection = weak.lock();
            if (connection == nullptr) return;   // its reservations were cancelled when it closed
            if (self->core_ == nullptr) return;  // shut down
            auto session = self->sessions_.find(connection);
            const bool cancelled =
                session == self->sessions_.end() || session->second.owned.count(request.reservation_id) == 0;
            if (!landed.is_ok() && !cancelled) {
              (void)connection->send(rpc::error_frame(id, landed));  // the reservation stays: the router cancels it
              return;
            }
            // The KV landed, or the call was cancelled while it waited: then the core ends its stream as cancelled,
            // the answer every cancelled stream gets.
            self->start_decoding(weak, id, std::move(request));
          });
        });
  }

  // Hands a started call to the engine; its tokens go back as TokenChunks under `id`.
  void start_decoding(const std::weak_ptr<rpc::Connection>& weak, uint64_t id, StartRequest request) {
    const uint64_t reservation = request.reservation_id;
    auto sink = [self = shared_from_this(), weak, id, reservation](
                    std::vector<int32_t> tokens, std::vector<TokenLogprobs> logprobs, FinishReason finish) {
      asio::post(
          self->io_, [self, weak, id, reservation, tokens = std::move(tokens), logprobs = std::move(logprobs), finish] {
            auto connection = weak.lock();
            if (connection == nullptr) return;
            control::Envelope chunk;
            chunk.set_request_id(id);
            for (int32_t token : tokens) chunk.mutable_token_chunk()->add_token_ids(static_cast<uint32_t>(token));
            for (const TokenLogprobs& each : logprobs)
              node::logprobs_to_proto(each, *chunk.mutable_token_chunk()->add_logprobs());
            if (finish != FinishReason::kNone) {
              self->sequences_
                  ->Add({{"role", "decode"}, {"node", self->options_.node_id}, {"reason", finish_reason_name(finish)}})
                  .Increment();
              chunk.mutable_token_chunk()->set_finished(true);
              chunk.mutable_token_chunk()->set_finish_reason(finish_reason_name(finish));
              auto session = self->sessions_.find(connection);
              if (session != self->sessions_.end()) session->second.finish(reservation);
            }
            (void)connection->send(chunk);
          });
    };
    core_->start(std::move(request), std::move(sink));
  }

  asio::io_context& io_;
  const ModelFiles& model_;
  DecodeServerOptions options_;
  std::string fingerprint_;
  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
  std::unique_ptr<DecodeCore> core_;
  std::optional<EntityStore> entities_;
  std::unique_ptr<node::Constraints> constraints_;
  std::unique_ptr<kv::TransferEngine> transfer_;
  std::unique_ptr<KvArrivals> arrivals_;  // takes transfer_'s notifications; destroyed before it
  control::Envelope hello_;
  std::shared_ptr<rpc::Listener> listener_;
  bool draining_ = false;
  int64_t housekeeping_ticks_ = 0;
  asio::steady_timer housekeeping_;
  std::unique_ptr<admin::AdminServer> admin_;
  std::shared_ptr<node::PeerProbe> peer_probe_;
  std::unordered_map<std::shared_ptr<rpc::Connection>, Session> sessions_;
  prometheus::Gauge* blocks_used_ = nullptr;
  prometheus::Gauge* blocks_free_ = nullptr;
  prometheus::Gauge* running_ = nullptr;
  prometheus::Gauge* reserved_ = nullptr;
  prometheus::Family<prometheus::Counter>* sequences_ = nullptr;
  prometheus::Histogram* kv_arrival_wait_ = nullptr;
  prometheus::Counter* kv_arrival_timeouts_ = nullptr;
  prometheus::Counter* local_prefills_ = nullptr;
  MirroredCounter constrained_steps_;
  MirroredCounter constraint_seconds_;
  MirroredCounter json_mask_hits_;
  MirroredCounter json_mask_misses_;
  MirroredCounter sampling_seconds_;
  prometheus::Gauge* blocks_fenced_ = nullptr;
  MirroredCounter fences_lapsed_;
  MirroredCounter streams_completed_;
  MirroredCounter streams_aborted_;
  MirroredCounter writers_died_;
};

// The face's owner: stops the shared server (whose coroutines may outlive this handle briefly).
class ServerHandle final : public DecodeServer {
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

Result<std::unique_ptr<DecodeServer>> DecodeServer::start(asio::io_context& io, const ModelFiles& model,
                                                          DecodeServerOptions options) {
  auto server = std::make_shared<Server>(io, model, std::move(options));
  RECGPT_RETURN_IF_ERROR(server->open());
  server->run();
  return std::unique_ptr<DecodeServer>(std::make_unique<ServerHandle>(std::move(server)));
}

}  // namespace recgpt::decode
