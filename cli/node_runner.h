// How `recgpt prefill` and `recgpt decode` run once their server started: one line on stdout naming the ports
// (for whoever started the node: scripts, tests), then the io_context until SIGINT or SIGTERM.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace boost::asio {
class io_context;
}

namespace recgpt::cli {

// `stop` runs on the io_context's thread when a signal comes (it ends the server: connections close, their work
// is cancelled), then the io_context stops and this returns.
void run_node_until_signal(boost::asio::io_context& io, const std::string& role, const std::string& node_id,
                           uint16_t port, uint16_t admin_port, const std::function<void()>& stop);

// "key=value" flag values as pairs; kInvalidArgument naming `flag` and the value without '='.
Result<std::vector<std::pair<std::string, std::string>>> parse_key_values(const std::vector<std::string>& values,
                                                                          const std::string& flag);

}  // namespace recgpt::cli
