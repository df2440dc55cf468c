// CUDA runtime pieces: device discovery, one compute stream per device, the caching allocator,
// copies, and the device error flag. Static cudart: the binary loads on machines without a
// driver and reports CUDA as unavailable there.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "check.cuh"
#include "runtime.h"

namespace sift::cuda {
namespace {

constexpr int kMaxDevices = 16;

struct DeviceState {
  bool ready = false;
  cudaStream_t stream = nullptr;
  int* error_flag = nullptr;
  // Caching allocator: free blocks by size; live blocks by pointer.
  std::multimap<size_t, void*> free_blocks;
  std::unordered_map<void*, size_t> live;
  AllocatorStats stats;
  // Timing events (event_record): created on demand, recycled by events_reset.
  std::vector<cudaEvent_t> events;
  size_t events_used = 0;
  // Fence events (fence_record): ids index `fences`; waited ones go back to `fences_free`.
  std::vector<cudaEvent_t> fences;
  std::vector<bool> fences_live;  // recorded and not yet waited for
  std::vector<uint64_t> fences_free;
  // Pinned staging blocks of copy_h2d; `done` is recorded after the copy out of the block.
  struct Staging {
    void* ptr = nullptr;
    size_t size = 0;
    cudaEvent_t done = nullptr;
    bool taken = false;
  };
  std::vector<Staging> staging;
  // CUDA graphs (graph_begin .. graph_end, graph_launch, graph_destroy). A block that a graph's
  // kernels may touch belongs to that graph's pool until the graph is destroyed: blocks allocated
  // while capturing, and blocks released while capturing (captured kernels read them at replay).
  // A pool block released outside capture goes back to the pool, never to the shared cache, so
  // eager work cannot reuse memory a replay writes. Host bytes uploaded while capturing are kept in
  // pinned buffers of the graph (a replay uploads the same bytes again).
  struct Graph {
    cudaGraphExec_t exec = nullptr;
    std::multimap<size_t, void*> free_blocks;  // pool blocks no tensor holds
    std::vector<void*> pinned;                 // host buffers of uploads captured
    size_t pool_bytes = 0;
  };
  std::map<uint64_t, Graph> graphs;
  std::unordered_map<void*, uint64_t> graph_owner;  // pool block -> graph id
  uint64_t capturing = 0;                           // graph id being captured, 0 when none
  uint64_t next_graph = 1;
};

constexpr size_t kStageMax = size_t(16) << 20;  // larger uploads wait for the stream instead
constexpr size_t kStageBlocks = 32;

#ifndef SIFT_CUDA_ARCH_LIST
#define SIFT_CUDA_ARCH_LIST ""
#endif

// Compiled for the same architectures as every other kernel: whether the device can load it tells
// whether the binary has code for the device (SASS for its architecture or PTX it can JIT).
__global__ void image_probe_kernel() {}

std::mutex g_mu;
// Leaked on purpose: tensors freed during process teardown may still return blocks here.
DeviceState* const g_dev = new DeviceState[kMaxDevices];
int g_count = -1;
std::string g_status;
cudaError_t g_probe_error = cudaSuccess;

void probe() {
  if (g_count >= 0) return;
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    g_count = 0;
    g_probe_error = err;
    g_status = std::string("unavailable: ") + cudaGetErrorString(err);
    return;
  }
  g_count = n > kMaxDevices ? kMaxDevices : n;
  g_status = n == 0 ? "unavailable: no CUDA device found" : "available";
}

// Empty when the binary has code for the device; sets the device current (creates its context).
std::string image_error(int device) {
  cudaError_t err = cudaSetDevice(device);
  if (err == cudaSuccess) {
    cudaFuncAttributes a;
    err = cudaFuncGetAttributes(&a, image_probe_kernel);
  }
  if (err == cudaSuccess) return "";
  cudaGetLastError();
  return std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
}

DeviceState& state(int device) {
  probe();
  SIFT_CHECK(g_count > 0, "E_DEVICE", "CUDA is not usable on this machine (", g_status, ")");
  SIFT_CHECK(device >= 0 && device < g_count, "E_DEVICE", "cuda:", device, " does not exist (", g_count,
             " device(s) found)");
  DeviceState& s = g_dev[device];
  if (!s.ready) {
    const std::string no_image = image_error(device);
    if (!no_image.empty()) {
      cudaDeviceProp p;
      const bool props = cudaGetDeviceProperties(&p, device) == cudaSuccess;
      fail("E_DEVICE", "cuda:", device,
           props ? std::string(" (") + p.name + ", compute capability " + std::to_string(p.major) + "." +
                       std::to_string(p.minor) + ")"
                 : std::string(),
           " cannot run this build's kernels (", no_image, "); it was compiled for ", SIFT_CUDA_ARCH_LIST,
           ": rebuild for this GPU with `sift-ft build --cuda --cuda-archs <arch>`");
    }
    CUDA_CHECK(cudaSetDevice(device));
    CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
    CUDA_CHECK(cudaMalloc(&s.error_flag, sizeof(int)));
    // On the stream itself: the legacy default stream does not order work on a non-blocking one.
    CUDA_CHECK(cudaMemsetAsync(s.error_flag, 0, sizeof(int), s.stream));
    s.ready = true;
  }
  return s;
}

size_t round_size(size_t n) {
  if (n == 0) n = 1;
  if (n < (1u << 20)) return (n + 511) / 512 * 512;       // small: 512-byte steps
  return (n + (2u << 20) - 1) / (2u << 20) * (2u << 20);  // large: 2 MiB steps
}

void free_cached(DeviceState& s) {
  for (auto& kv : s.free_blocks) {
    cudaFree(kv.second);
    s.stats.reserved -= kv.first;
  }
  s.free_blocks.clear();
}

}  // namespace

