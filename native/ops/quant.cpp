// Validation of quantized weight states and the tiled quantized linear products. On the CPU one
// queued kernel (cpu::quant_linear) dequantizes tile after tile into one buffer and runs the GEMM
// on each; on CUDA the tiles are dequantized by a kernel and multiplied with the engine's GEMM.
#include "quant.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>

#include "dispatch.h"
#include "elementwise.h"
#include "matmul.h"
#include "tensor_ops.h"
#include "../cpu/quant.h"
#ifdef SIFT_WITH_CUDA
#include "../cuda/quant.h"
#endif

namespace sift::ops {
namespace {

constexpr int64_t kNf4Block = 64;
constexpr int64_t kAbsmaxBlock = 256;

void check_format(const std::string& format) {
  SIFT_CHECK(format == "int8" || format == "nf4", "E_ARG", "quantize: format must be 'int8' or 'nf4', got '", format,
             "'");
}

void expect(const Tensor& t, DType dtype, int64_t numel, Device dev, const char* what) {
  SIFT_CHECK(t.defined(), "E_ARG", "quantized weight: missing ", what);
  SIFT_CHECK(t.dtype == dtype, "E_DTYPE", "quantized weight: ", what, " must be ", dtype_name(dtype), ", got ",
             dtype_name(t.dtype));
  SIFT_CHECK(t.numel() == numel, "E_SHAPE", "quantized weight: ", what, " must have ", numel, " elements, got ",
             t.numel());
  SIFT_CHECK(t.is_contiguous(), "E_ARG", "quantized weight: ", what, " must be contiguous");
  SIFT_CHECK(t.device() == dev, "E_DEVICE", "quantized weight: ", what, " is on ", t.device().str(), ", expected ",
             dev.str());
}

// Checks a state against the format and shape; returns its device.
Device check_state(const std::vector<Tensor>& s, const std::string& format, int64_t rows, int64_t cols) {
  check_format(format);
  SIFT_CHECK(rows >= 1 && cols >= 1, "E_SHAPE", "quantized weight: shape [", rows, ", ", cols, "] is empty");
  const size_t want = format == "int8" ? 2 : 4;
  SIFT_CHECK(s.size() == want, "E_ARG", "quantized weight: ", format, " needs ", want, " state tensors, got ",
             s.size());
  SIFT_CHECK(s[0].defined(), "E_ARG", "quantized weight: missing codes");
  Device dev = s[0].device();
  check_device_usable(dev);
  const int64_t n = rows * cols;
  if (format == "int8") {
    expect(s[0], DType::BOOL, n, dev, "codes");
    expect(s[1], DType::F32, rows, dev, "absmax");
  } else {
    const int64_t nb = (n + kNf4Block - 1) / kNf4Block;
    expect(s[0], DType::BOOL, (n + 1) / 2, dev, "packed codes");
    expect(s[1], DType::BOOL, nb, dev, "absmax codes");
    expect(s[2], DType::F32, (nb + kAbsmaxBlock - 1) / kAbsmaxBlock, dev, "absmax scales");
    expect(s[3], DType::F32, 1, dev, "offset");
  }
  return dev;
}

// setQuantGemm: 'tiles' (each tile of weight rows dequantized to memory, then the engine's GEMM)
// or 'fused' (cuda::quant_gemm: dequantized inside the GEMM's shared-memory tiles). The
// environment variable SIFT_FT_CUDA_QUANT_GEMM=fused sets the initial mode.
bool initial_fused() {
  const char* e = std::getenv("SIFT_FT_CUDA_QUANT_GEMM");
  return e && std::string(e) == "fused";
}
std::atomic<bool> g_fused{initial_fused()};

// Rows per dequantized tile on CUDA: about 64 MiB of f32. (Freed tiles return to the stream's
// caching allocator and are reused by the next tile, so one tile's memory is live at a time.)
int64_t cuda_tile_rows(int64_t rows, int64_t cols) {
  return std::max<int64_t>(1, std::min(rows, (int64_t(1) << 24) / cols));
}

}  // namespace

std::vector<Tensor> quantize(const Tensor& w_in, const std::string& format) {
  check_format(format);
  check_float(w_in, "quantize");
  check_device_usable(w_in.device());
  SIFT_CHECK(w_in.dim() == 2, "E_SHAPE", "quantize: weight must be 2-D, got ", shape_str(w_in.shape));
  SIFT_CHECK(w_in.numel() > 0, "E_SHAPE", "quantize: weight is empty");
  Tensor w = contiguous(w_in);
  const Device dev = w.device();
  const int64_t R = w.size(0), C = w.size(1), n = R * C;
  if (format == "int8") {
    Tensor q = empty({R, C}, DType::BOOL, dev), am = empty({R}, DType::F32, dev);
    SIFT_ON_DEVICE(dev, cpu::quantize_int8(w, q, am), cuda::quantize_int8(w, q, am));
    return {q, am};
  }
  const int64_t nb = (n + kNf4Block - 1) / kNf4Block;
  Tensor packed = empty({(n + 1) / 2}, DType::BOOL, dev), aq = empty({nb}, DType::BOOL, dev);
  Tensor as = empty({(nb + kAbsmaxBlock - 1) / kAbsmaxBlock}, DType::F32, dev), off = empty({1}, DType::F32, dev);
  SIFT_ON_DEVICE(dev, cpu::quantize_nf4(w, packed, aq, as, off), cuda::quantize_nf4(w, packed, aq, as, off));
  return {packed, aq, as, off};
}

Tensor dequantize_rows(const std::vector<Tensor>& s, const std::string& format, int64_t rows, int64_t cols, int64_t r0,
                       int64_t r1) {
  const Device dev = check_state(s, format, rows, cols);
  SIFT_CHECK(0 <= r0 && r0 < r1 && r1 <= rows, "E_ARG", "dequantize: rows [", r0, ", ", r1, ") out of [0, ", rows, ")");
  Tensor out = empty({r1 - r0, cols}, DType::F32, dev);
  if (format == "int8") {
    SIFT_ON_DEVICE(dev, cpu::dequantize_int8_rows(s[0], s[1], r0, out),
                   cuda::dequantize_int8_rows(s[0], s[1], r0, out));
  } else {
    SIFT_ON_DEVICE(dev, cpu::dequantize_nf4_rows(s[0], s[1], s[2], s[3], cols, r0, out),
                   cuda::dequantize_nf4_rows(s[0], s[1], s[2], s[3], cols, r0, out));
  }
  return out;
}

Tensor dequantize(const std::vector<Tensor>& s, const std::string& format, int64_t rows, int64_t cols) {
  return dequantize_rows(s, format, rows, cols, 0, rows);
}

Tensor quant_linear(const Tensor& x_in, const std::vector<Tensor>& s, const std::string& format, int64_t rows,
                    int64_t cols, bool transpose, const Tensor& idx, const Tensor& vals) {
  const Device dev = check_state(s, format, rows, cols);
  if (idx.defined()) {
    SIFT_CHECK(idx.dtype == DType::I32 || idx.dtype == DType::I64, "E_DTYPE",
               "quantLinear: entry indices must be i32 or i64, got ", dtype_name(idx.dtype));
    SIFT_CHECK(idx.dim() == 1 && idx.is_contiguous(), "E_SHAPE", "quantLinear: entry indices must be 1-D contiguous");
    SIFT_CHECK(vals.defined(), "E_ARG", "quantLinear: entry indices without values");
    expect(vals, DType::F32, idx.numel(), dev, "entry values");
    SIFT_CHECK(idx.device() == dev, "E_DEVICE", "quantLinear: entry indices on ", idx.device().str(), ", weight on ",
               dev.str());
    SIFT_CHECK(idx.numel() <= rows * cols, "E_SHAPE", "quantLinear: ", idx.numel(), " entries for a weight of ",
               rows * cols);
  }
  check_float(x_in, "quantLinear");
  SIFT_CHECK(x_in.device() == dev, "E_DEVICE", "quantLinear: input on ", x_in.device().str(), ", weight on ",
             dev.str());
  SIFT_CHECK(x_in.dim() >= 1, "E_SHAPE", "quantLinear: input must have at least one dimension");
  const int64_t in_f = transpose ? rows : cols, out_f = transpose ? cols : rows;
  SIFT_CHECK(x_in.size(-1) == in_f, "E_SHAPE", "quantLinear: input ", shape_str(x_in.shape), " does not end in ", in_f,
             " features (weight [", rows, ", ", cols, "]", transpose ? ", transposed" : "", ")");
  Tensor xc = contiguous(x_in.dtype == DType::F32 ? x_in : cast(x_in, DType::F32));
  const int64_t M = xc.numel() / in_f;
  Tensor x2 = make_view(xc, {M, in_f}, {in_f, 1}, xc.offset);
  Shape out_shape = x_in.shape;
  out_shape.back() = out_f;
  Tensor y;
  if (dev.is_cpu()) {
    // One queued kernel with one tile buffer: tiles allocated here, ahead of the CPU executor,
    // would all be alive at once.
    y = empty({M, out_f}, DType::F32, dev);
    if (M > 0) {
      const bool nf4 = format == "nf4";
      CpuExecutor::get().enqueue([=]() { cpu::quant_linear(x2, s, nf4, rows, cols, transpose, y, idx, vals); });
    }
    Tensor out = make_view(y, out_shape, contiguous_strides(out_shape), y.offset);
    return x_in.dtype == DType::F32 ? out : cast(out, x_in.dtype);
  }
#ifdef SIFT_WITH_CUDA
  if (g_fused.load()) {
    y = empty({M, out_f}, DType::F32, dev);
    cuda::quant_gemm(x2, s, format == "nf4", rows, cols, transpose, idx, vals, y);
    Tensor out = make_view(y, out_shape, contiguous_strides(out_shape), y.offset);
    return x_in.dtype == DType::F32 ? out : cast(out, x_in.dtype);
  }
#endif
  // A dequantized tile of rows [r0, r1), with the trained entries written in.
  auto tile = [&](int64_t r0, int64_t r1) {
    Tensor w = dequantize_rows(s, format, rows, cols, r0, r1);
#ifdef SIFT_WITH_CUDA
    if (idx.defined() && idx.numel() > 0) cuda::set_sparse_entries(w, idx, vals, r0 * cols);
#endif
    return w;
  };
  const int64_t tn = cuda_tile_rows(rows, cols);
  if (tn >= rows) {
    Tensor w = tile(0, rows);
    y = matmul(x2, w, false, !transpose);
  } else if (!transpose) {
    // y[:, r0:r1] = x @ tile^T, one tile of weight rows at a time.
    y = empty({M, rows}, DType::F32, dev);
    for (int64_t r0 = 0; r0 < rows; r0 += tn) {
      const int64_t r1 = std::min(rows, r0 + tn);
      Tensor w = tile(r0, r1);
      Tensor part = matmul(x2, w, false, true);
      Tensor dst = make_view(y, {M, r1 - r0}, {rows, 1}, r0);
      copy_(dst, part);
    }
  } else {
    // y = sum over tiles of x[:, r0:r1] @ tile.
    for (int64_t r0 = 0; r0 < rows; r0 += tn) {
      const int64_t r1 = std::min(rows, r0 + tn);
      Tensor w = tile(r0, r1);
      Tensor xs = make_view(x2, {M, r1 - r0}, {in_f, 1}, x2.offset + r0);
      Tensor part = matmul(xs, w, false, false);
      if (!y.defined()) {
        y = part;
      } else {
        add_inplace(y, part, 1.0);
      }
    }
  }
  Tensor out = make_view(y, out_shape, contiguous_strides(out_shape), y.offset);
  return x_in.dtype == DType::F32 ? out : cast(out, x_in.dtype);
}

std::string set_quant_gemm(const std::string& mode) {
  SIFT_CHECK(mode == "tiles" || mode == "fused", "E_ARG", "setQuantGemm: mode must be 'tiles' or 'fused', got '", mode,
             "'");
  const bool prev = g_fused.exchange(mode == "fused");
  return prev ? "fused" : "tiles";
}

}  // namespace sift::ops
