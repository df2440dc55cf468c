// CPU matrix products: a cache-blocked GEMM with packed panels and register-blocked microkernels
// (AVX-512 or AVX2+FMA chosen at run time, portable C++ otherwise), multi-threaded with
// parallel_for; OpenBLAS (dlopen'ed at run time, never needed to build) may be used instead.
// Choice: SIFT_FT_CPU_GEMM=auto|native|openblas, or setCpuGemm(); see gemm.cpp for 'auto'.
#pragma once
#include <cstdint>
#include <string>

#include "../core/tensor.h"
#include "../ops/matmul.h"

namespace sift::cpu {

// out = a @ b per the layout (see GemmLayout); f32, f64, f16, bf16 (f16/bf16 accumulate in f32).
void matmul(const Tensor& a, const Tensor& b, const Tensor& out, const GemmLayout& L);

// Raw single-matrix GEMMs for other CPU kernels: C (ldc row stride) = A @ B, or C += A @ B with
// accumulate. A(i, k) = A[i * rsa + k * csa], any strides. `parallel` lets it use the thread pool
// (it runs inline anyway when called from inside a parallel_for).
void gemm_f32(int64_t M, int64_t N, int64_t K, const float* A, int64_t rsa, int64_t csa, const float* B, int64_t rsb,
              int64_t csb, float* C, int64_t ldc, bool accumulate, bool parallel = true);
void gemm_f64(int64_t M, int64_t N, int64_t K, const double* A, int64_t rsa, int64_t csa, const double* B, int64_t rsb,
              int64_t csb, double* C, int64_t ldc, bool accumulate, bool parallel = true);

// Which implementation runs f32/f64 GEMMs now, in words ("sift-ft avx512 12x32 microkernel,
// 2 threads" or "openblas (/usr/lib/.../libopenblas.so.0)").
std::string gemm_info();
// 'auto' | 'native' | 'openblas', or 'native:avx512' | 'native:avx2' | 'native:generic' to force
// a microkernel (tests). Returns false (and changes nothing) when it cannot apply here; E_ARG on
// an unknown name.
bool set_gemm(const std::string& which);
// The SIMD level of the native microkernels ("avx512", "avx2", "generic").
std::string gemm_simd();

namespace detail {
// Register-blocked microkernel: computes the MR x NR tile of packed A (kc steps of MR values) times
// packed B (kc steps of NR values) and stores it to c (row stride ldc), or adds it when accumulate.
template <typename T>
struct MicroKernel {
  int mr = 0, nr = 0;
  void (*fn)(int64_t kc, const T* a, const T* b, T* c, int64_t ldc, int accumulate) = nullptr;
  const char* name = "";
};
struct KernelSet {
  MicroKernel<float> f32;
  MicroKernel<double> f64;
};
// Null where the CPU (or this build) lacks the ISA. Defined in gemm_kernels.cpp.
const KernelSet* kernels_avx512();
const KernelSet* kernels_avx2();
const KernelSet* kernels_generic();
}  // namespace detail

}  // namespace sift::cpu
