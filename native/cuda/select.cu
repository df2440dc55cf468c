// CUDA radix select for SIFT's top-k. The scores (one tensor, or several for one global budget)
// are cut into tiles of 4096 elements that never cross a tensor boundary; the tile order is the
// tie-break order (tensor position, then flat index). Keys: float bits with the sign bit flipped
// for positives and all bits inverted for negatives (-0 folded onto +0), so the key order is the
// value order; f16/bf16 go through their exact f32 value, f64 uses 64-bit keys.
//
// Passes over the input (3 in the usual case):
//   1. histogram of the top 13 key bits (shared-memory histograms merged into one global one),
//      with the NaN/Inf check; a one-block kernel picks the digit holding the k-th key;
//   2. per tile, count the elements whose top digit is above it, append the ones equal to it
//      ("candidates", typically a few percent) to a side buffer and histogram their next digit;
//      the remaining digits are then found from the candidates alone. Should the candidates
//      exceed the buffer (heavy ties), guarded fallback kernels re-read the input instead;
//   3. once the exact threshold key and the number of ties to take are known, per-tile counts
//      are scanned and each tile's selected indices are written in order (warp ballots + a
//      scan over the tile's warp slots), so the output is ascending.
// Every decision stays on the device (state struct), so nothing waits for the host until the end.
//
// How the kernels (namespace fast) run that scheme; the first version, which took the same time
// for f32 and bf16 at 235M elements on an H200 (bound by latency and per-element work, not
// bandwidth) and ~20 launches at 16.7M, was replaced by them once a GPU run verified them:
//  - 16-byte loads (4 f32 / 8 bf16,f16 / 2 f64 per load, scalar for a tensor's ragged last tile
//    or a view that is not 16-byte aligned). Tile layout: load v of thread x covers elements
//    [v*256*V + x*V, +V), so warp w's load v is one contiguous "slot" of 32*V elements and the
//    slots (v*8 + w) are in index order, which keeps the output ascending.
//  - Persistent tile loops (grid = resident blocks per SM from cudaOccupancyMaxActiveBlocks...,
//    never more than the tiles) that issue the next tile's loads before working on the current
//    one, so the load latency overlaps the shared atomics, ballots, barriers and global atomic.
//  - Pass 2 per tile: ballot counts per warp, 2 barriers , the per-tile
//    shared words double-buffered; candidates still contiguous per tile.
//  - The one-block digit choice runs in the last block of each histogram kernel (threadfence +
//    ticket), the candidate histogram and its input-rereading fallback are one kernel (branch on
//    the overflow flag, grid-uniform), the two tile counts likewise; state init, histogram and
//    tile-count zeroing and the first 32 descriptors are one kernel; the two CUB scans and the
//    per-tensor counts are one single-block kernel. 32-bit keys: 7 launches (9 with the sampled
//    guess below), one host sync (the final read-back; topkGlobal's before the write kernel).
//  - Write pass: persistent with prefetch too; ties are ranked (an extra slot scan) only in the
//    one tile where the ties taken run out, every other tile takes all of its ties or none.
//  - ptxas held to 64 registers (4 blocks/SM) for the pass-2 and write kernels with 32-bit keys.
//  - Pass 1 is normally not a full pass: with >= 64 tiles the top digit is guessed from every
//    16th tile (down to every 2nd for smaller inputs) as the digit holding the same fraction of
//    that sample as k of the whole; pass 2 then runs with the guess, and its last block checks it
//    exactly (keys above the digit < k <= those + keys in it). A miss (rare: the k-th key close to
//    a digit boundary, or k at the extremes) resets the state and the exact pass 1 and pass 2 run
//    from guarded kernels that otherwise exit at once; so a miss costs time, never correctness.
#include <cub/cub.cuh>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "common.cuh"
#include "select.h"
#include "select_bracket.h"

namespace sift::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kItems = 16;
constexpr int kTile = kThreads * kItems;
constexpr int kTileShift = 12;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxDigitBits = 13;
constexpr int kMaxBins = 1 << kMaxDigitBits;
constexpr int kSegBatch = 32;
static_assert(kTile == (1 << kTileShift), "tile size must be 2^kTileShift");

using u64 = unsigned long long;

struct Seg {
  const void* ptr;
  long long numel;
  long long tile_begin;  // first global tile of this tensor
  void* out;             // index output (i32 or i64)
  int out64;
  int pad;
};

template <typename T>
struct KeyOf {
  using type = unsigned int;
};
template <>
struct KeyOf<double> {
  using type = u64;
};

__device__ __forceinline__ unsigned int make_key(float f) {
  unsigned int u = __float_as_uint(f);
  if ((u & 0x7fffffffu) == 0) u = 0;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ u64 make_key(double d) {
  u64 u = static_cast<u64>(__double_as_longlong(d));
  if ((u & 0x7fffffffffffffffull) == 0) u = 0;
  return (u >> 63) ? ~u : (u | 0x8000000000000000ull);
}
__device__ __forceinline__ bool nonfinite(unsigned int key) { return key >= 0xff800000u || key <= 0x007fffffu; }
__device__ __forceinline__ bool nonfinite(u64 key) {
  return key >= 0xfff0000000000000ull || key <= 0x000fffffffffffffull;
}

template <typename T>
__device__ __forceinline__ typename KeyOf<T>::type load_key(const T* p) {
  if constexpr (std::is_same_v<T, double>)
    return make_key(*p);
  else
    return make_key(to_f32(*p));
}

// The tensor holding global tile t: the last segment whose first tile is <= t (empty segments
// share their first tile with the next one and are skipped that way).
__device__ __forceinline__ int seg_of(const Seg* segs, int nseg, long long t) {
  int lo = 0, hi = nseg - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) >> 1;
    if (segs[mid].tile_begin <= t)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

struct TileRef {
  const void* ptr;  // first element of the tile
  long long local;  // flat index of that element within its tensor
  int count;        // valid elements in the tile
  int seg;
};

template <typename T>
__device__ __forceinline__ TileRef tile_ref(const Seg* segs, int nseg, long long t) {
  TileRef r;
  r.seg = nseg == 1 ? 0 : seg_of(segs, nseg, t);
  const Seg& s = segs[r.seg];
  r.local = (t - s.tile_begin) * kTile;
  long long rem = s.numel - r.local;
  r.count = rem < kTile ? int(rem) : kTile;
  r.ptr = static_cast<const T*>(s.ptr) + r.local;
  return r;
}

__device__ __forceinline__ void merge_hist(const unsigned int* sh, u64* ghist, int bins) {
  for (int b = threadIdx.x; b < bins; b += blockDim.x)
    if (sh[b]) atomicAdd(ghist + b, u64(sh[b]));
}

struct SegBatch {
  Seg s[kSegBatch];
};

// Copies up to kSegBatch segment descriptors from the kernel parameters into the device table
// (no host copy, so nothing waits). Static indices keep the parameters in constant memory.
__global__ void write_segs_kernel(Seg* table, int offset, int n, SegBatch b) {
#pragma unroll
  for (int j = 0; j < kSegBatch; j++)
    if (j == int(threadIdx.x) && j < n) table[offset + j] = b.s[j];
}

// Selected elements before tile t, in the global order: all keys above the threshold, and the
// first min(ties before t, ties wanted) ties.
__device__ __forceinline__ u64 selected_before(const u64* gt_scan, const u64* eq_scan, long long t, u64 need) {
  u64 e = eq_scan[t];
  return gt_scan[t] + (e < need ? e : need);
}

int sm_count(int dev) {
  static int cached[64] = {0};
  if (dev < 0 || dev >= 64) return 80;
  if (cached[dev] == 0) {
    int v = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev));
    cached[dev] = v > 0 ? v : 80;
  }
  return cached[dev];
}

size_t align_up(size_t n) { return (n + 255) / 256 * 256; }

