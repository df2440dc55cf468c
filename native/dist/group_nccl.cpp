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
// then throws E_DIST. The communicator is created non-blocking where NCCL has the config API
// (2.14+), so that its initialisation, which waits for every rank, ends after the same timeout
// (nccl.cpp); its calls may then return ncclInProgress while they queue work, and are waited for
// (nccl::SharedComm::settle) before their completion event is recorded. The two threads reach the
// communicator only through nccl::SharedComm, which never lets their NCCL calls overlap nor any
// call follow the abort.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "../cuda/runtime.h"
#include "group.h"
#include "nccl.h"
#include "store.h"

namespace sift::dist {

namespace {

using nccl::Api;
using nccl::Comm;
using nccl::SharedComm;

int nccl_type(DType d) {
  switch (d) {
    case DType::F32:
      return nccl::kFloat32;
    case DType::F64:
      return nccl::kFloat64;
    case DType::BF16:
      return nccl::kBfloat16;
    case DType::F16:
      return nccl::kFloat16;
    case DType::I32:
      return nccl::kInt32;
    case DType::I64:
      return nccl::kInt64;
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
  NcclGroup(const GroupOptions& o, const Api* lib) : lib_(lib), device_(o.cuda_device), timeout_(o.timeout) {
    rank_ = o.rank;
    world_ = o.world_size;
    backend_ = "nccl";
    // The rendezvous waits at most the group's timeout for rank 0 and its id (TcpStore).
    store_ = std::make_unique<TcpStore>(o.master_addr, o.master_port, o.rank == 0, o.timeout);
    store_->join(o.rank, o.world_size);  // every rank's WORLD_SIZE agrees before the id exchange
    nccl::UniqueId id{};
    if (o.rank == 0) {
      check(lib_->get_unique_id(&id), "ncclGetUniqueId");
      store_->set("nccl/id", std::vector<char>(id.internal, id.internal + sizeof id.internal));
    } else {
      std::vector<char> v = store_->get("nccl/id");
      SIFT_CHECK(v.size() == sizeof id.internal, "E_DIST", "rendezvous: a malformed NCCL id from rank 0");
      std::memcpy(id.internal, v.data(), v.size());
    }
    cuda::set_device(device_);
    nccl::Created c = nccl::create_comm(*lib_, world_, id, rank_, timeout_);
    comm_ = std::make_unique<SharedComm>(*lib_, c.comm);
    library_ = c.how;
    try {
      comm_stream_ = cuda::comm_stream(device_);
      scratch_ = cuda::alloc(device_, 16);
      watchdog_ = std::thread([this] { watch(); });
    } catch (...) {
      // The destructor does not run for a constructor that throws: end the communicator here.
      if (scratch_) cuda::release(device_, scratch_, 16);
      comm_->abort();
      throw;
    }
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
    if (broken_.empty()) {
      try {
        // The compute stream may not have waited for the last collectives yet.
        cuda::set_device(device_);
        void* e = cuda::comm_record(device_);
        cuda::compute_wait_event(device_, e);
        cuda::event_free(e);
      } catch (const SiftException&) {
        // A sticky CUDA error: the communicator is destroyed all the same.
      }
      comm_->destroy();  // not after an abort: SharedComm refuses it
    }
  }

  void all_reduce_sum(const Tensor& t) override { start_all_reduce_sum(t)->wait(); }

  std::shared_ptr<Work> start_all_reduce_sum(const Tensor& t) override {
    check_tensor(t, "allReduce");
    int type = nccl_type(t.dtype);
    return launch("ncclAllReduce", {t}, [&](Comm c, void* st) {
      return lib_->all_reduce(t.raw(), t.raw(), size_t(t.numel()), type, nccl::kSum, c, st);
    });
  }

  void broadcast(const Tensor& t, int root) override {
    check_tensor(t, "broadcast");
    launch("ncclBroadcast", {t}, [&](Comm c, void* st) {
      return lib_->broadcast(t.raw(), t.raw(), t.nbytes(), nccl::kInt8 /* bytes */, root, c, st);
    })->wait();
  }

  void all_gather(const Tensor& in, const Tensor& out) override {
    check_tensor(in, "allGather");
    check_tensor(out, "allGather");
    SIFT_CHECK(in.dtype == out.dtype && out.nbytes() == in.nbytes() * size_t(world_), "E_SHAPE", "allGather: output ",
               out.desc(), " must hold ", world_, " x ", in.desc());
    launch("ncclAllGather", {in, out}, [&](Comm c, void* st) {
      return lib_->all_gather(in.raw(), out.raw(), in.nbytes(), nccl::kInt8, c, st);
    })->wait();
  }

  void barrier() override {
    launch("ncclAllReduce (barrier)", {}, [&](Comm c, void* st) {
      return lib_->all_reduce(scratch_, scratch_, 1, nccl::kInt32, nccl::kSum, c, st);
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
    // A non-blocking communicator may return ncclInProgress while it enqueues the collective: the
    // completion event is recorded once the kernels are on the stream.
    const auto enqueue_deadline = std::chrono::steady_clock::now() + timeout_;
    const int rc = comm_->settle(comm_->call([&](Comm c) { return f(c, comm_stream_); }), enqueue_deadline);
    if (rc != nccl::kSuccess) {
      // Timed out, failed (NCCL's rule after an error: abort, never destroy) or aborted meanwhile by
      // the watchdog (kClosed: the group is already broken and says why).
      if (rc == nccl::kInProgress)
        abort_and_break(str_cat(op, " could not be queued within ", timeout_.count() / 1000.0,
                                " s (a rank died or stopped answering)"));
      else if (rc != nccl::kClosed)
        abort_and_break(str_cat(op, " failed: ", lib_->error_string(rc), " (", library_, ")"));
      throw_if_broken();
      fail("E_DIST", op, ": the NCCL communicator was closed (rank ", rank_, " of ", world_, ")");
    }
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
        int async = nccl::kSuccess;
        // kClosed: the other thread aborted the communicator meanwhile, and broke the group.
        int rc = comm_->async_error(&async);
        if (rc == nccl::kClosed)
          async = nccl::kSuccess;
        else if (rc != nccl::kSuccess)
          why = str_cat("ncclCommGetAsyncError failed: ", lib_->error_string(rc));
        else if (async != nccl::kSuccess && async != nccl::kInProgress)
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
        abort_and_break(why);
        polled.clear();
        lk.lock();
        continue;
      }
      polled.clear();
      lk.lock();
      cv_.wait_for(lk, std::chrono::milliseconds(20), [&] { return stop_; });
    }
  }

  // Aborts the communicator, which releases the kernels waiting for a missing peer (it is unusable
  // after), and marks the group broken: every later use throws E_DIST with `why`. Called without
  // mu_ held, by the watchdog or where a call on the non-blocking communicator could not be queued
  // in time; only the first caller aborts. broken_ is set before the abort, so a call that finds the
  // communicator closed (kClosed) finds the group broken.
  void abort_and_break(const std::string& why) {
    std::vector<std::shared_ptr<Pending>> dropped;  // released after the abort, outside mu_
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (!broken_.empty()) return;
      broken_ = str_cat(why, " (NCCL, rank ", rank_, " of ", world_, ")");
      dropped.swap(inflight_);
    }
    comm_->abort();
  }

  void check(int rc, const char* what) {
    if (rc != 0)
      fail("E_DIST", what, " failed on rank ", rank_, " of ", world_, ": ", lib_->error_string(rc), " (", library_,
           ")");
  }
  void check_tensor(const Tensor& t, const char* op) const {
    SIFT_CHECK(t.defined() && t.device().is_cuda() && t.device().index == device_, "E_DEVICE", op,
               ": this rank's NCCL group drives cuda:", device_, ", got ", t.desc());
    SIFT_CHECK(t.is_contiguous(), "E_ARG", op, ": the tensor must be contiguous");
  }

  const Api* lib_;
  int device_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<TcpStore> store_;
  std::unique_ptr<SharedComm> comm_;  // every NCCL call on the communicator goes through it
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
  std::string tried;
  const Api* lib = nccl::load(&tried);
  SIFT_CHECK(lib, "E_UNSUPPORTED",
             "NCCL was not found (looked in SIFT_FT_NCCL, the library path, CUDA_HOME and PyTorch's nvidia/nccl; ",
             tried, "); install libnccl2 or point SIFT_FT_NCCL at libnccl.so.2");
  return std::make_shared<NcclGroup>(opts, lib);
}

}  // namespace sift::dist
