#include "common/rpc/connection.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <vector>

namespace recgpt::rpc {

namespace asio = boost::asio;
using asio::ip::tcp;

std::shared_ptr<Connection> Connection::make(tcp::socket socket, std::string peer_name, uint32_t max_frame_bytes) {
  return std::shared_ptr<Connection>(new Connection(std::move(socket), std::move(peer_name), max_frame_bytes));
}

Connection::Connection(tcp::socket socket, std::string peer_name, uint32_t max_frame_bytes)
    : socket_(std::move(socket)), peer_name_(std::move(peer_name)), max_frame_bytes_(max_frame_bytes) {
  boost::system::error_code ignored;
  socket_.set_option(tcp::no_delay(true), ignored);  // control frames are small and latency-bound
}

void Connection::start(FrameHandler on_frame, ClosedHandler on_closed) {
  on_frame_ = std::move(on_frame);
  on_closed_ = std::move(on_closed);
  asio::co_spawn(
      socket_.get_executor(), [self = shared_from_this()] { return self->read_loop(); }, asio::detached);
}

namespace {
constexpr size_t kMaxFramesPerWrite = 64;  // bounds one gathered write (IOV_MAX is 1024)
}  // namespace

Status Connection::send(const control::Envelope& envelope) {
  if (!open_) return close_reason_.with_context("sending to " + peer_name_);
  RECGPT_ASSIGN_OR_RETURN(std::string frame, encode_frame(envelope, max_frame_bytes_));
  outbox_.push_back(std::move(frame));
  if (!writing_) {
    writing_ = true;
    asio::co_spawn(
        socket_.get_executor(), [self = shared_from_this()] { return self->write_loop(); }, asio::detached);
  }
  return Status::ok();
}

asio::awaitable<Result<control::Envelope>> Connection::call(control::Envelope request, Deadline deadline) {
  co_return co_await call(new_request_id(), std::move(request), deadline);
}

asio::awaitable<Result<control::Envelope>> Connection::call(uint64_t id, control::Envelope request, Deadline deadline) {
  request.set_request_id(id);
  auto pending = std::make_shared<PendingCall>(socket_.get_executor());
  pending->wake.expires_at(deadline);
  pending_[id] = pending;
  if (Status sent = send(request); !sent.is_ok()) {
    pending_.erase(id);
    co_return sent;
  }
  boost::system::error_code ignored;
  co_await pending->wake.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  pending_.erase(id);
  if (pending->reply.has_value()) co_return std::move(*pending->reply);
  if (!pending->failure.is_ok()) co_return pending->failure;
  co_return deadline_exceeded("no reply from " + peer_name_ + " to a " + body_name(request) + " before the deadline");
}

void Connection::abandon_call(uint64_t id, const Status& why) {
  auto pending = pending_.find(id);
  if (pending == pending_.end()) return;
  pending->second->failure = why.is_ok() ? internal_error("a call was abandoned without a reason") : why;
  pending->second->wake.cancel();
  pending_.erase(pending);
}

void Connection::close(const Status& why) {
  if (!open_) return;
  open_ = false;
  close_reason_ = why.is_ok() ? unavailable("the connection to " + peer_name_ + " was closed") : why;
  boost::system::error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  if (!writing_) outbox_.clear();  // else the write in flight still points into it: write_loop() clears it
  for (auto& [id, pending] : pending_) {
    pending->failure = unavailable(close_reason_.message());
    pending->wake.cancel();
  }
  if (on_closed_) on_closed_(close_reason_);
}

void Connection::close_after_sending(const Status& why) {
  if (!writing_) {
    close(why);
    return;
  }
  close_when_sent_ = why;
}

asio::awaitable<void> Connection::read_loop() {
  auto self = shared_from_this();  // alive while reading
  std::array<std::byte, kFrameHeaderBytes> header;
  std::vector<std::byte> body;
  while (open_) {
    boost::system::error_code error;
    co_await asio::async_read(socket_, asio::buffer(header), asio::redirect_error(asio::use_awaitable, error));
    if (error) {
      close(unavailable(peer_name_ + (error == asio::error::eof ? " closed the connection" : ": " + error.message())));
      co_return;
    }
    Result<uint32_t> length = parse_frame_header(header, max_frame_bytes_);
    if (!length.is_ok()) {
      close(length.status().with_context("a frame from " + peer_name_));
      co_return;
    }
    body.resize(*length);
    co_await asio::async_read(socket_, asio::buffer(body), asio::redirect_error(asio::use_awaitable, error));
    if (error) {
      close(unavailable(peer_name_ + " closed the connection within a frame: " + error.message()));
      co_return;
    }
    Result<control::Envelope> envelope = parse_frame_body(body);
    if (!envelope.is_ok()) {
      close(envelope.status().with_context("a frame from " + peer_name_));
      co_return;
    }
    dispatch(std::move(envelope).value());
  }
}

void Connection::dispatch(control::Envelope envelope) {
  auto pending = pending_.find(envelope.request_id());
  if (envelope.request_id() != 0 && pending != pending_.end()) {
    pending->second->reply = std::move(envelope);
    pending->second->wake.cancel();
    pending_.erase(pending);
    return;
  }
  if (on_frame_) on_frame_(std::move(envelope));
}

asio::awaitable<void> Connection::write_loop() {
  auto self = shared_from_this();
  // Frames queued meanwhile go out together, one gathered write (a decode step's token chunks for many sequences
  // cost one system call, not one each). The deque keeps the queued strings in place while they are written.
  std::vector<asio::const_buffer> buffers;
  while (open_ && !outbox_.empty()) {
    const size_t count = std::min(outbox_.size(), kMaxFramesPerWrite);
    buffers.clear();
    for (size_t i = 0; i < count; ++i) buffers.push_back(asio::buffer(outbox_[i]));
    boost::system::error_code error;
    co_await asio::async_write(socket_, buffers, asio::redirect_error(asio::use_awaitable, error));
    if (!open_) break;  // closed meanwhile (the write may have completed all the same): the outbox goes below
    if (error) {
      close(unavailable("writing to " + peer_name_ + ": " + error.message()));
      break;
    }
    outbox_.erase(outbox_.begin(), outbox_.begin() + static_cast<std::ptrdiff_t>(count));
  }
  writing_ = false;
  if (!open_) outbox_.clear();
  if (close_when_sent_.has_value()) close(*close_when_sent_);
}

asio::awaitable<Result<std::shared_ptr<Connection>>> connect(const std::string& host, uint16_t port, Deadline deadline,
                                                             uint32_t max_frame_bytes) {
  using namespace asio::experimental::awaitable_operators;
  auto executor = co_await asio::this_coro::executor;
  const std::string name = host + ":" + std::to_string(port);
  boost::system::error_code error;
  tcp::resolver resolver(executor);
  auto endpoints =
      co_await resolver.async_resolve(host, std::to_string(port), asio::redirect_error(asio::use_awaitable, error));
  if (error) co_return unavailable("cannot resolve " + name + ": " + error.message());
  tcp::socket socket(executor);
  asio::steady_timer timer(executor, deadline);
  auto outcome = co_await (asio::async_connect(socket, endpoints, asio::redirect_error(asio::use_awaitable, error)) ||
                           timer.async_wait(asio::use_awaitable));
  if (outcome.index() == 1)
    co_return deadline_exceeded("connecting to " + name + " did not finish before the deadline");
  if (error) co_return unavailable("cannot connect to " + name + ": " + error.message());
  co_return Connection::make(std::move(socket), name, max_frame_bytes);
}

}  // namespace recgpt::rpc
