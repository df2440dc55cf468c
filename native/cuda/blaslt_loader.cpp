// cuBLASLt, loaded at run time (dlopen) like cuBLAS (blas_loader.cpp): one binary, built where the
// toolkit has no cuBLAS headers, uses it where libcublasLt is installed. The types, enum values and
// entry points used are declared here by hand from the public cublasLt.h (CUDA 12.6, as mirrored in
// the public repository zspace/system.cuda-12.6, include/cublasLt.h; the same values in cuBLAS 13).
//
// A matmul descriptor, its four matrix layouts and the algorithm cublasLtMatmulAlgoGetHeuristic
// picks are built once per shape, dtype, epilogue and pointer alignment, and cached per device; the
// workspace (32 MiB on Hopper, 4 MiB before) is taken once per device from the caching allocator.
#include <library_types.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "../core/dl_loader.h"
#include "../core/error.h"
#include "gemm.h"
#include "runtime.h"

namespace sift::cuda {
namespace {

// cublasLt.h / cublas_api.h declarations (opaque handles are pointers).
using cublasStatus_t = int;
using LtHandle = void*;
using LtMatmulDesc = void*;
using LtLayout = void*;
using LtPreference = void*;
struct LtAlgo {
  uint64_t data[8];
};
struct LtHeuristicResult {  // cublasLtMatmulHeuristicResult_t
  LtAlgo algo;
  size_t workspace_size;
  cublasStatus_t state;
  float waves_count;
  int reserved[4];
};
constexpr int CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_64F = 70;  // cublasComputeType_t
constexpr int CUBLAS_OP_N = 0, CUBLAS_OP_T = 1;
// cublasLtMatmulDescAttributes_t
constexpr int DESC_TRANSA = 3, DESC_TRANSB = 4, DESC_EPILOGUE = 7, DESC_BIAS_POINTER = 8, DESC_AUX_POINTER = 11,
              DESC_AUX_LD = 12;
// cublasLtMatrixLayoutAttribute_t
constexpr int LAYOUT_BATCH_COUNT = 5, LAYOUT_STRIDED_BATCH_OFFSET = 6;
// cublasLtMatmulPreferenceAttributes_t
constexpr int PREF_MAX_WORKSPACE_BYTES = 1, PREF_MIN_ALIGNMENT_A_BYTES = 5, PREF_MIN_ALIGNMENT_B_BYTES = 6,
              PREF_MIN_ALIGNMENT_C_BYTES = 7, PREF_MIN_ALIGNMENT_D_BYTES = 8;

using CreateFn = cublasStatus_t (*)(LtHandle*);
using DescCreateFn = cublasStatus_t (*)(LtMatmulDesc*, int compute_type, cudaDataType scale_type);
using DescSetFn = cublasStatus_t (*)(LtMatmulDesc, int attr, const void* buf, size_t size);
using LayoutCreateFn = cublasStatus_t (*)(LtLayout*, cudaDataType type, uint64_t rows, uint64_t cols, int64_t ld);
using LayoutSetFn = cublasStatus_t (*)(LtLayout, int attr, const void* buf, size_t size);
using PrefCreateFn = cublasStatus_t (*)(LtPreference*);
using PrefSetFn = cublasStatus_t (*)(LtPreference, int attr, const void* buf, size_t size);
using PrefDestroyFn = cublasStatus_t (*)(LtPreference);
using HeuristicFn = cublasStatus_t (*)(LtHandle, LtMatmulDesc, LtLayout, LtLayout, LtLayout, LtLayout, LtPreference,
                                       int requested, LtHeuristicResult* results, int* returned);
using MatmulFn = cublasStatus_t (*)(LtHandle, LtMatmulDesc, const void* alpha, const void* A, LtLayout, const void* B,
                                    LtLayout, const void* beta, const void* C, LtLayout, void* D, LtLayout,
                                    const LtAlgo* algo, void* workspace, size_t workspace_size,
                                    void* /* cudaStream_t */ stream);

struct CublasLt {
  CreateFn create = nullptr;
  DescCreateFn desc_create = nullptr;
  DescSetFn desc_set = nullptr;
  LayoutCreateFn layout_create = nullptr;
  LayoutSetFn layout_set = nullptr;
  PrefCreateFn pref_create = nullptr;
  PrefSetFn pref_set = nullptr;
  PrefDestroyFn pref_destroy = nullptr;
  HeuristicFn heuristic = nullptr;
  MatmulFn matmul = nullptr;
  std::string path;
};

CublasLt* g_lt = nullptr;

// Beside the libcublas that SIFT_FT_CUBLAS names, if any (the two come from one toolkit), then the
// loader's own search, then the toolkit folders, as for cuBLAS.
CublasLt* load() {
  static std::once_flag once;
  std::call_once(once, [] {
    dl::Places places;
    places.names = {"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"};
    if (const char* e = std::getenv("SIFT_FT_CUBLAS"); e && *e) {
      const std::string file(e);
      const size_t slash = file.rfind('/');
      if (slash != std::string::npos) places.dirs.push_back(file.substr(0, slash));
    }
    std::vector<std::string> list;
    for (const auto& d : places.dirs)
      for (const auto& n : places.names) list.push_back(d + "/" + n);
    places.dirs =
        dl::cuda_dirs({"/usr/local/cuda", "/usr/local/cuda-13.0", "/usr/local/cuda-13", "/usr/local/cuda-12"});
    for (const auto& c : dl::candidates(places)) list.push_back(c);
    auto* lib = new CublasLt();  // lives as long as the process, like the loaded library
    dl::Loaded l = dl::open_first(
        list, {dl::need("cublasLtCreate", lib->create), dl::need("cublasLtMatmulDescCreate", lib->desc_create),
               dl::need("cublasLtMatmulDescSetAttribute", lib->desc_set),
               dl::need("cublasLtMatrixLayoutCreate", lib->layout_create),
               dl::need("cublasLtMatrixLayoutSetAttribute", lib->layout_set),
               dl::need("cublasLtMatmulPreferenceCreate", lib->pref_create),
               dl::need("cublasLtMatmulPreferenceSetAttribute", lib->pref_set),
               dl::need("cublasLtMatmulPreferenceDestroy", lib->pref_destroy),
               dl::need("cublasLtMatmulAlgoGetHeuristic", lib->heuristic), dl::need("cublasLtMatmul", lib->matmul)});
    if (!l.handle) {
      delete lib;
      return;
    }
    lib->path = l.path;
    g_lt = lib;
  });
  return g_lt;
}

// One cached plan: descriptors built once; `algo_found` false when the heuristic had nothing for
// this shape and epilogue (the caller then takes the unfused path, every time, without asking again).
struct Entry {
  LtMatmulDesc desc = nullptr;
  LtLayout a = nullptr, b = nullptr, c = nullptr;
  LtAlgo algo{};
  bool algo_found = false;
};

struct DeviceLt {
  LtHandle handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  std::map<std::vector<int64_t>, Entry> plans;
};

std::mutex g_mu;
std::vector<DeviceLt> g_devices;

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
      fail("E_DTYPE", "matmul: cuBLASLt got a non-float dtype ", dtype_name(t));
  }
}

