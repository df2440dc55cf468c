// Tensor-core flash attention for f16/bf16 (sm_80+), head dims that are multiples of 16 up to 128.
// The matrix products run on tensor cores through WMMA (16 x 16 x 16 fragments, f32
// accumulation); masks, dropout and the online softmax run on CUDA cores from shared memory with
// the very functions of the CUDA-core path (attention_common.cuh), so both paths (and the CPU)
// mask and drop the same entries. attention.cu chooses this path when tc_eligible() says so.
//
// Forward: a block of 4 warps owns 64 queries of one (b, h); each warp owns 16 of them. The
// block streams 64-key tiles of K and V through shared memory. Per tile each warp computes its
// 16 x 64 scores S = Q K^T (Q held in fragments for the whole kernel), then, two lanes per row,
// the online-softmax update: row max, P = exp(S - m) rounded to the input dtype (as flash
// attention does), the row sum and the rescale of its f32 output rows in shared memory; then
// O += P V on tensor cores, loading and storing the output tile from shared memory (WMMA leaves
// the element layout of an accumulator unspecified, so rows cannot be rescaled in registers).
//
// Backward: Delta = rowsum(dO * O) comes from attention.cu. dK/dV: a block per (b, kv head, 64
// keys), each warp owns 16 keys and accumulates its dK and dV tiles in fragments (no rescaling
// is needed) over the query tiles of every head of its group: S^T = K Q^T and dP^T = V dO^T, then
// P*Z and dS = P (dP Z - Delta) on CUDA cores, rounded to the input dtype, then dV += (PZ)^T dO
// and dK += dS^T Q. dQ: a block per (b, h, 64 queries), each warp owns 16 queries and
// accumulates dQ += dS K over the key tiles. No atomics: the gradients are deterministic.
//
// Soft-capping and the sliding window live in the EXT instantiations (attention_common.cuh); a
// window also skips the key tiles (forward, dQ) and query tiles (dK/dV) wholly outside it.
//
// WMMA needs 32-byte aligned tile pointers and leading dimensions that are multiples of 8 (16-bit)
// or 4 (f32) elements: every shared-memory region below is sized in multiples of 32 bytes and
// rows are padded by 8 (16-bit) or 4 (f32) elements, which also staggers banks.
#include <mma.h>

#include "attention_common.cuh"

