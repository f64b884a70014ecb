// The CPU backend's projection and LM-head weights, repacked at load into WeightLayout::kTiled (matmul.h) in
// anonymous memory on 2 MiB pages.
//
// Why a copy: a tiled matrix reads as one sequential stream per tile of 8 rows, not 8 streams a row apart, and
// anonymous memory gets 2 MiB pages whenever the system has them, where a file's page cache gets them only as
// large folios, which can fall to two thirds of the file after memory pressure. Measured on Zen 5 (2 threads),
// Qwen3-0.6B batch-1 decode: bf16 1.06-1.12x, f32 1.04-1.12x; f32 prefill 1.15x (docs/benchmarks.md). The cost:
// one pass over the weights at load (0.3-1.5 s for Qwen3-0.6B), and a private copy: the file's pages stay in the
// page cache (reclaimable; released from this process's mapping as they are packed, so not its RSS), and other
// processes mapping the same file no longer share this one's (BackendOptions::repack_weights off shares them).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "common/huge_page_memory.h"
#include "common/status.h"
#include "engine/cpu/matmul.h"
#include "engine/cpu/thread_pool.h"
#include "engine/tensor_view.h"

namespace recgpt {

class ModelFiles;

class TiledWeights {
 public:
  // Packs every 2-D view of `views` that tiled_layout_supported allows, in parallel over `pool`; views that
  // share memory (tied embeddings) are packed once, and the others stay where they are. Afterwards `model`
  // releases the packed views' file pages from this process (ModelFiles::release_resident_pages).
  // kResourceExhausted when the copy cannot be mapped.
  static Result<TiledWeights> pack(ThreadPool& pool, const ModelFiles& model, std::span<const TensorView* const> views);

  TiledWeights() = default;

  // `view` (2-D, f32 or bf16) as matmul reads it: its packed copy if it has one, else in place.
  WeightMatrix matrix(const TensorView& view) const;
  // Row `row` of the 2-D table `view` as f32 (embedding lookups), from its packed copy if it has one.
  void copy_row_as_f32(const TensorView& view, int64_t row, float* out) const;
  // The bytes matmul reads for `view`: its packed copy, or the view's own.
  std::span<const std::byte> memory(const TensorView& view) const;
  size_t packed_bytes() const { return memory_.size(); }

 private:
  HugePageMemory memory_;
  std::unordered_map<const void*, WeightMatrix> packed_;  // by the view's data
};

// Writes tiles [tile_begin, tile_end) of the row-major matrix `row_major` (elements of `element_bytes`, `cols` per
// row) in WeightLayout::kTiled to `tiled`, the whole matrix's tiled copy. Whole tiles and chunks only: rows %
// kWeightTileRows == 0 and a row's bytes a multiple of kWeightTileChunkBytes.
void pack_tiles(const void* row_major, size_t element_bytes, int64_t cols, int64_t tile_begin, int64_t tile_end,
                void* tiled);

// Row `row` of `w` (WeightLayout::kTiled, f32 or bf16) as f32.
void tiled_row_as_f32(const WeightMatrix& w, int64_t row, float* out);

}  // namespace recgpt
