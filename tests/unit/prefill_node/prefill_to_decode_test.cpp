// The two tiers as libraries in one process, joined by a real transfer engine (`local`): the decode side
// reserves blocks, the prefill side computes the prompt and streams each layer into them as it lands, the
// decode side continues from the first token. Greedy output equals a colocated run; a second prompt that shares
// the prefix is computed only past it on the prefill side and moved only past it when the decode side holds it.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>

#include "decode_node/reservation_table.h"
#include "engine/block_hash.h"
#include "engine/generator.h"
#include "engine/model_files.h"
#include "engine/model_maker.h"
#include "kv_transfer/kv_stream.h"
#include "kv_transfer/transfer_engine.h"
#include "node/node_protocol.h"
#include "prefill_node/prefill_executor.h"
#include "tests/support/colocated.h"

namespace recgpt {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::seconds;
using testing::colocated_tokens;

struct TinyModel {
  std::filesystem::path dir = std::filesystem::temp_directory_path() / ("recgpt_tiers_" + std::to_string(::getpid()));
  std::unique_ptr<ModelFiles> model;
  TinyModel() {
    REQUIRE(make_model({"tiny", 11, DType::kF32, dir.string()}).is_ok());
    auto opened = ModelFiles::open(dir.string());
    REQUIRE(opened.is_ok());
    model = std::move(opened).value();
  }
  ~TinyModel() { std::filesystem::remove_all(dir); }
};

std::unique_ptr<kv::TransferEngine> local_engine(const std::string& name) {
  kv::TransferEngineOptions options;
  options.name = name;
  auto engine = kv::create_transfer_engine("local", options);
  REQUIRE(engine.is_ok());
  return std::move(engine).value();
}

kv::MemoryRegion region_of(KvCache& cache) {
  return {cache.storage_data(), cache.storage_bytes(), kv::MemoryKind::kHost, -1};
}

// A prefill side and a decode side of one model, each with its own cache and transfer engine.
struct Tiers {
  const ModelFiles& model;
  std::unique_ptr<Generator> prefill_engine;  // its backend and cache serve the prefill executor
  std::unique_ptr<prefill::PrefillExecutor> executor;
  std::unique_ptr<Generator> decode;
  std::unique_ptr<decode::ReservationTable> reservations;
  std::unique_ptr<kv::TransferEngine> prefill_transfer = local_engine("prefill");
  std::unique_ptr<kv::TransferEngine> decode_transfer = local_engine("decode");
  std::unique_ptr<kv::KvStreamReceiver> receiver;
  kv::LocalRegionId prefill_region = 0;
  kv::PeerId decode_peer = 0;   // the decode engine, as the prefill engine knows it
  kv::PeerId prefill_peer = 0;  // the prefill engine, as the decode engine knows it (its notifications)
  kv::RemoteRegionId decode_region = 0;
  uint64_t kv_bytes_moved = 0;

  explicit Tiers(const ModelFiles& m) : model(m) {
    GeneratorOptions options;
    options.kv_cache_bytes = 8 << 20;
    prefill_engine = Generator::create(model, options).value();
    decode = Generator::create(model, options).value();
    executor = std::make_unique<prefill::PrefillExecutor>(model.config(), prefill_engine->backend(),
                                                          prefill_engine->kv_cache());
    reservations = std::make_unique<decode::ReservationTable>(decode->kv_cache().blocks(), 16);
    prefill_region = prefill_transfer->register_memory(region_of(prefill_engine->kv_cache())).value();
    auto decode_local = decode_transfer->register_memory(region_of(decode->kv_cache())).value();
    decode_peer =
        prefill_transfer->connect(decode_transfer->local_endpoint().value(), Clock::now() + seconds(5)).value();
    decode_region =
        prefill_transfer->import_region(decode_peer, decode_transfer->export_region(decode_local).value()).value();
    prefill_peer =
        decode_transfer->connect(prefill_transfer->local_endpoint().value(), Clock::now() + seconds(5)).value();
    receiver = std::make_unique<kv::KvStreamReceiver>(*decode_transfer);
  }

  struct Result {
    std::vector<int32_t> tokens;
    prefill::PrefillOutcome prefill;
    int64_t decode_cached_tokens = 0;
  };

