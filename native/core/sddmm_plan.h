// The tile plan of a sampled dense-dense product (SDDMM): out[i] = sum_t a[t, r_i] * b[t, c_i]
// for flat indices idx[i] = r_i * cols + c_i into a [rows, cols] matrix. The plan groups the
// entries by (row tile, column tile), so that a kernel stages the columns of a and b that one tile
// reads once for all of its entries. Pure host code, shared by the CPU and CUDA kernels; packed
// into one i64 array so that a device copy of it can be made once per index set and reused.
#pragma once
#include <cstdint>
#include <vector>

namespace sift {

constexpr int64_t kSddmmTileRows = 32;
constexpr int64_t kSddmmTileCols = 64;

struct SddmmTile {
  int64_t row0, col0;  // first row and column of the tile
  int64_t begin, end;  // its entries are order[begin, end)
};

struct SddmmPlan {
  int64_t rows = 0, cols = 0, k = 0;
  // Entry positions (into idx and out), tile after tile; inside a tile in the order of idx, so a
  // sorted idx gives row-major order there (entries of one row are adjacent).
  std::vector<int64_t> order;
  // The non-empty tiles, row tile major, then column tile.
  std::vector<SddmmTile> tiles;

  // [rows, cols, k, ntiles, order (k), then row0, col0, begin per tile, then k]: its length is
  // packed_size(k, ntiles), so a packed plan's tile count follows from its length and k.
  std::vector<int64_t> pack() const;
  static int64_t packed_size(int64_t k, int64_t ntiles) { return 5 + k + 3 * ntiles; }
};

// Offsets into a packed plan.
constexpr int64_t kSddmmPackedHeader = 4;
inline int64_t sddmm_packed_tiles(int64_t packed_len, int64_t k) { return (packed_len - 5 - k) / 3; }

// Builds the plan in O(k + tiles); throws E_INDEX for an index outside [0, rows * cols).
SddmmPlan plan_sddmm(const int32_t* idx, int64_t k, int64_t rows, int64_t cols);
SddmmPlan plan_sddmm(const int64_t* idx, int64_t k, int64_t rows, int64_t cols);

}  // namespace sift
