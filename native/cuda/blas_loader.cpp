// cuBLAS, loaded at run time (dlopen) so that one binary, built where the toolkit has no cuBLAS
// headers or libraries, still uses it on a machine that has it. The few types and entry points
// used are declared here from the public cuBLAS API; data types come from library_types.h.
#include <library_types.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "../core/dl_loader.h"
#include "../core/error.h"
#include "gemm.h"
#include "runtime.h"

namespace sift::cuda {
namespace {

// From cublas_api.h (stable across cuBLAS 11-13).
using cublasHandle_t = void*;
using cublasStatus_t = int;
constexpr int CUBLAS_OP_N = 0, CUBLAS_OP_T = 1;
constexpr int CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_64F = 70;
constexpr int CUBLAS_GEMM_DEFAULT = -1;

using CreateFn = cublasStatus_t (*)(cublasHandle_t*);
using SetStreamFn = cublasStatus_t (*)(cublasHandle_t, void* /* cudaStream_t */);
using SetWorkspaceFn = cublasStatus_t (*)(cublasHandle_t, void*, size_t);
using GemmStridedBatchedExFn = cublasStatus_t (*)(cublasHandle_t, int transa, int transb, int m, int n, int k,
                                                  const void* alpha, const void* A, cudaDataType Atype, int lda,
                                                  long long strideA, const void* B, cudaDataType Btype, int ldb,
                                                  long long strideB, const void* beta, void* C, cudaDataType Ctype,
                                                  int ldc, long long strideC, int batchCount, int computeType,
                                                  int algo);

struct Cublas {
  CreateFn create = nullptr;
  SetStreamFn set_stream = nullptr;
  SetWorkspaceFn set_workspace = nullptr;  // optional (cuBLAS 11.2+)
  GemmStridedBatchedExFn gemm = nullptr;
  std::string path;
};

std::mutex g_mu;
Cublas* g_lib = nullptr;
std::vector<cublasHandle_t> g_handles;  // per device, bound to that device's stream

// Where libcublas may be: SIFT_FT_CUBLAS (a file) first, then the loader's own search (sonames),
// then toolkit folders that are often missing from it (CUDA_HOME, /usr/local/cuda*), so a machine
// whose toolkit is not on the library path still gets cuBLAS rather than the fallback kernel.
Cublas* load() {
  static std::once_flag once;
  std::call_once(once, [] {
    auto* lib = new Cublas();  // lives as long as the process, like the loaded library
    dl::Places places;
    places.file = std::getenv("SIFT_FT_CUBLAS");
    places.names = {"libcublas.so.13", "libcublas.so.12", "libcublas.so"};
    places.dirs =
        dl::cuda_dirs({"/usr/local/cuda", "/usr/local/cuda-13.0", "/usr/local/cuda-13", "/usr/local/cuda-12"});
    dl::Loaded l = dl::open_first(
        dl::candidates(places),
        {dl::need("cublasCreate_v2", lib->create), dl::need("cublasSetStream_v2", lib->set_stream),
         dl::need("cublasGemmStridedBatchedEx", lib->gemm), dl::want("cublasSetWorkspace_v2", lib->set_workspace)});
    if (!l.handle) {
      delete lib;
      return;
    }
    lib->path = l.path;
    g_lib = lib;
  });
  return g_lib;
}

// The GEMM path: cuBLAS when loaded ('auto'), always sift-ft's kernel ('kernel'), or cuBLASLt with
// fused epilogues where libcublasLt loads ('lt', cuBLAS otherwise). Starts from SIFT_FT_NO_CUBLAS=1
// (kernel) or SIFT_FT_CUBLASLT=1 (lt); setCudaGemm() switches it at run time (tests and the GEMM
// bench compare the paths in one process; a jest worker's process.env does not reach getenv).
enum Path : int { kAuto = 0, kKernel = 1, kLt = 2 };
bool on(const char* value) { return value && *value && std::strcmp(value, "0") != 0; }
int initial_path() {
  if (on(std::getenv("SIFT_FT_NO_CUBLAS"))) return kKernel;
  return on(std::getenv("SIFT_FT_CUBLASLT")) ? kLt : kAuto;
}
std::atomic<int> g_path{initial_path()};
bool disabled_by_env() { return g_path.load() == kKernel; }

// cuBLAS's recommended workspace: 32 MiB on Hopper and later, 4 MiB before (cublasSetWorkspace
// in the cuBLAS reference); without one given, some Hopper GEMM kernels are not eligible. Taken
// from the caching allocator once per device (so it counts in peak memory) and kept with the handle.
size_t workspace_bytes(int device) { return device_info(device).major >= 9 ? (size_t(32) << 20) : (size_t(4) << 20); }

cublasHandle_t handle(int device) {
  std::lock_guard<std::mutex> lk(g_mu);
  if (int(g_handles.size()) <= device) g_handles.resize(device + 1, nullptr);
  if (!g_handles[device]) {
    set_device(device);
    cublasHandle_t h = nullptr;
    cublasStatus_t st = g_lib->create(&h);
    SIFT_CHECK(st == 0, "E_CUDA", "cublasCreate failed on cuda:", device, " (status ", st, ")");
    st = g_lib->set_stream(h, stream(device));
    SIFT_CHECK(st == 0, "E_CUDA", "cublasSetStream failed on cuda:", device, " (status ", st, ")");
    if (g_lib->set_workspace) {
      const size_t bytes = workspace_bytes(device);
      void* ws = alloc(device, bytes);
      // A failure here only costs speed: cuBLAS keeps its own default workspace.
      if (g_lib->set_workspace(h, ws, bytes) != 0) release(device, ws, bytes);
    }
    g_handles[device] = h;
  }
  return g_handles[device];
}

cudaDataType cuda_type(DType t) {
  switch (t) {
    case DType::F32:
      return CUDA_R_32F;
    case DType::F64:
      return CUDA_R_64F;
    case DType::F16:
      return CUDA_R_16F;
    case DType::BF16:
      return CUDA_R_16BF;
    default:
      fail("E_DTYPE", "matmul: cuBLAS got a non-float dtype ", dtype_name(t));
  }
}

}  // namespace

bool cublas_enabled() { return !disabled_by_env() && load() != nullptr; }

void cublas_gemm(int device, DType dtype, bool trans_a, bool trans_b, int m, int n, int k, const void* A, int lda,
                 long long stride_a, const void* B, int ldb, long long stride_b, void* C, int ldc, long long stride_c,
                 int batch) {
  cublasHandle_t h = handle(device);
  const cudaDataType t = cuda_type(dtype);
  const double one_d = 1.0, zero_d = 0.0;
  const float one_f = 1.0f, zero_f = 0.0f;
  const bool f64 = dtype == DType::F64;
  cublasStatus_t st = g_lib->gemm(h, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k,
                                  f64 ? static_cast<const void*>(&one_d) : &one_f, A, t, lda, stride_a, B, t, ldb,
                                  stride_b, f64 ? static_cast<const void*>(&zero_d) : &zero_f, C, t, ldc, stride_c,
                                  batch, f64 ? CUBLAS_COMPUTE_64F : CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  SIFT_CHECK(st == 0, "E_CUDA", "cublasGemmStridedBatchedEx failed on cuda:", device, " (status ", st, ", m=", m,
             " n=", n, " k=", k, ", batch ", batch, ")");
}

bool cublaslt_enabled() { return g_path.load() == kLt && cublaslt_loaded(); }

bool gemm_epilogues_fused() { return cublaslt_enabled(); }

std::string set_gemm_path(const std::string& which) {
  SIFT_CHECK(which == "auto" || which == "kernel" || which == "lt", "E_ARG",
             "setCudaGemm: expected 'auto' (cuBLAS when loaded), 'kernel' (sift-ft's GEMM kernel) or 'lt' (cuBLASLt "
             "with fused epilogues when loaded), got '",
             which, "'");
  const int prev = g_path.exchange(which == "kernel" ? kKernel : which == "lt" ? kLt : kAuto);
  return prev == kKernel ? "kernel" : prev == kLt ? "lt" : "auto";
}

std::string gemm_library() {
  if (disabled_by_env()) return "sift-ft kernel (cuBLAS disabled by SIFT_FT_NO_CUBLAS or setCudaGemm('kernel'))";
  if (g_path.load() == kLt && cublaslt_loaded()) return "cublasLt (" + cublaslt_library() + ")";
  if (Cublas* lib = load()) return "cublas (" + lib->path + ")";
  return "sift-ft kernel";
}

}  // namespace sift::cuda
