/** `sift-ft eval`: loss and the task's metrics of a model (optionally with an increment applied) on a data file. */
import { SiftError } from '../engine/errors';
import { loadRows } from '../train/data';
import { Trainer } from '../train/trainer';
import type { FlagSpec, Parsed } from './args';
import {
  quantizeFlag,
  quantizeModel,
  TASKS,
  deviceFlag,
  labelColumnOf,
  labelsOf,
  requireFile,
  resolveDevice,
  writeJson,
  columnFlags,
  columnsOf,
} from './common';
import { inspectDelta, loadWithDelta, taskFor } from './delta';
import type { TaskName } from '../train/types';
import { fmtMetrics } from './progress';

export const evalFlags: Record<string, FlagSpec> = {
  model: { type: 'string', help: 'model folder or .onnx graph' },
  delta: { type: 'string', help: 'an increment (delta.safetensors or its run folder) or a LoRA adapter folder, trained from --model' },
  data: { type: 'string', help: 'evaluation data: .jsonl, .csv, .tsv or raw text' },
  task: {
    type: 'string',
    help: 'classify, regress, causal-lm, instruct or chat (default: the task --delta was trained for)',
    choices: TASKS,
  },
  'batch-size': { type: 'number', help: 'batch size', default: 16, integer: true, min: 1 },
  'max-length': {
    type: 'number',
    integer: true,
    min: 1,
    help: "max tokens per example / block size for causal-lm (default: the model's positions, at most 512; 1024 for causal-lm)",
  },
  ...columnFlags,
  device: deviceFlag,
  quantize: quantizeFlag,
  json: { type: 'boolean', help: 'print the metrics as JSON' },
};

export const evalHelp = 'Evaluates a model (with an optional increment) on a data file: loss and the task metrics.';

export async function runEval(f: Parsed): Promise<number> {
  const modelDir = requireFile(f.model, 'model', 'the model folder');
  const dataFile = requireFile(f.data, 'data', 'the evaluation data file');
  const delta = f.delta === undefined ? undefined : requireFile(f.delta, 'delta', 'an increment file or adapter folder');
  const info = delta ? inspectDelta(delta) : null;
  const task = taskFor(f.task as TaskName | undefined, info);
  const device = resolveDevice(f.device);
  const batchSize = f['batch-size'] as number;
  if (!Number.isInteger(batchSize) || batchSize < 1)
    throw new SiftError('E_ARG', `flag --batch-size must be a positive integer, got ${batchSize}`);
  const rows = await loadRows(dataFile);
  if (rows.length === 0) throw new SiftError('E_FORMAT', `${dataFile}: no rows`);
  const columns = columnsOf(f);
  let labels: string[] | undefined;
  if (task === 'classify') {
    const col = labelColumnOf(rows, columns.labelColumn);
    if (col) labels = labelsOf(rows, col);
  }
  const loaded = loadWithDelta(modelDir, delta, { task, device, labels, info });
  try {
    // The increment applies to the unquantized base; quantization comes after it.
    quantizeModel(loaded.model, f.quantize, false);
    loaded.model.eval();
    const trainer = new Trainer(loaded.model, loaded.tokenizer, {
      task,
      method: 'full',
      device,
      batchSize,
      evalBatchSize: batchSize,
      maxLength: f['max-length'] as number,
      columns,
      labels: loaded.labels,
      shuffle: false,
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
