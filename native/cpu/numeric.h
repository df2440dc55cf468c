// Loads and stores between storage types and accumulation types on the CPU: 16-bit floats go
// through float; everything else is a plain conversion. Shared by the row-wise kernels.
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "../core/half.h"

namespace sift::cpu {

template <typename A, typename T>
inline A ld(T v) {
  if constexpr (std::is_same_v<T, f16> || std::is_same_v<T, bf16>)
    return A(float(v));
  else
    return A(v);
}

template <typename T, typename A>
inline T st(A v) {
  if constexpr (std::is_same_v<T, f16> || std::is_same_v<T, bf16>)
    return T(float(v));
  else
    return T(v);
}

// Rows are cheap to split: about 32k elements per task keeps small tensors on one thread.
inline int64_t row_grain(int64_t n) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(n, 1)); }

}  // namespace sift::cpu
