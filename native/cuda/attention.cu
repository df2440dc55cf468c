// Fused (flash-attention style) scaled dot-product attention on CUDA. No [Tq, Tk] matrix ever
// reaches global memory.
//
// Forward: a block of 256 threads (16 x 16) owns BQ queries of one (b, h). It keeps the query
// tile in shared memory and streams key/value tiles of BK rows through shared memory; each thread
// computes an (BQ/16) x (BK/16) micro-tile of scores, the row max / row sum are reduced across
// the 16 threads of a row with shuffles (online softmax), and each thread accumulates
// (BQ/16) x (DMAX/16) outputs in f32 registers (f64 for f64). lse is stored per query.
//
// Backward (deterministic, no atomics): Delta_i = rowsum(dO_i * O_i) first; then one kernel per
// (b, kv head, key tile) loops over the query heads of its group and their query tiles,
// recomputing P from lse, and accumulates dK and dV for its keys in registers; a second kernel
// per (b, h, query tile) loops over key tiles and accumulates dQ. Scores are computed twice, in
// exchange for no atomics, no f32 scratch buffers and bitwise reproducible gradients.
//
// With soft-capping or a sliding window the EXT instantiations run (attention_common.cuh); a
// window also narrows each query tile's key tiles and each key tile's query tiles, so tiles wholly
// outside the window are skipped.
//
// Tiles are kept in shared memory in the accumulation type with rows padded to DMAX + 1
// elements, so the column-wise reads of the score loops are free of bank conflicts. Head dims up
// to 256 are supported (DMAX 32, 64, 128, 256); configurations are chosen to fit the 99 KB of
// shared memory of sm_86/89 for f32/f16/bf16 (f64, for reference checks, may need more).
#include "attention_common.cuh"

