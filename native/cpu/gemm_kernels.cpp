// GEMM microkernels. The AVX-512 and AVX2+FMA kernels are compiled for their ISA with
// `#pragma GCC target` regions (no global -march: the addon must load on any x86-64 CPU);
// gemm.cpp picks one at run time with __builtin_cpu_supports. Everything in the target regions
// has internal linkage and uses no standard-library templates, so no ISA-specific copy of a
// shared inline function can leak into code that runs on older CPUs.
#include <cstdint>

#include "gemm.h"

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define SIFT_GEMM_X86 1
#include <immintrin.h>
#endif

#define SIFT_AI inline __attribute__((always_inline))

namespace sift::cpu::detail {
namespace {

// ---- portable kernel: plain loops the compiler vectorises for the baseline ISA.
template <typename T, int MR, int NR>
void kern_generic(int64_t kc, const T* a, const T* b, T* c, int64_t ldc, int accumulate) {
  T acc[MR][NR] = {};
  for (int64_t k = 0; k < kc; k++) {
    for (int r = 0; r < MR; r++) {
      const T ar = a[r];
      for (int j = 0; j < NR; j++) acc[r][j] += ar * b[j];
    }
    a += MR;
    b += NR;
  }
  for (int r = 0; r < MR; r++)
    for (int j = 0; j < NR; j++) c[r * ldc + j] = accumulate ? c[r * ldc + j] + acc[r][j] : acc[r][j];
}

}  // namespace
}  // namespace sift::cpu::detail

#ifdef SIFT_GEMM_X86
// ---------------------------------------------------------------------------------- AVX-512
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
namespace sift::cpu::detail {
namespace {

struct V512f {
  using V = __m512;
  using E = float;
  static constexpr int W = 16;
  static SIFT_AI V zero() { return _mm512_setzero_ps(); }
  static SIFT_AI V load(const E* p) { return _mm512_loadu_ps(p); }
  static SIFT_AI V bcast(E x) { return _mm512_set1_ps(x); }
  static SIFT_AI V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static SIFT_AI V add(V a, V b) { return _mm512_add_ps(a, b); }
  static SIFT_AI void store(E* p, V v) { _mm512_storeu_ps(p, v); }
};
struct V512d {
  using V = __m512d;
  using E = double;
  static constexpr int W = 8;
  static SIFT_AI V zero() { return _mm512_setzero_pd(); }
  static SIFT_AI V load(const E* p) { return _mm512_loadu_pd(p); }
  static SIFT_AI V bcast(E x) { return _mm512_set1_pd(x); }
  static SIFT_AI V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static SIFT_AI V add(V a, V b) { return _mm512_add_pd(a, b); }
  static SIFT_AI void store(E* p, V v) { _mm512_storeu_pd(p, v); }
};

#define SIFT_GEMM_KERNEL kern512
#include "gemm_microkernel.h"
#undef SIFT_GEMM_KERNEL

void k512_f32(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int accumulate) {
  kern512<V512f, 12, 2>(kc, a, b, c, ldc, accumulate);
}
void k512_f64(int64_t kc, const double* a, const double* b, double* c, int64_t ldc, int accumulate) {
  kern512<V512d, 12, 2>(kc, a, b, c, ldc, accumulate);
}

}  // namespace
}  // namespace sift::cpu::detail
#pragma GCC pop_options

// ---------------------------------------------------------------------------------- AVX2 + FMA
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace sift::cpu::detail {
namespace {

struct V256f {
  using V = __m256;
  using E = float;
  static constexpr int W = 8;
  static SIFT_AI V zero() { return _mm256_setzero_ps(); }
  static SIFT_AI V load(const E* p) { return _mm256_loadu_ps(p); }
  static SIFT_AI V bcast(E x) { return _mm256_set1_ps(x); }
  static SIFT_AI V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static SIFT_AI V add(V a, V b) { return _mm256_add_ps(a, b); }
  static SIFT_AI void store(E* p, V v) { _mm256_storeu_ps(p, v); }
};
struct V256d {
  using V = __m256d;
  using E = double;
  static constexpr int W = 4;
  static SIFT_AI V zero() { return _mm256_setzero_pd(); }
  static SIFT_AI V load(const E* p) { return _mm256_loadu_pd(p); }
  static SIFT_AI V bcast(E x) { return _mm256_set1_pd(x); }
  static SIFT_AI V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static SIFT_AI V add(V a, V b) { return _mm256_add_pd(a, b); }
  static SIFT_AI void store(E* p, V v) { _mm256_storeu_pd(p, v); }
};

// 16 ymm registers: 6 x 2 accumulators, 2 B vectors, 1 broadcast.
#define SIFT_GEMM_KERNEL kern256
#include "gemm_microkernel.h"
#undef SIFT_GEMM_KERNEL

void k256_f32(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int accumulate) {
  kern256<V256f, 6, 2>(kc, a, b, c, ldc, accumulate);
}
void k256_f64(int64_t kc, const double* a, const double* b, double* c, int64_t ldc, int accumulate) {
  kern256<V256d, 6, 2>(kc, a, b, c, ldc, accumulate);
}

}  // namespace
}  // namespace sift::cpu::detail
#pragma GCC pop_options
#endif  // SIFT_GEMM_X86

namespace sift::cpu::detail {

const KernelSet* kernels_generic() {
  static const KernelSet k{{4, 16, &kern_generic<float, 4, 16>, "generic 4x16"},
                           {4, 8, &kern_generic<double, 4, 8>, "generic 4x8"}};
  return &k;
}

#ifdef SIFT_GEMM_X86
const KernelSet* kernels_avx512() {
  if (!__builtin_cpu_supports("avx512f")) return nullptr;
  static const KernelSet k{{12, 32, &k512_f32, "avx512 12x32"}, {12, 16, &k512_f64, "avx512 12x16"}};
  return &k;
}
const KernelSet* kernels_avx2() {
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return nullptr;
  static const KernelSet k{{6, 16, &k256_f32, "avx2 6x16"}, {6, 8, &k256_f64, "avx2 6x8"}};
  return &k;
}
#else
const KernelSet* kernels_avx512() { return nullptr; }
const KernelSet* kernels_avx2() { return nullptr; }
#endif

}  // namespace sift::cpu::detail
