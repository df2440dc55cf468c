/**
 * `sift-ft finetune`: trains a model folder on a data file with SIFT (or full, LoRA, random-sparse)
 * and writes OUT/delta.safetensors, OUT/log.jsonl, OUT/report.html and, with --merge, OUT/model/.
 */
import * as fs from 'fs';
import * as path from 'path';
import { SiftError } from '../engine/errors';
import { loadRows } from '../train/data';
import { Trainer } from '../train/trainer';
import type { MethodName, Row, TaskName, TrainerEvent, TrainerOptions } from '../train/types';
import type { ModuleSelector } from '../sift/targets';
import type { FlagSpec, Parsed } from './args';
import { quantizeFlag, quantizeModel, deviceFlag, fmtBytes, fmtDuration, fmtInt, labelColumnOf, labelsOf, loadModelForTask, requireFile, requireFlag, requireTask, resolveDevice, writeJson, columnFlags, columnsOf } from './common';
import { Progress, fmtMetrics } from './progress';
import { RunRecorder, renderReport } from './report';

export const METHODS: MethodName[] = ['sift', 'full', 'lora', 'random-sparse'];

export const finetuneFlags: Record<string, FlagSpec> = {
  model: { type: 'string', help: 'model folder (config.json, safetensors, tokenizer.json)' },
  data: { type: 'string', help: 'training data: .jsonl, .csv, .tsv or raw text' },
  task: { type: 'string', help: 'classify, regress, causal-lm, instruct or chat', choices: ['classify', 'regress', 'causal-lm', 'instruct', 'chat'] },
  method: { type: 'string', help: 'training method', choices: METHODS, default: 'sift' },
  out: { type: 'string', help: 'output folder' },
  'sparse-rate': { type: 'number', help: 'SIFT: share of each target weight that is trained', default: 0.01 },
  'target-modules': { type: 'string', help: "SIFT/LoRA targets: 'a,b' module names, 're:<regex>' or 'all-linear' (default: every linear layer but the output and task heads)" },
  'dense-modules': { type: 'string', help: "modules trained in full: 'a,b' or 're:<regex>' (default: the task head)" },
  'selection-batches': { type: 'number', help: 'SIFT: batches whose gradients choose the indices', default: 1 },
  'selection-score': { type: 'string', help: 'SIFT: how entries are scored', choices: ['abs', 'fisher', 'random', 'magnitude'], default: 'abs' },
  'lora-rank': { type: 'number', help: 'LoRA rank', default: 8 },
  'lora-alpha': { type: 'number', help: 'LoRA alpha (default: 2 x rank)' },
  'lora-dropout': { type: 'number', help: 'LoRA dropout', default: 0 },
  steps: { type: 'number', help: 'optimizer steps after the selection batches' },
  epochs: { type: 'number', help: 'passes over the data (instead of --steps)' },
  'batch-size': { type: 'number', help: 'micro-batch size', default: 8 },
  'grad-accum': { type: 'number', help: 'micro-batches per optimizer step', default: 1 },
  lr: { type: 'number', help: 'peak learning rate', default: 1e-4 },
  'lr-schedule': { type: 'string', help: 'learning-rate schedule', choices: ['constant', 'linear', 'cosine'], default: 'linear' },
  'warmup-steps': { type: 'number', help: 'warmup steps', default: 0 },
  'weight-decay': { type: 'number', help: 'AdamW weight decay', default: 0 },
  'max-grad-norm': { type: 'number', help: 'gradient clipping norm (0 = off)', default: 1 },
  seed: { type: 'number', help: 'seed of shuffling, selection and initialisation', default: 42 },
  shuffle: { type: 'boolean', help: 'shuffle the data (--no-shuffle: file order, wrapping around)', default: true },
  'eval-data': { type: 'string', help: 'evaluation data file' },
  'eval-every': { type: 'number', help: 'evaluate every N optimizer steps (0: only at the end)', default: 0 },
  'checkpoint-every': { type: 'number', help: 'write a checkpoint every N optimizer steps (0: off)', default: 0 },
  resume: { type: 'boolean', help: 'continue from the checkpoint in --out' },
  merge: { type: 'boolean', help: 'also write the merged full model to OUT/model/' },
  ...columnFlags,
  'max-length': { type: 'number', help: 'max tokens per example / block size for causal-lm (default: the model\'s positions, at most 512; 1024 for causal-lm)' },
  'mixed-precision': { type: 'string', help: 'bf16 weights and activations (default: bf16 on CUDA, none on CPU)', choices: ['bf16', 'none'] },
  'activation-checkpointing': { type: 'boolean', help: 'recompute block activations in the backward' },
  'log-every': { type: 'number', help: 'log every N optimizer steps', default: 1 },
  device: deviceFlag,
  quantize: quantizeFlag,
  json: { type: 'boolean', help: 'print the final summary as JSON' },
  quiet: { type: 'boolean', help: 'no progress output' },
};

