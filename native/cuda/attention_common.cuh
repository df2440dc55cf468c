// Pieces shared by the two CUDA attention implementations (attention.cu: CUDA-core kernels for
// every dtype and head dim; attention_wmma.cu: tensor-core kernels for f16/bf16): the kernel
// parameters, the mask and dropout semantics of one score (identical on both paths and on the
// CPU), and the host-side launch helpers.
//
// Soft-capping and the sliding window are compiled in only where the template flag EXT is true:
// the launchers pick the EXT instantiation when a call uses either (AttnDesc::softcap, ::window),
// so the kernels of calls without them are the same code as before they existed.
#pragma once
#include <limits>
#include <type_traits>

#include "../cpu/dropout.h"
#include "attention.h"
#include "common.cuh"

namespace sift::cuda::attn {

template <typename A>
struct Params {
  int64_t H, Hkv, group, Tq, Tk, D, shift;
  int64_t qs[3], ks[3], vs[3], gs[3];  // element strides over (b, h, t); the head dim has stride 1
  A scale;
  bool causal;
  int mask_mode;  // AttnMask
  const uint8_t* pad;
  const A* add;
  int64_t ms[4];
  bool drop;
  uint32_t thr;
  A rz;
  uint64_t seed;
  // Read only by the EXT instantiations (last, so the fields above keep their offsets).
  A softcap, inv_softcap;  // 0: off
  int64_t window;          // 0: off
};

template <typename A>
__device__ __forceinline__ A aexp(A x) {
  if constexpr (std::is_same_v<A, double>)
    return exp(x);
  else
    return expf(x);
}
template <typename A>
__device__ __forceinline__ A alog(A x) {
  if constexpr (std::is_same_v<A, double>)
    return log(x);
  else
    return logf(x);
}
template <typename A>
__device__ __forceinline__ A atanh_(A x) {
  if constexpr (std::is_same_v<A, double>)
    return tanh(x);
  else
    return tanhf(x);
}
template <typename A>
__device__ __forceinline__ A amax(A a, A b) {
  return a > b ? a : b;
}
template <typename A>
__device__ __forceinline__ A ninf() {
  return -std::numeric_limits<A>::infinity();
}

// Reductions over the 16 threads of a score row (lanes differing in the low 4 bits). The xor
// butterfly leaves the same bits in every lane.
template <typename A>
__device__ __forceinline__ A row_max(A v) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) v = amax(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
template <typename A>
__device__ __forceinline__ A row_sum(A v) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// scale * dot + mask, or -inf for keys query i does not see (and for padding rows/cols). With
// EXT, the sliding window (i + shift - j < window) and soft-capping (softcap * tanh(s / softcap),
// before the mask; dcap receives its derivative 1 - tanh^2, left as is for a masked key).
template <bool EXT, typename A>
__device__ __forceinline__ A masked_score(const Params<A>& p, int64_t b, int64_t h, int64_t i, int64_t j, A dot,
                                          A& dcap) {
  if (i >= p.Tq || j >= p.Tk) return ninf<A>();
  if (p.causal && j > i + p.shift) return ninf<A>();
  if constexpr (EXT) {
    if (p.window && i + p.shift - j >= p.window) return ninf<A>();
  }
  A s = dot * p.scale;
  if constexpr (EXT) {
    if (p.softcap > A(0)) {
      const A t = atanh_(s * p.inv_softcap);
      s = p.softcap * t;
      dcap = A(1) - t * t;
    }
  }
  if (p.mask_mode == int(AttnMask::KeyPadding)) {
    if (!p.pad[b * p.Tk + j]) return ninf<A>();
  } else if (p.mask_mode == int(AttnMask::Additive)) {
    s += p.add[b * p.ms[0] + h * p.ms[1] + i * p.ms[2] + j * p.ms[3]];
  }
  return s;
}
template <bool EXT, typename A>
__device__ __forceinline__ A masked_score(const Params<A>& p, int64_t b, int64_t h, int64_t i, int64_t j, A dot) {
  A unused;
  return masked_score<EXT>(p, b, h, i, j, dot, unused);
}

template <typename A>
__device__ __forceinline__ A drop_factor(const Params<A>& p, int64_t b, int64_t h, int64_t i, int64_t j) {
  if (!p.drop) return A(1);
  const uint64_t ctr = uint64_t(((b * p.H + h) * p.Tq + i) * p.Tk + j);
  return dropout_keep(p.seed, ctr, p.thr) ? p.rz : A(0);
}

// Keys [0, end) that some query of the tile [i0, i0 + rows) sees (all of them unless causal).
template <typename A>
__device__ __forceinline__ int64_t key_end(const Params<A>& p, int64_t i0, int64_t rows) {
  if (!p.causal) return p.Tk;
  const int64_t last = (i0 + rows < p.Tq ? i0 + rows : p.Tq) - 1;
  const int64_t end = last + p.shift + 1;
  return end < 0 ? 0 : (end > p.Tk ? p.Tk : end);
}

// The first key tile (of BK keys) that the tile of queries starting at i0 sees: 0 unless a sliding
// window leaves the tiles before it wholly out of sight of the tile's first query, and hence of all.
template <bool EXT, int BK, typename A>
__device__ __forceinline__ int64_t key_tile_begin(const Params<A>& p, int64_t i0) {
  if constexpr (EXT) {
    if (p.window) {
      const int64_t first = i0 + p.shift - p.window + 1;
      return first <= 0 ? 0 : (first / BK) * BK;
    }
  }
  return 0;
}

// Queries [.., end) that see some key of the tile [j0, j0 + rows): Tq unless a sliding window
// hides the key tile's last key from the later queries.
template <bool EXT, typename A>
__device__ __forceinline__ int64_t query_end(const Params<A>& p, int64_t j0, int64_t rows) {
  if constexpr (EXT) {
    if (p.window) {
      const int64_t end = j0 + rows - 1 - p.shift + p.window;
      return end < 0 ? 0 : (end > p.Tq ? p.Tq : end);
    }
  }
  return p.Tq;
}

// P*Z and dS = P * (dP*Z - Delta) of one score (dot = q.k, dpd = dO.v); with soft-capping dS is
// the gradient of the uncapped score, times 1 - tanh^2.
template <bool EXT, typename A>
__device__ __forceinline__ void prob_and_dscore(const Params<A>& p, int64_t b, int64_t h, int64_t i, int64_t j, A dot,
                                                A dpd, A L, A Dl, A& pz, A& ds) {
  A P = A(0), dcap = A(1);
  if (L != ninf<A>()) P = aexp(masked_score<EXT>(p, b, h, i, j, dot, dcap) - L);
  const A z = drop_factor(p, b, h, i, j);
  pz = P * z;
  ds = P * (dpd * z - Dl);
  if constexpr (EXT) ds *= dcap;
}

template <typename A>
inline Params<A> make_params(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* gout, const Tensor& mask,
                             const AttnDesc& desc) {
  Params<A> p{};
  p.H = q.shape[1];
  p.Hkv = k.shape[1];
  p.group = p.H / p.Hkv;
  p.Tq = q.shape[2];
  p.Tk = k.shape[2];
  p.D = q.shape[3];
  p.shift = p.Tk - p.Tq;
  for (int d = 0; d < 3; d++) {
    p.qs[d] = q.strides[d];
    p.ks[d] = k.strides[d];
    p.vs[d] = v.strides[d];
    p.gs[d] = gout ? gout->strides[d] : 0;
  }
  p.scale = A(desc.scale);
  p.causal = desc.causal;
  p.mask_mode = int(desc.mask);
  p.pad = desc.mask == AttnMask::KeyPadding ? mask.data<uint8_t>() : nullptr;
  p.add = desc.mask == AttnMask::Additive ? mask.data<A>() : nullptr;
  for (int d = 0; d < 4; d++) p.ms[d] = desc.mask == AttnMask::Additive ? mask.strides[d] : 0;
  p.drop = desc.dropout_p > 0;
  p.thr = dropout_threshold(desc.dropout_p);
  p.rz = A(1.0 / (1.0 - desc.dropout_p));
  p.seed = desc.seed;
  p.softcap = A(desc.softcap);
  p.inv_softcap = desc.softcap > 0 ? A(1.0 / desc.softcap) : A(0);
  p.window = desc.window;
  return p;
}

// Whether a call needs the EXT kernels (soft-capping or a sliding window).
inline bool uses_ext(const AttnDesc& desc) { return desc.softcap > 0 || desc.window > 0; }

// f(std::bool_constant<EXT>): the launchers' choice of instantiation, EXT only for calls that use
// soft-capping or a sliding window.
template <typename F>
inline void with_ext(bool ext, F&& f) {
  if (ext)
    f(std::true_type{});
  else
    f(std::false_type{});
}

// Kernels using over 48 KB of dynamic shared memory must opt in, per device.
template <typename K>
inline void prepare_smem(K kernel, size_t smem, int dev, const char* op, int64_t D, DType dt) {
  if (smem <= 48 * 1024) return;
  int max_optin = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&max_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  SIFT_CHECK(smem <= size_t(max_optin), "E_SHAPE", op, ": head dim ", D, " in ", dtype_name(dt), " needs ", smem,
             " bytes of shared memory per block; this GPU allows ", max_optin);
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
}

// The tensor-core path (attention_wmma.cu). tc_eligible: f16/bf16, head dim a multiple of 16 up
// to 128, compute capability 8.0 or newer, enough shared memory, and desc.tensor_cores set.
bool tc_eligible(const Tensor& q, const AttnDesc& desc);
void tc_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                const Params<float>& p, bool ext, int dev, cudaStream_t st);
void tc_backward(const Tensor& gout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& lse,
                 const Tensor& delta, const Tensor& gq, const Tensor& gk, const Tensor& gv, const Params<float>& p,
                 bool ext, int dev, cudaStream_t st);

}  // namespace sift::cuda::attn