// Largest power of two (up to 256 bytes) dividing the address and, for a strided batch, the batch
// stride in bytes (every matrix of the batch starts that aligned). The heuristic never sees the A, B,
// C and D pointers: it assumes 256-byte alignment unless told less (PREF_MIN_ALIGNMENT_*), and an
// algorithm chosen for aligned operands fails (or faults) on a view that starts mid-vector. So the
// alignment is passed to the heuristic, and plans are cached per alignment class.
uint32_t align_of(const void* p, int64_t stride_bytes = 0) {
  const auto v = reinterpret_cast<uintptr_t>(p) | uintptr_t(stride_bytes < 0 ? -stride_bytes : stride_bytes);
  uint32_t a = 256;
  while (a > 1 && v % a != 0) a /= 2;
  return a;
}

DeviceLt& device_lt(int device) {
  if (int(g_devices.size()) <= device) g_devices.resize(device + 1);
  DeviceLt& d = g_devices[device];
  if (!d.handle) {
    set_device(device);
    const cublasStatus_t st = g_lt->create(&d.handle);
    SIFT_CHECK(st == 0, "E_CUDA", "cublasLtCreate failed on cuda:", device, " (status ", st, ")");
    // cuBLAS's recommended workspace: 32 MiB on Hopper and later, 4 MiB before.
    d.workspace_bytes = device_info(device).major >= 9 ? (size_t(32) << 20) : (size_t(4) << 20);
    d.workspace = alloc(device, d.workspace_bytes);
  }
  return d;
}

