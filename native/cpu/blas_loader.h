// OpenBLAS loaded at run time with dlopen (libopenblas.so.0, then libopenblas.so): an optional
// CPU GEMM that needs nothing at build time. Only the CBLAS entry points sift-ft calls are bound.
#pragma once
#include <string>

namespace sift::cpu::blas {

// CBLAS constants (cblas.h): row-major order and transpose flags.
enum { kRowMajor = 101, kNoTrans = 111, kTrans = 112 };

struct OpenBlas {
  using Sgemm = void (*)(int order, int ta, int tb, int m, int n, int k, float alpha, const float* a, int lda,
                         const float* b, int ldb, float beta, float* c, int ldc);
  using Dgemm = void (*)(int order, int ta, int tb, int m, int n, int k, double alpha, const double* a, int lda,
                         const double* b, int ldb, double beta, double* c, int ldc);
  Sgemm sgemm = nullptr;
  Dgemm dgemm = nullptr;
  int (*get_num_threads)() = nullptr;
  std::string path;      // the file that was loaded
  std::string config;    // openblas_get_config(), when present
  std::string corename;  // openblas_get_corename(): the kernel family it picked for this CPU
};

// The loaded library, or nullptr when none could be loaded (tried once; thread-safe).
const OpenBlas* openblas();
// Why openblas() is null (for messages).
std::string openblas_error();

}  // namespace sift::cpu::blas
