// Shared by the node integration tests: a tiny model on disk, `recgpt prefill|decode` children, and a driver
// that plays the router's part of an agent call over the control protocol (reserve on decode, prefill into
// the reservation, start decoding, read the token stream), step by step or whole.
#pragma once

#include <signal.h>
#include <unistd.h>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <catch2/catch.hpp>
#include <filesystem>
#include <functional>
#include <map>
#include <regex>
#include <thread>
#include <utility>

#include "common/rpc/connection.h"
#include "common/subprocess.h"
#include "engine/block_hash.h"
#include "engine/generator.h"
#include "engine/model_files.h"
#include "engine/model_fingerprint.h"
#include "engine/model_maker.h"
#include "node/agent_call.h"
#include "node/node_protocol.h"
#include "tests/integration/programs.h"
#include "tests/support/colocated.h"
#include "tests/support/curl.h"
#include "tests/support/time_scale.h"

namespace recgpt::testing {

namespace asio = boost::asio;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

// A deadline on the wire (Unix milliseconds), `later` from now.
inline uint64_t unix_ms_from_now(milliseconds later) {
  return static_cast<uint64_t>(
      (std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch()) + later).count());
}

// A random model (`tiny` by default, seed 6) in a folder of its own, removed at the end.
struct TinyModel {
  std::filesystem::path dir = [] {
    static int count = 0;
    return std::filesystem::temp_directory_path() /
           ("recgpt_nodes_" + std::to_string(::getpid()) + "_" + std::to_string(count++));
  }();
  std::unique_ptr<ModelFiles> model;
  std::string fingerprint;
  explicit TinyModel(const std::string& preset = "tiny") {
    REQUIRE(make_model({preset, 6, DType::kF32, dir.string()}).is_ok());
    model = ModelFiles::open(dir.string()).value();
    fingerprint = model_fingerprint(*model).value();
  }
  ~TinyModel() { std::filesystem::remove_all(dir); }
};

// Starts `argv` and reads its first `count` lines (each within 30 s, scaled) into `lines`: the ports a child prints.
inline Subprocess start_child(const std::vector<std::string>& argv, int count, std::vector<std::string>& lines) {
  auto spawned = Subprocess::spawn(argv);
  REQUIRE(spawned.is_ok());
  Subprocess process = std::move(spawned).value();
  for (int i = 0; i < count; ++i) {
    auto line = process.read_line(Clock::now() + scaled(seconds(30)));
    REQUIRE(line.is_ok());
    lines.push_back(*line);
  }
  return process;
}

// The port printed as " key=N" in `line` (a node prints "... port=P admin_port=A", a router "... port=P").
inline uint16_t port_in(const std::string& line, const std::string& key) {
  std::smatch match;
  REQUIRE(std::regex_search(line, match, std::regex(" " + key + "=(\\d+)")));
  return static_cast<uint16_t>(std::stoi(match[1]));
}

// A `recgpt prefill` or `recgpt decode` child and the control port it printed.
// Whether `condition` holds within `within` (scaled), polled every 50 ms.
inline bool eventually(const std::function<bool()>& condition, milliseconds within = seconds(10)) {
  for (const auto end = Clock::now() + scaled(within); Clock::now() < end;) {
    if (condition()) return true;
    std::this_thread::sleep_for(milliseconds(50));
  }
  return condition();
}

// The value of the first sample of /metrics on 127.0.0.1:`port` (curl) whose name and labels match `sample` (a
// regex over the text before the value, e.g. `recgpt_kv_blocks\{.*state="used"\}`); -1 when none does.
inline double metric_at(uint16_t port, const std::string& sample) {
  auto curl = Subprocess::spawn(
      {"/usr/bin/curl", "-s", "--max-time", "5", "http://127.0.0.1:" + std::to_string(port) + "/metrics"});
  REQUIRE(curl.is_ok());
  double value = -1;
  const std::regex pattern("^" + sample + " ([-+0-9.eE]+)$");
  for (;;) {
    auto line = curl->read_line(Clock::now() + seconds(10));
    if (!line.is_ok()) break;
    std::smatch match;
    if (value < 0 && std::regex_search(*line, match, pattern)) value = std::stod(match[1]);
  }
  (void)curl->wait(Clock::now() + seconds(10));
  return value;
}

