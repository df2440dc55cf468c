// Bindings of the core tensor functions: creation, reading back, views, copies, accounting.
#include <cstring>
#include <memory>

#include "../core/executor.h"
#include "../cpu/parallel.h"
#include "../cuda/runtime.h"
#include "../ops/tensor_ops.h"
#include "util.h"

namespace sift::binding {
namespace {

DType arg_dtype(const Napi::CallbackInfo& info, size_t i) { return parse_dtype(arg_string(info, i, "dtype")); }
Device arg_device(const Napi::CallbackInfo& info, size_t i) { return parse_device(arg_string(info, i, "device")); }

// fromBuffer(data: TypedArray | ArrayBuffer, shape, dtype, device)
Napi::Value FromBuffer(const Napi::CallbackInfo& info) {
  const void* ptr = nullptr;
  size_t len = 0;
  if (info.Length() > 0 && info[0].IsTypedArray()) {
    auto ta = info[0].As<Napi::TypedArray>();
    auto ab = ta.ArrayBuffer();
    ptr = static_cast<const char*>(ab.Data()) + ta.ByteOffset();
    len = ta.ByteLength();
  } else if (info.Length() > 0 && info[0].IsArrayBuffer()) {
    auto ab = info[0].As<Napi::ArrayBuffer>();
    ptr = ab.Data();
    len = ab.ByteLength();
  } else {
    fail("E_ARG", "expected a typed array or ArrayBuffer for 'data'");
  }
  Shape shape = arg_shape(info, 1, "shape");
  return wrap(info.Env(), ops::from_host(ptr, len, shape, arg_dtype(info, 2), arg_device(info, 3)));
}

Napi::Value Full(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), ops::full(arg_shape(info, 0, "shape"), arg_number(info, 1, "value"), arg_dtype(info, 2),
                                    arg_device(info, 3)));
}

Napi::Value Randn(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), ops::randn(arg_shape(info, 0, "shape"), arg_dtype(info, 1), arg_device(info, 2),
                                     arg_seed(info, 3, "seed")));
}

Napi::Value Rand(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), ops::rand(arg_shape(info, 0, "shape"), arg_dtype(info, 1), arg_device(info, 2),
                                    arg_seed(info, 3, "seed")));
}

Napi::Value Arange(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), ops::arange(arg_number(info, 0, "start"), arg_number(info, 1, "end"),
                                      arg_number(info, 2, "step"), arg_dtype(info, 3), arg_device(info, 4)));
}

Napi::Value ShapeOf(const Napi::CallbackInfo& info) {
  Tensor& t = arg_tensor(info, 0, "tensor");
  Napi::Array a = Napi::Array::New(info.Env(), t.shape.size());
  for (size_t i = 0; i < t.shape.size(); i++) a.Set(uint32_t(i), Napi::Number::New(info.Env(), double(t.shape[i])));
  return a;
}

Napi::Value StridesOf(const Napi::CallbackInfo& info) {
  Tensor& t = arg_tensor(info, 0, "tensor");
  Napi::Array a = Napi::Array::New(info.Env(), t.strides.size());
  for (size_t i = 0; i < t.strides.size(); i++) a.Set(uint32_t(i), Napi::Number::New(info.Env(), double(t.strides[i])));
  return a;
}

Napi::Value OffsetOf(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(arg_tensor(info, 0, "tensor").offset));
}

Napi::Value DTypeOf(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), dtype_name(arg_tensor(info, 0, "tensor").dtype));
}

Napi::Value DeviceOf(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), arg_tensor(info, 0, "tensor").device().str());
}

Napi::Value IsContiguous(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), arg_tensor(info, 0, "tensor").is_contiguous());
}

// Whether two handles share storage (views of one another).
Napi::Value SameStorage(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), arg_tensor(info, 0, "a").storage == arg_tensor(info, 1, "b").storage);
}

