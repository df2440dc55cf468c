// Element types of tensors. f64 exists for CPU reference checks (finite differences); training
// uses f32, f16 and bf16; i32/i64 hold indices and labels; bool holds masks (one byte each).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "error.h"
#include "half.h"

namespace sift {

enum class DType : uint8_t { F32 = 0, F16 = 1, BF16 = 2, I32 = 3, I64 = 4, F64 = 5, BOOL = 6 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32:
    case DType::I32:
      return 4;
    case DType::F16:
    case DType::BF16:
      return 2;
    case DType::I64:
    case DType::F64:
      return 8;
    case DType::BOOL:
      return 1;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32:
      return "f32";
    case DType::F16:
      return "f16";
    case DType::BF16:
      return "bf16";
    case DType::I32:
      return "i32";
    case DType::I64:
      return "i64";
    case DType::F64:
      return "f64";
    case DType::BOOL:
      return "bool";
  }
  return "?";
}

inline DType parse_dtype(const std::string& s) {
  if (s == "f32" || s == "float32") return DType::F32;
  if (s == "f16" || s == "float16") return DType::F16;
  if (s == "bf16" || s == "bfloat16") return DType::BF16;
  if (s == "i32" || s == "int32") return DType::I32;
  if (s == "i64" || s == "int64") return DType::I64;
  if (s == "f64" || s == "float64") return DType::F64;
  if (s == "bool") return DType::BOOL;
  fail("E_DTYPE", "unknown dtype '", s, "' (expected f32, f16, bf16, i32, i64, f64 or bool)");
}

inline bool is_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F64; }
inline bool is_int(DType t) { return t == DType::I32 || t == DType::I64; }

// Dispatch a generic lambda over a dtype: f([](auto tag){ using T = typename decltype(tag)::type; })
template <typename T>
struct type_tag {
  using type = T;
};

template <typename F>
auto dispatch_float(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::F32:
      return f(type_tag<float>{});
    case DType::F64:
      return f(type_tag<double>{});
    case DType::F16:
      return f(type_tag<f16>{});
    case DType::BF16:
      return f(type_tag<bf16>{});
    default:
      fail("E_DTYPE", op, ": expected a floating-point tensor, got ", dtype_name(t));
  }
}

template <typename F>
auto dispatch_int(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::I32:
      return f(type_tag<int32_t>{});
    case DType::I64:
      return f(type_tag<int64_t>{});
    default:
      fail("E_DTYPE", op, ": expected an i32 or i64 tensor, got ", dtype_name(t));
  }
}

template <typename F>
auto dispatch_all(DType t, F&& f) {
  switch (t) {
    case DType::F32:
      return f(type_tag<float>{});
    case DType::F64:
      return f(type_tag<double>{});
    case DType::F16:
      return f(type_tag<f16>{});
    case DType::BF16:
      return f(type_tag<bf16>{});
    case DType::I32:
      return f(type_tag<int32_t>{});
    case DType::I64:
      return f(type_tag<int64_t>{});
    case DType::BOOL:
      return f(type_tag<uint8_t>{});
  }
  fail("E_DTYPE", "unknown dtype");
}

// Accumulation type: double for double, float for every other float type.
template <typename T>
struct acc_type {
  using type = float;
};
template <>
struct acc_type<double> {
  using type = double;
};
template <typename T>
using acc_t = typename acc_type<T>::type;

}  // namespace sift
