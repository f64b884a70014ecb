// `recgpt bench serve` and `recgpt bench workflows` end to end on the tiny model: they start their clusters, drive
// them over HTTP and report every request answered and their figures as JSON. Speed is not asserted (benchmarks
// measure it); only that the figures exist and are consistent.
#include <nlohmann/json.hpp>

#include "tests/integration/router/router_fixtures.h"

namespace recgpt::testing {
namespace {

using nlohmann::json;

// Runs a `recgpt bench ... --json` to its end (within minutes) and parses what it printed.
nlohmann::json run_bench(const std::vector<std::string>& argv) {
  auto bench = Subprocess::spawn(argv);
  REQUIRE(bench.is_ok());
  std::string text;
  for (;;) {
    auto line = bench->read_line(Clock::now() + seconds(120));
    if (!line.is_ok()) break;
    text += *line + "\n";
  }
  auto exit_code = bench->wait(Clock::now() + seconds(60));
  REQUIRE(exit_code.is_ok());
  INFO(text);
  REQUIRE(*exit_code == 0);
  return nlohmann::json::parse(text);
}

TEST_CASE("bench serve drives both clusters over HTTP and reports latency, goodput and router overhead as JSON",
          "[router][bench_serve]") {
  TinyModel tiny;
  const json report = run_bench({recgpt_program(),
                                 "bench",
                                 "serve",
                                 "--model",
                                 tiny.dir.string(),
                                 "--rate",
                                 "20",
                                 "--duration",
                                 "1",
                                 "--prompt-len",
                                 "40",
                                 "--shared-prefix-len",
                                 "32",
                                 "--output-len",
                                 "8",
                                 "--overhead-calls",
                                 "3",
                                 "--kv-cache-mib",
                                 "16",
                                 "--json"});
  for (const char* mode : {"disaggregated", "colocated"}) {
    const json& figures = report["modes"][mode];
    CHECK(figures["requests"].get<int>() >= 5);
    CHECK(figures["failed"] == 0);
    CHECK(figures["output_tokens_per_second"].get<double>() > 0);
    CHECK(figures["ttft"]["p50_s"].get<double>() > 0);
    CHECK(figures["ttft"]["p50_s"].get<double>() <= figures["e2e"]["p50_s"].get<double>());
    CHECK(figures["goodput"].get<double>() <= figures["request_throughput"].get<double>());
    CHECK(figures["router_overhead"]["calls"] == 3);
    CHECK(figures["router_overhead"]["direct_e2e_p50_s"].get<double>() > 0);
  }
}

}  // namespace
}  // namespace recgpt::testing

namespace recgpt::testing {
namespace {

TEST_CASE("bench workflows runs intent under load in each mode and reports per-stage latency and prefill work",
          "[router][bench_workflows]") {
  TinyModel tiny;
  const nlohmann::json report =
      run_bench({recgpt_program(), "bench", "workflows", "--model", tiny.dir.string(), "--rate", "4", "--duration", "1",
                 "--history-len", "12", "--experts", "2", "--kv-cache-mib", "16", "--modes", "hybrid,v1", "--json"});
  for (const char* mode : {"hybrid", "v1"}) {
    const nlohmann::json& figures = report["modes"][mode];
    CHECK(figures["workflows"].get<int>() >= 1);
    CHECK(figures["failed"] == 0);
    for (const char* stage : {"planner", "experts", "arbiter"}) CHECK(figures["stages"].contains(stage));
  }
  CHECK(report["modes"]["v1"]["computed_prompt_tokens"].get<double>() >
        report["modes"]["hybrid"]["computed_prompt_tokens"].get<double>());
  CHECK(report["modes"]["hybrid"]["compression_ratio"].get<double>() > 1.0);
}

}  // namespace
}  // namespace recgpt::testing
