// `recgpt plan`: how many prefill and decode nodes serve a workflow load within its latency objectives, next
// to a colocated pool and to RecGPT-V1's way (isolated calls over the full text context). Reads only the
// model's config.json; see docs/capacity.md.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "capacity/planner.h"
#include "cli/commands.h"
#include "cli/model_flags.h"
#include "common/mapped_file.h"
#include "engine/model_cost.h"

namespace recgpt::cli {
namespace {

struct PlanFlags {
  std::string model;
  std::string dtype;
  std::string kv_dtype;
  std::string hardware = "h200";
  std::string prefill_hardware;
  std::string decode_hardware;
  std::string workflow = "intent";
  std::string workflows_dir;
  double rate = 0;
  int64_t context_tokens = 5158;        // RecGPT-V2's hybrid context of its example user
  int64_t text_context_tokens = 21349;  // the same user's context as text (RecGPT-V1)
  int64_t system_tokens = -1;
  int64_t request_field_tokens = 32;
  std::vector<std::string> options;
  std::vector<std::string> output_tokens;
  std::vector<std::string> suffix_tokens;
  capacity::Objectives objectives;
  std::string policy = "prefix_aware";
  int block_size = 16;
  int64_t max_step_tokens = 8192;
  int max_batch = 256;
  double call_overhead = 0;
  double duration = 0;  // 0: enough for 2000 workflows, at least 60 s
  uint64_t seed = 1;
  int max_nodes = 64;
  int prefill_nodes = 0;  // with decode_nodes or colocated_nodes: simulate these pools instead of planning
  int decode_nodes = 0;
  int colocated_nodes = 0;
  bool json = false;
};

// "name=value" flags into a map; kInvalidArgument naming the flag for anything else.
template <typename Value>
Result<std::map<std::string, Value>> parse_assignments(const std::vector<std::string>& items, const char* flag) {
  std::map<std::string, Value> values;
  for (const std::string& item : items) {
    const size_t equals = item.find('=');
    Value value{};
    const char* begin = item.data() + (equals == std::string::npos ? item.size() : equals + 1);
    const char* end = item.data() + item.size();
    auto [stop, error] = std::from_chars(begin, end, value);
    if (equals == std::string::npos || equals == 0 || error != std::errc() || stop != end || begin == end) {
      return invalid_argument(std::string(flag) + ": expected name=integer, got '" + item + "'");
    }
    values[item.substr(0, equals)] = value;
  }
  return values;
}

Result<ModelConfig> read_model_config(const std::string& path) {
  const std::string file = path.ends_with(".json") ? path : path + "/config.json";
  RECGPT_ASSIGN_OR_RETURN(std::string text, read_text_file(file));
  Result<ModelConfig> config = parse_model_config(text);
  if (!config.is_ok()) return config.status().with_context(file);
  return config;
}

// A dtype by engine/dtype.h's name (f32, bf16, f16; fp8_e4m3 for KV only, as the nodes' --kv-dtype spells it).
Result<DType> dtype_flag(const std::string& name, const char* flag, DType fallback, bool kv) {
  if (name.empty()) return fallback;
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16, DType::kFP8E4M3}) {
    if (name == dtype_name(dtype) && (kv || dtype != DType::kFP8E4M3)) return dtype;
  }
  return invalid_argument(std::string(flag) + ": unknown dtype '" + name + "'");
}

Result<router::WorkflowDefinition> find_workflow(const PlanFlags& flags) {
  auto workflows =
      flags.workflows_dir.empty() ? router::builtin_workflows() : router::load_workflows(flags.workflows_dir);
  if (!workflows.is_ok()) return workflows.status();
  auto it = workflows->find(flags.workflow);
  if (it == workflows->end()) {
    std::string names;
    for (const auto& [name, definition] : *workflows) names += (names.empty() ? "" : ", ") + name;
    return not_found("no workflow '" + flags.workflow + "' (" + names + ")");
  }
  return it->second;
}

nlohmann::json summary_json(const capacity::LatencySummary& summary) {
  return {{"count", summary.count},
          {"mean", summary.mean},
          {"p50", summary.p50},
          {"p90", summary.p90},
          {"p99", summary.p99}};
}

