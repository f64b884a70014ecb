// Per-sequence constraints on the next token: a processor sees the raw logits of a sequence's next position
// and the tokens so far (prompt and generated), and may lower logits (set -inf to forbid a token) before the
// sampler draws. Structured output (a tag catalogue trie, a JSON shape) is built on this by the router.
//
// Contract: called on the engine thread, once per generated token of its sequence, in order; it keeps its own
// state across calls (e.g. a position in a trie). It must leave at least one finite logit; if it leaves none,
// the sequence ends (FinishReason::kConstraint).
#pragma once

#include <cstdint>
#include <span>

namespace recgpt {

class LogitsProcessor {
 public:
  virtual ~LogitsProcessor() = default;
  // `logits` [vocab] of the next position; `tokens` the sequence so far.
  virtual void process(std::span<float> logits, std::span<const int32_t> tokens) = 0;
};

}  // namespace recgpt
