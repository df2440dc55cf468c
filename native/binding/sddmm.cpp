// Bindings of the SDDMM: sddmmPlan, sddmm (see lib/engine/addon-types.ts, "SIFT kernels").
#include "../ops/sddmm.h"
#include "util.h"

namespace sift::binding {
namespace {

Napi::Value SddmmPlan(const Napi::CallbackInfo& info) {
  return wrap(info.Env(),
              ops::sddmm_plan(arg_tensor(info, 0, "idx"), arg_int(info, 1, "rows"), arg_int(info, 2, "cols")));
}

Napi::Value Sddmm(const Napi::CallbackInfo& info) {
  std::optional<Tensor> plan = arg_opt_tensor(info, 5, "plan");
  ops::sddmm(arg_tensor(info, 0, "out"), arg_tensor(info, 1, "a"), arg_tensor(info, 2, "b"), arg_tensor(info, 3, "idx"),
             plan ? *plan : Tensor(), arg_bool(info, 4, "accumulate"));
  return info.Env().Undefined();
}

}  // namespace

SIFT_BINDINGS(register_sddmm) {
  SIFT_EXPORT("sddmmPlan", SddmmPlan);
  SIFT_EXPORT("sddmm", Sddmm);
}

}  // namespace sift::binding
