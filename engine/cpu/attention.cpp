#include "engine/cpu/attention.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/status.h"
#include "engine/cpu/cpu_features.h"
#include "engine/cpu/isa_kernels.h"
#include "engine/cpu/ops.h"

namespace recgpt {
namespace {

// Query rows (queries x query heads) per work item: enough to reuse each K/V row, few enough to keep the
// accumulators in L1 and to split a prefill over the threads.
constexpr int kRowsPerWorkItem = kMaxAttentionRows;
// Tokens per task when their K and V rows are written to the cache.
constexpr int64_t kTokensPerStoreTask = 8;
// Heads are split across more items until each thread has at least this many.
constexpr int kMinItemsPerThread = 4;

void check_view(const KvLayerView& kv) {
  RECGPT_CHECK_MSG(kv.dtype == DType::kF32 || kv.dtype == DType::kBF16, "KV cache must be f32 or bf16");
  RECGPT_CHECK(kv.block_size > 0 && kv.num_kv_heads > 0);
  RECGPT_CHECK_MSG(kv.head_dim > 0 && kv.head_dim % 16 == 0 && kv.head_dim <= kMaxAttentionHeadDim,
                   "head_dim must be a multiple of 16, at most 256");
}

}  // namespace

void store_kv(ThreadPool& pool, const KvLayerView& kv, const int64_t* slots, const float* k, const float* v,
              int64_t num_tokens) {
  check_view(kv);
  const int64_t row = static_cast<int64_t>(kv.num_kv_heads) * kv.head_dim;
  pool.parallel_for((num_tokens + kTokensPerStoreTask - 1) / kTokensPerStoreTask, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin * kTokensPerStoreTask; t < std::min(num_tokens, end * kTokensPerStoreTask); ++t) {
      RECGPT_CHECK(slots[t] >= 0);
      if (kv.dtype == DType::kF32) {
        std::memcpy(static_cast<float*>(kv.key) + slots[t] * row, k + t * row, row * sizeof(float));
        std::memcpy(static_cast<float*>(kv.value) + slots[t] * row, v + t * row, row * sizeof(float));
      } else {
        convert_f32_to_bf16(k + t * row, row, static_cast<uint16_t*>(kv.key) + slots[t] * row);
        convert_f32_to_bf16(v + t * row, row, static_cast<uint16_t*>(kv.value) + slots[t] * row);
      }
    }
  });
}

bool uses_bf16_decode_attention(const KvLayerView& kv, const AttentionSequence& sequence, int num_heads) {
  return kv.dtype == DType::kBF16 && kv.head_dim % 32 == 0 && cpu_features().avx512_bf16 &&
         int64_t{sequence.num_queries} * (num_heads / kv.num_kv_heads) <= kBf16DecodeRowsPerHead;
}

void paged_attention(ThreadPool& pool, const KvLayerView& kv, std::span<const AttentionSequence> sequences,
                     int num_heads, float scale) {
  check_view(kv);
  RECGPT_CHECK_MSG(num_heads % kv.num_kv_heads == 0, "num_heads must be a multiple of num_kv_heads");
  const int group = num_heads / kv.num_kv_heads;
  RECGPT_CHECK_MSG(group <= kMaxAttentionRows, "too many query heads per kv head");
  for (const AttentionSequence& sequence : sequences) {
    RECGPT_CHECK(sequence.num_queries >= 0 && sequence.first_position >= 0);
    int64_t end_position = int64_t{sequence.first_position} + sequence.num_queries;
    RECGPT_CHECK_MSG(end_position <= static_cast<int64_t>(sequence.block_table.size()) * kv.block_size,
                     "block table too short for the sequence's positions");
  }

  // Items take up to kRowsPerWorkItem query rows (kBf16DecodeItemRows on the bf16 decode kernel): many queries of
  // one kv head (prefill) or the few queries of a decode step over several kv heads, whose K/V rows lie side by
  // side in each slot. Heads are split further while there are too few items to keep every thread busy.
  std::vector<bool> bf16_decode(sequences.size());
  for (size_t i = 0; i < sequences.size(); ++i)
    bf16_decode[i] = uses_bf16_decode_attention(kv, sequences[i], num_heads);
  auto rows_per_item = [&](size_t i) { return bf16_decode[i] ? kBf16DecodeItemRows : kRowsPerWorkItem; };
  auto queries_per_item = [&](size_t i) {
    return std::min(sequences[i].num_queries, std::max(1, rows_per_item(i) / group));
  };
  auto heads_per_item = [&](size_t i, int max_heads_per_item) {
    return std::clamp(rows_per_item(i) / (queries_per_item(i) * group), 1, max_heads_per_item);
  };
  auto count_items = [&](int max_heads_per_item) {
    int64_t total = 0;
    for (size_t i = 0; i < sequences.size(); ++i) {
      if (sequences[i].num_queries == 0) continue;
      int32_t queries = queries_per_item(i);
      int heads = heads_per_item(i, max_heads_per_item);
      total += int64_t{(sequences[i].num_queries + queries - 1) / queries} * ((kv.num_kv_heads + heads - 1) / heads);
    }
    return total;
  };
  int max_heads_per_item = kv.num_kv_heads;
  while (max_heads_per_item > 1 && count_items(max_heads_per_item) < kMinItemsPerThread * pool.num_threads()) {
    max_heads_per_item = (max_heads_per_item + 1) / 2;
  }

  std::vector<AttentionWorkItem> items;
  for (size_t i = 0; i < sequences.size(); ++i) {
    const AttentionSequence& sequence = sequences[i];
    if (sequence.num_queries == 0) continue;
    int32_t queries = queries_per_item(i);
    int heads = heads_per_item(i, max_heads_per_item);
    // Later query blocks see more keys: list them first so the longest items start early.
    for (int32_t end = sequence.num_queries; end > 0; end -= queries) {
      int32_t begin = std::max(0, end - queries);
      for (int head = 0; head < kv.num_kv_heads; head += heads) {
        items.push_back({&kv, &sequence, num_heads, head, std::min(kv.num_kv_heads, head + heads), begin, end, scale,
                         nullptr, bf16_decode[i]});
      }
    }
  }
  const IsaKernels& kernels = isa_kernels();
  pool.parallel_for(static_cast<int64_t>(items.size()), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      AttentionWorkItem item = items[i];
      item.next = i + 1 < end ? &items[i + 1] : nullptr;  // this thread's next item, known within a claim
      item.bf16_decode ? attend_bf16_dot(item) : kernels.attend(item);
    }
  });
}

}  // namespace recgpt
