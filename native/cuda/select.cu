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
//      are scanned (CUB) and one block per tile writes its selected indices in order (warp
//      ballots + a scan over the tile's 128 warp slots), so the output is ascending.
// Every decision stays on the device (state struct), so nothing waits for the host until the end.
#include <cub/cub.cuh>

#include <algorithm>
#include <vector>

#include "common.cuh"
#include "select.h"

namespace sift::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kItems = 16;
constexpr int kTile = kThreads * kItems;
constexpr int kTileShift = 12;
constexpr int kWarps = kThreads / 32;
constexpr int kSlots = kItems * kWarps;  // warp-sized slices of a tile, in index order
constexpr int kMaxDigitBits = 13;
constexpr int kMaxBins = 1 << kMaxDigitBits;
constexpr int kChooseThreads = 1024;
constexpr int kSegBatch = 32;
static_assert(kTile == (1 << kTileShift), "tile size must be 2^kTileShift");
static_assert(kSlots == 128, "the slot scan assumes 4 slots per lane of one warp");

using u64 = unsigned long long;

struct Seg {
  const void* ptr;
  long long numel;
  long long tile_begin;  // first global tile of this tensor
  void* out;             // index output (i32 or i64)
  int out64;
  int pad;
};

// Device-side progress of the select: decided key bits, rank still to find inside them, etc.
struct State {
  u64 prefix;      // key bits decided so far (undecided bits zero); the threshold key at the end
  u64 k_rem;       // rank sought among the keys matching prefix; ties to take at the end
  u64 cand_count;  // candidates appended (may exceed the buffer: then overflow is set)
  int overflow;
  int bad;         // NaN or Inf seen
  int lost;        // internal inconsistency (fewer keys than the rank sought)
  int pad;
};

template <typename T> struct KeyOf { using type = unsigned int; };
template <> struct KeyOf<double> { using type = u64; };

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
  if constexpr (std::is_same_v<T, double>) return make_key(*p);
  else return make_key(to_f32(*p));
}

// The tensor holding global tile t: the last segment whose first tile is <= t (empty segments
// share their first tile with the next one and are skipped that way).
__device__ __forceinline__ int seg_of(const Seg* segs, int nseg, long long t) {
  int lo = 0, hi = nseg - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) >> 1;
    if (segs[mid].tile_begin <= t) lo = mid;
    else hi = mid - 1;
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

// Striped tile load: item j of thread x is element j * kThreads + x (coalesced per item).
template <typename T, typename K>
__device__ __forceinline__ void load_tile(const TileRef& r, K (&keys)[kItems]) {
  const T* p = static_cast<const T*>(r.ptr);
#pragma unroll
  for (int j = 0; j < kItems; j++) {
    int e = j * kThreads + int(threadIdx.x);
    keys[j] = e < r.count ? load_key(p + e) : K(0);
  }
}

__device__ __forceinline__ void merge_hist(const unsigned int* sh, u64* ghist, int bins) {
  for (int b = threadIdx.x; b < bins; b += blockDim.x)
    if (sh[b]) atomicAdd(ghist + b, u64(sh[b]));
}

// Exclusive scan of the 128 per-slot counts of a tile (warp 0 does it; 4 slots per lane).
__device__ __forceinline__ void scan_slots(const unsigned int* in, unsigned int* out) {
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    unsigned int a0 = in[lane * 4], a1 = in[lane * 4 + 1], a2 = in[lane * 4 + 2], a3 = in[lane * 4 + 3];
    unsigned int sum = a0 + a1 + a2 + a3, incl = sum;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      unsigned int y = __shfl_up_sync(0xffffffffu, incl, d);
      if (lane >= d) incl += y;
    }
    unsigned int ex = incl - sum;
    out[lane * 4] = ex;
    out[lane * 4 + 1] = ex + a0;
    out[lane * 4 + 2] = ex + a0 + a1;
    out[lane * 4 + 3] = ex + a0 + a1 + a2;
  }
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

__global__ void init_state_kernel(State* st, u64 k) {
  st->prefix = 0;
  st->k_rem = k;
  st->cand_count = 0;
  st->overflow = 0;
  st->bad = 0;
  st->lost = 0;
  st->pad = 0;
}

