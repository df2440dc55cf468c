// Embedding on CUDA. Forward: a grid-stride copy of rows as raw 2/4/8-byte words (any dtype).
// Backward without float atomics, so the result is deterministic: positions are sorted by id
// with a stable radix sort (cub), then one block per run of equal ids sums that run's gradient
// rows in position order into its output row. Rows no id refers to are zeroed first.
// Out-of-range ids set the device error flag (E_INDEX at the next synchronize) and are skipped.
#include <cub/device/device_radix_sort.cuh>

#include "common.cuh"
#include "embedding.h"

namespace sift::cuda {
namespace {

template <typename W, typename I>
__global__ void embedding_kernel(const W* __restrict__ w, const I* __restrict__ ids, W* __restrict__ out, int64_t n,
                                 int64_t v, int64_t d, int* flag) {
  const int64_t total = n * d;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / d, j = i - row * d;
    const int64_t id = int64_t(ids[row]);
    if (id < 0 || id >= v) {
      if (j == 0) atomicOr(flag, 1);
      out[i] = W(0);
      continue;
    }
    out[i] = w[id * d + j];
  }
}

// key = id for valid ids, v (sorted last, then skipped) for invalid ones; value = position.
template <typename I>
__global__ void make_keys_kernel(const I* __restrict__ ids, uint32_t* __restrict__ keys, int32_t* __restrict__ pos,
                                 int64_t n, int64_t v, int* flag) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t id = int64_t(ids[i]);
    const bool ok = id >= 0 && id < v;
    if (!ok) atomicOr(flag, 1);
    keys[i] = ok ? uint32_t(id) : uint32_t(v);
    pos[i] = int32_t(i);
  }
}

template <typename T>
__global__ void zero_kernel(T* __restrict__ out, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = from_acc<T>(dacc_t<T>(0));
}

// One block per sorted position; only the first position of each run of equal keys does work.
template <typename T>
__global__ void segment_sum_kernel(const T* __restrict__ gy, const uint32_t* __restrict__ keys,
                                   const int32_t* __restrict__ pos, T* __restrict__ gw, int64_t n, int64_t v,
                                   int64_t d) {
  using A = dacc_t<T>;
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const uint32_t key = keys[i];
    if (int64_t(key) >= v || (i > 0 && keys[i - 1] == key)) continue;
    int64_t end = i + 1;
    while (end < n && keys[end] == key) end++;
    T* o = gw + int64_t(key) * d;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      A s = 0;
      for (int64_t k = i; k < end; k++) s += to_acc<A>(gy[int64_t(pos[k]) * d + j]);
      o[j] = from_acc<T>(s);
    }
  }
}

int bits_for(int64_t v) {
  int b = 1;
  while (b < 32 && (int64_t(1) << b) <= v) b++;
  return b;
}

}  // namespace

void embedding(const Tensor& weight, const Tensor& ids, const Tensor& out, int64_t n, int64_t v, int64_t d) {
  const int64_t total = n * d;
  if (total == 0) return;
  const int dev = dev_of(weight);
  cudaStream_t st = current_stream(dev);
  int* flag = error_flag(dev);
  dispatch_cuda_int(ids.dtype, "embedding", [&](auto it) {
    using I = typename decltype(it)::type;
    auto launch = [&](auto wtag) {
      using W = typename decltype(wtag)::type;
      embedding_kernel<W, I><<<grid_for(total, 256), 256, 0, st>>>(static_cast<const W*>(weight.raw()), ids.data<I>(),
                                                                   static_cast<W*>(out.raw()), n, v, d, flag);
    };
    switch (weight.itemsize()) {
      case 1:
        launch(ctype_tag<uint8_t>{});
        break;
      case 2:
        launch(ctype_tag<uint16_t>{});
        break;
      case 4:
        launch(ctype_tag<uint32_t>{});
        break;
      default:
        launch(ctype_tag<uint64_t>{});
        break;
    }
  });
  check_last_error("embedding");
}

void embedding_backward(const Tensor& gy, const Tensor& ids, const Tensor& gw, int64_t n, int64_t v, int64_t d) {
  SIFT_CHECK(n < (int64_t(1) << 31) && v < (int64_t(1) << 31), "E_SHAPE",
             "embeddingBackward: CUDA supports fewer than 2^31 ids and rows");
  const int dev = dev_of(gy);
  cudaStream_t st = current_stream(dev);
  const Device device = gy.device();
  dispatch_cuda_float(gy.dtype, "embeddingBackward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (v * d > 0) zero_kernel<T><<<grid_for(v * d, 256), 256, 0, st>>>(gw.data<T>(), v * d);
    if (n == 0 || d == 0) return;
    // Scratch lives in tensors from the stream-ordered allocator; freeing them after the
    // launches is safe because later work on this stream runs after these kernels.
    Tensor keys_in = empty({n}, DType::I32, device), keys_out = empty({n}, DType::I32, device);
    Tensor pos_in = empty({n}, DType::I32, device), pos_out = empty({n}, DType::I32, device);
    uint32_t* ki = static_cast<uint32_t*>(keys_in.raw());
    uint32_t* ko = static_cast<uint32_t*>(keys_out.raw());
    int32_t* pi = pos_in.data<int32_t>();
    int32_t* po = pos_out.data<int32_t>();
    dispatch_cuda_int(ids.dtype, "embeddingBackward", [&](auto it) {
      using I = typename decltype(it)::type;
      make_keys_kernel<I><<<grid_for(n, 256), 256, 0, st>>>(ids.data<I>(), ki, pi, n, v, error_flag(dev));
    });
    const int end_bit = bits_for(v);  // key v (invalid) must fit too
    size_t temp_bytes = 0;
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, ki, ko, pi, po, int(n), 0, end_bit, st));
    Tensor temp = empty({int64_t(std::max<size_t>(temp_bytes, 1))}, DType::BOOL, device);
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.raw(), temp_bytes, ki, ko, pi, po, int(n), 0, end_bit, st));
    const int threads = d >= 256 ? 256 : (d >= 128 ? 128 : 64);
    segment_sum_kernel<T>
        <<<unsigned(std::min<int64_t>(n, 65535LL * 16)), threads, 0, st>>>(gy.data<T>(), ko, po, gw.data<T>(), n, v, d);
  });
  check_last_error("embeddingBackward");
}

}  // namespace sift::cuda