namespace fast {

struct State2 {
  u64 prefix;
  u64 k_rem;
  u64 cand_count;
  int overflow;
  int bad;
  int lost;
  unsigned int done;  // blocks finished in the current kernel (last-block-done ticket), back to 0 after
  u64 above;          // sampled path: keys above the guessed top digit, summed by pass 2
  int miss;           // sampled path: the guess did not hold the k-th key; the exact passes run
  int pad;
};

// Tile layout of the fast kernels: 16-byte loads. Load v of thread x covers the V consecutive
// elements [v * kThreads * V + x * V, + V); so within warp w, load v covers the 32 * V consecutive
// elements [v * kThreads * V + w * 32 * V, + 32 * V) ("slot" v * kWarps + w; slots are in index order).
template <typename T>
struct VecOf {
  static constexpr int V = 16 / int(sizeof(T));  // elements per 16-byte load
  static constexpr int NV = kItems / V;          // loads per thread per tile
  static constexpr int NS = NV * kWarps;         // slots per tile
  static_assert(NV * V == kItems && NS <= 128, "tile layout");
};

// Offset within the tile of this thread's item j (item j is element j % V of load j / V).
template <typename T>
__device__ __forceinline__ int item_offset(int j) {
  constexpr int V = VecOf<T>::V;
  return (j / V) * (kThreads * V) + int(threadIdx.x) * V + (j % V);
}

__device__ __forceinline__ unsigned int word_of(const uint4& q, int n) {
  return n == 0 ? q.x : n == 1 ? q.y : n == 2 ? q.z : q.w;
}

// Key of element i of a 16-byte load (little-endian: element 0 in the low bits of q.x). Same value
// as load_key: bf16 -> f32 is the bits shifted up, f16 -> f32 is exact.
template <typename T>
__device__ __forceinline__ typename KeyOf<T>::type key_from_vec(const uint4& q, int i) {
  if constexpr (std::is_same_v<T, double>) {
    const u64 bits = (u64(word_of(q, 2 * i + 1)) << 32) | u64(word_of(q, 2 * i));
    return make_key(__longlong_as_double(static_cast<long long>(bits)));
  } else if constexpr (std::is_same_v<T, float>) {
    return make_key(__uint_as_float(word_of(q, i)));
  } else {
    const unsigned int h = (word_of(q, i >> 1) >> ((i & 1) * 16)) & 0xffffu;
    if constexpr (std::is_same_v<T, __nv_bfloat16>)
      return make_key(__uint_as_float(h << 16));
    else
      return make_key(__half2float(__ushort_as_half(static_cast<unsigned short>(h))));
  }
}

// Loads a tile in the layout above: 16-byte loads where the tile's base is 16-byte aligned (tensor
// storage is 256-byte aligned, but a view may start anywhere) and the load is whole; scalar loads
// otherwise (the tail of a tensor's last tile, misaligned views). Items past the end get key 0.
template <typename T, typename K>
__device__ __forceinline__ void load_tile_fast(const TileRef& r, K (&keys)[kItems]) {
  constexpr int V = VecOf<T>::V, NV = VecOf<T>::NV;
  const T* p = static_cast<const T*>(r.ptr);
  const bool aligned = (reinterpret_cast<unsigned long long>(p) & 15ull) == 0;
#pragma unroll
  for (int v = 0; v < NV; v++) {
    const int base = v * (kThreads * V) + int(threadIdx.x) * V;
    if (aligned && base + V <= r.count) {
      const uint4 q = __ldg(reinterpret_cast<const uint4*>(p + base));
#pragma unroll
      for (int i = 0; i < V; i++) keys[v * V + i] = key_from_vec<T>(q, i);
    } else {
#pragma unroll
      for (int i = 0; i < V; i++) keys[v * V + i] = base + i < r.count ? load_key(p + base + i) : K(0);
    }
  }
}

using BlockScanT = cub::BlockScan<u64, kThreads>;

// Resident blocks per SM asked of ptxas for the heavier tile kernels (<= 64 registers for the
// 32-bit keys; the f64 tiles hold twice the key registers).
template <typename T>
constexpr int kMinBlocks = sizeof(T) == 8 ? 2 : 4;

// choose_kernel's work done by one block of kThreads (the last block of a histogram kernel):
// picks the digit holding the k_rem-th largest key, narrows prefix and rank, clears the histogram.
// ghist was filled with atomics by every block: read it from L2 (__ldcg).
// sample_rank > 0 (the sampled guess): the digit holding that rank of the sample; only the prefix
// is set (the rank and the lost flag are left alone).
__device__ void choose_block(u64* ghist, int bits, int shift, State2* st, BlockScanT::TempStorage& tmp,
                             u64 sample_rank = 0) {
  const int bins = 1 << bits;
  const int per = (bins + kThreads - 1) / kThreads;
  const u64 krem = sample_rank ? sample_rank : __ldcg(&st->k_rem);
  u64 local = 0;
  for (int q = 0; q < per; q++) {
    const int pos = int(threadIdx.x) * per + q;
    if (pos < bins) local += __ldcg(ghist + (bins - 1 - pos));
  }
  u64 before;
  BlockScanT(tmp).ExclusiveSum(local, before);
  if (before < krem && krem <= before + local) {  // exactly one thread (when the total reaches krem)
    u64 above = before;
    for (int q = 0; q < per; q++) {
      const int pos = int(threadIdx.x) * per + q;
      if (pos >= bins) break;
      const int bin = bins - 1 - pos;
      const u64 c = __ldcg(ghist + bin);
      if (above + c >= krem) {
        st->prefix = __ldcg(&st->prefix) | (u64(bin) << shift);
        if (!sample_rank) st->k_rem = krem - above;
        break;
      }
      above += c;
    }
  }
  if (!sample_rank && threadIdx.x == kThreads - 1 && before + local < krem) st->lost = 1;
  __syncthreads();
  for (int b = threadIdx.x; b < bins; b += kThreads) ghist[b] = 0;
}

// Last-block-done: true in the one block that finishes last (all blocks' global atomics before
// it are visible to it then). Call from every block of the grid, after its last global update.
__device__ __forceinline__ bool last_block_done(State2* st) {
  __shared__ unsigned int ticket;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) ticket = atomicAdd(&st->done, 1u);
  __syncthreads();
  const bool last = ticket == gridDim.x - 1;
  if (last) __threadfence();
  return last;
}

__device__ __forceinline__ void finish_choose(u64* ghist, int bits, int shift, State2* st, BlockScanT::TempStorage& tmp,
                                              u64 sample_rank = 0) {
  if (last_block_done(st)) {  // block-uniform
    choose_block(ghist, bits, shift, st, tmp, sample_rank);
    if (threadIdx.x == 0) st->done = 0;
  }
}

// State, the first kSegBatch segment descriptors, and zeroes (histogram, tile counts): one launch.
__global__ void init_kernel(State2* st, u64 k, u64* zero, long long nzero, Seg* table, int n, SegBatch b) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < nzero;
       i += (long long)gridDim.x * blockDim.x)
    zero[i] = 0;
  if (blockIdx.x == 0) {
#pragma unroll
    for (int j = 0; j < kSegBatch; j++)
      if (j == int(threadIdx.x) && j < n) table[j] = b.s[j];
    if (threadIdx.x == 0) {
      st->prefix = 0;
      st->k_rem = k;
      st->cand_count = 0;
      st->overflow = 0;
      st->bad = 0;
      st->lost = 0;
      st->done = 0;
      st->above = 0;
      st->miss = 0;
      st->pad = 0;
    }
  }
}

// Pass 1: histogram of the top digit over every tile + NaN/Inf check; the last block chooses the
// digit. Grid <= ntiles. The next tile's loads are issued before the current tile is counted.
// Also the sampled guess: tiles i * tstride for i < nsamp, choosing the digit of sample_rank (> 0).
// guard_miss: run only when the sampled guess missed (grid-uniform early exit).
template <typename T, typename K>
__global__ void __launch_bounds__(kThreads)
    hist1_kernel(const Seg* __restrict__ segs, int nseg, long long nsamp, long long tstride, State2* st, u64* ghist,
                 int shift, int bits, u64 sample_rank, int guard_miss) {
  extern __shared__ unsigned int sh[];
  __shared__ BlockScanT::TempStorage tmp;
  if (guard_miss && !__ldcg(&st->miss)) return;
  const int bins = 1 << bits;
  for (int b = threadIdx.x; b < bins; b += kThreads) sh[b] = 0;
  __syncthreads();
  const K mask = K(bins - 1);
  bool bad = false;
  long long i = blockIdx.x;  // grid <= nsamp
  TileRef r = tile_ref<T>(segs, nseg, i * tstride);
  K cur[kItems];
  load_tile_fast<T>(r, cur);
  for (;;) {
    const long long in = i + gridDim.x;
    const bool more = in < nsamp;
    TileRef rn = r;
    K nxt[kItems];
    if (more) {
      rn = tile_ref<T>(segs, nseg, in * tstride);
      load_tile_fast<T>(rn, nxt);
    }
#pragma unroll
    for (int j = 0; j < kItems; j++) {
      if (item_offset<T>(j) < r.count) {
        bad |= nonfinite(cur[j]);
        atomicAdd(sh + int((cur[j] >> shift) & mask), 1u);
      }
    }
    if (!more) break;
    i = in;
    r = rn;
#pragma unroll
    for (int j = 0; j < kItems; j++) cur[j] = nxt[j];
  }
  if (bad) st->bad = 1;
  __syncthreads();
  merge_hist(sh, ghist, bins);
  finish_choose(ghist, bits, shift, st, tmp, sample_rank);
}

// One tile of a candidate pass, once every warp has its counts (wc candidates, wg keys above; the
// same in all lanes): thread 0 sums the warps' counts into tile_gt[t] and its running `above`, and
// reserves the tile's candidate slots (*s_base: the first). w_cnt, w_gt and s_base are this tile's
// half of the block's double-buffered shared arrays. Called by every thread of the block.
__device__ __forceinline__ void publish_tile_counts(unsigned int wc, unsigned int wg, unsigned int* w_cnt,
                                                    unsigned int* w_gt, u64* s_base, long long t, u64* tile_gt,
                                                    u64& above, State2* st) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    w_cnt[warp] = wc;
    w_gt[warp] = wg;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned int c = 0, g = 0;
#pragma unroll
    for (int w = 0; w < kWarps; w++) {
      c += w_cnt[w];
      g += w_gt[w];
    }
    tile_gt[t] = g;
    above += g;
    *s_base = c ? atomicAdd(&st->cand_count, u64(c)) : 0;
  }
  __syncthreads();
}