namespace sift::cuda {
namespace {
using namespace attn;

constexpr int kThreads = 256;  // 16 x 16

// ROWS x DMAX tile of rows [r0, r0 + ROWS) (zero beyond nrows and beyond D), coalesced over d.
template <typename T, typename A, int DMAX, int ROWS>
__device__ __forceinline__ void load_tile(const T* __restrict__ base, int64_t row_stride, int64_t r0, int64_t nrows,
                                          int64_t D, A* dst) {
  constexpr int LD = DMAX + 1;
  for (int idx = threadIdx.x; idx < ROWS * DMAX; idx += kThreads) {
    const int r = idx / DMAX, d = idx % DMAX;
    const int64_t row = r0 + r;
    A val = A(0);
    if (row < nrows && d < D) val = to_acc<A>(base[row * row_stride + d]);
    dst[r * LD + d] = val;
  }
}

// ---- forward ------------------------------------------------------------------------------

template <typename A, int DMAX>
struct FwdCfg {
  static constexpr int BQ = sizeof(A) == 8 ? 16 : (DMAX >= 256 ? 32 : 64);
  static constexpr int BK = sizeof(A) == 8 ? 16 : (DMAX >= 256 ? 32 : 64);
  static constexpr size_t smem = sizeof(A) * size_t((BQ + BK) * (DMAX + 1) + BQ * (BK + 1));
};

template <typename T, typename A, int DMAX, int BQ, int BK, bool EXT>
__global__ void __launch_bounds__(kThreads)
    attn_fwd_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ out,
                    A* __restrict__ lse, Params<A> p) {
  constexpr int LD = DMAX + 1, LP = BK + 1, RA = BQ / 16, CB = BK / 16, DE = DMAX / 16;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  A* Qs = reinterpret_cast<A*>(smem_raw);
  A* KVs = Qs + BQ * LD;
  A* Ps = KVs + BK * LD;
  const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
  const int64_t nqt = (p.Tq + BQ - 1) / BQ;
  const int64_t qt = blockIdx.x % nqt, bh = blockIdx.x / nqt;
  const int64_t h = bh % p.H, b = bh / p.H, hk = h / p.group;
  const int64_t i0 = qt * BQ;
  const T* kb = k + b * p.ks[0] + hk * p.ks[1];
  const T* vb = v + b * p.vs[0] + hk * p.vs[1];
  load_tile<T, A, DMAX, BQ>(q + b * p.qs[0] + h * p.qs[1], p.qs[2], i0, p.Tq, p.D, Qs);

  A o[RA][DE], m[RA], l[RA];
#pragma unroll
  for (int a = 0; a < RA; a++) {
    m[a] = ninf<A>();
    l[a] = A(0);
#pragma unroll
    for (int e = 0; e < DE; e++) o[a][e] = A(0);
  }
  const int64_t kend = key_end(p, i0, BQ);
  const int D = int(p.D);
  for (int64_t j0 = key_tile_begin<EXT, BK>(p, i0); j0 < kend; j0 += BK) {
    __syncthreads();  // the previous tile's P and V are no longer read
    load_tile<T, A, DMAX, BK>(kb, p.ks[2], j0, kend, p.D, KVs);
    __syncthreads();
    A sc[RA][CB];
#pragma unroll
    for (int a = 0; a < RA; a++)
#pragma unroll
      for (int c = 0; c < CB; c++) sc[a][c] = A(0);
#pragma unroll 4
    for (int d = 0; d < D; d++) {
      A qv[RA], kv[CB];
#pragma unroll
      for (int a = 0; a < RA; a++) qv[a] = Qs[(ty + 16 * a) * LD + d];
#pragma unroll
      for (int c = 0; c < CB; c++) kv[c] = KVs[(tx + 16 * c) * LD + d];
#pragma unroll
      for (int a = 0; a < RA; a++)
#pragma unroll
        for (int c = 0; c < CB; c++) sc[a][c] += qv[a] * kv[c];
    }
#pragma unroll
    for (int a = 0; a < RA; a++) {
      const int64_t i = i0 + ty + 16 * a;
      A mx = ninf<A>();
#pragma unroll
      for (int c = 0; c < CB; c++) {
        sc[a][c] = masked_score<EXT>(p, b, h, i, j0 + tx + 16 * c, sc[a][c]);
        mx = amax(mx, sc[a][c]);
      }
      mx = row_max(mx);
      const A mnew = amax(m[a], mx);
      A alpha = A(1), rs = A(0);
      if (mnew != ninf<A>()) {
        alpha = aexp(m[a] - mnew);  // 0 when the row saw nothing before
#pragma unroll
        for (int c = 0; c < CB; c++) {
          sc[a][c] = aexp(sc[a][c] - mnew);
          rs += sc[a][c];
        }
      } else {
#pragma unroll
        for (int c = 0; c < CB; c++) sc[a][c] = A(0);
      }
      rs = row_sum(rs);
      l[a] = l[a] * alpha + rs;
      m[a] = mnew;
#pragma unroll
      for (int e = 0; e < DE; e++) o[a][e] *= alpha;
#pragma unroll
      for (int c = 0; c < CB; c++) {
        const int64_t j = j0 + tx + 16 * c;
        Ps[(ty + 16 * a) * LP + tx + 16 * c] = sc[a][c] * drop_factor(p, b, h, i, j);
      }
    }
    __syncthreads();  // P written, K no longer read
    load_tile<T, A, DMAX, BK>(vb, p.vs[2], j0, kend, p.D, KVs);
    __syncthreads();
#pragma unroll 4
    for (int c = 0; c < BK; c++) {
      A pv[RA], vv[DE];
#pragma unroll
      for (int a = 0; a < RA; a++) pv[a] = Ps[(ty + 16 * a) * LP + c];
#pragma unroll
      for (int e = 0; e < DE; e++) vv[e] = KVs[c * LD + tx + 16 * e];
#pragma unroll
      for (int a = 0; a < RA; a++)
#pragma unroll
        for (int e = 0; e < DE; e++) o[a][e] += pv[a] * vv[e];
    }
  }
#pragma unroll
  for (int a = 0; a < RA; a++) {
    const int64_t i = i0 + ty + 16 * a;
    if (i >= p.Tq) continue;
    const int64_t row = (b * p.H + h) * p.Tq + i;
    const bool any = l[a] > A(0);  // false: every key masked -> zeros and lse = -inf
    const A inv = any ? A(1) / l[a] : A(0);
#pragma unroll
    for (int e = 0; e < DE; e++) {
      const int d = tx + 16 * e;
      if (d < D) out[row * D + d] = from_acc<T, A>(o[a][e] * inv);
    }
    if (tx == 0) lse[row] = any ? m[a] + alog(l[a]) : ninf<A>();
  }
}

// ---- backward -----------------------------------------------------------------------------

template <typename A, int DMAX>
struct BwdCfg {
  static constexpr int BQ = sizeof(A) == 8 ? 16 : (DMAX <= 32 ? 64 : DMAX <= 128 ? 32 : 16);
  static constexpr int BK = sizeof(A) == 8 ? 16 : (DMAX <= 64 ? 64 : DMAX <= 128 ? 32 : 16);
  static constexpr size_t smem_dkdv = sizeof(A) * size_t(2 * (BQ + BK) * (DMAX + 1) + 2 * BQ * (BK + 1) + 2 * BQ);
  static constexpr size_t smem_dq = sizeof(A) * size_t(2 * (BQ + BK) * (DMAX + 1) + BQ * (BK + 1));
};

template <typename T, typename A>
__global__ void attn_delta_kernel(const T* __restrict__ gout, const T* __restrict__ out, A* __restrict__ delta,
                                  Params<A> p, int64_t rows) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; row < rows; row += warps) {
    const int64_t i = row % p.Tq, bh = row / p.Tq, h = bh % p.H, b = bh / p.H;
    const T* g = gout + b * p.gs[0] + h * p.gs[1] + i * p.gs[2];
    const T* o = out + row * p.D;
    A acc = A(0);
    for (int64_t d = lane; d < p.D; d += 32) acc += to_acc<A>(g[d]) * to_acc<A>(o[d]);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0) delta[row] = acc;
  }
}