// A pool's price per hour (a colocated pool's nodes count as decode nodes: they run on that hardware).
double cost_per_hour(const capacity::PoolPlan& plan, double prefill_cost, double decode_cost) {
  return plan.pools.prefill_nodes * prefill_cost + plan.pools.decode_nodes * decode_cost;
}

nlohmann::json pool_json(const capacity::PoolPlan& plan, double prefill_cost, double decode_cost) {
  const auto& result = plan.result;
  nlohmann::json stages = nlohmann::json::object();
  for (const auto& [stage, summary] : result.ttft_by_stage) stages[stage] = summary_json(summary);
  return {{"feasible", plan.feasible},
          {"missed", plan.missed},
          {"prefill_nodes", plan.pools.prefill_nodes},
          {"decode_nodes", plan.pools.decode_nodes},
          {"colocated", plan.pools.colocated},
          {"step_tokens", plan.step_tokens},
          {"nodes", plan.nodes()},
          {"cost_per_hour", cost_per_hour(plan, prefill_cost, decode_cost)},
          {"workflows_measured", result.workflows},
          {"ttft_seconds", summary_json(result.ttft)},
          {"ttft_seconds_by_stage", stages},
          {"itl_seconds", summary_json(result.itl)},
          {"workflow_seconds", summary_json(result.workflow_latency)},
          {"prefill_utilization", result.prefill_utilization},
          {"decode_utilization", result.decode_utilization},
          {"peak_kv_used_fraction", result.peak_kv_used_fraction},
          {"prompt_tokens_per_workflow", result.prompt_tokens_per_workflow},
          {"prefill_tokens_per_workflow", result.prefill_tokens_per_workflow},
          {"kv_bytes_per_workflow", result.kv_bytes_per_workflow},
          {"calls_waited_for_room", result.calls_waited_for_room}};
}

void print_pool(const char* label, const capacity::PoolPlan& plan) {
  const auto& result = plan.result;
  std::string pools = plan.pools.colocated ? std::to_string(plan.pools.decode_nodes) + " colocated"
                                           : std::to_string(plan.pools.prefill_nodes) + " prefill + " +
                                                 std::to_string(plan.pools.decode_nodes) + " decode";
  if (plan.feasible) {
    std::printf("  %-14s %3d nodes (%s; steps of up to %lld tokens)\n", label, plan.nodes(), pools.c_str(),
                static_cast<long long>(plan.step_tokens));
  } else {
    std::printf("  %-14s not met with %s nodes (steps of up to %lld tokens): %s\n", label, pools.c_str(),
                static_cast<long long>(plan.step_tokens), plan.missed.c_str());
  }
  if (result.workflows == 0) return;
  std::printf("  %-14s TTFT p50/p99 %.3f/%.3f s, ITL p50/p99 %.4f/%.4f s, workflow p50/p99 %.2f/%.2f s\n", "",
              result.ttft.p50, result.ttft.p99, result.itl.p50, result.itl.p99, result.workflow_latency.p50,
              result.workflow_latency.p99);
  std::printf(
      "  %-14s stepping: prefill %.0f%%, decode %.0f%% of the time; KV pool peak %.0f%%; per workflow: %.0f of %.0f "
      "prompt tokens computed, %.1f MB of KV moved\n",
      "", 100 * result.prefill_utilization, 100 * result.decode_utilization, 100 * result.peak_kv_used_fraction,
      result.prefill_tokens_per_workflow, result.prompt_tokens_per_workflow, result.kv_bytes_per_workflow / 1e6);
}

// Simulates the pools the flags name, without searching: what a given cluster does under the load.
Status evaluate(const PlanFlags& flags, const capacity::PlanRequest& request) {
  const bool colocated = flags.colocated_nodes > 0;
  if (colocated ? flags.decode_nodes > 0 || flags.prefill_nodes > 0
                : flags.decode_nodes < 1 || flags.prefill_nodes < 1) {
    return invalid_argument("give either --colocated-nodes, or --prefill-nodes with --decode-nodes");
  }
  capacity::Pools pools{colocated, flags.prefill_nodes, colocated ? flags.colocated_nodes : flags.decode_nodes};
  RECGPT_ASSIGN_OR_RETURN(
      capacity::SimulationResult result,
      capacity::simulate(*request.prefill_model, *request.decode_model, request.workload, pools, request.simulation));
  const capacity::PoolPlan plan =
      capacity::judged(pools, request.simulation.max_step_tokens, std::move(result), request.objectives);
  if (flags.json) {
    std::printf("%s\n", pool_json(plan, request.prefill_model->hardware().cost_per_hour,
                                  request.decode_model->hardware().cost_per_hour)
                            .dump(2)
                            .c_str());
    return Status::ok();
  }
  std::printf("recgpt plan: workflow '%s' at %g workflows/s on the pools given\n", request.workload.workflow.c_str(),
              flags.rate);
  print_pool(plan.feasible ? "meets" : "misses", plan);
  return Status::ok();
}

