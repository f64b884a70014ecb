#include "engine/cpu/tiled_weights.h"

#include <algorithm>
#include <cstring>

#include "engine/cpu/ops.h"
#include "engine/dtype.h"
#include "engine/model_files.h"

namespace recgpt {
namespace {

// Packed copies start on their own 4 KiB page (whole tiles are 512-byte multiples already).
constexpr size_t kPackedAlignment = 4096;

// Tiles per pool task (Qwen3-0.6B: 512 KiB of weights), and bytes of weights packed between releases.
constexpr int64_t kTilesPerTask = 32;
constexpr int64_t kSliceBytes = int64_t{16} << 20;

// `count` values of `dtype` (f32 or bf16) from `values` as f32.
void widen(const std::byte* values, DType dtype, int64_t count, float* out) {
  if (dtype == DType::kF32) return (void)std::memcpy(out, values, count * sizeof(float));
  convert_bf16_to_f32(reinterpret_cast<const uint16_t*>(values), count, out);
}

WeightMatrix in_place(const TensorView& view) {
  RECGPT_CHECK(view.shape.size() == 2 && (view.dtype == DType::kF32 || view.dtype == DType::kBF16));
  return WeightMatrix{view.dtype, view.data, view.shape[0], view.shape[1]};
}

}  // namespace

void pack_tiles(const void* row_major, size_t element_bytes, int64_t cols, int64_t tile_begin, int64_t tile_end,
                void* tiled) {
  const auto row_bytes = static_cast<int64_t>(element_bytes) * cols;
  const int64_t chunks = row_bytes / kWeightTileChunkBytes;
  for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
    auto* out = static_cast<std::byte*>(tiled) + tile * kWeightTileRows * row_bytes;
    const auto* rows = static_cast<const std::byte*>(row_major) + tile * kWeightTileRows * row_bytes;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      for (int64_t r = 0; r < kWeightTileRows; ++r) {
        std::memcpy(out, rows + r * row_bytes + chunk * kWeightTileChunkBytes, kWeightTileChunkBytes);
        out += kWeightTileChunkBytes;
      }
    }
  }
}

void tiled_row_as_f32(const WeightMatrix& w, int64_t row, float* out) {
  RECGPT_CHECK(w.layout == WeightLayout::kTiled && row >= 0 && row < w.rows);
  const auto element_bytes = static_cast<int64_t>(dtype_size(w.dtype));
  const int64_t chunk_elements = kWeightTileChunkBytes / element_bytes;
  const auto* tile =
      static_cast<const std::byte*>(w.data) + row / kWeightTileRows * kWeightTileRows * w.cols * element_bytes;
  for (int64_t chunk = 0; chunk < w.cols / chunk_elements; ++chunk) {
    const std::byte* values = tile + (chunk * kWeightTileRows + row % kWeightTileRows) * kWeightTileChunkBytes;
    widen(values, w.dtype, chunk_elements, out + chunk * chunk_elements);
  }
}

Result<TiledWeights> TiledWeights::pack(ThreadPool& pool, const ModelFiles& model,
                                        std::span<const TensorView* const> views) {
  // Where each distinct packable view goes in the copy.
  struct Job {
    const TensorView* view;
    size_t offset;
  };
  std::vector<Job> jobs;
  size_t total = 0;
  for (const TensorView* view : views) {
    const bool seen =
        std::any_of(jobs.begin(), jobs.end(), [&](const Job& job) { return job.view->data == view->data; });
    if (seen || view->shape.size() != 2 || !tiled_layout_supported(view->dtype, view->shape[0], view->shape[1])) {
      continue;
    }
    jobs.push_back({view, total});
    total += (view->num_bytes() + kPackedAlignment - 1) / kPackedAlignment * kPackedAlignment;
  }
  TiledWeights weights;
  if (jobs.empty()) return weights;
  RECGPT_ASSIGN_OR_RETURN(weights.memory_, HugePageMemory::allocate(total));

  // Slice by slice, each slice's source pages released before the next is read: this process never holds
  // more than one slice of the weights twice (serving's RSS stays within weights + KV pool + 15%).
  for (const Job& job : jobs) {
    const TensorView& view = *job.view;
    std::byte* packed = weights.memory_.data() + job.offset;
    const int64_t tiles = view.shape[0] / kWeightTileRows;
    const int64_t tile_bytes = kWeightTileRows * view.shape[1] * static_cast<int64_t>(dtype_size(view.dtype));
    const int64_t tiles_per_slice = std::max<int64_t>(1, kSliceBytes / tile_bytes);
    for (int64_t first = 0; first < tiles; first += tiles_per_slice) {
      const int64_t last = std::min(tiles, first + tiles_per_slice);
      pool.parallel_for((last - first + kTilesPerTask - 1) / kTilesPerTask, [&](int64_t begin, int64_t end) {
        pack_tiles(view.data, dtype_size(view.dtype), view.shape[1], first + begin * kTilesPerTask,
                   std::min(last, first + end * kTilesPerTask), packed);
      });
      model.release_resident_pages(std::span(static_cast<const std::byte*>(view.data) + first * tile_bytes,
                                             static_cast<size_t>((last - first) * tile_bytes)));
    }
    WeightMatrix matrix = in_place(view);
    matrix.data = packed;
    matrix.layout = WeightLayout::kTiled;
    weights.packed_.emplace(view.data, matrix);
  }
  return weights;
}

WeightMatrix TiledWeights::matrix(const TensorView& view) const {
  auto found = packed_.find(view.data);
  return found != packed_.end() ? found->second : in_place(view);
}

void TiledWeights::copy_row_as_f32(const TensorView& view, int64_t row, float* out) const {
  const WeightMatrix w = matrix(view);
  if (w.layout == WeightLayout::kTiled) return tiled_row_as_f32(w, row, out);
  const auto row_bytes = w.cols * static_cast<int64_t>(dtype_size(w.dtype));
  widen(static_cast<const std::byte*>(w.data) + row * row_bytes, w.dtype, w.cols, out);
}

std::span<const std::byte> TiledWeights::memory(const TensorView& view) const {
  const WeightMatrix w = matrix(view);
  return {static_cast<const std::byte*>(w.data), view.num_bytes()};
}

}  // namespace recgpt