template <typename T, typename A, int DMAX, int BQ, int BK, bool EXT>
__global__ void __launch_bounds__(kThreads)
    attn_bwd_dkdv_kernel(const T* __restrict__ gout, const T* __restrict__ q, const T* __restrict__ k,
                         const T* __restrict__ v, const A* __restrict__ lse, const A* __restrict__ delta,
                         T* __restrict__ gk, T* __restrict__ gv, Params<A> p) {
  constexpr int LD = DMAX + 1, LP = BK + 1, RQ = BQ / 16, CB = BK / 16, RK = BK / 16, DE = DMAX / 16;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  A* Ks = reinterpret_cast<A*>(smem_raw);
  A* Vs = Ks + BK * LD;
  A* Qs = Vs + BK * LD;
  A* Gs = Qs + BQ * LD;
  A* Ps = Gs + BQ * LD;
  A* Ss = Ps + BQ * LP;
  A* Ls = Ss + BQ * LP;
  A* Dls = Ls + BQ;
  const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
  const int64_t nkt = (p.Tk + BK - 1) / BK;
  const int64_t kt = blockIdx.x % nkt, bhk = blockIdx.x / nkt;
  const int64_t hk = bhk % p.Hkv, b = bhk / p.Hkv;
  const int64_t j0 = kt * BK;
  const int D = int(p.D);
  load_tile<T, A, DMAX, BK>(k + b * p.ks[0] + hk * p.ks[1], p.ks[2], j0, p.Tk, p.D, Ks);
  load_tile<T, A, DMAX, BK>(v + b * p.vs[0] + hk * p.vs[1], p.vs[2], j0, p.Tk, p.D, Vs);
  A dk[RK][DE], dv[RK][DE];
#pragma unroll
  for (int a = 0; a < RK; a++)
#pragma unroll
    for (int e = 0; e < DE; e++) dk[a][e] = dv[a][e] = A(0);
  int64_t istart = 0;  // the first query that sees key j0
  if (p.causal) {
    istart = j0 - p.shift;
    istart = istart < 0 ? 0 : istart;
  }
  const int64_t iend = query_end<EXT>(p, j0, BK);  // past the last query that sees the key tile
  for (int64_t h = hk * p.group; h < (hk + 1) * p.group; h++) {
    const T* qb = q + b * p.qs[0] + h * p.qs[1];
    const T* gb = gout + b * p.gs[0] + h * p.gs[1];
    for (int64_t i0 = (istart / BQ) * BQ; i0 < iend; i0 += BQ) {
      __syncthreads();  // the previous tile is no longer read
      load_tile<T, A, DMAX, BQ>(qb, p.qs[2], i0, p.Tq, p.D, Qs);
      load_tile<T, A, DMAX, BQ>(gb, p.gs[2], i0, p.Tq, p.D, Gs);
      for (int r = tid; r < BQ; r += kThreads) {
        const int64_t i = i0 + r, row = (b * p.H + h) * p.Tq + i;
        Ls[r] = i < p.Tq ? lse[row] : ninf<A>();
        Dls[r] = i < p.Tq ? delta[row] : A(0);
      }
      __syncthreads();
      A s[RQ][CB], dp[RQ][CB];
#pragma unroll
      for (int a = 0; a < RQ; a++)
#pragma unroll
        for (int c = 0; c < CB; c++) s[a][c] = dp[a][c] = A(0);
#pragma unroll 2
      for (int d = 0; d < D; d++) {
        A qv[RQ], gv_[RQ], kv[CB], vv[CB];
#pragma unroll
        for (int a = 0; a < RQ; a++) {
          qv[a] = Qs[(ty + 16 * a) * LD + d];
          gv_[a] = Gs[(ty + 16 * a) * LD + d];
        }
#pragma unroll
        for (int c = 0; c < CB; c++) {
          kv[c] = Ks[(tx + 16 * c) * LD + d];
          vv[c] = Vs[(tx + 16 * c) * LD + d];
        }
#pragma unroll
        for (int a = 0; a < RQ; a++)
#pragma unroll
          for (int c = 0; c < CB; c++) {
            s[a][c] += qv[a] * kv[c];
            dp[a][c] += gv_[a] * vv[c];
          }
      }
#pragma unroll
      for (int a = 0; a < RQ; a++) {
        const int r = ty + 16 * a;
#pragma unroll
        for (int c = 0; c < CB; c++) {
          const int cc = tx + 16 * c;
          A pz, ds;
          prob_and_dscore<EXT>(p, b, h, i0 + r, j0 + cc, s[a][c], dp[a][c], Ls[r], Dls[r], pz, ds);
          Ps[r * LP + cc] = pz;
          Ss[r * LP + cc] = ds;
        }
      }
      __syncthreads();
#pragma unroll 2
      for (int r = 0; r < BQ; r++) {
        A pz[RK], ds[RK], gr[DE], qr[DE];
#pragma unroll
        for (int a = 0; a < RK; a++) {
          pz[a] = Ps[r * LP + ty + 16 * a];
          ds[a] = Ss[r * LP + ty + 16 * a];
        }
#pragma unroll
        for (int e = 0; e < DE; e++) {
          gr[e] = Gs[r * LD + tx + 16 * e];
          qr[e] = Qs[r * LD + tx + 16 * e];
        }
#pragma unroll
        for (int a = 0; a < RK; a++)
#pragma unroll
          for (int e = 0; e < DE; e++) {
            dv[a][e] += pz[a] * gr[e];
            dk[a][e] += ds[a] * qr[e];
          }
      }
    }
  }
#pragma unroll
  for (int a = 0; a < RK; a++) {
    const int64_t j = j0 + ty + 16 * a;
    if (j >= p.Tk) continue;
    const int64_t row = (b * p.Hkv + hk) * p.Tk + j;
#pragma unroll
    for (int e = 0; e < DE; e++) {
      const int d = tx + 16 * e;
      if (d < D) {
        gk[row * D + d] = from_acc<T, A>(dk[a][e] * p.scale);
        gv[row * D + d] = from_acc<T, A>(dv[a][e]);
      }
    }
  }
}

