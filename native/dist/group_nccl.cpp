// The CUDA backend: NCCL, loaded at run time (dlopen) so that the build needs no NCCL and one
// binary runs with or without it. The library is looked for in SIFT_FT_NCCL (a file), the
// loader's search path, CUDA_HOME/CUDA_PATH, the toolkit folders, and PyTorch's wheel
// (site-packages/nvidia/nccl/lib). Rank 0's ncclUniqueId reaches the others through the TcpStore.
// Collectives are launched on the device's compute stream, so they are ordered with the kernels
// that produce and consume the tensors, and the host does not wait for them.
#include <dlfcn.h>
#include <glob.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
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

struct Nccl {
  int (*get_unique_id)(NcclUniqueId*) = nullptr;
  int (*comm_init_rank)(NcclComm*, int, NcclUniqueId, int) = nullptr;
  int (*comm_destroy)(NcclComm) = nullptr;
  int (*comm_abort)(NcclComm) = nullptr;
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
      l->all_reduce = reinterpret_cast<decltype(l->all_reduce)>(dlsym(h, "ncclAllReduce"));
      l->broadcast = reinterpret_cast<decltype(l->broadcast)>(dlsym(h, "ncclBroadcast"));
      l->all_gather = reinterpret_cast<decltype(l->all_gather)>(dlsym(h, "ncclAllGather"));
      l->error_string = reinterpret_cast<decltype(l->error_string)>(dlsym(h, "ncclGetErrorString"));
      if (!l->get_unique_id || !l->comm_init_rank || !l->comm_destroy || !l->all_reduce || !l->broadcast ||
          !l->all_gather || !l->error_string) {
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

class NcclGroup : public Group {
 public:
  NcclGroup(const GroupOptions& o, Nccl* lib) : lib_(lib), device_(o.cuda_device) {
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
    scratch_ = cuda::alloc(device_, 16);
  }

  ~NcclGroup() override {
    if (scratch_) cuda::release(device_, scratch_, 16);
    if (comm_) lib_->comm_destroy(comm_);
  }

  void all_reduce_sum(const Tensor& t) override {
    check_tensor(t, "allReduce");
    cuda::set_device(device_);
    check(lib_->all_reduce(t.raw(), t.raw(), size_t(t.numel()), nccl_type(t.dtype), kNcclSum, comm_,
                           cuda::stream(device_)),
          "ncclAllReduce");
  }

  void broadcast(const Tensor& t, int root) override {
    check_tensor(t, "broadcast");
    cuda::set_device(device_);
    check(lib_->broadcast(t.raw(), t.raw(), t.nbytes(), 0 /* int8: bytes */, root, comm_, cuda::stream(device_)),
          "ncclBroadcast");
  }

  void all_gather(const Tensor& in, const Tensor& out) override {
    check_tensor(in, "allGather");
    check_tensor(out, "allGather");
    SIFT_CHECK(in.dtype == out.dtype && out.nbytes() == in.nbytes() * size_t(world_), "E_SHAPE", "allGather: output ",
               out.desc(), " must hold ", world_, " x ", in.desc());
    cuda::set_device(device_);
    check(lib_->all_gather(in.raw(), out.raw(), in.nbytes(), 0, comm_, cuda::stream(device_)), "ncclAllGather");
  }

  void barrier() override {
    cuda::set_device(device_);
    check(lib_->all_reduce(scratch_, scratch_, 1, kInt32, kNcclSum, comm_, cuda::stream(device_)),
          "ncclAllReduce (barrier)");
    cuda::synchronize(device_);
  }

 private:
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
  std::unique_ptr<TcpStore> store_;
  NcclComm comm_ = nullptr;
  void* scratch_ = nullptr;
};

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