// Histogram of digit (key >> shift) & (2^bits - 1) over the input tiles, optionally only for keys
// matching the decided prefix above match_shift. guard >= 0: run only when state->overflow ==
// guard (fallback passes). check: flag NaN/Inf.
template <typename T, typename K>
__global__ void __launch_bounds__(kThreads) hist_kernel(const Seg* __restrict__ segs, int nseg, long long ntiles,
                                                         State* st, u64* ghist, int shift, int bits,
                                                         int match_shift, int guard, int check) {
  __shared__ unsigned int sh[kMaxBins];
  if (guard >= 0 && st->overflow != guard) return;
  const int bins = 1 << bits;
  for (int b = threadIdx.x; b < bins; b += kThreads) sh[b] = 0;
  __syncthreads();
  const bool match = match_shift >= 0;
  const K want = match ? K(st->prefix) >> match_shift : K(0);
  const K mask = K(bins - 1);
  bool bad = false;
  for (long long t = blockIdx.x; t < ntiles; t += gridDim.x) {
    TileRef r = tile_ref<T>(segs, nseg, t);
    K keys[kItems];
    load_tile<T>(r, keys);
#pragma unroll
    for (int j = 0; j < kItems; j++) {
      int e = j * kThreads + int(threadIdx.x);
      if (e < r.count) {
        K key = keys[j];
        if (check) bad |= nonfinite(key);
        if (!match || (key >> match_shift) == want) atomicAdd(sh + ((key >> shift) & mask), 1u);
      }
    }
  }
  if (bad) st->bad = 1;
  __syncthreads();
  merge_hist(sh, ghist, bins);
}

// Picks the digit holding the k_rem-th largest key of the histogram, narrows the prefix and the
// rank, and clears the histogram for the next pass. One block.
__global__ void __launch_bounds__(kChooseThreads) choose_kernel(u64* ghist, int bits, int shift, State* st) {
  using Scan = cub::BlockScan<u64, kChooseThreads>;
  __shared__ typename Scan::TempStorage tmp;
  const int bins = 1 << bits;
  const int per = (bins + kChooseThreads - 1) / kChooseThreads;
  const u64 krem = st->k_rem;
  // Thread x owns descending positions [x * per, (x + 1) * per): bins counted from the top.
  u64 local = 0;
  for (int q = 0; q < per; q++) {
    int pos = int(threadIdx.x) * per + q;
    if (pos < bins) local += ghist[bins - 1 - pos];
  }
  u64 before;
  Scan(tmp).ExclusiveSum(local, before);
  if (before < krem && krem <= before + local) {
    u64 above = before;
    for (int q = 0; q < per; q++) {
      int pos = int(threadIdx.x) * per + q;
      if (pos >= bins) break;
      int bin = bins - 1 - pos;
      u64 c = ghist[bin];
      if (above + c >= krem) {
        st->prefix |= u64(bin) << shift;
        st->k_rem = krem - above;
        break;
      }
      above += c;
    }
  }
  if (threadIdx.x == kChooseThreads - 1 && before + local < krem) st->lost = 1;
  __syncthreads();
  for (int b = threadIdx.x; b < bins; b += kChooseThreads) ghist[b] = 0;
}

