// Communication streams: a second stream per device for process-group collectives (NCCL), with
// the events that order it against the compute stream. Buffers a collective reads or writes stay
// alive until the compute stream has waited for its event, so the caching allocator, ordered on
// the compute stream, never hands their memory out while the collective runs.
#include <cuda_runtime.h>

#include <mutex>

#include "check.cuh"
#include "runtime.h"

namespace sift::cuda {
namespace {

constexpr int kMaxCommDevices = 16;
std::mutex g_comm_mu;
cudaStream_t g_comm[kMaxCommDevices] = {};

cudaEvent_t new_event() {
  cudaEvent_t e = nullptr;
  CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  return e;
}

}  // namespace

void* comm_stream(int device) {
  SIFT_CHECK(device >= 0 && device < kMaxCommDevices, "E_DEVICE", "cuda:", device, " is out of range");
  std::lock_guard<std::mutex> lk(g_comm_mu);
  if (!g_comm[device]) {
    CUDA_CHECK(cudaSetDevice(device));
    CUDA_CHECK(cudaStreamCreateWithFlags(&g_comm[device], cudaStreamNonBlocking));
  }
  return g_comm[device];
}

void comm_wait_compute(int device) {
  auto comm = static_cast<cudaStream_t>(comm_stream(device));
  CUDA_CHECK(cudaSetDevice(device));
  cudaEvent_t e = new_event();
  cudaError_t err = cudaEventRecord(e, current_stream(device));
  if (err == cudaSuccess) err = cudaStreamWaitEvent(comm, e, 0);
  cudaEventDestroy(e);  // released once the wait has been satisfied
  CUDA_CHECK(err);
}

void* comm_record(int device) {
  auto comm = static_cast<cudaStream_t>(comm_stream(device));
  CUDA_CHECK(cudaSetDevice(device));
  cudaEvent_t e = new_event();
  cudaError_t err = cudaEventRecord(e, comm);
  if (err != cudaSuccess) cudaEventDestroy(e);
  CUDA_CHECK(err);
  return e;
}

void compute_wait_event(int device, void* event) {
  CUDA_CHECK(cudaSetDevice(device));
  CUDA_CHECK(cudaStreamWaitEvent(current_stream(device), static_cast<cudaEvent_t>(event), 0));
}

bool event_query(void* event) {
  cudaError_t err = cudaEventQuery(static_cast<cudaEvent_t>(event));
  if (err == cudaErrorNotReady) {
    cudaGetLastError();
    return false;
  }
  CUDA_CHECK(err);
  return true;
}

void event_free(void* event) {
  if (event) cudaEventDestroy(static_cast<cudaEvent_t>(event));
}

}  // namespace sift::cuda
