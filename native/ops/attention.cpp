// Attention-family ops. Inputs may be strided views: attention kernels read q, k, v and the
// output gradient through their strides as long as the head dim is unit-stride (a transpose of
// [B, T, H, D] qualifies, so no copy is made for the usual layout); other layouts are made
// dense. Masks are normalised here so kernels see one of two forms (see AttnDesc).
#include "attention.h"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <string>
#include <tuple>

#include "dispatch.h"
#include "tensor_ops.h"
#include "../cpu/attention.h"
#include "../cpu/dropout.h"
#include "../cpu/rotary.h"
#ifdef SIFT_WITH_CUDA
#include "../cuda/attention.h"
#include "../cuda/dropout.h"
#include "../cuda/rotary.h"
#endif

namespace sift::ops {
namespace {

// setCudaAttention: 'auto' (tensor-core kernels where they apply) or 'simt' (CUDA cores only).
// The environment variable SIFT_FT_CUDA_ATTENTION=simt sets the initial mode.
bool initial_tensor_cores() {
  const char* e = std::getenv("SIFT_FT_CUDA_ATTENTION");
  return !(e && std::string(e) == "simt");
}
std::atomic<bool> g_tensor_cores{initial_tensor_cores()};

DType acc_dtype(DType t) { return t == DType::F64 ? DType::F64 : DType::F32; }

// A view whose last dim has unit stride (the kernels' row access), copying only when needed.
Tensor rows_unit_stride(const Tensor& t) {
  if (t.shape.back() <= 1 || t.strides.back() == 1) return t;
  return contiguous(t);
}

struct Prepared {
  Tensor q, k, v, mask;
  AttnDesc desc;
};

Prepared prepare(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, const std::optional<Tensor>& mask,
                 bool causal, double scale, double p, uint64_t seed, double softcap, int64_t window) {
  check_float(q, op);
  check_same_dtype(q, k, op);
  check_same_dtype(q, v, op);
  check_same_device(q, k, op);
  check_same_device(q, v, op);
  check_device_usable(q.device());
  SIFT_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "E_SHAPE", op, ": q, k, v must be 4-D [B, H, T, D], got ",
             shape_str(q.shape), ", ", shape_str(k.shape), ", ", shape_str(v.shape));
  SIFT_CHECK(k.shape == v.shape, "E_SHAPE", op, ": k ", shape_str(k.shape), " and v ", shape_str(v.shape),
             " must have the same shape");
  SIFT_CHECK(q.shape[0] == k.shape[0], "E_SHAPE", op, ": batch sizes differ (q ", shape_str(q.shape), ", k ",
             shape_str(k.shape), ")");
  SIFT_CHECK(q.shape[3] == k.shape[3], "E_SHAPE", op, ": head dims differ (q ", shape_str(q.shape), ", k ",
             shape_str(k.shape), ")");
  SIFT_CHECK(k.shape[1] > 0 && q.shape[1] % k.shape[1] == 0, "E_SHAPE", op, ": ", q.shape[1],
             " query heads are not a multiple of ", k.shape[1], " key/value heads");
  SIFT_CHECK(std::isfinite(scale), "E_ARG", op, ": scale must be finite, got ", scale);
  SIFT_CHECK(p >= 0.0 && p < 1.0, "E_ARG", op, ": dropoutP must be in [0, 1), got ", p);
  SIFT_CHECK(std::isfinite(softcap) && softcap >= 0.0, "E_ARG", op,
             ": softcap must be a finite number >= 0 (0 = off), got ", softcap);
  SIFT_CHECK(window >= 0, "E_ARG", op, ": window must be an integer >= 0 (0 = off), got ", window);
  SIFT_CHECK(window == 0 || causal, "E_ARG", op,
             ": a sliding window applies on top of the causal mask; set causal (got window ", window, " without it)");

  Prepared r;
  r.q = rows_unit_stride(q);
  r.k = rows_unit_stride(k);
  r.v = rows_unit_stride(v);
  r.desc.causal = causal;
  r.desc.scale = scale;
  r.desc.softcap = softcap;
  r.desc.window = window;
  r.desc.dropout_p = p;
  r.desc.seed = seed;
  r.desc.tensor_cores = g_tensor_cores.load(std::memory_order_relaxed);
  if (!mask) return r;

