// One agent call across the cluster (../shared/DESIGN.md §2): rank the nodes, reserve KV on the best decode node
// that has room, have the best prefill node fill it (a failed prefill is retried once on the next prefill node),
// start decoding and hand the tokens to the caller as they stream. Every step has the call's deadline; a
// reservation, prefill request or stream the call leaves behind is cancelled on its node (a prefill request also
// when the decode node holding its blocks goes away). When no prefill node can take the call
// (none healthy, or the retry failed too), the decode node prefills it locally: the colocated fallback.
//
// Threading: the cluster's io_context; a coroutine per call.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "common/rpc/connection.h"
#include "common/status.h"
#include "engine/token_logprobs.h"
#include "node/agent_call.h"
#include "router/cluster.h"

namespace recgpt::router {

struct CallOutcome {
  std::string finish_reason;  // "stop", "length", or "cancelled" (by the sink or the caller)
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;  // prompt tokens whose KV was reused (the prefill node's prefix cache)
  std::string prefill_node;
  std::string decode_node;
  int prefill_index = -1;  // the cluster's index of the prefill node that computed it; -1: the decode node did
  int decode_index = -1;
};

// Receives each chunk of generated tokens (the first token included), e.g. to write them to the client before
// the next chunk is read, with one TokenLogprobs per token when the call's sampling asked for them (else none);
// returns false to end the call early (a stop string matched). Runs on the io thread.
using TokenSink =
    std::function<boost::asio::awaitable<bool>(std::vector<int32_t> tokens, std::vector<TokenLogprobs> logprobs)>;

// Lets the caller end a call from outside (the client went away): cancel() stops it at its next step and sends
// Cancel to the node holding its reservation or stream.
class CallCancel {
 public:
  void cancel() {
    cancelled_ = true;
    if (on_cancel_) std::exchange(on_cancel_, nullptr)();
  }
  bool cancelled() const { return cancelled_; }
  void set_on_cancel(std::function<void()> on_cancel) { on_cancel_ = std::move(on_cancel); }

 private:
  bool cancelled_ = false;
  std::function<void()> on_cancel_;
};

struct CallPlan {
  node::AgentCall call;
  node::EntityShape entities;
  std::vector<uint64_t> block_hashes;  // the prompt's full blocks, for placement
  int block_size = 16;
  int32_t vocab_size = 0;  // the model's: the nodes' logprobs name tokens below it
  rpc::Deadline deadline;
  int preferred_prefill = -1;  // workflow affinity (placement_policy.h); -1: none
  int preferred_decode = -1;
};

// Fills in what follows from a call and its deadline: the nodes' deadlines (unix ms), the entity shape, the
// block size and the prompt's block hashes (for placement).
void complete_plan(CallPlan& plan, const node::EntityShape& entities, int block_size, rpc::Deadline deadline);

// Whether a call's error is the caller's fault, not the node's (kInvalidArgument, kNotFound): retrying it
// elsewhere would fail the same way.
bool is_call_error(const Status& status);

// Whether a call that failed after generating `generated` can go on on another node pair from those tokens
// (migration): some of its max_new_tokens are left, and none of them is the entity token (whose vector the
// continued prompt would lack).
bool can_continue(const CallPlan& plan, std::span<const int32_t> generated);
// `plan` continued after the tokens it generated: they end its prompt, its sampler draws after theirs (and its
// constraint replays them), and it generates the rest of its max_new_tokens, by the same deadline.
CallPlan continued_plan(const CallPlan& plan, std::span<const int32_t> generated);

// Errors: kResourceExhausted when no decode node has room; kUnavailable when no node can take the call (none
// healthy, or the retries failed); kDeadlineExceeded at the deadline; kInvalidArgument or kNotFound as a node
// refused the call's content (e.g. an entity id its store lacks). A cancelled call returns its outcome so far.
boost::asio::awaitable<Result<CallOutcome>> run_call(Cluster& cluster, const PolicyOptions& policy, uint64_t counter,
                                                     const CallPlan& plan, const TokenSink& sink, CallCancel& cancel);

}  // namespace recgpt::router