Napi::Value ToBuffer(const Napi::CallbackInfo& info) {
  Tensor& t = arg_tensor(info, 0, "tensor");
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(info.Env(), t.nbytes());
  ops::to_host(t, ab.Data(), t.nbytes());
  return ab;
}

Napi::Value ToBufferAsync(const Napi::CallbackInfo& info) {
  Tensor t = ops::contiguous(arg_tensor(info, 0, "tensor"));  // queued in order on this thread
  auto bytes = std::make_shared<std::vector<char>>();
  async_device_waits()++;
  return run_async(
      info.Env(), "sift-ft:toBuffer",
      [t = std::move(t), bytes] {
        bytes->resize(t.nbytes());
        ops::to_host(t, bytes->data(), bytes->size());
      },
      [bytes](Napi::Env env) -> Napi::Value {
        Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, bytes->size());
        if (!bytes->empty()) std::memcpy(ab.Data(), bytes->data(), bytes->size());
        return ab;
      });
}

// For a tensor whose writers the caller has awaited (Tensor.dataAfter): no wait for the device.
Napi::Value ToBufferSettled(const Napi::CallbackInfo& info) {
  Tensor& t = arg_tensor(info, 0, "tensor");
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(info.Env(), t.nbytes());
  ops::to_host_settled(t, ab.Data(), t.nbytes());
  return ab;
}

Napi::Value Dispose(const Napi::CallbackInfo& info) {
  TensorHandle* h = info.Length() > 0 ? TensorHandle::Unwrap(info[0]) : nullptr;
  if (!h) fail("E_ARG", "dispose expects a tensor handle");
  h->dispose();
  return info.Env().Undefined();
}

Napi::Value IsDisposed(const Napi::CallbackInfo& info) {
  TensorHandle* h = info.Length() > 0 ? TensorHandle::Unwrap(info[0]) : nullptr;
  if (!h) fail("E_ARG", "isDisposed expects a tensor handle");
  return Napi::Boolean::New(info.Env(), h->disposed());
}

Napi::Value View(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), ops::view(arg_tensor(info, 0, "tensor"), arg_shape(info, 1, "shape"),
                                    arg_shape(info, 2, "strides"), arg_int(info, 3, "offset")));
}

Napi::Value Contiguous(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), ops::contiguous(arg_tensor(info, 0, "tensor")));
}

Napi::Value Clone(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), ops::clone(arg_tensor(info, 0, "tensor")));
}

Napi::Value Cast(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), ops::cast(arg_tensor(info, 0, "tensor"), arg_dtype(info, 1)));
}

Napi::Value To(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), ops::to_device(arg_tensor(info, 0, "tensor"), arg_device(info, 1)));
}

Napi::Value Copy_(const Napi::CallbackInfo& info) {
  ops::copy_(arg_tensor(info, 0, "dst"), arg_tensor(info, 1, "src"));
  return info.Env().Undefined();
}

Napi::Value Fill_(const Napi::CallbackInfo& info) {
  ops::fill_(arg_tensor(info, 0, "dst"), arg_number(info, 1, "value"));
  return info.Env().Undefined();
}

Napi::Value Concat(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), ops::concat(arg_tensor_list(info, 0, "tensors"), arg_int(info, 1, "dim")));
}

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  ops::synchronize(parse_device(arg_string(info, 0, "device")));
  return info.Env().Undefined();
}

Napi::Object stats_object(Napi::Env env, DeviceType t) {
  auto& st = memory_stats(t);
  Napi::Object o = Napi::Object::New(env);
  o.Set("count", Napi::Number::New(env, double(st.count.load())));
  o.Set("bytes", Napi::Number::New(env, double(st.bytes.load())));
  o.Set("peakBytes", Napi::Number::New(env, double(st.peak_bytes.load())));
  return o;
}

