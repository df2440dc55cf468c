// The CUDA backend: NCCL, loaded at run time (dlopen) so that the build needs no NCCL and one
// binary runs with or without it. The library is looked for in SIFT_FT_NCCL (a file), the
// loader's search path, CUDA_HOME/CUDA_PATH, the toolkit folders, and PyTorch's wheel
// (site-packages/nvidia/nccl/lib). Rank 0's ncclUniqueId reaches the others through the TcpStore.
// Collectives are launched on the device's communication stream, behind an event of the compute
// stream (so they see the kernels that produced the tensors), and the compute stream waits for
// them where their result is needed: at once for a blocking collective, at Work::wait() for an
// asynchronous one; the host does not wait for either. NCCL has no timeout of its own: a watchdog
// thread polls every collective in flight and the communicator's asynchronous error, and aborts
// the communicator (ncclCommAbort) when one fails or has not finished within the group's timeout,
// which releases the kernels waiting for a dead or stopped peer; every later use of the group
// then throws E_DIST.
#include <dlfcn.h>
#include <glob.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "../cuda/runtime.h"
#include "group.h"
#include "store.h"

namespace sift::dist {

namespace {

// The few NCCL types used, as the ABI defines them (nccl.h is not needed to build).
struct NcclUniqueId {
  char internal[128];
};
using NcclComm = void*;
enum NcclDataType { kInt32 = 2, kInt64 = 4, kFloat32 = 7, kFloat64 = 8, kBfloat16 = 9, kFloat16 = 6 };
constexpr int kNcclSum = 0;
constexpr int kNcclSuccess = 0;
constexpr int kNcclInProgress = 7;

struct Nccl {
  int (*get_unique_id)(NcclUniqueId*) = nullptr;
  int (*comm_init_rank)(NcclComm*, int, NcclUniqueId, int) = nullptr;
  int (*comm_destroy)(NcclComm) = nullptr;
  int (*comm_abort)(NcclComm) = nullptr;
  int (*comm_get_async_error)(NcclComm, int*) = nullptr;
  int (*all_reduce)(const void*, void*, size_t, int, int, NcclComm, void*) = nullptr;
  int (*broadcast)(const void*, void*, size_t, int, int, NcclComm, void*) = nullptr;
  int (*all_gather)(const void*, void*, size_t, int, NcclComm, void*) = nullptr;
  const char* (*error_string)(int) = nullptr;
  std::string path;
};

std::vector<std::string> candidates() {
  std::vector<std::string> out;
  if (const char* e = std::getenv("SIFT_FT_NCCL"); e && *e) out.push_back(e);
  const char* names[] = {"libnccl.so.2", "libnccl.so"};
  for (const char* n : names) out.push_back(n);
  std::vector<std::string> dirs;
  for (const char* var : {"CUDA_HOME", "CUDA_PATH"})
    if (const char* e = std::getenv(var); e && *e) dirs.push_back(std::string(e) + "/lib64");
  for (const char* d :
       {"/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/lib/x86_64-linux-gnu"})
    dirs.push_back(d);
  // PyTorch's CUDA wheels ship NCCL as the nvidia-nccl-cu* package.
  std::vector<std::string> patterns;
  for (const char* var : {"VIRTUAL_ENV", "CONDA_PREFIX"})
    if (const char* e = std::getenv(var); e && *e)
      patterns.push_back(std::string(e) + "/lib/python3*/site-packages/nvidia/nccl/lib");
  if (const char* h = std::getenv("HOME"); h && *h)
    patterns.push_back(std::string(h) + "/.local/lib/python3*/site-packages/nvidia/nccl/lib");
  patterns.push_back("/usr/local/lib/python3*/dist-packages/nvidia/nccl/lib");
  patterns.push_back("/usr/local/lib/python3*/site-packages/nvidia/nccl/lib");
  patterns.push_back("/usr/lib/python3*/dist-packages/nvidia/nccl/lib");
  for (const auto& p : patterns) {
    glob_t g{};
    if (::glob(p.c_str(), 0, nullptr, &g) == 0)
      for (size_t i = 0; i < g.gl_pathc; i++) dirs.push_back(g.gl_pathv[i]);
    ::globfree(&g);
  }
  for (const auto& d : dirs)
    for (const char* n : names) out.push_back(d + "/" + n);
  return out;
}

Nccl* load() {
  static std::once_flag once;
  static Nccl* lib = nullptr;
  std::call_once(once, [] {
    for (const std::string& name : candidates()) {
      void* h = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!h) continue;
      auto* l = new Nccl();  // lives as long as the process, like the loaded library
      l->get_unique_id = reinterpret_cast<decltype(l->get_unique_id)>(dlsym(h, "ncclGetUniqueId"));
      l->comm_init_rank = reinterpret_cast<decltype(l->comm_init_rank)>(dlsym(h, "ncclCommInitRank"));
      l->comm_destroy = reinterpret_cast<decltype(l->comm_destroy)>(dlsym(h, "ncclCommDestroy"));
      l->comm_abort = reinterpret_cast<decltype(l->comm_abort)>(dlsym(h, "ncclCommAbort"));
      l->comm_get_async_error = reinterpret_cast<decltype(l->comm_get_async_error)>(dlsym(h, "ncclCommGetAsyncError"));
      l->all_reduce = reinterpret_cast<decltype(l->all_reduce)>(dlsym(h, "ncclAllReduce"));
      l->broadcast = reinterpret_cast<decltype(l->broadcast)>(dlsym(h, "ncclBroadcast"));
      l->all_gather = reinterpret_cast<decltype(l->all_gather)>(dlsym(h, "ncclAllGather"));
      l->error_string = reinterpret_cast<decltype(l->error_string)>(dlsym(h, "ncclGetErrorString"));
      if (!l->get_unique_id || !l->comm_init_rank || !l->comm_destroy || !l->comm_abort || !l->comm_get_async_error ||
          !l->all_reduce || !l->broadcast || !l->all_gather || !l->error_string) {
        delete l;
        dlclose(h);
        continue;
      }
      l->path = name;
      lib = l;
      return;
    }
  });
  return lib;
}

int nccl_type(DType d) {
  switch (d) {
    case DType::F32:
      return kFloat32;
    case DType::F64:
      return kFloat64;
    case DType::BF16:
      return kBfloat16;
    case DType::F16:
      return kFloat16;
    case DType::I32:
      return kInt32;
    case DType::I64:
      return kInt64;
    default:
      fail("E_DTYPE", "NCCL collectives take f32, f64, bf16, f16, i32 or i64 tensors, got ", dtype_name(d));
  }
}

// A collective in flight on the comm stream: its completion event, shared by the watchdog (which
// polls it) and the Work (whose wait makes the compute stream wait for it). It holds the tensors
// the collective reads and writes: their memory goes back to the caching allocator (whose reuse is
// ordered on the compute stream only) once the collective has ended or the compute stream waits
// for it, not while the comm stream may still use it (a Work dropped unwaited, e.g. on an error).
struct Pending {
  void* event = nullptr;
  int device = 0;
  std::chrono::steady_clock::time_point deadline;
  const char* op = "";
  std::vector<Tensor> buffers;
  ~Pending() { cuda::event_free(event); }
};

class NcclGroup;

class NcclWork : public Work {
 public:
  NcclWork(NcclGroup* g, std::shared_ptr<Pending> p) : group_(g), pending_(std::move(p)) {}
  void wait() override;