namespace sift::cuda::attn {
namespace {

using namespace nvcuda;

constexpr int kWarps = 4;
constexpr int kTcThreads = kWarps * 32;

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define SIFT_TC_BODY 1
#else
#define SIFT_TC_BODY 0
#endif

template <typename T>
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major>;
template <typename T>
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major>;
template <typename T>
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// Which global operands may be read 16 bytes at a time (base aligned, strides multiples of 8).
struct TcVec {
  bool q, k, v, g;
};

// ROWS x DMAX tile of 16-bit elements, rows [r0, r0 + ROWS) of a (b, h) slice, zero beyond nrows
// and beyond D, into shared memory with row pitch ld.
template <typename T, int DMAX, int ROWS>
__device__ __forceinline__ void load_rows(const T* __restrict__ base, int64_t row_stride, int64_t r0, int64_t nrows,
                                          int D, bool vec, T* dst, int ld) {
  if (vec) {  // D % 8 == 0: a 16-byte chunk is wholly inside or outside the row
    constexpr int CH = DMAX / 8;
    for (int idx = threadIdx.x; idx < ROWS * CH; idx += kTcThreads) {
      const int r = idx / CH, c = (idx % CH) * 8;
      const int64_t row = r0 + r;
      uint4 val = make_uint4(0u, 0u, 0u, 0u);
      if (row < nrows && c < D) val = *reinterpret_cast<const uint4*>(base + row * row_stride + c);
      *reinterpret_cast<uint4*>(dst + r * ld + c) = val;
    }
  } else {
    const T zero = from_f32<T>(0.0f);
    for (int idx = threadIdx.x; idx < ROWS * DMAX; idx += kTcThreads) {
      const int r = idx / DMAX, c = idx % DMAX;
      const int64_t row = r0 + r;
      dst[r * ld + c] = (row < nrows && c < D) ? base[row * row_stride + c] : zero;
    }
  }
}

// Writes a 16 x 16 f32 accumulator tile, times `mul`, to rows [row0, row0 + 16) (below nrows),
// columns [c0, c0 + 16) (below D) of a contiguous [*, D] output, through the warp's scratch.
template <typename T>
__device__ __forceinline__ void store_tile(const FragC& f, float* scratch, float mul, T* __restrict__ out, int64_t row0,
                                           int64_t nrows, int c0, int D) {
  wmma::store_matrix_sync(scratch, f, 16, wmma::mem_row_major);
  __syncwarp();
  const int lane = threadIdx.x % 32;
  for (int e = lane; e < 256; e += 32) {
    const int r = e / 16, c = c0 + e % 16;
    if (row0 + r < nrows && c < D) out[(row0 + r) * D + c] = from_f32<T>(scratch[e] * mul);
  }
  __syncwarp();
}

// The two score products of a backward tile, for a warp's 16 rows against NT x 16 columns:
// s = a1 b1^T and dp = a2 b2^T (a: 16 x DMAX row-major at a1/a2; b: NT*16 x DMAX row-major, read
// transposed), stored row-major with pitch LDS. dK/dV: (a1, b1, a2, b2) = (K_w, Q, V_w, dO), giving
// S^T and dP^T; dQ: (Q_w, K, dO_w, V), giving S and dP.
template <typename T, int DK, int NT, int LDT, int LDS>
__device__ __forceinline__ void score_tiles(const T* a1, const T* b1, const T* a2, const T* b2, float* s_out,
                                            float* dp_out) {
#if SIFT_TC_BODY
#pragma unroll
  for (int n = 0; n < NT; n++) {
    FragC s, dp;
    wmma::fill_fragment(s, 0.0f);
    wmma::fill_fragment(dp, 0.0f);
#pragma unroll
    for (int kk = 0; kk < DK; kk++) {
      FragA<T> x1, x2;
      FragBCol<T> y1, y2;
      wmma::load_matrix_sync(x1, a1 + kk * 16, LDT);
      wmma::load_matrix_sync(y1, b1 + n * 16 * LDT + kk * 16, LDT);
      wmma::mma_sync(s, x1, y1, s);
      wmma::load_matrix_sync(x2, a2 + kk * 16, LDT);
      wmma::load_matrix_sync(y2, b2 + n * 16 * LDT + kk * 16, LDT);
      wmma::mma_sync(dp, x2, y2, dp);
    }
    wmma::store_matrix_sync(s_out + n * 16, s, LDS, wmma::mem_row_major);
    wmma::store_matrix_sync(dp_out + n * 16, dp, LDS, wmma::mem_row_major);
  }
#endif
}

// ---- forward ------------------------------------------------------------------------------

template <int DMAX>
struct TcFwd {
  static constexpr int BQ = 16 * kWarps, BK = 64;
  static constexpr int LDT = DMAX + 8;  // Q/K/V rows (16-bit)
  static constexpr int LDS = BK + 4;    // f32 score rows, per warp
  static constexpr int LDP = BK + 8;    // 16-bit probability rows, per warp
  static constexpr int LDO = DMAX + 4;  // f32 output rows, per warp
  static constexpr size_t kv_bytes = size_t(BK) * LDT * 2;
  static constexpr size_t s_bytes = size_t(kWarps) * 16 * LDS * 4;
  static constexpr size_t p_bytes = size_t(kWarps) * 16 * LDP * 2;
  static constexpr size_t o_bytes = size_t(kWarps) * 16 * LDO * 4;
  static constexpr size_t smem = 2 * kv_bytes + s_bytes + p_bytes + o_bytes;
  static_assert(o_bytes >= size_t(BQ) * LDT * 2, "the query tile is staged in the output region");
  static_assert(kv_bytes % 32 == 0 && s_bytes % 32 == 0 && p_bytes % 32 == 0, "32-byte aligned regions");
};

template <typename T, int DMAX, bool EXT>
__global__ void __launch_bounds__(kTcThreads)
    attn_fwd_tc_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ out,
                       float* __restrict__ lse, Params<float> p, TcVec vec) {
#if SIFT_TC_BODY
  using C = TcFwd<DMAX>;
  constexpr int BQ = C::BQ, BK = C::BK, LDT = C::LDT, LDS = C::LDS, LDP = C::LDP, LDO = C::LDO;
  constexpr int DK = DMAX / 16, NK = BK / 16;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* Ks = reinterpret_cast<T*>(smem_raw);
  T* Vs = Ks + BK * LDT;
  float* Ss = reinterpret_cast<float*>(Vs + BK * LDT);
  T* Ps = reinterpret_cast<T*>(Ss + kWarps * 16 * LDS);
  float* Os = reinterpret_cast<float*>(Ps + kWarps * 16 * LDP);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* Sw = Ss + warp * 16 * LDS;
  T* Pw = Ps + warp * 16 * LDP;
  float* Ow = Os + warp * 16 * LDO;

  const int64_t nqt = (p.Tq + BQ - 1) / BQ;
  // Longest first: the grid runs the last query tiles (under a causal mask, those that see the most
  // keys) of every (b, h) before the earlier ones, so the short tiles fill the last wave.
  const int64_t nbh = int64_t(gridDim.x) / nqt;  // the grid is exactly nbh * nqt blocks
  const int64_t qt = nqt - 1 - int64_t(blockIdx.x) / nbh, bh = int64_t(blockIdx.x) % nbh;
  const int64_t h = bh % p.H, b = bh / p.H, hk = h / p.group;
  const int64_t i0 = qt * BQ;
  const int D = int(p.D);

  // The query tile, staged in the output region, into fragments held for the whole kernel.
  {
    T* Qstage = reinterpret_cast<T*>(Os);
    load_rows<T, DMAX, BQ>(q + b * p.qs[0] + h * p.qs[1], p.qs[2], i0, p.Tq, D, vec.q, Qstage, LDT);
    __syncthreads();
  }
  FragA<T> qf[DK];
#pragma unroll
  for (int kk = 0; kk < DK; kk++)
    wmma::load_matrix_sync(qf[kk], reinterpret_cast<const T*>(Os) + warp * 16 * LDT + kk * 16, LDT);
  __syncthreads();  // every warp holds its queries: the region becomes the output accumulator
  for (int e = lane; e < 16 * LDO; e += 32) Ow[e] = 0.0f;
  __syncwarp();  // with no key tile at all (kend == 0) the rows are read below without a block barrier

  // Lane pair (2r, 2r + 1) owns row r of the warp's 16; `half` picks the interleaved columns.
  const int r = lane / 2, half = lane % 2;
  const int64_t i = i0 + warp * 16 + r;
  float m = ninf<float>(), l = 0.0f;

  const int64_t kend = key_end(p, i0, BQ);
  const T* kb = k + b * p.ks[0] + hk * p.ks[1];
  const T* vb = v + b * p.vs[0] + hk * p.vs[1];
  for (int64_t j0 = key_tile_begin<EXT, BK>(p, i0); j0 < kend; j0 += BK) {
    __syncthreads();  // the previous tile's K and V are no longer read
    load_rows<T, DMAX, BK>(kb, p.ks[2], j0, kend, D, vec.k, Ks, LDT);
    load_rows<T, DMAX, BK>(vb, p.vs[2], j0, kend, D, vec.v, Vs, LDT);
    __syncthreads();
    // S = Q K^T for the warp's 16 rows.
#pragma unroll
    for (int n = 0; n < NK; n++) {
      FragC acc;
      wmma::fill_fragment(acc, 0.0f);
#pragma unroll
      for (int kk = 0; kk < DK; kk++) {
        FragBCol<T> kf;
        wmma::load_matrix_sync(kf, Ks + n * 16 * LDT + kk * 16, LDT);
        wmma::mma_sync(acc, qf[kk], kf, acc);
      }
      wmma::store_matrix_sync(Sw + n * 16, acc, LDS, wmma::mem_row_major);
    }
    __syncwarp();
    // Online softmax of row r over this tile's keys.
    float mx = ninf<float>();
#pragma unroll 8
    for (int t = 0; t < BK / 2; t++) {
      const int c = 2 * t + half;
      const float s = masked_score<EXT>(p, b, h, i, j0 + c, Sw[r * LDS + c]);
      Sw[r * LDS + c] = s;
      mx = amax(mx, s);
    }
    mx = amax(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float mnew = amax(m, mx);
    float alpha = 1.0f, rs = 0.0f;
    if (mnew != ninf<float>()) {
      alpha = aexp(m - mnew);  // 0 when the row saw nothing before
#pragma unroll 8
      for (int t = 0; t < BK / 2; t++) {
        const int c = 2 * t + half;
        const float e = aexp(Sw[r * LDS + c] - mnew);
        rs += e;
        Pw[r * LDP + c] = from_f32<T>(e * drop_factor(p, b, h, i, j0 + c));
      }
    } else {
      const T zero = from_f32<T>(0.0f);
#pragma unroll 8
      for (int t = 0; t < BK / 2; t++) Pw[r * LDP + 2 * t + half] = zero;
    }
    rs += __shfl_xor_sync(0xffffffffu, rs, 1);
    l = l * alpha + rs;
    m = mnew;
#pragma unroll 8
    for (int t = 0; t < DMAX / 2; t++) Ow[r * LDO + 2 * t + half] *= alpha;
    __syncwarp();
    // O += P V.
#pragma unroll
    for (int n = 0; n < DK; n++) {
      FragC o;
      wmma::load_matrix_sync(o, Ow + n * 16, LDO, wmma::mem_row_major);
#pragma unroll
      for (int kk = 0; kk < NK; kk++) {
        FragA<T> pf;
        FragBRow<T> vf;
        wmma::load_matrix_sync(pf, Pw + kk * 16, LDP);
        wmma::load_matrix_sync(vf, Vs + kk * 16 * LDT + n * 16, LDT);
        wmma::mma_sync(o, pf, vf, o);
      }
      wmma::store_matrix_sync(Ow + n * 16, o, LDO, wmma::mem_row_major);
    }
    __syncwarp();
  }
  // O / l, row by row over the whole warp (coalesced); lse from the row's first lane.
  for (int rr = 0; rr < 16; rr++) {
    const float lr = __shfl_sync(0xffffffffu, l, 2 * rr);
    const int64_t ii = i0 + warp * 16 + rr;
    if (ii >= p.Tq) continue;
    const int64_t row = (b * p.H + h) * p.Tq + ii;
    const float inv = lr > 0.0f ? 1.0f / lr : 0.0f;  // every key masked: zeros
    for (int d = lane; d < D; d += 32) out[row * D + d] = from_f32<T>(Ow[rr * LDO + d] * inv);
  }
  if (half == 0 && i < p.Tq) lse[(b * p.H + h) * p.Tq + i] = l > 0.0f ? m + alog(l) : ninf<float>();
#elif defined(__CUDA_ARCH__)
  __trap();  // built without sm_80+ code: tc_eligible() never picks these kernels there
#endif
}

// ---- backward: dK and dV ------------------------------------------------------------------

template <int DMAX>
struct TcDkDv {
  static constexpr int BK = 16 * kWarps, BQ = DMAX <= 64 ? 64 : 32;
  static constexpr int LDT = DMAX + 8;
  static constexpr int LDS = BQ + 4;  // f32 S^T and dP^T rows, per warp
  static constexpr int LDP = BQ + 8;  // 16-bit (PZ)^T and dS^T rows, per warp
  static constexpr size_t k_bytes = size_t(BK) * LDT * 2;
  static constexpr size_t q_bytes = size_t(BQ) * LDT * 2;
  static constexpr size_t s_bytes = size_t(kWarps) * 16 * LDS * 4;
  static constexpr size_t p_bytes = size_t(kWarps) * 16 * LDP * 2;
  static constexpr size_t smem = 2 * k_bytes + 2 * q_bytes + 2 * s_bytes + 2 * p_bytes + 2 * size_t(BQ) * 4;
  static_assert(16 * LDS >= 256, "a 16 x 16 scratch tile fits the warp's score rows");
  static_assert(k_bytes % 32 == 0 && q_bytes % 32 == 0 && s_bytes % 32 == 0 && p_bytes % 32 == 0, "alignment");
};

template <typename T, int DMAX, bool EXT>
__global__ void __launch_bounds__(kTcThreads)
    attn_bwd_dkdv_tc_kernel(const T* __restrict__ gout, const T* __restrict__ q, const T* __restrict__ k,
                            const T* __restrict__ v, const float* __restrict__ lse, const float* __restrict__ delta,
                            T* __restrict__ gk, T* __restrict__ gv, Params<float> p, TcVec vec) {
#if SIFT_TC_BODY
  using C = TcDkDv<DMAX>;
  constexpr int BQ = C::BQ, BK = C::BK, LDT = C::LDT, LDS = C::LDS, LDP = C::LDP;
  constexpr int DK = DMAX / 16, NQ = BQ / 16;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* Ks = reinterpret_cast<T*>(smem_raw);
  T* Vs = Ks + BK * LDT;
  T* Qs = Vs + BK * LDT;
  T* Gs = Qs + BQ * LDT;
  float* Sts = reinterpret_cast<float*>(Gs + BQ * LDT);
  float* dPts = Sts + kWarps * 16 * LDS;
  T* Pts = reinterpret_cast<T*>(dPts + kWarps * 16 * LDS);
  T* dSts = Pts + kWarps * 16 * LDP;
  float* Ls = reinterpret_cast<float*>(dSts + kWarps * 16 * LDP);
  float* Dls = Ls + BQ;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* Stw = Sts + warp * 16 * LDS;
  float* dPtw = dPts + warp * 16 * LDS;
  T* Ptw = Pts + warp * 16 * LDP;
  T* dStw = dSts + warp * 16 * LDP;

  const int64_t nkt = (p.Tk + BK - 1) / BK;
  // Longest first: the first key tiles (under a causal mask, those that the most queries see) of
  // every (b, kv head) run before the later ones.
  const int64_t nbhk = int64_t(gridDim.x) / nkt;  // the grid is exactly nbhk * nkt blocks
  const int64_t kt = int64_t(blockIdx.x) / nbhk, bhk = int64_t(blockIdx.x) % nbhk;
  const int64_t hk = bhk % p.Hkv, b = bhk / p.Hkv;
  const int64_t j0 = kt * BK;
  const int D = int(p.D);
  load_rows<T, DMAX, BK>(k + b * p.ks[0] + hk * p.ks[1], p.ks[2], j0, p.Tk, D, vec.k, Ks, LDT);
  load_rows<T, DMAX, BK>(v + b * p.vs[0] + hk * p.vs[1], p.vs[2], j0, p.Tk, D, vec.v, Vs, LDT);
  FragC dk[DK], dv[DK];
#pragma unroll
  for (int n = 0; n < DK; n++) {
    wmma::fill_fragment(dk[n], 0.0f);
    wmma::fill_fragment(dv[n], 0.0f);
  }
  int64_t istart = 0;  // the first query that sees key j0
  if (p.causal) {
    istart = j0 - p.shift;
    istart = istart < 0 ? 0 : istart;
  }
  const int64_t iend = query_end<EXT>(p, j0, BK);  // past the last query that sees the key tile
  const T* Kw = Ks + warp * 16 * LDT;
  const T* Vw = Vs + warp * 16 * LDT;
  for (int64_t h = hk * p.group; h < (hk + 1) * p.group; h++) {
    const T* qb = q + b * p.qs[0] + h * p.qs[1];
    const T* gb = gout + b * p.gs[0] + h * p.gs[1];
    for (int64_t i0 = (istart / BQ) * BQ; i0 < iend; i0 += BQ) {
      __syncthreads();  // the previous query tile is no longer read (and K, V are loaded)
      load_rows<T, DMAX, BQ>(qb, p.qs[2], i0, p.Tq, D, vec.q, Qs, LDT);
      load_rows<T, DMAX, BQ>(gb, p.gs[2], i0, p.Tq, D, vec.g, Gs, LDT);
      for (int rr = threadIdx.x; rr < BQ; rr += kTcThreads) {
        const int64_t ii = i0 + rr, row = (b * p.H + h) * p.Tq + ii;
        Ls[rr] = ii < p.Tq ? lse[row] : ninf<float>();
        Dls[rr] = ii < p.Tq ? delta[row] : 0.0f;
      }
      __syncthreads();
      // S^T = K_w Q^T and dP^T = V_w dO^T (16 keys x BQ queries).
      score_tiles<T, DK, NQ, LDT, LDS>(Kw, Qs, Vw, Gs, Stw, dPtw);
      __syncwarp();
      for (int e = lane; e < 16 * BQ; e += 32) {
        const int jl = e / BQ, il = e % BQ;
        float pz, ds;
        prob_and_dscore<EXT>(p, b, h, i0 + il, j0 + warp * 16 + jl, Stw[jl * LDS + il], dPtw[jl * LDS + il], Ls[il],
                             Dls[il], pz, ds);
        Ptw[jl * LDP + il] = from_f32<T>(pz);
        dStw[jl * LDP + il] = from_f32<T>(ds);
      }
      __syncwarp();
      // dV += (PZ)^T dO, dK += dS^T Q.
#pragma unroll
      for (int n = 0; n < DK; n++) {
#pragma unroll
        for (int kk = 0; kk < NQ; kk++) {
          FragA<T> pf, sf;
          FragBRow<T> gf, qf;
          wmma::load_matrix_sync(pf, Ptw + kk * 16, LDP);
          wmma::load_matrix_sync(gf, Gs + kk * 16 * LDT + n * 16, LDT);
          wmma::mma_sync(dv[n], pf, gf, dv[n]);
          wmma::load_matrix_sync(sf, dStw + kk * 16, LDP);
          wmma::load_matrix_sync(qf, Qs + kk * 16 * LDT + n * 16, LDT);
          wmma::mma_sync(dk[n], sf, qf, dk[n]);
        }
      }
    }
  }
  const int64_t row0 = (b * p.Hkv + hk) * p.Tk + j0 + warp * 16;
  const int64_t rows_end = (b * p.Hkv + hk) * p.Tk + p.Tk;  // rows past Tk belong to the next (b, hk)
#pragma unroll
  for (int n = 0; n < DK; n++) {
    store_tile(dk[n], Stw, p.scale, gk, row0, rows_end, n * 16, D);
    store_tile(dv[n], Stw, 1.0f, gv, row0, rows_end, n * 16, D);
  }
#elif defined(__CUDA_ARCH__)
  __trap();  // built without sm_80+ code: tc_eligible() never picks these kernels there
#endif
}

// ---- backward: dQ -------------------------------------------------------------------------

template <int DMAX>
struct TcDq {
  static constexpr int BQ = 16 * kWarps, BK = DMAX <= 64 ? 64 : 32;
  static constexpr int LDT = DMAX + 8;
  static constexpr int LDS = BK + 4;  // f32 S and dP rows, per warp
  static constexpr int LDP = BK + 8;  // 16-bit dS rows, per warp
  static constexpr size_t q_bytes = size_t(BQ) * LDT * 2;
  static constexpr size_t k_bytes = size_t(BK) * LDT * 2;
  static constexpr size_t s_bytes = size_t(kWarps) * 16 * LDS * 4;
  static constexpr size_t p_bytes = size_t(kWarps) * 16 * LDP * 2;
  static constexpr size_t smem = 2 * q_bytes + 2 * k_bytes + 2 * s_bytes + p_bytes + 2 * size_t(BQ) * 4;
  static_assert(16 * LDS >= 256, "a 16 x 16 scratch tile fits the warp's score rows");
  static_assert(k_bytes % 32 == 0 && q_bytes % 32 == 0 && s_bytes % 32 == 0 && p_bytes % 32 == 0, "alignment");
};

template <typename T, int DMAX, bool EXT>
__global__ void __launch_bounds__(kTcThreads)
    attn_bwd_dq_tc_kernel(const T* __restrict__ gout, const T* __restrict__ q, const T* __restrict__ k,
                          const T* __restrict__ v, const float* __restrict__ lse, const float* __restrict__ delta,
                          T* __restrict__ gq, Params<float> p, TcVec vec) {
#if SIFT_TC_BODY
  using C = TcDq<DMAX>;
  constexpr int BQ = C::BQ, BK = C::BK, LDT = C::LDT, LDS = C::LDS, LDP = C::LDP;
  constexpr int DK = DMAX / 16, NK = BK / 16;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* Qs = reinterpret_cast<T*>(smem_raw);
  T* Gs = Qs + BQ * LDT;
  T* Ks = Gs + BQ * LDT;
  T* Vs = Ks + BK * LDT;
  float* Ss = reinterpret_cast<float*>(Vs + BK * LDT);
  float* dPs = Ss + kWarps * 16 * LDS;
  T* dSs = reinterpret_cast<T*>(dPs + kWarps * 16 * LDS);
  float* Ls = reinterpret_cast<float*>(dSs + kWarps * 16 * LDP);
  float* Dls = Ls + BQ;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* Sw = Ss + warp * 16 * LDS;
  float* dPw = dPs + warp * 16 * LDS;
  T* dSw = dSs + warp * 16 * LDP;

  const int64_t nqt = (p.Tq + BQ - 1) / BQ;
  // Longest first: the grid runs the last query tiles (under a causal mask, those that see the most
  // keys) of every (b, h) before the earlier ones, so the short tiles fill the last wave.
  const int64_t nbh = int64_t(gridDim.x) / nqt;  // the grid is exactly nbh * nqt blocks
  const int64_t qt = nqt - 1 - int64_t(blockIdx.x) / nbh, bh = int64_t(blockIdx.x) % nbh;
  const int64_t h = bh % p.H, b = bh / p.H, hk = h / p.group;
  const int64_t i0 = qt * BQ;
  const int D = int(p.D);
  load_rows<T, DMAX, BQ>(q + b * p.qs[0] + h * p.qs[1], p.qs[2], i0, p.Tq, D, vec.q, Qs, LDT);
  load_rows<T, DMAX, BQ>(gout + b * p.gs[0] + h * p.gs[1], p.gs[2], i0, p.Tq, D, vec.g, Gs, LDT);
  for (int rr = threadIdx.x; rr < BQ; rr += kTcThreads) {
    const int64_t ii = i0 + rr, row = (b * p.H + h) * p.Tq + ii;
    Ls[rr] = ii < p.Tq ? lse[row] : ninf<float>();
    Dls[rr] = ii < p.Tq ? delta[row] : 0.0f;
  }
  const T* kb = k + b * p.ks[0] + hk * p.ks[1];
  const T* vb = v + b * p.vs[0] + hk * p.vs[1];
  const T* Qw = Qs + warp * 16 * LDT;
  const T* Gw = Gs + warp * 16 * LDT;
  FragC dq[DK];
#pragma unroll
  for (int n = 0; n < DK; n++) wmma::fill_fragment(dq[n], 0.0f);
  const int64_t kend = key_end(p, i0, BQ);
  for (int64_t j0 = key_tile_begin<EXT, BK>(p, i0); j0 < kend; j0 += BK) {
    __syncthreads();  // the previous K and V tiles are no longer read (Q, dO, lse, Delta loaded)
    load_rows<T, DMAX, BK>(kb, p.ks[2], j0, kend, D, vec.k, Ks, LDT);
    load_rows<T, DMAX, BK>(vb, p.vs[2], j0, kend, D, vec.v, Vs, LDT);
    __syncthreads();
    // S = Q_w K^T and dP = dO_w V^T (16 queries x BK keys).
    score_tiles<T, DK, NK, LDT, LDS>(Qw, Ks, Gw, Vs, Sw, dPw);
    __syncwarp();
    for (int e = lane; e < 16 * BK; e += 32) {
      const int il = e / BK, jl = e % BK;
      const int rw = warp * 16 + il;
      float pz, ds;
      prob_and_dscore<EXT>(p, b, h, i0 + rw, j0 + jl, Sw[il * LDS + jl], dPw[il * LDS + jl], Ls[rw], Dls[rw], pz, ds);
      dSw[il * LDP + jl] = from_f32<T>(ds);
    }
    __syncwarp();
    // dQ += dS K.
#pragma unroll
    for (int n = 0; n < DK; n++) {
#pragma unroll
      for (int kk = 0; kk < NK; kk++) {
        FragA<T> sf;
        FragBRow<T> kf;
        wmma::load_matrix_sync(sf, dSw + kk * 16, LDP);
        wmma::load_matrix_sync(kf, Ks + kk * 16 * LDT + n * 16, LDT);
        wmma::mma_sync(dq[n], sf, kf, dq[n]);
      }
    }
  }
  const int64_t row0 = (b * p.H + h) * p.Tq + i0 + warp * 16;
  const int64_t rows_end = (b * p.H + h) * p.Tq + p.Tq;
#pragma unroll
  for (int n = 0; n < DK; n++) store_tile(dq[n], Sw, p.scale, gq, row0, rows_end, n * 16, D);
#elif defined(__CUDA_ARCH__)
  __trap();  // built without sm_80+ code: tc_eligible() never picks these kernels there
#endif
}

// ---- host side ----------------------------------------------------------------------------

bool vec_ok(const void* base, const int64_t* strides) {
  if (reinterpret_cast<uintptr_t>(base) % 16 != 0) return false;
  for (int d = 0; d < 3; d++)
    if (strides[d] % 8 != 0) return false;
  return true;
}

int compute_major(int dev) {
  static int cache[64];  // 0: not asked yet (compute capabilities start at 1)
  if (dev < 0 || dev >= 64) return 0;
  if (cache[dev] == 0) {
    int major = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    cache[dev] = major;
  }
  return cache[dev];
}

int max_smem_optin(int dev) {
  static int cache[64];
  if (dev < 0 || dev >= 64) return 0;
  if (cache[dev] == 0) {
    int bytes = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    cache[dev] = bytes;
  }
  return cache[dev];
}

// Whether the code this device runs was compiled for sm_80+ (a build for older architectures only,
// JIT-compiled from their PTX, has the kernels' bodies compiled out).
bool tc_code_present(int dev) {
  static int cache[64];  // 0: not asked, 1: present, 2: absent
  if (dev < 0 || dev >= 64) return false;
  if (cache[dev] == 0) {
    set_device(dev);
    cudaFuncAttributes a{};
    const bool ok =
        cudaFuncGetAttributes(&a, attn_fwd_tc_kernel<__half, 64, false>) == cudaSuccess && a.ptxVersion >= 80;
    cudaGetLastError();  // a failed query leaves no error behind
    cache[dev] = ok ? 1 : 2;
  }
  return cache[dev] == 1;
}

template <typename F>
void with_tc_head_dim(int64_t D, F&& f) {
  if (D <= 64)
    f(std::integral_constant<int, 64>{});
  else
    f(std::integral_constant<int, 128>{});
}

template <typename F>
void with_tc_type(DType t, F&& f) {
  if (t == DType::F16)
    f(ctype_tag<__half>{});
  else
    f(ctype_tag<__nv_bfloat16>{});
}

template <typename T, int DMAX>
size_t tc_smem_needed() {
  size_t m = TcFwd<DMAX>::smem;
  if (TcDkDv<DMAX>::smem > m) m = TcDkDv<DMAX>::smem;
  if (TcDq<DMAX>::smem > m) m = TcDq<DMAX>::smem;
  return m;
}

}  // namespace

bool tc_eligible(const Tensor& q, const AttnDesc& desc) {
  if (!desc.tensor_cores) return false;
  // P * Z is rounded to the input dtype: 1 / (1 - p) must stay far from f16's largest value.
  if (desc.dropout_p > 0.999) return false;
  if (q.dtype != DType::F16 && q.dtype != DType::BF16) return false;
  const int64_t D = q.shape[3];
  if (D % 16 != 0 || D > 128 || D == 0) return false;
  const int dev = dev_of(q);
  if (compute_major(dev) < 8 || !tc_code_present(dev)) return false;
  size_t need = 0;
  with_tc_head_dim(D, [&](auto dm) { need = tc_smem_needed<__half, decltype(dm)::value>(); });
  return need <= size_t(max_smem_optin(dev));
}

void tc_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                const Params<float>& p, bool ext, int dev, cudaStream_t st) {
  const int64_t B = q.shape[0], H = q.shape[1], Tq = q.shape[2];
  const TcVec vec{vec_ok(q.raw(), p.qs), vec_ok(k.raw(), p.ks), vec_ok(v.raw(), p.vs), false};
  with_tc_type(q.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    with_tc_head_dim(p.D, [&](auto dm) {
      with_ext(ext, [&](auto ex) {
        constexpr int DMAX = decltype(dm)::value;
        using C = TcFwd<DMAX>;
        auto kern = attn_fwd_tc_kernel<T, DMAX, decltype(ex)::value>;
        prepare_smem(kern, C::smem, dev, "attention", p.D, q.dtype);
        const int64_t blocks = B * H * ((Tq + C::BQ - 1) / C::BQ);
        SIFT_CHECK(blocks < (int64_t(1) << 31), "E_SHAPE", "attention: too many query tiles");
        kern<<<unsigned(blocks), kTcThreads, C::smem, st>>>(q.data<T>(), k.data<T>(), v.data<T>(), out.data<T>(),
                                                            lse.data<float>(), p, vec);
      });
    });
  });
  check_last_error("attention (tensor cores)");
}

