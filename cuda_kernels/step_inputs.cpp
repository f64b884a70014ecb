#include "cuda_kernels/step_inputs.h"

#include <algorithm>
#include <cstring>

#include "common/status.h"

namespace recgpt::cuda {
namespace {

constexpr size_t kAlignment = 16;

size_t align_up(size_t offset) { return (offset + kAlignment - 1) / kAlignment * kAlignment; }

// Reserves `count` elements of T at the end of the layout; returns their offset.
template <typename T>
size_t place(size_t count, size_t& end) {
  const size_t offset = align_up(end);
  end = offset + count * sizeof(T);
  return offset;
}

// Appends the tiles of `count` rows from `first_row`, `tile_rows` at most each.
void add_tiles(int32_t first_row, int32_t count, int tile_rows, std::vector<int32_t>& first_rows,
               std::vector<int32_t>& row_counts, int& max_rows) {
  for (int32_t first = 0; first < count; first += tile_rows) {
    first_rows.push_back(first_row + first);
    row_counts.push_back(std::min(tile_rows, count - first));
    max_rows = std::max(max_rows, row_counts.back());
  }
}

template <typename T>
void copy_section(const std::vector<T>& values, size_t offset, std::byte* packed) {
  if (!values.empty()) std::memcpy(packed + offset, values.data(), values.size() * sizeof(T));
}

}  // namespace

StepInputs plan_step(const Batch& batch, int block_size, int32_t entity_token_id, int rows_per_tile,
                     PromptTiling prompt) {
  RECGPT_CHECK(rows_per_tile >= 1 && block_size >= 1 && prompt.tile_rows >= 0);
  auto takes_prompt_kernel = [&prompt](int32_t count) { return prompt.tile_rows > 0 && count >= kMinPromptKernelRows; };
  int64_t prompt_tiles = 0;
  for (const SequenceStep& step : batch.sequences) {
    const auto count = static_cast<int32_t>(step.tokens.size());
    if (takes_prompt_kernel(count)) prompt_tiles += (count + prompt.tile_rows - 1) / prompt.tile_rows;
  }
  if (prompt_tiles < prompt.min_tiles) prompt.tile_rows = 0;  // too few to fill the GPU: all SIMT
  StepInputs inputs;
  int32_t row = 0;
  int32_t entities = 0;
  for (const SequenceStep& step : batch.sequences) {
    const auto count = static_cast<int32_t>(step.tokens.size());
    if (count == 0) continue;
    const int32_t context_end = step.first_position + count;
    const auto table_offset = static_cast<int32_t>(inputs.block_tables.size());
    const int32_t blocks_reached = (context_end + block_size - 1) / block_size;
    inputs.block_tables.insert(inputs.block_tables.end(), step.block_table.begin(),
                               step.block_table.begin() + blocks_reached);
    inputs.entity_vectors.insert(inputs.entity_vectors.end(), step.entity_vectors.begin(), step.entity_vectors.end());
    for (int32_t i = 0; i < count; ++i) {
      const int32_t position = step.first_position + i;
      const int32_t token = step.tokens[i];
      inputs.slots.push_back(int64_t{step.block_table[position / block_size]} * block_size + position % block_size);
      inputs.tokens.push_back(token);
      inputs.entity_rows.push_back(entity_token_id >= 0 && token == entity_token_id ? entities++ : -1);
      inputs.positions.push_back(position);
      inputs.context.push_back(position + 1);
      inputs.table_offsets.push_back(table_offset);
    }
    if (step.logits == LogitsWanted::kAll) {
      for (int32_t i = 0; i < count; ++i) inputs.logit_rows.push_back(row + i);
    } else if (step.logits == LogitsWanted::kLast) {
      inputs.logit_rows.push_back(row + count - 1);
    }
    if (takes_prompt_kernel(count)) {
      add_tiles(row, count, prompt.tile_rows, inputs.prompt_tile_first_rows, inputs.prompt_tile_row_counts,
                inputs.max_prompt_tile_rows);
    } else {
      add_tiles(row, count, rows_per_tile, inputs.tile_first_rows, inputs.tile_row_counts, inputs.max_tile_rows);
      inputs.max_context = std::max(inputs.max_context, context_end);
    }
    row += count;
  }
  return inputs;
}

StepLayout layout_of(const StepInputs& inputs) {
  const size_t tokens = inputs.tokens.size();
  StepLayout layout;
  size_t end = 0;
  layout.slots = place<int64_t>(tokens, end);
  layout.tokens = place<int32_t>(tokens, end);
  layout.entity_rows = place<int32_t>(tokens, end);
  layout.positions = place<int32_t>(tokens, end);
  layout.context = place<int32_t>(tokens, end);
  layout.table_offsets = place<int32_t>(tokens, end);
  layout.logit_rows = place<int32_t>(inputs.logit_rows.size(), end);
  layout.tile_first_rows = place<int32_t>(inputs.tile_first_rows.size(), end);
  layout.tile_row_counts = place<int32_t>(inputs.tile_row_counts.size(), end);
  layout.prompt_tile_first_rows = place<int32_t>(inputs.prompt_tile_first_rows.size(), end);
  layout.prompt_tile_row_counts = place<int32_t>(inputs.prompt_tile_row_counts.size(), end);
  layout.split_tokens = place<int32_t>(1, end);
  layout.block_tables = place<int32_t>(inputs.block_tables.size(), end);
  layout.entity_vectors = place<float>(inputs.entity_vectors.size(), end);
  layout.total_bytes = align_up(end);
  return layout;
}

void pack(const StepInputs& inputs, const StepLayout& layout, std::byte* packed) {
  copy_section(inputs.slots, layout.slots, packed);
  copy_section(inputs.tokens, layout.tokens, packed);
  copy_section(inputs.entity_rows, layout.entity_rows, packed);
  copy_section(inputs.positions, layout.positions, packed);
  copy_section(inputs.context, layout.context, packed);
  copy_section(inputs.table_offsets, layout.table_offsets, packed);
  copy_section(inputs.logit_rows, layout.logit_rows, packed);
  copy_section(inputs.tile_first_rows, layout.tile_first_rows, packed);
  copy_section(inputs.tile_row_counts, layout.tile_row_counts, packed);
  copy_section(inputs.prompt_tile_first_rows, layout.prompt_tile_first_rows, packed);
  copy_section(inputs.prompt_tile_row_counts, layout.prompt_tile_row_counts, packed);
  std::memcpy(packed + layout.split_tokens, &inputs.split_tokens, sizeof(int32_t));
  copy_section(inputs.block_tables, layout.block_tables, packed);
  copy_section(inputs.entity_vectors, layout.entity_vectors, packed);
}

}  // namespace recgpt::cuda