Napi::Value LiveTensors(const Napi::CallbackInfo& info) {
  CpuExecutor::get().sync();  // storages held by queued work are freed once it ran
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("cpu", stats_object(info.Env(), DeviceType::CPU));
  o.Set("cuda", stats_object(info.Env(), DeviceType::CUDA));
  return o;
}

Napi::Value ResetPeak(const Napi::CallbackInfo& info) {
  for (auto t : {DeviceType::CPU, DeviceType::CUDA}) {
    auto& st = memory_stats(t);
    st.peak_bytes.store(st.bytes.load());
  }
  if (cuda::available())
    for (int d = 0; d < cuda::device_count(); d++) cuda::reset_peak(d);
  return info.Env().Undefined();
}

Napi::Value Backends(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  Napi::Object cpu = Napi::Object::New(env);
  cpu.Set("compiled", true);
  cpu.Set("usable", true);
  cpu.Set("threads", cpu::num_threads());
  cpu.Set("asyncExecutor", !CpuExecutor::get().inline_mode());
  o.Set("cpu", cpu);
  Napi::Object cu = Napi::Object::New(env);
  cu.Set("compiled", cuda::compiled());
  bool avail = cuda::available();
  cu.Set("usable", avail);
  cu.Set("status", cuda::status());
  cu.Set("runtimeVersion", cuda::runtime_version());
  cu.Set("gemm", cuda::gemm_library());
  const cuda::Probe pr = cuda::probe_info();
  Napi::Object probe = Napi::Object::New(env);
  probe.Set("driverVersion", pr.driver_version);
  probe.Set("runtimeVersion", pr.runtime_version);
  probe.Set("error", pr.error);
  probe.Set("errorText", pr.error_text);
  probe.Set("deviceCount", pr.device_count);
  probe.Set("archs", pr.archs);
  cu.Set("probe", probe);
  Napi::Array devs = Napi::Array::New(env);
  if (avail) {
    for (int d = 0; d < cuda::device_count(); d++) {
      auto di = cuda::device_info(d);
      Napi::Object x = Napi::Object::New(env);
      x.Set("index", d);
      x.Set("name", di.name);
      x.Set("computeCapability", std::to_string(di.major) + "." + std::to_string(di.minor));
      x.Set("multiprocessors", di.multiprocessors);
      x.Set("totalMemory", double(di.total_memory));
      x.Set("freeMemory", double(di.free_memory));
      x.Set("kernelImageError", di.kernel_image_error);
      devs.Set(uint32_t(d), x);
    }
  }
  cu.Set("devices", devs);
  o.Set("cuda", cu);
  return o;
}

Napi::Value CudaMemory(const Napi::CallbackInfo& info) {
  int d = int(arg_int(info, 0, "device"));
  auto st = cuda::allocator_stats(d);
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("allocated", double(st.allocated));
  o.Set("reserved", double(st.reserved));
  o.Set("peakAllocated", double(st.peak_allocated));
  o.Set("cudaMallocs", double(st.cuda_mallocs));
  return o;
}

// cudaEventRecord(device) -> id; cudaEventElapsed(device, start, end) -> ms; cudaEventsReset(device).
Napi::Value CudaEventRecord(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), cuda::event_record(int(arg_int(info, 0, "device"))));
}

Napi::Value CudaEventElapsed(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(),
                           cuda::event_elapsed_ms(int(arg_int(info, 0, "device")), int(arg_int(info, 1, "start")),
                                                  int(arg_int(info, 2, "end"))));
}

Napi::Value CudaEventsReset(const Napi::CallbackInfo& info) {
  cuda::events_reset(int(arg_int(info, 0, "device")));
  return info.Env().Undefined();
}

// cudaGraphBegin(device) -> id; cudaGraphEnd(device, keep); cudaGraphLaunch(device, id);
// cudaGraphDestroy(device, id); cudaGraphStats(device) (native/cuda/runtime.h says the contract).
Napi::Value CudaGraphBegin(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(cuda::graph_begin(int(arg_int(info, 0, "device")))));
}

