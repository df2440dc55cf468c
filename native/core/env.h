// Every environment variable the native code reads, with what it does. docs/environment.md says the
// same for users; test/package/env-registry.test.ts checks that each std::getenv under native/ is
// listed here and documented there. Prefer options and native setters to new variables.
#pragma once

namespace sift::env {

struct Var {
  const char* name;
  const char* doc;
};

inline constexpr Var kVars[] = {
    {"SIFT_FT_NUM_THREADS", "CPU threads of the kernel thread pool (default: all cores)"},
    {"SIFT_FT_CPU_SYNC", "1: run CPU ops inline on the calling thread instead of the executor (debugging)"},
    {"SIFT_FT_CPU_QUEUE", "how many CPU ops JavaScript may queue ahead of the executor (default 4096)"},
    {"SIFT_FT_CPU_GEMM", "native | openblas: the CPU GEMM (OpenBLAS only where libopenblas.so loads)"},
    {"SIFT_FT_NO_CUBLAS", "1: sift-ft's own CUDA GEMM kernel even where cuBLAS loads (setCudaGemm at run time)"},
    {"SIFT_FT_CUBLASLT",
     "1: CUDA GEMMs through cuBLASLt with fused bias/GELU/bias-gradient epilogues where libcublasLt loads "
     "(setCudaGemm('lt') at run time; default: cuBLAS)"},
    {"SIFT_FT_CUBLAS", "path of the libcublas.so to load (default: the loader's path, CUDA_HOME, /usr/local/cuda*)"},
    {"CUDA_HOME", "a CUDA toolkit folder searched for libcublas.so, libcublasLt.so and libnccl.so"},
    {"CUDA_PATH", "same as CUDA_HOME"},
    {"SIFT_FT_NCCL",
     "path of the libnccl.so to load for CUDA process groups (default: the loader's path, CUDA_HOME, PyTorch's "
     "nvidia/nccl)"},
    {"VIRTUAL_ENV", "a Python environment whose site-packages/nvidia/nccl is searched for libnccl.so"},
    {"CONDA_PREFIX", "same as VIRTUAL_ENV"},
    {"HOME", "~/.local/lib/python3*/site-packages/nvidia/nccl is searched for libnccl.so"},
    {"SIFT_FT_CUDA_ATTENTION", "simt: CUDA attention on CUDA cores only (the fallback when tensor-core kernels fail)"},
    {"SIFT_FT_CUDA_SELECT", "bracket: the bracket top-k kernels on CUDA (default radix; setCudaSelect at run time)"},
    {"SIFT_FT_CUDA_SPARSE_ADAMW",
     "prefetch: the sparse AdamW kernel that fetches weight sectors into L2 first (default rounds; "
     "setCudaSparseAdamW)"},
    {"SIFT_FT_CUDA_QUANT_GEMM",
     "fused: quantized linear layers dequantize inside the GEMM's tiles on CUDA (default tiles: dequantized tiles "
     "in memory, then the GEMM)"},
};

}  // namespace sift::env