export const finetuneHelp = 'Fine-tunes a model with SIFT (or full, lora, random-sparse) and writes the increment, a log and a report.';

/** 'a,b' -> ['a','b']; 're:<regex>' -> RegExp; 'all-linear' stays. */
export function parseSelector(v: unknown, flag: string): ModuleSelector | undefined {
  if (v === undefined || v === '') return undefined;
  const s = String(v);
  if (s === 'all-linear') return 'all-linear';
  if (s.startsWith('re:')) {
    try {
      new RegExp(s.slice(3));
      // A string selector is a regular expression over whole module paths (PEFT's convention).
      return s.slice(3);
    } catch (e) {
      throw new SiftError('E_ARG', `--${flag}: invalid regular expression '${s.slice(3)}' (${(e as Error).message})`);
    }
  }
  const parts = s.split(',').map((p) => p.trim()).filter(Boolean);
  if (parts.length === 0) throw new SiftError('E_ARG', `--${flag}: expected 'a,b', 're:<regex>' or 'all-linear', got '${s}'`);
  return parts;
}

function positiveInt(v: unknown, flag: string, allowZero = false): number | undefined {
  if (v === undefined) return undefined;
  const n = v as number;
  if (!Number.isInteger(n) || n < (allowZero ? 0 : 1)) throw new SiftError('E_ARG', `flag --${flag} must be a ${allowZero ? 'non-negative' : 'positive'} integer, got ${n}`);
  return n;
}

/** The flags as TrainerOptions (validated). */
export function trainerOptionsFrom(f: Parsed, task: TaskName, device: string, outDir: string | undefined): TrainerOptions {
  const rate = f['sparse-rate'] as number;
  if (!(rate > 0 && rate <= 1)) throw new SiftError('E_ARG', `flag --sparse-rate must be in (0, 1], got ${rate}`);
  if (f.steps !== undefined && f.epochs !== undefined) throw new SiftError('E_ARG', 'give --steps or --epochs, not both');
  if (!((f.lr as number) > 0)) throw new SiftError('E_ARG', `flag --lr must be positive, got ${f.lr}`);
  if (!((f['max-grad-norm'] as number) >= 0)) throw new SiftError('E_ARG', `flag --max-grad-norm must be >= 0 (0 = off), got ${f['max-grad-norm']}`);
  if (f.epochs !== undefined && !((f.epochs as number) > 0)) throw new SiftError('E_ARG', `flag --epochs must be positive, got ${f.epochs}`);
  const method = f.method as MethodName;
  const targets = parseSelector(f['target-modules'], 'target-modules');
  const dense = parseSelector(f['dense-modules'], 'dense-modules');
  const columns = columnsOf(f);
  return {
    task,
    method,
    sift: {
      sparseRate: rate,
      targetModules: targets,
      denseModules: dense,
      selection: { batches: positiveInt(f['selection-batches'], 'selection-batches'), score: method === 'random-sparse' ? 'random' : (f['selection-score'] as 'abs') },
    },
    lora: {
      rank: positiveInt(f['lora-rank'], 'lora-rank'),
      alpha: f['lora-alpha'] as number | undefined,
      dropout: f['lora-dropout'] as number,
      targetModules: targets,
      denseModules: dense,
    },
    steps: positiveInt(f.steps, 'steps'),
    epochs: f.epochs as number | undefined,
    batchSize: positiveInt(f['batch-size'], 'batch-size'),
    gradAccum: positiveInt(f['grad-accum'], 'grad-accum'),
    lr: f.lr as number,
    lrSchedule: f['lr-schedule'] as 'linear',
    warmupSteps: positiveInt(f['warmup-steps'], 'warmup-steps', true),
    weightDecay: f['weight-decay'] as number,
    maxGradNorm: f['max-grad-norm'] as number,
    seed: f.seed as number,
    shuffle: f.shuffle as boolean,
    evalEvery: positiveInt(f['eval-every'], 'eval-every', true),
    checkpointEvery: positiveInt(f['checkpoint-every'], 'checkpoint-every', true),
    resume: !!f.resume,
    device,
    mixedPrecision: f['mixed-precision'] as 'bf16' | 'none' | undefined,
    activationCheckpointing: !!f['activation-checkpointing'],
    outDir,
    maxLength: positiveInt(f['max-length'], 'max-length'),
    trackGradProportion: method === 'sift' || method === 'random-sparse',
    logEvery: positiveInt(f['log-every'], 'log-every'),
    columns,
  };
}