struct Node {
  Subprocess process;
  uint16_t port = 0;
  uint16_t admin_port = 0;
  Node(const std::string& role, const TinyModel& model, const std::string& tls, int kv_cache_mib = 8,
       const std::vector<std::string>& extra_flags = {}) {
    std::vector<std::string> argv = {
        recgpt_program(), role, "--model", model.dir.string(), "--kv-cache-mib", std::to_string(kv_cache_mib),
        "--threads",      "1"};
    if (!tls.empty()) argv.insert(argv.end(), {"--transfer-setting", "tls=" + tls});  // empty: not a ucx node
    if (std::find(extra_flags.begin(), extra_flags.end(), "--node-id") == extra_flags.end())
      argv.insert(argv.end(), {"--node-id", role + "-test"});
    argv.insert(argv.end(), extra_flags.begin(), extra_flags.end());
    std::vector<std::string> lines;
    process = start_child(argv, 1, lines);
    port = port_in(lines[0], "port");
    admin_port = port_in(lines[0], "admin_port");
  }

  // The node's /metrics sample matching `sample` (metric_at).
  double metric(const std::string& sample) const { return metric_at(admin_port, sample); }
  // Whether that sample reads `expected` within `within`.
  bool shows(const std::string& sample, double expected, milliseconds within = seconds(10)) const {
    return eventually([&] { return metric(sample) == expected; }, within);
  }

  // GET /readyz (curl): the HTTP status (0 when none came) and the body.
  std::pair<int, std::string> readyz() const {
    const CurlReply reply = curl(local_url(admin_port, "/readyz"));
    return {reply.status, reply.body};
  }

  // Whether /readyz answers `status` within ~10 s (peers are probed every 2 s); the last body in `body`.
  bool becomes_ready(int status, std::string* body = nullptr) const {
    for (int i = 0; i < 100; ++i) {
      auto [code, text] = readyz();
      if (body != nullptr) *body = text;
      if (code == status) return true;
      std::this_thread::sleep_for(milliseconds(100));
    }
    return false;
  }

  // The KV blocks in use, from /metrics; -1 when the node does not report them.
  int used_blocks() const { return static_cast<int>(metric("recgpt_kv_blocks\\{.*state=\"used\"\\}")); }

  // Whether /metrics shows `expected` used blocks within `within` (gauges refresh every 100 ms).
  bool shows_used(int expected, milliseconds within = seconds(10)) const {
    return eventually([&] { return used_blocks() == expected; }, within);
  }
  ~Node() {
    process.kill(SIGTERM);
    (void)process.wait(Clock::now() + seconds(10));
  }
};

// A node's process stopped (SIGSTOP) from construction until resume() or destruction (SIGCONT), even when a
// check in between fails: meanwhile it takes frames into its sockets and answers nothing.
class Paused {
 public:
  explicit Paused(Node& node) : node_(node) { node_.process.kill(SIGSTOP); }
  ~Paused() { resume(); }
  Paused(const Paused&) = delete;
  Paused& operator=(const Paused&) = delete;
  void resume() {
    if (std::exchange(paused_, false)) node_.process.kill(SIGCONT);
  }

 private:
  Node& node_;
  bool paused_ = true;
};

// `recgpt serve`: prefill and decode in one process over the in-process transfer backend, each side with its own
// control and admin port.
struct ColocatedNodes {
  Subprocess process;
  uint16_t prefill_port = 0;
  uint16_t decode_port = 0;
  explicit ColocatedNodes(const TinyModel& model, std::vector<std::string> extra_flags = {}) {
    std::vector<std::string> argv = {
        recgpt_program(), "serve", "--model", model.dir.string(), "--kv-cache-mib", "8", "--prefill-kv-cache-mib", "8",
        "--threads",      "1"};
    argv.insert(argv.end(), extra_flags.begin(), extra_flags.end());
    std::vector<std::string> lines;
    process = start_child(argv, 2, lines);  // the prefill side's ports, then the decode side's
    prefill_port = port_in(lines[0], "port");
    decode_port = port_in(lines[1], "port");
  }
  ~ColocatedNodes() {
    process.kill(SIGTERM);
    (void)process.wait(Clock::now() + seconds(10));
  }
};

// A 7000-token prompt: on the `small` model its prefill runs long enough (seconds) to be interrupted.
inline GenerationRequest long_prompt_request() {
  GenerationRequest request;
  for (int i = 0; i < 7000; ++i) request.prompt.push_back(5 + (i * 7) % 200);
  request.max_new_tokens = 4;
  return request;
}

