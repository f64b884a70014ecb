// curl (from Debian) as the real HTTP client of tests: one call, its body and status, with deadlines.
#pragma once

#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <vector>

#include "common/subprocess.h"
#include "tests/support/time_scale.h"

namespace recgpt::testing {

struct CurlReply {
  std::string body;  // lines joined with '\n', each ending in one
  int status = 0;    // 0: no HTTP answer (curl's %{http_code} of a failed connection)
};

// Starts `curl -s --max-time 5 <extra...> <url>` (5 s scaled by time_scale(); a later --max-time in `extra` wins),
// its status code to be printed on a last line of its own; finish_curl collects it. Many may run at once.
inline Subprocess start_curl(const std::string& url, const std::vector<std::string>& extra = {}) {
  const std::string max_time = std::to_string(scaled(std::chrono::seconds(5)).count() / 1000.0);
  std::vector<std::string> argv = {"/usr/bin/curl", "-s", "--max-time", max_time, "-w", "\n%{http_code}\n"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  argv.push_back(url);
  auto spawned = Subprocess::spawn(argv);
  REQUIRE(spawned.is_ok());
  return std::move(spawned).value();
}

// The reply of a started curl; `line_wait` bounds the wait for each line of its output.
inline CurlReply finish_curl(Subprocess& process, std::chrono::seconds line_wait = std::chrono::seconds(15)) {
  std::vector<std::string> lines;
  for (;;) {
    auto line = process.read_line(std::chrono::steady_clock::now() + scaled(line_wait));
    if (!line.is_ok()) break;  // end of output
    lines.push_back(*line);
  }
  (void)process.wait(std::chrono::steady_clock::now() + std::chrono::seconds(10));
  REQUIRE_FALSE(lines.empty());
  CurlReply reply;
  reply.status = std::stoi(lines.back());
  for (size_t i = 0; i + 1 < lines.size(); ++i) reply.body += lines[i] + "\n";
  return reply;
}

// One curl call, start to finish.
inline CurlReply curl(const std::string& url, const std::vector<std::string>& extra = {}) {
  Subprocess process = start_curl(url, extra);
  return finish_curl(process);
}

inline std::string local_url(uint16_t port, const std::string& path) {
  return "http://127.0.0.1:" + std::to_string(port) + path;
}

}  // namespace recgpt::testing