// Pass 2 (as candidates_kernel): per tile, keys above the top digit (tile_gt), candidates equal to
// it appended to the buffer, their next digit histogrammed; the last block chooses that digit.
// Per tile: warp counts by ballots, one barrier, one global atomic (thread 0) for the tile's slots,
// one barrier; the per-tile shared words are double-buffered so no third barrier is needed, and
// the next tile's loads are in flight meanwhile. A tile's candidates stay contiguous.
//
// mode 0: after the exact pass 1. mode 1: after the sampled guess; also checks NaN/Inf (pass 1
// was not over everything) and sums the keys above the guessed digit (st->above); its last block
// then checks that the guessed digit holds the k-th key (above < k <= above + candidates): if so,
// the rank becomes k - above and digit 2 is chosen as usual; if not, it flags a miss and resets
// the state so that the guarded exact pass 1 and pass 2 (mode 2) run. mode 2: only after a miss.
template <typename T, typename K>
__global__ void __launch_bounds__(kThreads, kMinBlocks<T>)
    cand_kernel(const Seg* __restrict__ segs, int nseg, long long ntiles, State2* st, u64* ghist, int s0, int s1,
                int bits1, K* cand_key, u64* cand_pos, u64 cap, u64* tile_gt, int mode) {
  extern __shared__ unsigned int sh[];
  __shared__ BlockScanT::TempStorage tmp;
  __shared__ unsigned int w_cnt[2][kWarps], w_gt[2][kWarps];
  __shared__ u64 s_base[2];
  if (mode == 2 && !__ldcg(&st->miss)) return;  // grid-uniform
  const int bins = 1 << bits1;
  for (int b = threadIdx.x; b < bins; b += kThreads) sh[b] = 0;
  __syncthreads();
  const K d0 = K(__ldcg(&st->prefix)) >> s0;
  const K mask = K(bins - 1);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const unsigned int lt = (1u << lane) - 1u;
  long long t = blockIdx.x;
  TileRef r = tile_ref<T>(segs, nseg, t);
  K cur[kItems];
  load_tile_fast<T>(r, cur);
  int buf = 0;
  bool bad = false;
  u64 above = 0;  // thread 0: keys above d0 in this block's tiles
  for (;;) {
    const long long tn = t + gridDim.x;
    const bool more = tn < ntiles;
    TileRef rn = r;
    K nxt[kItems];
    if (more) {
      rn = tile_ref<T>(segs, nseg, tn);
      load_tile_fast<T>(rn, nxt);
    }
    unsigned int wc = 0, wg = 0;  // warp-uniform: the warp's candidates and keys above, this tile
#pragma unroll
    for (int j = 0; j < kItems; j++) {
      const bool valid = item_offset<T>(j) < r.count;
      const K pre = cur[j] >> s0;
      const bool cand = valid && pre == d0;
      wg += __popc(__ballot_sync(0xffffffffu, valid && pre > d0));
      wc += __popc(__ballot_sync(0xffffffffu, cand));
      if (cand) atomicAdd(sh + int((cur[j] >> s1) & mask), 1u);
      bad |= valid && nonfinite(cur[j]);
    }
    publish_tile_counts(wc, wg, w_cnt[buf], w_gt[buf], &s_base[buf], t, tile_gt, above, st);
    if (wc) {  // warp-uniform
      // The warp's candidates go to [base, base + wc), in item order then lane order (the
      // ballots are recomputed rather than kept: fewer registers).
      u64 base = s_base[buf];
      for (int w = 0; w < warp; w++) base += w_cnt[buf][w];
#pragma unroll
      for (int j = 0; j < kItems; j++) {
        const int e = item_offset<T>(j);
        const bool cand = e < r.count && (cur[j] >> s0) == d0;
        const unsigned int m = __ballot_sync(0xffffffffu, cand);
        if (cand) {
          const u64 pos = base + __popc(m & lt);
          if (pos < cap) {
            cand_key[pos] = cur[j];
            cand_pos[pos] = (u64(t) << kTileShift) | u64(e);
          } else {
            st->overflow = 1;
          }
        }
        base += __popc(m);
      }
    }
    buf ^= 1;
    if (!more) break;
    t = tn;
    r = rn;
#pragma unroll
    for (int j = 0; j < kItems; j++) cur[j] = nxt[j];
  }
  if (bad) st->bad = 1;
  if (threadIdx.x == 0 && mode == 1 && above) atomicAdd(&st->above, above);
  __syncthreads();
  merge_hist(sh, ghist, bins);
  if (last_block_done(st)) {  // block-uniform
    if (mode == 1) {
      // Every thread reads the same final values (all blocks' atomics are visible here).
      const u64 k = __ldcg(&st->k_rem), ab = __ldcg(&st->above), cc = __ldcg(&st->cand_count);
      const bool hit = ab < k && k <= ab + cc;
      __syncthreads();  // the reads above happen before thread 0 writes
      if (threadIdx.x == 0) {
        if (hit) {
          st->k_rem = k - ab;
        } else {
          st->miss = 1;
          st->prefix = 0;
          st->cand_count = 0;
          st->overflow = 0;
        }
      }
      __syncthreads();  // choose_block reads k_rem
      if (hit) {
        choose_block(ghist, bits1, s1, st, tmp);
      } else {
        for (int b = threadIdx.x; b < bins; b += kThreads) ghist[b] = 0;
      }
    } else {
      choose_block(ghist, bits1, s1, st, tmp);
    }
    if (threadIdx.x == 0) st->done = 0;
  }
}

// Later digits: from the candidates, or (they overflowed) from the input again; the branch is
// grid-uniform (overflow is only written by cand_kernel). The last block chooses the digit.
template <typename T, typename K>
__global__ void __launch_bounds__(kThreads)
    digit_kernel(const Seg* __restrict__ segs, int nseg, long long ntiles, State2* st, const K* __restrict__ cand_key,
                 u64 cap, u64* ghist, int match_shift, int shift, int bits) {
  extern __shared__ unsigned int sh[];
  __shared__ BlockScanT::TempStorage tmp;
  const int bins = 1 << bits;
  for (int b = threadIdx.x; b < bins; b += kThreads) sh[b] = 0;
  __syncthreads();
  const K want = K(__ldcg(&st->prefix)) >> match_shift;
  const K mask = K(bins - 1);
  if (!__ldcg(&st->overflow)) {
    const u64 cc = __ldcg(&st->cand_count);
    const u64 n = cc < cap ? cc : cap;
    for (u64 i = blockIdx.x * u64(kThreads) + threadIdx.x; i < n; i += u64(gridDim.x) * kThreads) {
      const K key = cand_key[i];
      if ((key >> match_shift) == want) atomicAdd(sh + int((key >> shift) & mask), 1u);
    }
  } else {
    for (long long t = blockIdx.x; t < ntiles; t += gridDim.x) {
      const TileRef r = tile_ref<T>(segs, nseg, t);
      K keys[kItems];
      load_tile_fast<T>(r, keys);
#pragma unroll
      for (int j = 0; j < kItems; j++)
        if (item_offset<T>(j) < r.count && (keys[j] >> match_shift) == want)
          atomicAdd(sh + int((keys[j] >> shift) & mask), 1u);
    }
  }
  __syncthreads();
  merge_hist(sh, ghist, bins);
  finish_choose(ghist, bits, shift, st, tmp);
}

// Exact per-tile counts against the threshold: from the candidates (as cand_count_kernel), or
// after an overflow from the input (as tile_count_kernel). Grid-uniform branch.
template <typename T, typename K>
__global__ void __launch_bounds__(kThreads)
    count_kernel(const Seg* __restrict__ segs, int nseg, long long ntiles, const State2* st,
                 const K* __restrict__ cand_key, const u64* __restrict__ cand_pos, u64 cap, u64* tile_gt,
                 u64* tile_eq) {
  using Reduce = cub::BlockReduce<u64, kThreads>;
  __shared__ typename Reduce::TempStorage red;
  const K thr = K(st->prefix);
  if (!st->overflow) {
    const u64 n = st->cand_count < cap ? st->cand_count : cap;
    const int lane = threadIdx.x & 31;
    const u64 stride = u64(gridDim.x) * kThreads;
    for (u64 wb = blockIdx.x * u64(kThreads) + (threadIdx.x & ~31u); wb < n; wb += stride) {  // warp-uniform
      const u64 i = wb + lane;
      const bool valid = i < n;
      const K key = valid ? cand_key[i] : K(0);
      const u64 t = valid ? cand_pos[i] >> kTileShift : ~0ull;
      const unsigned int group = __match_any_sync(0xffffffffu, t);
      const unsigned int gm = __ballot_sync(0xffffffffu, valid && key > thr);
      const unsigned int em = __ballot_sync(0xffffffffu, valid && key == thr);
      if (valid && lane == __ffs(group) - 1) {
        const unsigned int cg = __popc(gm & group), ce = __popc(em & group);
        if (cg) atomicAdd(tile_gt + t, u64(cg));
        if (ce) atomicAdd(tile_eq + t, u64(ce));
      }
    }
  } else {
    for (long long t = blockIdx.x; t < ntiles; t += gridDim.x) {  // block-uniform
      const TileRef r = tile_ref<T>(segs, nseg, t);
      K keys[kItems];
      load_tile_fast<T>(r, keys);
      u64 packed = 0;  // gt << 32 | eq: both <= kTile
#pragma unroll
      for (int j = 0; j < kItems; j++) {
        if (item_offset<T>(j) < r.count) {
          if (keys[j] > thr)
            packed += 1ull << 32;
          else if (keys[j] == thr)
            packed += 1ull;
        }
      }
      const u64 total = Reduce(red).Sum(packed);
      if (threadIdx.x == 0) {
        tile_gt[t] = total >> 32;
        tile_eq[t] = total & 0xffffffffull;
      }
      __syncthreads();
    }
  }
}

