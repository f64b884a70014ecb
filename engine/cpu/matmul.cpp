#include "engine/cpu/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "common/status.h"
#include "engine/cpu/cpu_features.h"
#include "engine/cpu/isa_kernels.h"
#include "engine/cpu/ops.h"

namespace recgpt {
namespace {

// k per task when x is packed over the pool (even, so that bf16 pairs are never split).
constexpr int64_t kPackSlice = 256;

// Bytes of weights one block of output columns should span, so that with many x rows the block stays in L2
// while every x tile passes over it.
constexpr int64_t kWeightBlockBytes = 256 * 1024;

// How the weights are multiplied; one path for every target of a call.
enum class Path {
  kBlas,       // f32, many rows: OpenBLAS sgemm per target (its own threads)
  kF32Panel,   // f32, AVX-512, a few dozen rows: x packed into panels
  kAmx,        // bf16 with AMX: x rounded and packed into B tiles
  kBf16Panel,  // bf16 with AVX512_BF16, a few rows or more: x rounded and packed into panels of pairs
  kBf16Dot,    // bf16 with AVX512_BF16, one to a few rows: x rounded, VDPBF16PS tiles
  kFmaDot,     // FMA tiles on f32 x (f32 weights, or bf16 widened)
};

Path choose_path(DType dtype, int64_t m, int64_t k, std::span<const MatmulTarget> targets) {
  const CpuFeatures features = cpu_features();
  const bool tiled = std::any_of(targets.begin(), targets.end(),
                                 [](const MatmulTarget& t) { return t.w.layout == WeightLayout::kTiled; });
  if (tiled && dtype == DType::kF32) return m >= kF32PanelMinRows ? Path::kF32Panel : Path::kFmaDot;
  if (dtype == DType::kF32) {
    if (m >= kF32PanelMinRows && m <= kF32PanelMaxRows && features.avx512) return Path::kF32Panel;
    return m >= kBlasMinRows ? Path::kBlas : Path::kFmaDot;
  }
  if (tiled) return m >= kBf16PanelMinRows ? Path::kBf16Panel : Path::kBf16Dot;
  if (!features.avx512_bf16) return Path::kFmaDot;
  bool columns_fit =
      std::all_of(targets.begin(), targets.end(), [](const MatmulTarget& t) { return t.w.rows % 32 == 0; });
  if (m >= kAmxMinRows && k % 32 == 0 && columns_fit && features.amx_bf16) return Path::kAmx;
  if (m >= kBf16PanelMinRows && k % 2 == 0) return Path::kBf16Panel;
  return Path::kBf16Dot;
}

// Scratch for x prepared for a path; grows to the largest call, owned by the calling thread (the pool's
// threads read it through the pointer).
uint16_t* scratch(int index, int64_t elements) {
  thread_local std::vector<uint16_t> buffers[2];
  if (static_cast<int64_t>(buffers[index].size()) < elements) buffers[index].resize(elements);
  return buffers[index].data();
}

// Up to this many rows (one panel), each thread packs x for itself rather than the pool packing one shared
// copy: the copy is small (up to 32·k values, ~10 µs), and a shared one costs more than packing it twice, since
// every line of it moves between the cores' caches twice per call (written by one, read by both; measured on Zen
// 5 with 2 threads: pack 12 -> 30 µs and the tiles ~8% slower, for k = 2048).
constexpr int64_t kPanelPerThreadMaxRows = 32;

// x as the path reads it, prepared once for all targets (or, with `packed_per_thread`, by each thread).
struct PreparedInput {
  const void* x = nullptr;
  const MatmulKernel* kernel = nullptr;  // kFmaDot and kBf16Dot
  size_t x_element_bytes = sizeof(float);
  int64_t tile_columns = 1;        // blocks of output columns are multiples of this
  bool packed_per_thread = false;  // panel paths: x is the caller's; each thread packs it on its first claim
  uint64_t call = 0;               // identifies the call to the threads' packs
};

// Packs k [k_begin, k_end) of x into panels for a panel path (bf16: rounded as it is packed).
void pack_panel_slice(Path path, const float* x, int64_t m, int64_t k, int64_t k_begin, int64_t k_end, void* packed) {
  if (path == Path::kF32Panel) return f32_pack_panels(x, m, k, k_begin, k_end, static_cast<float*>(packed));
  bf16_pack_panels(x, m, k, k_begin, k_end, static_cast<uint16_t*>(packed));
}

// Scratch elements (uint16_t) of the packed panels of x [m, k].
int64_t packed_panel_elements(Path path, int64_t m, int64_t k) {
  const int64_t rows = panel_rows(m);
  const int64_t values = (m + rows - 1) / rows * rows * k;
  return path == Path::kF32Panel ? 2 * values : values;
}

// The panels this thread packed for `input`'s call, packing them on its first claim of the call.
const void* thread_panels(Path path, const PreparedInput& input, int64_t m, int64_t k) {
  thread_local uint64_t packed_call = 0;
  void* packed = scratch(1, packed_panel_elements(path, m, k));
  if (packed_call != input.call) {
    const auto* x = static_cast<const float*>(input.x);
    pack_panel_slice(path, x, m, k, 0, k, packed);
    packed_call = input.call;
  }
  return packed;
}

PreparedInput prepare_input(ThreadPool& pool, Path path, DType dtype, const float* x, int64_t m, int64_t k) {
  PreparedInput input;
  input.x = x;
  switch (path) {
    case Path::kBlas: break;
    case Path::kFmaDot:
      input.kernel = dtype == DType::kF32 ? &isa_kernels().matmul_f32_weights : &isa_kernels().matmul_bf16_weights;
      input.tile_columns = input.kernel->tile_cols;
      break;
    case Path::kF32Panel:
    case Path::kBf16Panel: {
      input.tile_columns = path == Path::kF32Panel ? kF32PanelTileColumns : kBf16PanelTileColumns;
      if (m <= kPanelPerThreadMaxRows && pool.num_threads() > 1) {
        static std::atomic<uint64_t> calls{0};
        input.packed_per_thread = true;
        input.call = ++calls;
        break;
      }
      void* packed = scratch(1, packed_panel_elements(path, m, k));
      pool.parallel_for((k + kPackSlice - 1) / kPackSlice, [&](int64_t begin, int64_t end) {
        pack_panel_slice(path, x, m, k, begin * kPackSlice, std::min(k, end * kPackSlice), packed);
      });
      input.x = packed;
      break;
    }
    case Path::kAmx: {
      const int64_t row_tiles = (m + 15) / 16;
      uint16_t* x_bf16 = scratch(0, m * k);
      uint16_t* packed = scratch(1, row_tiles * 16 * k);
      pool.parallel_for(row_tiles, [&](int64_t begin, int64_t end) {
        int64_t rows = std::min(m, end * 16) - begin * 16;
        convert_f32_to_bf16(x + begin * 16 * k, rows * k, x_bf16 + begin * 16 * k);
        amx_pack_x(x_bf16, m, k, begin, end, packed);
      });
      input.x = packed;
      input.tile_columns = 32;
      break;
    }
    case Path::kBf16Dot: {
      static const MatmulKernel bf16_dot = bf16_dot_matmul_kernel();
      uint16_t* x_bf16 = scratch(0, m * k);
      constexpr int64_t kRowsPerTask = 16;
      if (m * k < 256 * 1024) {
        convert_f32_to_bf16(x, m * k, x_bf16);
      } else {
        pool.parallel_for((m + kRowsPerTask - 1) / kRowsPerTask, [&](int64_t begin, int64_t end) {
          int64_t rows = std::min(m, end * kRowsPerTask) - begin * kRowsPerTask;
          convert_f32_to_bf16(x + begin * kRowsPerTask * k, rows * k, x_bf16 + begin * kRowsPerTask * k);
        });
      }
      input.x = x_bf16;
      input.kernel = &bf16_dot;
      input.x_element_bytes = sizeof(uint16_t);
      input.tile_columns = bf16_dot.tile_cols;
      break;
    }
  }
  return input;
}

// How many times the kernel reads each weight: once per panel, per pair of AMX row tiles, per register
// tile of rows.
int64_t weight_passes(Path path, int64_t m) {
  switch (path) {
    case Path::kF32Panel:
    case Path::kBf16Panel: return (m + panel_rows(m) - 1) / panel_rows(m);
    case Path::kAmx: return (m + 31) / 32;
    default: return m;  // at least: the tile kernels take a few rows at a time
  }
}

// Rows [0, m) x columns [column_begin, column_end) of one target, as one strip per register tile of rows.
void run_strips(const PreparedInput& input, int64_t m, int64_t k, const MatmulTarget& target, int64_t column_begin,
                int64_t column_end) {
  const MatmulKernel& kernel = *input.kernel;
  const auto* weights = static_cast<const std::byte*>(target.w.data);
  const int64_t weight_row_bytes = k * static_cast<int64_t>(dtype_size(target.w.dtype));
  const auto* x = static_cast<const std::byte*>(input.x);
  const int64_t n = target.w.rows;
  const auto run = target.w.layout == WeightLayout::kTiled ? kernel.run_tiled : kernel.run;
  for (int64_t row = 0; row < m; row += kernel.tile_rows) {
    MatmulStrip strip{x + row * k * static_cast<int64_t>(input.x_element_bytes),
                      k,
                      static_cast<int>(std::min<int64_t>(kernel.tile_rows, m - row)),
                      weights + column_begin * weight_row_bytes,
                      column_end - column_begin,
                      k,
                      target.y + row * n + column_begin,
                      n};
    run(strip);
  }
}

void run_block(Path path, const PreparedInput& input, const void* panels, int64_t m, int64_t k,
               const MatmulTarget& target, int64_t column_begin, int64_t column_end) {
  switch (path) {
    case Path::kF32Panel:
      return f32_panel_matmul_columns(static_cast<const float*>(panels), m, static_cast<const float*>(target.w.data),
                                      target.w.layout, k, column_begin, column_end, target.y, target.w.rows);
    case Path::kBf16Panel:
      return bf16_panel_matmul_columns(static_cast<const uint16_t*>(panels), m,
                                       static_cast<const uint16_t*>(target.w.data), target.w.layout, k, column_begin,
                                       column_end, target.y, target.w.rows);
    case Path::kAmx:
      return amx_matmul_columns(static_cast<const uint16_t*>(panels), m, static_cast<const uint16_t*>(target.w.data), k,
                                column_begin, column_end, target.y, target.w.rows);
    default: return run_strips(input, m, k, target, column_begin, column_end);
  }
}

// The parallel work of a call: units of `unit_columns` output columns of each target (the last of a target may
// be shorter), numbered through the targets in order.
struct ColumnUnits {
  int64_t unit_columns = 0;
  // Single pass over the weights: the units a thread claims at once run as one column range, so each weight
  // stream stays warm from tile to tile across them (the prefetchers follow a stream only within a range), and claims
  // can be as small as a tile without costing the streams. With several passes each unit runs alone: it is the block of
  // weights that stays in cache while the passes go over it.
  bool coalesce = false;
  std::vector<int64_t> first_unit;  // per target, then the total