// Pass 2: per tile, count keys whose top digit is above the chosen one (tile_gt), append the
// keys equal to it to the candidate buffer (position = global tile << 12 | element) and
// histogram their next digit. A tile reserves its candidates' slots with one global atomic, so
// each tile's candidates are contiguous in the buffer (cand_count_kernel relies on it).
template <typename T, typename K>
__global__ void __launch_bounds__(kThreads) candidates_kernel(const Seg* __restrict__ segs, int nseg, long long ntiles,
                                                               State* st, u64* ghist, int s0, int s1, int bits1,
                                                               K* cand_key, u64* cand_pos, u64 cap, u64* tile_gt) {
  __shared__ unsigned int sh[kMaxBins];
  __shared__ unsigned int tile_cands;
  __shared__ u64 tile_base;
  using Reduce = cub::BlockReduce<unsigned int, kThreads>;
  __shared__ typename Reduce::TempStorage red;
  const int bins = 1 << bits1;
  for (int b = threadIdx.x; b < bins; b += kThreads) sh[b] = 0;
  if (threadIdx.x == 0) tile_cands = 0;
  __syncthreads();
  const K d0 = K(st->prefix) >> s0;
  const K mask = K(bins - 1);
  const int lane = threadIdx.x & 31;
  const unsigned int lt = (1u << lane) - 1u;
  for (long long t = blockIdx.x; t < ntiles; t += gridDim.x) {
    TileRef r = tile_ref<T>(segs, nseg, t);
    K keys[kItems];
    load_tile<T>(r, keys);
    unsigned int gt = 0;
    unsigned int loc[kItems];  // slot of each candidate within the tile's range
#pragma unroll
    for (int j = 0; j < kItems; j++) {
      const int e = j * kThreads + int(threadIdx.x);
      const bool valid = e < r.count;
      const K pre = keys[j] >> s0;
      gt += (valid && pre > d0) ? 1u : 0u;
      const bool cand = valid && pre == d0;
      if (cand) atomicAdd(sh + ((keys[j] >> s1) & mask), 1u);
      const unsigned int m = __ballot_sync(0xffffffffu, cand);
      unsigned int wbase = 0;
      if (m) {  // warp-uniform
        const int leader = __ffs(m) - 1;
        if (lane == leader) wbase = atomicAdd(&tile_cands, unsigned(__popc(m)));
        wbase = __shfl_sync(0xffffffffu, wbase, leader);
      }
      loc[j] = wbase + __popc(m & lt);
    }
    unsigned int total = Reduce(red).Sum(gt);
    __syncthreads();  // every warp has added to tile_cands
    if (threadIdx.x == 0) {
      tile_gt[t] = total;
      unsigned int c = tile_cands;
      tile_cands = 0;
      tile_base = c ? atomicAdd(&st->cand_count, u64(c)) : 0;
    }
    __syncthreads();
    const u64 base = tile_base;
#pragma unroll
    for (int j = 0; j < kItems; j++) {
      const int e = j * kThreads + int(threadIdx.x);
      if (e < r.count && (keys[j] >> s0) == d0) {
        const u64 pos = base + loc[j];
        if (pos < cap) {
          cand_key[pos] = keys[j];
          cand_pos[pos] = (u64(t) << kTileShift) | u64(e);
        } else {
          st->overflow = 1;
        }
      }
    }
    __syncthreads();  // red, tile_cands and tile_base are reused by the next tile
  }
  __syncthreads();
  merge_hist(sh, ghist, bins);
}

// Later digits from the candidates (skipped when they overflowed their buffer).
template <typename K>
__global__ void __launch_bounds__(kThreads) cand_hist_kernel(State* st, const K* __restrict__ cand_key, u64 cap,
                                                              u64* ghist, int match_shift, int shift, int bits) {
  __shared__ unsigned int sh[kMaxBins];
  if (st->overflow) return;
  const u64 n = st->cand_count < cap ? st->cand_count : cap;
  const int bins = 1 << bits;
  for (int b = threadIdx.x; b < bins; b += kThreads) sh[b] = 0;
  __syncthreads();
  const K want = K(st->prefix) >> match_shift;
  const K mask = K(bins - 1);
  for (u64 i = blockIdx.x * u64(kThreads) + threadIdx.x; i < n; i += u64(gridDim.x) * kThreads) {
    K key = cand_key[i];
    if ((key >> match_shift) == want) atomicAdd(sh + ((key >> shift) & mask), 1u);
  }
  __syncthreads();
  merge_hist(sh, ghist, bins);
}

