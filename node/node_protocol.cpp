#include "node/node_protocol.h"

#include <google/protobuf/stubs/logging.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <charconv>
#include <mutex>
#include <optional>

#include "common/log.h"
#include "common/rpc/listener.h"

namespace recgpt::node {

kv::KvLayoutDescription describe_kv_cache(const KvCache& cache) {
  const KvCacheConfig& config = cache.config();
  kv::KvLayoutDescription layout;
  layout.num_layers = config.num_layers;
  layout.num_kv_heads = config.num_kv_heads;
  layout.head_dim = config.head_dim;
  layout.block_size = config.block_size;
  layout.dtype = std::string(dtype_name(config.dtype));
  layout.num_blocks = config.num_blocks;
  layout.array_stride_bytes = cache.array_stride_bytes();
  layout.key_scale = config.key_scale;
  layout.value_scale = config.value_scale;
  return layout;
}

kv::MemoryRegion kv_cache_region(KvCache& cache) {
  const bool on_device = cache.cuda_device() >= 0;
  return {cache.storage_data(), cache.storage_bytes(), on_device ? kv::MemoryKind::kCuda : kv::MemoryKind::kHost,
          cache.cuda_device()};
}

control::KvLayout kv_layout_to_proto(const kv::KvLayoutDescription& layout) {
  control::KvLayout proto;
  proto.set_num_layers(static_cast<uint32_t>(layout.num_layers));
  proto.set_num_blocks(static_cast<uint32_t>(layout.num_blocks));
  proto.set_block_size(static_cast<uint32_t>(layout.block_size));
  proto.set_num_kv_heads(static_cast<uint32_t>(layout.num_kv_heads));
  proto.set_head_dim(static_cast<uint32_t>(layout.head_dim));
  proto.set_dtype(layout.dtype);
  proto.set_array_stride_bytes(layout.array_stride_bytes);
  proto.set_key_scale(layout.key_scale);
  proto.set_value_scale(layout.value_scale);
  return proto;
}

kv::KvLayoutDescription kv_layout_from_proto(const control::KvLayout& proto) {
  kv::KvLayoutDescription layout;
  layout.num_layers = static_cast<int>(std::min<uint32_t>(proto.num_layers(), INT32_MAX));
  layout.num_kv_heads = static_cast<int>(std::min<uint32_t>(proto.num_kv_heads(), INT32_MAX));
  layout.head_dim = static_cast<int>(std::min<uint32_t>(proto.head_dim(), INT32_MAX));
  layout.block_size = static_cast<int>(std::min<uint32_t>(proto.block_size(), INT32_MAX));
  layout.dtype = proto.dtype();
  layout.num_blocks = proto.num_blocks();
  layout.array_stride_bytes = proto.array_stride_bytes();
  layout.key_scale = proto.key_scale();
  layout.value_scale = proto.value_scale();
  return layout;
}

std::string kv_stream_id(KvStreamName name) {
  return "reservation-" + std::to_string(name.reservation) + "." + std::to_string(name.attempt);
}

std::optional<KvStreamName> parse_kv_stream_id(std::string_view stream_id) {
  constexpr std::string_view kPrefix = "reservation-";
  if (stream_id.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  // Plain decimal digits only: from_chars alone would also take a leading '-'.
  const auto number = [](std::string_view digits, auto& value) {
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string_view::npos) return false;
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    return error == std::errc() && end == digits.data() + digits.size();
  };
  const std::string_view rest = stream_id.substr(kPrefix.size());
  const size_t dot = rest.find('.');
  KvStreamName name;
  if (dot == std::string_view::npos || !number(rest.substr(0, dot), name.reservation) ||
      !number(rest.substr(dot + 1), name.attempt)) {
    return std::nullopt;
  }
  return name;
}

control::Envelope make_hello(control::Role role, const std::string& node_id, const std::string& model_fingerprint,
                             const std::string& transfer_backend, const KvCache& cache) {
  control::Envelope envelope;
  control::Hello& hello = *envelope.mutable_hello();
  hello.set_role(role);
  hello.set_node_id(node_id);
  hello.set_model_fingerprint(model_fingerprint);
  hello.set_transfer_backend(transfer_backend);
  hello.set_protocol_version(rpc::kProtocolVersion);
  *hello.mutable_kv_layout() = kv_layout_to_proto(describe_kv_cache(cache));
  return envelope;
}

boost::asio::awaitable<Result<std::shared_ptr<rpc::Connection>>> greet(
    const std::string& host, uint16_t port, control::Role role, const std::string& model_fingerprint,
    rpc::Connection::FrameHandler on_frame, rpc::Deadline deadline, control::Hello* their_hello,
    rpc::Connection::ClosedHandler on_closed) {
  auto connection = co_await rpc::connect(host, port, deadline);
  if (!connection.is_ok()) co_return connection.status();
  if (!on_closed) on_closed = [](const Status&) {};
  (*connection)->start(std::move(on_frame), std::move(on_closed));
  control::Envelope mine;
  mine.mutable_hello()->set_role(role);
  mine.mutable_hello()->set_model_fingerprint(model_fingerprint);
  mine.mutable_hello()->set_protocol_version(rpc::kProtocolVersion);
  auto reply = co_await (*connection)->call(mine, deadline);
  if (!reply.is_ok()) {
    (*connection)->close(Status::ok());
    co_return reply.status();
  }
  if (!reply->has_hello()) {
    (*connection)->close(Status::ok());
    co_return failed_precondition("the node at " + host + ":" + std::to_string(port) +
                                  " refused the hello: " + reply->error().message());
  }
  if (their_hello != nullptr) *their_hello = reply->hello();
  co_return *connection;
}

bool answer_first_frame(rpc::Connection& connection, const control::Envelope& frame, const control::Envelope& our_hello,
                        const std::string& model_fingerprint) {
  Status greeted = frame.has_hello() ? rpc::check_peer_hello(frame.hello(), model_fingerprint)
                                     : failed_precondition("the first frame must be a hello");
  if (!greeted.is_ok()) {
    log_event(LogLevel::kWarning, "node", "hello refused",
              {{"peer", connection.peer_name()}, {"reason", greeted.message()}});
    (void)connection.send(rpc::error_frame(frame.request_id(), greeted));
    connection.close_after_sending(greeted);
    return false;
  }
  control::Envelope reply = our_hello;
  reply.set_request_id(frame.request_id());
  (void)connection.send(reply);
  return true;
}

void route_protobuf_logs() {
  static std::once_flag once;
  std::call_once(once, [] {
    google::protobuf::SetLogHandler(
        [](google::protobuf::LogLevel, const char* file, int line, const std::string& text) {
          log_event(LogLevel::kDebug, "protobuf", text, {{"file", file}, {"line", line}});
        });
  });
}

void call_when_idle(boost::asio::io_context& io, std::chrono::milliseconds within, std::function<bool()> idle,
                    std::function<void()> drained) {
  namespace asio = boost::asio;
  asio::co_spawn(
      io,
      [within, idle = std::move(idle), drained = std::move(drained)]() -> asio::awaitable<void> {
        asio::steady_timer timer(co_await asio::this_coro::executor);
        const auto give_up = std::chrono::steady_clock::now() + within;
        while (!idle() && std::chrono::steady_clock::now() < give_up) {
          timer.expires_after(std::chrono::milliseconds(50));
          boost::system::error_code ignored;
          co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
        }
        drained();
      },
      asio::detached);
}

std::chrono::steady_clock::time_point deadline_from_unix_ms(uint64_t deadline_unix_ms,
                                                            std::chrono::milliseconds fallback,
                                                            std::chrono::milliseconds longest) {
  const auto now = std::chrono::steady_clock::now();
  if (deadline_unix_ms == 0) return now + std::min(fallback, longest);
  const auto unix_now =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch());
  const auto wanted = std::chrono::milliseconds(static_cast<int64_t>(std::min<uint64_t>(deadline_unix_ms, INT64_MAX)));
  return now + std::clamp<std::chrono::milliseconds>(wanted - unix_now, std::chrono::milliseconds(0), longest);
}

