// Validation and queueing of the optimizer ops. The state of every tensor (m, v, masters) must be
// contiguous f32 because the kernels update it in place; gradients and indices are made dense.
#include "optim.h"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <string>

#include "dispatch.h"
#include "tensor_ops.h"
#include "../cpu/optim.h"
#ifdef SIFT_WITH_CUDA
#include "../cuda/optim.h"
#endif

namespace sift {

AdamWScalars adamw_scalars(const AdamWHyper& hp) {
  const double bias1 = 1.0 - std::pow(hp.beta1, double(hp.step));
  const double bias2 = 1.0 - std::pow(hp.beta2, double(hp.step));
  AdamWScalars s;
  s.beta1 = float(hp.beta1);
  s.one_minus_beta1 = float(1.0 - hp.beta1);
  s.beta2 = float(hp.beta2);
  s.one_minus_beta2 = float(1.0 - hp.beta2);
  s.eps = float(hp.eps);
  s.decay = float(1.0 - hp.lr * hp.weight_decay);
  s.step_size = float(hp.lr / bias1);
  s.bias2_sqrt = float(std::sqrt(bias2));
  return s;
}

namespace ops {
namespace {

void check_hyper(const AdamWHyper& hp, const char* op) {
  auto finite = [](double x) { return std::isfinite(x); };
  SIFT_CHECK(finite(hp.lr) && hp.lr >= 0, "E_ARG", op, ": lr must be a finite number >= 0, got ", hp.lr);
  SIFT_CHECK(finite(hp.beta1) && hp.beta1 >= 0 && hp.beta1 < 1, "E_ARG", op, ": beta1 must be in [0, 1), got ",
             hp.beta1);
  SIFT_CHECK(finite(hp.beta2) && hp.beta2 >= 0 && hp.beta2 < 1, "E_ARG", op, ": beta2 must be in [0, 1), got ",
             hp.beta2);
  SIFT_CHECK(finite(hp.eps) && hp.eps >= 0, "E_ARG", op, ": eps must be a finite number >= 0, got ", hp.eps);
  SIFT_CHECK(finite(hp.weight_decay) && hp.weight_decay >= 0, "E_ARG", op,
             ": weightDecay must be a finite number >= 0, got ", hp.weight_decay);
  SIFT_CHECK(hp.step >= 1, "E_ARG", op, ": step must be an integer >= 1 (the step after this update), got ", hp.step);
}

void check_state(const Tensor& t, int64_t n, const char* op, const char* what, size_t i) {
  SIFT_CHECK(t.dtype == DType::F32, "E_DTYPE", op, ": ", what, "[", i, "] must be f32, got ", dtype_name(t.dtype));
  SIFT_CHECK(t.numel() == n, "E_SHAPE", op, ": ", what, "[", i, "] has ", t.numel(), " elements (", t.desc(),
             "), expected ", n);
  SIFT_CHECK(t.is_contiguous(), "E_ARG", op, ": ", what, "[", i, "] must be contiguous (it is updated in place)");
}

void check_device(const Tensor& t, Device dev, const char* op, const char* what, size_t i) {
  SIFT_CHECK(t.device() == dev, "E_DEVICE", op, ": ", what, "[", i, "] is on ", t.device().str(), ", expected ",
             dev.str());
}

// Each state tensor is written by the kernel: two of them sharing memory would race.
void check_distinct(const std::vector<const Tensor*>& ts, const char* op, size_t i) {
  for (size_t a = 0; a < ts.size(); a++)
    for (size_t b = a + 1; b < ts.size(); b++)
      SIFT_CHECK(ts[a]->raw() != ts[b]->raw() || ts[a]->numel() == 0, "E_ARG", op, ": the state tensors of tensor ", i,
                 " share memory");
}

void check_scale(const Tensor& scale, Device dev, const char* op) {
  if (!scale.defined()) return;
  SIFT_CHECK(scale.dtype == DType::F32, "E_DTYPE", op, ": scale must be f32, got ", dtype_name(scale.dtype));
  SIFT_CHECK(scale.numel() == 1, "E_SHAPE", op, ": scale must hold one value, got ", scale.desc());
  SIFT_CHECK(scale.device() == dev, "E_DEVICE", op, ": scale is on ", scale.device().str(), ", expected ", dev.str());
}

}  // namespace

namespace {
// setCudaSparseAdamW: 'rounds' (the sparse AdamW kernel as verified) or 'prefetch' (its variant that
// fetches the weight sectors into L2 first). SIFT_FT_CUDA_SPARSE_ADAMW sets the initial mode.
bool initial_sparse_prefetch() {
  const char* e = std::getenv("SIFT_FT_CUDA_SPARSE_ADAMW");
  return e && std::string(e) == "prefetch";
}
std::atomic<bool> g_sparse_prefetch{initial_sparse_prefetch()};
}  // namespace

std::string set_cuda_sparse_adamw(const std::string& mode) {
  SIFT_CHECK(mode == "rounds" || mode == "prefetch", "E_ARG",
             "setCudaSparseAdamW: mode must be 'rounds' or 'prefetch', got '", mode, "'");
  const bool prev = g_sparse_prefetch.exchange(mode == "prefetch");
  return prev ? "prefetch" : "rounds";
}

void sparse_adamw(const std::vector<Tensor>& weights, const std::vector<Tensor>& indices,
                  const std::vector<Tensor>& grads, const std::vector<Tensor>& m, const std::vector<Tensor>& v,
                  const std::vector<Tensor>& masters, const AdamWHyper& hp, const Tensor& scale) {
  const char* op = "sparseAdamW";
  const size_t n = weights.size();
  SIFT_CHECK(indices.size() == n && grads.size() == n && m.size() == n && v.size() == n && masters.size() == n, "E_ARG",
             op, ": the lists differ in length (weights ", n, ", indices ", indices.size(), ", grads ", grads.size(),
             ", m ", m.size(), ", v ", v.size(), ", masters ", masters.size(), ")");
  check_hyper(hp, op);
  if (n == 0) return;
  const Device dev = weights[0].device();
  check_device_usable(dev);
  check_scale(scale, dev, op);
  std::vector<Tensor> idx(n), g(n);
  for (size_t i = 0; i < n; i++) {
    const Tensor& w = weights[i];
    check_device(w, dev, op, "weights", i);
    check_device(indices[i], dev, op, "indices", i);
    check_device(grads[i], dev, op, "grads", i);
    check_device(m[i], dev, op, "m", i);
    check_device(v[i], dev, op, "v", i);
    check_device(masters[i], dev, op, "masters", i);
    SIFT_CHECK(is_float(w.dtype), "E_DTYPE", op, ": weights[", i, "] must be a float tensor, got ",
               dtype_name(w.dtype));
    SIFT_CHECK(w.is_contiguous(), "E_ARG", op, ": weights[", i, "] must be contiguous (written at flat indices)");
    SIFT_CHECK(is_int(indices[i].dtype), "E_DTYPE", op, ": indices[", i, "] must be i32 or i64, got ",
               dtype_name(indices[i].dtype));
    SIFT_CHECK(indices[i].dim() == 1, "E_SHAPE", op, ": indices[", i, "] must be 1-D, got ", indices[i].desc());
    const int64_t k = indices[i].numel();
    SIFT_CHECK(k <= w.numel(), "E_SHAPE", op, ": indices[", i, "] selects ", k, " entries of a weight with ",
               w.numel());
    SIFT_CHECK(grads[i].dtype == DType::F32, "E_DTYPE", op, ": grads[", i, "] must be f32, got ",
               dtype_name(grads[i].dtype));
    SIFT_CHECK(grads[i].numel() == k, "E_SHAPE", op, ": grads[", i, "] has ", grads[i].numel(),
               " elements, expected k = ", k);
    check_state(m[i], k, op, "m", i);
    check_state(v[i], k, op, "v", i);
    check_state(masters[i], k, op, "masters", i);
    check_distinct({&m[i], &v[i], &masters[i]}, op, i);
    idx[i] = dense(indices[i]);
    g[i] = dense(grads[i]);
  }
  const AdamWScalars s = adamw_scalars(hp);
  // As SIFT_ON_DEVICE, without copying the lists twice: the queued CPU work takes one copy of
  // each (idx and g are moved in); the CUDA launch reads them in place.
  if (dev.is_cpu()) {
    CpuExecutor::get().enqueue([w = weights, idx = std::move(idx), g = std::move(g), mm = m, vv = v, pp = masters, s,
                                sc = scale]() { cpu::sparse_adamw(w, idx, g, mm, vv, pp, s, sc); });
  } else {
    SIFT_CUDA_BRANCH(::sift::cuda::set_device(dev.index);
                     cuda::sparse_adamw(weights, idx, g, m, v, masters, s, scale, g_sparse_prefetch.load()););
  }
}

void adamw(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& m,
           const std::vector<Tensor>& v, const std::vector<Tensor>& masters, const AdamWHyper& hp,
           const Tensor& scale) {
  const char* op = "adamW";
  const size_t n = params.size();
  SIFT_CHECK(grads.size() == n && m.size() == n && v.size() == n && masters.size() == n, "E_ARG", op,
             ": the lists differ in length (params ", n, ", grads ", grads.size(), ", m ", m.size(), ", v ", v.size(),
             ", masters ", masters.size(), ")");
  check_hyper(hp, op);
  if (n == 0) return;
  const Device dev = params[0].device();
  check_device_usable(dev);
  check_scale(scale, dev, op);
  std::vector<Tensor> g(n);
  for (size_t i = 0; i < n; i++) {
    const Tensor& p = params[i];
    check_device(p, dev, op, "params", i);
    check_device(grads[i], dev, op, "grads", i);
    check_device(m[i], dev, op, "m", i);
    check_device(v[i], dev, op, "v", i);
    SIFT_CHECK(is_float(p.dtype), "E_DTYPE", op, ": params[", i, "] must be a float tensor, got ", dtype_name(p.dtype));
    SIFT_CHECK(p.is_contiguous(), "E_ARG", op, ": params[", i, "] must be contiguous (updated in place)");
    SIFT_CHECK(is_float(grads[i].dtype), "E_DTYPE", op, ": grads[", i, "] must be a float tensor, got ",
               dtype_name(grads[i].dtype));
    SIFT_CHECK(grads[i].shape == p.shape, "E_SHAPE", op, ": grads[", i, "] has shape ", shape_str(grads[i].shape),
               ", params[", i, "] ", shape_str(p.shape));
    const int64_t k = p.numel();
    check_state(m[i], k, op, "m", i);
    check_state(v[i], k, op, "v", i);
    std::vector<const Tensor*> state{&m[i], &v[i], &p};
    if (masters[i].defined()) {
      check_device(masters[i], dev, op, "masters", i);
      check_state(masters[i], k, op, "masters", i);
      state.push_back(&masters[i]);
    }
    check_distinct(state, op, i);
    g[i] = dense(grads[i]);
  }
  const AdamWScalars s = adamw_scalars(hp);
  // As in sparse_adamw: one copy of each list into the queued CPU work, none for CUDA.
  if (dev.is_cpu()) {
    CpuExecutor::get().enqueue([p = params, g = std::move(g), mm = m, vv = v, ms = masters, s, sc = scale]() {
      cpu::adamw(p, g, mm, vv, ms, s, sc);
    });
  } else {
    SIFT_CUDA_BRANCH(::sift::cuda::set_device(dev.index); cuda::adamw(params, g, m, v, masters, s, scale););
  }
}

Tensor clip_coefficient(const Tensor& norm_sq, double max_norm) {
  const char* op = "clipCoefficient";
  SIFT_CHECK(std::isfinite(max_norm) && max_norm > 0, "E_ARG", op, ": maxNorm must be a finite number > 0, got ",
             max_norm);
  SIFT_CHECK(norm_sq.dtype == DType::F32, "E_DTYPE", op, ": normSq must be f32, got ", dtype_name(norm_sq.dtype));
  SIFT_CHECK(norm_sq.numel() == 1, "E_SHAPE", op, ": normSq must hold one value, got ", norm_sq.desc());
  const Device dev = norm_sq.device();
  check_device_usable(dev);
  Tensor out = empty({}, DType::F32, dev);
  const Tensor in = norm_sq;
  const float mx = float(max_norm);
  SIFT_ON_DEVICE(dev, cpu::clip_coefficient(in, out, mx), cuda::clip_coefficient(in, out, mx));
  return out;
}

}  // namespace ops
}  // namespace sift
