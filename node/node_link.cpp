#include "node/node_link.h"

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "common/rpc/listener.h"
#include "node/node_protocol.h"

namespace recgpt::node {

namespace asio = boost::asio;

asio::awaitable<Result<std::shared_ptr<NodeLink>>> NodeLink::open(const std::string& host, uint16_t port,
                                                                  control::Role role,
                                                                  const std::string& model_fingerprint,
                                                                  rpc::Deadline deadline, LoadHandler on_load,
                                                                  ClosedHandler on_closed) {
  // Frames may come before the link exists (a LoadReport right after the hello): they reach it through `target`.
  auto target = std::make_shared<std::weak_ptr<NodeLink>>();
  control::Hello hello;
  // Named, not temporaries in the co_await: GCC 12 mishandles temporaries passed to a coroutine there.
  rpc::Connection::FrameHandler on_frame = [target](control::Envelope envelope) {
    if (auto link = target->lock()) link->on_frame(std::move(envelope));
  };
  rpc::Connection::ClosedHandler on_link_closed = [target](const Status& why) {
    if (auto link = target->lock()) link->on_closed(why);
  };
  auto connection = co_await greet(host, port, role, model_fingerprint, std::move(on_frame), deadline, &hello,
                                   std::move(on_link_closed));
  if (!connection.is_ok()) co_return connection.status();
  std::shared_ptr<NodeLink> link(new NodeLink(*connection));
  link->hello_ = std::move(hello);
  link->on_load_ = std::move(on_load);
  link->on_closed_ = std::move(on_closed);
  *target = link;
  if (!link->is_open()) link->on_closed(link->close_reason());  // closed during the hello
  co_return link;
}

NodeLink::~NodeLink() { connection_->close(Status::ok()); }

void NodeLink::close(const Status& why) { connection_->close(why); }

asio::awaitable<Result<control::Envelope>> NodeLink::call(control::Envelope request, rpc::Deadline deadline) {
  auto self = shared_from_this();
  co_return co_await connection_->call(std::move(request), deadline);
}

asio::awaitable<Result<control::Envelope>> NodeLink::call(uint64_t id, control::Envelope request,
                                                          rpc::Deadline deadline) {
  auto self = shared_from_this();
  co_return co_await connection_->call(id, std::move(request), deadline);
}

uint64_t NodeLink::watch_close(std::function<void()> watch) {
  const uint64_t id = next_watch_++;
  if (!is_open()) {
    watch();
    return id;
  }
  close_watches_.emplace(id, std::move(watch));
  return id;
}

Status NodeLink::send(const control::Envelope& frame) { return connection_->send(frame); }

Result<uint64_t> NodeLink::start_stream(control::Envelope request) {
  const uint64_t id = connection_->new_request_id();
  request.set_request_id(id);
  streams_[id];
  Status sent = send(request);
  if (!sent.is_ok()) {
    streams_.erase(id);
    return sent;
  }
  return id;
}

asio::awaitable<Result<control::TokenChunk>> NodeLink::next_chunk(uint64_t id, rpc::Deadline deadline) {
  auto self = shared_from_this();
  for (;;) {
    auto it = streams_.find(id);
    if (it == streams_.end()) co_return not_found("no token stream " + std::to_string(id) + " on this link");
    Stream& stream = it->second;
    if (!stream.chunks.empty()) {
      control::TokenChunk chunk = std::move(stream.chunks.front());
      stream.chunks.pop_front();
      if (chunk.finished()) streams_.erase(id);
      co_return chunk;
    }
    if (!stream.error.is_ok()) {
      Status error = stream.error;
      streams_.erase(id);
      co_return error;
    }
    if (!connection_->is_open()) {
      co_return unavailable("the node " + peer_name() + " went away: " + connection_->close_reason().message());
    }
    if (rpc::Clock::now() >= deadline) co_return deadline_exceeded("no token chunk before the deadline");
    // Wake at a chunk, at the deadline, or when the link closes.
    asio::steady_timer wake(co_await asio::this_coro::executor, deadline);
    stream.wake = &wake;
    boost::system::error_code ignored;
    co_await wake.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
    auto again = streams_.find(id);
    if (again != streams_.end()) again->second.wake = nullptr;
  }
}

void NodeLink::on_frame(control::Envelope envelope) {
  if (envelope.has_load_report()) {
    if (on_load_) on_load_(envelope.load_report());
    return;
  }
  if (!envelope.has_token_chunk() && !envelope.has_error()) return;  // stray replies of calls that timed out
  auto it = streams_.find(envelope.request_id());
  if (it == streams_.end()) return;  // a stream we ended, or a call's reply (call() takes those)
  if (envelope.has_error()) {
    it->second.error = rpc::status_of(envelope.error());
  } else {
    it->second.chunks.push_back(std::move(*envelope.mutable_token_chunk()));
  }
  if (it->second.wake != nullptr) it->second.wake->cancel();
}

void NodeLink::on_closed(const Status& why) {
  for (auto& [id, stream] : streams_) {
    if (stream.wake != nullptr) stream.wake->cancel();
  }
  for (auto& [id, watch] : std::exchange(close_watches_, {})) watch();
  if (on_closed_) std::exchange(on_closed_, nullptr)(why);
}

}  // namespace recgpt::node