  const Tensor& m = *mask;
  check_same_device(q, m, op);
  const int64_t B = q.shape[0], H = q.shape[1], Tq = q.shape[2], Tk = k.shape[2];
  if (m.dtype == DType::BOOL) {
    SIFT_CHECK(m.dim() == 2 && m.shape[0] == B && m.shape[1] == Tk, "E_SHAPE", op,
               ": a bool mask is a key padding mask of shape [B, Tk] = [", B, ", ", Tk, "], got ", shape_str(m.shape));
    r.mask = dense(m);
    r.desc.mask = AttnMask::KeyPadding;
    return r;
  }
  SIFT_CHECK(m.dtype == q.dtype || m.dtype == DType::F32, "E_DTYPE", op, ": an additive mask must be ",
             dtype_name(q.dtype), " or f32 (or a bool padding mask), got ", dtype_name(m.dtype));
  const Shape full = {B, H, Tq, Tk};
  SIFT_CHECK(m.dim() <= 4, "E_SHAPE", op, ": mask ", shape_str(m.shape), " does not broadcast to ", shape_str(full));
  // Cast at the mask's own (broadcast) size, then view it as [B, H, Tq, Tk] with zero strides.
  Tensor mc = cast(m, acc_dtype(q.dtype));
  Shape strides(4, 0);
  const int64_t lead = 4 - m.dim();
  for (int64_t d = 0; d < m.dim(); d++) {
    const int64_t fd = lead + d;
    SIFT_CHECK(m.shape[d] == full[fd] || m.shape[d] == 1, "E_SHAPE", op, ": mask ", shape_str(m.shape),
               " does not broadcast to ", shape_str(full));
    strides[fd] = m.shape[d] == 1 ? 0 : mc.strides[d];
  }
  r.mask = make_view(mc, full, strides, mc.offset);
  r.desc.mask = AttnMask::Additive;
  return r;
}

}  // namespace

std::pair<Tensor, Tensor> attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const std::optional<Tensor>& mask, bool causal, double scale, double dropout_p,
                                    uint64_t seed, double softcap, int64_t window) {
  Prepared pr = prepare("attention", q, k, v, mask, causal, scale, dropout_p, seed, softcap, window);
  Device dev = q.device();
  Tensor out = empty(q.shape, q.dtype, dev);
  Tensor lse = empty({q.shape[0], q.shape[1], q.shape[2]}, acc_dtype(q.dtype), dev);
  if (out.numel() == 0 && lse.numel() == 0) return {out, lse};
  Tensor qd = pr.q, kd = pr.k, vd = pr.v, md = pr.mask;
  AttnDesc desc = pr.desc;
  SIFT_ON_DEVICE(dev, cpu::attention_forward(qd, kd, vd, md, out, lse, desc),
                 cuda::attention_forward(qd, kd, vd, md, out, lse, desc));
  return {out, lse};
}

std::tuple<Tensor, Tensor, Tensor> attention_backward(const Tensor& gout, const Tensor& q, const Tensor& k,
                                                      const Tensor& v, const Tensor& out, const Tensor& lse,
                                                      const std::optional<Tensor>& mask, bool causal, double scale,
                                                      double dropout_p, uint64_t seed, double softcap, int64_t window) {
  const char* op = "attentionBackward";
  Prepared pr = prepare(op, q, k, v, mask, causal, scale, dropout_p, seed, softcap, window);
  for (const Tensor* t : {&gout, &out, &lse}) check_same_device(q, *t, op);
  check_same_dtype(q, gout, op);
  check_same_dtype(q, out, op);
  SIFT_CHECK(gout.shape == q.shape, "E_SHAPE", op, ": gradient ", shape_str(gout.shape), " for q ", shape_str(q.shape));
  SIFT_CHECK(out.shape == q.shape, "E_SHAPE", op, ": out ", shape_str(out.shape), " for q ", shape_str(q.shape));
  const Shape lse_shape = {q.shape[0], q.shape[1], q.shape[2]};
  SIFT_CHECK(lse.shape == lse_shape, "E_SHAPE", op, ": lse ", shape_str(lse.shape), ", expected ",
             shape_str(lse_shape));
  SIFT_CHECK(lse.dtype == acc_dtype(q.dtype), "E_DTYPE", op, ": lse must be ", dtype_name(acc_dtype(q.dtype)), ", got ",
             dtype_name(lse.dtype));
  Device dev = q.device();
  Tensor gq = empty(q.shape, q.dtype, dev);
  Tensor gk = empty(k.shape, k.dtype, dev);
  Tensor gv = empty(v.shape, v.dtype, dev);
  if (gq.numel() == 0 && gk.numel() == 0) return {gq, gk, gv};
  if (gq.numel() == 0 || gk.numel() == 0) {  // no queries or no keys: every gradient is zero
    fill_(gq, 0.0);
    fill_(gk, 0.0);
    fill_(gv, 0.0);
    return {gq, gk, gv};
  }
  Tensor god = rows_unit_stride(gout), od = dense(out), ld = dense(lse);
  Tensor qd = pr.q, kd = pr.k, vd = pr.v, md = pr.mask;
  AttnDesc desc = pr.desc;
  SIFT_ON_DEVICE(dev, cpu::attention_backward(god, qd, kd, vd, od, ld, md, gq, gk, gv, desc),
                 cuda::attention_backward(god, qd, kd, vd, od, ld, md, gq, gk, gv, desc));
  return {gq, gk, gv};
}

