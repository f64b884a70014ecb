// The AMX matmul: TDPBF16PS on 16 x 16 f32 tiles. The weights are the A operand, loaded in place (16 rows of
// 32 bf16 with the row stride of W); x, rounded to bf16, is packed once per call into the B operand's pair
// layout; each C tile holds yᵀ for 16 columns x 16 rows and is transposed on the way out.
#include <algorithm>
#include <cstdint>

#include "engine/cpu/isa_kernels.h"
#include "engine/cpu/simd_avx512.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,f16c,amx-tile,amx-bf16")

namespace recgpt::amx {
namespace {

using avx512::Simd;

constexpr int kStep = 32;                   // k per TDPBF16PS
constexpr int64_t kStepElements = 16 * 32;  // one packed B tile: 16 k pairs x 16 rows x 2
constexpr int64_t kPrefetchSteps = 4;       // how far ahead weight lines are prefetched (4-16 measured alike)

// Palette 1 with all 8 tiles 16 rows x 64 bytes: tiles 0-1 accumulate C, 4 holds W, 6-7 hold x.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

void load_tile_config() {
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.bytes_per_row[t] = 64;
    config.rows[t] = 16;
  }
  _tile_loadconfig(&config);
}

// A C tile, [16 columns][16 rows] of f32, into y[row][0..16) for row < valid_rows.
void store_transposed(const float* tile, float* y, int64_t y_stride, int valid_rows) {
  Simd::F rows[16];
  for (int i = 0; i < 16; ++i) rows[i] = Simd::load(tile + 16 * i);
  Simd::transpose(rows);
  for (int r = 0; r < std::min(valid_rows, 16); ++r) Simd::store(y + r * y_stride, rows[r]);
}

// y[rows of kRowTiles m tiles][16 columns] = x · w[0..16)ᵀ. One weight tile at a time: its 16 row streams
// are as many as the prefetchers follow well (two tiles, 32 streams, measured 1.2-1.9x slower at m = 32).
// With `next_tile`, the last steps prefetch the first lines of the 16 rows after these (the next call's), so
// no call starts on a cold stream (measured 5-15% faster at m = 32).
template <int kRowTiles>
void tile_block(const uint16_t* w /* [16, k] */, int64_t k, const uint16_t* x_tiles, float* y, int64_t y_stride,
                int valid_rows, bool next_tile) {
  const int64_t w_stride_bytes = k * 2;
  const int64_t x_tile_elements = 16 * k;
  const int64_t steps = k / kStep;
  _tile_zero(0);
  if constexpr (kRowTiles == 2) _tile_zero(1);
  for (int64_t step = 0; step < steps; ++step) {
    // Each step takes the next cache line of 16 weight rows; the lines kPrefetchSteps ahead are requested here.
    if (step + kPrefetchSteps < steps || next_tile) {
      // Past this tile's last step: the first steps of the next tile (its rows follow these in W).
      const int64_t ahead_step = step + kPrefetchSteps;
      const uint16_t* ahead = ahead_step < steps ? w + ahead_step * kStep : w + 16 * k + (ahead_step - steps) * kStep;
#pragma GCC unroll 16
      for (int row = 0; row < 16; ++row) _mm_prefetch(reinterpret_cast<const char*>(ahead + row * k), _MM_HINT_T0);
    }
    _tile_loadd(4, w + step * kStep, w_stride_bytes);
    _tile_loadd(6, x_tiles + step * kStepElements, 64);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (kRowTiles == 2) {
      _tile_loadd(7, x_tiles + x_tile_elements + step * kStepElements, 64);
      _tile_dpbf16ps(1, 4, 7);
    }
  }
  alignas(64) float tile[16 * 16];
  _tile_stored(0, tile, 64);
  store_transposed(tile, y, y_stride, valid_rows);
  if constexpr (kRowTiles == 2) {
    _tile_stored(1, tile, 64);
    store_transposed(tile, y + 16 * y_stride, y_stride, valid_rows - 16);
  }
}

}  // namespace

void pack_x(const uint16_t* x, int64_t m, int64_t k, int64_t tile_begin, int64_t tile_end, uint16_t* packed) {
  for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
    for (int64_t step = 0; step < k / kStep; ++step) {
      Simd::F rows[16];  // row r: the 16 k pairs of x row 16 tile + r, as 32-bit words
      for (int r = 0; r < 16; ++r) {
        int64_t row = tile * 16 + r;
        rows[r] = row < m ? _mm512_castsi512_ps(_mm512_loadu_si512(x + row * k + step * kStep)) : Simd::zero();
      }
      Simd::transpose(rows);  // row q: pair q of the 16 x rows
      uint16_t* out = packed + tile * 16 * k + step * kStepElements;
      for (int q = 0; q < 16; ++q) Simd::store(reinterpret_cast<float*>(out + q * 32), rows[q]);
    }
  }
}

void matmul_columns(const uint16_t* packed_x, int64_t m, const uint16_t* w, int64_t k, int64_t column_begin,
                    int64_t column_end, float* y, int64_t n) {
  load_tile_config();
  const int64_t row_tiles = (m + 15) / 16;
  for (int64_t tile = 0; tile < row_tiles; tile += 2) {
    const uint16_t* x_tiles = packed_x + tile * 16 * k;
    int valid_rows = static_cast<int>(std::min<int64_t>(32, m - tile * 16));
    for (int64_t column = column_begin; column < column_end; column += 16) {
      float* y_block = y + tile * 16 * n + column;
      const bool next_tile = column + 16 < column_end;
      if (tile + 1 < row_tiles) {
        tile_block<2>(w + column * k, k, x_tiles, y_block, n, valid_rows, next_tile);
      } else {
        tile_block<1>(w + column * k, k, x_tiles, y_block, n, valid_rows, next_tile);
      }
    }
  }
  _tile_release();
}

}  // namespace recgpt::amx

#pragma GCC pop_options

namespace recgpt {

void amx_pack_x(const uint16_t* x, int64_t m, int64_t k, int64_t tile_begin, int64_t tile_end, uint16_t* packed) {
  amx::pack_x(x, m, k, tile_begin, tile_end, packed);
}

void amx_matmul_columns(const uint16_t* packed_x, int64_t m, const uint16_t* w, int64_t k, int64_t column_begin,
                        int64_t column_end, float* y, int64_t n) {
  amx::matmul_columns(packed_x, m, w, k, column_begin, column_end, y, n);
}

}  // namespace recgpt