void check(cublasStatus_t st, const char* what, int device) {
  SIFT_CHECK(st == 0, "E_CUDA", what, " failed on cuda:", device, " (cuBLASLt status ", st, ")");
}

// Alignments of the A, B and D (= C) operands, as the plan's call passes them.
struct Alignment {
  uint32_t a, b, d;
};

Entry build(DeviceLt& d, int device, DType dtype, const LtPlan& p, const void* bias, void* aux, Alignment al) {
  Entry e;
  const cudaDataType t = cuda_type(dtype);
  const bool f64 = dtype == DType::F64;
  check(g_lt->desc_create(&e.desc, f64 ? CUBLAS_COMPUTE_64F : CUBLAS_COMPUTE_32F, f64 ? CUDA_R_64F : CUDA_R_32F),
        "cublasLtMatmulDescCreate", device);
  const int32_t ta = p.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int32_t epi = p.epilogue;
  check(g_lt->desc_set(e.desc, DESC_TRANSA, &ta, sizeof(ta)), "cublasLtMatmulDescSetAttribute", device);
  check(g_lt->desc_set(e.desc, DESC_TRANSB, &tb, sizeof(tb)), "cublasLtMatmulDescSetAttribute", device);
  check(g_lt->desc_set(e.desc, DESC_EPILOGUE, &epi, sizeof(epi)), "cublasLtMatmulDescSetAttribute", device);
  if (p.extra_len > 0) check(g_lt->desc_set(e.desc, DESC_BIAS_POINTER, &bias, sizeof(bias)), "bias pointer", device);
  if (p.aux_ld > 0) {
    const int64_t ld = p.aux_ld;
    check(g_lt->desc_set(e.desc, DESC_AUX_POINTER, &aux, sizeof(aux)), "aux pointer", device);
    check(g_lt->desc_set(e.desc, DESC_AUX_LD, &ld, sizeof(ld)), "aux ld", device);
  }
  check(g_lt->layout_create(&e.a, t, uint64_t(p.a_rows), uint64_t(p.a_cols), p.lda), "cublasLtMatrixLayoutCreate",
        device);
  check(g_lt->layout_create(&e.b, t, uint64_t(p.b_rows), uint64_t(p.b_cols), p.ldb), "cublasLtMatrixLayoutCreate",
        device);
  check(g_lt->layout_create(&e.c, t, uint64_t(p.m), uint64_t(p.n), p.ldc), "cublasLtMatrixLayoutCreate", device);
  if (p.batch > 1) {
    const int32_t count = int32_t(p.batch);
    const int64_t strides[3] = {p.stride_a, p.stride_b, p.stride_c};
    LtLayout layouts[3] = {e.a, e.b, e.c};
    for (int i = 0; i < 3; i++) {
      check(g_lt->layout_set(layouts[i], LAYOUT_BATCH_COUNT, &count, sizeof(count)), "batch count", device);
      check(g_lt->layout_set(layouts[i], LAYOUT_STRIDED_BATCH_OFFSET, &strides[i], sizeof(strides[i])), "batch stride",
            device);
    }
  }
  LtPreference pref = nullptr;
  check(g_lt->pref_create(&pref), "cublasLtMatmulPreferenceCreate", device);
  const uint64_t ws = d.workspace_bytes;
  check(g_lt->pref_set(pref, PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)), "workspace preference", device);
  check(g_lt->pref_set(pref, PREF_MIN_ALIGNMENT_A_BYTES, &al.a, sizeof(al.a)), "alignment preference", device);
  check(g_lt->pref_set(pref, PREF_MIN_ALIGNMENT_B_BYTES, &al.b, sizeof(al.b)), "alignment preference", device);
  check(g_lt->pref_set(pref, PREF_MIN_ALIGNMENT_C_BYTES, &al.d, sizeof(al.d)), "alignment preference", device);
  check(g_lt->pref_set(pref, PREF_MIN_ALIGNMENT_D_BYTES, &al.d, sizeof(al.d)), "alignment preference", device);
  LtHeuristicResult result{};
  int returned = 0;
  const cublasStatus_t st = g_lt->heuristic(d.handle, e.desc, e.a, e.b, e.c, e.c, pref, 1, &result, &returned);
  g_lt->pref_destroy(pref);
  e.algo_found = st == 0 && returned > 0 && result.state == 0;
  if (e.algo_found) e.algo = result.algo;
  return e;
}

}  // namespace