template <typename T, typename A, int DMAX, int BQ, int BK, bool EXT>
__global__ void __launch_bounds__(kThreads)
    attn_bwd_dq_kernel(const T* __restrict__ gout, const T* __restrict__ q, const T* __restrict__ k,
                       const T* __restrict__ v, const A* __restrict__ lse, const A* __restrict__ delta,
                       T* __restrict__ gq, Params<A> p) {
  constexpr int LD = DMAX + 1, LP = BK + 1, RA = BQ / 16, CB = BK / 16, DE = DMAX / 16;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  A* Qs = reinterpret_cast<A*>(smem_raw);
  A* Gs = Qs + BQ * LD;
  A* Ks = Gs + BQ * LD;
  A* Vs = Ks + BK * LD;
  A* Ss = Vs + BK * LD;
  const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
  const int64_t nqt = (p.Tq + BQ - 1) / BQ;
  const int64_t qt = blockIdx.x % nqt, bh = blockIdx.x / nqt;
  const int64_t h = bh % p.H, b = bh / p.H, hk = h / p.group;
  const int64_t i0 = qt * BQ;
  const int D = int(p.D);
  load_tile<T, A, DMAX, BQ>(q + b * p.qs[0] + h * p.qs[1], p.qs[2], i0, p.Tq, p.D, Qs);
  load_tile<T, A, DMAX, BQ>(gout + b * p.gs[0] + h * p.gs[1], p.gs[2], i0, p.Tq, p.D, Gs);
  const T* kb = k + b * p.ks[0] + hk * p.ks[1];
  const T* vb = v + b * p.vs[0] + hk * p.vs[1];
  A L[RA], Dl[RA], dq[RA][DE];
#pragma unroll
  for (int a = 0; a < RA; a++) {
    const int64_t i = i0 + ty + 16 * a, row = (b * p.H + h) * p.Tq + i;
    L[a] = i < p.Tq ? lse[row] : ninf<A>();
    Dl[a] = i < p.Tq ? delta[row] : A(0);
#pragma unroll
    for (int e = 0; e < DE; e++) dq[a][e] = A(0);
  }
  const int64_t kend = key_end(p, i0, BQ);
  for (int64_t j0 = key_tile_begin<EXT, BK>(p, i0); j0 < kend; j0 += BK) {
    __syncthreads();
    load_tile<T, A, DMAX, BK>(kb, p.ks[2], j0, kend, p.D, Ks);
    load_tile<T, A, DMAX, BK>(vb, p.vs[2], j0, kend, p.D, Vs);
    __syncthreads();
    A s[RA][CB], dp[RA][CB];
#pragma unroll
    for (int a = 0; a < RA; a++)
#pragma unroll
      for (int c = 0; c < CB; c++) s[a][c] = dp[a][c] = A(0);
#pragma unroll 2
    for (int d = 0; d < D; d++) {
      A qv[RA], gv_[RA], kv[CB], vv[CB];
#pragma unroll
      for (int a = 0; a < RA; a++) {
        qv[a] = Qs[(ty + 16 * a) * LD + d];
        gv_[a] = Gs[(ty + 16 * a) * LD + d];
      }
#pragma unroll
      for (int c = 0; c < CB; c++) {
        kv[c] = Ks[(tx + 16 * c) * LD + d];
        vv[c] = Vs[(tx + 16 * c) * LD + d];
      }
#pragma unroll
      for (int a = 0; a < RA; a++)
#pragma unroll
        for (int c = 0; c < CB; c++) {
          s[a][c] += qv[a] * kv[c];
          dp[a][c] += gv_[a] * vv[c];
        }
    }
#pragma unroll
    for (int a = 0; a < RA; a++) {
      const int r = ty + 16 * a;
#pragma unroll
      for (int c = 0; c < CB; c++) {
        const int cc = tx + 16 * c;
        A pz, ds;
        prob_and_dscore<EXT>(p, b, h, i0 + r, j0 + cc, s[a][c], dp[a][c], L[a], Dl[a], pz, ds);
        Ss[r * LP + cc] = ds;
      }
    }
    __syncthreads();
#pragma unroll 4
    for (int c = 0; c < BK; c++) {
      A ds[RA], kr[DE];
#pragma unroll
      for (int a = 0; a < RA; a++) ds[a] = Ss[(ty + 16 * a) * LP + c];
#pragma unroll
      for (int e = 0; e < DE; e++) kr[e] = Ks[c * LD + tx + 16 * e];
#pragma unroll
      for (int a = 0; a < RA; a++)
#pragma unroll
        for (int e = 0; e < DE; e++) dq[a][e] += ds[a] * kr[e];
    }
  }
#pragma unroll
  for (int a = 0; a < RA; a++) {
    const int64_t i = i0 + ty + 16 * a;
    if (i >= p.Tq) continue;
    const int64_t row = (b * p.H + h) * p.Tq + i;
#pragma unroll
    for (int e = 0; e < DE; e++) {
      const int d = tx + 16 * e;
      if (d < D) gq[row * D + d] = from_acc<T, A>(dq[a][e] * p.scale);
    }
  }
}

