// The decisions of the bracket top-k (select.cu, namespace bracket) as __host__ __device__
// functions: the kernels call them, and a host-side simulation of the kernels' passes
// (test/native/host/select_bracket.cu) calls the same ones, so the algorithm is checked against the
// CPU selection without a GPU.
//
// The scheme (32-bit keys: f32, f16, bf16 scores of one tensor):
//   1. sample: a histogram of the top kSampleBits key bits over every tstride-th tile; two bins
//      bracket the k-th largest key: the bin holding sample rank r - d ("hi") and the one holding
//      r + d ("lo"), r = k * sampled / n, d a few standard deviations of that rank. With every tile
//      sampled (tstride 1) both are the bin holding rank k exactly;
//   2. one pass over the input with two float comparisons per element and no key arithmetic:
//      x >= G (above the bracket: counted per tile) and x >= L (in or above it; the ones below G
//      are "candidates", appended with their position). L and G are floats whose comparisons
//      give exactly the key order of the bracket's bins (see bracket_bounds). The pass checks
//      above < k <= above + candidates; when that fails (a rare sample miss, or more candidates
//      than the buffer holds) the selection runs again with the radix kernels;
//   3. the exact threshold key: radix digits over the candidates only;
//   4. per-tile counts above / equal to the threshold (from the candidates), a scan, then one pass
//      writing each tile's selected indices ascending at its offset: per thread a 16-bit mask of
//      selected items, one block-wide exclusive scan of the per-load counts packed 16 bits each,
//      so no ballot per element. Ties go to the lowest index (only the one tile where the ties
//      taken run out ranks its ties, with a second packed scan).
// Semantics are those of cpu::topk: keys as cpu key32 (-0 folded onto +0), the k largest, ties to
// the lower flat index, indices ascending, NaN/Inf an error.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define SIFT_BR_HD __host__ __device__ __forceinline__
#else
#define SIFT_BR_HD inline
#endif

