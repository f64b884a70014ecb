// The caller's connection to one node (prefill or decode), greeted: calls with one reply (ReserveKv,
// PrefillRequest), token streams (StartDecode -> TokenChunk frames under one id), one-way frames (Cancel), and
// the node's LoadReports. What the router keeps per node; AgentCallClient pairs two.
//
// Threading: one executor (the connection's); every method is called from it. Nothing blocks a thread.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include "common/rpc/connection.h"
#include "common/status.h"
#include "proto/control.pb.h"

namespace recgpt::node {

class NodeLink : public std::enable_shared_from_this<NodeLink> {
 public:
  using LoadHandler = std::function<void(const control::LoadReport&)>;
  using ClosedHandler = std::function<void(const Status&)>;

  // Connects and exchanges hellos as `role` with `model_fingerprint`, within the deadline. Handlers (optional)
  // run on the executor: every LoadReport, and once when the link closes (whatever closed it).
  static boost::asio::awaitable<Result<std::shared_ptr<NodeLink>>> open(
      const std::string& host, uint16_t port, control::Role role, const std::string& model_fingerprint,
      rpc::Deadline deadline, LoadHandler on_load = nullptr, ClosedHandler on_closed = nullptr);
  ~NodeLink();

  const control::Hello& hello() const { return hello_; }
  bool is_open() const { return connection_->is_open(); }
  const Status& close_reason() const { return connection_->close_reason(); }
  const std::string& peer_name() const { return connection_->peer_name(); }

  // The first reply to `request`; kDeadlineExceeded, or kUnavailable when the link closed.
  boost::asio::awaitable<Result<control::Envelope>> call(control::Envelope request, rpc::Deadline deadline);
  // Under `id` (from new_request_id()), to name the call in a Cancel frame or to abandon_call() it while it waits.
  boost::asio::awaitable<Result<control::Envelope>> call(uint64_t id, control::Envelope request,
                                                         rpc::Deadline deadline);
  uint64_t new_request_id() { return connection_->new_request_id(); }
  // Ends the call waiting under `id` now with `why` (rpc::Connection::abandon_call).
  void abandon_call(uint64_t id, const Status& why) { connection_->abandon_call(id, why); }
  Status send(const control::Envelope& frame);

  // Runs `watch` once when the link closes (at once, here, if it is closed), unless unwatch_close() came first.
  // Returns the watch's id.
  uint64_t watch_close(std::function<void()> watch);
  void unwatch_close(uint64_t watch) { close_watches_.erase(watch); }

  // Sends `request` under a fresh id whose replies are a token stream; returns the id.
  Result<uint64_t> start_stream(control::Envelope request);
  // The stream's next chunk; kDeadlineExceeded at the deadline, kUnavailable once the link closed, the node's
  // error when it answered the stream with an Error frame. After the chunk with `finished` or an error, the
  // stream is forgotten.
  boost::asio::awaitable<Result<control::TokenChunk>> next_chunk(uint64_t stream, rpc::Deadline deadline);
  // Forgets a stream (its later chunks are dropped).
  void end_stream(uint64_t stream) { streams_.erase(stream); }

  // Ends the link; calls in flight fail with `why` (unavailable when ok).
  void close(const Status& why = Status::ok());

 private:
  struct Stream {
    std::deque<control::TokenChunk> chunks;
    Status error;                               // the node refused or ended the stream with an Error frame
    boost::asio::steady_timer* wake = nullptr;  // set while next_chunk waits
  };

  explicit NodeLink(std::shared_ptr<rpc::Connection> connection) : connection_(std::move(connection)) {}
  void on_frame(control::Envelope envelope);
  void on_closed(const Status& why);

  std::shared_ptr<rpc::Connection> connection_;
  control::Hello hello_;
  LoadHandler on_load_;
  ClosedHandler on_closed_;
  std::unordered_map<uint64_t, Stream> streams_;
  std::unordered_map<uint64_t, std::function<void()>> close_watches_;
  uint64_t next_watch_ = 1;
};

}  // namespace recgpt::node
