#include "capacity/simulator.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <memory>
#include <queue>
#include <random>
#include <vector>

#include "capacity/sim_kv_pool.h"

namespace recgpt::capacity {
namespace {

uint64_t mix(uint64_t a, uint64_t b) {  // splitmix64 of the pair
  uint64_t z = a * 0x9E3779B97F4A7C15ull + b + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Which of a prompt's full blocks another call can share: one wholly inside the system text is the same for
// every call, one wholly inside the user's context the same for every call of its workflow (when prefixes are
// shared). A later block is the call's own: no other prompt can match it, so the simulator keeps it as a
// private block and hashes only the shareable ones (chained hashes share exactly such prefixes).
enum class Scope : uint64_t { kSystem = 1, kWorkflow = 2 };
uint64_t block_hash(Scope scope, int64_t owner, int64_t index) {
  return mix(mix(static_cast<uint64_t>(scope), static_cast<uint64_t>(owner)), static_cast<uint64_t>(index));
}

int64_t blocks_of(int64_t tokens, int block_size) { return (tokens + block_size - 1) / block_size; }

struct Call {
  int64_t workflow = 0;
  int stage = 0;
  int64_t prompt_tokens = 0;
  int64_t output_tokens = 0;
  int64_t max_new_tokens = 0;
  std::vector<uint64_t> hashes;  // the prompt's shareable full blocks, in order
  double issued_at = 0;
  double first_token_at = -1;  // none yet
  bool counted_late = false;
  double last_token_at = 0;
  int prefill_node = -1;  // -1 on a colocated pool
  int decode_node = -1;
  int64_t compute_from = 0;  // the prefill starts here: what the computing node already holds
  int64_t computed = 0;      // prompt tokens computed so far, from compute_from
  int64_t transfer_tokens = 0;
  int64_t generated = 0;
  SimKvPool::Reservation reservation;
};

struct Workflow {
  double arrived_at = 0;
  size_t stage = 0;
  int outstanding = 0;
  int prefill_node = -1;  // the pair its first call ran on (affinity)
  int decode_node = -1;
  bool measured = false;
};

struct Node {
  const PerfModel* model = nullptr;
  bool decodes = false;                      // a decode or colocated node (a prefill node pushes what it computes)
  std::deque<int64_t> prompts;               // calls whose prompts it computes, first come first served
  int64_t prompt_tokens_left = 0;            // over `prompts`
  std::vector<int64_t> running;              // sequences decoding here
  std::unique_ptr<LruHashSet> prefix_cache;  // prefill nodes
  std::unique_ptr<SimKvPool> pool;           // decode and colocated nodes
  int64_t in_flight = 0;
  double link_free_at = 0;
  double busy_seconds = 0;
  bool stepping = false;
  double step_started = 0;
  std::vector<std::pair<int64_t, int64_t>> step_chunks;  // (call, prompt tokens) of the step in progress
  std::vector<int64_t> step_decodes;
};

enum class EventKind { kArrival, kPlace, kStepEnd, kKvArrived, kLateCheck };
struct Event {
  double time;
  uint64_t order;  // ties go to the earlier scheduled
  EventKind kind;
  int64_t subject;  // the workflow, node or call
};
struct Later {
  bool operator()(const Event& a, const Event& b) const {
    return a.time != b.time ? a.time > b.time : a.order > b.order;
  }
};

LatencySummary summarize(std::vector<double> samples) {
  LatencySummary summary;
  summary.count = static_cast<int64_t>(samples.size());
  if (samples.empty()) return summary;
  std::sort(samples.begin(), samples.end());
  double total = 0;
  for (double sample : samples) total += sample;
  summary.mean = total / static_cast<double>(samples.size());
  auto at = [&](double quantile) {  // nearest rank
    const size_t rank = static_cast<size_t>(std::ceil(quantile * static_cast<double>(samples.size())));
    return samples[std::clamp<size_t>(rank, 1, samples.size()) - 1];
  };
  summary.p50 = at(0.5);
  summary.p90 = at(0.9);
  summary.p99 = at(0.99);
  return summary;
}

class Simulation {
 public:
  Simulation(const PerfModel& prefill_model, const PerfModel& decode_model, const WorkloadShape& workload,
             const Pools& pools, const SimulationOptions& options)
      : workload_(workload),
        options_(options),
        colocated_(pools.colocated),
        random_(options.seed),
        step_random_(options.seed ^ 0x5DEECE66Dull) {
    if (!colocated_) {
      for (int i = 0; i < pools.prefill_nodes; ++i) {
        Node& node = prefill_.emplace_back();
        node.model = &prefill_model;
        node.prefix_cache = std::make_unique<LruHashSet>(prefill_model.kv_blocks());
      }
    }
    for (int i = 0; i < pools.decode_nodes; ++i) {
      Node& node = decode_.emplace_back();
      node.model = &decode_model;
      node.decodes = true;
      node.pool = std::make_unique<SimKvPool>(decode_model.kv_blocks());
    }
    block_size_ = decode_model.block_size();
  }

  SimulationResult run() {
    schedule(next_arrival_gap(), EventKind::kArrival, 0);
    if (options_.late_ttft_seconds > 0) schedule(options_.late_ttft_seconds / 2, EventKind::kLateCheck, 0);
    const double give_up_at = options_.duration_seconds * options_.overload_factor;
    while (!events_.empty()) {
      const Event event = events_.top();
      events_.pop();
      now_ = event.time;
      if (now_ > give_up_at) {
        result_.overloaded = true;
        break;
      }
      switch (event.kind) {
        case EventKind::kArrival: arrive(event.subject); break;
        case EventKind::kPlace: place_or_wait(event.subject); break;
        case EventKind::kStepEnd: end_step(node_at(event.subject)); break;
        case EventKind::kKvArrived: first_token(event.subject); break;
        case EventKind::kLateCheck: check_late(); break;
      }
      if (result_.late) break;
    }
    return finish_result();
  }

 private:
  // A measured call later than late_ttft_seconds to its first token counts once, when seen.
  void count_if_late(Call& call) {
    if (options_.late_ttft_seconds <= 0 || call.counted_late ||
        !workflows_[static_cast<size_t>(call.workflow)].measured) {
      return;
    }
    const double waited = (call.first_token_at >= 0 ? call.first_token_at : now_) - call.issued_at;
    if (waited <= options_.late_ttft_seconds) return;
    call.counted_late = true;
    const double expected_calls = options_.workflows_per_second * options_.duration_seconds *
                                  (1 - options_.warmup_fraction) * static_cast<double>(workload_.calls());
    if (++late_calls_ > options_.late_share * expected_calls) result_.late = true;
  }

  // Counts the calls still waiting for their first token past the limit; runs every half limit while work is left.
  void check_late() {
    while (!waiting_first_token_.empty() &&
           calls_[static_cast<size_t>(waiting_first_token_.front())].first_token_at >= 0) {
      waiting_first_token_.pop_front();
    }
    for (int64_t call_index : waiting_first_token_) {
      Call& call = calls_[static_cast<size_t>(call_index)];
      if (call.issued_at >= now_ - options_.late_ttft_seconds) break;  // issue order: the rest are younger
      if (call.first_token_at < 0) count_if_late(call);
    }
    if (now_ < options_.duration_seconds || !waiting_first_token_.empty()) {
      schedule(now_ + options_.late_ttft_seconds / 2, EventKind::kLateCheck, 0);
    }
  }

  // Nodes are numbered prefill first, then decode.
  Node& node_at(int64_t index) {
    const auto prefill_count = static_cast<int64_t>(prefill_.size());
    return index < prefill_count ? prefill_[static_cast<size_t>(index)]
                                 : decode_[static_cast<size_t>(index - prefill_count)];
  }
  int64_t index_of(const Node& node) const {
    if (!prefill_.empty() && &node >= &prefill_.front() && &node <= &prefill_.back()) return &node - &prefill_.front();
    return static_cast<int64_t>(prefill_.size()) + (&node - &decode_.front());
  }

  void schedule(double time, EventKind kind, int64_t subject) { events_.push({time, next_order_++, kind, subject}); }
  // A log-normal factor of mean 1: exp(sigma z - sigma^2 / 2). Its own generator, so the arrivals do not depend
  // on it.
  double step_noise(double sigma) {
    if (sigma <= 0) return 1;
    return std::exp(sigma * std::normal_distribution<double>(0, 1)(step_random_) - sigma * sigma / 2);
  }
  double next_arrival_gap() { return std::exponential_distribution<double>(options_.workflows_per_second)(random_); }

  void arrive(int64_t) {
    if (now_ >= options_.duration_seconds) return;
    Workflow& workflow = workflows_.emplace_back();
    workflow.arrived_at = now_;
    workflow.measured = now_ >= options_.warmup_fraction * options_.duration_seconds;
    start_stage(static_cast<int64_t>(workflows_.size()) - 1);
    schedule(now_ + next_arrival_gap(), EventKind::kArrival, 0);
  }

  void start_stage(int64_t workflow_index) {
    Workflow& workflow = workflows_[static_cast<size_t>(workflow_index)];
    const StageShape& stage = workload_.stages[workflow.stage];
    workflow.outstanding = stage.calls;
    for (int i = 0; i < stage.calls; ++i) {
      const auto call_index = static_cast<int64_t>(calls_.size());
      Call& call = calls_.emplace_back();
      call.workflow = workflow_index;
      call.stage = static_cast<int>(workflow.stage);
      call.prompt_tokens = workload_.system_tokens + workload_.context_tokens + stage.suffix_tokens;
      call.output_tokens = stage.output_tokens;
      call.max_new_tokens = stage.max_new_tokens;
      call.issued_at = now_;
      const int64_t shared_end = workload_.system_tokens + (workload_.share_prefix ? workload_.context_tokens : 0);
      for (int64_t block = 0; (block + 1) * block_size_ <= std::min(shared_end, call.prompt_tokens); ++block) {
        call.hashes.push_back((block + 1) * block_size_ <= workload_.system_tokens
                                  ? block_hash(Scope::kSystem, 0, block)
                                  : block_hash(Scope::kWorkflow, workflow_index, block));
      }
      waiting_first_token_.push_back(call_index);
      if (options_.call_overhead_seconds > 0) {
        schedule(now_ + options_.call_overhead_seconds, EventKind::kPlace, call_index);
      } else {
        place_or_wait(call_index);
      }
    }
  }

  void place_or_wait(int64_t call_index) {
    if (!backlog_.empty() || !place(call_index)) {  // behind the calls already waiting, in order
      ++result_.calls_waited_for_room;
      backlog_.push_back(call_index);
    }
  }

  router::ClusterSnapshot snapshot() const {
    router::ClusterSnapshot cluster;
    for (const Node& node : prefill_) {
      router::NodeLoad& load = cluster.prefill.emplace_back();
      load.healthy = true;
      load.in_flight = node.in_flight;
      load.in_flight_tokens = node.prompt_tokens_left;
      load.prefix_blocks = &node.prefix_cache->hashes();
    }
    for (const Node& node : decode_) {
      router::NodeLoad& load = cluster.decode.emplace_back();
      load.healthy = true;
      load.in_flight = node.in_flight;
      load.in_flight_tokens = node.prompt_tokens_left;
      load.kv_blocks_used = node.pool->used_blocks();
      load.kv_blocks_free = node.pool->blocks() - node.pool->used_blocks();
      load.prefix_blocks = &node.pool->hashes();
    }
    return cluster;
  }

  // Reserves on the first decode node with room, as the router does; false when none has any.
  bool place(int64_t call_index) {
    Call& call = calls_[static_cast<size_t>(call_index)];
    Workflow& workflow = workflows_[static_cast<size_t>(call.workflow)];
    router::CallShape shape;
    shape.block_hashes = call.hashes;
    shape.prompt_tokens = call.prompt_tokens;
    shape.max_new_tokens = call.max_new_tokens;
    shape.block_size = block_size_;
    if (workload_.share_prefix) {  // affinity exists to reuse the shared context; isolated calls go anywhere
      shape.preferred_prefill = workflow.prefill_node;
      shape.preferred_decode = workflow.decode_node;
    }
    const router::Ranking ranking = router::rank_nodes(options_.policy, snapshot(), shape, placements_++);
    const int64_t total_blocks = blocks_of(call.prompt_tokens + call.max_new_tokens, block_size_);
    for (int decode_index : ranking.decode) {
      Node& decode = decode_[static_cast<size_t>(decode_index)];
      if (!decode.pool->reserve(call.hashes, total_blocks, call.reservation)) continue;
      note_kv_use(decode);
      call.decode_node = decode_index;
      ++decode.in_flight;
      const int64_t decode_held = call.reservation.held_blocks * block_size_;
      Node* computing = &decode;
      if (!colocated_) {
        call.prefill_node = ranking.prefill.front();
        computing = &prefill_[static_cast<size_t>(call.prefill_node)];
        call.compute_from = computing->prefix_cache->held_prefix(call.hashes) * block_size_;
        call.transfer_tokens = call.prompt_tokens - decode_held;
      } else {
        call.compute_from = decode_held;
      }
      call.compute_from = std::min(call.compute_from, call.prompt_tokens - 1);  // the last token gives the logits
      if (workflow.decode_node < 0) {
        workflow.decode_node = call.decode_node;
        workflow.prefill_node = call.prefill_node;
      }
      if (computing != &decode) ++computing->in_flight;
      computing->prompts.push_back(call_index);
      computing->prompt_tokens_left += call.prompt_tokens - call.compute_from;
      if (workflow.measured) {
        prefill_tokens_ += call.prompt_tokens - call.compute_from;
        prompt_tokens_ += call.prompt_tokens;
        transfer_tokens_ += call.transfer_tokens;
      }
      maybe_step(*computing);
      return true;
    }
    return false;
  }

  void note_kv_use(const Node& node) {
    result_.peak_kv_used_fraction =
        std::max(result_.peak_kv_used_fraction,
                 static_cast<double>(node.pool->used_blocks()) / static_cast<double>(node.pool->blocks()));
  }

  void maybe_step(Node& node) {
    if (node.stepping) return;
    StepWork work;
    node.step_decodes.clear();
    node.step_chunks.clear();
    for (int64_t call_index : node.running) {
      if (static_cast<int>(node.step_decodes.size()) == options_.max_batch) break;
      const Call& call = calls_[static_cast<size_t>(call_index)];
      node.step_decodes.push_back(call_index);
      work.decode_context_tokens += static_cast<double>(call.prompt_tokens + call.generated);
    }
    work.decode_tokens = static_cast<int64_t>(node.step_decodes.size());
    work.logits_rows = work.decode_tokens;
    int64_t budget = options_.max_step_tokens - work.decode_tokens;
    for (int64_t call_index : node.prompts) {
      if (budget <= 0) break;
      const Call& call = calls_[static_cast<size_t>(call_index)];
      const int64_t start = call.compute_from + call.computed;
      const int64_t take = std::min(call.prompt_tokens - start, budget);
      node.step_chunks.emplace_back(call_index, take);
      work.prompt_tokens += take;
      // Position p attends to p + 1 tokens: over [start, start + take) that sums to the expression below.
      work.prompt_attention_pairs += static_cast<double>(take) * static_cast<double>(start) +
                                     static_cast<double>(take) * static_cast<double>(take + 1) / 2;
      if (start + take == call.prompt_tokens) ++work.logits_rows;
      budget -= take;
    }
    if (work.prompt_tokens == 0 && work.decode_tokens == 0) return;
    const double seconds = node.model->step_seconds(work) * step_noise(node.model->hardware().step_time_sigma);
    node.stepping = true;
    node.step_started = now_;
    node.busy_seconds += seconds;
    schedule(now_ + seconds, EventKind::kStepEnd, index_of(node));
  }

  // `stepping` stays set while the step's results are applied, so nothing they trigger (a first token, a
  // finished call placing a waiting one) starts this node's next step on half-updated state.
  void end_step(Node& node) {
    const std::vector<int64_t> decodes = std::move(node.step_decodes);
    const std::vector<std::pair<int64_t, int64_t>> chunks = std::move(node.step_chunks);
    node.step_decodes.clear();
    node.step_chunks.clear();
    std::vector<int64_t> done;
    for (int64_t call_index : decodes) {
      Call& call = calls_[static_cast<size_t>(call_index)];
      ++call.generated;
      if (workflows_[static_cast<size_t>(call.workflow)].measured) itl_.push_back(now_ - call.last_token_at);
      call.last_token_at = now_;
      if (call.generated >= call.output_tokens) done.push_back(call_index);
    }
    if (!done.empty()) {
      std::erase_if(node.running,
                    [&](int64_t call) { return std::find(done.begin(), done.end(), call) != done.end(); });
    }
    for (const auto& [call_index, tokens] : chunks) {
      Call& call = calls_[static_cast<size_t>(call_index)];
      call.computed += tokens;
      node.prompt_tokens_left -= tokens;
      if (call.compute_from + call.computed < call.prompt_tokens) continue;
      std::erase(node.prompts, call_index);
      if (node.decodes) {
        first_token(call_index);
      } else {
        push_kv(node, call_index);
      }
    }
    for (int64_t call_index : done) finish(call_index);
    node.stepping = false;
    maybe_step(node);
  }

  // The prompt is computed on a prefill node: its KV goes to the decode node layer by layer while the step
  // computes, so it lands a layer's share after the later of the compute and the link.
  void push_kv(Node& node, int64_t call_index) {
    Call& call = calls_[static_cast<size_t>(call_index)];
    node.prefix_cache->touch(call.hashes);
    --node.in_flight;
    const double seconds = node.model->transfer_seconds(call.transfer_tokens);
    const double link_start = std::max(node.step_started, node.link_free_at);
    const double last_layer = seconds / node.model->config().num_hidden_layers;
    const double landed = std::max(now_, link_start + seconds) + last_layer;
    node.link_free_at = landed;
    schedule(landed, EventKind::kKvArrived, call_index);
  }

  // The prompt's last position gave the first token; the call decodes on from here.
  void first_token(int64_t call_index) {
    Call& call = calls_[static_cast<size_t>(call_index)];
    call.first_token_at = now_;
    call.last_token_at = now_;
    count_if_late(call);
    call.generated = 1;
    if (call.generated >= call.output_tokens) {
      finish(call_index);
      return;
    }
    Node& decode = decode_[static_cast<size_t>(call.decode_node)];
    decode.running.push_back(call_index);
    maybe_step(decode);
  }

  void finish(int64_t call_index) {
    Call& call = calls_[static_cast<size_t>(call_index)];
    Node& decode = decode_[static_cast<size_t>(call.decode_node)];
    decode.pool->release(call.hashes, call.reservation);
    --decode.in_flight;
    std::vector<uint64_t>().swap(call.hashes);
    Workflow& workflow = workflows_[static_cast<size_t>(call.workflow)];
    if (workflow.measured) {
      ttft_.push_back(call.first_token_at - call.issued_at);
      ttft_by_stage_[workload_.stages[static_cast<size_t>(call.stage)].name].push_back(call.first_token_at -
                                                                                       call.issued_at);
    }
    if (--workflow.outstanding == 0) {
      if (++workflow.stage < workload_.stages.size()) {
        start_stage(call.workflow);
      } else if (workflow.measured) {
        workflow_latency_.push_back(now_ - workflow.arrived_at);
      }
    }
    while (!backlog_.empty() && place(backlog_.front())) backlog_.pop_front();
  }

  SimulationResult finish_result() {
    result_.simulated_seconds = now_;
    result_.ttft = summarize(std::move(ttft_));
    result_.itl = summarize(std::move(itl_));
    result_.workflow_latency = summarize(std::move(workflow_latency_));
    for (auto& [stage, samples] : ttft_by_stage_) result_.ttft_by_stage[stage] = summarize(std::move(samples));
    result_.workflows = result_.workflow_latency.count;
    const double measured = std::max<double>(1, static_cast<double>(result_.workflows));
    result_.prefill_tokens_per_workflow = static_cast<double>(prefill_tokens_) / measured;
    result_.prompt_tokens_per_workflow = static_cast<double>(prompt_tokens_) / measured;
    const double kv_bytes_per_token = decode_.front().model->kv_bytes_per_token();
    result_.kv_bytes_per_workflow = static_cast<double>(transfer_tokens_) * kv_bytes_per_token / measured;
    auto utilization = [&](const std::vector<Node>& nodes) {
      double busy = 0;
      for (const Node& node : nodes) busy += node.busy_seconds;
      return nodes.empty() || now_ <= 0 ? 0.0 : busy / (static_cast<double>(nodes.size()) * now_);
    };
    result_.decode_utilization = utilization(decode_);
    result_.prefill_utilization = colocated_ ? result_.decode_utilization : utilization(prefill_);
    for (const Node& node : decode_) result_.blocks_left_reserved += node.pool->used_blocks();
    return result_;
  }

  const WorkloadShape& workload_;
  const SimulationOptions& options_;
  const bool colocated_;
  int block_size_ = 16;
  std::mt19937_64 random_;       // arrivals
  std::mt19937_64 step_random_;  // step-time noise
  std::vector<Node> prefill_;
  std::vector<Node> decode_;
  std::deque<Workflow> workflows_;
  std::deque<Call> calls_;
  std::deque<int64_t> backlog_;              // calls no decode node had room for, in order
  std::deque<int64_t> waiting_first_token_;  // calls in issue order; the front's first token is still to come
  int64_t late_calls_ = 0;
  std::priority_queue<Event, std::vector<Event>, Later> events_;
  uint64_t next_order_ = 0;
  uint64_t placements_ = 0;
  double now_ = 0;
  std::vector<double> ttft_;
  std::vector<double> itl_;
  std::vector<double> workflow_latency_;
  std::map<std::string, std::vector<double>> ttft_by_stage_;
  int64_t prefill_tokens_ = 0;
  int64_t prompt_tokens_ = 0;
  int64_t transfer_tokens_ = 0;
  SimulationResult result_;
};

}  // namespace

Result<SimulationResult> simulate(const PerfModel& prefill_model, const PerfModel& decode_model,
                                  const WorkloadShape& workload, const Pools& pools, const SimulationOptions& options) {
  if (pools.decode_nodes < 1) return invalid_argument("the decode (or colocated) pool needs at least one node");
  if (!pools.colocated && pools.prefill_nodes < 1) return invalid_argument("the prefill pool needs at least one node");
  if (!(options.workflows_per_second > 0)) return invalid_argument("the workflow rate must be positive");
  if (!(options.duration_seconds > 0)) return invalid_argument("the simulated duration must be positive");
  if (options.max_step_tokens < 1 || options.max_batch < 1) {
    return invalid_argument("a step needs room for at least one token and one sequence");
  }
  if (prefill_model.block_size() != decode_model.block_size()) {
    return invalid_argument("the prefill and decode pools must use one KV block size");
  }
  if (workload.stages.empty()) return invalid_argument("the workflow has no stages");
  for (const StageShape& stage : workload.stages) {
    const int64_t prompt = workload.system_tokens + workload.context_tokens + stage.suffix_tokens;
    if (prompt < 1) return invalid_argument("stage " + stage.name + ": a call needs at least one prompt token");
    if (blocks_of(prompt + stage.max_new_tokens, decode_model.block_size()) > decode_model.kv_blocks()) {
      return invalid_argument("stage " + stage.name + ": one call's KV (" + std::to_string(prompt) + " + " +
                              std::to_string(stage.max_new_tokens) + " tokens) does not fit a node's pool");
    }
  }
  return Simulation(prefill_model, decode_model, workload, pools, options).run();
}

}  // namespace recgpt::capacity
