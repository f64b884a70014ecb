// A kv_transfer_peer child driven by a Catch2 test: its protocol lines as words, the first checked against the
// expected tag, every read with a deadline. Killed and reaped when it goes out of scope (Subprocess).
#pragma once

#include <catch2/catch.hpp>
#include <chrono>
#include <sstream>
#include <string>
#include <vector>

#include "common/subprocess.h"
#include "kv_transfer/transfer_engine.h"
#include "tests/integration/programs.h"

namespace recgpt::kv::testing {

inline constexpr std::chrono::milliseconds kStepTimeout(20000);  // generous: CI machines are shared and noisy

inline Deadline after(std::chrono::milliseconds timeout) { return Clock::now() + timeout; }

class PeerProcess {
 public:
  // `backend_arguments`: --backend and --setting flags (and any other) before the scenario's.
  PeerProcess(const std::string& role, std::vector<std::string> backend_arguments, uint64_t seed, int layers,
              int layer_delay_ms = 0) {
    std::vector<std::string> arguments{recgpt::testing::kv_transfer_peer_program(), role};
    arguments.insert(arguments.end(), backend_arguments.begin(), backend_arguments.end());
    arguments.insert(arguments.end(), {"--seed", std::to_string(seed), "--layers", std::to_string(layers),
                                       "--layer-delay-ms", std::to_string(layer_delay_ms)});
    auto spawned = Subprocess::spawn(arguments);
    REQUIRE(spawned.is_ok());
    process_ = std::move(spawned).value();
  }

  // The words of the next line tagged `tag`, skipping progress lines ("layer ...") before it.
  std::vector<std::string> expect(const std::string& tag) {
    const Deadline deadline = after(kStepTimeout);
    for (;;) {
      auto line = process_.read_line(deadline);
      INFO("waiting for '" << tag << "' from the peer");
      REQUIRE(line.is_ok());
      std::istringstream stream(*line);
      std::vector<std::string> words;
      for (std::string word; stream >> word;) words.push_back(word);
      INFO("peer said: " << *line);
      REQUIRE(!words.empty());
      if (words[0] == "layer" && tag != "layer") continue;
      REQUIRE(words[0] == tag);
      return words;
    }
  }

  void say(const std::string& line) { REQUIRE(process_.write_line(line).is_ok()); }
  Subprocess& process() { return process_; }

 private:
  Subprocess process_;
};

}  // namespace recgpt::kv::testing