 private:
  NcclGroup* group_;
  std::shared_ptr<Pending> pending_;
};

class NcclGroup : public Group {
 public:
  NcclGroup(const GroupOptions& o, Nccl* lib) : lib_(lib), device_(o.cuda_device), timeout_(o.timeout) {
    rank_ = o.rank;
    world_ = o.world_size;
    backend_ = "nccl";
    store_ = std::make_unique<TcpStore>(o.master_addr, o.master_port, o.rank == 0, o.timeout);
    NcclUniqueId id{};
    if (o.rank == 0) {
      check(lib_->get_unique_id(&id), "ncclGetUniqueId");
      store_->set("nccl/id", std::vector<char>(id.internal, id.internal + sizeof id.internal));
    } else {
      std::vector<char> v = store_->get("nccl/id");
      SIFT_CHECK(v.size() == sizeof id.internal, "E_DIST", "rendezvous: a malformed NCCL id from rank 0");
      std::memcpy(id.internal, v.data(), v.size());
    }
    cuda::set_device(device_);
    check(lib_->comm_init_rank(&comm_, world_, id, rank_), "ncclCommInitRank");
    comm_stream_ = cuda::comm_stream(device_);
    scratch_ = cuda::alloc(device_, 16);
    watchdog_ = std::thread([this] { watch(); });
  }

