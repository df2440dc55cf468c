// How the multi-tensor optimizer launches (optim.cu) cut their work, as host functions and one
// __host__ __device__ lookup, so that test/native/host/optim_plan.cu checks them without a GPU:
// tensors are split into chunks of a fixed number of entries, consecutive tensors are grouped into
// launches of at most max_tensors descriptors and max_chunks chunks, and a block maps its chunk to
// (tensor, first entry) by a binary search over the launch's prefix of chunk counts.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#ifdef __CUDACC__
#define SIFT_OPT_HD __host__ __device__ __forceinline__
#else
#define SIFT_OPT_HD inline
#endif

namespace sift::cuda::optim_plan {

// Chunks of `chunk` entries covering n entries.
inline int64_t chunks_of(int64_t n, int64_t chunk) { return (n + chunk - 1) / chunk; }

// One launch: tensors [b, e) of the list.
struct Launch {
  size_t b, e;
};

// Greedy grouping in list order: a launch takes tensors while it holds fewer than max_tensors and
// its chunks stay within max_chunks. A tensor with more than max_chunks chunks alone gets an empty
// result (the caller reports it).
inline std::vector<Launch> plan_launches(const std::vector<int64_t>& chunks, size_t max_tensors, int64_t max_chunks) {
  std::vector<Launch> out;
  size_t b = 0;
  while (b < chunks.size()) {
    size_t e = b;
    int64_t total = 0;
    while (e < chunks.size() && e - b < max_tensors && total + chunks[e] <= max_chunks) total += chunks[e++];
    if (e == b) return {};
    out.push_back(Launch{b, e});
    b = e;
  }
  return out;
}

// The tensor owning chunk c: the last t < n with chunk_start[t] <= c (no tensor is empty).
SIFT_OPT_HD int chunk_owner(const int* chunk_start, int n, int c) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (chunk_start[mid] <= c)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

}  // namespace sift::cuda::optim_plan
