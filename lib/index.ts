/**
 * sift-ft: Sparse Increment Fine-Tuning for Node.js on a native C++/CUDA tensor engine.
 * This module is the public API.
 */
export { Tensor } from './engine/tensor';
export type { GradHook } from './engine/tensor';
export { SiftError } from './engine/errors';
export type { SiftErrorCode } from './engine/errors';
export type { DType } from './engine/dtype';
export { tidy, keep } from './engine/scope';
export { CudaGraphStep } from './engine/cuda-graph';
export {
  liveTensors,
  backends,
  cudaAvailable,
  synchronize,
  emptyCache,
  resetPeakMemory,
  synchronizeAsync,
  DeviceFence,
  executorStats,
  resetExecutorStats,
  setNumThreads,
  numThreads,
} from './engine/runtime';
export type { LiveTensors } from './engine/runtime';
export type { ExecutorStats } from './engine/addon-types';
export { backward, noGrad, enableGrad, isGradEnabled, gradients } from './autograd/tape';
export { checkpoint } from './autograd/checkpoint';
export { tensor, zeros, ones, full, zerosLike, onesLike, randn, rand, arange, manualSeed } from './autograd/creation';
export type { TensorOptions, RandomOptions } from './autograd/creation';
export {
  reshape,
  transpose,
  permute,
  unsqueeze,
  squeeze,
  flatten,
  expand,
  slice,
  split,
  concat,
  stack,
  contiguous,
  clone,
  cast,
  toDevice,
  detach,
} from './autograd/shape';
export {
  add,
  sub,
  mul,
  div,
  pow,
  rsub,
  rdiv,
  maximum,
  minimum,
  compare,
  where,
  neg,
  exp,
  log,
  tanh,
  relu,
  silu,
  sigmoid,
  sqrt,
  rsqrt,
  abs,
  square,
  reciprocal,
  sin,
  cos,
  erf,
  sign,
  gelu,
} from './autograd/elementwise';
export { reduce, argmax, norm } from './autograd/reduce';
export { matmul, linear, conv1d } from './autograd/matmul';
export { QuantizedWeight, quantLinear, quantizedBytes, QUANT_FORMATS } from './autograd/quant';
export type { QuantFormat } from './autograd/quant';
export { softmax, logSoftmax, layerNorm, rmsNorm, embedding, crossEntropy } from './autograd/nn';
export type { CrossEntropyOptions } from './autograd/nn';
export { scaledDotProductAttention, rotaryEmbedding, rotaryInvFreq, dropout } from './autograd/attention';
export type { AttentionOptions, DropoutOptions } from './autograd/attention';

export { Module } from './nn/module';
export { Linear, Embedding, LayerNorm, RMSNorm, Dropout } from './nn/layers';
export { ProcessGroup, distEnv, glooAvailable } from './dist/group';
export type { DistEnv, ProcessGroupOptions } from './dist/group';
export { Sift, kForRate } from './sift/sift';
export type {
  SiftOptions,
  SelectionOptions,
  SelectionScore,
  SparseGradientMode,
  SparseTarget,
  SiftSummary,
  SiftSummaryRow,
} from './sift/sift';
export { SparseAdamW } from './sift/optimizer';
export type { AdamWOptions } from './sift/optimizer';
export { lrMultiplier } from './sift/schedule';
export type { ScheduleOptions } from './sift/schedule';
export { planTargets, moduleMatcher } from './sift/targets';
export type { ModuleSelector, NamedModel } from './sift/targets';
export { saveIncrement, loadIncrement, applyIncrement, unmergeIncrement, exactDelta } from './sift/increment';
export type { Increment } from './sift/increment';
export { applyPeftAdapter, readPeftAdapter, supertuningFromIncrement, loraPeftConfig, peftTaskType } from './io/peft';
export type { PeftAdapter } from './io/peft';
export { EventFileWriter, TensorBoardLogger, readEventFile } from './io/tensorboard';
export type { ReportTo } from './io/tensorboard';
export { SafetensorsReader, AsyncSafetensorsReader, loadSafetensors, saveSafetensors } from './io/safetensors';
export {
  resolveModelDir,
  resolveModelPath,
  loadConfig,
  loadStateDict,
  loadStateDictAsync,
  iterStateDict,
  iterStateDictAsync,
  StateDictReader,
  AsyncStateDictReader,
  loadModelFolder,
  saveModelFolder,
  saveModelFolderAsync,
} from './io/hf';
export type { LoadOptions, SaveModelOptions, SavedModel, ResolvedModel } from './io/hf';
export * from './tokenizers';

import * as fs from 'fs';
import * as path from 'path';
/** The package version. */
export const version: string = (() => {
  for (const p of [path.join(__dirname, '..', 'package.json'), path.join(__dirname, '..', '..', 'package.json')]) {
    try {
      return JSON.parse(fs.readFileSync(p, 'utf8')).version as string;
    } catch {
      /* next */
    }
  }
  return '0.0.0';
})();

export * from './models';
export * from './train';
export * from './onnx';
export { loadModel } from './load';
export type { LoadModelOptions } from './load';
