// A control-plane connection: length-prefixed protobuf frames (frame_codec.h) over one TCP socket, calls
// multiplexed by request id, with deadlines. Built on Boost.Asio coroutines: include this only where the
// networking lives (nodes, router), never from engine or kv_transfer headers.
//
// Threading: a Connection belongs to one executor (an io_context run by one thread, or a strand); call every
// method from it. Nothing blocks a thread: waits are co_awaited.
//
// Frames: an incoming frame whose request id is a call of ours in flight completes that call (its first reply);
// every other frame goes to the frame handler. A malformed or oversized frame, a socket error or close() ends
// the connection once: calls in flight fail with kUnavailable carrying the reason, the closed handler runs.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "common/rpc/frame_codec.h"
#include "common/status.h"
#include "proto/control.pb.h"

namespace recgpt::rpc {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  using FrameHandler = std::function<void(control::Envelope)>;
  using ClosedHandler = std::function<void(const Status&)>;

  // `peer_name` names the peer in errors and logs ("prefill-0 at 127.0.0.1:7001").
  static std::shared_ptr<Connection> make(boost::asio::ip::tcp::socket socket, std::string peer_name,
                                          uint32_t max_frame_bytes = kDefaultMaxFrameBytes);

  // Starts reading. Call once, before anything else.
  void start(FrameHandler on_frame, ClosedHandler on_closed);

  // Queues one frame; frames leave in the order of these calls. kInvalidArgument for a frame over the limit
  // (the connection stays), kUnavailable once closed.
  Status send(const control::Envelope& envelope);

  // Sends `request` under a fresh request id and waits for the first frame carrying that id. At the deadline:
  // kDeadlineExceeded, and a late reply is dropped.
  boost::asio::awaitable<Result<control::Envelope>> call(control::Envelope request, Deadline deadline);
  // Like call(), under `id` (from new_request_id()): the caller can name the call while it waits, in a Cancel
  // frame to the peer or to abandon_call().
  boost::asio::awaitable<Result<control::Envelope>> call(uint64_t id, control::Envelope request, Deadline deadline);
  // Ends the call waiting under `id` now: it returns `why` (not ok), and a reply that comes later goes to the
  // frame handler as any unknown id's does. No-op when no call waits under `id`.
  void abandon_call(uint64_t id, const Status& why);

  // A fresh request id, for exchanges the caller follows itself (a token stream: many frames, one id).
  uint64_t new_request_id() { return next_request_id_++; }

  // Ends the connection (idempotent): the socket closes, calls in flight fail with `why`.
  void close(const Status& why);
  // Like close(), once the frames already queued have left (an Error answer before hanging up).
  void close_after_sending(const Status& why);
  bool is_open() const { return open_; }
  const std::string& peer_name() const { return peer_name_; }
  // Why the connection ended; ok while open.
  const Status& close_reason() const { return close_reason_; }

 private:
  struct PendingCall {
    explicit PendingCall(const boost::asio::any_io_executor& executor) : wake(executor) {}
    boost::asio::steady_timer wake;  // cancelled when the reply (or the end) comes
    std::optional<control::Envelope> reply;
    Status failure;
  };

  Connection(boost::asio::ip::tcp::socket socket, std::string peer_name, uint32_t max_frame_bytes);
  boost::asio::awaitable<void> read_loop();
  boost::asio::awaitable<void> write_loop();
  void dispatch(control::Envelope envelope);

  boost::asio::ip::tcp::socket socket_;
  const std::string peer_name_;
  const uint32_t max_frame_bytes_;
  FrameHandler on_frame_;
  ClosedHandler on_closed_;
  bool open_ = true;
  Status close_reason_;
  bool writing_ = false;
  std::optional<Status> close_when_sent_;
  std::deque<std::string> outbox_;
  uint64_t next_request_id_ = 1;
  std::unordered_map<uint64_t, std::shared_ptr<PendingCall>> pending_;
};

// Connects to host:port within the deadline (kDeadlineExceeded, or kUnavailable with the socket's error).
// The connection is not started.
boost::asio::awaitable<Result<std::shared_ptr<Connection>>> connect(const std::string& host, uint16_t port,
                                                                    Deadline deadline,
                                                                    uint32_t max_frame_bytes = kDefaultMaxFrameBytes);

}  // namespace recgpt::rpc