  Result run(const GenerationRequest& request, const std::string& request_id) {
    Result result;
    const std::vector<uint64_t> hashes = [&] {
      std::vector<uint64_t> no_entities(request.prompt.size(), 0);
      return compute_block_hashes(request.prompt, no_entities, 16);
    }();
    decode::ReservationRequest wanted;
    wanted.prompt_tokens = static_cast<int64_t>(request.prompt.size());
    wanted.max_new_tokens = request.max_new_tokens;
    wanted.block_hashes = hashes;
    wanted.expires = Clock::now() + seconds(30);
    auto reservation = reservations->reserve(wanted);
    REQUIRE(reservation.is_ok());
    result.decode_cached_tokens = reservation->cached_tokens;

    prefill::PrefillInput input{request.prompt, request.entity_vectors, {}, request.sampling};
    auto plan = executor->plan(input);
    REQUIRE(plan.is_ok());
    const size_t first_block = static_cast<size_t>(reservation->cached_tokens / 16);
    const std::span<const int32_t> destination = reservation->blocks_to_fill(16);
    const size_t prompt_blocks = (request.prompt.size() + 15) / 16;
    kv::KvStreamWriterConfig config;
    config.peer = decode_peer;
    config.source_region = prefill_region;
    config.source_layout = node::describe_kv_cache(prefill_engine->kv_cache());
    config.destination_region = decode_region;
    config.destination_layout = node::describe_kv_cache(decode->kv_cache());
    config.source_blocks.assign(plan->blocks.begin() + static_cast<long>(first_block), plan->blocks.end());
    config.destination_blocks.assign(destination.begin(),
                                     destination.begin() + static_cast<long>(prompt_blocks - first_block));
    config.request_id = request_id;
    kv_bytes_moved +=
        config.source_blocks.size() * config.source_layout.block_bytes() * 2 * config.source_layout.num_layers;
    REQUIRE(receiver->expect(request_id, prefill_peer, Clock::now() + seconds(30), std::nullopt).is_ok());
    auto writer = kv::KvStreamWriter::create(*prefill_transfer, config);
    REQUIRE(writer.is_ok());
    auto outcome = executor->compute(input, *plan, [&](int32_t layer) { return (*writer)->write_layer(layer); });
    REQUIRE(outcome.is_ok());
    REQUIRE((*writer)->finish(Clock::now() + seconds(10)).is_ok());
    executor->release(*plan);
    result.prefill = *outcome;
    auto completion = receiver->wait(request_id, Clock::now() + seconds(10));
    INFO(completion.status().to_string());
    REQUIRE(completion.is_ok());

    // Every transferred block holds, byte for byte, what the prefill side computed (K and V of every layer).
    KvCache& source = prefill_engine->kv_cache();
    KvCache& target = decode->kv_cache();
    const size_t block_bytes = source.config().block_bytes_per_layer();
    for (int layer = 0; layer < source.config().num_layers; ++layer) {
      for (int array = 0; array < 2; ++array) {
        const size_t offset = (2 * static_cast<size_t>(layer) + array) * source.array_stride_bytes();
        for (size_t i = 0; i < config.source_blocks.size(); ++i) {
          const auto* from = static_cast<const std::byte*>(source.storage_data()) + offset +
                             static_cast<size_t>(config.source_blocks[i]) * block_bytes;
          const auto* to = static_cast<const std::byte*>(target.storage_data()) + offset +
                           static_cast<size_t>(config.destination_blocks[i]) * block_bytes;
          REQUIRE(std::memcmp(from, to, block_bytes) == 0);
        }
      }
    }
    auto taken = reservations->take(reservation->id);
    REQUIRE(taken.is_ok());
    auto id = decode->add_prefilled(request, taken->blocks, outcome->first_token);
    REQUIRE(id.is_ok());
    result.tokens.push_back(outcome->first_token);
    for (int step = 0; step < 200 && !decode->idle(); ++step) {
      auto produced = decode->step();
      REQUIRE(produced.is_ok());
      for (const StepToken& token : *produced) {
        if (token.token >= 0) result.tokens.push_back(token.token);
      }
    }
    return result;
  }
};

TEST_CASE("prefill streamed layer by layer into decode's reserved blocks decodes to the colocated greedy output",
          "[prefill][decode][tiers]") {
  TinyModel tiny;
  Tiers tiers(*tiny.model);
  GenerationRequest first;
  first.max_new_tokens = 10;
  for (int i = 0; i < 53; ++i) first.prompt.push_back(3 + (i * 37) % 200);
  const auto run_first = tiers.run(first, "first");
  CHECK(run_first.tokens == colocated_tokens(*tiny.model, first));
  CHECK(run_first.prefill.tokens_cached == 0);
  CHECK(run_first.decode_cached_tokens == 0);

  // Same first 48 tokens: the prefill side computes from its cache's end, the decode side holds them too.
  GenerationRequest second = first;
  second.prompt.resize(48);
  for (int i = 0; i < 20; ++i) second.prompt.push_back(100 + i);
  const uint64_t bytes_before = tiers.kv_bytes_moved;
  const auto run_second = tiers.run(second, "second");
  CHECK(run_second.tokens == colocated_tokens(*tiny.model, second));
  CHECK(run_second.prefill.tokens_cached == 48);
  CHECK(run_second.prefill.tokens_computed == 20);
  CHECK(run_second.decode_cached_tokens == 48);
  const auto block_bytes = node::describe_kv_cache(tiers.decode->kv_cache()).block_bytes();
  CHECK(tiers.kv_bytes_moved - bytes_before ==
        2 * block_bytes * 2 * tiny.model->config().num_hidden_layers);  // 2 blocks
  CHECK(tiers.decode->kv_cache().blocks().num_used_blocks() == 0);
  CHECK(tiers.reservations->size() == 0);
}

}  // namespace
}  // namespace recgpt