constexpr int kScanThreads = 512;
constexpr int kScanItems = 16;

// One block: exclusive scans of tile_gt and tile_eq over ntiles + 1 entries (the last one, zero,
// gets the total), then per tensor the number of indices it gets, and the bad / lost flags.
// Replaces two CUB device scans (4 launches) and seg_count_kernel.
__global__ void __launch_bounds__(kScanThreads)
    scan_kernel(const Seg* __restrict__ segs, int nseg, long long ntiles, const State2* st,
                const u64* __restrict__ tile_gt, const u64* __restrict__ tile_eq, u64* gt_scan, u64* eq_scan,
                u64* counts) {
  using Scan = cub::BlockScan<u64, kScanThreads>;
  __shared__ typename Scan::TempStorage tg, te;
  const long long n = ntiles + 1;
  u64 carry_g = 0, carry_e = 0;
  for (long long c0 = 0; c0 < n; c0 += (long long)kScanThreads * kScanItems) {  // block-uniform
    const long long i0 = c0 + (long long)threadIdx.x * kScanItems;
    u64 g[kScanItems], e[kScanItems];
    u64 sg = 0, se = 0;
#pragma unroll
    for (int q = 0; q < kScanItems; q++) {
      const long long i = i0 + q;
      g[q] = i < n ? tile_gt[i] : 0;
      e[q] = i < n ? tile_eq[i] : 0;
      sg += g[q];
      se += e[q];
    }
    u64 xg, xe, ag, ae;
    Scan(tg).ExclusiveSum(sg, xg, ag);
    Scan(te).ExclusiveSum(se, xe, ae);
    u64 rg = carry_g + xg, re = carry_e + xe;
#pragma unroll
    for (int q = 0; q < kScanItems; q++) {
      const long long i = i0 + q;
      if (i < n) {
        gt_scan[i] = rg;
        eq_scan[i] = re;
      }
      rg += g[q];
      re += e[q];
    }
    carry_g += ag;
    carry_e += ae;
    __syncthreads();  // temp storage reused; the scans' global writes visible to the whole block
  }
  const u64 need = st->k_rem;
  for (int s = threadIdx.x; s < nseg; s += kScanThreads) {
    const long long tb = segs[s].tile_begin;
    const long long te_ = s + 1 < nseg ? segs[s + 1].tile_begin : ntiles;
    counts[s] = selected_before(gt_scan, eq_scan, te_, need) - selected_before(gt_scan, eq_scan, tb, need);
  }
  if (threadIdx.x == 0) {
    counts[nseg] = u64(st->bad);
    counts[nseg + 1] = u64(st->lost);
  }
}

// Exclusive scan of NS per-slot counts by warp 0 (NS in 16..128).
template <int NS>
__device__ __forceinline__ void scan_slots_n(const unsigned int* in, unsigned int* out) {
  if (threadIdx.x < 32) {
    constexpr int S = NS >= 32 ? NS / 32 : 1;
    static_assert(NS <= 32 || NS % 32 == 0, "slot count");
    const int lane = threadIdx.x;
    unsigned int a[S];
    unsigned int sum = 0;
#pragma unroll
    for (int q = 0; q < S; q++) {
      const int idx = lane * S + q;
      a[q] = idx < NS ? in[idx] : 0u;
      sum += a[q];
    }
    unsigned int incl = sum;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      const unsigned int y = __shfl_up_sync(0xffffffffu, incl, d);
      if (lane >= d) incl += y;
    }
    unsigned int ex = incl - sum;
#pragma unroll
    for (int q = 0; q < S; q++) {
      const int idx = lane * S + q;
      if (idx < NS) out[idx] = ex;
      ex += a[q];
    }
  }
}

// The selected local indices of each tile, ascending, at the tile's offset in its tensor's
// output. Grid-stride over tiles (grid <= ntiles), the next tile's loads issued before the current
// one is processed. Ties are ranked (an extra slot scan) only in the one tile where the ties taken
// run out ("partial"); every other tile takes all of its ties or none. Branches are block-uniform.
// Barriers: cnt is written before barrier A and read by warp 0 before barrier B; off is written by
// warp 0 between A and B and read by all after B, before they reach the next A: one buffer is safe.
template <typename T, typename K>
__global__ void __launch_bounds__(kThreads, kMinBlocks<T>)
    write_kernel2(const Seg* __restrict__ segs, int nseg, long long ntiles, const State2* st,
                  const u64* __restrict__ tile_gt, const u64* __restrict__ tile_eq, const u64* __restrict__ gt_scan,
                  const u64* __restrict__ eq_scan) {
  constexpr int V = VecOf<T>::V, NV = VecOf<T>::NV, NS = VecOf<T>::NS;
  __shared__ unsigned int cnt[NS], off[NS], ecnt[NS], eoff[NS];
  const u64 need = st->k_rem;
  const K thr = K(st->prefix);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const unsigned int lt = (1u << lane) - 1u;
  long long t = blockIdx.x;
  TileRef r = tile_ref<T>(segs, nseg, t);
  K cur[kItems];
  load_tile_fast<T>(r, cur);
  for (;;) {
    const long long tn = t + gridDim.x;
    const bool more = tn < ntiles;
    TileRef rn = r;
    K nxt[kItems];
    if (more) {
      rn = tile_ref<T>(segs, nseg, tn);
      load_tile_fast<T>(rn, nxt);
    }
    const u64 eqb = eq_scan[t], teq = tile_eq[t];
    const u64 ties_here = need > eqb ? (need - eqb < teq ? need - eqb : teq) : 0;
    if (tile_gt[t] + ties_here != 0) {                                   // block-uniform
      const int mode = ties_here == 0 ? 0 : (ties_here == teq ? 2 : 1);  // ties taken: none, some, all
      const Seg& s = segs[r.seg];
      const u64 base =
          selected_before(gt_scan, eq_scan, t, need) - selected_before(gt_scan, eq_scan, s.tile_begin, need);
      // Ballots of the selected items of load v (V of them), recomputed where needed rather than
      // kept for all items: registers. Partial tiles rank their ties with eoff (below).
      auto sel_masks = [&](int v, unsigned int(&m)[V]) {
        if (mode == 1) {
          unsigned int em[V];
          unsigned int before = eoff[v * kWarps + warp];
#pragma unroll
          for (int i = 0; i < V; i++) {
            const int j = v * V + i;
            em[i] = __ballot_sync(0xffffffffu, item_offset<T>(j) < r.count && cur[j] == thr);
            before += __popc(em[i] & lt);
          }
          // before: ties of the tile ahead of this lane's first item of load v (earlier slots, lower
          // lanes of this slot); then this lane's own earlier items.
#pragma unroll
          for (int i = 0; i < V; i++) {
            const int j = v * V + i;
            const bool eq = (em[i] >> lane) & 1u;
            m[i] = __ballot_sync(0xffffffffu,
                                 (item_offset<T>(j) < r.count && cur[j] > thr) || (eq && eqb + before < need));
            before += eq ? 1u : 0u;
          }
        } else {
          const bool all_ties = mode == 2;
#pragma unroll
          for (int i = 0; i < V; i++) {
            const int j = v * V + i;
            m[i] = __ballot_sync(0xffffffffu,
                                 item_offset<T>(j) < r.count && (cur[j] > thr || (all_ties && cur[j] == thr)));
          }
        }
      };
      if (mode == 1) {  // block-uniform; at most one tile of the whole select
#pragma unroll
        for (int v = 0; v < NV; v++) {
          unsigned int c = 0;
#pragma unroll
          for (int i = 0; i < V; i++) {
            const int j = v * V + i;
            c += __popc(__ballot_sync(0xffffffffu, item_offset<T>(j) < r.count && cur[j] == thr));
          }
          if (lane == 0) ecnt[v * kWarps + warp] = c;
        }
        __syncthreads();
        scan_slots_n<NS>(ecnt, eoff);
        __syncthreads();
      }
#pragma unroll
      for (int v = 0; v < NV; v++) {
        unsigned int m[V];
        sel_masks(v, m);
        unsigned int c = 0;
#pragma unroll
        for (int i = 0; i < V; i++) c += __popc(m[i]);
        if (lane == 0) cnt[v * kWarps + warp] = c;
      }
      __syncthreads();  // A
      scan_slots_n<NS>(cnt, off);
      __syncthreads();  // B
#pragma unroll
      for (int v = 0; v < NV; v++) {
        unsigned int m[V];
        sel_masks(v, m);
        u64 pos = base + off[v * kWarps + warp];
#pragma unroll
        for (int i = 0; i < V; i++) pos += __popc(m[i] & lt);
#pragma unroll
        for (int i = 0; i < V; i++) {
          if ((m[i] >> lane) & 1u) {
            const long long idx = r.local + item_offset<T>(v * V + i);
            if (s.out64)
              static_cast<long long*>(s.out)[pos] = idx;
            else
              static_cast<int*>(s.out)[pos] = int(idx);
            pos++;
          }
        }
      }
    }
    if (!more) break;
    t = tn;
    r = rn;
#pragma unroll
    for (int j = 0; j < kItems; j++) cur[j] = nxt[j];
  }
}