bool compiled() { return true; }

bool available() {
  std::lock_guard<std::mutex> lk(g_mu);
  probe();
  return g_count > 0;
}

std::string status() {
  std::lock_guard<std::mutex> lk(g_mu);
  probe();
  return g_status;
}

int device_count() {
  std::lock_guard<std::mutex> lk(g_mu);
  probe();
  return g_count;
}

std::string runtime_version() {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

Probe probe_info() {
  std::lock_guard<std::mutex> lk(g_mu);
  probe();
  Probe r;
  r.compiled = true;
  cudaDriverGetVersion(&r.driver_version);  // leaves 0 when no driver is installed
  cudaRuntimeGetVersion(&r.runtime_version);
  cudaGetLastError();
  if (g_probe_error != cudaSuccess) {
    r.error = cudaGetErrorName(g_probe_error);
    r.error_text = cudaGetErrorString(g_probe_error);
  }
  r.device_count = g_count;
  r.archs = SIFT_CUDA_ARCH_LIST;
  return r;
}

// Properties without state(): a device this build has no code for is still listed, with why.
DeviceInfo device_info(int device) {
  std::lock_guard<std::mutex> lk(g_mu);
  probe();
  SIFT_CHECK(device >= 0 && device < g_count, "E_DEVICE", "cuda:", device, " does not exist (", g_count,
             " device(s) found)");
  cudaDeviceProp p;
  CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  DeviceInfo info;
  info.name = p.name;
  info.major = p.major;
  info.minor = p.minor;
  info.multiprocessors = p.multiProcessorCount;
  info.kernel_image_error = image_error(device);
  if (cudaMemGetInfo(&info.free_memory, &info.total_memory) != cudaSuccess) {
    cudaGetLastError();
    info.total_memory = p.totalGlobalMem;
    info.free_memory = 0;
  }
  return info;
}

namespace {
// The device this thread is capturing a graph on (-1: none). Only that device's stream is captured:
// work this thread queued on another device would run once, now, and never on replay.
thread_local int t_capturing_device = -1;
}  // namespace

void set_device(int device) {
  if (t_capturing_device >= 0 && device != t_capturing_device)
    fail("E_UNSUPPORTED", "work on cuda:", device,
         " while this thread captures a CUDA graph on cuda:", t_capturing_device,
         ": a graph holds one device's work (the other device's would run once now and never on replay)");
  std::lock_guard<std::mutex> lk(g_mu);
  state(device);
  CUDA_CHECK(cudaSetDevice(device));
}

cudaStream_t current_stream(int device) {
  std::lock_guard<std::mutex> lk(g_mu);
  return state(device).stream;
}

void* stream(int device) { return current_stream(device); }

namespace {
// Host waits and event timings cannot be part of a graph: a clear error instead of a capture that
// CUDA invalidates.
void check_not_capturing(int device, const char* what) {
  std::lock_guard<std::mutex> lk(g_mu);
  if (device >= 0 && device < kMaxDevices && g_dev[device].capturing)
    fail("E_UNSUPPORTED", what, " while cuda:", device,
         " captures a CUDA graph: a captured step must not wait for the device or read device data");
}
}  // namespace

void* alloc(int device, size_t nbytes) {
  std::lock_guard<std::mutex> lk(g_mu);
  DeviceState& s = state(device);
  size_t size = round_size(nbytes);
  void* p = nullptr;
  if (s.capturing) {
    // The captured graph's own free blocks first (released earlier in the capture: stream order
    // within the graph keeps their reuse safe), then the shared cache or cudaMalloc (relaxed capture
    // mode permits it); either way the block joins the graph's pool.
    DeviceState::Graph& g = s.graphs[s.capturing];
    auto git = g.free_blocks.lower_bound(size);
    if (git != g.free_blocks.end() && git->first <= size * 2) {
      size = git->first;
      p = git->second;
      g.free_blocks.erase(git);
      s.live[p] = size;
      s.stats.allocated += size;
      if (s.stats.allocated > s.stats.peak_allocated) s.stats.peak_allocated = s.stats.allocated;
      return p;
    }
  }
  // Best fit among cached blocks, not more than twice the request (limits waste).
  auto it = s.free_blocks.lower_bound(size);
  if (it != s.free_blocks.end() && it->first <= size * 2) {
    size = it->first;
    p = it->second;
    s.free_blocks.erase(it);
  } else {
    cudaSetDevice(device);
    cudaError_t err = cudaMalloc(&p, size);
    if (err == cudaErrorMemoryAllocation && !s.capturing) {  // no stream sync while capturing
      cudaGetLastError();
      cudaStreamSynchronize(s.stream);
      free_cached(s);
      err = cudaMalloc(&p, size);
    }
    if (err != cudaSuccess) {
      cudaGetLastError();
      fail(err == cudaErrorMemoryAllocation ? "E_OOM" : "E_CUDA", "cuda:", device, " could not allocate ", nbytes,
           " bytes: ", cudaGetErrorString(err), " (", s.stats.allocated, " bytes in use by sift-ft)");
    }
    s.stats.reserved += size;
    s.stats.cuda_mallocs++;
  }
  s.live[p] = size;
  s.stats.allocated += size;
  if (s.stats.allocated > s.stats.peak_allocated) s.stats.peak_allocated = s.stats.allocated;
  if (s.capturing) {
    s.graph_owner[p] = s.capturing;
    s.graphs[s.capturing].pool_bytes += size;
  }
  return p;
}

void release(int device, void* ptr, size_t) {
  std::lock_guard<std::mutex> lk(g_mu);
  if (device < 0 || device >= kMaxDevices || !g_dev[device].ready) return;
  DeviceState& s = g_dev[device];
  auto it = s.live.find(ptr);
  if (it == s.live.end()) return;
  // Work already queued on the (single) stream that reads this block runs before any later
  // kernel that reuses it, so the block can go back to the cache at once, unless a graph's
  // kernels may touch it (see DeviceState::Graph).
  const size_t size = it->second;
  s.stats.allocated -= size;
  s.live.erase(it);
  auto owner = s.graph_owner.find(ptr);
  if (owner == s.graph_owner.end() && s.capturing) {
    s.graph_owner[ptr] = s.capturing;
    s.graphs[s.capturing].pool_bytes += size;
    owner = s.graph_owner.find(ptr);
  }
  if (owner != s.graph_owner.end()) {
    s.graphs[owner->second].free_blocks.emplace(size, ptr);
    return;
  }
  s.free_blocks.emplace(size, ptr);
}

void empty_cache(int device) {
  check_not_capturing(device, "emptying the allocator cache");
  std::lock_guard<std::mutex> lk(g_mu);
  if (device < 0 || device >= kMaxDevices || !g_dev[device].ready) return;
  cudaStreamSynchronize(g_dev[device].stream);
  free_cached(g_dev[device]);
}

AllocatorStats allocator_stats(int device) {
  std::lock_guard<std::mutex> lk(g_mu);
  if (device < 0 || device >= kMaxDevices || !g_dev[device].ready) return {};
  return g_dev[device].stats;
}

void reset_peak(int device) {
  std::lock_guard<std::mutex> lk(g_mu);
  if (device < 0 || device >= kMaxDevices) return;
  g_dev[device].stats.peak_allocated = g_dev[device].stats.allocated;
}

namespace {
// Once the host has waited for the stream (to a fence, or all of it): throws E_INDEX when a kernel
// set the device's error flag, and clears the flag so that the error is reported once.
void raise_error_flag(int device) {
  set_device(device);  // the calling thread may be a worker whose current device differs
  int flag = 0;
  CUDA_CHECK(cudaMemcpy(&flag, error_flag(device), sizeof(int), cudaMemcpyDeviceToHost));
  if (flag != 0) {
    CUDA_CHECK(cudaMemsetAsync(error_flag(device), 0, sizeof(int), current_stream(device)));
    fail("E_INDEX", "a CUDA kernel found an index out of range (error code ", flag,
         "); the results of the op that raised it are undefined");
  }
}
}  // namespace

void synchronize(int device) {
  check_not_capturing(device, "synchronize");
  set_device(device);  // the calling thread may be a worker whose current device differs
  CUDA_CHECK(cudaStreamSynchronize(current_stream(device)));
  raise_error_flag(device);
}

uint64_t fence_record(int device) {
  // An event recorded while capturing is a graph dependency, not a fence a host thread can wait for.
  check_not_capturing(device, "a fence");
  DeviceState& s = state(device);
  std::lock_guard<std::mutex> lk(g_mu);
  uint64_t id;
  if (!s.fences_free.empty()) {
    id = s.fences_free.back();
    s.fences_free.pop_back();
  } else {
    SIFT_CHECK(s.fences.size() < (size_t(1) << 20), "E_ARG", "too many fences in flight on cuda:", device);
    CUDA_CHECK(cudaSetDevice(device));
    cudaEvent_t e = nullptr;
    // Blocking sync: the waiting worker sleeps instead of spinning on a core JavaScript may need.
    CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming | cudaEventBlockingSync));
    s.fences.push_back(e);
    s.fences_live.push_back(false);
    id = s.fences.size() - 1;
  }
  cudaError_t err = cudaEventRecord(s.fences[id], s.stream);
  if (err != cudaSuccess) s.fences_free.push_back(id);
  CUDA_CHECK(err);
  s.fences_live[id] = true;
  return id;
}