Napi::Value CudaGraphEnd(const Napi::CallbackInfo& info) {
  cuda::graph_end(int(arg_int(info, 0, "device")), arg_bool(info, 1, "keep"));
  return info.Env().Undefined();
}

Napi::Value CudaGraphLaunch(const Napi::CallbackInfo& info) {
  cuda::graph_launch(int(arg_int(info, 0, "device")), uint64_t(arg_int(info, 1, "id")));
  return info.Env().Undefined();
}

Napi::Value CudaGraphDestroy(const Napi::CallbackInfo& info) {
  cuda::graph_destroy(int(arg_int(info, 0, "device")), uint64_t(arg_int(info, 1, "id")));
  return info.Env().Undefined();
}

Napi::Value CudaGraphStats(const Napi::CallbackInfo& info) {
  const cuda::GraphStats st = cuda::graph_stats(int(arg_int(info, 0, "device")));
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("graphs", double(st.graphs));
  o.Set("capturing", st.capturing);
  o.Set("poolBytes", double(st.pool_bytes));
  return o;
}

Napi::Value EmptyCache(const Napi::CallbackInfo& info) {
  if (cuda::available())
    for (int d = 0; d < cuda::device_count(); d++) cuda::empty_cache(d);
  return info.Env().Undefined();
}

}  // namespace

SIFT_BINDINGS(register_tensor_bindings) {
  SIFT_EXPORT("fromBuffer", FromBuffer);
  SIFT_EXPORT("full", Full);
  SIFT_EXPORT("randn", Randn);
  SIFT_EXPORT("rand", Rand);
  SIFT_EXPORT("arange", Arange);
  SIFT_EXPORT("shape", ShapeOf);
  SIFT_EXPORT("strides", StridesOf);
  SIFT_EXPORT("offset", OffsetOf);
  SIFT_EXPORT("dtype", DTypeOf);
  SIFT_EXPORT("device", DeviceOf);
  SIFT_EXPORT("isContiguous", IsContiguous);
  SIFT_EXPORT("sameStorage", SameStorage);
  SIFT_EXPORT("toBuffer", ToBuffer);
  SIFT_EXPORT("toBufferAsync", ToBufferAsync);
  SIFT_EXPORT("toBufferSettled", ToBufferSettled);
  SIFT_EXPORT("dispose", Dispose);
  SIFT_EXPORT("isDisposed", IsDisposed);
  SIFT_EXPORT("view", View);
  SIFT_EXPORT("contiguous", Contiguous);
  SIFT_EXPORT("clone", Clone);
  SIFT_EXPORT("cast", Cast);
  SIFT_EXPORT("to", To);
  SIFT_EXPORT("copy_", Copy_);
  SIFT_EXPORT("fill_", Fill_);
  SIFT_EXPORT("concat", Concat);
  SIFT_EXPORT("synchronize", Synchronize);
  SIFT_EXPORT("liveTensors", LiveTensors);
  SIFT_EXPORT("resetPeakMemory", ResetPeak);
  SIFT_EXPORT("backends", Backends);
  SIFT_EXPORT("cudaMemory", CudaMemory);
  SIFT_EXPORT("emptyCache", EmptyCache);
  SIFT_EXPORT("cudaEventRecord", CudaEventRecord);
  SIFT_EXPORT("cudaEventElapsed", CudaEventElapsed);
  SIFT_EXPORT("cudaEventsReset", CudaEventsReset);
  SIFT_EXPORT("cudaGraphBegin", CudaGraphBegin);
  SIFT_EXPORT("cudaGraphEnd", CudaGraphEnd);
  SIFT_EXPORT("cudaGraphLaunch", CudaGraphLaunch);
  SIFT_EXPORT("cudaGraphDestroy", CudaGraphDestroy);
  SIFT_EXPORT("cudaGraphStats", CudaGraphStats);
}

}  // namespace sift::binding
