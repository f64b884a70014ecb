#include "router/router_metrics.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "common/admin/latency_buckets.h"

namespace recgpt::router {
namespace {

using prometheus::Histogram;

// End to end: from a 5 ms cached answer to a minute-long workflow.
Histogram::BucketBoundaries request_buckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}
Histogram::BucketBoundaries stage_buckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
}

const prometheus::Labels kCompletion = {{"role", "router"}, {"stage", "completion"}};

}  // namespace

RouterMetrics::RouterMetrics() : registry_(std::make_shared<prometheus::Registry>()) {
  requests_ = &prometheus::BuildCounter()
                   .Name("recgpt_router_requests_total")
                   .Help("HTTP requests answered, by path and status (499: the client went away first)")
                   .Register(*registry_);
  node_up_ = &prometheus::BuildGauge()
                  .Name("recgpt_node_up")
                  .Help("Whether the router counts a node healthy: its link is open and it reported load in 5 s")
                  .Register(*registry_);
  running_ = &prometheus::BuildGauge()
                  .Name("recgpt_router_requests_running")
                  .Help("Completion and workflow requests being answered, by path")
                  .Register(*registry_);
  auto& durations = prometheus::BuildHistogram()
                        .Name("recgpt_request_duration_seconds")
                        .Help("End-to-end completion latency")
                        .Register(*registry_);
  completion_duration_ = &durations.Add(kCompletion, request_buckets());
  ttft_ = &prometheus::BuildHistogram()
               .Name("recgpt_time_to_first_token_seconds")
               .Help("Time from the request (or the workflow's start) to a call's first token, by stage")
               .Register(*registry_);
  completion_ttft_ = &ttft_->Add(kCompletion, request_buckets());
  tpot_ = &prometheus::BuildHistogram()
               .Name("recgpt_time_per_output_token_seconds")
               .Help("A call's mean time between its tokens after the first, as the router received them, by stage")
               .Register(*registry_);
  completion_tpot_ = &tpot_->Add(kCompletion, admin::token_gap_buckets());
  auto& tokens =
      prometheus::BuildCounter().Name("recgpt_router_tokens_total").Help("Tokens by kind").Register(*registry_);
  prompt_tokens_ = &tokens.Add({{"kind", "prompt"}});
  completion_tokens_ = &tokens.Add({{"kind", "completion"}});
  auto& workflow_durations = prometheus::BuildHistogram()
                                 .Name("recgpt_workflow_duration_seconds")
                                 .Help("End-to-end workflow latency")
                                 .Register(*registry_);
  workflow_total_ = &workflow_durations.Add({{"role", "router"}, {"stage", "workflow"}}, request_buckets());
  stage_duration_ = &prometheus::BuildHistogram()
                         .Name("recgpt_workflow_stage_duration_seconds")
                         .Help("Workflow stage latency, by workflow and stage (planner, experts, arbiter, ...)")
                         .Register(*registry_);
  retries_ = &prometheus::BuildCounter()
                  .Name("recgpt_router_call_retries_total")
                  .Help("Calls continued on another node pair after a node failed (from the tokens they generated)")
                  .Register(*registry_)
                  .Add({});
}

RouterMetrics::~RouterMetrics() = default;

// recgpt_node_up per member node, named by its node id once it said one (its address until then).
std::string RouterMetrics::serialize(const Cluster& cluster) {
  for (Tier tier : {Tier::kPrefill, Tier::kDecode}) {
    const std::string role = tier == Tier::kPrefill ? "prefill" : "decode";
    for (const ClusterNode& entry : cluster.nodes(tier)) {
      auto& [name, gauge] = node_up_series_[role + " " + entry.address.text()];
      if (gauge != nullptr && (name != entry.name() || !entry.member)) {
        node_up_->Remove(gauge);
        gauge = nullptr;
      }
      if (!entry.member) continue;
      if (gauge == nullptr) {
        name = entry.name();
        gauge = &node_up_->Add({{"role", role}, {"node", name}});
      }
      gauge->Set(entry.healthy() ? 1 : 0);
    }
  }
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

void RouterMetrics::count_request(const std::string& path, int status) {
  requests_->Add({{"path", path}, {"code", std::to_string(status)}}).Increment();
}

RouterMetrics::Running::Running(prometheus::Gauge& gauge) : gauge_(gauge) { gauge_.Increment(); }
RouterMetrics::Running::~Running() { gauge_.Decrement(); }
RouterMetrics::Running RouterMetrics::running(const std::string& path) {
  return Running(running_->Add({{"path", path}}));
}

void RouterMetrics::call_continued() { retries_->Increment(); }

void RouterMetrics::completion_tokens_arrived(const TokenTiming& timing) {
  if (auto seconds = timing.first_token_seconds()) completion_ttft_->Observe(*seconds);
  if (auto seconds = timing.per_output_token_seconds()) completion_tpot_->Observe(*seconds);
}

void RouterMetrics::completion_answered(double seconds, int64_t prompt_tokens, int64_t completion_tokens) {
  prompt_tokens_->Increment(static_cast<double>(prompt_tokens));
  completion_tokens_->Increment(static_cast<double>(completion_tokens));
  completion_duration_->Observe(seconds);
}

void RouterMetrics::workflow_answered(const std::string& workflow, const WorkflowRun& run, double seconds) {
  workflow_total_->Observe(seconds);
  for (const StepRun& step : run.steps) {
    const prometheus::Labels labels = {{"role", "router"}, {"workflow", workflow}, {"stage", step.name}};
    stage_duration_->Add(labels, stage_buckets()).Observe(step.ms / 1e3);
    for (const AgentRun& call : step.calls) {
      if (call.first_token_seconds) ttft_->Add(labels, request_buckets()).Observe(*call.first_token_seconds);
      if (call.per_output_token_seconds)
        tpot_->Add(labels, admin::token_gap_buckets()).Observe(*call.per_output_token_seconds);
    }
  }
}

}  // namespace recgpt::router