void fence_wait(int device, uint64_t fence) {
  check_not_capturing(device, "waiting for a fence");
  DeviceState& s = state(device);
  cudaEvent_t e = nullptr;
  {
    std::lock_guard<std::mutex> lk(g_mu);
    SIFT_CHECK(fence < s.fences.size() && s.fences_live[fence], "E_ARG", "fence ", fence,
               " is not a recorded fence of cuda:", device, " (or it was waited for already)");
    s.fences_live[fence] = false;  // one wait per fence: the event is recycled after it
    e = s.fences[fence];
  }
  cudaError_t err = cudaEventSynchronize(e);
  {
    std::lock_guard<std::mutex> lk(g_mu);
    s.fences_free.push_back(fence);
  }
  CUDA_CHECK(err);
  // The kernels before the fence ran: an index they found out of range is this wait's error, as
  // it would be synchronize()'s.
  raise_error_flag(device);
}

int event_record(int device) {
  check_not_capturing(device, "a timing event");
  DeviceState& s = state(device);
  std::lock_guard<std::mutex> lk(g_mu);
  if (s.events_used == s.events.size()) {
    SIFT_CHECK(s.events.size() < (size_t(1) << 24), "E_ARG", "too many timing events: call eventsReset");
    CUDA_CHECK(cudaSetDevice(device));
    cudaEvent_t e = nullptr;
    CUDA_CHECK(cudaEventCreate(&e));
    s.events.push_back(e);
  }
  const size_t id = s.events_used++;
  CUDA_CHECK(cudaEventRecord(s.events[id], s.stream));
  return int(id);
}

