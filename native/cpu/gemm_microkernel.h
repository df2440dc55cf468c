// The register-blocked GEMM microkernel, written once and compiled once per instruction set:
// gemm_kernels.cpp includes this file inside each `#pragma GCC target` region, with
// SIFT_GEMM_KERNEL naming that region's copy (a definition outside the regions would be compiled
// for the baseline ISA and could not inline the region's intrinsics). No include guard: it is
// meant to be included more than once.
//
// MR rows x NV vectors: MR * NV accumulators stay in registers for the whole k loop; each step
// loads NV vectors of packed B and broadcasts MR values of packed A. VT holds the vector type V of
// W lanes of E and its operations (zero, load, bcast, fma, add, store).
template <typename VT, int MR, int NV>
void SIFT_GEMM_KERNEL(int64_t kc, const typename VT::E* a, const typename VT::E* b, typename VT::E* c, int64_t ldc,
                      int accumulate) {
  static_assert(MR <= 32 && NV <= 4, "the unroll counts below cover the whole tile");
  using V = typename VT::V;
  constexpr int W = VT::W;
  V acc[MR][NV];
#pragma GCC unroll 32
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) acc[r][v] = VT::zero();
  for (int64_t k = 0; k < kc; k++) {
    _mm_prefetch(reinterpret_cast<const char*>(b + 8 * NV * W), _MM_HINT_T0);
    V bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) bv[v] = VT::load(b + v * W);
#pragma GCC unroll 32
    for (int r = 0; r < MR; r++) {
      V ar = VT::bcast(a[r]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; v++) acc[r][v] = VT::fma(ar, bv[v], acc[r][v]);
    }
    a += MR;
    b += NV * W;
  }
  if (accumulate) {
#pragma GCC unroll 32
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
      for (int v = 0; v < NV; v++) VT::store(c + r * ldc + v * W, VT::add(VT::load(c + r * ldc + v * W), acc[r][v]));
  } else {
#pragma GCC unroll 32
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
      for (int v = 0; v < NV; v++) VT::store(c + r * ldc + v * W, acc[r][v]);
  }
}