// Resident blocks per SM for a kernel (cached): the grid of the tile loops.
int blocks_per_sm(const void* kernel, size_t smem, int dev) {
  static std::mutex mu;
  static std::map<std::tuple<const void*, size_t, int>, int> cache;
  std::lock_guard<std::mutex> lk(mu);
  auto key = std::make_tuple(kernel, smem, dev);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  int n = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kThreads, smem));
  n = std::max(n, 1);
  cache.emplace(key, n);
  return n;
}

// The device workspace of one select, carved from one allocation. Its layout is computed once,
// here, for the radix and the bracket paths alike: the bytes allocated and the pointers the kernels
// get come from the same offsets. `extra_bytes` is a path's own state (the bracket's bounds),
// placed after State2; candidate keys are K. Segment descriptors: nseg; counts: one per segment,
// then the NaN/Inf and lost-track flags.
template <typename K>
struct Workspace {
  u64 cap = 0;  // candidates kept: total / 16, at least 4096, at most total
  Tensor buf;
  State2* st = nullptr;
  void* extra = nullptr;
  Seg* seg_table = nullptr;
  u64* hist = nullptr;  // kMaxBins; hist, tile_gt and tile_eq are contiguous (init_kernel zeroes them)
  u64* tile_gt = nullptr;
  u64* tile_eq = nullptr;
  u64* gt_scan = nullptr;
  u64* eq_scan = nullptr;
  u64* counts = nullptr;
  K* cand_key = nullptr;
  u64* cand_pos = nullptr;
  long long nzero = 0;  // u64 words from hist through tile_eq

  Workspace(const Device& device, int nseg, long long ntiles, long long total, size_t extra_bytes)
      : cap(u64(std::min<long long>(total, std::max<long long>(total / 16, 4096)))) {
    size_t off = 0;
    auto take = [&](size_t bytes) {
      const size_t o = off;
      off += align_up(bytes);
      return o;
    };
    const size_t tiles = sizeof(u64) * size_t(ntiles + 1);
    const size_t o_state = take(sizeof(State2));
    const size_t o_extra = take(extra_bytes);
    const size_t o_segs = take(sizeof(Seg) * size_t(nseg));
    const size_t o_hist = take(sizeof(u64) * kMaxBins);
    const size_t o_tgt = take(tiles);
    const size_t o_teq = take(tiles);
    const size_t zero_end = off;
    const size_t o_sgt = take(tiles);
    const size_t o_seq = take(tiles);
    const size_t o_cnt = take(sizeof(u64) * size_t(nseg + 2));
    const size_t o_ckey = take(sizeof(K) * cap);
    const size_t o_cpos = take(sizeof(u64) * cap);
    buf = empty({int64_t(off)}, DType::BOOL, device);
    char* base = static_cast<char*>(buf.raw());
    st = reinterpret_cast<State2*>(base + o_state);
    extra = extra_bytes ? base + o_extra : nullptr;
    seg_table = reinterpret_cast<Seg*>(base + o_segs);
    hist = reinterpret_cast<u64*>(base + o_hist);
    tile_gt = reinterpret_cast<u64*>(base + o_tgt);
    tile_eq = reinterpret_cast<u64*>(base + o_teq);
    gt_scan = reinterpret_cast<u64*>(base + o_sgt);
    eq_scan = reinterpret_cast<u64*>(base + o_seq);
    counts = reinterpret_cast<u64*>(base + o_cnt);
    cand_key = reinterpret_cast<K*>(base + o_ckey);
    cand_pos = reinterpret_cast<u64*>(base + o_cpos);
    nzero = (long long)((zero_end - o_hist) / sizeof(u64));
  }

  // One launch: the state (k to select), the first n segment descriptors, and the zeroes.
  void init(cudaStream_t stream, int64_t k, int n, const SegBatch& b) const {
    const unsigned zgrid = unsigned(std::max<long long>(1, std::min<long long>((nzero + 1023) / 1024, 1024)));
    init_kernel<<<zgrid, kThreads, 0, stream>>>(st, u64(k), hist, nzero, seg_table, n, b);
  }
};

// Sampled guess of the top digit: every kSampleStride-th tile (fewer, down to every 2nd, while
// that leaves at least kSampleMinTiles tiles; no guess below 2 * kSampleMinTiles tiles).
constexpr long long kSampleStride = 16;
constexpr long long kSampleMinTiles = 32;

