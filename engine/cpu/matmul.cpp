#include "engine/cpu/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <vector>

#include "common/status.h"
#include "engine/cpu/cpu_features.h"
#include "engine/cpu/isa_kernels.h"
#include "engine/cpu/ops.h"

namespace recgpt {
namespace {

// Bytes of weights one block of output columns should span, so that with many x rows the block stays in L2
// while every x tile passes over it.
constexpr int64_t kWeightBlockBytes = 256 * 1024;

struct TiledProblem {
  const MatmulKernel* kernel;
  const std::byte* x;  // [m, k] of x_element_bytes elements
  size_t x_element_bytes;
  int64_t m;
  const std::byte* w;  // [n, k] of w_element_bytes elements
  size_t w_element_bytes;
  int64_t n;
  int64_t k;
  float* y;  // [m, n]
};

// Output columns per parallel task: a multiple of the tile width, small enough that the weight block fits
// kWeightBlockBytes and that every thread gets several tasks.
int64_t columns_per_block(const TiledProblem& problem, int num_threads) {
  int64_t tile_cols = problem.kernel->tile_cols;
  int64_t by_cache = kWeightBlockBytes / (problem.k * static_cast<int64_t>(problem.w_element_bytes));
  int64_t by_balance = problem.n / (8 * num_threads);
  int64_t columns = std::min(by_cache, by_balance) / tile_cols * tile_cols;
  return std::max(columns, tile_cols);
}

// Every x tile of the block's rows over the block's weight tiles.
void run_block(const TiledProblem& problem, int64_t column_begin, int64_t column_end) {
  const MatmulKernel& kernel = *problem.kernel;
  const void* w_rows[16];
  RECGPT_CHECK(kernel.tile_cols <= 16);
  for (int64_t row = 0; row < problem.m; row += kernel.tile_rows) {
    int rows = static_cast<int>(std::min<int64_t>(kernel.tile_rows, problem.m - row));
    for (int64_t column = column_begin; column < column_end; column += kernel.tile_cols) {
      int cols = static_cast<int>(std::min<int64_t>(kernel.tile_cols, column_end - column));
      for (int j = 0; j < kernel.tile_cols; ++j) {
        int64_t weight_row = column + std::min(j, cols - 1);  // past the edge: repeat the last row, ignored
        w_rows[j] = problem.w + weight_row * problem.k * static_cast<int64_t>(problem.w_element_bytes);
      }
      MatmulTile tile{problem.x + row * problem.k * static_cast<int64_t>(problem.x_element_bytes),
                      problem.k,
                      rows,
                      w_rows,
                      cols,
                      problem.k,
                      problem.y + row * problem.n + column,
                      problem.n};
      kernel.run(tile);
    }
  }
}

void run_tiled(ThreadPool& pool, const TiledProblem& problem) {
  int64_t columns = columns_per_block(problem, pool.num_threads());
  int64_t num_blocks = (problem.n + columns - 1) / columns;
  pool.parallel_for(num_blocks, [&](int64_t begin, int64_t end) {
    run_block(problem, begin * columns, std::min(problem.n, end * columns));
  });
}

// x rounded to bf16, rows spread over the pool when there are many.
void convert_rows(ThreadPool& pool, const float* x, int64_t m, int64_t k, uint16_t* x_bf16) {
  constexpr int64_t kRowsPerTask = 16;
  if (m * k < 256 * 1024) return convert_f32_to_bf16(x, m * k, x_bf16);
  pool.parallel_for((m + kRowsPerTask - 1) / kRowsPerTask, [&](int64_t begin, int64_t end) {
    int64_t rows = std::min(m, end * kRowsPerTask) - begin * kRowsPerTask;
    convert_f32_to_bf16(x + begin * kRowsPerTask * k, rows * k, x_bf16 + begin * kRowsPerTask * k);
  });
}

bool amx_applies(int64_t m, int64_t n, int64_t k) {
  return m >= kAmxMinRows && k % 32 == 0 && n % 32 == 0 && cpu_features().amx_bf16;
}

// Scratch for x rounded to bf16 (and packed for AMX); grows to the largest call, owned by the calling thread.
uint16_t* scratch(int index, int64_t elements) {
  thread_local std::vector<uint16_t> buffers[2];
  if (static_cast<int64_t>(buffers[index].size()) < elements) buffers[index].resize(elements);
  return buffers[index].data();
}

bool f32_panel_applies(int64_t m) { return m >= kF32PanelMinRows && m <= kF32PanelMaxRows && cpu_features().avx512; }

void matmul_f32_panels(ThreadPool& pool, const float* x, int64_t m, const float* w, int64_t n, int64_t k, float* y) {
  const int64_t num_panels = (m + kF32PanelRows - 1) / kF32PanelRows;
  // Owned by the calling thread; the pool's threads see it through this pointer.
  float* packed = reinterpret_cast<float*>(scratch(1, 2 * num_panels * kF32PanelRows * k));
  constexpr int64_t kPackSlice = 256;  // k per packing task
  pool.parallel_for((k + kPackSlice - 1) / kPackSlice, [&](int64_t begin, int64_t end) {
    f32_pack_panels(x, m, k, begin * kPackSlice, std::min(k, end * kPackSlice), packed);
  });
  constexpr int64_t kTileColumns = 12;
  int64_t by_cache = std::max<int64_t>(kTileColumns, kWeightBlockBytes / (k * 4) / kTileColumns * kTileColumns);
  int64_t by_balance = std::max<int64_t>(kTileColumns, n / (8 * pool.num_threads()) / kTileColumns * kTileColumns);
  int64_t columns = std::min(by_cache, by_balance);
  pool.parallel_for((n + columns - 1) / columns, [&](int64_t begin, int64_t end) {
    f32_panel_matmul_columns(packed, m, w, k, begin * columns, std::min(n, end * columns), y, n);
  });
}

void matmul_amx(ThreadPool& pool, const float* x, int64_t m, const uint16_t* w, int64_t n, int64_t k, float* y) {
  const int64_t row_tiles = (m + 15) / 16;
  uint16_t* x_bf16 = scratch(0, m * k);
  uint16_t* packed = scratch(1, row_tiles * 16 * k);
  pool.parallel_for(row_tiles, [&](int64_t begin, int64_t end) {
    int64_t rows = std::min(m, end * 16) - begin * 16;
    convert_f32_to_bf16(x + begin * 16 * k, rows * k, x_bf16 + begin * 16 * k);
    amx_pack_x(x_bf16, m, k, begin, end, packed);
  });
  int64_t by_cache = std::max<int64_t>(32, kWeightBlockBytes / (k * 2) / 32 * 32);
  int64_t by_balance = std::max<int64_t>(32, n / (8 * pool.num_threads()) / 32 * 32);
  int64_t columns = std::min(by_cache, by_balance);
  pool.parallel_for((n + columns - 1) / columns, [&](int64_t begin, int64_t end) {
    amx_matmul_columns(packed, m, w, k, begin * columns, std::min(n, end * columns), y, n);
  });
}

}  // namespace

void matmul(ThreadPool& pool, const float* x, int64_t m, const WeightMatrix& w, float* y) {
  RECGPT_CHECK(m >= 0 && w.rows >= 0 && w.cols >= 0);
  RECGPT_CHECK_MSG(w.dtype == DType::kF32 || w.dtype == DType::kBF16, "matmul weights must be f32 or bf16");
  const int64_t n = w.rows;
  const int64_t k = w.cols;
  if (m == 0 || n == 0) return;
  if (k == 0) {
    std::fill(y, y + m * n, 0.0f);
    return;
  }
  TiledProblem problem{nullptr,
                       reinterpret_cast<const std::byte*>(x),
                       sizeof(float),
                       m,
                       static_cast<const std::byte*>(w.data),
                       dtype_size(w.dtype),
                       n,
                       k,
                       y};
  if (w.dtype == DType::kF32) {
    if (f32_panel_applies(m)) {
      matmul_f32_panels(pool, x, m, static_cast<const float*>(w.data), n, k, y);
      return;
    }
    if (m >= kBlasMinRows) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n),
                  static_cast<int>(k), 1.0f, x, static_cast<int>(k), static_cast<const float*>(w.data),
                  static_cast<int>(k), 0.0f, y, static_cast<int>(n));
      return;
    }
    problem.kernel = &isa_kernels().matmul_f32_weights;
    run_tiled(pool, problem);
    return;
  }
  if (!cpu_features().avx512_bf16) {
    problem.kernel = &isa_kernels().matmul_bf16_weights;
    run_tiled(pool, problem);
    return;
  }
  if (amx_applies(m, n, k)) {
    matmul_amx(pool, x, m, static_cast<const uint16_t*>(w.data), n, k, y);
    return;
  }
  static const MatmulKernel bf16_dot = bf16_dot_matmul_kernel();
  uint16_t* x_bf16 = scratch(0, m * k);
  convert_rows(pool, x, m, k, x_bf16);
  problem.kernel = &bf16_dot;
  problem.x = reinterpret_cast<const std::byte*>(x_bf16);
  problem.x_element_bytes = sizeof(uint16_t);
  run_tiled(pool, problem);
}

}  // namespace recgpt
