// The CPU backend: gloo's TCP transport, connected through the TcpStore. Built only when the
// build found gloo (SIFT_WITH_GLOO); otherwise asking for a CPU group is E_UNSUPPORTED.
// Every collective runs on the group's communication thread, one at a time in the order they were
// submitted (gloo's context is not for concurrent use, and every rank must issue the same
// sequence): a blocking collective submits and waits, an asynchronous one submits and returns,
// so that the executor thread goes on with the backward while a gradient bucket is reduced.
#include "group.h"

#ifdef SIFT_WITH_GLOO
#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/common/logging.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#endif

#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

#include "store.h"

namespace sift::dist {

#ifdef SIFT_WITH_GLOO

namespace {

// gloo's Store interface over the TcpStore. gloo's full-mesh connect publishes each rank's
// addresses under the rank's number ("rank_<r>" in later gloo versions) and waits for its peers'.
class StoreAdapter : public gloo::rendezvous::Store {
 public:
  StoreAdapter(TcpStore& s, int world_size) : s_(s), world_(world_size) {}
  void set(const std::string& key, const std::vector<char>& data) override { s_.set(key, data); }
  std::vector<char> get(const std::string& key) override {
    wait({key});
    return s_.get(key);
  }
  void wait(const std::vector<std::string>& keys) override { wait(keys, s_.timeout()); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override {
    std::string missing;
    if (s_.wait_for(keys, timeout, &missing)) return;
    int r = rank_of(missing);
    // Rank 0 connects only once every rank joined: its entry may be missing because of another rank.
    if (r < 0) s_.wait_failed(missing, timeout);
    if (r == 0 || !s_.joined(r)) s_.check_joined(timeout);
    fail("E_DIST", "rendezvous: rank ", r, " of ", world_, " did not join within ", timeout.count() / 1000.0,
         " s (it reached the rendezvous store but did not connect: it died or stopped answering)");
  }

 private:
  // The rank a key of gloo's belongs to, or -1.
  static int rank_of(const std::string& key) {
    std::string digits = key.rfind("rank_", 0) == 0 ? key.substr(5) : key;
    if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) return -1;
    return std::stoi(digits);
  }

  TcpStore& s_;
  int world_;
};

// What a gloo failure says, whichever kind it is: gloo throws gloo::Exception for I/O errors and
// timeouts, and gloo::EnforceNotMet (not a gloo::Exception) where a check fails, e.g. a peer's
// address of an unexpected size.
template <typename F>
void gloo_call(F&& f, const std::function<void(const std::string&)>& on_error) {
  try {
    f();
  } catch (const gloo::Exception& e) {
    on_error(e.what());
  } catch (const gloo::EnforceNotMet& e) {
    on_error(e.what());
  }
}

// A job of the communication thread, waited for by whoever submitted it.
struct Job {
  std::function<void()> fn;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::exception_ptr error;

  void wait() {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [&] { return done; });
    if (error) std::rethrow_exception(error);
  }
};

class GlooWork : public Work {
 public:
  explicit GlooWork(std::shared_ptr<Job> j) : job_(std::move(j)) {}
  void wait() override { job_->wait(); }

 private:
  std::shared_ptr<Job> job_;
};

class GlooGroup : public Group {
 public:
  explicit GlooGroup(const GroupOptions& o) : timeout_(o.timeout) {
    rank_ = o.rank;
    world_ = o.world_size;
    backend_ = "gloo";
    library_ = "gloo (TCP transport, linked at build time)";
    store_ = std::make_unique<TcpStore>(o.master_addr, o.master_port, o.rank == 0, o.timeout);
    store_->join(o.rank, o.world_size);
    StoreAdapter adapter(*store_, o.world_size);
    gloo::transport::tcp::attr attr;
    attr.hostname = hostname_for(o.master_addr);
    gloo_call(
        [&] {
          device_ = gloo::transport::tcp::CreateDevice(attr);
          auto ctx = std::make_shared<gloo::rendezvous::Context>(o.rank, o.world_size);
          ctx->setTimeout(o.timeout);
          ctx->connectFullMesh(adapter, device_);
          ctx_ = ctx;
          // Every rank is connected: rank 0's store (and its listening port) is no longer needed once
          // all have read what they needed, which the first barrier below proves.
          gloo::BarrierOptions b(ctx_);
          b.setTimeout(timeout_);
          gloo::barrier(b);
        },
        [&](const std::string& what) {
          fail("E_DIST", "process group (gloo, rank ", o.rank, " of ", o.world_size, "): ", what);
        });
    thread_ = std::thread([this] { loop(); });
  }

