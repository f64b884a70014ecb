#include "engine/token_byte_trie.h"

#include <algorithm>
#include <numeric>

namespace recgpt {

TokenByteTrie::TokenByteTrie(std::span<const std::string> tokens) : vocab_size_(static_cast<int32_t>(tokens.size())) {
  // Sorting the tokens by bytes lays out each node's subtree contiguously: one pass builds the trie in
  // depth-first order, a node's children by byte.
  std::vector<int32_t> order(tokens.size());
  std::iota(order.begin(), order.end(), 0);
  std::erase_if(order, [&](int32_t id) { return tokens[static_cast<size_t>(id)].empty(); });
  std::sort(order.begin(), order.end(),
            [&](int32_t a, int32_t b) { return tokens[static_cast<size_t>(a)] < tokens[static_cast<size_t>(b)]; });
  // Nodes are created in depth-first order; children lists are gathered per node then flattened.
  std::vector<std::vector<Edge>> children(1);
  std::vector<std::vector<int32_t>> ends(1);
  std::vector<uint32_t> path = {kRoot};  // path[d]: the node at depth d of the previous token
  std::string_view previous;
  for (int32_t id : order) {
    const std::string_view bytes = tokens[static_cast<size_t>(id)];
    size_t shared = 0;
    while (shared < previous.size() && shared < bytes.size() && previous[shared] == bytes[shared]) ++shared;
    path.resize(shared + 1);
    for (size_t depth = shared; depth < bytes.size(); ++depth) {
      const auto node = static_cast<uint32_t>(children.size());
      children.emplace_back();
      ends.emplace_back();
      children[path.back()].push_back(Edge{static_cast<uint8_t>(bytes[depth]), node});
      path.push_back(node);
    }
    ends[path.back()].push_back(id);
    previous = bytes;
  }
  edge_begin_.reserve(children.size() + 1);
  token_begin_.reserve(children.size() + 1);
  for (size_t node = 0; node < children.size(); ++node) {
    edge_begin_.push_back(static_cast<uint32_t>(edges_.size()));
    edges_.insert(edges_.end(), children[node].begin(), children[node].end());
    token_begin_.push_back(static_cast<uint32_t>(token_ids_.size()));
    token_ids_.insert(token_ids_.end(), ends[node].begin(), ends[node].end());
  }
  edge_begin_.push_back(static_cast<uint32_t>(edges_.size()));
  token_begin_.push_back(static_cast<uint32_t>(token_ids_.size()));
}

}  // namespace recgpt