float event_elapsed_ms(int device, int start, int end) {
  DeviceState& s = state(device);
  cudaEvent_t a = nullptr, b = nullptr;
  {
    std::lock_guard<std::mutex> lk(g_mu);
    SIFT_CHECK(start >= 0 && end >= 0 && size_t(start) < s.events_used && size_t(end) < s.events_used, "E_ARG",
               "event ids ", start, " and ", end, " are not recorded events of cuda:", device, " (", s.events_used,
               " recorded since the last eventsReset)");
    a = s.events[size_t(start)];
    b = s.events[size_t(end)];
  }
  CUDA_CHECK(cudaEventSynchronize(b));
  float ms = 0.0f;
  CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  return ms;
}

void events_reset(int device) {
  std::lock_guard<std::mutex> lk(g_mu);
  if (device < 0 || device >= kMaxDevices || !g_dev[device].ready) return;
  g_dev[device].events_used = 0;
}

void check_last_error(const char* what) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    fail(err == cudaErrorMemoryAllocation ? "E_OOM" : "E_CUDA", what, ": ", cudaGetErrorString(err));
}

int* error_flag(int device) {
  std::lock_guard<std::mutex> lk(g_mu);
  return state(device).error_flag;
}

namespace {
// A pinned block of at least n bytes whose last copy has run (marked taken), or -1 when
// kStageBlocks blocks are all in flight. g_mu held.
int take_staging(DeviceState& s, size_t n) {
  int best = -1;
  for (size_t i = 0; i < s.staging.size(); i++) {
    auto& b = s.staging[i];
    if (b.taken || b.size < n || cudaEventQuery(b.done) != cudaSuccess) continue;
    if (best < 0 || b.size < s.staging[size_t(best)].size) best = int(i);
  }
  if (best < 0 && s.staging.size() < kStageBlocks) {
    DeviceState::Staging b;
    b.size = std::max<size_t>(size_t(64) << 10, n);
    b.size = (b.size + 4095) / 4096 * 4096;
    CUDA_CHECK(cudaHostAlloc(&b.ptr, b.size, cudaHostAllocDefault));
    CUDA_CHECK(cudaEventCreateWithFlags(&b.done, cudaEventDisableTiming));
    s.staging.push_back(b);
    best = int(s.staging.size() - 1);
  }
  if (best >= 0) s.staging[size_t(best)].taken = true;
  return best;
}
}  // namespace