// Final per-tile counts from the candidates: tile_gt already holds the keys above the top
// digit; add candidates above the threshold, count those equal to it. A tile's candidates are
// contiguous, so lanes are grouped by tile (match_any) and one lane per group adds.
template <typename K>
__global__ void __launch_bounds__(kThreads) cand_count_kernel(const State* st, const K* __restrict__ cand_key,
                                                               const u64* __restrict__ cand_pos, u64 cap,
                                                               u64* tile_gt, u64* tile_eq) {
  if (st->overflow) return;
  const u64 n = st->cand_count < cap ? st->cand_count : cap;
  const K thr = K(st->prefix);
  const int lane = threadIdx.x & 31;
  const u64 stride = u64(gridDim.x) * kThreads;
  // Warp-uniform loop: every lane of a warp takes part in each iteration.
  for (u64 wb = blockIdx.x * u64(kThreads) + (threadIdx.x & ~31u); wb < n; wb += stride) {
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
}

// Fallback when the candidates overflowed: recount every tile against the threshold.
template <typename T, typename K>
__global__ void __launch_bounds__(kThreads) tile_count_kernel(const Seg* __restrict__ segs, int nseg, long long ntiles,
                                                               const State* st, u64* tile_gt, u64* tile_eq) {
  using Reduce = cub::BlockReduce<u64, kThreads>;
  __shared__ typename Reduce::TempStorage red;
  if (!st->overflow) return;
  const K thr = K(st->prefix);
  for (long long t = blockIdx.x; t < ntiles; t += gridDim.x) {
    TileRef r = tile_ref<T>(segs, nseg, t);
    K keys[kItems];
    load_tile<T>(r, keys);
    u64 packed = 0;  // gt << 32 | eq: both <= kTile
#pragma unroll
    for (int j = 0; j < kItems; j++) {
      int e = j * kThreads + int(threadIdx.x);
      if (e < r.count) {
        if (keys[j] > thr) packed += 1ull << 32;
        else if (keys[j] == thr) packed += 1ull;
      }
    }
    u64 total = Reduce(red).Sum(packed);
    if (threadIdx.x == 0) {
      tile_gt[t] = total >> 32;
      tile_eq[t] = total & 0xffffffffull;
    }
    __syncthreads();
  }
}

// Selected elements before tile t, in the global order: all keys above the threshold, and the
// first min(ties before t, ties wanted) ties.
__device__ __forceinline__ u64 selected_before(const u64* gt_scan, const u64* eq_scan, long long t, u64 need) {
  u64 e = eq_scan[t];
  return gt_scan[t] + (e < need ? e : need);
}

// Per tensor: how many indices it gets; plus the bad / lost flags, for one read-back.
__global__ void seg_count_kernel(const Seg* __restrict__ segs, int nseg, long long ntiles, const State* st,
                                 const u64* gt_scan, const u64* eq_scan, u64* counts) {
  const u64 need = st->k_rem;
  for (int s = threadIdx.x; s < nseg; s += blockDim.x) {
    long long tb = segs[s].tile_begin;
    long long te = s + 1 < nseg ? segs[s + 1].tile_begin : ntiles;
    counts[s] = selected_before(gt_scan, eq_scan, te, need) - selected_before(gt_scan, eq_scan, tb, need);
  }
  if (threadIdx.x == 0) {
    counts[nseg] = u64(st->bad);
    counts[nseg + 1] = u64(st->lost);
  }
}

// One block per tile: writes the tile's selected local indices, ascending, at its offset.
template <typename T, typename K>
__global__ void __launch_bounds__(kThreads) write_kernel(const Seg* __restrict__ segs, int nseg, const State* st,
                                                          const u64* __restrict__ tile_gt,
                                                          const u64* __restrict__ tile_eq,
                                                          const u64* __restrict__ gt_scan,
                                                          const u64* __restrict__ eq_scan) {
  __shared__ unsigned int cnt_eq[kSlots], off_eq[kSlots], cnt_sel[kSlots], off_sel[kSlots];
  const long long t = blockIdx.x;
  const u64 need = st->k_rem;
  const K thr = K(st->prefix);
  const u64 eqb = eq_scan[t];
  const u64 ties_here = need > eqb ? (need - eqb < tile_eq[t] ? need - eqb : tile_eq[t]) : 0;
  if (tile_gt[t] + ties_here == 0) return;  // block-uniform

  TileRef r = tile_ref<T>(segs, nseg, t);
  const Seg& s = segs[r.seg];
  const u64 base = selected_before(gt_scan, eq_scan, t, need) - selected_before(gt_scan, eq_scan, s.tile_begin, need);
  K keys[kItems];
  load_tile<T>(r, keys);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const unsigned int lt = (1u << lane) - 1u;

  unsigned int eqm[kItems];
#pragma unroll
  for (int j = 0; j < kItems; j++) {
    int e = j * kThreads + int(threadIdx.x);
    eqm[j] = __ballot_sync(0xffffffffu, e < r.count && keys[j] == thr);
    if (lane == 0) cnt_eq[j * kWarps + warp] = __popc(eqm[j]);
  }
  __syncthreads();
  scan_slots(cnt_eq, off_eq);
  __syncthreads();
  unsigned int selm[kItems];
#pragma unroll
  for (int j = 0; j < kItems; j++) {
    int e = j * kThreads + int(threadIdx.x);
    bool valid = e < r.count;
    bool sel = valid && keys[j] > thr;
    if (valid && keys[j] == thr) {
      u64 rank = eqb + off_eq[j * kWarps + warp] + __popc(eqm[j] & lt);
      sel = rank < need;
    }
    selm[j] = __ballot_sync(0xffffffffu, sel);
    if (lane == 0) cnt_sel[j * kWarps + warp] = __popc(selm[j]);
  }
  __syncthreads();
  scan_slots(cnt_sel, off_sel);
  __syncthreads();
#pragma unroll
  for (int j = 0; j < kItems; j++) {
    if ((selm[j] >> lane) & 1u) {
      u64 pos = base + off_sel[j * kWarps + warp] + __popc(selm[j] & lt);
      long long idx = r.local + j * kThreads + int(threadIdx.x);
      if (s.out64) static_cast<long long*>(s.out)[pos] = idx;
      else static_cast<int*>(s.out)[pos] = int(idx);
    }
  }
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

// Runs the whole select over `scores` (contiguous, one dtype). With `single_out` the output is
// already allocated (topk); otherwise per-tensor outputs are sized after one read-back.
template <typename T>
std::vector<Tensor> run_select(const std::vector<Tensor>& scores, int64_t k, const Tensor* single_out) {
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

  // Digit schedule: 13 bits first, then up to 13 more per pass (32-bit: 13/11/8; 64-bit: 13x4/12).
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

  // Candidate buffer: 1/16 of the elements (at least 4096) is ample for gradient-like scores.
  const u64 cap = u64(std::min<long long>(total, std::max<long long>(total / 16, 4096)));

  // One workspace allocation, carved up.
  size_t scan_temp = 0;
  CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, scan_temp, static_cast<u64*>(nullptr),
                                           static_cast<u64*>(nullptr), ntiles + 1, stream));
  size_t off = 0;
  auto take = [&](size_t bytes) {
    size_t o = off;
    off += align_up(bytes);
    return o;
  };
  const size_t o_state = take(sizeof(State));
  const size_t o_segs = take(sizeof(Seg) * size_t(nseg));
  const size_t o_hist = take(sizeof(u64) * kMaxBins);
  const size_t o_tgt = take(sizeof(u64) * size_t(ntiles + 1));
  const size_t o_teq = take(sizeof(u64) * size_t(ntiles + 1));
  const size_t o_sgt = take(sizeof(u64) * size_t(ntiles + 1));
  const size_t o_seq = take(sizeof(u64) * size_t(ntiles + 1));
  const size_t o_cnt = take(sizeof(u64) * size_t(nseg + 2));
  const size_t o_ckey = take(sizeof(K) * cap);
  const size_t o_cpos = take(sizeof(u64) * cap);
  const size_t o_scan = take(scan_temp);
  Tensor ws = empty({int64_t(off)}, DType::BOOL, device);
  char* base = static_cast<char*>(ws.raw());
  State* st = reinterpret_cast<State*>(base + o_state);
  Seg* dsegs = reinterpret_cast<Seg*>(base + o_segs);
  u64* hist = reinterpret_cast<u64*>(base + o_hist);
  u64* tile_gt = reinterpret_cast<u64*>(base + o_tgt);
  u64* tile_eq = reinterpret_cast<u64*>(base + o_teq);
  u64* gt_scan = reinterpret_cast<u64*>(base + o_sgt);
  u64* eq_scan = reinterpret_cast<u64*>(base + o_seq);
  u64* counts = reinterpret_cast<u64*>(base + o_cnt);
  K* cand_key = reinterpret_cast<K*>(base + o_ckey);
  u64* cand_pos = reinterpret_cast<u64*>(base + o_cpos);
  void* scan_buf = base + o_scan;

  auto upload_segs = [&]() {
    for (int i = 0; i < nseg; i += kSegBatch) {
      SegBatch b{};
      int n = std::min(kSegBatch, nseg - i);
      for (int j = 0; j < n; j++) b.s[j] = segs[size_t(i + j)];
      write_segs_kernel<<<1, kSegBatch, 0, stream>>>(dsegs, i, n, b);
    }
  };
  upload_segs();
  init_state_kernel<<<1, 1, 0, stream>>>(st, u64(k));
  CUDA_CHECK(cudaMemsetAsync(hist, 0, sizeof(u64) * kMaxBins, stream));
  CUDA_CHECK(cudaMemsetAsync(tile_gt, 0, sizeof(u64) * size_t(ntiles + 1), stream));
  CUDA_CHECK(cudaMemsetAsync(tile_eq, 0, sizeof(u64) * size_t(ntiles + 1), stream));

  const unsigned grid = unsigned(std::min<long long>(ntiles, sm_count(dev) * 4LL));
  const unsigned cgrid = unsigned(std::max<u64>(1, std::min<u64>((cap + kThreads * 8 - 1) / (kThreads * 8), u64(sm_count(dev)) * 4)));

  // Pass 1: top digit over everything (+ NaN/Inf check).
  hist_kernel<T, K><<<grid, kThreads, 0, stream>>>(dsegs, nseg, ntiles, st, hist, shifts[0], widths[0], -1, -1, 1);
  choose_kernel<<<1, kChooseThreads, 0, stream>>>(hist, widths[0], shifts[0], st);
  // Pass 2: tile counts above the top digit, candidates, digit 2.
  candidates_kernel<T, K><<<grid, kThreads, 0, stream>>>(dsegs, nseg, ntiles, st, hist, shifts[0], shifts[1],
                                                          widths[1], cand_key, cand_pos, cap, tile_gt);
  choose_kernel<<<1, kChooseThreads, 0, stream>>>(hist, widths[1], shifts[1], st);
  // Remaining digits: candidates, or (overflow) the input again.
  for (size_t p = 2; p < widths.size(); p++) {
    cand_hist_kernel<K><<<cgrid, kThreads, 0, stream>>>(st, cand_key, cap, hist, shifts[p - 1], shifts[p], widths[p]);
    hist_kernel<T, K><<<grid, kThreads, 0, stream>>>(dsegs, nseg, ntiles, st, hist, shifts[p], widths[p],
                                                      shifts[p - 1], 1, 0);
    choose_kernel<<<1, kChooseThreads, 0, stream>>>(hist, widths[p], shifts[p], st);
  }
  // Exact per-tile counts against the threshold, then their scans (ntiles + 1 items: the last
  // entry of each scan is the total).
  cand_count_kernel<K><<<cgrid, kThreads, 0, stream>>>(st, cand_key, cand_pos, cap, tile_gt, tile_eq);
  tile_count_kernel<T, K><<<grid, kThreads, 0, stream>>>(dsegs, nseg, ntiles, st, tile_gt, tile_eq);
  CUDA_CHECK(cub::DeviceScan::ExclusiveSum(scan_buf, scan_temp, tile_gt, gt_scan, ntiles + 1, stream));
  CUDA_CHECK(cub::DeviceScan::ExclusiveSum(scan_buf, scan_temp, tile_eq, eq_scan, ntiles + 1, stream));
  check_last_error("topk");

  std::vector<Tensor> outs;
  auto read_flags = [&](std::vector<u64>& host) {
    seg_count_kernel<<<1, 256, 0, stream>>>(dsegs, nseg, ntiles, st, gt_scan, eq_scan, counts);
    check_last_error("topk");
    host.assign(size_t(nseg + 2), 0);
    CUDA_CHECK(cudaMemcpyAsync(host.data(), counts, sizeof(u64) * size_t(nseg + 2), cudaMemcpyDeviceToHost, stream));
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
    upload_segs();
  }
  write_kernel<T, K><<<unsigned(ntiles), kThreads, 0, stream>>>(dsegs, nseg, st, tile_gt, tile_eq, gt_scan, eq_scan);
  check_last_error("topk");
  if (single_out) {
    std::vector<u64> host;
    read_flags(host);
    SIFT_CHECK(host[0] == u64(k), "E_INTERNAL", "topk: selected ", host[0], " of ", k);
  }
  return outs;
}

}  // namespace

void topk(const Tensor& scores, int64_t k, const Tensor& out) {
  dispatch_cuda_float(scores.dtype, "topk", [&](auto tt) {
    using T = typename decltype(tt)::type;
    run_select<T>({scores}, k, &out);
  });
}

std::vector<Tensor> topk_global(const std::vector<Tensor>& scores, int64_t k) {
  return dispatch_cuda_float(scores[0].dtype, "topkGlobal", [&](auto tt) {
    using T = typename decltype(tt)::type;
    return run_select<T>(scores, k, nullptr);
  });
}

}  // namespace sift::cuda
