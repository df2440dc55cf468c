// Bindings of the SIFT kernels: topk, topkGlobal, scoreAccumulate, gatherInto, scatterInto,
// gradProportion, sumSquares, setCudaSelect, cudaSelectStats (see lib/engine/addon-types.ts,
// "SIFT kernels").
#include "../ops/select.h"
#include "util.h"

namespace sift::binding {
namespace {

Napi::Value Topk(const Napi::CallbackInfo& info) {
  // Optional label: names the scores' tensor in an E_NUMERIC error (which may surface later, at
  // the next synchronisation, since the top-k is queued).
  std::string label = arg_present(info, 2) ? arg_string(info, 2, "label") : std::string();
  return wrap(info.Env(), ops::topk(arg_tensor(info, 0, "scores"), arg_int(info, 1, "k"), label));
}

Napi::Value TopkGlobal(const Napi::CallbackInfo& info) {
  return wrap_list(info.Env(), ops::topk_global(arg_tensor_list(info, 0, "scores"), arg_int(info, 1, "k")));
}

// setCudaSelect(mode) -> previous mode ('radix' | 'bracket').
Napi::Value SetCudaSelect(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), ops::set_cuda_select(arg_string(info, 0, "mode")));
}

// cudaSelectStats() -> { mode, bracketHits, bracketMisses, radix }: how the CUDA topk calls ran
// since resetCudaSelectStats() (native/ops/select.h).
Napi::Value CudaSelectStats(const Napi::CallbackInfo& info) {
  const ops::CudaSelectStats st = ops::cuda_select_stats();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("mode", st.mode);
  o.Set("bracketHits", double(st.bracket_hits));
  o.Set("bracketMisses", double(st.bracket_misses));
  o.Set("radix", double(st.radix));
  return o;
}

Napi::Value ResetCudaSelectStats(const Napi::CallbackInfo& info) {
  ops::reset_cuda_select_stats();
  return info.Env().Undefined();
}

Napi::Value ScoreAccumulate(const Napi::CallbackInfo& info) {
  ops::score_accumulate(arg_tensor(info, 0, "dst"), arg_tensor(info, 1, "src"), arg_string(info, 2, "kind"),
                        arg_bool(info, 3, "accumulate"));
  return info.Env().Undefined();
}

Napi::Value GatherInto(const Napi::CallbackInfo& info) {
  ops::gather_into(arg_tensor(info, 0, "dst"), arg_tensor(info, 1, "src"), arg_tensor(info, 2, "idx"),
                   arg_bool(info, 3, "accumulate"));
  return info.Env().Undefined();
}

Napi::Value ScatterInto(const Napi::CallbackInfo& info) {
  ops::scatter_into(arg_tensor(info, 0, "dst"), arg_tensor(info, 1, "idx"), arg_tensor(info, 2, "values"),
                    arg_string(info, 3, "mode"));
  return info.Env().Undefined();
}

Napi::Value GradProportion(const Napi::CallbackInfo& info) {
  ops::grad_proportion(arg_tensor(info, 0, "out"), arg_int(info, 1, "slot"), arg_tensor(info, 2, "grad"),
                       arg_tensor(info, 3, "idx"));
  return info.Env().Undefined();
}

Napi::Value SumSquares(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), ops::sum_squares(arg_tensor_list(info, 0, "ts")));
}

}  // namespace

SIFT_BINDINGS(register_select) {
  SIFT_EXPORT("topk", Topk);
  SIFT_EXPORT("topkGlobal", TopkGlobal);
  SIFT_EXPORT("setCudaSelect", SetCudaSelect);
  SIFT_EXPORT("cudaSelectStats", CudaSelectStats);
  SIFT_EXPORT("resetCudaSelectStats", ResetCudaSelectStats);
  SIFT_EXPORT("scoreAccumulate", ScoreAccumulate);
  SIFT_EXPORT("gatherInto", GatherInto);
  SIFT_EXPORT("scatterInto", ScatterInto);
  SIFT_EXPORT("gradProportion", GradProportion);
  SIFT_EXPORT("sumSquares", SumSquares);
}

}  // namespace sift::binding