void copy_h2d(int device, void* dst, const void* src, size_t nbytes) {
  set_device(device);  // the calling thread may be a worker whose current device differs
  cudaStream_t st = current_stream(device);
  {
    std::lock_guard<std::mutex> lk(g_mu);
    DeviceState& s = state(device);
    if (s.capturing && nbytes > 0) {
      // The bytes stay in a pinned buffer of the graph: each replay uploads them again.
      void* pinned = nullptr;
      CUDA_CHECK(cudaHostAlloc(&pinned, nbytes, cudaHostAllocDefault));
      s.graphs[s.capturing].pinned.push_back(pinned);
      std::memcpy(pinned, src, nbytes);
      CUDA_CHECK(cudaMemcpyAsync(dst, pinned, nbytes, cudaMemcpyHostToDevice, st));
      return;
    }
  }
  int block = -1;
  void* staged = nullptr;
  if (nbytes > 0 && nbytes <= kStageMax) {
    std::lock_guard<std::mutex> lk(g_mu);
    DeviceState& s = state(device);
    block = take_staging(s, nbytes);
    if (block >= 0) staged = s.staging[size_t(block)].ptr;
  }
  if (!staged) {  // large, or every staging block still in flight: wait for the stream
    CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaStreamSynchronize(st));
    return;
  }
  std::memcpy(staged, src, nbytes);
  cudaError_t err = cudaMemcpyAsync(dst, staged, nbytes, cudaMemcpyHostToDevice, st);
  std::lock_guard<std::mutex> lk(g_mu);
  auto& b = g_dev[device].staging[size_t(block)];
  if (err == cudaSuccess) err = cudaEventRecord(b.done, st);
  b.taken = false;
  CUDA_CHECK(err);
}

void copy_d2h(int device, void* dst, const void* src, size_t nbytes) {
  check_not_capturing(device, "reading device data");
  set_device(device);  // the calling thread may be a worker whose current device differs
  cudaStream_t st = current_stream(device);
  CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, st));
  CUDA_CHECK(cudaStreamSynchronize(st));
}

void copy_d2h_settled(int device, void* dst, const void* src, size_t nbytes) {
  check_not_capturing(device, "reading device data");
  set_device(device);  // the calling thread may be a worker whose current device differs
  // The per-thread stream is ordered after the legacy default stream only: not after the
  // non-blocking compute stream, whose later work this copy must not wait for.
  CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, cudaStreamPerThread));
  CUDA_CHECK(cudaStreamSynchronize(cudaStreamPerThread));
}

void copy_d2d(int device, void* dst, const void* src, size_t nbytes) {
  set_device(device);  // the calling thread may be a worker whose current device differs
  CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, current_stream(device)));
}

void memset_async(int device, void* dst, int value, size_t nbytes) {
  set_device(device);  // the calling thread may be a worker whose current device differs
  CUDA_CHECK(cudaMemsetAsync(dst, value, nbytes, current_stream(device)));
}

