// Bindings of the process group (see lib/engine/addon-types.ts, "Process group"): distInit joins
// the group off the JavaScript thread (rendezvous blocks until every rank arrives); the
// collectives are queued on the tensor's stream like any op, so they run in program order on every
// rank and JavaScript waits only where it reads a result. distAllReduceStart / distWait split an
// all-reduce in two (a gradient bucket reduced while the backward goes on). An error in a queued
// collective (E_DIST: a dead peer, a timeout) surfaces at the next read of data, as other
// asynchronous errors do.
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "../core/executor.h"
#include "../dist/group.h"
#include "util.h"

namespace sift::binding {
namespace {

std::mutex group_mu;
std::shared_ptr<dist::Group> the_group;

// Asynchronous all-reduces started and not yet waited for, by id. The slot is filled when the
// start runs on the tensor's stream (later than the call on CPU), and read by the wait queued
// behind it on the same stream.
struct WorkSlot {
  std::shared_ptr<dist::Work> work;
  bool cpu = true;
};
std::unordered_map<uint64_t, std::shared_ptr<WorkSlot>> works;
uint64_t next_work = 1;

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
    works.clear();
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
    o.Set("library", g->library());
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

// distAllReduceStart(t): starts summing t over the ranks, in place, once the work queued before it
// on t's stream has run, and returns an id for distWait. t must not be written until then.
Napi::Value DistAllReduceStart(const Napi::CallbackInfo& info) {
  auto g = current_group();
  Tensor t = arg_tensor(info, 0, "tensor");
  SIFT_CHECK(t.is_contiguous(), "E_ARG", "distAllReduceStart: the tensor must be contiguous");
  auto slot = std::make_shared<WorkSlot>();
  slot->cpu = t.device().is_cpu();
  queue_collective(t, [g, t, slot] { slot->work = g->start_all_reduce_sum(t); });
  uint64_t id;
  {
    std::lock_guard<std::mutex> lk(group_mu);
    id = next_work++;
    works[id] = slot;
  }
  return Napi::Number::New(info.Env(), double(id));
}

// distWait(id): what is queued after it on the tensor's stream runs after the all-reduce ended.
Napi::Value DistWait(const Napi::CallbackInfo& info) {
  uint64_t id = uint64_t(arg_int(info, 0, "id"));
  std::shared_ptr<WorkSlot> slot;
  {
    std::lock_guard<std::mutex> lk(group_mu);
    auto it = works.find(id);
    SIFT_CHECK(it != works.end(), "E_ARG", "distWait: ", id, " is not an all-reduce in flight (waited for already?)");
    slot = it->second;
    works.erase(it);
  }
  launch_on(slot->cpu, [slot] {
    // Empty only when the start itself failed (its error is the one the stream reports).
    if (slot->work) slot->work->wait();
  });
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
  SIFT_EXPORT("distAllReduceStart", DistAllReduceStart);
  SIFT_EXPORT("distWait", DistWait);
  SIFT_EXPORT("distBroadcast", DistBroadcast);
  SIFT_EXPORT("distAllGather", DistAllGather);
  SIFT_EXPORT("distBarrier", DistBarrier);
}

}  // namespace sift::binding