export interface FinetuneResult {
  method: MethodName;
  outDir: string;
  delta: string | null;
  merged: string | null;
  report: string;
  log: string;
  steps: number;
  trainable: number;
  total: number;
  peakMemoryBytes: number;
  tokensPerSec: number;
  seconds: number;
  metrics?: Record<string, number | undefined>;
  gradProportion?: Record<string, number>;
  meanGradProportion?: number;
}

export function meanOf(v: Record<string, number> | undefined): number | undefined {
  if (!v) return undefined;
  const xs = Object.values(v).filter((x) => Number.isFinite(x));
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : undefined;
}

export async function runFinetune(f: Parsed): Promise<number> {
  const modelDir = requireFile(f.model, 'model', 'the model folder');
  const dataFile = requireFile(f.data, 'data', 'the training data file');
  const task = requireTask(f.task);
  const out = requireFlag(f.out as string | undefined, 'out', 'the output folder');
  if (f.quantize !== undefined && f.merge) {
    throw new SiftError('E_ARG', '--merge writes full weights, which a quantized base no longer has; apply OUT/delta.safetensors to the original model with sift-ft merge');
  }
  const evalFile = f['eval-data'] === undefined ? undefined : requireFile(f['eval-data'], 'eval-data', 'the evaluation data file');
  const device = resolveDevice(f.device);
  fs.mkdirSync(out, { recursive: true });
  const opts = trainerOptionsFrom(f, task, device, out);

  const rows = await loadRows(dataFile);
  if (rows.length === 0) throw new SiftError('E_FORMAT', `${dataFile}: no rows`);
  const evalRows: Row[] | undefined = evalFile ? await loadRows(evalFile) : undefined;
  let labels: string[] | undefined;
  if (task === 'classify') {
    const col = labelColumnOf(rows, opts.columns?.labelColumn);
    if (col) labels = labelsOf(evalRows ? [...rows, ...evalRows] : rows, col);
  }
  const loaded = loadModelForTask(modelDir, { task, device, labels, seed: opts.seed });
  opts.labels = loaded.labels;
  const t0 = Date.now();
  const trainer = new Trainer(loaded.model, loaded.tokenizer, opts);
  // The layers that do not train (SIFT's non-targets, LoRA's base) are stored quantized; the
  // trained ones stay dense, so the increment applies to the original base unchanged.
  const quantized = quantizeModel(loaded.model, f.quantize, true);
  if (f.quantize !== undefined && quantized.length === 0 && !f.quiet) process.stderr.write(`--quantize ${f.quantize}: every linear layer trains; none was quantized\n`);
  const progress = f.quiet ? null : new Progress(process.stderr, `finetune ${opts.method}`);
  const rec = new RunRecorder();
  let tokensPerSec = 0;
  let steps = 0;
  try {
    for await (const e of trainer.fit(rows, evalRows) as AsyncGenerator<TrainerEvent>) {
      rec.add(e);
      if (e.type === 'step') {
        tokensPerSec = e.tokensPerSec;
        steps = e.step;
        progress?.step(e);
      } else if (e.type === 'selection') {
        progress?.note(`selection done after ${e.batches} batch(es): ${fmtInt(e.trainable)} of ${fmtInt(e.total)} parameters trainable (${((100 * e.trainable) / e.total).toPrecision(3)}%)`);
      } else if (e.type === 'eval') {
        progress?.note(`eval at step ${e.step}: ${fmtMetrics(e.metrics)}`);
      } else if (e.type === 'checkpoint') {
        progress?.note(`checkpoint at step ${e.step}: ${e.path}`);
      }
    }
    progress?.end();
    const done = rec.done;
    let metrics = done?.metrics;
    if (!metrics && evalRows) metrics = await trainer.evaluate(evalRows);
    trainer.save(out);
    const deltaPath = path.join(out, 'delta.safetensors');
    let merged: string | null = null;
    if (f.merge) {
      merged = path.join(out, 'model');
      trainer.saveMerged(merged);
    }
    const seconds = (Date.now() - t0) / 1000;
    const result: FinetuneResult = {
      method: opts.method!,
      outDir: path.resolve(out),
      delta: fs.existsSync(deltaPath) ? path.resolve(deltaPath) : null,
      merged: merged ? path.resolve(merged) : null,
      report: path.resolve(out, 'report.html'),
      log: path.resolve(out, 'log.jsonl'),
      steps,
      trainable: done?.trainable ?? 0,
      total: done?.total ?? 0,
      peakMemoryBytes: done?.peakMemoryBytes ?? 0,
      tokensPerSec,
      seconds,
      metrics,
      gradProportion: rec.gradProportion,
      meanGradProportion: meanOf(rec.gradProportion),
    };
    const config: Record<string, unknown> = {
      model: path.resolve(modelDir), data: path.resolve(dataFile), evalData: evalFile ? path.resolve(evalFile) : undefined, device,
      ...flatOptions(opts),
    };
    // Curves from log.jsonl: after --resume it holds the steps of the earlier run(s) too.
    const fromLog = curvesFromLog(result.log) ?? rec;
    if (!fromLog.gradProportion) fromLog.gradProportion = rec.gradProportion;
    fs.writeFileSync(result.report, renderReport({
      title: `sift-ft finetune: ${opts.method} on ${path.basename(dataFile)}`,
      subtitle: `${path.basename(modelDir)}, task ${task}, ${steps} optimizer steps in ${fmtDuration(seconds)} on ${device}`,
      runs: [fromLog.run(opts.method!, config, summaryOf(result))],
    }));
    if (f.json) {
      writeJson(result);
    } else {
      const lines = [
        `method ${result.method}: ${fmtInt(result.trainable)} of ${fmtInt(result.total)} parameters trained, ${steps} steps in ${fmtDuration(seconds)}, ${Math.round(tokensPerSec)} tokens/s, peak memory ${fmtBytes(result.peakMemoryBytes)}`,
      ];
      if (metrics) lines.push(`eval: ${fmtMetrics(metrics)}`);
      if (result.meanGradProportion !== undefined) lines.push(`gradient proportion on the selected entries (mean over targets): ${(100 * result.meanGradProportion).toFixed(1)}%`);
      if (result.delta) lines.push(`increment: ${result.delta}`);
      if (merged) lines.push(`merged model: ${result.merged}`);
      lines.push(`log: ${result.log}`, `report: ${result.report}`);
      process.stdout.write(lines.join('\n') + '\n');
    }
    return 0;
  } finally {
    trainer.dispose();
    loaded.model.dispose();
  }
}

