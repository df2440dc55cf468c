/** `sift-ft eval`: loss and the task's metrics of a model (optionally with an increment applied) on a data file. */
import { SiftError } from '../engine/errors';
import { applyIncrement } from '../sift/increment';
import { loadRows } from '../train/data';
import { Trainer } from '../train/trainer';
import type { FlagSpec, Parsed } from './args';
import { quantizeFlag, quantizeModel, deviceFlag, labelColumnOf, labelsOf, loadModelForTask, requireFile, requireTask, resolveDevice, writeJson, columnFlags, columnsOf } from './common';
import { fmtMetrics } from './progress';

export const evalFlags: Record<string, FlagSpec> = {
  model: { type: 'string', help: 'model folder' },
  delta: { type: 'string', help: 'a sparse increment (delta.safetensors) to apply first' },
  data: { type: 'string', help: 'evaluation data: .jsonl, .csv, .tsv or raw text' },
  task: { type: 'string', help: 'classify, regress, causal-lm, instruct or chat', choices: ['classify', 'regress', 'causal-lm', 'instruct', 'chat'] },
  'batch-size': { type: 'number', help: 'batch size', default: 16 },
  'max-length': { type: 'number', help: 'max tokens per example / block size for causal-lm (default: the model\'s positions, at most 512; 1024 for causal-lm)' },
  ...columnFlags,
  device: deviceFlag,
  quantize: quantizeFlag,
  json: { type: 'boolean', help: 'print the metrics as JSON' },
};

export const evalHelp = 'Evaluates a model (with an optional increment) on a data file: loss and the task metrics.';

export async function runEval(f: Parsed): Promise<number> {
  const modelDir = requireFile(f.model, 'model', 'the model folder');
  const dataFile = requireFile(f.data, 'data', 'the evaluation data file');
  const task = requireTask(f.task);
  const delta = f.delta === undefined ? undefined : requireFile(f.delta, 'delta', 'an increment file');
  const device = resolveDevice(f.device);
  const batchSize = f['batch-size'] as number;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new SiftError('E_ARG', `flag --batch-size must be a positive integer, got ${batchSize}`);
  const rows = await loadRows(dataFile);
  if (rows.length === 0) throw new SiftError('E_FORMAT', `${dataFile}: no rows`);
  const columns = columnsOf(f);
  let labels: string[] | undefined;
  if (task === 'classify') {
    const col = labelColumnOf(rows, columns.labelColumn);
    if (col) labels = labelsOf(rows, col);
  }
  const loaded = loadModelForTask(modelDir, { task, device, labels });
  try {
    if (delta) applyIncrement(loaded.model, delta);
    // The increment applies to the unquantized base; quantization comes after it.
    quantizeModel(loaded.model, f.quantize, false);
    loaded.model.eval();
    const trainer = new Trainer(loaded.model, loaded.tokenizer, {
      task, method: 'full', device, batchSize, evalBatchSize: batchSize, maxLength: f['max-length'] as number, columns, labels: loaded.labels, shuffle: false,
    });
    try {
      const t0 = Date.now();
      const metrics = await trainer.evaluate(rows);
      const seconds = (Date.now() - t0) / 1000;
      if (f.json) writeJson({ model: modelDir, delta: delta ?? null, data: dataFile, task, device, seconds, metrics });
      else process.stdout.write(`${fmtMetrics(metrics)}\n`);
    } finally {
      trainer.dispose();
    }
    return 0;
  } finally {
    loaded.model.dispose();
  }
}
