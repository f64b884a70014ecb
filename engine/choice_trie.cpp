#include "engine/choice_trie.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>
#include <unordered_map>

namespace recgpt {
namespace {

std::string_view trim(std::string_view text) {
  const size_t begin = text.find_first_not_of(" \t\r");
  if (begin == std::string_view::npos) return {};
  const size_t end = text.find_last_not_of(" \t\r");
  return text.substr(begin, end - begin + 1);
}

}  // namespace

Result<std::shared_ptr<const ChoiceTrie>> ChoiceTrie::build(const Tokenizer& tokenizer,
                                                            std::span<const std::string> choices) {
  return build_named(tokenizer, choices,
                     [&](size_t i) { return "choice " + std::to_string(i) + " ('" + choices[i] + "')"; });
}

Result<std::shared_ptr<const ChoiceTrie>> ChoiceTrie::build_named(const Tokenizer& tokenizer,
                                                                  std::span<const std::string> choices,
                                                                  const std::function<std::string(size_t)>& name_of) {
  auto trie = std::shared_ptr<ChoiceTrie>(new ChoiceTrie());
  // Built with a map per node, then laid out flat (edges of a node contiguous, sorted by token).
  std::vector<std::map<int32_t, int32_t>> children(1);
  std::vector<int32_t> choice_of(1, -1);
  std::unordered_map<std::string, int32_t> seen;
  trie->token_offsets_.push_back(0);
  for (size_t line = 0; line < choices.size(); ++line) {
    const std::string& text = choices[line];
    if (text.empty()) return invalid_argument(name_of(line) + " is empty");
    if (text.find('\n') != std::string::npos) return invalid_argument(name_of(line) + " holds a line break");
    if (seen.count(text) > 0) continue;
    const std::vector<int32_t> tokens = tokenizer.encode(text);
    for (int32_t token : tokens) {
      if (tokenizer.is_special(token)) return invalid_argument(name_of(line) + " holds a special token");
    }
    int32_t node = kRoot;
    for (int32_t token : tokens) {
      auto [it, added] = children[static_cast<size_t>(node)].try_emplace(token, static_cast<int32_t>(children.size()));
      if (added) {
        children.emplace_back();
        choice_of.push_back(-1);
      }
      node = it->second;
    }
    const auto index = static_cast<int32_t>(trie->choices_.size());
    if (choice_of[static_cast<size_t>(node)] >= 0) {
      // Two texts, one token sequence (e.g. a tokenizer that normalizes): the first one names it.
      seen.emplace(text, choice_of[static_cast<size_t>(node)]);
      continue;
    }
    choice_of[static_cast<size_t>(node)] = index;
    seen.emplace(text, index);
    trie->choices_.push_back(text);
    trie->tokens_.insert(trie->tokens_.end(), tokens.begin(), tokens.end());
    trie->token_offsets_.push_back(static_cast<int32_t>(trie->tokens_.size()));
  }
  // Flatten in creation order (a parent is created before its children), then count choices bottom-up.
  trie->nodes_.resize(children.size());
  for (size_t node = 0; node < children.size(); ++node) {
    Node& flat = trie->nodes_[node];
    flat.first_edge = static_cast<int32_t>(trie->edges_.size());
    flat.num_edges = static_cast<int32_t>(children[node].size());
    flat.choice = choice_of[node];
    for (const auto& [token, child] : children[node]) trie->edges_.push_back({token, child});
  }
  for (size_t node = children.size(); node-- > 0;) {
    Node& flat = trie->nodes_[node];
    flat.choices_below += flat.choice >= 0 ? 1 : 0;
    for (const Edge& edge : trie->edges(static_cast<int32_t>(node)))
      flat.choices_below += trie->nodes_[static_cast<size_t>(edge.child)].choices_below;
  }
  trie->index_ = std::move(seen);
  return std::shared_ptr<const ChoiceTrie>(std::move(trie));
}

Result<std::shared_ptr<const ChoiceTrie>> ChoiceTrie::load(const Tokenizer& tokenizer, const std::string& path) {
  std::ifstream file(path);
  if (!file) return not_found("tag catalogue '" + path + "' cannot be opened");
  std::stringstream text;
  text << file.rdbuf();
  if (file.bad()) return io_error("reading tag catalogue '" + path + "' failed");
  return parse(tokenizer, text.str(), path);
}

Result<std::shared_ptr<const ChoiceTrie>> ChoiceTrie::parse(const Tokenizer& tokenizer, std::string_view text,
                                                            const std::string& source) {
  // Blank lines are skipped, but errors name the line as the file numbers it.
  std::vector<std::string> choices;
  std::vector<size_t> line_of;
  size_t line = 0;
  for (size_t begin = 0; begin < text.size(); ++line) {
    size_t end = text.find('\n', begin);
    if (end == std::string_view::npos) end = text.size();
    std::string_view item = trim(text.substr(begin, end - begin));
    if (!item.empty()) {
      choices.emplace_back(item);
      line_of.push_back(line);
    }
    begin = end + 1;
  }
  RECGPT_ASSIGN_OR_RETURN(auto trie, build_named(tokenizer, choices, [&](size_t i) {
                            return source + ":" + std::to_string(line_of[i] + 1) + " ('" + choices[i] + "')";
                          }));
  if (trie->num_choices() == 0) return invalid_argument("tag catalogue '" + source + "' holds no tag");
  return trie;
}

std::span<const int32_t> ChoiceTrie::choice_tokens(int32_t index) const {
  const auto begin = static_cast<size_t>(token_offsets_[static_cast<size_t>(index)]);
  const auto end = static_cast<size_t>(token_offsets_[static_cast<size_t>(index) + 1]);
  return std::span(tokens_).subspan(begin, end - begin);
}

std::span<const ChoiceTrie::Edge> ChoiceTrie::edges(int32_t node) const {
  const Node& flat = nodes_[static_cast<size_t>(node)];
  return std::span(edges_).subspan(static_cast<size_t>(flat.first_edge), static_cast<size_t>(flat.num_edges));
}

int32_t ChoiceTrie::child(int32_t node, int32_t token) const {
  const std::span<const Edge> list = edges(node);
  auto it = std::lower_bound(list.begin(), list.end(), token, [](const Edge& e, int32_t t) { return e.token < t; });
  return it != list.end() && it->token == token ? it->child : -1;
}

int32_t ChoiceTrie::find(std::string_view text) const {
  auto it = index_.find(std::string(text));
  return it == index_.end() ? -1 : it->second;
}

}  // namespace recgpt
