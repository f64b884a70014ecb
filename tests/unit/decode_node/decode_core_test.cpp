// The decode node's engine thread: reserve, start from a first token, stream, finish; expiry, cancel, no room,
// shutdown. The prompt's KV is written into the reserved blocks by a separate CPU backend, as a prefill node's
// transfer would. Every wait on the engine thread has a deadline.
#include "decode_node/decode_core.h"

#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <future>
#include <limits>

#include "engine/backend.h"
#include "engine/model_files.h"
#include "engine/model_maker.h"

namespace recgpt::decode {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

struct TinyModel {
  std::filesystem::path dir = std::filesystem::temp_directory_path() / ("recgpt_core_" + std::to_string(::getpid()));
  std::unique_ptr<ModelFiles> model;
  TinyModel() {
    REQUIRE(make_model({"tiny", 5, DType::kF32, dir.string()}).is_ok());
    model = ModelFiles::open(dir.string()).value();
  }
  ~TinyModel() { std::filesystem::remove_all(dir); }
};

GeneratorOptions small_pool() {
  GeneratorOptions options;
  options.kv_cache_bytes = 4 << 20;
  return options;
}

// Collects a sequence's stream; `done` is set by the last call.
struct Stream {
  std::mutex mutex;
  std::vector<int32_t> tokens;
  FinishReason finish = FinishReason::kNone;
  std::promise<void> ended;
  TokenSink sink() {
    return [this](std::vector<int32_t> more, std::vector<TokenLogprobs>, FinishReason reason) {
      std::lock_guard lock(mutex);
      tokens.insert(tokens.end(), more.begin(), more.end());
      if (reason != FinishReason::kNone) {
        finish = reason;
        ended.set_value();
      }
    };
  }
  bool wait() { return ended.get_future().wait_for(seconds(20)) == std::future_status::ready; }
};

Result<Reservation> reserve(DecodeCore& core, const std::vector<int32_t>& prompt, int32_t budget,
                            milliseconds lifetime = milliseconds(60000)) {
  std::promise<Result<Reservation>> answer;
  core.reserve({prompt, {}, budget, Clock::now() + lifetime},
               [&](Result<Reservation> r) { answer.set_value(std::move(r)); });
  auto future = answer.get_future();
  REQUIRE(future.wait_for(seconds(20)) == std::future_status::ready);
  return future.get();
}

// Fills the reservation's blocks with the prompt's KV using another backend over the core's cache, and returns
// the greedy first token: what a prefill node and its transfer do.
int32_t prefill_into(const ModelFiles& model, DecodeCore& core, const Reservation& reservation,
                     const std::vector<int32_t>& prompt) {
  auto backend = create_backend("cpu", model, {});
  REQUIRE(backend.is_ok());
  Batch batch;
  batch.sequences.push_back({prompt, {}, 0, reservation.blocks, LogitsWanted::kLast});
  HostLogits logits;
  REQUIRE((*backend)->forward(batch, core.kv_cache(), logits).is_ok());
  logits[model.config().entity_adaptor->entity_token_id] = -std::numeric_limits<float>::infinity();
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

std::vector<int32_t> colocated(const ModelFiles& model, const std::vector<int32_t>& prompt, int32_t budget) {
  auto generator = Generator::create(model, small_pool()).value();
  GenerationRequest request;
  request.prompt = prompt;
  request.max_new_tokens = budget;
  REQUIRE(generator->add(request).is_ok());
  std::vector<int32_t> tokens;
  for (int step = 0; step < 300 && !generator->idle(); ++step) {
    auto produced = generator->step();
    REQUIRE(produced.is_ok());
    for (const StepToken& token : *produced) {
      if (token.token >= 0) tokens.push_back(token.token);
    }
  }
  return tokens;
}

bool eventually_within(Clock::duration limit, const std::function<bool()>& condition) {
  for (const auto end = Clock::now() + limit; Clock::now() < end;) {
    if (condition()) return true;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return condition();
}

bool eventually(const std::function<bool()>& condition) { return eventually_within(seconds(4), condition); }

TEST_CASE(
    "a reservation started from the prefill's first token streams the colocated greedy tokens, then its "
    "blocks come back",
    "[decode][core]") {
  TinyModel tiny;
  auto core = DecodeCore::create(*tiny.model, small_pool()).value();
  std::vector<int32_t> prompt;
  for (int i = 0; i < 29; ++i) prompt.push_back(2 + (i * 13) % 150);
  auto reservation = reserve(*core, prompt, 9);
  REQUIRE(reservation.is_ok());
  const int32_t first = prefill_into(*tiny.model, *core, *reservation, prompt);
  Stream stream;
  core->start({reservation->id, first, {}, {}}, stream.sink());
  REQUIRE(stream.wait());
  std::vector<int32_t> all = {first};
  all.insert(all.end(), stream.tokens.begin(), stream.tokens.end());
  CHECK(all == colocated(*tiny.model, prompt, 9));
  CHECK(stream.finish == FinishReason::kLength);
  CHECK(eventually([&] { return core->counters().kv_blocks_used == 0 && core->counters().running == 0; }));
}

TEST_CASE(
    "a reservation prefilled locally (no prefill node) streams the colocated greedy tokens from its first token, "
    "reusing the node's cached prefix",
    "[decode][core][local_prefill]") {
  TinyModel tiny;
  auto core = DecodeCore::create(*tiny.model, small_pool()).value();
  std::vector<int32_t> prompt;
  for (int i = 0; i < 40; ++i) prompt.push_back(3 + (i * 17) % 140);
  std::vector<int32_t> sibling(prompt.begin(), prompt.begin() + 35);  // shares two full blocks
  for (int i = 0; i < 6; ++i) sibling.push_back(5 + i);
  int64_t cached_before = 0;
  for (const auto& [call, expected_cached] : {std::pair{prompt, 0}, std::pair{sibling, 32}}) {
    auto reservation = reserve(*core, call, 7);
    REQUIRE(reservation.is_ok());
    CHECK(reservation->cached_tokens == expected_cached);
    Stream stream;
    StartRequest start;
    start.reservation_id = reservation->id;
    start.prefill_locally = true;
    core->start(std::move(start), stream.sink());
    REQUIRE(stream.wait());
    CHECK(stream.tokens == colocated(*tiny.model, call, 7));
    CHECK(stream.finish == FinishReason::kLength);
    CHECK(core->counters().prompt_tokens_prefilled_locally - cached_before ==
          static_cast<int64_t>(call.size()) - expected_cached);
    cached_before = core->counters().prompt_tokens_prefilled_locally;
    CHECK(eventually([&] { return core->counters().kv_blocks_used == 0 && core->counters().running == 0; }));
  }
}

TEST_CASE("the token-gap observer sees one gap per token after each sequence's first", "[decode][core][metrics]") {
  TinyModel tiny;
  std::atomic<int> gaps = 0;
  std::atomic<bool> negative = false;
  auto core = DecodeCore::create(*tiny.model, small_pool(), [&](double seconds) {
                ++gaps;
                if (seconds < 0) negative = true;
              }).value();
  std::vector<int32_t> prompt;
  for (int i = 0; i < 29; ++i) prompt.push_back(2 + (i * 13) % 150);
  // Prefilled elsewhere: its first token comes with the start, so each of the 8 decoded here follows a gap.
  auto pushed = reserve(*core, prompt, 9);
  REQUIRE(pushed.is_ok());
  Stream first_stream;
  core->start({pushed->id, prefill_into(*tiny.model, *core, *pushed, prompt), {}, {}}, first_stream.sink());
  REQUIRE(first_stream.wait());
  CHECK(first_stream.tokens.size() == 8);
  CHECK(gaps == 8);
  // Prefilled here: its first token is the prompt's (time to first token), the other 6 follow gaps.
  auto local = reserve(*core, prompt, 7);
  REQUIRE(local.is_ok());
  Stream second_stream;
  StartRequest start;
  start.reservation_id = local->id;
  start.prefill_locally = true;
  core->start(std::move(start), second_stream.sink());
  REQUIRE(second_stream.wait());
  CHECK(second_stream.tokens.size() == 7);
  CHECK(gaps == 8 + 6);
  CHECK_FALSE(negative);
}

TEST_CASE("a local prefill the engine refuses (entity vectors missing) ends cancelled and returns the blocks",
          "[decode][core][local_prefill]") {
  TinyModel tiny;
  auto core = DecodeCore::create(*tiny.model, small_pool()).value();
  const int32_t entity = tiny.model->config().entity_adaptor->entity_token_id;
  std::vector<int32_t> prompt = {5, 6, entity, 7, 8};
  std::promise<Result<Reservation>> answer;
  core->reserve({prompt, {42}, 4, Clock::now() + seconds(60)},
                [&](Result<Reservation> r) { answer.set_value(std::move(r)); });
  auto reservation = answer.get_future().get();
  REQUIRE(reservation.is_ok());
  Stream stream;
  StartRequest start;
  start.reservation_id = reservation->id;
  start.prefill_locally = true;  // and no vector for the entity token
  core->start(std::move(start), stream.sink());
  REQUIRE(stream.wait());
  CHECK(stream.finish == FinishReason::kCancelled);
  CHECK(stream.tokens.empty());
  CHECK(eventually([&] { return core->counters().kv_blocks_used == 0; }));
  CHECK(core->counters().prompt_tokens_prefilled_locally == 0);
}

TEST_CASE("an unstarted reservation expires at its deadline and returns its blocks, starting it then fails",
          "[decode][core]") {
  TinyModel tiny;
  auto core = DecodeCore::create(*tiny.model, small_pool()).value();
  auto reservation = reserve(*core, std::vector<int32_t>(40, 9), 8, milliseconds(50));
  REQUIRE(reservation.is_ok());
  // The counters catch up at the end of the engine's turn; expired, the prompt blocks stay used while fenced.
  CHECK(eventually([&] { return core->counters().kv_blocks_used > 0; }));
  CHECK(eventually([&] { return core->counters().reservations_expired == 1; }));
  // A prefill node may still be writing its prompt blocks (40 tokens: 3 blocks): they come back after the grace.
  CHECK(core->counters().kv_blocks_fenced == 3);
  CHECK(core->counters().kv_blocks_used == 3);
  CHECK(eventually_within(DecodeCore::kLateWriteGrace + seconds(5),
                          [&] { return core->counters().kv_blocks_used == 0; }));
  CHECK(core->counters().kv_blocks_fenced == 0);
  CHECK(core->counters().fences_lapsed == 1);
  Stream stream;
  core->start({reservation->id, 5, {}, {}}, stream.sink());
  REQUIRE(stream.wait());
  CHECK(stream.finish == FinishReason::kCancelled);
  CHECK(stream.tokens.empty());
}

TEST_CASE("cancel ends a reservation or a running sequence, and no room is refused at once", "[decode][core]") {
  TinyModel tiny;
  auto core = DecodeCore::create(*tiny.model, small_pool()).value();
  auto waiting = reserve(*core, std::vector<int32_t>(20, 4), 4);
  REQUIRE(waiting.is_ok());
  core->cancel(waiting->id);

  const std::vector<int32_t> prompt(33, 7);
  auto running = reserve(*core, prompt, 500);
  REQUIRE(running.is_ok());
  const int32_t first = prefill_into(*tiny.model, *core, *running, prompt);
  Stream stream;
  core->start({running->id, first, {}, {}}, stream.sink());
  CHECK(eventually([&] {
    std::lock_guard lock(stream.mutex);
    return !stream.tokens.empty();
  }));
  core->cancel(running->id);
  REQUIRE(stream.wait());
  CHECK(stream.finish == FinishReason::kCancelled);
  CHECK(eventually([&] { return core->counters().kv_blocks_used == 0; }));

  auto refused = reserve(*core, std::vector<int32_t>(100000, 3), 10);
  REQUIRE_FALSE(refused.is_ok());
  CHECK(refused.status().code() == StatusCode::kResourceExhausted);
}

TEST_CASE("a fenced reservation's prompt blocks outlive its cancel until the fence is released",
          "[decode][core][fence]") {
  TinyModel tiny;
  auto core = DecodeCore::create(*tiny.model, small_pool()).value();
  auto reservation = reserve(*core, std::vector<int32_t>(40, 4), 30);  // 5 blocks, 3 of them the prompt's
  REQUIRE(reservation.is_ok());
  REQUIRE(reservation->blocks.size() == 5);
  const uint64_t fence = core->fence(reservation->id);
  core->cancel(reservation->id);
  CHECK(eventually([&] { return core->counters().reservations == 0 && core->counters().kv_blocks_used == 3; }));
  CHECK(core->counters().kv_blocks_fenced == 3);
  core->release_fence(fence);
  CHECK(eventually([&] { return core->counters().kv_blocks_used == 0; }));
  CHECK(core->counters().kv_blocks_fenced == 0);
  CHECK(core->counters().fences_lapsed == 0);
  // Nothing to hold once the reservation is gone.
  (void)core->fence(reservation->id);
  CHECK(eventually([&] { return core->counters().kv_blocks_used == 0 && core->counters().kv_blocks_fenced == 0; }));
}

TEST_CASE("a fence on a started reservation outlives its sequence and lapses at the deadline plus the grace",
          "[decode][core][fence]") {
  TinyModel tiny;
  auto core = DecodeCore::create(*tiny.model, small_pool()).value();
  const std::vector<int32_t> prompt(20, 6);  // 2 prompt blocks
  auto reservation = reserve(*core, prompt, 3, milliseconds(500));
  REQUIRE(reservation.is_ok());
  const int32_t first = prefill_into(*tiny.model, *core, *reservation, prompt);
  (void)core->fence(reservation->id);
  Stream stream;
  core->start({reservation->id, first, {}, {}}, stream.sink());
  REQUIRE(stream.wait());
  CHECK(stream.finish == FinishReason::kLength);
  CHECK(eventually([&] { return core->counters().running == 0 && core->counters().kv_blocks_used == 2; }));
  CHECK(core->counters().reservations_expired == 0);  // started: it did not expire, only its fence lapses
  CHECK(eventually_within(DecodeCore::kLateWriteGrace + seconds(5),
                          [&] { return core->counters().kv_blocks_used == 0; }));
  CHECK(core->counters().fences_lapsed == 1);
}

TEST_CASE("destroying the core ends running sequences with kCancelled", "[decode][core]") {
  TinyModel tiny;
  Stream stream;
  {
    auto core = DecodeCore::create(*tiny.model, small_pool()).value();
    const std::vector<int32_t> prompt(18, 11);
    auto reservation = reserve(*core, prompt, 1000);
    REQUIRE(reservation.is_ok());
    (void)reserve(*core, prompt, 10);  // left reserved
    core->start({reservation->id, prefill_into(*tiny.model, *core, *reservation, prompt), {}, {}}, stream.sink());
  }
  REQUIRE(stream.wait());
  CHECK(stream.finish == FinishReason::kCancelled);
}

}  // namespace
}  // namespace recgpt::decode