  ~GlooGroup() override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  std::shared_ptr<Work> start_all_reduce_sum(const Tensor& t) override {
    check_tensor(t, "allReduce");
    SIFT_CHECK(t.dtype == DType::F32 || t.dtype == DType::F64 || t.dtype == DType::I32 || t.dtype == DType::I64,
               "E_DTYPE", "allReduce: ", t.desc(), " (f32, f64, i32 or i64)");
    return std::make_shared<GlooWork>(submit("allReduce", [this, t] { all_reduce_now(t); }));
  }

  void all_reduce_sum(const Tensor& t) override {
    check_tensor(t, "allReduce");
    run("allReduce", [&] { all_reduce_now(t); });
  }

  void broadcast(const Tensor& t, int root) override {
    check_tensor(t, "broadcast");
    SIFT_CHECK(root >= 0 && root < world_, "E_ARG", "broadcast: root ", root, " is not a rank of ", world_);
    run("broadcast", [&] {
      gloo::BroadcastOptions opts(ctx_);
      opts.setTimeout(timeout_);
      opts.setRoot(root);
      opts.setOutput(static_cast<char*>(t.raw()), t.nbytes());
      gloo::broadcast(opts);
    });
  }

  void all_gather(const Tensor& in, const Tensor& out) override {
    check_tensor(in, "allGather");
    check_tensor(out, "allGather");
    SIFT_CHECK(in.dtype == out.dtype && out.nbytes() == in.nbytes() * size_t(world_), "E_SHAPE", "allGather: output ",
               out.desc(), " must hold ", world_, " x ", in.desc());
    run("allGather", [&] {
      gloo::AllgatherOptions opts(ctx_);
      opts.setTimeout(timeout_);
      opts.setInput(static_cast<char*>(in.raw()), in.nbytes());
      opts.setOutput(static_cast<char*>(out.raw()), out.nbytes());
      gloo::allgather(opts);
    });
  }

  void barrier() override {
    run("barrier", [&] {
      gloo::BarrierOptions opts(ctx_);
      opts.setTimeout(timeout_);
      gloo::barrier(opts);
    });
  }

 private:
  void all_reduce_now(const Tensor& t) {
    gloo::AllreduceOptions opts(ctx_);
    opts.setTimeout(timeout_);
    switch (t.dtype) {
      case DType::F32:
        set_sum<float>(opts, t);
        break;
      case DType::F64:
        set_sum<double>(opts, t);
        break;
      case DType::I32:
        set_sum<int32_t>(opts, t);
        break;
      case DType::I64:
        set_sum<int64_t>(opts, t);
        break;
      default:
        fail("E_DTYPE", "allReduce: ", t.desc(), " (f32, f64, i32 or i64)");
    }
    gloo::allreduce(opts);
  }

  template <typename T>
  static void set_sum(gloo::AllreduceOptions& opts, const Tensor& t) {
    opts.setOutput(t.data<T>(), size_t(t.numel()));
    void (*fn)(void*, const void*, const void*, size_t) = &gloo::sum<T>;
    opts.setReduceFunction(fn);
  }

