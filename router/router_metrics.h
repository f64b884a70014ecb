// The router's Prometheus metrics (../shared/DESIGN.md §5, docs/metrics.md): requests by path and code and those
// running, nodes up, latency histograms of completions and of workflows by stage (end to end, time to first token,
// time per output token), tokens, and calls continued after a node failed.
//
// Threading: the cluster's io_context (prometheus-cpp's series are thread-safe; the node-up bookkeeping is not).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>

#include "router/cluster.h"
#include "router/token_timing.h"
#include "router/workflow_runner.h"

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace recgpt::router {

class RouterMetrics {
 public:
  RouterMetrics();
  ~RouterMetrics();

  // The text exposition of every series, recgpt_node_up refreshed from `cluster` first.
  std::string serialize(const Cluster& cluster);

  // `path` is the label: a known path, "/v1/workflows" or "other".
  void count_request(const std::string& path, int status);

  // A request on its path's recgpt_router_requests_running while the object lives.
  class Running {
   public:
    Running(const Running&) = delete;
    Running& operator=(const Running&) = delete;
    ~Running();

   private:
    friend class RouterMetrics;
    explicit Running(prometheus::Gauge& gauge);
    prometheus::Gauge& gauge_;
  };
  Running running(const std::string& path);

  void call_continued();
  // A completion's tokens as they arrived (observed whether it then succeeded or not).
  void completion_tokens_arrived(const TokenTiming& timing);
  void completion_answered(double seconds, int64_t prompt_tokens, int64_t completion_tokens);
  // An answered workflow: its duration, each step's, and each agent call's token timing, by stage.
  void workflow_answered(const std::string& workflow, const WorkflowRun& run, double seconds);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_ = nullptr;
  prometheus::Family<prometheus::Gauge>* running_ = nullptr;
  prometheus::Family<prometheus::Gauge>* node_up_ = nullptr;
  std::map<std::string, std::pair<std::string, prometheus::Gauge*>> node_up_series_;  // by role and address
  prometheus::Family<prometheus::Histogram>* ttft_ = nullptr;
  prometheus::Family<prometheus::Histogram>* tpot_ = nullptr;
  prometheus::Family<prometheus::Histogram>* stage_duration_ = nullptr;
  prometheus::Histogram* completion_duration_ = nullptr;  // the series of stage="completion"
  prometheus::Histogram* completion_ttft_ = nullptr;
  prometheus::Histogram* completion_tpot_ = nullptr;
  prometheus::Histogram* workflow_total_ = nullptr;
  prometheus::Counter* prompt_tokens_ = nullptr;
  prometheus::Counter* completion_tokens_ = nullptr;
  prometheus::Counter* retries_ = nullptr;
};

}  // namespace recgpt::router