struct CallResult {
  std::vector<int32_t> tokens;
  uint32_t decode_cached_tokens = 0;
  control::PrefillDone prefill;
};

// The router's part of agent calls, over two started connections to nodes that answered their hello. Token
// chunks from the decode node land in `chunks` (the decode connection's frame handler fills it).
class Driver {
 public:
  Driver(std::shared_ptr<rpc::Connection> prefill, std::shared_ptr<rpc::Connection> decode, control::Hello decode_hello,
         control::Hello prefill_hello, std::map<uint64_t, std::vector<control::TokenChunk>>& chunks,
         int32_t entity_token, int entity_dim)
      : prefill_(std::move(prefill)),
        decode_(std::move(decode)),
        decode_hello_(std::move(decode_hello)),
        prefill_hello_(std::move(prefill_hello)),
        chunks_(chunks),
        shape_{entity_token, entity_dim} {}

  // The decode node's reply to a reservation of the request (a reservation, no room, or an error).
  asio::awaitable<control::Envelope> reserve(const GenerationRequest& request, uint64_t deadline_unix_ms = 0) {
    node::AgentCall call = agent_call(request);
    call.reservation_deadline_unix_ms = deadline_unix_ms;
    auto reply = co_await decode_->call(node::make_reserve(call, shape_), Clock::now() + seconds(20));
    REQUIRE(reply.is_ok());
    co_return *reply;
  }

  // The prefill node's reply (PrefillDone or an Error) to filling `reservation` with the request's prompt, or the
  // call's failure (the node died, the deadline passed). As the router does, the decode node first learns which
  // prefill node writes the attempt.
  asio::awaitable<Result<control::Envelope>> try_prefill(const GenerationRequest& request,
                                                         const control::Reservation& reservation,
                                                         Clock::duration timeout = seconds(60), uint32_t attempt = 1) {
    REQUIRE(decode_->send(node::make_prefill_attempt(reservation.reservation_id(), attempt, prefill_hello_)).is_ok());
    control::Envelope prefill =
        node::make_prefill_request(agent_call(request), shape_, reservation, decode_hello_, attempt);
    co_return co_await prefill_->call(prefill, Clock::now() + timeout);
  }

  asio::awaitable<control::Envelope> prefill(const GenerationRequest& request,
                                             const control::Reservation& reservation) {
    Result<control::Envelope> reply = co_await try_prefill(request, reservation);
    REQUIRE(reply.is_ok());
    co_return *reply;
  }

  // Starts decoding a filled reservation from prefill attempt `attempt` of `attempts`; the stream's chunks carry
  // the returned request id.
  uint64_t start(const GenerationRequest& request, uint64_t reservation_id, uint32_t first_token, uint32_t attempt = 1,
                 uint32_t attempts = 1) {
    control::Envelope start = node::make_start(agent_call(request), reservation_id, first_token, attempt, attempts);
    const uint64_t id = decode_->new_request_id();
    start.set_request_id(id);
    REQUIRE(decode_->send(start).is_ok());
    return id;
  }

  // Cancels the decode node's call with this request id (a reservation or a stream), after `prefill_attempts`
  // prefill attempts into it.
  void cancel(uint64_t request_id, uint32_t prefill_attempts = 0) {
    REQUIRE(decode_->send(node::make_cancel(request_id, "test", prefill_attempts)).is_ok());
  }

  const control::Hello& decode_hello() const { return decode_hello_; }
  // A driver over the same prefill node (and token chunks) and another greeted decode node.
  Driver with_decode(std::shared_ptr<rpc::Connection> decode, control::Hello hello) const {
    return Driver(prefill_, std::move(decode), std::move(hello), prefill_hello_, chunks_, shape_.entity_token,
                  shape_.entity_dim);
  }
  // Closes the connection to the prefill node, as a router that died would.
  void hang_up_prefill() { prefill_->close(Status::ok()); }
  // Closes both connections, as a router that died would.
  void hang_up() {
    hang_up_prefill();
    decode_->close(Status::ok());
  }

  // The stream's chunks so far.
  const std::vector<control::TokenChunk>& chunks_of(uint64_t id) { return chunks_[id]; }