  int64_t count() const { return first_unit.back(); }
};

// Single pass: units of one tile. Several passes: units that are a multiple of the tile width, small enough that
// every thread gets several over the call and that a unit's weights fit kWeightBlockBytes.
ColumnUnits column_units(std::span<const MatmulTarget> targets, int64_t k, int64_t tile_columns, int64_t weight_passes,
                         int num_threads) {
  ColumnUnits units;
  units.coalesce = weight_passes == 1;
  if (units.coalesce) {
    units.unit_columns = tile_columns;
  } else {
    int64_t total_columns = 0;
    for (const MatmulTarget& target : targets) total_columns += target.w.rows;
    const int64_t weight_row_bytes = k * static_cast<int64_t>(dtype_size(targets[0].w.dtype));
    const int64_t by_cache = kWeightBlockBytes / weight_row_bytes;
    const int64_t by_balance = total_columns / (8 * num_threads);
    units.unit_columns = std::max(std::min(by_cache, by_balance) / tile_columns * tile_columns, tile_columns);
  }
  units.first_unit.push_back(0);
  for (const MatmulTarget& target : targets) {
    units.first_unit.push_back(units.first_unit.back() + (target.w.rows + units.unit_columns - 1) / units.unit_columns);
  }
  return units;
}

// Runs units [begin, end): per target, one column range or one unit at a time (see ColumnUnits::coalesce).
void run_units(Path path, const PreparedInput& input, int64_t m, int64_t k, std::span<const MatmulTarget> targets,
               const ColumnUnits& units, int64_t begin, int64_t end) {
  const void* panels = input.packed_per_thread ? thread_panels(path, input, m, k) : input.x;
  for (size_t t = 0; t < targets.size() && begin < end; ++t) {
    const int64_t target_end = std::min(end, units.first_unit[t + 1]);
    for (int64_t unit = begin; unit < target_end;) {
      const int64_t last = units.coalesce ? target_end : unit + 1;
      const int64_t column_begin = (unit - units.first_unit[t]) * units.unit_columns;
      const int64_t column_end = std::min(targets[t].w.rows, (last - units.first_unit[t]) * units.unit_columns);
      run_block(path, input, panels, m, k, targets[t], column_begin, column_end);
      unit = last;
    }
    begin = std::max(begin, target_end);
  }
}

}  // namespace

bool tiled_layout_supported(DType dtype, int64_t rows, int64_t cols) {
  const CpuFeatures features = cpu_features();
  const bool cpu = dtype == DType::kBF16  ? features.avx512_bf16 && !features.amx_bf16
                   : dtype == DType::kF32 ? features.avx512
                                          : false;
  const auto chunk = static_cast<int64_t>(kWeightTileChunkBytes / dtype_size(dtype));
  return cpu && rows % kWeightTileRows == 0 && cols % chunk == 0;
}

void matmul(ThreadPool& pool, const float* x, int64_t m, const WeightMatrix& w, float* y) {
  const MatmulTarget target{w, y};
  matmul_shared_input(pool, x, m, std::span(&target, 1));
}

void matmul_shared_input(ThreadPool& pool, const float* x, int64_t m, std::span<const MatmulTarget> targets) {
  RECGPT_CHECK(m >= 0 && !targets.empty());
  const DType dtype = targets[0].w.dtype;
  const int64_t k = targets[0].w.cols;
  RECGPT_CHECK_MSG(dtype == DType::kF32 || dtype == DType::kBF16, "matmul weights must be f32 or bf16");
  for (const MatmulTarget& target : targets) {
    RECGPT_CHECK_MSG(target.w.dtype == dtype && target.w.cols == k, "matmul targets must share dtype and k");
    RECGPT_CHECK(target.w.rows >= 0);
    RECGPT_CHECK_MSG(target.w.layout == WeightLayout::kRowMajor || tiled_layout_supported(dtype, target.w.rows, k),
                     "tiled weights of this dtype or shape are not supported on this CPU");
  }
  if (m == 0) return;
  if (k == 0) {
    for (const MatmulTarget& target : targets) std::fill(target.y, target.y + m * target.w.rows, 0.0f);
    return;
  }
  const Path path = choose_path(dtype, m, k, targets);
  if (path == Path::kBlas) {
    for (const MatmulTarget& target : targets) {
      if (target.w.rows == 0) continue;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(target.w.rows),
                  static_cast<int>(k), 1.0f, x, static_cast<int>(k), static_cast<const float*>(target.w.data),
                  static_cast<int>(k), 0.0f, target.y, static_cast<int>(target.w.rows));
    }
    return;
  }
  const PreparedInput input = prepare_input(pool, path, dtype, x, m, k);
  const ColumnUnits units = column_units(targets, k, input.tile_columns, weight_passes(path, m), pool.num_threads());
  pool.parallel_for(units.count(),
                    [&](int64_t begin, int64_t end) { run_units(path, input, m, k, targets, units, begin, end); });
}

}  // namespace recgpt