bool cublaslt_loaded() { return load() != nullptr; }

std::string cublaslt_library() {
  CublasLt* lib = load();
  return lib ? lib->path : "";
}

bool cublaslt_matmul(int device, DType dtype, const LtPlan& p, const void* A, const void* B, void* D, const void* bias,
                     void* aux) {
  if (!p.ok || !load()) return false;
  // cuBLASLt launches on the calling thread's current device, which may be another one.
  set_device(device);
  std::lock_guard<std::mutex> lk(g_mu);
  DeviceLt& d = device_lt(device);
  const int64_t es = int64_t(dtype_size(dtype));
  const bool batched = p.batch > 1;
  const Alignment al{align_of(A, batched ? p.stride_a * es : 0), align_of(B, batched ? p.stride_b * es : 0),
                     align_of(D, batched ? p.stride_c * es : 0)};
  const std::vector<int64_t> key = {int64_t(dtype), p.trans_a,      p.trans_b,    p.a_rows,   p.a_cols, p.lda, p.b_rows,
                                    p.b_cols,       p.ldb,          p.m,          p.n,        p.k,      p.ldc, p.batch,
                                    p.stride_a,     p.stride_b,     p.stride_c,   p.epilogue, p.aux_ld, al.a,  al.b,
                                    al.d,           align_of(bias), align_of(aux)};
  auto it = d.plans.find(key);
  if (it == d.plans.end()) it = d.plans.emplace(key, build(d, device, dtype, p, bias, aux, al)).first;
  Entry& e = it->second;
  if (!e.algo_found) return false;
  // The cached descriptor carries the pointers of the call that built it: set this call's.
  if (p.extra_len > 0) check(g_lt->desc_set(e.desc, DESC_BIAS_POINTER, &bias, sizeof(bias)), "bias pointer", device);
  if (p.aux_ld > 0) check(g_lt->desc_set(e.desc, DESC_AUX_POINTER, &aux, sizeof(aux)), "aux pointer", device);
  const double one_d = 1.0, zero_d = 0.0;
  const float one_f = 1.0f, zero_f = 0.0f;
  const bool f64 = dtype == DType::F64;
  const void* alpha = f64 ? static_cast<const void*>(&one_d) : &one_f;
  const void* beta = f64 ? static_cast<const void*>(&zero_d) : &zero_f;
  const cublasStatus_t st = g_lt->matmul(d.handle, e.desc, alpha, A, e.a, B, e.b, beta, D, e.c, D, e.c, &e.algo,
                                         d.workspace, d.workspace_bytes, stream(device));
  SIFT_CHECK(st == 0, "E_CUDA", "cublasLtMatmul failed on cuda:", device, " (status ", st, ", m=", p.m, " n=", p.n,
             " k=", p.k, ", epilogue ", p.epilogue, ")");
  return true;
}

}  // namespace sift::cuda