Result<SamplingParams> sampling_from_proto(const control::SamplingParams& proto) {
  if (proto.logit_bias_tokens_size() != proto.logit_bias_values_size()) {
    return invalid_argument("sampling logit_bias has " + std::to_string(proto.logit_bias_tokens_size()) +
                            " tokens but " + std::to_string(proto.logit_bias_values_size()) + " values");
  }
  SamplingParams sampling;
  sampling.temperature = proto.temperature();
  sampling.top_k = static_cast<int>(proto.top_k());
  sampling.top_p = proto.top_p() == 0 ? 1.0f : proto.top_p();
  sampling.repetition_penalty = proto.repetition_penalty() == 0 ? 1.0f : proto.repetition_penalty();
  sampling.seed = proto.seed();
  sampling.first_draw = proto.first_draw();
  sampling.frequency_penalty = proto.frequency_penalty();
  sampling.presence_penalty = proto.presence_penalty();
  sampling.logprobs = proto.logprobs();
  // Clamped into int range; SamplingParams::validate() refuses anything above kMaxTopLogprobs.
  sampling.top_logprobs = static_cast<int>(std::min<uint32_t>(proto.top_logprobs(), INT32_MAX));
  sampling.min_tokens = static_cast<int>(std::min<uint32_t>(proto.min_tokens(), INT32_MAX));
  // Tokens past INT32_MAX become -1, which validate() refuses.
  for (int i = 0; i < proto.logit_bias_tokens_size(); ++i) {
    const uint32_t token = proto.logit_bias_tokens(i);
    sampling.logit_bias.emplace_back(token > INT32_MAX ? -1 : static_cast<int32_t>(token), proto.logit_bias_values(i));
  }
  RECGPT_RETURN_IF_ERROR(sampling.validate());
  return sampling;
}

