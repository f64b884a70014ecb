// Readiness of a node's peers (`/readyz`: ready only when the peers it needs are reachable): every period, each
// peer's control port is dialled and greeted with this node's role and model fingerprint, so "reachable" means
// serving, speaking our protocol version, with the same model. A peer that never answered, or failed its latest
// probe, makes status() name it and why.
//
// Threading: runs on one io_context; call every method from its thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "proto/control.pb.h"

namespace boost::asio {
class io_context;
}

namespace recgpt::node {

struct PeerAddress {
  std::string host;
  uint16_t port = 0;
  std::string text() const {  // as parsed: IPv6 in brackets
    return (host.find(':') == std::string::npos ? host : "[" + host + "]") + ":" + std::to_string(port);
  }
};

// "host:port" (a name, IPv4, or [IPv6]) as a PeerAddress; kInvalidArgument naming the text otherwise.
Result<PeerAddress> parse_peer_address(const std::string& text);

struct PeerProbeOptions {
  std::vector<PeerAddress> peers;
  control::Role role = control::ROLE_UNSPECIFIED;  // ours, in the hello
  std::string model_fingerprint;
  std::chrono::milliseconds period{2000};
  std::chrono::milliseconds timeout{1000};  // per probe: connect and hello
};

class PeerProbe {
 public:
  // Starts probing at once (no peers: always ok).
  static std::shared_ptr<PeerProbe> start(boost::asio::io_context& io, PeerProbeOptions options);
  virtual ~PeerProbe() = default;

  // ok when every peer answered its latest probe; else kUnavailable naming the first peer that did not.
  virtual Status status() const = 0;
  // Ends the probing (a probe in flight finishes on its own).
  virtual void stop() = 0;
};

// Parses every "host:port" of `addresses` and starts probing them as `role`; kInvalidArgument naming a bad one.
Result<std::shared_ptr<PeerProbe>> probe_peers(boost::asio::io_context& io, const std::vector<std::string>& addresses,
                                               control::Role role, const std::string& model_fingerprint);

}  // namespace recgpt::node