namespace {
// Returns a destroyed (or failed) graph's pool to the shared cache and frees its pinned buffers,
// once the stream has passed every launch of it. Blocks a tensor still holds leave the pool: their
// release goes to the shared cache. g_mu held.
void drop_graph(DeviceState& s, uint64_t id) {
  auto it = s.graphs.find(id);
  if (it == s.graphs.end()) return;
  cudaStreamSynchronize(s.stream);
  if (it->second.exec) cudaGraphExecDestroy(it->second.exec);
  for (auto& kv : it->second.free_blocks) s.free_blocks.emplace(kv.first, kv.second);
  for (void* h : it->second.pinned) cudaFreeHost(h);
  for (auto o = s.graph_owner.begin(); o != s.graph_owner.end();) o = o->second == id ? s.graph_owner.erase(o) : ++o;
  s.graphs.erase(it);
}
}  // namespace

uint64_t graph_begin(int device) {
  set_device(device);
  std::lock_guard<std::mutex> lk(g_mu);
  DeviceState& s = state(device);
  SIFT_CHECK(!s.capturing, "E_UNSUPPORTED", "cuda:", device, " is already capturing a CUDA graph");
  // One graph per device: a block is then owned by at most one graph, and no graph's pool can be
  // handed to work another graph's replay may overwrite.
  SIFT_CHECK(s.graphs.empty(), "E_UNSUPPORTED", "cuda:", device,
             " holds a CUDA graph already: destroy it before capturing another");
  // Errors of earlier work would otherwise surface as a failed capture.
  CUDA_CHECK(cudaStreamSynchronize(s.stream));
  const uint64_t id = s.next_graph++;
  s.graphs[id];
  // Relaxed: the caching allocator may cudaMalloc while the step is captured.
  const cudaError_t err = cudaStreamBeginCapture(s.stream, cudaStreamCaptureModeRelaxed);
  if (err != cudaSuccess) {
    s.graphs.erase(id);
    CUDA_CHECK(err);
  }
  s.capturing = id;
  t_capturing_device = device;
  return id;
}

void graph_end(int device, bool keep) {
  set_device(device);  // the graph is instantiated in the current device's context
  std::lock_guard<std::mutex> lk(g_mu);
  DeviceState& s = state(device);
  const uint64_t id = s.capturing;
  SIFT_CHECK(id != 0, "E_UNSUPPORTED", "cuda:", device, " is not capturing a CUDA graph");
  s.capturing = 0;
  if (t_capturing_device == device) t_capturing_device = -1;
  cudaGraph_t graph = nullptr;
  cudaError_t err = cudaStreamEndCapture(s.stream, &graph);
  cudaGraphExec_t exec = nullptr;
  if (err == cudaSuccess && keep) err = cudaGraphInstantiate(&exec, graph, 0);
  if (graph) cudaGraphDestroy(graph);
  if (err != cudaSuccess || !keep) {
    cudaGetLastError();
    drop_graph(s, id);
    // Dropping a failed step's capture (keep false) does not throw: the capture is often invalid
    // because of what failed, and the step's own error is the one to report.
    if (err != cudaSuccess && keep)
      fail("E_CUDA", "capturing a CUDA graph on cuda:", device, " failed: ", cudaGetErrorString(err));
    return;
  }
  s.graphs[id].exec = exec;
}

void graph_launch(int device, uint64_t id) {
  set_device(device);
  std::lock_guard<std::mutex> lk(g_mu);
  DeviceState& s = state(device);
  auto it = s.graphs.find(id);
  SIFT_CHECK(it != s.graphs.end() && it->second.exec, "E_ARG", "CUDA graph ", id, " does not exist on cuda:", device);
  SIFT_CHECK(!s.capturing, "E_UNSUPPORTED", "launching a CUDA graph while cuda:", device, " captures another");
  CUDA_CHECK(cudaGraphLaunch(it->second.exec, s.stream));
}

void graph_destroy(int device, uint64_t id) {
  std::lock_guard<std::mutex> lk(g_mu);
  if (device < 0 || device >= kMaxDevices || !g_dev[device].ready) return;
  DeviceState& s = g_dev[device];
  SIFT_CHECK(s.capturing != id, "E_UNSUPPORTED", "CUDA graph ", id, " is being captured: end the capture first");
  drop_graph(s, id);
}

GraphStats graph_stats(int device) {
  std::lock_guard<std::mutex> lk(g_mu);
  GraphStats r;
  if (device < 0 || device >= kMaxDevices || !g_dev[device].ready) return r;
  const DeviceState& s = g_dev[device];
  r.graphs = s.graphs.size();
  r.capturing = s.capturing != 0;
  for (const auto& kv : s.graphs) r.pool_bytes += kv.second.pool_bytes;
  return r;
}

}  // namespace sift::cuda
