// What the prefill and decode services share around the control protocol: this node's Hello, the answer to a
// peer's Hello, KV layouts between the engine, kv_transfer and the wire, and deadlines on the wire.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "common/rpc/connection.h"
#include "common/status.h"
#include "engine/kv_cache.h"
#include "engine/prefix_index_journal.h"
#include "engine/sampler.h"
#include "engine/token_logprobs.h"
#include "kv_transfer/kv_layout.h"
#include "kv_transfer/transfer_engine.h"

namespace boost::asio {
class io_context;
}

namespace recgpt::node {

// The description kv_transfer needs of an engine KV cache (its memory is the registered region).
kv::KvLayoutDescription describe_kv_cache(const KvCache& cache);
// The cache's whole memory as a region to register with a transfer engine (host or CUDA device memory).
kv::MemoryRegion kv_cache_region(KvCache& cache);
control::KvLayout kv_layout_to_proto(const kv::KvLayoutDescription& layout);
kv::KvLayoutDescription kv_layout_from_proto(const control::KvLayout& proto);
// The request id of the KV stream a prefill node writes into a decode node's reservation on the router's
// attempt-th try ("reservation-N.A"), and back (nullopt for any other text).
struct KvStreamName {
  uint64_t reservation = 0;
  uint32_t attempt = 0;

  bool operator==(const KvStreamName&) const = default;
};
std::string kv_stream_id(KvStreamName name);
std::optional<KvStreamName> parse_kv_stream_id(std::string_view stream_id);

// A Hello frame for this node (transfer endpoint and region key are the caller's to add).
control::Envelope make_hello(control::Role role, const std::string& node_id, const std::string& model_fingerprint,
                             const std::string& transfer_backend, const KvCache& cache);

// Connects to a node's control port, starts the connection with `on_frame` (and `on_closed`) and exchanges hellos as
// `role` with `model_fingerprint`, all within the deadline. The started connection, with the node's Hello in
// `their_hello` (optional); kFailedPrecondition naming the node when it refused the hello; connect or call errors as
// they came.
boost::asio::awaitable<Result<std::shared_ptr<rpc::Connection>>> greet(
    const std::string& host, uint16_t port, control::Role role, const std::string& model_fingerprint,
    rpc::Connection::FrameHandler on_frame, rpc::Deadline deadline, control::Hello* their_hello,
    rpc::Connection::ClosedHandler on_closed = nullptr);

// Answers a connection's frame while its peer is not greeted yet. A Hello that passes check_peer_hello gets
// `our_hello` under its request id and returns true; anything else gets an Error, the connection closes once it
// left, and false is returned.
bool answer_first_frame(rpc::Connection& connection, const control::Envelope& frame, const control::Envelope& our_hello,
                        const std::string& model_fingerprint);

// Routes libprotobuf's own log lines (e.g. a peer's string field with invalid UTF-8) into our structured log at
// debug level, so a hostile peer cannot flood stderr. Idempotent.
void route_protobuf_logs();

// One round of a node's LoadReports: `load` plus its prefix index, to every peer in `peers` (greeted ones). A
// peer whose `has_index` is false gets the whole index (prefix_blocks_snapshot) and has it set; the others get
// the journal's changes since the previous round. Call once per round: it takes the journal's changes.
struct ReportPeer {
  rpc::Connection* connection = nullptr;
  bool* has_index = nullptr;
};
void send_load_reports(const control::LoadReport& load, PrefixIndexJournal& journal, std::span<const ReportPeer> peers);

// A call's sampling parameters from the wire: 0 for top_p or repetition_penalty means off (1). kInvalidArgument
// naming the field for what SamplingParams::validate() refuses and for logit_bias lists of different lengths
// (the vocabulary is the engine's to check: validate(vocab_size)).
Result<SamplingParams> sampling_from_proto(const control::SamplingParams& proto);

// One token's logprobs on the wire (PrefillDone, TokenChunk).
void logprobs_to_proto(const TokenLogprobs& logprobs, control::TokenLogprobs& proto);
// kInvalidArgument for a peer's malformed entry: top ids and logprobs of different counts, more than
// kMaxTopLogprobs of them, or a top token outside the vocabulary.
Result<TokenLogprobs> logprobs_from_proto(const control::TokenLogprobs& proto, int32_t vocab_size);

// A node's graceful end: polls `idle` every 50 ms on `io` and runs `drained` once it holds or `within` passed.
void call_when_idle(boost::asio::io_context& io, std::chrono::milliseconds within, std::function<bool()> idle,
                    std::function<void()> drained);

// A deadline given on the wire in Unix milliseconds, as a steady-clock instant: `fallback` from now when 0, and
// never later than `longest` from now (a peer's clock or a bad value cannot pin resources for long).
std::chrono::steady_clock::time_point deadline_from_unix_ms(uint64_t deadline_unix_ms,
                                                            std::chrono::milliseconds fallback,
                                                            std::chrono::milliseconds longest);

}  // namespace recgpt::node
