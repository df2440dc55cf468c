// Bindings of the neural-network ops (softmax, norms, embedding, cross-entropy); argument order
// as in lib/engine/addon-types.ts.
#include "../ops/nn.h"
#include "util.h"

namespace sift::binding {
namespace {

Tensor opt(const Napi::CallbackInfo& info, size_t i, const char* name) {
  auto t = arg_opt_tensor(info, i, name);
  return t ? *t : Tensor();
}

Napi::Value Softmax(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), ops::softmax(arg_tensor(info, 0, "x"), arg_int(info, 1, "dim"), false));
}
Napi::Value SoftmaxBackward(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), ops::softmax_backward(arg_tensor(info, 0, "y"), arg_tensor(info, 1, "gy"),
                                                arg_int(info, 2, "dim"), false));
}
Napi::Value LogSoftmax(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), ops::softmax(arg_tensor(info, 0, "x"), arg_int(info, 1, "dim"), true));
}
Napi::Value LogSoftmaxBackward(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), ops::softmax_backward(arg_tensor(info, 0, "y"), arg_tensor(info, 1, "gy"),
                                                arg_int(info, 2, "dim"), true));
}

// layerNorm(x, weight | null, bias | null, eps) -> [y, mean, rstd]
Napi::Value LayerNorm(const Napi::CallbackInfo& info) {
  return wrap_list(info.Env(), ops::layer_norm(arg_tensor(info, 0, "x"), opt(info, 1, "weight"), opt(info, 2, "bias"),
                                               arg_number(info, 3, "eps")));
}
// layerNormBackward(gy, x, weight | null, mean, rstd, needWeightGrads) -> [gx, gw | null, gb | null]
Napi::Value LayerNormBackward(const Napi::CallbackInfo& info) {
  return wrap_list(info.Env(),
                   ops::layer_norm_backward(arg_tensor(info, 0, "gy"), arg_tensor(info, 1, "x"), opt(info, 2, "weight"),
                                            arg_tensor(info, 3, "mean"), arg_tensor(info, 4, "rstd"),
                                            arg_bool(info, 5, "needWeightGrads")));
}
Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  return wrap_list(info.Env(),
                   ops::rms_norm(arg_tensor(info, 0, "x"), opt(info, 1, "weight"), arg_number(info, 2, "eps")));
}
Napi::Value RmsNormBackward(const Napi::CallbackInfo& info) {
  return wrap_list(info.Env(),
                   ops::rms_norm_backward(arg_tensor(info, 0, "gy"), arg_tensor(info, 1, "x"), opt(info, 2, "weight"),
                                          arg_tensor(info, 3, "rstd"), arg_bool(info, 4, "needWeightGrads")));
}

Napi::Value Embedding(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), ops::embedding(arg_tensor(info, 0, "weight"), arg_tensor(info, 1, "ids")));
}
Napi::Value EmbeddingBackward(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), ops::embedding_backward(arg_tensor(info, 0, "gy"), arg_tensor(info, 1, "ids"),
                                                  arg_int(info, 2, "numRows")));
}

// crossEntropy(logits, targets, ignoreIndex, reduction, labelSmoothing) -> [loss, lse]
Napi::Value CrossEntropy(const Napi::CallbackInfo& info) {
  return wrap_list(info.Env(), ops::cross_entropy(arg_tensor(info, 0, "logits"), arg_tensor(info, 1, "targets"),
                                                  arg_int(info, 2, "ignoreIndex"), arg_string(info, 3, "reduction"),
                                                  arg_number(info, 4, "labelSmoothing")));
}
// crossEntropyBackward(logits, targets, lse, gloss, ignoreIndex, reduction, labelSmoothing) -> glogits
Napi::Value CrossEntropyBackward(const Napi::CallbackInfo& info) {
  return wrap(info.Env(), ops::cross_entropy_backward(arg_tensor(info, 0, "logits"), arg_tensor(info, 1, "targets"),
                                                      arg_tensor(info, 2, "lse"), arg_tensor(info, 3, "gloss"),
                                                      arg_int(info, 4, "ignoreIndex"), arg_string(info, 5, "reduction"),
                                                      arg_number(info, 6, "labelSmoothing")));
}

}  // namespace

SIFT_BINDINGS(register_nn) {
  SIFT_EXPORT("softmax", Softmax);
  SIFT_EXPORT("softmaxBackward", SoftmaxBackward);
  SIFT_EXPORT("logSoftmax", LogSoftmax);
  SIFT_EXPORT("logSoftmaxBackward", LogSoftmaxBackward);
  SIFT_EXPORT("layerNorm", LayerNorm);
  SIFT_EXPORT("layerNormBackward", LayerNormBackward);
  SIFT_EXPORT("rmsNorm", RmsNorm);
  SIFT_EXPORT("rmsNormBackward", RmsNormBackward);
  SIFT_EXPORT("embedding", Embedding);
  SIFT_EXPORT("embeddingBackward", EmbeddingBackward);
  SIFT_EXPORT("crossEntropy", CrossEntropy);
  SIFT_EXPORT("crossEntropyBackward", CrossEntropyBackward);
}

}  // namespace sift::binding