template <typename T>
std::vector<Tensor> run_select_fast(const std::vector<Tensor>& scores, int64_t k, const Tensor* single_out) {
  using K = typename KeyOf<T>::type;
  const Device device = scores[0].device();
  const int dev = device.index;
  cudaStream_t stream = current_stream(dev);
  const int nseg = int(scores.size());

  std::vector<Seg> segs;
  long long ntiles = 0, total = 0;
  for (const Tensor& t : scores) {
    Seg s;
    s.ptr = t.raw();
    s.numel = t.numel();
    s.tile_begin = ntiles;
    s.out = nullptr;
    s.out64 = t.numel() >= (1ll << 31) ? 1 : 0;
    s.pad = 0;
    segs.push_back(s);
    ntiles += (s.numel + kTile - 1) / kTile;
    total += s.numel;
  }
  if (single_out) {
    segs[0].out = single_out->raw();
    segs[0].out64 = single_out->dtype == DType::I64 ? 1 : 0;
  }

  // Digit schedule, as run_select.
  const int key_bits = int(sizeof(K) * 8);
  std::vector<int> widths, shifts;
  {
    int left = key_bits;
    widths.push_back(kMaxDigitBits);
    left -= kMaxDigitBits;
    if (key_bits == 32) {
      widths.push_back(11);
      widths.push_back(8);
      left = 0;
    }
    while (left > 0) {
      int w = std::min(left, kMaxDigitBits);
      widths.push_back(w);
      left -= w;
    }
    int sh = key_bits;
    for (int w : widths) {
      sh -= w;
      shifts.push_back(sh);
    }
  }
  Workspace<K> ws(device, nseg, ntiles, total, 0);

  // Segment descriptors past the first kSegBatch (the init kernel writes those).
  auto upload_rest = [&](int from) {
    for (int i = from; i < nseg; i += kSegBatch) {
      SegBatch b{};
      int n = std::min(kSegBatch, nseg - i);
      for (int j = 0; j < n; j++) b.s[j] = segs[size_t(i + j)];
      write_segs_kernel<<<1, kSegBatch, 0, stream>>>(ws.seg_table, i, n, b);
    }
  };
  {
    SegBatch b{};
    const int n = std::min(kSegBatch, nseg);
    for (int j = 0; j < n; j++) b.s[j] = segs[size_t(j)];
    ws.init(stream, k, n, b);
    upload_rest(kSegBatch);
  }

  const int sms = sm_count(dev);
  auto grid_of = [&](const void* kern, size_t smem) {
    return unsigned(std::min<long long>(ntiles, (long long)blocks_per_sm(kern, smem, dev) * sms));
  };

  // Passes 1 and 2. With enough tiles the top digit is first guessed from every tstride-th tile
  // (the digit holding the same fraction of the sample as k of the whole), pass 2 runs with the
  // guess and checks it; only when it missed do the exact pass 1 and pass 2 run (guarded kernels
  // that otherwise exit at once). Same results either way: the digit found holds the k-th key.
  auto h1 = hist1_kernel<T, K>;
  auto c2 = cand_kernel<T, K>;
  const size_t smem0 = sizeof(unsigned int) << widths[0], smem1 = sizeof(unsigned int) << widths[1];
  const unsigned g1 = grid_of(reinterpret_cast<const void*>(h1), smem0);
  const unsigned g2 = grid_of(reinterpret_cast<const void*>(c2), smem1);
  const long long tstride = std::min<long long>(kSampleStride, ntiles / kSampleMinTiles);
  if (tstride >= 2) {
    const long long nsamp = (ntiles + tstride - 1) / tstride;  // tiles 0, tstride, 2 * tstride, ...
    long long m = 0;                                           // elements in those tiles
    for (const Seg& sg : segs) {
      const long long tb = sg.tile_begin, te = tb + (sg.numel + kTile - 1) / kTile;
      for (long long t = (tb + tstride - 1) / tstride * tstride; t < te; t += tstride)
        m += std::min<long long>(kTile, sg.numel - (t - tb) * kTile);
    }
    const double want = double(k) * double(m) / double(total);
    const u64 rank = u64(std::max<long long>(1, std::min<long long>(m, std::llround(want))));
    h1<<<unsigned(std::min<long long>(g1, nsamp)), kThreads, smem0, stream>>>(ws.seg_table, nseg, nsamp, tstride, ws.st,
                                                                              ws.hist, shifts[0], widths[0], rank, 0);
    c2<<<g2, kThreads, smem1, stream>>>(ws.seg_table, nseg, ntiles, ws.st, ws.hist, shifts[0], shifts[1], widths[1],
                                        ws.cand_key, ws.cand_pos, ws.cap, ws.tile_gt, 1);
    h1<<<g1, kThreads, smem0, stream>>>(ws.seg_table, nseg, ntiles, 1, ws.st, ws.hist, shifts[0], widths[0], 0, 1);
    c2<<<g2, kThreads, smem1, stream>>>(ws.seg_table, nseg, ntiles, ws.st, ws.hist, shifts[0], shifts[1], widths[1],
                                        ws.cand_key, ws.cand_pos, ws.cap, ws.tile_gt, 2);
  } else {
    h1<<<g1, kThreads, smem0, stream>>>(ws.seg_table, nseg, ntiles, 1, ws.st, ws.hist, shifts[0], widths[0], 0, 0);
    c2<<<g2, kThreads, smem1, stream>>>(ws.seg_table, nseg, ntiles, ws.st, ws.hist, shifts[0], shifts[1], widths[1],
                                        ws.cand_key, ws.cand_pos, ws.cap, ws.tile_gt, 0);
  }
  // Remaining digits: candidates, or (overflow) the input again.
  for (size_t p = 2; p < widths.size(); p++) {
    const size_t smem = sizeof(unsigned int) << widths[p];
    auto kern = digit_kernel<T, K>;
    kern<<<grid_of(reinterpret_cast<const void*>(kern), smem), kThreads, smem, stream>>>(
        ws.seg_table, nseg, ntiles, ws.st, ws.cand_key, ws.cap, ws.hist, shifts[p - 1], shifts[p], widths[p]);
  }
  {
    auto kern = count_kernel<T, K>;
    kern<<<grid_of(reinterpret_cast<const void*>(kern), 0), kThreads, 0, stream>>>(
        ws.seg_table, nseg, ntiles, ws.st, ws.cand_key, ws.cand_pos, ws.cap, ws.tile_gt, ws.tile_eq);
  }
  scan_kernel<<<1, kScanThreads, 0, stream>>>(ws.seg_table, nseg, ntiles, ws.st, ws.tile_gt, ws.tile_eq, ws.gt_scan,
                                              ws.eq_scan, ws.counts);
  check_last_error("topk");

  std::vector<Tensor> outs;
  auto read_flags = [&](std::vector<u64>& host) {
    host.assign(size_t(nseg + 2), 0);
    CUDA_CHECK(cudaMemcpyAsync(host.data(), ws.counts, sizeof(u64) * size_t(nseg + 2), cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    SIFT_CHECK(host[size_t(nseg)] == 0, "E_NUMERIC", "topk: the scores contain NaN or Inf");
    SIFT_CHECK(host[size_t(nseg) + 1] == 0, "E_INTERNAL", "topk: radix select lost track of the k-th key");
  };
  if (!single_out) {
    std::vector<u64> host;
    read_flags(host);
    for (int i = 0; i < nseg; i++) {
      DType it = segs[size_t(i)].out64 ? DType::I64 : DType::I32;
      outs.push_back(empty({int64_t(host[size_t(i)])}, it, device));
      segs[size_t(i)].out = outs.back().numel() > 0 ? outs.back().raw() : nullptr;
    }
    upload_rest(0);
  }
  {
    auto kern = write_kernel2<T, K>;
    kern<<<grid_of(reinterpret_cast<const void*>(kern), 0), kThreads, 0, stream>>>(
        ws.seg_table, nseg, ntiles, ws.st, ws.tile_gt, ws.tile_eq, ws.gt_scan, ws.eq_scan);
  }
  check_last_error("topk");
  if (single_out) {
    std::vector<u64> host;
    read_flags(host);
    SIFT_CHECK(host[0] == u64(k), "E_INTERNAL", "topk: selected ", host[0], " of ", k);
  }
  return outs;
}

}  // namespace fast

// The bracket top-k (select_bracket.h has the scheme and the decisions the kernels share with the
// host-side simulation). One tensor of f32, f16 or bf16 scores; the radix kernels above cover the
// rest and take over when the bracket misses.
namespace brk {

namespace br = ::sift::cuda::bracket;
using fast::BlockScanT;
using fast::State2;
static_assert(br::kTile == kTile && br::kThreads == kThreads && br::kItems == kItems, "tile layout");

struct BState {
  float L, G;  // the bracket: x >= G above it, x >= L in or above it
  u64 above;   // elements above the bracket (pass 2)
};

template <typename T>
struct Raw {
  static constexpr int V = 16 / int(sizeof(T));
  static constexpr int NV = kItems / V;
};

// Item j of a tile held as NV raw 16-byte loads (j known at compile time in unrolled loops).
template <typename T>
__device__ __forceinline__ float elem(const uint4 (&q)[Raw<T>::NV], int j) {
  constexpr int V = Raw<T>::V;
  const uint4& w4 = q[j / V];
  const int i = j % V;
  if constexpr (std::is_same_v<T, float>) {
    return __uint_as_float(fast::word_of(w4, i));
  } else {
    const unsigned w = fast::word_of(w4, i >> 1);
    if constexpr (std::is_same_v<T, __nv_bfloat16>)
      return __uint_as_float((i & 1) ? (w & 0xffff0000u) : (w << 16));
    else
      return __half2float(__ushort_as_half(static_cast<unsigned short>((i & 1) ? (w >> 16) : (w & 0xffffu))));
  }
}

// Loads a tile's raw words in the tile layout. Returns whether the tile is whole and 16-byte
// aligned (block-uniform): then every item is valid; otherwise items past r.count read as zero
// words and the callers test validity.
template <typename T>
__device__ __forceinline__ bool load_raw(const TileRef& r, uint4 (&q)[Raw<T>::NV]) {
  constexpr int V = Raw<T>::V, NV = Raw<T>::NV;
  const T* p = static_cast<const T*>(r.ptr);
  const bool full = r.count == kTile && (reinterpret_cast<unsigned long long>(p) & 15ull) == 0;
#pragma unroll
  for (int v = 0; v < NV; v++) {
    const int base = v * (kThreads * V) + int(threadIdx.x) * V;
    if (full) {
      q[v] = __ldg(reinterpret_cast<const uint4*>(p + base));
    } else {
      unsigned w[4] = {0u, 0u, 0u, 0u};
#pragma unroll
      for (int i = 0; i < V; i++) {
        if (base + i < r.count) {
          if constexpr (sizeof(T) == 4) {
            w[i] = __float_as_uint(__ldg(reinterpret_cast<const float*>(p) + base + i));
          } else {
            const unsigned h = __ldg(reinterpret_cast<const unsigned short*>(p) + base + i);
            w[i >> 1] |= h << ((i & 1) * 16);
          }
        }
      }
      q[v] = make_uint4(w[0], w[1], w[2], w[3]);
    }
  }
  return full;
}

// NaN/Inf in a tile's raw words (select_bracket.h).
template <typename T>
__device__ __forceinline__ unsigned nonfinite_acc(const uint4 (&q)[Raw<T>::NV], unsigned acc) {
  constexpr int NV = Raw<T>::NV;
#pragma unroll
  for (int v = 0; v < NV; v++) {
#pragma unroll
    for (int n = 0; n < 4; n++) {
      const unsigned w = fast::word_of(q[v], n);
      if constexpr (std::is_same_v<T, float>)
        acc = br::nonfinite_acc_f32(acc, w);
      else if constexpr (std::is_same_v<T, __nv_bfloat16>)
        acc = br::nonfinite_acc_bf16(acc, w);
      else
        acc = br::nonfinite_acc_f16(acc, w);
    }
  }
  return acc;
}
template <typename T>
__device__ __forceinline__ bool nonfinite_found(unsigned acc) {
  if constexpr (std::is_same_v<T, float>)
    return br::nonfinite_f32(acc);
  else
    return br::nonfinite_16(acc);
}

__device__ __forceinline__ unsigned warp_sum(unsigned x) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  return __reduce_add_sync(0xffffffffu, x);
#else
#pragma unroll
  for (int d = 16; d > 0; d >>= 1) x += __shfl_xor_sync(0xffffffffu, x, d);
  return x;
#endif
}

// Block-wide exclusive scan of packed per-load counts in thread order; wsum: kWarps shared words,
// alternated between consecutive calls by the caller (one barrier per call).
__device__ __forceinline__ void scan_packed(u64 val, u64& prefix, u64& total, u64* wsum) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  u64 inc = val;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const u64 y = __shfl_up_sync(0xffffffffu, inc, d);
    if (lane >= d) inc += y;
  }
  if (lane == 31) wsum[warp] = inc;
  __syncthreads();
  u64 before = 0, tot = 0;
#pragma unroll
  for (int w = 0; w < kWarps; w++) {
    const u64 s = wsum[w];
    before += w < warp ? s : 0;
    tot += s;
  }
  prefix = before + inc - val;
  total = tot;
}

