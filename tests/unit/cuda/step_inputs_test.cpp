// The host side of a CUDA step, which runs without a GPU: what each token and logit row is given, where the
// packed sections land, and how attention is split.
#include "cuda_kernels/step_inputs.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>

#include "cuda_kernels/kernels.h"

namespace recgpt::cuda {
namespace {

TEST_CASE("a step's inputs name each token's slot, context, table and entity, and each logit row's token") {
  const int32_t entity = 99;
  std::vector<int32_t> chunk = {1, entity, 3, 4}, decode = {7}, quiet = {entity, 8, entity};
  std::vector<float> chunk_vector = {0.5f, 0.25f}, quiet_vectors = {1, 2, 3, 4};
  std::vector<int32_t> chunk_table = {6, 2, 11}, decode_table = {3, 0, 9, 1}, quiet_table = {5};
  const Batch batch{{{chunk, chunk_vector, 14, chunk_table, LogitsWanted::kAll},  // positions 14..17
                     {decode, {}, 40, decode_table, LogitsWanted::kLast},         // position 40
                     {{}, {}, 0, {}, LogitsWanted::kLast},                        // nothing this step
                     {quiet, quiet_vectors, 0, quiet_table, LogitsWanted::kNone}}};
  const StepInputs inputs = plan_step(batch, 16, entity, 3);

  CHECK(inputs.tokens == std::vector<int32_t>{1, entity, 3, 4, 7, entity, 8, entity});
  CHECK(inputs.positions == std::vector<int32_t>{14, 15, 16, 17, 40, 0, 1, 2});
  CHECK(inputs.context == std::vector<int32_t>{15, 16, 17, 18, 41, 1, 2, 3});
  CHECK(inputs.slots == std::vector<int64_t>{6 * 16 + 14, 6 * 16 + 15, 2 * 16 + 0, 2 * 16 + 1, 9 * 16 + 8, 5 * 16,
                                             5 * 16 + 1, 5 * 16 + 2});
  CHECK(inputs.entity_rows == std::vector<int32_t>{-1, 0, -1, -1, -1, 1, -1, 2});
  CHECK(inputs.entity_vectors == std::vector<float>{0.5f, 0.25f, 1, 2, 3, 4});
  CHECK(inputs.num_entities(2) == 3);
  // Tables cut to the blocks the positions reach: 18 positions -> 2 blocks, 41 -> 3, 3 -> 1.
  CHECK(inputs.block_tables == std::vector<int32_t>{6, 2, 3, 0, 9, 5});
  CHECK(inputs.table_offsets == std::vector<int32_t>{0, 0, 0, 0, 2, 5, 5, 5});
  CHECK(inputs.logit_rows == std::vector<int32_t>{0, 1, 2, 3, 4});
  CHECK(inputs.max_context == 41);
  // Attention tiles of up to 3 consecutive rows, never across sequences: the chunk's 4 rows as 3 + 1.
  CHECK(inputs.tile_first_rows == std::vector<int32_t>{0, 3, 4, 5});
  CHECK(inputs.tile_row_counts == std::vector<int32_t>{3, 1, 1, 3});
  CHECK(inputs.max_tile_rows == 3);
}

TEST_CASE("with the tensor-core prompt kernel, long chunks go to its tiles and the rest to the others") {
  std::vector<int32_t> long_chunk(150, 5), short_chunk(kMinPromptKernelRows - 1, 6), decode = {7};
  std::vector<int32_t> table(16, 0);
  const Batch batch{{{decode, {}, 40, table, LogitsWanted::kLast},
                     {long_chunk, {}, 30, table, LogitsWanted::kLast},
                     {short_chunk, {}, 0, table, LogitsWanted::kLast}}};
  const StepInputs inputs = plan_step(batch, 16, -1, 4, {kPromptTileRows, 3});
  // The 150 rows (1..150) as 64 + 64 + 22; the decode row and the 15-row chunk (151..165) in tiles of 4.
  CHECK(inputs.prompt_tile_first_rows == std::vector<int32_t>{1, 65, 129});
  CHECK(inputs.prompt_tile_row_counts == std::vector<int32_t>{64, 64, 22});
  CHECK(inputs.max_prompt_tile_rows == 64);
  CHECK(inputs.tile_first_rows == std::vector<int32_t>{0, 151, 155, 159, 163});
  CHECK(inputs.tile_row_counts == std::vector<int32_t>{1, 4, 4, 4, 3});
  // The SIMT tiles' splits are sized by their own rows' contexts (the decode row's 41), not the long chunk's 180.
  CHECK(inputs.max_context == 41);
  // Every row in exactly one tile.
  std::vector<int> covered(inputs.tokens.size(), 0);
  for (auto [firsts, counts] : {std::pair{&inputs.tile_first_rows, &inputs.tile_row_counts},
                                {&inputs.prompt_tile_first_rows, &inputs.prompt_tile_row_counts}}) {
    for (size_t i = 0; i < firsts->size(); ++i) {
      for (int32_t r = 0; r < (*counts)[i]; ++r) ++covered[(*firsts)[i] + r];
    }
  }
  CHECK(std::all_of(covered.begin(), covered.end(), [](int times) { return times == 1; }));
  // Without it (the default), or when its 3 tiles would be fewer than the step needs to fill the GPU, every chunk
  // in the small tiles.
  for (const StepInputs& without : {plan_step(batch, 16, -1, 4), plan_step(batch, 16, -1, 4, {kPromptTileRows, 4})}) {
    CHECK(without.num_prompt_tiles() == 0);
    CHECK(without.num_tiles() == 1 + 38 + 4);
    CHECK(without.max_context == 180);
  }

  const StepLayout layout = layout_of(inputs);
  std::vector<std::byte> packed(layout.total_bytes);
  pack(inputs, layout, packed.data());
  int32_t first_rows[3], row_counts[3];
  std::memcpy(first_rows, packed.data() + layout.prompt_tile_first_rows, sizeof(first_rows));
  std::memcpy(row_counts, packed.data() + layout.prompt_tile_row_counts, sizeof(row_counts));
  CHECK(std::vector<int32_t>(first_rows, first_rows + 3) == inputs.prompt_tile_first_rows);
  CHECK(std::vector<int32_t>(row_counts, row_counts + 3) == inputs.prompt_tile_row_counts);
}

TEST_CASE("steps of the same shape put every fixed-size section at the same offset, and packing keeps values") {
  std::vector<int32_t> tokens = {3, 4}, short_table = {1}, long_table = {1, 2, 3, 4, 5, 6};
  StepInputs early = plan_step({{{std::span(tokens).first(1), {}, 3, short_table, LogitsWanted::kLast},
                                 {std::span(tokens).last(1), {}, 0, short_table, LogitsWanted::kLast}}},
                               16, -1, 4);
  StepInputs late = plan_step({{{std::span(tokens).first(1), {}, 90, long_table, LogitsWanted::kLast},
                                {std::span(tokens).last(1), {}, 70, long_table, LogitsWanted::kLast}}},
                              16, -1, 4);
  const StepLayout a = layout_of(early), b = layout_of(late);
  for (auto field : {&StepLayout::slots, &StepLayout::tokens, &StepLayout::entity_rows, &StepLayout::positions,
                     &StepLayout::context, &StepLayout::table_offsets, &StepLayout::logit_rows,
                     &StepLayout::tile_first_rows, &StepLayout::tile_row_counts, &StepLayout::prompt_tile_first_rows,
                     &StepLayout::prompt_tile_row_counts, &StepLayout::split_tokens, &StepLayout::block_tables}) {
    CHECK(a.*field == b.*field);
    CHECK(a.*field % 16 == 0);
  }
  CHECK(a.total_bytes < b.total_bytes);

  late.split_tokens = 77;
  std::vector<std::byte> packed(b.total_bytes);
  pack(late, b, packed.data());
  int64_t slots[2];
  int32_t context[2], split_tokens, tables[11], tile_first_rows[2], tile_row_counts[2];
  std::memcpy(slots, packed.data() + b.slots, sizeof(slots));
  std::memcpy(context, packed.data() + b.context, sizeof(context));
  std::memcpy(&split_tokens, packed.data() + b.split_tokens, sizeof(split_tokens));
  std::memcpy(tables, packed.data() + b.block_tables, sizeof(tables));
  std::memcpy(tile_first_rows, packed.data() + b.tile_first_rows, sizeof(tile_first_rows));
  std::memcpy(tile_row_counts, packed.data() + b.tile_row_counts, sizeof(tile_row_counts));
  CHECK(slots[0] == 6 * 16 + 90 % 16);
  CHECK(slots[1] == 5 * 16 + 70 % 16);
  CHECK(context[0] == 91);
  CHECK(context[1] == 71);
  CHECK(split_tokens == 77);
  CHECK(tile_first_rows[0] == 0);
  CHECK(tile_first_rows[1] == 1);
  CHECK(tile_row_counts[0] == 1);
  CHECK(tile_row_counts[1] == 1);
  CHECK(std::vector<int32_t>(tables, tables + 11) == std::vector<int32_t>{1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5});
}

TEST_CASE("attention splits cover the context, fill the GPU and stay within the kernel's shared memory") {
  for (int64_t rows : {1, 3, 8, 32, 64, 512}) {
    for (int kv_heads : {1, 8}) {
      for (int max_context : {1, 63, 64, 65, 1000, 1024, 1025, 4096, 16384, 32768, 40000}) {
        for (int multiprocessors : {1, 132}) {
          const AttentionSplits splits = attention_splits(rows, kv_heads, max_context, multiprocessors);
          INFO("rows " << rows << " kv heads " << kv_heads << " context " << max_context << " SMs " << multiprocessors);
          CHECK(splits.splits >= 1);
          CHECK(int64_t{splits.splits} * splits.split_tokens >= max_context);
          CHECK(splits.split_tokens <= kMaxSplitTokens);
          // No split is left empty, and splitting happens only where it pays: short of filling the GPU with
          // kBlocksPerMultiprocessor blocks on each multiprocessor, and never below 64 positions a split.
          CHECK(int64_t{splits.splits - 1} * splits.split_tokens < max_context);
          if (max_context <= kMaxSplitTokens && rows * kv_heads >= kBlocksPerMultiprocessor * multiprocessors) {
            CHECK(splits.splits == 1);
          }
          // Whole rounds of resident blocks: never more rounds than the longest allowed split needs, and a split
          // more would start another round, unless the 64-position floor binds (splits of 64 to 127 positions).
          const int64_t blocks = rows * kv_heads, resident = int64_t{kBlocksPerMultiprocessor} * multiprocessors;
          const int64_t at_least = (max_context + kMaxSplitTokens - 1) / kMaxSplitTokens;
          const int64_t rounds = (blocks * at_least + resident - 1) / resident;
          CHECK(blocks * splits.splits <= rounds * resident);
          if (splits.split_tokens >= 128) CHECK(blocks * (splits.splits + 1) > rounds * resident);
          if (splits.splits > 1 && max_context > 64) CHECK(splits.split_tokens >= 64);
        }
      }
    }
  }
}

}  // namespace
}  // namespace recgpt::cuda
