// Seeded dropout (CPU) and the keep decision shared by every dropout in sift-ft (the standalone
// op and the attention probabilities, on CPU and CUDA alike): an element is kept when
// rng_uniform(seed, counter) >= p. The decision is made on the 24-bit integer behind
// rng_uniform, against ceil(p * 2^24), which is the same comparison done exactly, so both
// backends drop the same elements and a backward can recompute the mask from the seed.
#pragma once
#include <cmath>
#include <cstdint>

#include "../core/random.h"
#include "../core/tensor.h"

namespace sift {

// rng_uniform(seed, c) >= p  <=>  (rng_mix(seed, c) >> 40) >= ceil(p * 2^24), for p in [0, 1).
inline uint32_t dropout_threshold(double p) { return uint32_t(std::ceil(p * 16777216.0)); }

SIFT_HD bool dropout_keep(uint64_t seed, uint64_t counter, uint32_t threshold) {
  return uint32_t(rng_mix(seed, counter) >> 40) >= threshold;
}

namespace cpu {
// y[i] = keep(seed, i) ? x[i] / (1 - p) : 0, i the row-major index; x and y contiguous.
void dropout(const Tensor& x, const Tensor& y, double p, uint64_t seed);
}  // namespace cpu

}  // namespace sift
