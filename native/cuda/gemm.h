// CUDA matrix products, callable from plain C++: cuBLAS (loaded at run time by blas_loader.cpp)
// when present, else sift-ft's tiled kernel (gemm.cu). SIFT_FT_NO_CUBLAS=1 forces the kernel.
#pragma once
#include <cstdint>
#include <string>

#include "../core/tensor.h"
#include "../ops/gemm_plan.h"
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

// cuBLASLt (blaslt_loader.cpp): loaded, and selected by setCudaGemm('lt') or SIFT_FT_CUBLASLT=1.
bool cublaslt_loaded();
bool cublaslt_enabled();
std::string cublaslt_library();
// One planned cublasLtMatmul on the device's stream (D = op(A) op(B) with the plan's epilogue; bias:
// the bias, or where the bias gradient goes; aux: where the GELU input goes). False when no
// algorithm fits the plan (the heuristic's answer is cached): the caller takes the unfused path.
bool cublaslt_matmul(int device, DType dtype, const LtPlan& plan, const void* A, const void* B, void* D,
                     const void* bias, void* aux);

}  // namespace sift::cuda