  ~NcclGroup() override {
    {
      // Collectives still in flight (a run that ended by an error in the middle of a step) end first,
      // or time out and the watchdog aborts the communicator: ncclCommDestroy waits for them, and
      // would wait forever for a peer that is gone.
      std::unique_lock<std::mutex> lk(mu_);
      while (!inflight_.empty() && broken_.empty()) cv_.wait_for(lk, std::chrono::milliseconds(20));
      stop_ = true;
    }
    cv_.notify_all();
    if (watchdog_.joinable()) watchdog_.join();
    if (scratch_) cuda::release(device_, scratch_, 16);
    if (comm_ && broken_.empty()) {
      try {
        // The compute stream may not have waited for the last collectives yet.
        cuda::set_device(device_);
        void* e = cuda::comm_record(device_);
        cuda::compute_wait_event(device_, e);
        cuda::event_free(e);
      } catch (const SiftException&) {
        // A sticky CUDA error: the communicator is destroyed all the same.
      }
      lib_->comm_destroy(comm_);
    }
  }

  void all_reduce_sum(const Tensor& t) override { start_all_reduce_sum(t)->wait(); }

  std::shared_ptr<Work> start_all_reduce_sum(const Tensor& t) override {
    check_tensor(t, "allReduce");
    int type = nccl_type(t.dtype);
    return launch("ncclAllReduce", {t}, [&](void* st) {
      return lib_->all_reduce(t.raw(), t.raw(), size_t(t.numel()), type, kNcclSum, comm_, st);
    });
  }

  void broadcast(const Tensor& t, int root) override {
    check_tensor(t, "broadcast");
    launch("ncclBroadcast", {t}, [&](void* st) {
      return lib_->broadcast(t.raw(), t.raw(), t.nbytes(), 0 /* int8: bytes */, root, comm_, st);
    })->wait();
  }

  void all_gather(const Tensor& in, const Tensor& out) override {
    check_tensor(in, "allGather");
    check_tensor(out, "allGather");
    SIFT_CHECK(in.dtype == out.dtype && out.nbytes() == in.nbytes() * size_t(world_), "E_SHAPE", "allGather: output ",
               out.desc(), " must hold ", world_, " x ", in.desc());
    launch("ncclAllGather", {in, out}, [&](void* st) {
      return lib_->all_gather(in.raw(), out.raw(), in.nbytes(), 0, comm_, st);
    })->wait();
  }

  void barrier() override {
    launch("ncclAllReduce (barrier)", {}, [&](void* st) {
      return lib_->all_reduce(scratch_, scratch_, 1, kInt32, kNcclSum, comm_, st);
    })->wait();
    cuda::synchronize(device_);
    throw_if_broken();
  }

  void throw_if_broken() {
    std::lock_guard<std::mutex> lk(mu_);
    SIFT_CHECK(broken_.empty(), "E_DIST", "process group is broken: ", broken_);
  }

  void wait_for(const Pending& p) {
    throw_if_broken();
    cuda::compute_wait_event(device_, p.event);
  }

 private:
  // Launches one collective on the comm stream behind the compute stream's work so far, and
  // hands its completion event to the watchdog.
  template <typename F>
  std::shared_ptr<Work> launch(const char* op, std::vector<Tensor> buffers, F&& f) {
    throw_if_broken();
    cuda::set_device(device_);
    cuda::comm_wait_compute(device_);
    check(f(comm_stream_), op);
    auto p = std::make_shared<Pending>();
    p->event = cuda::comm_record(device_);
    p->device = device_;
    p->op = op;
    p->buffers = std::move(buffers);
    p->deadline = std::chrono::steady_clock::now() + timeout_;
    {
      std::lock_guard<std::mutex> lk(mu_);
      inflight_.push_back(p);
    }
    cv_.notify_all();
    return std::make_shared<NcclWork>(this, p);
  }

