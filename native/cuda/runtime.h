// Host-side view of the CUDA backend, callable from plain C++ (no CUDA headers needed).
// Built from runtime.cu when the addon is compiled with CUDA, else from runtime_stub.cpp, whose
// functions report CUDA as not compiled in and throw E_DEVICE when asked for device work.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace sift::cuda {

struct DeviceInfo {
  std::string name;
  int major = 0, minor = 0;
  int multiprocessors = 0;
  size_t total_memory = 0;
  size_t free_memory = 0;
  // Empty when this binary has code the device can run; else why not (the CUDA error's words).
  std::string kernel_image_error;
};

// The facts behind status(), for a message a user can act on (lib/engine/cuda-status.ts words it).
struct Probe {
  bool compiled = false;
  int driver_version = 0;   // cudaDriverGetVersion: newest CUDA the driver supports (0: no driver)
  int runtime_version = 0;  // cudaRuntimeGetVersion: the statically linked runtime
  std::string error;        // cudaGetDeviceCount's error name, empty on success
  std::string error_text;   // and its description
  int device_count = 0;
  std::string archs;  // the CUDA architectures compiled in, CMake syntax with ',' ("75-real,...,90")
};

struct AllocatorStats {
  size_t allocated = 0;  // bytes in live blocks
  size_t reserved = 0;   // bytes held from cudaMalloc (live + cached)
  size_t peak_allocated = 0;
  size_t cuda_mallocs = 0;
};

bool compiled();       // the addon was built with the CUDA backend
bool available();      // compiled, a driver is present and at least one device exists
std::string status();  // why CUDA is or is not available, in words
int device_count();
DeviceInfo device_info(int device);
std::string runtime_version();
Probe probe_info();

// Caching allocator (stream-ordered on the single stream of each device).
void* alloc(int device, size_t nbytes);
void release(int device, void* ptr, size_t nbytes);
void empty_cache(int device);
AllocatorStats allocator_stats(int device);
void reset_peak(int device);

void set_device(int device);
void* stream(int device);      // cudaStream_t of the device's compute stream
void synchronize(int device);  // waits for the stream; throws E_CUDA on a sticky kernel error
void check_last_error(const char* what);

// Copies. Host-to-device and device-to-host are synchronous with respect to the host buffer.
// copy_h2d of up to 16 MiB returns without waiting for the stream: the bytes go through a pinned
// staging block (reused once the copy out of it has run), so uploading a batch does not wait for
// the previous step's kernels.
void copy_h2d(int device, void* dst, const void* src, size_t nbytes);
void copy_d2h(int device, void* dst, const void* src, size_t nbytes);
void copy_d2d(int device, void* dst, const void* src, size_t nbytes);  // async on the stream
// Device-to-host without waiting for the compute stream: for memory whose writers the caller has
// already waited for (a fence after them); work queued since keeps running.
void copy_d2h_settled(int device, void* dst, const void* src, size_t nbytes);
void memset_async(int device, void* dst, int value, size_t nbytes);

// Device-side error flag for data-dependent checks (e.g. an index out of range in a kernel):
// kernels set it; synchronize() and fence_wait() read it and throw E_INDEX (once: they clear it).
int* error_flag(int device);

// Fences: fence_record marks the work queued on the device's stream so far (an event, recorded
// without waiting); fence_wait blocks the calling thread (an async worker, not JavaScript) until
// the stream has passed it, then recycles the event. Errors of the kernels before it are thrown,
// the device error flag's E_INDEX included.
uint64_t fence_record(int device);
void fence_wait(int device, uint64_t fence);

// Timing events on a device's compute stream (for profiling: device time of the work queued
// between two records, without synchronising in between). event_record returns an id into the
// device's event pool; event_elapsed_ms waits for the later event; events_reset recycles the pool.
int event_record(int device);
float event_elapsed_ms(int device, int start, int end);
void events_reset(int device);

// CUDA graphs of fixed-shape work on the device's stream. graph_begin starts capturing (kernels are
// recorded, not run); graph_end(keep) instantiates the graph (keep) or drops it (a failed step: a capture the failure
// invalidated adds no error of its own); graph_launch replays it; graph_destroy frees it. Memory the captured work
// allocates or releases stays with the graph until it is destroyed (never reused by other work in between); host bytes
// uploaded while capturing are kept and uploaded again by every replay. Waiting for the device,
// reading device data, fences, timing events and (from the capturing thread) work on another device
// throw E_UNSUPPORTED while capturing. One graph per device
// at a time (a new shape: destroy, then capture again).
struct GraphStats {
  size_t graphs = 0;  // instantiated graphs held
  bool capturing = false;
  size_t pool_bytes = 0;  // device bytes that belong to graphs
};
uint64_t graph_begin(int device);
void graph_end(int device, bool keep);
void graph_launch(int device, uint64_t id);
void graph_destroy(int device, uint64_t id);
GraphStats graph_stats(int device);

// Which GEMM library the CUDA backend uses: "cublas (<path>)" when libcublas was loaded at run
// time, else "sift-ft kernel".
std::string gemm_library();
// Whether CUDA GEMMs fuse their epilogues: the cuBLASLt path is selected and libcublasLt loaded.
bool gemm_epilogues_fused();
// setCudaGemm: 'auto' (cuBLAS when loaded), 'kernel' (sift-ft's GEMM kernel) or 'lt' (cuBLASLt with
// fused epilogues when loaded); returns the previous.
std::string set_gemm_path(const std::string& which);

// Communication streams (comm_stream.cu): one more stream per device, on which a process group
// launches its collectives, ordered with the compute stream by events, so that a gradient bucket
// is reduced while later kernels of the backward run. Events are returned as opaque pointers
// (cudaEvent_t) for plain C++ callers.
void* comm_stream(int device);
void comm_wait_compute(int device);                // the comm stream waits for the compute stream's work so far
void* comm_record(int device);                     // a new event recorded on the comm stream (free it with event_free)
void compute_wait_event(int device, void* event);  // the compute stream waits for the event
bool event_query(void* event);                     // whether the event has passed (E_CUDA on an error)
void event_free(void* event);

}  // namespace sift::cuda
