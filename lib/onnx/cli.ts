/**
 * `sift-ft export-onnx --model DIR [--delta FILE] --out model.onnx [--opset N] [--external-data]`:
 * loads a model folder (its architecture and head from config.json), merges an increment if
 * given, and writes the ONNX graph. Registered in lib/cli/main.ts as
 * `'export-onnx': { help: exportOnnxHelp, flags: exportOnnxFlags, run: runExportOnnx }`.
 */
import { SiftError } from '../engine/errors';
import type { FlagSpec, Parsed } from '../cli/args';
import { loadModelFolder } from '../io/hf';
import { createModel, loadStateDictInto } from '../models';
import type { PreTrainedModel } from '../models/common';
import { inspectDelta, loadWithDelta, taskOfFolder } from '../cli/delta';
import { exportOnnx } from './export';

export const exportOnnxHelp = 'Writes a model folder (with an optional SIFT increment merged) as an ONNX graph';

export const exportOnnxFlags: Record<string, FlagSpec> = {
  model: { type: 'string', help: 'model folder (config.json + safetensors) or hub cache name' },
  delta: { type: 'string', help: 'increment or LoRA adapter to merge before exporting (the graph gets the head it was trained with)' },
  out: { type: 'string', help: 'output .onnx file' },
  opset: { type: 'number', help: 'ai.onnx opset (17 to 21)', default: 17 },
  'external-data': { type: 'boolean', help: 'weights in <out>.data (default: only for models over 2 GB)' },
};

export function runExportOnnx(flags: Parsed): number {
  const dir = flags.model;
  const out = flags.out;
  if (typeof dir !== 'string' || !dir) throw new SiftError('E_ARG', '--model is required');
  if (typeof out !== 'string' || !out) throw new SiftError('E_ARG', '--out is required');
  let model: PreTrainedModel;
  if (typeof flags.delta === 'string') {
    // The delta decides the head (a classification run from a language model exports a classifier).
    const info = inspectDelta(flags.delta);
    const task = info.task ?? taskOfFolder(dir);
    model = loadWithDelta(dir, flags.delta, { task, device: 'cpu', info }).model.eval();
  } else {
    const { config, stateDict } = loadModelFolder(dir);
    model = createModel(config, { device: 'cpu', seed: 0 }).eval();
    try {
      loadStateDictInto(model, stateDict, { disposeSource: true });
    } catch (e) {
      model.dispose();
      throw e;
    }
  }
  try {
    const ext = flags['external-data'];
    const r = exportOnnx(model, out, {
      opset: typeof flags.opset === 'number' ? flags.opset : 17,
      externalData: typeof ext === 'boolean' ? ext : 'auto',
    });
    process.stdout.write(
      `export-onnx: ${model.architecture} -> ${r.path}${r.dataPath ? ` (+ ${r.dataPath})` : ''}; inputs ${r.inputs.join(', ')}; outputs ${r.outputs.join(', ')}; opset ${r.opset}; ${r.initializers} initializers\n`,
    );
    return 0;
  } finally {
    model.dispose();
  }
}