void tc_backward(const Tensor& gout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& lse,
                 const Tensor& delta, const Tensor& gq, const Tensor& gk, const Tensor& gv, const Params<float>& p,
                 bool ext, int dev, cudaStream_t st) {
  const int64_t B = q.shape[0], H = q.shape[1], Hkv = k.shape[1], Tq = q.shape[2], Tk = k.shape[2];
  const TcVec vec{vec_ok(q.raw(), p.qs), vec_ok(k.raw(), p.ks), vec_ok(v.raw(), p.vs), vec_ok(gout.raw(), p.gs)};
  with_tc_type(q.dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    with_tc_head_dim(p.D, [&](auto dm) {
      with_ext(ext, [&](auto ex) {
        constexpr int DMAX = decltype(dm)::value;
        constexpr bool EXT = decltype(ex)::value;
        using CK = TcDkDv<DMAX>;
        using CQ = TcDq<DMAX>;
        auto kdkdv = attn_bwd_dkdv_tc_kernel<T, DMAX, EXT>;
        auto kdq = attn_bwd_dq_tc_kernel<T, DMAX, EXT>;
        prepare_smem(kdkdv, CK::smem, dev, "attentionBackward", p.D, q.dtype);
        prepare_smem(kdq, CQ::smem, dev, "attentionBackward", p.D, q.dtype);
        const int64_t kblocks = B * Hkv * ((Tk + CK::BK - 1) / CK::BK);
        const int64_t qblocks = B * H * ((Tq + CQ::BQ - 1) / CQ::BQ);
        SIFT_CHECK(kblocks < (int64_t(1) << 31) && qblocks < (int64_t(1) << 31), "E_SHAPE",
                   "attentionBackward: too many tiles");
        kdkdv<<<unsigned(kblocks), kTcThreads, CK::smem, st>>>(gout.data<T>(), q.data<T>(), k.data<T>(), v.data<T>(),
                                                               lse.data<float>(), delta.data<float>(), gk.data<T>(),
                                                               gv.data<T>(), p, vec);
        kdq<<<unsigned(qblocks), kTcThreads, CQ::smem, st>>>(gout.data<T>(), q.data<T>(), k.data<T>(), v.data<T>(),
                                                             lse.data<float>(), delta.data<float>(), gq.data<T>(), p,
                                                             vec);
      });
    });
  });
  check_last_error("attentionBackward (tensor cores)");
}

}  // namespace sift::cuda::attn