// ---- launchers ----------------------------------------------------------------------------

template <typename F>
void with_head_dim(int64_t D, const char* op, F&& f) {
  if (D <= 32)
    f(std::integral_constant<int, 32>{});
  else if (D <= 64)
    f(std::integral_constant<int, 64>{});
  else if (D <= 128)
    f(std::integral_constant<int, 128>{});
  else if (D <= 256)
    f(std::integral_constant<int, 256>{});
  else
    fail("E_SHAPE", op, ": CUDA attention supports head dims up to 256, got ", D);
}

}  // namespace

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, const Tensor& out,
                       const Tensor& lse, const AttnDesc& desc) {
  const int64_t B = q.shape[0], H = q.shape[1], Tq = q.shape[2], D = q.shape[3];
  if (B * H * Tq == 0) return;
  const int dev = dev_of(q);
  cudaStream_t st = current_stream(dev);
  dispatch_cuda_float(q.dtype, "attention", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = dacc_t<T>;
    Params<A> p = make_params<A>(q, k, v, nullptr, mask, desc);
    const bool ext = uses_ext(desc);
    if constexpr (!std::is_same_v<T, float> && !std::is_same_v<T, double>) {
      if (tc_eligible(q, desc)) return tc_forward(q, k, v, out, lse, p, ext, dev, st);
    }
    with_head_dim(D, "attention", [&](auto dm) {
      with_ext(ext, [&](auto ex) {
        constexpr int DMAX = decltype(dm)::value;
        using C = FwdCfg<A, DMAX>;
        auto kern = attn_fwd_kernel<T, A, DMAX, C::BQ, C::BK, decltype(ex)::value>;
        prepare_smem(kern, C::smem, dev, "attention", D, q.dtype);
        const int64_t blocks = B * H * ((Tq + C::BQ - 1) / C::BQ);
        SIFT_CHECK(blocks < (int64_t(1) << 31), "E_SHAPE", "attention: too many query tiles");
        kern<<<unsigned(blocks), kThreads, C::smem, st>>>(q.data<T>(), k.data<T>(), v.data<T>(), out.data<T>(),
                                                          lse.data<A>(), p);
      });
    });
  });
  check_last_error("attention");
}

