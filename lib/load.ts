/**
 * One entry point for loading a trainable model: a Hugging Face model folder (config.json and
 * safetensors, sharded or not, or a local HF cache folder) or an ONNX graph (`.onnx`).
 */
import { createModel } from './models/registry';
import { loadStateDictInto } from './models/weights';
import type { ModelTask, PreTrainedModel } from './models/common';
import { loadModelFolder } from './io/hf';
import { loadOnnxModel, OnnxModel } from './onnx/import';
import { parseQuantFormat, type QuantFormat } from './autograd/quant';
import { SiftError } from './engine/errors';

export interface LoadModelOptions {
  device?: string;
  /** Convert float weights on load (ONNX graphs: f32 or f64). */
  dtype?: 'f32' | 'f16' | 'bf16' | 'f64';
  /** Head to build when the config names none (or another). */
  task?: ModelTask;
  /** Store the Linear layers' frozen weights quantized after loading (not for ONNX graphs). */
  quantize?: QuantFormat;
}

export function loadModel(p: string, opts: LoadModelOptions = {}): PreTrainedModel | OnnxModel {
  if (opts.quantize !== undefined) parseQuantFormat(opts.quantize, 'loadModel: quantize');
  if (p.toLowerCase().endsWith('.onnx')) {
    if (opts.quantize) throw new SiftError('E_UNSUPPORTED', 'loadModel: quantize applies to Hugging Face model folders, not ONNX graphs');
    const dtype = opts.dtype === 'f64' ? 'f64' : 'f32';
    return loadOnnxModel(p, { device: opts.device, task: opts.task, dtype });
  }
  const { config, stateDict } = loadModelFolder(p, { dtype: opts.dtype });
  const model = createModel(config, { task: opts.task, device: opts.device, dtype: opts.dtype });
  try {
    loadStateDictInto(model, stateDict, { disposeSource: true });
    if (opts.quantize) model.quantize(opts.quantize);
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model;
}
