// Tile plan of the SDDMM: a counting sort of the entries by tile (stable, so the order of idx
// is kept inside each tile). The counters cover every tile of the matrix, empty or not: a
// [152k, 4k] embedding has 4.8k x 64 of them, far fewer than its entries.
#include "sddmm_plan.h"

#include "error.h"

namespace sift {
namespace {

template <typename I>
SddmmPlan build(const I* idx, int64_t k, int64_t rows, int64_t cols) {
  SIFT_CHECK(rows >= 1 && cols >= 1, "E_ARG", "sddmm plan: the matrix must have rows and columns, got [", rows, ", ",
             cols, "]");
  const int64_t limit = rows * cols;
  const int64_t tr = (rows + kSddmmTileRows - 1) / kSddmmTileRows, tc = (cols + kSddmmTileCols - 1) / kSddmmTileCols;
  std::vector<int64_t> count(size_t(tr * tc) + 1, 0);
  std::vector<int64_t> tile_of(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; i++) {
    const int64_t f = int64_t(idx[i]);
    SIFT_CHECK(f >= 0 && f < limit, "E_INDEX", "sddmm: index ", f, " at position ", i, " is out of range for [", rows,
               ", ", cols, "]");
    const int64_t t = (f / cols) / kSddmmTileRows * tc + (f % cols) / kSddmmTileCols;
    tile_of[size_t(i)] = t;
    count[size_t(t) + 1]++;
  }
  for (size_t t = 1; t < count.size(); t++) count[t] += count[t - 1];
  SddmmPlan p;
  p.rows = rows;
  p.cols = cols;
  p.k = k;
  p.order.resize(size_t(k));
  for (int64_t t = 0; t < tr * tc; t++)
    if (count[size_t(t) + 1] > count[size_t(t)])
      p.tiles.push_back({t / tc * kSddmmTileRows, t % tc * kSddmmTileCols, count[size_t(t)], count[size_t(t) + 1]});
  std::vector<int64_t> next(count.begin(), count.end() - 1);
  for (int64_t i = 0; i < k; i++) p.order[size_t(next[size_t(tile_of[size_t(i)])]++)] = i;
  return p;
}

}  // namespace

std::vector<int64_t> SddmmPlan::pack() const {
  std::vector<int64_t> v;
  v.reserve(size_t(packed_size(k, int64_t(tiles.size()))));
  v.insert(v.end(), {rows, cols, k, int64_t(tiles.size())});
  v.insert(v.end(), order.begin(), order.end());
  for (const SddmmTile& t : tiles) v.insert(v.end(), {t.row0, t.col0, t.begin});
  v.push_back(k);
  return v;
}

SddmmPlan plan_sddmm(const int32_t* idx, int64_t k, int64_t rows, int64_t cols) { return build(idx, k, rows, cols); }
SddmmPlan plan_sddmm(const int64_t* idx, int64_t k, int64_t rows, int64_t cols) { return build(idx, k, rows, cols); }

}  // namespace sift