export function summaryOf(r: FinetuneResult): Record<string, unknown> {
  return {
    'optimizer steps': r.steps,
    'trainable parameters': r.trainable,
    'total parameters': r.total,
    'trainable share': r.total ? `${((100 * r.trainable) / r.total).toPrecision(3)}%` : undefined,
    'peak memory': fmtBytes(r.peakMemoryBytes),
    'tokens/s': Math.round(r.tokensPerSec),
    'wall time': fmtDuration(r.seconds),
    ...Object.fromEntries(Object.entries(r.metrics ?? {}).map(([k, v]) => [`eval ${k}`, v])),
    'mean gradient proportion': r.meanGradProportion !== undefined ? `${(100 * r.meanGradProportion).toFixed(1)}%` : undefined,
  };
}

/** TrainerOptions without the functions and signals, with selectors as strings, for reports. */
export function flatOptions(o: TrainerOptions): Record<string, unknown> {
  const sel = (s: ModuleSelector | undefined) => (Array.isArray(s) ? s.join(',') : s === 'all-linear' || s === undefined ? s : `re:${s}`);
  const out: Record<string, unknown> = {
    task: o.task, method: o.method, steps: o.steps, epochs: o.epochs, batchSize: o.batchSize, gradAccum: o.gradAccum, lr: o.lr,
    lrSchedule: o.lrSchedule, warmupSteps: o.warmupSteps, weightDecay: o.weightDecay, maxGradNorm: o.maxGradNorm, seed: o.seed,
    shuffle: o.shuffle, maxLength: o.maxLength,
  };
  if (o.method === 'sift' || o.method === 'random-sparse') {
    Object.assign(out, { sparseRate: o.sift?.sparseRate, targetModules: sel(o.sift?.targetModules), denseModules: sel(o.sift?.denseModules), selection: o.sift?.selection });
  } else if (o.method === 'lora') {
    Object.assign(out, { loraRank: o.lora?.rank, loraAlpha: o.lora?.alpha, loraTargets: sel(o.lora?.targetModules) });
  }
  return out;
}

/** A recorder filled from a log.jsonl (null when there is none or it cannot be read). */
export function curvesFromLog(file: string): RunRecorder | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  const rec = new RunRecorder();
  const seen = new Set<number>();
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      const e = JSON.parse(line) as TrainerEvent;
      // A resumed run may repeat steps after the last checkpoint: keep the latest of each.
      if (e.type === 'step') {
        if (seen.has(e.step)) {
          const i = rec.steps.findIndex((s) => s.step === e.step);
          rec.steps.splice(i, 1);
        }
        seen.add(e.step);
      }
      rec.add(e);
    } catch {
      return null;
    }
  }
  return rec;
}