namespace sift::cuda::bracket {

constexpr int kThreads = 256;
constexpr int kItems = 16;  // per thread per tile
constexpr int kTile = kThreads * kItems;
constexpr int kTileShift = 12;
constexpr int kWarps = kThreads / 32;
constexpr int kSampleBits = 13;
constexpr int kSampleBins = 1 << kSampleBits;
constexpr int kKeyBits = 32;
constexpr long long kSampleStride = 16;    // every 16th tile is sampled ...
constexpr long long kSampleMinTiles = 32;  // ... while that leaves at least this many tiles
static_assert(kTile == (1 << kTileShift), "tile size");

SIFT_BR_HD uint32_t f2u(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
SIFT_BR_HD float u2f(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// The order-preserving key of a float (as cpu key32 and fast::make_key).
SIFT_BR_HD uint32_t key_of(float f) {
  uint32_t u = f2u(f);
  if ((u & 0x7fffffffu) == 0) u = 0;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
// The float whose key is `key` (key 0x7fffffff, which no float maps to, gives -0).
SIFT_BR_HD float float_of_key(uint32_t key) { return u2f((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key); }

// Smallest key of a finite float (-FLT_MAX); keys below are -Inf and negative NaNs.
constexpr uint32_t kMinFiniteKey = 0x00800000u;

// A float B with: for every finite x, x >= B  <=>  key_of(x) >= key. Float comparisons treat -0
// and +0 as equal, as the folded keys do; a key above every finite key gives +Inf or a NaN (no
// finite x compares >= to it), a key at or below the smallest finite one gives -FLT_MAX.
SIFT_BR_HD float bound_of_key(uint64_t key) {
  if (key > 0xffffffffull) return u2f(0x7fc00000u);  // NaN: nothing finite is >= it
  const uint32_t k = uint32_t(key);
  return float_of_key(k < kMinFiniteKey ? kMinFiniteKey : k);
}

// Sample ranks (1-based, from the largest) whose bins bracket the k-th key: r -/+ (4 sqrt(r) + 32)
// scaled from k of n to the m sampled elements; both k when everything was sampled.
struct Ranks {
  uint64_t hi, lo;
};
SIFT_BR_HD Ranks bracket_ranks(uint64_t k, uint64_t m, uint64_t n) {
  if (m >= n) return Ranks{k, k};
  const double r = double(k) * double(m) / double(n);
  const double d = 4.0 * sqrt(r) + 32.0;
  double h = floor(r - d), l = ceil(r + d);
  if (h < 1.0) h = 1.0;
  if (l < 1.0) l = 1.0;
  if (h > double(m)) h = double(m);
  if (l > double(m)) l = double(m);
  return Ranks{uint64_t(h), uint64_t(l)};
}

// The float bounds of the bracket [lo_bin, hi_bin] of top-kSampleBits key bins:
// above  <=>  key > last key of hi_bin  <=>  x >= G;  in or above  <=>  key >= first key of lo_bin
// <=>  x >= L (finite x).
struct Bounds {
  float L, G;
};
SIFT_BR_HD Bounds bracket_bounds(uint32_t lo_bin, uint32_t hi_bin) {
  constexpr int s = kKeyBits - kSampleBits;
  Bounds b;
  b.L = bound_of_key(uint64_t(lo_bin) << s);
  b.G = bound_of_key((uint64_t(hi_bin) + 1) << s);
  return b;
}

// Whether the bracket held the k-th key: fewer than k above it, at least k in or above it, and
// every candidate kept.
SIFT_BR_HD bool bracket_hit(uint64_t above, uint64_t cand, uint64_t k, bool overflow) {
  return !overflow && above < k && k <= above + cand;
}

// Tile layout (as the radix kernels): 16-byte loads of V elements; load v of thread x covers the
// elements [v * kThreads * V + x * V, + V), so the order of a tile is (load, warp, lane, element).
SIFT_BR_HD int item_offset(int V, int x, int j) { return (j / V) * (kThreads * V) + x * V + (j % V); }

// Packed per-load counts: 16 bits per load (a block-wide total per load is at most kThreads * 8).
SIFT_BR_HD unsigned field(uint64_t packed, int v) { return unsigned((packed >> (16 * v)) & 0xffffu); }

// Counts of the set bits of `mask` per load (V bits each), packed.
SIFT_BR_HD uint64_t pack_counts(unsigned mask, int V, int NV) {
  uint64_t p = 0;
  for (int v = 0; v < NV; v++) {
    const unsigned bits = (mask >> (v * V)) & ((1u << V) - 1u);
#ifdef __CUDA_ARCH__
    p |= uint64_t(__popc(bits)) << (16 * v);
#else
    p |= uint64_t(__builtin_popcount(bits)) << (16 * v);
#endif
  }
  return p;
}

// Rank within the tile of this thread's item j (load v = j / V), the items of the tile taken in
// tile order: items of earlier loads (the block totals), of earlier threads in load v (the
// thread's exclusive prefix), and the thread's own earlier items of load v.
SIFT_BR_HD unsigned rank_in_tile(int j, int V, uint64_t total, uint64_t prefix, unsigned mask) {
  const int v = j / V;
  unsigned r = field(prefix, v);
  for (int w = 0; w < v; w++) r += field(total, w);
  const unsigned lower = (mask >> (v * V)) & ((1u << (j % V)) - 1u);
#ifdef __CUDA_ARCH__
  return r + unsigned(__popc(lower));
#else
  return r + unsigned(__builtin_popcount(lower));
#endif
}

// Ties taken in a tile: `before` ties of earlier tiles, `here` in this tile, `need` in all.
SIFT_BR_HD uint64_t ties_taken(uint64_t before, uint64_t here, uint64_t need) {
  if (need <= before) return 0;
  return need - before < here ? need - before : here;
}

// NaN/Inf check on raw 32-bit words (zero padding is finite), accumulated over a pass: f32 words
// by their largest magnitude, two 16-bit values per word by an all-ones exponent carried into each
// half's top bit.
SIFT_BR_HD uint32_t nonfinite_acc_f32(uint32_t acc, uint32_t w) {
  const uint32_t a = w & 0x7fffffffu;
  return acc > a ? acc : a;
}
SIFT_BR_HD uint32_t nonfinite_acc_bf16(uint32_t acc, uint32_t w) { return acc | ((w & 0x7f807f80u) + 0x00800080u); }
SIFT_BR_HD uint32_t nonfinite_acc_f16(uint32_t acc, uint32_t w) { return acc | ((w & 0x7c007c00u) + 0x04000400u); }
SIFT_BR_HD bool nonfinite_f32(uint32_t acc) { return acc >= 0x7f800000u; }
SIFT_BR_HD bool nonfinite_16(uint32_t acc) { return (acc & 0x80008000u) != 0; }

// Digit widths over the candidates' keys: a bf16 key is set by its top 16 bits (the low 16 are 0
// for a positive value, all ones for a negative one), so two digits find it and bf16_full_key
// completes it.
SIFT_BR_HD int digit_count(bool bf16) { return bf16 ? 2 : 3; }
SIFT_BR_HD int digit_width(bool bf16, int p) { return bf16 ? (p == 0 ? 11 : 5) : (p < 2 ? 11 : 10); }
SIFT_BR_HD int digit_shift(bool bf16, int p) {
  int s = kKeyBits;
  for (int q = 0; q <= p; q++) s -= digit_width(bf16, q);
  return s;
}
SIFT_BR_HD uint32_t bf16_full_key(uint32_t prefix) { return (prefix & 0x80000000u) ? prefix : (prefix | 0xffffu); }

}  // namespace sift::cuda::bracket