Tensor rotary(const Tensor& x, const Tensor& positions, const Tensor& inv_freq, bool inverse) {
  const char* op = "rotary";
  check_float(x, op);
  SIFT_CHECK(is_int(positions.dtype), "E_DTYPE", op, ": positions must be i32 or i64, got ",
             dtype_name(positions.dtype));
  check_float(inv_freq, op);
  check_same_device(x, positions, op);
  check_same_device(x, inv_freq, op);
  check_device_usable(x.device());
  SIFT_CHECK(x.dim() == 4, "E_SHAPE", op, ": x must be [B, H, T, D], got ", shape_str(x.shape));
  const int64_t B = x.shape[0], T = x.shape[2], D = x.shape[3];
  SIFT_CHECK(D % 2 == 0, "E_SHAPE", op, ": head dim must be even, got ", D);
  SIFT_CHECK(inv_freq.dim() == 1 && inv_freq.shape[0] == D / 2, "E_SHAPE", op, ": invFreq must be [", D / 2, "], got ",
             shape_str(inv_freq.shape));
  const bool shared = positions.dim() == 1;
  SIFT_CHECK((shared && positions.shape[0] == T) ||
                 (positions.dim() == 2 && positions.shape[0] == B && positions.shape[1] == T),
             "E_SHAPE", op, ": positions must be [T] = [", T, "] or [B, T] = [", B, ", ", T, "], got ",
             shape_str(positions.shape));
  Tensor pos = dense(cast(positions, DType::I64));
  Tensor inv = dense(cast(inv_freq, acc_dtype(x.dtype)));
  const int64_t pos_bs = shared ? 0 : T;
  Tensor out = empty(x.shape, x.dtype, x.device());
  if (out.numel() == 0) return out;
  Device dev = x.device();
  Tensor xd = x;
  SIFT_ON_DEVICE(dev, cpu::rotary(xd, pos, pos_bs, inv, out, inverse),
                 cuda::rotary(xd, pos, pos_bs, inv, out, inverse));
  return out;
}

Tensor dropout(const Tensor& x, double p, uint64_t seed) {
  check_float(x, "dropout");
  check_device_usable(x.device());
  SIFT_CHECK(p >= 0.0 && p < 1.0, "E_ARG", "dropout: p must be in [0, 1), got ", p);
  Tensor xd = dense(x);
  Tensor y = empty(x.shape, x.dtype, x.device());
  if (y.numel() == 0) return y;
  Device dev = x.device();
  SIFT_ON_DEVICE(dev, cpu::dropout(xd, y, p, seed), cuda::dropout(xd, y, p, seed));
  return y;
}

std::string set_cuda_attention(const std::string& mode) {
  SIFT_CHECK(mode == "auto" || mode == "simt", "E_ARG",
             "setCudaAttention: mode must be 'auto' (tensor cores where they apply) or 'simt', got '", mode, "'");
  const bool prev = g_tensor_cores.exchange(mode == "auto");
  return prev ? "auto" : "simt";
}

}  // namespace sift::ops
