// Accepts control connections on one address and port, and the protocol helpers every node's server shares:
// the Error frame, and the checks of a peer's Hello.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <functional>
#include <memory>
#include <string>

#include "common/rpc/connection.h"
#include "common/status.h"

namespace recgpt::rpc {

// The protocol version of this build's control plane.
// 2: prefill attempts name their KV streams; 3: and their writers; 4: frequency and presence penalties,
// logit_bias and logprobs (a node of 3 would ignore them); 5: JSON constraints and min_tokens (a node of 4 would write
// free text, end early).
inline constexpr uint32_t kProtocolVersion = 5;
// The oldest version a node takes a peer's calls in: what changed since only adds fields an older router does not
// send, so nodes upgrade first, then routers (a rolling upgrade; an older node refuses a newer router). A peer
// speaking a newer version, or one older than this, is refused at the handshake.
inline constexpr uint32_t kOldestPeerProtocolVersion = 4;

class Listener : public std::enable_shared_from_this<Listener> {
 public:
  // Binds and listens (port 0: an ephemeral one). kUnavailable naming the address when it cannot.
  static Result<std::shared_ptr<Listener>> open(boost::asio::io_context& io, const std::string& address, uint16_t port);

  // Accepts until close(): each connection, named by its remote address and not started, goes to
  // `on_connection` on the io_context's thread.
  void run(std::function<void(std::shared_ptr<Connection>)> on_connection);
  void close();
  uint16_t port() const { return port_; }

 private:
  explicit Listener(boost::asio::io_context& io) : acceptor_(io) {}
  boost::asio::awaitable<void> accept_loop(std::function<void(std::shared_ptr<Connection>)> on_connection);

  boost::asio::ip::tcp::acceptor acceptor_;
  uint16_t port_ = 0;
};

// An Error frame answering `request_id` with `status` (its code name and message).
control::Envelope error_frame(uint64_t request_id, const Status& status);
// The Status an Error frame carries (the inverse of error_frame); a code name this build does not know reads as
// kUnavailable: the peer failed.
Status status_of(const control::Error& error);

// ok when a peer's Hello speaks a protocol version from kOldestPeerProtocolVersion to this one and, when it names
// one, this model fingerprint; kFailedPrecondition naming both values otherwise.
Status check_peer_hello(const control::Hello& hello, const std::string& model_fingerprint);

}  // namespace recgpt::rpc
