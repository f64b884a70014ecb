// What the serving benchmarks share: node processes they start (`recgpt prefill|decode|serve|router`) and read
// the ports of, and one agent call timed against a node pair directly (no router).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/subprocess.h"
#include "node/agent_call_client.h"

namespace recgpt::bench {

// A started process and the ports it printed (" port=N" on each of its first lines); stopped with SIGTERM.
struct NodeProcess {
  Subprocess process;
  std::vector<uint16_t> ports;
  ~NodeProcess();
};

// Starts `argv` and reads `port_lines` lines naming a port (within a minute).
Result<std::unique_ptr<NodeProcess>> start_node_process(const std::vector<std::string>& argv, int port_lines);

struct CallTimes {
  double time_to_first_token = 0;  // seconds
  double total = 0;                // seconds, to the last token
  std::vector<double> inter_token;
  int64_t tokens = 0;
  Status status;
};

// reserve -> prefill -> decode stream of `call` against the client's pair, timed.
boost::asio::awaitable<CallTimes> timed_call(node::AgentCallClient& client, const node::AgentCall& call);

}  // namespace recgpt::bench
