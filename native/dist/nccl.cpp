#include "nccl.h"

#include <cstdlib>
#include <mutex>
#include <thread>

#include "../core/dl_loader.h"
#include "../core/error.h"

namespace sift::dist::nccl {

std::string version_string(int code) {
  if (code <= 0) return "(version unknown)";
  const int major = code < 10000 ? code / 1000 : code / 10000;
  const int minor = code < 10000 ? (code % 1000) / 100 : (code % 10000) / 100;
  return str_cat(major, ".", minor, ".", code % 100);
}

const Api* load(std::string* why) {
  static std::once_flag once;
  static Api* lib = nullptr;
  static std::string tried;
  std::call_once(once, [] {
    dl::Places places;
    places.file = std::getenv("SIFT_FT_NCCL");
    places.names = {"libnccl.so.2", "libnccl.so"};
    places.dirs = dl::cuda_dirs({"/usr/local/cuda"});
    places.dirs.push_back("/usr/lib/x86_64-linux-gnu");
    // PyTorch's CUDA wheels ship NCCL as the nvidia-nccl-cu* package.
    for (const auto& d : dl::python_package_dirs("nvidia/nccl/lib")) places.dirs.push_back(d);
    auto* api = new Api();  // lives as long as the process, like the loaded library
    dl::Loaded l = dl::open_first(
        dl::candidates(places),
        {dl::need("ncclGetUniqueId", api->get_unique_id), dl::need("ncclCommInitRank", api->comm_init_rank),
         dl::need("ncclCommDestroy", api->comm_destroy), dl::need("ncclCommAbort", api->comm_abort),
         dl::need("ncclCommGetAsyncError", api->comm_get_async_error), dl::need("ncclAllReduce", api->all_reduce),
         dl::need("ncclBroadcast", api->broadcast), dl::need("ncclAllGather", api->all_gather),
         dl::need("ncclGetErrorString", api->error_string), dl::want("ncclGetVersion", api->get_version),
         dl::want("ncclCommInitRankConfig", api->comm_init_rank_config)});
    if (!l.handle) {
      delete api;
      tried = l.tried();
      return;
    }
    api->path = l.path;
    int v = 0;
    if (api->get_version && api->get_version(&v) == kSuccess) api->version = v;
    lib = api;
  });
  if (!lib && why) *why = tried;
  return lib;
}

namespace {

// poll(&state) is ncclCommGetAsyncError on the communicator.
template <typename Poll>
int settle_polling(Poll&& poll, int rc, std::chrono::steady_clock::time_point deadline) {
  while (rc == kInProgress) {
    int state = kSuccess;
    const int q = poll(&state);
    if (q != kSuccess) return q;
    if (state != kInProgress) return state;
    if (std::chrono::steady_clock::now() >= deadline) return kInProgress;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return rc;
}

}  // namespace

int settle(const Api& api, Comm comm, int rc, std::chrono::steady_clock::time_point deadline) {
  return settle_polling([&](int* state) { return api.comm_get_async_error(comm, state); }, rc, deadline);
}

int SharedComm::async_error(int* state) {
  return call([&](Comm c) { return api_.comm_get_async_error(c, state); });
}

int SharedComm::settle(int rc, std::chrono::steady_clock::time_point deadline) {
  return settle_polling([&](int* state) { return async_error(state); }, rc, deadline);
}

bool SharedComm::abort() {
  std::lock_guard<std::mutex> lk(mu_);
  if (!comm_) return false;
  api_.comm_abort(comm_);
  comm_ = nullptr;
  return true;
}

bool SharedComm::destroy() {
  std::lock_guard<std::mutex> lk(mu_);
  if (!comm_) return false;
  api_.comm_destroy(comm_);
  comm_ = nullptr;
  return true;
}

Created create_comm(const Api& api, int nranks, const UniqueId& id, int rank, std::chrono::milliseconds timeout) {
  Created out;
  const std::string lib = str_cat("NCCL ", version_string(api.version), " (", api.path, ")");
  const int first = version_code(2, 14, 0);
  if (!api.comm_init_rank_config || api.version < first) {
    const int rc = api.comm_init_rank(&out.comm, nranks, id, rank);
    SIFT_CHECK(rc == kSuccess, "E_DIST", "ncclCommInitRank failed on rank ", rank, " of ", nranks, ": ",
               api.error_string(rc), " (", lib, ")");
    out.how = str_cat(lib, ": blocking initialisation, without a timeout (ncclCommInitRankConfig needs NCCL ",
                      version_string(first), " or later)");
    return out;
  }
  Config config;
  config.blocking = 0;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int rc = api.comm_init_rank_config(&out.comm, nranks, id, rank, &config);
  if (rc == kInProgress || rc == kSuccess) rc = settle(api, out.comm, rc == kSuccess ? kInProgress : rc, deadline);
  if (rc != kSuccess) {
    // The background initialisation (waiting for a peer that never came, or failed) ends here.
    if (out.comm) api.comm_abort(out.comm);
    if (rc == kInProgress)
      fail("E_DIST", "NCCL initialisation did not finish within ", timeout.count() / 1000.0, " s on rank ", rank,
           " of ", nranks, " (a rank did not join, died or stopped answering; --dist-timeout sets the limit); ", lib);
    fail("E_DIST", "NCCL initialisation failed on rank ", rank, " of ", nranks, ": ", api.error_string(rc), " (", lib,
         ")");
  }
  out.nonblocking = true;
  out.how = str_cat(lib, ": non-blocking initialisation");
  return out;
}

}  // namespace sift::dist::nccl
