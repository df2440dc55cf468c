// Compiled only in CPU-only builds: the CUDA backend is absent.
#include "../core/error.h"
#include "runtime.h"

namespace sift::cuda {

namespace {
[[noreturn]] void not_built() {
  fail("E_DEVICE",
       "this build of sift-ft has no CUDA backend (built without nvcc or with "
       "SIFT_FT_CPU_ONLY=1); rebuild with the CUDA toolkit to use device 'cuda'");
}
}  // namespace

bool compiled() { return false; }
bool available() { return false; }
std::string status() { return "not compiled (CPU-only build)"; }
int device_count() { return 0; }
DeviceInfo device_info(int) { not_built(); }
std::string runtime_version() { return ""; }
Probe probe_info() { return {}; }
void* alloc(int, size_t) { not_built(); }
void release(int, void*, size_t) {}
void empty_cache(int) {}
AllocatorStats allocator_stats(int) { return {}; }
void reset_peak(int) {}
void set_device(int) { not_built(); }
void* stream(int) { not_built(); }
void synchronize(int) {}
void check_last_error(const char*) {}
void copy_h2d(int, void*, const void*, size_t) { not_built(); }
void copy_d2h(int, void*, const void*, size_t) { not_built(); }
void copy_d2h_settled(int, void*, const void*, size_t) { not_built(); }
void copy_d2d(int, void*, const void*, size_t) { not_built(); }
void memset_async(int, void*, int, size_t) { not_built(); }
int* error_flag(int) { not_built(); }
uint64_t fence_record(int) { not_built(); }
void fence_wait(int, uint64_t) { not_built(); }
int event_record(int) { not_built(); }
float event_elapsed_ms(int, int, int) { not_built(); }
void events_reset(int) {}
uint64_t graph_begin(int) { not_built(); }
void graph_end(int, bool) { not_built(); }
void graph_launch(int, uint64_t) { not_built(); }
void graph_destroy(int, uint64_t) {}
GraphStats graph_stats(int) { return {}; }
std::string gemm_library() { return "none"; }
bool gemm_epilogues_fused() { return false; }
std::string set_gemm_path(const std::string& which) {
  SIFT_CHECK(which == "auto" || which == "kernel" || which == "lt", "E_ARG",
             "setCudaGemm: expected 'auto' (cuBLAS when loaded), 'kernel' (sift-ft's GEMM kernel) or 'lt' (cuBLASLt "
             "with fused epilogues when loaded), got '",
             which, "'");
  return "auto";
}

void* comm_stream(int) { not_built(); }
void comm_wait_compute(int) { not_built(); }
void* comm_record(int) { not_built(); }
void compute_wait_event(int, void*) { not_built(); }
bool event_query(void*) { not_built(); }
void event_free(void*) {}

}  // namespace sift::cuda
