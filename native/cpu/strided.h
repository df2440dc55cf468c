// Iteration over strided tensors on the CPU: dims are collapsed where the layout allows, then the
// outer index space is split across threads and the innermost dim runs as a plain loop.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "../core/tensor.h"
#include "parallel.h"

namespace sift::cpu {

// Up to N operands sharing one shape (broadcast operands have stride 0 where they broadcast).
template <int N>
struct StridedLoop {
  Shape shape;                   // collapsed shape
  std::array<Shape, N> strides;  // per operand, in elements, collapsed
  int64_t numel = 1;

  StridedLoop(const Shape& full_shape, const std::array<Shape, N>& full_strides) {
    // Drop size-1 dims, merge dims that are contiguous for every operand.
    for (size_t d = 0; d < full_shape.size(); d++) {
      if (full_shape[d] == 1) continue;
      if (!shape.empty()) {
        bool merge = true;
        for (int k = 0; k < N; k++)
          if (strides[k].back() != full_strides[k][d] * full_shape[d]) merge = false;
        if (merge) {
          shape.back() *= full_shape[d];
          for (int k = 0; k < N; k++) strides[k].back() = full_strides[k][d];
          continue;
        }
      }
      shape.push_back(full_shape[d]);
      for (int k = 0; k < N; k++) strides[k].push_back(full_strides[k][d]);
    }
    if (shape.empty()) {
      shape.push_back(1);
      for (int k = 0; k < N; k++) strides[k].push_back(0);
    }
    numel = shape_numel(full_shape);
  }

  // fn(offsets[N], inner_len, inner_strides[N]) for every row of the innermost dim.
  template <typename F>
  void run(F&& fn, int64_t grain_elems = 32768) const {
    if (numel == 0) return;
    const int64_t inner = shape.back();
    const int64_t rows = numel / inner;
    const int nd = int(shape.size());
    std::array<int64_t, N> inner_st;
    for (int k = 0; k < N; k++) inner_st[k] = strides[k][nd - 1];
    int64_t grain_rows = grain_elems / (inner > 0 ? inner : 1);
    if (grain_rows < 1) grain_rows = 1;
    parallel_for(rows, grain_rows, [&](int64_t r0, int64_t r1) {
      std::array<int64_t, N> off;
      for (int64_t r = r0; r < r1; r++) {
        int64_t rem = r;
        off.fill(0);
        for (int d = nd - 2; d >= 0; d--) {
          int64_t idx = rem % shape[d];
          rem /= shape[d];
          for (int k = 0; k < N; k++) off[k] += idx * strides[k][d];
        }
        fn(off, inner, inner_st);
      }
    });
  }
};

}  // namespace sift::cpu