void attention_backward(const Tensor& gout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                        const Tensor& lse, const Tensor& mask, const Tensor& gq, const Tensor& gk, const Tensor& gv,
                        const AttnDesc& desc) {
  const int64_t B = q.shape[0], H = q.shape[1], Hkv = k.shape[1], Tq = q.shape[2], Tk = k.shape[2], D = q.shape[3];
  const int dev = dev_of(q);
  cudaStream_t st = current_stream(dev);
  dispatch_cuda_float(q.dtype, "attentionBackward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = dacc_t<T>;
    Params<A> p = make_params<A>(q, k, v, &gout, mask, desc);
    const int64_t rows = B * H * Tq;
    // Delta lives in a stream-ordered scratch tensor: freed after the launches are queued, which
    // the single-stream caching allocator makes safe.
    Tensor delta = empty({rows}, lse.dtype, q.device());
    attn_delta_kernel<T, A>
        <<<grid_for(rows * 32, 256), 256, 0, st>>>(gout.data<T>(), out.data<T>(), delta.data<A>(), p, rows);
    const bool ext = uses_ext(desc);
    if constexpr (!std::is_same_v<T, float> && !std::is_same_v<T, double>) {
      if (tc_eligible(q, desc)) return tc_backward(gout, q, k, v, lse, delta, gq, gk, gv, p, ext, dev, st);
    }
    with_head_dim(D, "attentionBackward", [&](auto dm) {
      with_ext(ext, [&](auto ex) {
        constexpr int DMAX = decltype(dm)::value;
        constexpr bool EXT = decltype(ex)::value;
        using C = BwdCfg<A, DMAX>;
        auto kdkdv = attn_bwd_dkdv_kernel<T, A, DMAX, C::BQ, C::BK, EXT>;
        auto kdq = attn_bwd_dq_kernel<T, A, DMAX, C::BQ, C::BK, EXT>;
        prepare_smem(kdkdv, C::smem_dkdv, dev, "attentionBackward", D, q.dtype);
        prepare_smem(kdq, C::smem_dq, dev, "attentionBackward", D, q.dtype);
        const int64_t kblocks = B * Hkv * ((Tk + C::BK - 1) / C::BK);
        const int64_t qblocks = B * H * ((Tq + C::BQ - 1) / C::BQ);
        SIFT_CHECK(kblocks < (int64_t(1) << 31) && qblocks < (int64_t(1) << 31), "E_SHAPE",
                   "attentionBackward: too many tiles");
        kdkdv<<<unsigned(kblocks), kThreads, C::smem_dkdv, st>>>(gout.data<T>(), q.data<T>(), k.data<T>(), v.data<T>(),
                                                                 lse.data<A>(), delta.data<A>(), gk.data<T>(),
                                                                 gv.data<T>(), p);
        kdq<<<unsigned(qblocks), kThreads, C::smem_dq, st>>>(gout.data<T>(), q.data<T>(), k.data<T>(), v.data<T>(),
                                                             lse.data<A>(), delta.data<A>(), gq.data<T>(), p);
      });
    });
  });
  check_last_error("attentionBackward");
}

}  // namespace sift::cuda
