#include "cli/node_runner.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <csignal>
#include <cstdio>

namespace recgpt::cli {

void run_node_until_signal(boost::asio::io_context& io, const std::string& role, const std::string& node_id,
                           uint16_t port, uint16_t admin_port,
                           const std::function<void(std::function<void()> done)>& drain,
                           const std::function<void()>& stop) {
  std::printf("recgpt %s: listening node=%s port=%u admin_port=%u\n", role.c_str(), node_id.c_str(),
              static_cast<unsigned>(port), static_cast<unsigned>(admin_port));
  std::fflush(stdout);
  bool stopped = false;
  auto finish = [&] {
    if (stopped) return;
    stopped = true;
    stop();
    io.stop();
  };
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  std::function<void(const boost::system::error_code&, int)> on_signal = [&](const boost::system::error_code& error,
                                                                             int signal) {
    if (error) return;
    static int received = 0;
    if (++received > 1) {
      std::fprintf(stderr, "recgpt %s: signal %d again, stopping now\n", role.c_str(), signal);
      finish();
      return;
    }
    std::fprintf(stderr, "recgpt %s: signal %d, draining\n", role.c_str(), signal);
    drain([&] {
      std::fprintf(stderr, "recgpt %s: drained, stopping\n", role.c_str());
      finish();
    });
    signals.async_wait(on_signal);
  };
  signals.async_wait(on_signal);
  io.run();
}

Result<std::vector<std::pair<std::string, std::string>>> parse_key_values(const std::vector<std::string>& values,
                                                                          const std::string& flag) {
  std::vector<std::pair<std::string, std::string>> pairs;
  for (const std::string& value : values) {
    const size_t equals = value.find('=');
    if (equals == std::string::npos) return invalid_argument(flag + " '" + value + "' is not key=value");
    pairs.emplace_back(value.substr(0, equals), value.substr(equals + 1));
  }
  return pairs;
}

}  // namespace recgpt::cli