  void check_tensor(const Tensor& t, const char* op) const {
    SIFT_CHECK(t.defined() && t.device().is_cpu(), "E_DEVICE", op, ": the gloo group takes CPU tensors, got ",
               t.desc());
    SIFT_CHECK(t.is_contiguous(), "E_ARG", op, ": the tensor must be contiguous");
  }

  // Queues f on the communication thread. A failure (a gloo error: a peer died, or none answered
  // within the timeout) breaks the group: gloo cannot recover a pair after an I/O error, so every
  // later collective fails with the same E_DIST at once.
  std::shared_ptr<Job> submit(const char* op, std::function<void()> f) {
    auto job = std::make_shared<Job>();
    job->fn = [this, op, f = std::move(f)] {
      std::string broken;
      {
        std::lock_guard<std::mutex> lk(mu_);
        broken = broken_;
      }
      SIFT_CHECK(broken.empty(), "E_DIST", "process group is broken: ", broken);
      gloo_call(f, [&](const std::string& what) {
        std::string why = str_cat(op, " failed on rank ", rank_, " of ", world_, ": ", what,
                                  " (a rank died or stopped answering within ", timeout_.count() / 1000.0, " s)");
        {
          std::lock_guard<std::mutex> lk(mu_);
          broken_ = why;
        }
        fail("E_DIST", why);
      });
    };
    {
      std::lock_guard<std::mutex> lk(mu_);
      SIFT_CHECK(!stop_, "E_DIST", "process group is closed");
      queue_.push_back(job);
    }
    cv_.notify_all();
    return job;
  }

  template <typename F>
  void run(const char* op, F&& f) {
    submit(op, std::function<void()>(std::forward<F>(f)))->wait();
  }

  void loop() {
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, and nothing left to run
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      try {
        job->fn();
      } catch (...) {
        job->error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lk(job->mu);
        job->done = true;
      }
      job->cv.notify_all();
    }
  }

  static std::string hostname_for(const std::string& master) {
    // Loopback rendezvous means a single-node group: bind gloo to loopback too, so it needs no
    // resolvable hostname. Otherwise gloo binds to the address this host's name resolves to.
    if (master == "127.0.0.1" || master == "localhost" || master == "::1") return "127.0.0.1";
    char buf[256] = {0};
    if (gethostname(buf, sizeof buf - 1) == 0 && buf[0]) return buf;
    return "127.0.0.1";
  }

  std::chrono::milliseconds timeout_;
  std::unique_ptr<TcpStore> store_;
  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::Context> ctx_;
  std::mutex mu_;  // guards queue_, stop_ and broken_
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool stop_ = false;
  std::string broken_;
  std::thread thread_;
};

}  // namespace

bool gloo_available() { return true; }

std::shared_ptr<Group> create_gloo_group(const GroupOptions& opts) { return std::make_shared<GlooGroup>(opts); }

#else

bool gloo_available() { return false; }

std::shared_ptr<Group> create_gloo_group(const GroupOptions&) {
  fail("E_UNSUPPORTED",
       "CPU process groups need gloo, and this build of sift-ft was made without it (install libgloo-dev, "
       "e.g. apt-get install libgloo-dev, then rebuild: npm run build:native)");
}

#endif

std::shared_ptr<Group> create_group(const GroupOptions& opts) {
  SIFT_CHECK(opts.world_size >= 1, "E_ARG", "world size must be at least 1, got ", opts.world_size);
  SIFT_CHECK(opts.rank >= 0 && opts.rank < opts.world_size, "E_ARG", "rank ", opts.rank, " is not in 0..",
             opts.world_size - 1);
  SIFT_CHECK(opts.timeout.count() > 0, "E_ARG", "process group timeout must be positive");
  if (opts.backend == "gloo") return create_gloo_group(opts);
  if (opts.backend == "nccl") return create_nccl_group(opts);
  fail("E_ARG", "process group backend must be gloo or nccl, got '", opts.backend, "'");
}

}  // namespace sift::dist
