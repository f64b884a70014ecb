// The BPE model of a byte-level tokenizer: turns one pre-tokenized piece (raw bytes) into token ids by
// applying merges lowest rank first, leftmost first among equal ranks, as HF tokenizers' BPE does.
//
// Thread safety: encode_word() may be called concurrently; the per-word cache is guarded by a mutex.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/status.h"

namespace recgpt {

struct BpeModelSpec {
  std::vector<std::pair<std::string, int32_t>> vocab;       // token text (byte-level alphabet) -> id
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  std::optional<std::string> unk_token;                     // emitted for bytes missing from the vocab
  bool fuse_unk = false;                                    // consecutive unknown bytes give one unk
  bool ignore_merges = false;                               // a piece that is a whole vocab token skips BPE
};

class BpeModel {
 public:
  // kDataLoss when a merge or the unk token names a token missing from the vocab.
  static Result<BpeModel> create(const BpeModelSpec& spec);

  // Appends the ids of one piece of raw bytes to `ids`.
  void encode_word(std::string_view word, std::vector<int32_t>& ids) const;

 private:
  struct MergeTarget {
    int32_t rank;
    int32_t merged_id;
  };
  struct Cache;

  void merge_word(std::string_view word, std::vector<int32_t>& ids) const;
  static uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }

  std::vector<int32_t> byte_ids_ = std::vector<int32_t>(256, -1);  // id of each single byte, -1 if none
  std::unordered_map<uint64_t, MergeTarget> merges_;
  std::unordered_map<std::string, int32_t> whole_word_ids_;  // raw bytes -> id; filled for ignore_merges only
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  std::shared_ptr<Cache> cache_;
};

}  // namespace recgpt
