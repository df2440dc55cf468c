// NCCL as sift-ft uses it: the ABI declared by hand (nccl.h is not needed to build), the library
// loaded at run time, and the creation of a rank's communicator with a timeout. Host code only (no
// CUDA calls), so that a host test can drive it with fake entry points.
#pragma once
#include <chrono>
#include <climits>
#include <cstddef>
#include <mutex>
#include <string>

namespace sift::dist::nccl {

// ncclUniqueId (NCCL_UNIQUE_ID_BYTES = 128).
struct UniqueId {
  char internal[128];
};
using Comm = void*;  // ncclComm_t

// ncclResult_t values used here (ncclInProgress exists since NCCL 2.14).
constexpr int kSuccess = 0;
constexpr int kInProgress = 7;
// Not an ncclResult_t (those are never negative): what SharedComm answers, without calling NCCL,
// once its communicator was aborted or destroyed.
constexpr int kClosed = -1;
// ncclDataType_t / ncclRedOp_t values used here.
enum DataType { kInt8 = 0, kInt32 = 2, kInt64 = 4, kFloat16 = 6, kFloat32 = 7, kFloat64 = 8, kBfloat16 = 9 };
constexpr int kSum = 0;

// NCCL_VERSION(X, Y, Z): X * 1000 + Y * 100 + Z up to 2.8, X * 10000 + Y * 100 + Z after.
constexpr int version_code(int x, int y, int z) {
  return x <= 2 && y <= 8 ? x * 1000 + y * 100 + z : x * 10000 + y * 100 + z;
}
// "2.21.5" from a version code.
std::string version_string(int code);

// ncclConfig_t as NCCL 2.14 introduced it (ncclConfig_v21400): size, magic, version, blocking.
// Later versions append fields (2.17: cgaClusterSize, minCTAs, maxCTAs, netName; 2.18: splitShare;
// 2.25: trafficClass; 2.27: collnetEnable, CTAPolicy, ...); the library copies `size` bytes of the
// caller's struct and resets to their defaults the fields newer than `version`, so a 2.14 struct
// stamped with version 2.14 means "blocking set, everything else default" to every NCCL from 2.14
// on. NCCL_CONFIG_INITIALIZER fills the same header: sizeof(ncclConfig_t), NCCL_API_MAGIC
// (0xcafebeef), NCCL_VERSION_CODE; unset attributes are NCCL_CONFIG_UNDEF_INT (INT_MIN).
struct Config {
  size_t size = sizeof(Config);
  unsigned int magic = 0xcafebeef;
  unsigned int version = unsigned(version_code(2, 14, 0));
  int blocking = INT_MIN;
  // The C struct's tail padding, where 2.17's cgaClusterSize lies: zero, and reset by NCCL anyway
  // because of `version`.
  int tail_padding = 0;
};
static_assert(sizeof(Config) == 24 && offsetof(Config, blocking) == 16, "ncclConfig_v21400 layout (LP64)");

// The entry points used. The first group is required (NCCL 2.4+); get_version and
// comm_init_rank_config are null where the loaded NCCL lacks them.
struct Api {
  int (*get_unique_id)(UniqueId*) = nullptr;
  int (*comm_init_rank)(Comm*, int nranks, UniqueId, int rank) = nullptr;
  int (*comm_destroy)(Comm) = nullptr;
  int (*comm_abort)(Comm) = nullptr;
  int (*comm_get_async_error)(Comm, int*) = nullptr;
  int (*all_reduce)(const void*, void*, size_t, int type, int op, Comm, void* stream) = nullptr;
  int (*broadcast)(const void*, void*, size_t, int type, int root, Comm, void* stream) = nullptr;
  int (*all_gather)(const void*, void*, size_t, int type, Comm, void* stream) = nullptr;
  const char* (*error_string)(int) = nullptr;
  int (*get_version)(int*) = nullptr;                                                      // NCCL 2.3+
  int (*comm_init_rank_config)(Comm*, int nranks, UniqueId, int rank, Config*) = nullptr;  // NCCL 2.14+
  std::string path;
  int version = 0;  // ncclGetVersion(), 0 when unknown
};

// The library, loaded once (SIFT_FT_NCCL, the loader's path, CUDA_HOME and the toolkit folders,
// PyTorch's nvidia/nccl); null when none loads, with `why` saying what was tried.
const Api* load(std::string* why);

// A communicator and how it was created.
struct Created {
  Comm comm = nullptr;
  bool nonblocking = false;  // ncclCommInitRankConfig with blocking = 0: every call may return ncclInProgress
  std::string how;           // "NCCL 2.21.5 (path), non-blocking initialisation" or the blocking fallback's note
};

// Creates rank's communicator of nranks. Where the loaded NCCL has the config API (2.14+), the
// communicator is non-blocking: its initialisation runs in the background and is polled
// (ncclCommGetAsyncError) until it is ready, fails, or `timeout` passes; then it is aborted
// (ncclCommAbort) and E_DIST names the rank, the world size and the timeout. An older NCCL is
// initialised with the blocking ncclCommInitRank, which waits for every rank without a timeout
// (Created::how says so).
Created create_comm(const Api& api, int nranks, const UniqueId& id, int rank, std::chrono::milliseconds timeout);

// On a non-blocking communicator a call may return ncclInProgress while its work is queued in the
// background: waits (polling ncclCommGetAsyncError) until that is done and returns the final
// result: kSuccess, an NCCL error, or kInProgress when `deadline` passed first. Returns rc at once
// when it is not ncclInProgress.
int settle(const Api& api, Comm comm, int rc, std::chrono::steady_clock::time_point deadline);

// A communicator used by several threads: the one that issues collectives and a watchdog that polls
// its asynchronous error and aborts it. NCCL allows no concurrent calls on one communicator
// (ncclCommGetAsyncError completes the background job of a non-blocking call, ncclCommAbort and
// ncclCommDestroy free the communicator), so every call goes through one lock, and none follows the
// abort or the destruction: those answer kClosed. A non-blocking call holds the lock only while it
// queues its work; an NCCL older than 2.14 (blocking) queues collectives without waiting for peers.
class SharedComm {
 public:
  SharedComm(const Api& api, Comm comm) : api_(api), comm_(comm) {}
  SharedComm(const SharedComm&) = delete;
  SharedComm& operator=(const SharedComm&) = delete;

  // f(comm) under the lock; kClosed, f not called, once the communicator is gone.
  template <typename F>
  int call(F&& f) {
    std::lock_guard<std::mutex> lk(mu_);
    return comm_ ? f(comm_) : kClosed;
  }
  // ncclCommGetAsyncError.
  int async_error(int* state);
  // settle() on this communicator, polling under the lock and releasing it between polls: an abort
  // by another thread ends the wait with kClosed.
  int settle(int rc, std::chrono::steady_clock::time_point deadline);
  // ncclCommAbort, by the first caller only (true for it); kernels waiting for a missing peer end.
  bool abort();
  // ncclCommDestroy, unless the communicator was aborted (false then): waits for its work to end.
  bool destroy();

 private:
  const Api& api_;
  std::mutex mu_;
  Comm comm_;  // null once aborted or destroyed
};

}  // namespace sift::dist::nccl