Status run(const PlanFlags& flags) {
  RECGPT_ASSIGN_OR_RETURN(ModelConfig config, read_model_config(flags.model));
  const int64_t parameters = model_cost(config).parameters;
  RECGPT_ASSIGN_OR_RETURN(DType weight_dtype, dtype_flag(flags.dtype, "--dtype", config.torch_dtype, false));
  RECGPT_ASSIGN_OR_RETURN(DType kv_dtype, dtype_flag(flags.kv_dtype, "--kv-dtype", weight_dtype, true));
  RECGPT_ASSIGN_OR_RETURN(
      capacity::HardwareProfile prefill_hardware,
      capacity::load_hardware(flags.prefill_hardware.empty() ? flags.hardware : flags.prefill_hardware));
  RECGPT_ASSIGN_OR_RETURN(
      capacity::HardwareProfile decode_hardware,
      capacity::load_hardware(flags.decode_hardware.empty() ? flags.hardware : flags.decode_hardware));
  RECGPT_ASSIGN_OR_RETURN(
      capacity::PerfModel prefill_model,
      capacity::PerfModel::create(config, prefill_hardware, weight_dtype, kv_dtype, flags.block_size));
  RECGPT_ASSIGN_OR_RETURN(
      capacity::PerfModel decode_model,
      capacity::PerfModel::create(config, decode_hardware, weight_dtype, kv_dtype, flags.block_size));
  RECGPT_ASSIGN_OR_RETURN(router::WorkflowDefinition workflow, find_workflow(flags));
  capacity::WorkloadOptions workload_options;
  workload_options.context_tokens = flags.context_tokens;
  workload_options.request_field_tokens = flags.request_field_tokens;
  workload_options.system_tokens = flags.system_tokens;
  RECGPT_ASSIGN_OR_RETURN(workload_options.options, parse_assignments<int32_t>(flags.options, "--option"));
  RECGPT_ASSIGN_OR_RETURN(workload_options.output_tokens,
                          parse_assignments<int64_t>(flags.output_tokens, "--output-tokens"));
  RECGPT_ASSIGN_OR_RETURN(workload_options.suffix_tokens,
                          parse_assignments<int64_t>(flags.suffix_tokens, "--suffix-tokens"));
  capacity::PlanRequest request;
  RECGPT_ASSIGN_OR_RETURN(request.workload, capacity::shape_workflow(workflow, workload_options));
  workload_options.context_tokens = flags.text_context_tokens;
  RECGPT_ASSIGN_OR_RETURN(request.baseline, capacity::shape_workflow(workflow, workload_options));
  request.baseline.share_prefix = false;
  request.prefill_model = &prefill_model;
  request.decode_model = &decode_model;
  request.objectives = flags.objectives;
  request.max_nodes = flags.max_nodes;
  request.simulation.workflows_per_second = flags.rate;
  request.simulation.duration_seconds = flags.duration > 0 ? flags.duration : std::max(60.0, 2000 / flags.rate);
  request.simulation.seed = flags.seed;
  request.simulation.max_step_tokens = flags.max_step_tokens;
  request.simulation.max_batch = flags.max_batch;
  request.simulation.call_overhead_seconds = flags.call_overhead;
  RECGPT_ASSIGN_OR_RETURN(request.simulation.policy.kind, router::parse_policy(flags.policy));
  if (flags.prefill_nodes > 0 || flags.decode_nodes > 0 || flags.colocated_nodes > 0) return evaluate(flags, request);
  RECGPT_ASSIGN_OR_RETURN(capacity::Plan plan, capacity::plan_capacity(request));

  const double prefill_cost = prefill_hardware.cost_per_hour;
  const double decode_cost = decode_hardware.cost_per_hour;
  if (flags.json) {
    nlohmann::json out = {
        {"workflow", request.workload.workflow},
        {"workflows_per_second", flags.rate},
        {"model",
         {{"parameters", parameters},
          {"weight_bytes", decode_model.weight_bytes()},
          {"kv_bytes_per_token", decode_model.kv_bytes_per_token()}}},
        {"hardware", {{"prefill", prefill_hardware.name}, {"decode", decode_hardware.name}}},
        {"kv_blocks_per_node", {{"prefill", prefill_model.kv_blocks()}, {"decode", decode_model.kv_blocks()}}},
        {"calls_per_workflow", request.workload.calls()},
        {"objectives",
         {{"ttft_p99_seconds", flags.objectives.ttft_p99_seconds},
          {"itl_p99_seconds", flags.objectives.itl_p99_seconds},
          {"workflow_p99_seconds", flags.objectives.workflow_p99_seconds}}},
        {"disaggregated", pool_json(plan.disaggregated, prefill_cost, decode_cost)},
        {"colocated", pool_json(plan.colocated, prefill_cost, decode_cost)},
        {"baseline", pool_json(plan.baseline, prefill_cost, decode_cost)},
        {"simulations", plan.simulations}};
    std::printf("%s\n", out.dump(2).c_str());
    return Status::ok();
  }
  std::string stages;
  for (const capacity::StageShape& stage : request.workload.stages) {
    stages += (stages.empty() ? "" : ", ") + stage.name + " " + std::to_string(stage.calls) + "x(" +
              std::to_string(stage.suffix_tokens) + " own + " + std::to_string(stage.output_tokens) + " out)";
  }
  std::printf("recgpt plan: workflow '%s' at %g workflows/s; %.2fB parameters (%.1f GB), KV %.0f KiB/token\n",
              request.workload.workflow.c_str(), flags.rate, parameters / 1e9, decode_model.weight_bytes() / 1e9,
              decode_model.kv_bytes_per_token() / 1024);
  std::printf("  hardware: prefill %s, decode %s (%lld KV blocks of %d tokens per decode node)\n",
              prefill_hardware.name.c_str(), decode_hardware.name.c_str(),
              static_cast<long long>(decode_model.kv_blocks()), flags.block_size);
  std::printf("  calls: %lld-token shared context, then %s\n", static_cast<long long>(flags.context_tokens),
              stages.c_str());
  std::printf("  objectives: TTFT p99 <= %g s, ITL p99 <= %g s", flags.objectives.ttft_p99_seconds,
              flags.objectives.itl_p99_seconds);
  if (flags.objectives.workflow_p99_seconds > 0) {
    std::printf(", workflow p99 <= %g s", flags.objectives.workflow_p99_seconds);
  }
  std::printf("; %g s of arrivals simulated per candidate, %d candidates\n", request.simulation.duration_seconds,
              plan.simulations);
  print_pool("disaggregated", plan.disaggregated);
  print_pool("colocated", plan.colocated);
  std::printf("  baseline: every call encodes its own %lld-token text context, colocated\n",
              static_cast<long long>(flags.text_context_tokens));
  print_pool("baseline", plan.baseline);
  const capacity::PoolPlan* fewest = nullptr;
  for (const capacity::PoolPlan* candidate : {&plan.disaggregated, &plan.colocated}) {
    if (candidate->feasible && (fewest == nullptr || candidate->nodes() < fewest->nodes())) fewest = candidate;
  }
  if (fewest != nullptr && plan.baseline.feasible) {
    std::printf("  fewest nodes: %s, %d against the baseline's %d (%.0f%% fewer)\n",
                fewest == &plan.colocated ? "colocated" : "disaggregated", fewest->nodes(), plan.baseline.nodes(),
                100.0 * (1.0 - static_cast<double>(fewest->nodes()) / plan.baseline.nodes()));
  }
  if (prefill_cost > 0 || decode_cost > 0) {
    std::printf("  cost per hour: disaggregated %.2f, colocated %.2f, baseline %.2f\n",
                cost_per_hour(plan.disaggregated, prefill_cost, decode_cost),
                cost_per_hour(plan.colocated, prefill_cost, decode_cost),
                cost_per_hour(plan.baseline, prefill_cost, decode_cost));
  }
  return Status::ok();
}

}  // namespace

