// One forward step over a batch that mixes sequences at different stages: prompt chunks (many tokens) and
// decode steps (one token), each with its own paged KV block table.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace recgpt {

enum class LogitsWanted {
  kNone,  // an intermediate prompt chunk: only fill the KV cache
  kLast,  // the last position only (end of a prompt, or a decode step)
  kAll,   // every position of the chunk (scoring, `recgpt logits`)
};

// The new tokens of one sequence in this step. Views only: the caller keeps the data alive for the step.
struct SequenceStep {
  std::span<const int32_t> tokens;        // [num_new_tokens], appended after `first_position` cached tokens
  std::span<const float> entity_vectors;  // [num entity tokens among `tokens`, entity_dim], in token order
  int32_t first_position = 0;             // number of this sequence's tokens already in the KV cache
  std::span<const int32_t> block_table;   // KV blocks covering positions [0, first_position + num_new_tokens)
  LogitsWanted logits = LogitsWanted::kLast;
};

struct Batch {
  std::vector<SequenceStep> sequences;
  // When set, called once per layer, in layer order, as soon as that layer's K and V of every sequence of the
  // batch are in the KV cache (and before any later layer runs): the prefill node pushes the layer's blocks to
  // the decode node from here, overlapping the transfer with the next layers' compute. Runs on the step thread.
  std::function<void(int32_t layer)> after_layer = nullptr;

  int64_t num_tokens() const {
    int64_t total = 0;
    for (const SequenceStep& step : sequences) total += static_cast<int64_t>(step.tokens.size());
    return total;
  }

  // Rows of the logits output: for each sequence in order, 0, 1 or num_new_tokens rows.
  int64_t num_logit_rows() const {
    int64_t rows = 0;
    for (const SequenceStep& step : sequences) {
      if (step.logits == LogitsWanted::kLast && !step.tokens.empty()) rows += 1;
      if (step.logits == LogitsWanted::kAll) rows += static_cast<int64_t>(step.tokens.size());
    }
    return rows;
  }
};

}  // namespace recgpt