  // The stream's chunks once one says finished (the test fails if none does within 60 s, scaled).
  asio::awaitable<std::vector<control::TokenChunk>> finished_stream(uint64_t id) {
    asio::steady_timer wait(co_await asio::this_coro::executor);
    for (const auto end = Clock::now() + scaled(seconds(60)); Clock::now() < end;) {
      const auto& stream = chunks_[id];
      if (!stream.empty() && stream.back().finished()) break;
      wait.expires_after(milliseconds(10));
      co_await wait.async_wait(asio::use_awaitable);
    }
    const auto& stream = chunks_[id];
    REQUIRE(!stream.empty());
    REQUIRE(stream.back().finished());
    co_return stream;
  }

  // A whole agent call: reserve, prefill, decode to the end.
  asio::awaitable<CallResult> run(const GenerationRequest& request) {
    CallResult result;
    control::Envelope reserved = co_await reserve(request);
    INFO(reserved.DebugString());
    REQUIRE(reserved.reserve_kv_reply().has_reservation());
    const control::Reservation reservation = reserved.reserve_kv_reply().reservation();
    result.decode_cached_tokens = reservation.cached_tokens();
    control::Envelope done = co_await prefill(request, reservation);
    INFO(done.DebugString());
    REQUIRE(done.has_prefill_done());
    result.prefill = done.prefill_done();
    result.tokens.push_back(static_cast<int32_t>(result.prefill.first_token()));
    const uint64_t id = start(request, reservation.reservation_id(), result.prefill.first_token());
    std::vector<control::TokenChunk> stream = co_await finished_stream(id);
    CHECK(stream.back().finish_reason() == "length");
    for (const control::TokenChunk& chunk : stream) {
      for (uint32_t token : chunk.token_ids()) result.tokens.push_back(static_cast<int32_t>(token));
    }
    co_return result;
  }

 private:
  static node::AgentCall agent_call(const GenerationRequest& request) {
    node::AgentCall call;
    call.prompt = request.prompt;
    call.entity_vectors = request.entity_vectors;
    call.max_new_tokens = request.max_new_tokens;
    call.sampling = request.sampling;
    return call;
  }

  std::shared_ptr<rpc::Connection> prefill_;
  std::shared_ptr<rpc::Connection> decode_;
  control::Hello decode_hello_;
  control::Hello prefill_hello_;
  std::map<uint64_t, std::vector<control::TokenChunk>>& chunks_;
  node::EntityShape shape_;
};

// Connects and exchanges hellos as a router. Token chunks land in `chunks`, load reports in `reports` (each
// optional).
inline asio::awaitable<std::shared_ptr<rpc::Connection>> greet(
    uint16_t port, const std::string& fingerprint, std::map<uint64_t, std::vector<control::TokenChunk>>* chunks,
    control::Hello* hello, std::vector<control::LoadReport>* reports = nullptr) {
  rpc::Connection::FrameHandler on_frame = [chunks, reports](control::Envelope envelope) {
    if (chunks != nullptr && envelope.has_token_chunk())
      (*chunks)[envelope.request_id()].push_back(envelope.token_chunk());
    if (reports != nullptr && envelope.has_load_report()) reports->push_back(envelope.load_report());
  };
  auto connection = co_await node::greet("127.0.0.1", port, control::ROLE_ROUTER, fingerprint, std::move(on_frame),
                                         Clock::now() + seconds(10), hello);
  REQUIRE(connection.is_ok());
  co_return *connection;
}

// Greets a decode node and a prefill node of `model` as a router, runs `body` with a Driver over them, then
// closes both connections; on a fresh io_context within `budget`. Fails the test when the body did not finish.
inline void drive_pair(const TinyModel& model, const Node& decode_node, const Node& prefill_node,
                       const std::function<asio::awaitable<void>(Driver&)>& body, seconds budget = seconds(180)) {
  asio::io_context io;
  bool finished = false;
  std::map<uint64_t, std::vector<control::TokenChunk>> chunks;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        control::Hello decode_hello;
        control::Hello prefill_hello;
        auto decode = co_await greet(decode_node.port, model.fingerprint, &chunks, &decode_hello);
        auto prefill = co_await greet(prefill_node.port, model.fingerprint, nullptr, &prefill_hello);
        const ModelConfig& config = model.model->config();
        Driver driver(prefill, decode, decode_hello, prefill_hello, chunks, config.entity_adaptor->entity_token_id,
                      config.entity_adaptor->entity_dim);
        co_await body(driver);
        decode->close(Status::ok());
        prefill->close(Status::ok());
        finished = true;
      },
      asio::detached);
  io.run_for(scaled(budget));
  REQUIRE(finished);
}

}  // namespace recgpt::testing
