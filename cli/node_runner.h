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

// At the first SIGINT or SIGTERM, `drain(done)` starts a graceful end (no new work, the work in progress
// finishes) and calls `done` when it is over; then `stop` ends the server and this returns. A second signal
// does not wait: `stop` at once (connections close, their work is cancelled). Both run on the io thread.
void run_node_until_signal(boost::asio::io_context& io, const std::string& role, const std::string& node_id,
                           uint16_t port, uint16_t admin_port,
                           const std::function<void(std::function<void()> done)>& drain,
                           const std::function<void()>& stop);

// "key=value" flag values as pairs; kInvalidArgument naming `flag` and the value without '='.
Result<std::vector<std::pair<std::string, std::string>>> parse_key_values(const std::vector<std::string>& values,
                                                                          const std::string& flag);

}  // namespace recgpt::cli
