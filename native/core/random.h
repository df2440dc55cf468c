// Counter-based random numbers: the value at position i of a stream with key `seed` is a pure
// function of (seed, i), so CPU and CUDA produce the same randn tensor and the same dropout mask,
// and a dropout backward regenerates its mask instead of storing it.
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define SIFT_HD __host__ __device__ __forceinline__
#else
#define SIFT_HD inline
#endif

namespace sift {

// splitmix64 finaliser over (seed, counter): a strong 64-bit mix, cheap on both CPU and GPU.
SIFT_HD uint64_t rng_mix(uint64_t seed, uint64_t counter) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + counter * 0xD1B54A32D192ED03ull + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Uniform in [0, 1) with 24 bits (exactly representable in f32).
SIFT_HD float rng_uniform(uint64_t seed, uint64_t counter) {
  return float(rng_mix(seed, counter) >> 40) * (1.0f / 16777216.0f);
}

// Uniform in (0, 1) with 53 bits, for Box-Muller in double.
SIFT_HD double rng_uniform_open53(uint64_t seed, uint64_t counter) {
  return (double(rng_mix(seed, counter) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

}  // namespace sift
