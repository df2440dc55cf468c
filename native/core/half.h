// Host-side 16-bit float types (IEEE half and bfloat16) with round-to-nearest-even conversion.
// CUDA code uses __half / __nv_bfloat16, which have the same bit layout.
#pragma once
#include <cstdint>
#include <cstring>

namespace sift {

inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

struct bf16 {
  uint16_t bits;
  bf16() = default;
  bf16(float f) { bits = from_float(f); }  // NOLINT: implicit like a builtin float type
  operator float() const { return bits_to_float(uint32_t(bits) << 16); }
  static uint16_t from_float(float f) {
    uint32_t u = float_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return uint16_t(u >> 16);
  }
};

struct f16 {
  uint16_t bits;
  f16() = default;
  f16(float f) { bits = from_float(f); }  // NOLINT
  operator float() const { return to_float(bits); }

  static float to_float(uint16_t h) {
    uint32_t sign = uint32_t(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t u;
    if (exp == 0) {
      if (man == 0) {
        u = sign;
      } else {  // subnormal: normalise
        int e = -1;
        do {
          e++;
          man <<= 1;
        } while ((man & 0x400) == 0);
        u = sign | (uint32_t(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
      }
    } else if (exp == 31) {
      u = sign | 0x7f800000u | (man << 13);
    } else {
      u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    return bits_to_float(u);
  }

  static uint16_t from_float(float f) {
    uint32_t u = float_to_bits(f);
    uint32_t sign = (u >> 16) & 0x8000;
    uint32_t absu = u & 0x7fffffffu;
    if (absu > 0x7f800000u) return uint16_t(sign | 0x7e00);   // NaN
    if (absu >= 0x477ff000u) return uint16_t(sign | 0x7c00);  // overflow (>= 65520) to Inf
    if (absu < 0x38800000u) {                                 // result is subnormal or zero
      if (absu < 0x33000000u) return uint16_t(sign);          // < 2^-25 rounds to 0
      uint32_t e = absu >> 23;
      uint32_t man = (absu & 0x7fffff) | 0x800000;
      uint32_t shift = 126 - e;  // 14 + (113 - e) - 1 relative to the 13-bit drop
      uint32_t halfway = 1u << (shift - 1);
      uint32_t rest = man & ((1u << shift) - 1);
      uint32_t r = man >> shift;
      if (rest > halfway || (rest == halfway && (r & 1))) r++;
      return uint16_t(sign | r);
    }
    uint32_t r = absu - 0x38000000u;  // rebias exponent 127 -> 15
    uint32_t rest = r & 0x1fff;
    r >>= 13;
    if (rest > 0x1000 || (rest == 0x1000 && (r & 1))) r++;
    return uint16_t(sign | r);
  }
};

}  // namespace sift
