#include "node/peer_probe.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <charconv>

#include "common/log.h"
#include "node/node_protocol.h"

namespace recgpt::node {
namespace {

namespace asio = boost::asio;

class Probe final : public PeerProbe, public std::enable_shared_from_this<Probe> {
 public:
  Probe(asio::io_context& io, PeerProbeOptions options)
      : io_(io), options_(std::move(options)), timer_(io), results_(options_.peers.size()) {
    for (size_t i = 0; i < results_.size(); ++i)
      results_[i] = unavailable("peer " + options_.peers[i].text() + " has not been probed yet");
  }

  void run() {
    asio::co_spawn(
        io_, [self = shared_from_this()] { return self->loop(); }, asio::detached);
  }

  Status status() const override {
    for (const Status& result : results_) {
      if (!result.is_ok()) return result;
    }
    return Status::ok();
  }

  void stop() override {
    stopped_ = true;
    timer_.cancel();
  }

 private:
  asio::awaitable<void> loop() {
    auto self = shared_from_this();  // alive while the loop runs
    while (!stopped_) {
      for (size_t i = 0; i < options_.peers.size() && !stopped_; ++i) {
        const PeerAddress& peer = options_.peers[i];
        rpc::Connection::FrameHandler ignore_frames = [](control::Envelope) {};  // named: see node_link.cpp
        auto greeted = co_await greet(peer.host, peer.port, options_.role, options_.model_fingerprint,
                                      std::move(ignore_frames), rpc::Clock::now() + options_.timeout, nullptr);
        Status result = Status::ok();
        if (greeted.is_ok()) {
          (*greeted)->close(Status::ok());
        } else {
          result = unavailable("peer " + peer.text() + " is not reachable: " + greeted.status().message());
        }
        if (result.is_ok() != results_[i].is_ok()) {
          log_event(result.is_ok() ? LogLevel::kInfo : LogLevel::kWarning, "node",
                    result.is_ok() ? "peer reachable" : "peer unreachable",
                    {{"peer", peer.text()}, {"reason", result.is_ok() ? "" : result.message()}});
        }
        results_[i] = std::move(result);
      }
      timer_.expires_after(options_.period);
      boost::system::error_code error;
      co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, error));
    }
  }

  asio::io_context& io_;
  const PeerProbeOptions options_;
  asio::steady_timer timer_;
  std::vector<Status> results_;  // per peer, its latest probe
  bool stopped_ = false;
};

}  // namespace

Result<PeerAddress> parse_peer_address(const std::string& text) {
  const size_t colon = text.rfind(':');
  const auto bad = [&](const std::string& why) {
    return invalid_argument("peer address '" + text + "' " + why + " (expected host:port)");
  };
  if (colon == std::string::npos) return bad("has no port");
  if (colon == 0) return bad("has no host");
  std::string host = text.substr(0, colon);
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return bad("has an unclosed IPv6 bracket");
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string::npos) {
    return bad("needs brackets around an IPv6 address");
  }
  const std::string port_text = text.substr(colon + 1);
  unsigned port = 0;
  auto [end, error] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || error != std::errc() || end != port_text.data() + port_text.size() || port == 0 ||
      port > 65535) {
    return bad("has no valid port (1-65535)");
  }
  return PeerAddress{host, static_cast<uint16_t>(port)};
}

std::shared_ptr<PeerProbe> PeerProbe::start(asio::io_context& io, PeerProbeOptions options) {
  auto probe = std::make_shared<Probe>(io, std::move(options));
  probe->run();
  return probe;
}

Result<std::shared_ptr<PeerProbe>> probe_peers(asio::io_context& io, const std::vector<std::string>& addresses,
                                               control::Role role, const std::string& model_fingerprint) {
  PeerProbeOptions options;
  for (const std::string& address : addresses) {
    RECGPT_ASSIGN_OR_RETURN(PeerAddress peer, parse_peer_address(address));
    options.peers.push_back(std::move(peer));
  }
  options.role = role;
  options.model_fingerprint = model_fingerprint;
  return PeerProbe::start(io, std::move(options));
}

}  // namespace recgpt::node
