// CUDA matrix products, callable from plain C++: cuBLAS (loaded at run time by blas_loader.cpp)
// when present, else sift-ft's tiled kernel (gemm.cu). SIFT_FT_NO_CUBLAS=1 forces the kernel.
#pragma once
#include <cstdint>

#include "../core/tensor.h"
#include "../ops/matmul.h"

namespace sift::cuda {

// out = a @ b per the layout (see GemmLayout), queued on the device's stream.
void matmul(const Tensor& a, const Tensor& b, const Tensor& out, const GemmLayout& L);

// cuBLAS, when loaded and not disabled by SIFT_FT_NO_CUBLAS=1 (checked on every call, so tests
// can switch paths at run time).
bool cublas_enabled();
// Column-major strided-batched GEMM in cuBLAS terms (C = op(A) op(B)), f32 accumulation (f64 for
// f64), on the device's stream. Throws E_CUDA on a cuBLAS error.
void cublas_gemm(int device, DType dtype, bool trans_a, bool trans_b, int m, int n, int k, const void* A, int lda,
                 long long stride_a, const void* B, int ldb, long long stride_b, void* C, int ldc, long long stride_c,
                 int batch);

}  // namespace sift::cuda