// Pass 1 (sample): histogram of the top kSampleBits key bits over tiles i * tstride (i < nsamp),
// with the NaN/Inf check; the last block picks the bins holding sample ranks hi_rank and lo_rank
// and stores the bracket's float bounds.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    sample_kernel(const Seg* __restrict__ segs, long long nsamp, long long tstride, State2* st, BState* bs, u64* ghist,
                  u64 hi_rank, u64 lo_rank) {
  using K = unsigned int;
  extern __shared__ unsigned int sh[];
  __shared__ BlockScanT::TempStorage tmp;
  __shared__ unsigned int bins_found[2];
  constexpr int bins = br::kSampleBins, shift = br::kKeyBits - br::kSampleBits;
  for (int b = threadIdx.x; b < bins; b += kThreads) sh[b] = 0;
  if (threadIdx.x == 0) {
    bins_found[0] = bins - 1;  // not found (cannot happen): nothing above, everything a candidate
    bins_found[1] = 0;         // -> the buffer overflows and the radix kernels run
  }
  __syncthreads();
  bool bad = false;
  for (long long i = blockIdx.x; i < nsamp; i += gridDim.x) {
    const TileRef r = tile_ref<T>(segs, 1, i * tstride);
    K keys[kItems];
    fast::load_tile_fast<T>(r, keys);
#pragma unroll
    for (int j = 0; j < kItems; j++) {
      if (fast::item_offset<T>(j) < r.count) {
        bad |= nonfinite(keys[j]);
        atomicAdd(sh + int(keys[j] >> shift), 1u);
      }
    }
  }
  if (bad) st->bad = 1;
  __syncthreads();
  merge_hist(sh, ghist, bins);
  if (fast::last_block_done(st)) {  // block-uniform
    constexpr int per = bins / kThreads;
    u64 local = 0;
#pragma unroll 4
    for (int q = 0; q < per; q++) local += __ldcg(ghist + (bins - 1 - (int(threadIdx.x) * per + q)));
    u64 before;
    BlockScanT(tmp).ExclusiveSum(local, before);
    const u64 ranks[2] = {hi_rank, lo_rank};
    for (int w = 0; w < 2; w++) {
      if (before < ranks[w] && ranks[w] <= before + local) {
        u64 above = before;
        for (int q = 0; q < per; q++) {
          const int bin = bins - 1 - (int(threadIdx.x) * per + q);
          above += __ldcg(ghist + bin);
          if (above >= ranks[w]) {
            bins_found[w] = unsigned(bin);
            break;
          }
        }
      }
    }
    __syncthreads();
    for (int b = threadIdx.x; b < bins; b += kThreads) ghist[b] = 0;
    if (threadIdx.x == 0) {
      const br::Bounds bd = br::bracket_bounds(bins_found[1], bins_found[0]);
      bs->L = bd.L;
      bs->G = bd.G;
      bs->above = 0;
      st->done = 0;
    }
  }
}

// Pass 2: per element x >= G (counted per tile into tile_gt) and x >= L (the ones below G are the
// candidates: key and position appended to the buffer), with the NaN/Inf check. Persistent tile
// loop, the next tile's loads issued before the current one is counted. Per tile: warp sums, one
// barrier, thread 0's global atomic for the tile's candidates, one barrier (shared words double
// buffered). The last block checks the bracket (select_bracket.h: bracket_hit); on a miss it
// flags it and empties the candidates so that the later kernels do nothing.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    split_kernel(const Seg* __restrict__ segs, long long ntiles, State2* st, BState* bs, unsigned* cand_key,
                 u64* cand_pos, u64 cap, u64* tile_gt) {
  constexpr int V = Raw<T>::V, NV = Raw<T>::NV;
  __shared__ unsigned int w_cnt[2][kWarps], w_gt[2][kWarps];
  __shared__ u64 s_base[2];
  const float L = bs->L, G = bs->G;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  long long t = blockIdx.x;
  TileRef r = tile_ref<T>(segs, 1, t);
  uint4 cur[NV];
  bool full = load_raw<T>(r, cur);
  unsigned nf = 0;
  u64 above = 0;  // thread 0: elements above the bracket in this block's tiles
  int buf = 0;
  for (;;) {
    const long long tn = t + gridDim.x;
    const bool more = tn < ntiles;
    TileRef rn = r;
    uint4 nxt[NV];
    bool fulln = full;
    if (more) {
      rn = tile_ref<T>(segs, 1, tn);
      fulln = load_raw<T>(rn, nxt);
    }
    unsigned cg = 0, cl = 0;  // this thread's items >= G, >= L
    if (full) {
#pragma unroll
      for (int j = 0; j < kItems; j++) {
        const float x = elem<T>(cur, j);
        cg += x >= G ? 1u : 0u;
        cl += x >= L ? 1u : 0u;
      }
    } else {
#pragma unroll
      for (int j = 0; j < kItems; j++) {
        const bool valid = br::item_offset(V, int(threadIdx.x), j) < r.count;
        const float x = elem<T>(cur, j);
        cg += valid && x >= G ? 1u : 0u;
        cl += valid && x >= L ? 1u : 0u;
      }
    }
    nf = nonfinite_acc<T>(cur, nf);
    const unsigned cc = cl - cg;
    const unsigned wg = warp_sum(cg), wc = warp_sum(cc);
    fast::publish_tile_counts(wc, wg, w_cnt[buf], w_gt[buf], &s_base[buf], t, tile_gt, above, st);
    if (wc) {  // warp-uniform
      unsigned inc = cc;
#pragma unroll
      for (int d = 1; d < 32; d <<= 1) {
        const unsigned y = __shfl_up_sync(0xffffffffu, inc, d);
        if (lane >= d) inc += y;
      }
      u64 pos = s_base[buf] + (inc - cc);
      for (int w = 0; w < warp; w++) pos += w_cnt[buf][w];
      if (cc) {
#pragma unroll
        for (int j = 0; j < kItems; j++) {
          const int e = br::item_offset(V, int(threadIdx.x), j);
          const float x = elem<T>(cur, j);
          if (e < r.count && x >= L && !(x >= G)) {
            if (pos < cap) {
              cand_key[pos] = br::key_of(x);
              cand_pos[pos] = (u64(t) << kTileShift) | u64(e);
            } else {
              st->overflow = 1;
            }
            pos++;
          }
        }
      }
    }
    buf ^= 1;
    if (!more) break;
    t = tn;
    r = rn;
    full = fulln;
#pragma unroll
    for (int v = 0; v < NV; v++) cur[v] = nxt[v];
  }
  if (nonfinite_found<T>(nf)) st->bad = 1;
  if (threadIdx.x == 0 && above) atomicAdd(&bs->above, above);
  if (fast::last_block_done(st)) {  // block-uniform
    if (threadIdx.x == 0) {
      const u64 ab = __ldcg(&bs->above), cc = __ldcg(&st->cand_count), k = __ldcg(&st->k_rem);
      if (br::bracket_hit(ab, cc, k, __ldcg(&st->overflow) != 0)) {
        st->k_rem = k - ab;
      } else {
        st->miss = 1;
        st->cand_count = 0;
        st->overflow = 0;
      }
      st->done = 0;
    }
  }
}

// A digit of the threshold key from the candidates alone (first: every candidate; later: the ones
// matching the prefix chosen so far); the last block chooses the digit (after a bf16 key's last
// digit it completes the key: bf16_full_key). Nothing on a miss.
__global__ void __launch_bounds__(kThreads)
    cdigit_kernel(State2* st, const unsigned* __restrict__ cand_key, u64 cap, u64* ghist, int first, int match_shift,
                  int shift, int bits, int bf16_last) {
  extern __shared__ unsigned int sh[];
  __shared__ BlockScanT::TempStorage tmp;
  if (__ldcg(&st->miss)) return;  // grid-uniform
  const int bins = 1 << bits;
  for (int b = threadIdx.x; b < bins; b += kThreads) sh[b] = 0;
  __syncthreads();
  const unsigned want = first ? 0u : unsigned(__ldcg(&st->prefix)) >> match_shift;
  const unsigned mask = unsigned(bins - 1);
  const u64 cc = __ldcg(&st->cand_count);
  const u64 n = cc < cap ? cc : cap;
  for (u64 i = blockIdx.x * u64(kThreads) + threadIdx.x; i < n; i += u64(gridDim.x) * kThreads) {
    const unsigned key = cand_key[i];
    if (first || (key >> match_shift) == want) atomicAdd(sh + int((key >> shift) & mask), 1u);
  }
  __syncthreads();
  merge_hist(sh, ghist, bins);
  if (fast::last_block_done(st)) {  // block-uniform
    fast::choose_block(ghist, bits, shift, st, tmp);
    if (threadIdx.x == 0) {
      if (bf16_last) st->prefix = br::bf16_full_key(unsigned(st->prefix));
      st->done = 0;
    }
  }
}

