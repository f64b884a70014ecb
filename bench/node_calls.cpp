#include "bench/node_calls.h"

#include <signal.h>

#include <algorithm>
#include <regex>

namespace recgpt::bench {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kStartTimeout = std::chrono::seconds(60);
constexpr auto kCallTimeout = std::chrono::seconds(300);

}  // namespace

NodeProcess::~NodeProcess() {
  process.kill(SIGTERM);
  (void)process.wait(Clock::now() + std::chrono::seconds(10));
}

Result<std::unique_ptr<NodeProcess>> start_node_process(const std::vector<std::string>& argv, int port_lines) {
  auto node = std::make_unique<NodeProcess>();
  RECGPT_ASSIGN_OR_RETURN(node->process, Subprocess::spawn(argv));
  for (int i = 0; i < port_lines; ++i) {
    RECGPT_ASSIGN_OR_RETURN(std::string line, node->process.read_line(Clock::now() + kStartTimeout));
    std::smatch match;
    if (!std::regex_search(line, match, std::regex(" port=(\\d+)"))) {
      return unavailable("`" + argv.at(1) + "` said '" + line + "' instead of its ports");
    }
    node->ports.push_back(static_cast<uint16_t>(std::stoi(match[1])));
  }
  return node;
}

boost::asio::awaitable<CallTimes> timed_call(node::AgentCallClient& client, const node::AgentCall& call) {
  CallTimes times;
  const auto start = Clock::now();
  auto reserved = co_await client.reserve(call);
  if (!reserved.is_ok() || !reserved->reserve_kv_reply().has_reservation()) {
    times.status = reserved.is_ok() ? resource_exhausted("no room: " + reserved->DebugString()) : reserved.status();
    co_return times;
  }
  const control::Reservation reservation = reserved->reserve_kv_reply().reservation();
  auto done = co_await client.prefill(call, reservation, Clock::now() + kCallTimeout);
  if (!done.is_ok() || !done->has_prefill_done()) {
    times.status = done.is_ok() ? unavailable(done->DebugString()) : done.status();
    co_return times;
  }
  auto last = Clock::now();
  times.time_to_first_token = std::chrono::duration<double>(last - start).count();
  times.tokens = 1;
  auto stream = client.start(call, reservation.reservation_id(), done->prefill_done().first_token());
  if (!stream.is_ok()) {
    times.status = stream.status();
    co_return times;
  }
  for (;;) {
    auto chunk = co_await client.next_chunk(*stream, Clock::now() + kCallTimeout);
    if (!chunk.is_ok()) {
      times.status = chunk.status();
      co_return times;
    }
    const auto now = Clock::now();
    // A chunk carries the tokens of one decode step (one per sequence): each gap is one inter-token latency.
    for (int i = 0; i < chunk->token_ids_size(); ++i) {
      times.inter_token.push_back(std::chrono::duration<double>(now - last).count() / chunk->token_ids_size());
    }
    times.tokens += chunk->token_ids_size();
    last = now;
    if (chunk->finished()) {
      times.total = std::chrono::duration<double>(now - start).count();
      co_return times;
    }
  }
}

}  // namespace recgpt::bench
