// Bindings of the process group (see lib/engine/addon-types.ts, "Process group"): distInit joins
// the group off the JavaScript thread (rendezvous blocks until every rank arrives); the
// collectives are queued on the tensor's stream like any op, so they run in program order on every
// rank and JavaScript waits only where it reads a result. An error in a queued collective (E_DIST:
// a dead peer, a timeout) surfaces at the next read of data, as other asynchronous errors do.
#include <memory>
#include <mutex>

#include "../core/executor.h"
#include "../dist/group.h"
#include "util.h"

namespace sift::binding {
namespace {

std::mutex group_mu;
std::shared_ptr<dist::Group> the_group;

std::shared_ptr<dist::Group> current_group() {
  std::lock_guard<std::mutex> lk(group_mu);
  SIFT_CHECK(the_group, "E_ARG", "no process group: call distInit first");
  return the_group;
}

dist::GroupOptions parse_options(const Napi::CallbackInfo& info) {
  SIFT_CHECK(info.Length() > 0 && info[0].IsObject(), "E_ARG", "distInit expects an options object");
  Napi::Object o = info[0].As<Napi::Object>();
  auto num = [&](const char* k, double def) -> double {
    Napi::Value v = o.Get(k);
    if (v.IsUndefined() || v.IsNull()) return def;
    SIFT_CHECK(v.IsNumber(), "E_ARG", "distInit: ", k, " must be a number");
    return v.As<Napi::Number>().DoubleValue();
  };
  auto str = [&](const char* k, const char* def) -> std::string {
    Napi::Value v = o.Get(k);
    if (v.IsUndefined() || v.IsNull()) return def;
    SIFT_CHECK(v.IsString(), "E_ARG", "distInit: ", k, " must be a string");
    return v.As<Napi::String>().Utf8Value();
  };
  dist::GroupOptions g;
  g.rank = int(num("rank", 0));
  g.world_size = int(num("worldSize", 1));
  g.master_addr = str("masterAddr", "127.0.0.1");
  g.master_port = int(num("masterPort", 29500));
  g.timeout = std::chrono::milliseconds(int64_t(num("timeoutMs", 600000)));
  g.backend = str("backend", "gloo");
  g.cuda_device = int(num("cudaDevice", 0));
  return g;
}

Napi::Value DistInit(const Napi::CallbackInfo& info) {
  dist::GroupOptions o = parse_options(info);
  {
    std::lock_guard<std::mutex> lk(group_mu);
    SIFT_CHECK(!the_group, "E_ARG", "this process already belongs to a process group (distDestroy first)");
  }
  // Any other failure of the rendezvous (a socket, the store) is E_DIST.
  return run_async(
      info.Env(), "sift-ft:distInit",
      [o = std::move(o)] {
        auto g = dist::create_group(o);
        std::lock_guard<std::mutex> lk(group_mu);
        the_group = std::move(g);
      },
      {}, "E_DIST");
}

Napi::Value DistDestroy(const Napi::CallbackInfo& info) {
  std::shared_ptr<dist::Group> g;
  {
    std::lock_guard<std::mutex> lk(group_mu);
    g = std::move(the_group);
  }
  // Queued collectives hold their own reference: the group closes once they have run.
  if (g) CpuExecutor::get().sync();
  return info.Env().Undefined();
}

Napi::Value DistInfo(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("gloo", Napi::Boolean::New(info.Env(), dist::gloo_available()));
  std::shared_ptr<dist::Group> g;
  {
    std::lock_guard<std::mutex> lk(group_mu);
    g = the_group;
  }
  if (g) {
    o.Set("rank", g->rank());
    o.Set("worldSize", g->world_size());
    o.Set("backend", g->backend());
  }
  return o;
}

// Collectives are queued on the stream of the tensor's device. For CUDA tensors (NCCL) the
// backend launches on the device's stream itself, so the call runs at once.
template <typename F>
void queue_collective(const Tensor& t, F&& f) {
  launch_on(t.device().is_cpu(), std::forward<F>(f));
}

Napi::Value DistAllReduce(const Napi::CallbackInfo& info) {
  auto g = current_group();
  Tensor t = arg_tensor(info, 0, "tensor");
  SIFT_CHECK(t.is_contiguous(), "E_ARG", "distAllReduce: the tensor must be contiguous");
  queue_collective(t, [g, t] { g->all_reduce_sum(t); });
  return info.Env().Undefined();
}

Napi::Value DistBroadcast(const Napi::CallbackInfo& info) {
  auto g = current_group();
  Tensor t = arg_tensor(info, 0, "tensor");
  int root = int(arg_int(info, 1, "root"));
  SIFT_CHECK(t.is_contiguous(), "E_ARG", "distBroadcast: the tensor must be contiguous");
  SIFT_CHECK(root >= 0 && root < g->world_size(), "E_ARG", "distBroadcast: root ", root, " is not a rank of ",
             g->world_size());
  queue_collective(t, [g, t, root] { g->broadcast(t, root); });
  return info.Env().Undefined();
}

Napi::Value DistAllGather(const Napi::CallbackInfo& info) {
  auto g = current_group();
  Tensor in = arg_tensor(info, 0, "tensor");
  SIFT_CHECK(in.is_contiguous(), "E_ARG", "distAllGather: the tensor must be contiguous");
  Shape shape = in.shape;
  shape.insert(shape.begin(), g->world_size());
  Tensor out = empty(shape, in.dtype, in.device());
  queue_collective(in, [g, in, out] { g->all_gather(in, out); });
  return wrap(info.Env(), out);
}

Napi::Value DistBarrier(const Napi::CallbackInfo& info) {
  auto g = current_group();
  Device d = info.Length() > 0 && info[0].IsString() ? parse_device(arg_string(info, 0, "device")) : Device{};
  if (d.is_cpu())
    CpuExecutor::get().enqueue([g] { g->barrier(); });
  else
    g->barrier();
  return info.Env().Undefined();
}

}  // namespace

SIFT_BINDINGS(dist_bindings) {
  SIFT_EXPORT("distInit", DistInit);
  SIFT_EXPORT("distDestroy", DistDestroy);
  SIFT_EXPORT("distInfo", DistInfo);
  SIFT_EXPORT("distAllReduce", DistAllReduce);
  SIFT_EXPORT("distBroadcast", DistBroadcast);
  SIFT_EXPORT("distAllGather", DistAllGather);
  SIFT_EXPORT("distBarrier", DistBarrier);
}

}  // namespace sift::binding