// The selected indices of each tile, ascending, at the tile's offset (single tensor). Per thread a
// mask of its selected items; one packed block scan gives every item's rank in the tile. Ties are
// ranked (a second packed scan) only in the tile where the ties taken run out. Nothing on a miss.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    write_kernel(const Seg* __restrict__ segs, long long ntiles, const State2* st, const u64* __restrict__ tile_gt,
                 const u64* __restrict__ tile_eq, const u64* __restrict__ gt_scan, const u64* __restrict__ eq_scan) {
  constexpr int V = Raw<T>::V, NV = Raw<T>::NV;
  __shared__ u64 wsum[2][kWarps];
  if (st->miss) return;  // grid-uniform
  const u64 need = st->k_rem;
  const unsigned thr = unsigned(st->prefix);
  const float A = br::bound_of_key(u64(thr) + 1), E = br::bound_of_key(thr);  // x > thr: x >= A; x >= thr: x >= E
  const Seg& s = segs[0];
  long long t = blockIdx.x;
  TileRef r = tile_ref<T>(segs, 1, t);
  uint4 cur[NV];
  load_raw<T>(r, cur);
  int buf = 0;
  for (;;) {
    const long long tn = t + gridDim.x;
    const bool more = tn < ntiles;
    TileRef rn = r;
    uint4 nxt[NV];
    if (more) {
      rn = tile_ref<T>(segs, 1, tn);
      load_raw<T>(rn, nxt);
    }
    const u64 eqb = eq_scan[t], teq = tile_eq[t];
    const u64 ties_here = br::ties_taken(eqb, teq, need);
    if (tile_gt[t] + ties_here != 0) {                                   // block-uniform
      const int mode = ties_here == 0 ? 0 : (ties_here == teq ? 2 : 1);  // ties taken: none, some, all
      const float B = mode == 2 ? E : A;
      unsigned mask = 0, tmask = 0;
#pragma unroll
      for (int j = 0; j < kItems; j++) {
        const bool valid = br::item_offset(V, int(threadIdx.x), j) < r.count;
        const float x = elem<T>(cur, j);
        mask |= (valid && x >= B) ? (1u << j) : 0u;
        if (mode == 1) tmask |= (valid && x >= E && !(x >= A)) ? (1u << j) : 0u;
      }
      u64 prefix, total;
      if (mode == 1) {  // at most one tile of the whole select
        scan_packed(br::pack_counts(tmask, V, NV), prefix, total, wsum[buf]);
        buf ^= 1;
        for (unsigned m = tmask; m; m &= m - 1) {
          const int j = __ffs(m) - 1;
          if (eqb + br::rank_in_tile(j, V, total, prefix, tmask) < need) mask |= 1u << j;
        }
      }
      scan_packed(br::pack_counts(mask, V, NV), prefix, total, wsum[buf]);
      buf ^= 1;
      const u64 base = gt_scan[t] + (eqb < need ? eqb : need);
      for (unsigned m = mask; m; m &= m - 1) {
        const int j = __ffs(m) - 1;
        const u64 pos = base + br::rank_in_tile(j, V, total, prefix, mask);
        const long long idx = r.local + br::item_offset(V, int(threadIdx.x), j);
        if (s.out64)
          static_cast<long long*>(s.out)[pos] = idx;
        else
          static_cast<int*>(s.out)[pos] = int(idx);
      }
    }
    if (!more) break;
    t = tn;
    r = rn;
#pragma unroll
    for (int v = 0; v < NV; v++) cur[v] = nxt[v];
  }
}

// Runs the bracket select into `out` (k indices). Returns false when the bracket missed (nothing
// useful written): the caller runs the radix kernels.
template <typename T>
bool run_select_bracket(const Tensor& scores, int64_t k, const Tensor& out) {
  const Device device = scores.device();
  const int dev = device.index;
  cudaStream_t stream = current_stream(dev);
  const long long total = scores.numel();
  const long long ntiles = (total + kTile - 1) / kTile;
  Seg seg;
  seg.ptr = scores.raw();
  seg.numel = total;
  seg.tile_begin = 0;
  seg.out = out.raw();
  seg.out64 = out.dtype == DType::I64 ? 1 : 0;
  seg.pad = 0;
  const bool bf16 = std::is_same_v<T, __nv_bfloat16>;
  fast::Workspace<unsigned> ws(device, 1, ntiles, total, sizeof(BState));
  BState* bs = static_cast<BState*>(ws.extra);
  static_assert(br::kSampleBins <= kMaxBins, "sample histogram");

  {
    SegBatch b{};
    b.s[0] = seg;
    ws.init(stream, k, 1, b);
  }
  const int sms = sm_count(dev);
  auto grid_of = [&](const void* kern, size_t smem, long long work) {
    return unsigned(
        std::max<long long>(1, std::min<long long>(work, (long long)fast::blocks_per_sm(kern, smem, dev) * sms)));
  };
  // Sample: every tstride-th tile (all of them below 2 * kSampleMinTiles tiles: exact bracket).
  const long long tstride =
      std::max<long long>(1, std::min<long long>(br::kSampleStride, ntiles / br::kSampleMinTiles));
  const long long nsamp = (ntiles + tstride - 1) / tstride;
  long long m = 0;
  for (long long t = 0; t < ntiles; t += tstride) m += std::min<long long>(kTile, total - t * kTile);
  const br::Ranks rk = br::bracket_ranks(u64(k), u64(m), u64(total));
  {
    auto kern = sample_kernel<T>;
    const size_t smem = sizeof(unsigned) * br::kSampleBins;
    kern<<<grid_of(reinterpret_cast<const void*>(kern), smem, nsamp), kThreads, smem, stream>>>(
        ws.seg_table, nsamp, tstride, ws.st, bs, ws.hist, rk.hi, rk.lo);
  }
  {
    auto kern = split_kernel<T>;
    kern<<<grid_of(reinterpret_cast<const void*>(kern), 0, ntiles), kThreads, 0, stream>>>(
        ws.seg_table, ntiles, ws.st, bs, ws.cand_key, ws.cand_pos, ws.cap, ws.tile_gt);
  }
  const int nd = br::digit_count(bf16);
  for (int p = 0; p < nd; p++) {
    const int bits = br::digit_width(bf16, p), shift = br::digit_shift(bf16, p);
    const int match_shift = p == 0 ? 0 : br::digit_shift(bf16, p - 1);
    const size_t smem = sizeof(unsigned) << bits;
    const long long work = std::max<long long>(1, (long long)(ws.cap / kThreads));
    cdigit_kernel<<<grid_of(reinterpret_cast<const void*>(cdigit_kernel), smem, work), kThreads, smem, stream>>>(
        ws.st, ws.cand_key, ws.cap, ws.hist, p == 0 ? 1 : 0, match_shift, shift, bits, bf16 && p == nd - 1 ? 1 : 0);
  }
  {
    auto kern = fast::count_kernel<T, unsigned>;
    kern<<<grid_of(reinterpret_cast<const void*>(kern), 0, ntiles), kThreads, 0, stream>>>(
        ws.seg_table, 1, ntiles, ws.st, ws.cand_key, ws.cand_pos, ws.cap, ws.tile_gt, ws.tile_eq);
  }
  fast::scan_kernel<<<1, fast::kScanThreads, 0, stream>>>(ws.seg_table, 1, ntiles, ws.st, ws.tile_gt, ws.tile_eq,
                                                          ws.gt_scan, ws.eq_scan, ws.counts);
  {
    auto kern = write_kernel<T>;
    kern<<<grid_of(reinterpret_cast<const void*>(kern), 0, ntiles), kThreads, 0, stream>>>(
        ws.seg_table, ntiles, ws.st, ws.tile_gt, ws.tile_eq, ws.gt_scan, ws.eq_scan);
  }
  check_last_error("topk");
  u64 host[3] = {0, 0, 0};
  State2 hs{};
  CUDA_CHECK(cudaMemcpyAsync(host, ws.counts, sizeof(host), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaMemcpyAsync(&hs, ws.st, sizeof(State2), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  SIFT_CHECK(host[1] == 0, "E_NUMERIC", "topk: the scores contain NaN or Inf");
  if (hs.miss) return false;
  SIFT_CHECK(host[2] == 0, "E_INTERNAL", "topk: bracket select lost track of the k-th key");
  SIFT_CHECK(host[0] == u64(k), "E_INTERNAL", "topk: bracket select selected ", host[0], " of ", k);
  return true;
}

}  // namespace brk

}  // namespace

TopkPath topk(const Tensor& scores, int64_t k, const Tensor& out, bool bracket) {
  return dispatch_cuda_float(scores.dtype, "topk", [&](auto tt) {
    using T = typename decltype(tt)::type;
    TopkPath path = TopkPath::kRadix;
    if constexpr (!std::is_same_v<T, double>) {
      if (bracket) {
        if (brk::run_select_bracket<T>(scores, k, out)) return TopkPath::kBracket;
        path = TopkPath::kBracketMissed;
      }
    }
    fast::run_select_fast<T>({scores}, k, &out);
    return path;
  });
}

std::vector<Tensor> topk_global(const std::vector<Tensor>& scores, int64_t k) {
  return dispatch_cuda_float(scores[0].dtype, "topkGlobal", [&](auto tt) {
    using T = typename decltype(tt)::type;
    return fast::run_select_fast<T>(scores, k, nullptr);
  });
}

}  // namespace sift::cuda