void add_plan_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<PlanFlags>();
  CLI::App* command = app.add_subcommand(
      "plan", "Size the prefill and decode pools that serve a workflow load within its latency objectives");
  command->add_option("--model", flags->model, "Model folder (or its config.json): only the config is read")
      ->required();
  command->add_option("--rate", flags->rate, "Workflows per second to serve")->required()->check(CLI::PositiveNumber);
  command->add_option("--dtype", flags->dtype, "Weights: f32, bf16 or f16 (default: the config's torch_dtype)");
  command->add_option("--kv-dtype", flags->kv_dtype, "KV cache: f32, bf16, f16 or fp8_e4m3 (default: the weights')");
  command
      ->add_option("--hardware", flags->hardware,
                   "Node profile of both pools: h100, h200 or a JSON file (docs/capacity.md)")
      ->capture_default_str();
  command->add_option("--prefill-hardware", flags->prefill_hardware,
                      "Profile of the prefill pool (default: --hardware)");
  command->add_option("--decode-hardware", flags->decode_hardware,
                      "Profile of the decode and colocated pools (default: --hardware)");
  command->add_option("--workflow", flags->workflow, "Workflow to serve")->capture_default_str();
  command->add_option("--workflows", flags->workflows_dir, "Folder of workflow definitions (default: built-ins)");
  command->add_option("--context-tokens", flags->context_tokens, "Tokens of one user's (hybrid) context")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 24));
  command->add_option("--text-context-tokens", flags->text_context_tokens, "The same context as text, for the baseline")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 24));
  command
      ->add_option("--system-tokens", flags->system_tokens,
                   "Tokens every call of every workflow starts with (default: estimated from the system text)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 24));
  command
      ->add_option("--request-field-tokens", flags->request_field_tokens,
                   "Tokens of each request field a prompt template names")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
  command->add_option("--option", flags->options, "A workflow option, name=value (e.g. experts=4)");
  command->add_option("--output-tokens", flags->output_tokens,
                      "Tokens a stage's calls generate, stage=N (default: the stage's max_tokens)");
  command->add_option("--suffix-tokens", flags->suffix_tokens,
                      "Tokens of a stage's own prompt, stage=N (default: estimated from its template)");
  command->add_option("--ttft-p99", flags->objectives.ttft_p99_seconds, "Objective: time to first token, seconds")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  command->add_option("--itl-p99", flags->objectives.itl_p99_seconds, "Objective: inter-token latency, seconds")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  command
      ->add_option("--workflow-p99", flags->objectives.workflow_p99_seconds,
                   "Objective: whole-workflow latency, seconds (0: none)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  command->add_option("--policy", flags->policy, "Placement: round_robin, least_loaded, prefix_aware")
      ->capture_default_str();
  command->add_option("--block-size", flags->block_size, "KV block size, tokens")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  command
      ->add_option("--max-step-tokens", flags->max_step_tokens,
                   "Largest step budget tried, tokens (chunked prefill: halvings down to 256 are tried too)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  command
      ->add_option("--call-overhead", flags->call_overhead,
                   "Seconds each call spends in the router and the control plane before a node queues it")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 60.0));
  command->add_option("--max-batch", flags->max_batch, "Sequences one decode step runs")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 16));
  command
      ->add_option("--duration", flags->duration,
                   "Seconds of arrivals simulated per candidate (default: enough for 2000 workflows, at least 60)")
      ->check(CLI::NonNegativeNumber);
  command->add_option("--seed", flags->seed, "Seed of the arrivals")->capture_default_str();
  command->add_option("--max-nodes", flags->max_nodes, "Largest pool tried")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  command->add_option("--prefill-nodes", flags->prefill_nodes, "Simulate this prefill pool (with --decode-nodes)")
      ->check(CLI::Range(0, 4096));
  command->add_option("--decode-nodes", flags->decode_nodes, "Simulate this decode pool instead of planning")
      ->check(CLI::Range(0, 4096));
  command->add_option("--colocated-nodes", flags->colocated_nodes, "Simulate this colocated pool instead of planning")
      ->check(CLI::Range(0, 4096));
  command->add_flag("--json", flags->json, "Print the plan as JSON");
  command->callback([flags, &exit_code] {
    Status status = run(*flags);
    exit_code = status.is_ok() ? 0 : report_failure(status);
  });
}

}  // namespace recgpt::cli
