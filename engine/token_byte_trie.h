// A vocabulary as a trie over its tokens' bytes, for masks that a byte-level automaton decides
// (engine/json_vocabulary.h): walking the trie feeds each shared prefix once and drops a whole subtree at the
// first byte refused, instead of feeding every token's bytes. Immutable after build.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace recgpt {

class TokenByteTrie {
 public:
  // tokens[id] are token id's bytes; empty ones (special tokens, unused ids) are in no node.
  explicit TokenByteTrie(std::span<const std::string> tokens);

  struct Edge {
    uint8_t byte;
    uint32_t child;
  };
  static constexpr uint32_t kRoot = 0;
  std::span<const Edge> edges(uint32_t node) const {
    return {edges_.data() + edge_begin_[node], edge_begin_[node + 1] - edge_begin_[node]};
  }
  // The tokens whose bytes end at `node`.
  std::span<const int32_t> tokens_at(uint32_t node) const {
    return {token_ids_.data() + token_begin_[node], token_begin_[node + 1] - token_begin_[node]};
  }
  size_t num_nodes() const { return edge_begin_.size() - 1; }
  int32_t vocab_size() const { return vocab_size_; }

 private:
  int32_t vocab_size_ = 0;
  std::vector<uint32_t> edge_begin_;  // per node, and one past the last
  std::vector<Edge> edges_;           // each node's, by byte
  std::vector<uint32_t> token_begin_;
  std::vector<int32_t> token_ids_;
};

}  // namespace recgpt