void logprobs_to_proto(const TokenLogprobs& logprobs, control::TokenLogprobs& proto) {
  proto.set_logprob(logprobs.logprob);
  for (const TokenLogprob& entry : logprobs.top) {
    proto.add_top_token_ids(static_cast<uint32_t>(entry.token));
    proto.add_top_logprobs(entry.logprob);
  }
}

Result<TokenLogprobs> logprobs_from_proto(const control::TokenLogprobs& proto, int32_t vocab_size) {
  if (proto.top_token_ids_size() != proto.top_logprobs_size()) {
    return invalid_argument("token logprobs: " + std::to_string(proto.top_token_ids_size()) + " top tokens but " +
                            std::to_string(proto.top_logprobs_size()) + " top logprobs");
  }
  if (proto.top_token_ids_size() > SamplingParams::kMaxTopLogprobs) {
    return invalid_argument("token logprobs: more than " + std::to_string(SamplingParams::kMaxTopLogprobs) +
                            " top tokens");
  }
  TokenLogprobs logprobs;
  logprobs.logprob = proto.logprob();
  for (int i = 0; i < proto.top_token_ids_size(); ++i) {
    if (proto.top_token_ids(i) >= static_cast<uint32_t>(vocab_size)) {
      return invalid_argument("token logprobs: top token " + std::to_string(proto.top_token_ids(i)) +
                              " is outside the vocabulary");
    }
    logprobs.top.push_back({static_cast<int32_t>(proto.top_token_ids(i)), proto.top_logprobs(i)});
  }
  return logprobs;
}

void send_load_reports(const control::LoadReport& load, PrefixIndexJournal& journal,
                       std::span<const ReportPeer> peers) {
  const PrefixIndexJournal::Changes changes = journal.take();
  // Taken after the changes: a hash that changes in between is in both, which a peer applies harmlessly.
  std::optional<std::vector<uint64_t>> snapshot;
  control::Envelope report;
  for (const ReportPeer& peer : peers) {
    control::LoadReport& body = *report.mutable_load_report();
    body = load;
    if (*peer.has_index) {
      body.mutable_prefix_blocks_added()->Assign(changes.added.begin(), changes.added.end());
      body.mutable_prefix_blocks_evicted()->Assign(changes.evicted.begin(), changes.evicted.end());
    } else {
      if (!snapshot) snapshot = journal.snapshot();
      body.set_prefix_blocks_snapshot(true);
      body.mutable_prefix_blocks_added()->Assign(snapshot->begin(), snapshot->end());
    }
    // A report that did not go (too large, closed) loses changes: the next one is a snapshot.
    *peer.has_index = peer.connection->send(report).is_ok();
  }
}

}  // namespace recgpt::node
