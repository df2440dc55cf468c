// A process group: rank, world size and the collectives of data-parallel training, over gloo (CPU
// tensors, linked when present at build time) or NCCL (CUDA tensors, loaded at run time). One
// group per process, created once by rendezvous through rank 0's TcpStore. Collectives run on the
// tensor's stream (the CPU executor thread, or the CUDA stream), in the order they were queued,
// so every rank issues them in the same order; a dead or stuck peer ends them with E_DIST after
// the group's timeout. Each group runs its collectives off the compute path: gloo on its own
// communication thread, NCCL on its own communication stream. A blocking collective waits for
// them there; an asynchronous all-reduce (start_all_reduce_sum) returns a Work at once, so that a
// gradient bucket is reduced while the backward goes on, and Work::wait() orders its result
// before what is queued after it.
#pragma once
#include <chrono>
#include <memory>
#include <string>

#include "../core/tensor.h"

namespace sift::dist {

struct GroupOptions {
  int rank = 0;
  int world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::chrono::milliseconds timeout{600000};
  std::string backend = "gloo";  // gloo | nccl
  int cuda_device = 0;           // nccl: the device this rank drives
};

// An asynchronous collective in flight. wait() is called where start_*() was called (the CPU
// executor thread or the CUDA stream's host thread): gloo blocks until the collective ran (E_DIST
// on failure); NCCL makes the compute stream wait for it without blocking the host.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
};

class Group {
 public:
  virtual ~Group() = default;
  int rank() const { return rank_; }
  int world_size() const { return world_; }
  const std::string& backend() const { return backend_; }
  // The collective library and how the group was set up (e.g. "NCCL 2.21.5 (path): non-blocking
  // initialisation"), for logs and checks.
  const std::string& library() const { return library_; }
  // In place, contiguous tensors: f32, f64, i32, i64.
  virtual void all_reduce_sum(const Tensor& t) = 0;
  // Starts summing t over the ranks, in place, behind the work already queued on t's stream; t must
  // not be written until the Work has been waited for.
  virtual std::shared_ptr<Work> start_all_reduce_sum(const Tensor& t) = 0;
  virtual void broadcast(const Tensor& t, int root) = 0;
  // out holds world_size x in.numel() elements, rank r's input at r * in.numel().
  virtual void all_gather(const Tensor& in, const Tensor& out) = 0;
  virtual void barrier() = 0;

 protected:
  int rank_ = 0;
  int world_ = 1;
  std::string backend_;
  std::string library_;
};

// Blocks until every rank has joined (or E_DIST after the timeout). E_UNSUPPORTED when the
// backend is not available in this build or on this machine.
std::shared_ptr<Group> create_group(const GroupOptions& opts);
bool gloo_available();

// Backends (each file defines its own; the gloo one throws E_UNSUPPORTED when built without it).
std::shared_ptr<Group> create_gloo_group(const GroupOptions& opts);
std::shared_ptr<Group> create_nccl_group(const GroupOptions& opts);

}  // namespace sift::dist
