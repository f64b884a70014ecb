// The host side of one CUDA step: what every token and every logit row of a Batch needs on the device, packed
// to go up in one copy. Sections whose size depends only on the step's token, logit-row and tile counts come
// first, so steps of the same shape put every one of them at the same offset (what a replayed CUDA graph reads);
// the block tables and entity vectors, whose sizes vary, come last. Plain host code, no CUDA.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/batch.h"

namespace recgpt::cuda {

struct StepInputs {
  // Per token of the batch, in batch order ([num_tokens] each).
  std::vector<int64_t> slots;            // KV slot: block * block_size + position % block_size
  std::vector<int32_t> tokens;           // vocabulary ids
  std::vector<int32_t> entity_rows;      // index into entity_vectors' rows for an entity token, else -1
  std::vector<int32_t> positions;        // position in its sequence
  std::vector<int32_t> context;          // tokens it attends to: position + 1
  std::vector<int32_t> table_offsets;    // where its sequence's block table starts in block_tables
  std::vector<int32_t> logit_rows;       // [num logit rows]: the token row each logits row comes from
  std::vector<int32_t> tile_first_rows;  // attention tiles: consecutive rows of one sequence (kernels.h)
  std::vector<int32_t> tile_row_counts;
  std::vector<int32_t> prompt_tile_first_rows;  // the tiles of the tensor-core prompt kernel, when it is used
  std::vector<int32_t> prompt_tile_row_counts;
  int32_t split_tokens = 0;           // positions per attention split, set by the caller
  std::vector<int32_t> block_tables;  // each sequence's table, cut to the blocks its positions reach
  std::vector<float> entity_vectors;  // [num entities, entity_dim]

  int max_context = 0;  // over the rows in (SIMT) tiles: what their attention splits are sized by
  int max_tile_rows = 1;
  int max_prompt_tile_rows = 1;
  int64_t num_tokens() const { return static_cast<int64_t>(tokens.size()); }
  int64_t num_logit_rows() const { return static_cast<int64_t>(logit_rows.size()); }
  int64_t num_tiles() const { return static_cast<int64_t>(tile_first_rows.size()); }
  int64_t num_prompt_tiles() const { return static_cast<int64_t>(prompt_tile_first_rows.size()); }
  int64_t num_entities(int entity_dim) const {
    return entity_dim > 0 ? static_cast<int64_t>(entity_vectors.size()) / entity_dim : 0;
  }
};

// How a step's rows are shared with the tensor-core prompt kernel: with tile_rows > 0, sequences of at least
// kMinPromptKernelRows rows go to it in tiles of up to tile_rows, provided the step has at least min_tiles such
// tiles. Fewer would leave the GPU mostly idle (a block per tile and query head, no split of the keys), and the
// SIMT kernel, which splits long contexts, serves them instead (e.g. an agent's short suffix after a long cached
// context).
constexpr int kMinPromptKernelRows = 16;
struct PromptTiling {
  int tile_rows = 0;
  int64_t min_tiles = 1;
};

// `entity_token_id` < 0 when the model has no entity adaptor; a sequence's rows go to attention in tiles of up to
// `rows_per_tile`, or to the tensor-core prompt kernel's as `prompt` says. The batch was validated
// (validate_batch).
StepInputs plan_step(const Batch& batch, int block_size, int32_t entity_token_id, int rows_per_tile,
                     PromptTiling prompt = {});

// Byte offsets of each section in the packed upload, 16-byte aligned.
struct StepLayout {
  size_t slots = 0, tokens = 0, entity_rows = 0, positions = 0, context = 0, table_offsets = 0, logit_rows = 0,
         tile_first_rows = 0, tile_row_counts = 0, prompt_tile_first_rows = 0, prompt_tile_row_counts = 0,
         split_tokens = 0, block_tables = 0, entity_vectors = 0, total_bytes = 0;
};
StepLayout layout_of(const StepInputs& inputs);

// Writes every section at its offset; `packed` holds layout.total_bytes.
void pack(const StepInputs& inputs, const StepLayout& layout, std::byte* packed);

}  // namespace recgpt::cuda