  // The watchdog: while collectives are in flight, polls their events and the communicator's
  // asynchronous error every few milliseconds; aborts the communicator on an error or a timeout.
  void watch() {
    std::unique_lock<std::mutex> lk(mu_);
    while (!stop_) {
      if (inflight_.empty() || !broken_.empty()) {
        cv_.wait(lk, [&] { return stop_ || (!inflight_.empty() && broken_.empty()); });
        continue;
      }
      std::vector<std::shared_ptr<Pending>> polled = inflight_;
      lk.unlock();
      // The last references to finished collectives are dropped outside mu_ (polled.clear()): their
      // buffers return to the allocator, which takes its own lock.
      std::string why;
      try {
        cuda::set_device(device_);
        int async = kNcclSuccess;
        int rc = lib_->comm_get_async_error(comm_, &async);
        if (rc != kNcclSuccess)
          why = str_cat("ncclCommGetAsyncError failed: ", lib_->error_string(rc));
        else if (async != kNcclSuccess && async != kNcclInProgress)
          why = str_cat("NCCL reported an asynchronous error: ", lib_->error_string(async));
        auto now = std::chrono::steady_clock::now();
        for (const auto& p : polled) {
          if (!why.empty()) break;
          if (cuda::event_query(p->event)) {
            std::lock_guard<std::mutex> g(mu_);
            inflight_.erase(std::find(inflight_.begin(), inflight_.end(), p));
          } else if (now > p->deadline) {
            why = str_cat(p->op, " did not finish within ", timeout_.count() / 1000.0,
                          " s (a rank died or stopped answering)");
          }
        }
      } catch (const SiftException& e) {
        why = e.what();
      }
      if (!why.empty()) {
        // Releases the kernels waiting for the missing peer; the communicator is unusable after.
        lib_->comm_abort(comm_);
        lk.lock();
        broken_ = str_cat(why, " (NCCL, rank ", rank_, " of ", world_, ")");
        std::vector<std::shared_ptr<Pending>> dropped;
        dropped.swap(inflight_);
        lk.unlock();
        dropped.clear();
        polled.clear();
        lk.lock();
        continue;
      }
      polled.clear();
      lk.lock();
      cv_.wait_for(lk, std::chrono::milliseconds(20), [&] { return stop_; });
    }
  }

  void check(int rc, const char* what) {
    if (rc != 0)
      fail("E_DIST", what, " failed on rank ", rank_, " of ", world_, ": ", lib_->error_string(rc), " (", lib_->path,
           ")");
  }
  void check_tensor(const Tensor& t, const char* op) const {
    SIFT_CHECK(t.defined() && t.device().is_cuda() && t.device().index == device_, "E_DEVICE", op,
               ": this rank's NCCL group drives cuda:", device_, ", got ", t.desc());
    SIFT_CHECK(t.is_contiguous(), "E_ARG", op, ": the tensor must be contiguous");
  }

  Nccl* lib_;
  int device_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<TcpStore> store_;
  NcclComm comm_ = nullptr;
  void* comm_stream_ = nullptr;
  void* scratch_ = nullptr;
  std::mutex mu_;  // guards inflight_, broken_ and stop_
  std::condition_variable cv_;
  std::vector<std::shared_ptr<Pending>> inflight_;
  std::string broken_;
  bool stop_ = false;
  std::thread watchdog_;
};

void NcclWork::wait() { group_->wait_for(*pending_); }

}  // namespace

std::shared_ptr<Group> create_nccl_group(const GroupOptions& opts) {
  SIFT_CHECK(cuda::available(), "E_UNSUPPORTED", "an NCCL process group needs CUDA: ", cuda::status());
  SIFT_CHECK(opts.cuda_device >= 0 && opts.cuda_device < cuda::device_count(), "E_DEVICE", "cuda:", opts.cuda_device,
             " does not exist (", cuda::device_count(), " device(s)); is LOCAL_RANK right?");
  Nccl* lib = load();
  SIFT_CHECK(lib, "E_UNSUPPORTED",
             "NCCL was not found (looked in SIFT_FT_NCCL, the library path, CUDA_HOME and PyTorch's nvidia/nccl); "
             "install libnccl2 or point SIFT_FT_NCCL at libnccl.so.2");
  return std::make_shared<NcclGroup>(opts, lib);
}

}  // namespace sift::dist
