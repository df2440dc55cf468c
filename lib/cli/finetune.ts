/**
 * `sift-ft finetune`: trains a model folder on a data file with SIFT (or full, LoRA, random-sparse)
 * and writes OUT/delta.safetensors, OUT/log.jsonl, OUT/report.html and, with --merge, OUT/model/.
 */
import * as fs from 'fs';
import * as path from 'path';
import { SiftError } from '../engine/errors';
import { loadRows } from '../train/data';
import { distEnv, ProcessGroup } from '../dist/group';
import { Trainer, latestCheckpoint } from '../train/trainer';
import type { MethodName, Row, SparseGradientPaths, TaskName, TrainerEvent, TrainerOptions } from '../train/types';
import type { ModuleSelector } from '../sift/targets';
import { FlagSpec, ParseResult, Parsed, resolvedConfig } from './args';
import { writeFileAtomic } from '../io/atomic';
import {
  quantizeFlag,
  deviceFlag,
  fmtBytes,
  fmtDuration,
  fmtInt,
  labelColumnOf,
  labelsOf,
  loadModelForTask,
  requireFile,
  requireFlag,
  requireTask,
  resolveDevice,
  writeJson,
  columnFlags,
  columnsOf,
  fmtSparseGradient,
  TASKS,
  activationCheckpointingFlag,
  gradAccumFlag,
  logEveryFlag,
  mixedPrecisionFlag,
  resumeFlag,
} from './common';
import { Progress, fmtMetrics } from './progress';
import { RunRecorder, renderReport } from './report';
import { planWarning } from './plan';
import { loadConfig } from '../io/hf';
import type { HFConfig } from '../models/common';
import type { QuasiSparsity } from '../sift/quasi';

export const METHODS: MethodName[] = ['sift', 'full', 'lora', 'random-sparse'];

export const finetuneFlags: Record<string, FlagSpec> = {
  model: { type: 'string', help: 'model folder (config.json, safetensors, tokenizer.json) or an .onnx graph (tokenizer files beside it)' },
  data: { type: 'string', help: 'training data: .jsonl, .csv, .tsv or raw text' },
  task: { type: 'string', help: 'classify, regress, causal-lm, instruct or chat', choices: TASKS },
  method: { type: 'string', help: 'training method', choices: METHODS, default: 'sift' },
  out: { type: 'string', help: 'output folder' },
  'sparse-rate': { type: 'number', help: 'SIFT: share of each target weight that is trained', default: 0.01 },
  'target-modules': {
    type: 'string',
    help: "SIFT/LoRA targets: 'a,b' module names, 're:<regex>' or 'all-linear' (default: every linear layer but the output and task heads)",
  },
  'dense-modules': { type: 'string', help: "modules trained in full: 'a,b' or 're:<regex>' (default: the task head)" },
  'selection-batches': { type: 'number', help: 'SIFT: batches whose gradients choose the indices', default: 1, integer: true, min: 1 },
  'selection-score': {
    type: 'string',
    help: 'SIFT: how entries are scored',
    choices: ['abs', 'fisher', 'random', 'magnitude'],
    default: 'abs',
  },
  'lora-rank': { type: 'number', help: 'LoRA rank', default: 8, integer: true, min: 1 },
  'lora-alpha': { type: 'number', help: 'LoRA alpha (default: 2 x rank)' },
  'lora-dropout': { type: 'number', help: 'LoRA dropout', default: 0 },
  steps: { type: 'number', help: 'optimizer steps after the selection batches', integer: true, min: 1 },
  epochs: { type: 'number', help: 'passes over the data (instead of --steps)' },
  'batch-size': { type: 'number', help: 'micro-batch size', default: 8, integer: true, min: 1 },
  'grad-accum': gradAccumFlag,
  lr: { type: 'number', help: 'peak learning rate', default: 1e-4 },
  'lr-schedule': { type: 'string', help: 'learning-rate schedule', choices: ['constant', 'linear', 'cosine'], default: 'linear' },
  'warmup-steps': { type: 'number', help: 'warmup steps (overrides --warmup-ratio)', default: 0, integer: true, min: 0 },
  'warmup-ratio': { type: 'number', help: 'warmup as a share of the total steps (rounded up)', default: 0, min: 0 },
  'weight-decay': { type: 'number', help: 'AdamW weight decay', default: 0 },
  'max-grad-norm': { type: 'number', help: 'gradient clipping norm (0 = off)', default: 1 },
  seed: { type: 'number', help: 'seed of shuffling, selection and initialisation', default: 42, integer: true },
  shuffle: { type: 'boolean', help: 'shuffle the data (--no-shuffle: file order, wrapping around)', default: true },
  'eval-data': { type: 'string', help: 'evaluation data file' },
  'eval-every': { type: 'number', help: 'evaluate every N optimizer steps (0: only at the end)', default: 0, integer: true, min: 0 },
  'checkpoint-every': {
    type: 'number',
    help: 'write OUT/checkpoint-<step> every N optimizer steps (0: only at the end and on interruption)',
    default: 0,
    integer: true,
    min: 0,
  },
  'save-total-limit': { type: 'number', help: 'keep at most N checkpoint folders (the best one is kept besides)', integer: true, min: 1 },
  'metric-for-best': {
    type: 'string',
    help: 'eval metric that picks the best result, saved to OUT/best/ (accuracy, f1, loss, ...; needs --eval-data)',
  },
  'greater-is-better': {
    type: 'boolean',
    help: 'whether a larger --metric-for-best is better (default: false for loss and perplexity, else true)',
  },
  'early-stopping-patience': {
    type: 'number',
    help: 'stop after N evaluations without improvement of --metric-for-best (default metric: loss)',
    integer: true,
    min: 1,
  },
  resume: resumeFlag,
  merge: { type: 'boolean', help: 'also write the merged full model to OUT/model/' },
  ...columnFlags,
  'max-length': {
    type: 'number',
    integer: true,
    min: 1,
    help: "max tokens per example / block size for causal-lm (default: the model's positions, at most 512; 1024 for causal-lm)",
  },
  'mixed-precision': mixedPrecisionFlag,
  'activation-checkpointing': activationCheckpointingFlag,
  'log-every': logEveryFlag,
  'grad-proportion-every': {
    type: 'number',
    integer: true,
    min: 0,
    default: 0,
    help: "sift, random-sparse: also measure the gradient proportion on the selected entries every N steps (log.jsonl's step events get meanGradProportion; it is always measured on the last step). Measuring steps take the dense weight gradient instead of the SDDMM",
  },
  'quasi-sparsity': {
    type: 'boolean',
    help: "before training, measure the gradient's quasi-sparsity (share of the squared norm on the top 0.1%, 1%, 5% of entries per layer and overall) into log.jsonl and report.html",
  },
  'report-to': {
    type: 'string',
    help: "where the logged metrics also go: 'tensorboard' (event files in --out, beside log.jsonl) or 'none'",
    choices: ['none', 'tensorboard'],
    default: 'none',
  },
  device: deviceFlag,
  quantize: quantizeFlag,
  json: { type: 'boolean', help: 'print the final summary as JSON' },
  quiet: { type: 'boolean', help: 'no progress output' },
  'dist-timeout': {
    type: 'number',
    min: 1,
    default: 600,
    help: 'data parallel (under sift-ft launch or torchrun): seconds a process waits for the others in a collective before the run ends with E_DIST',
  },
  'dist-bucket-mb': {
    type: 'number',
    default: 25,
    help: 'data parallel: the gradients are summed in buckets of about this many MiB (as PyTorch DDP bucket_cap_mb)',
  },
  'dist-overlap': {
    type: 'boolean',
    default: true,
    help: "data parallel: start each bucket's all-reduce during the backward (--no-dist-overlap: all after it)",
  },
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
  const parts = s
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean);
  if (parts.length === 0) throw new SiftError('E_ARG', `--${flag}: expected 'a,b', 're:<regex>' or 'all-linear', got '${s}'`);
  return parts;
}

function positiveInt(v: unknown, flag: string, allowZero = false): number | undefined {
  if (v === undefined) return undefined;
  const n = v as number;
  if (!Number.isInteger(n) || n < (allowZero ? 0 : 1))
    throw new SiftError('E_ARG', `flag --${flag} must be a ${allowZero ? 'non-negative' : 'positive'} integer, got ${n}`);
  return n;
}

/** The flags as TrainerOptions (validated). */
export function trainerOptionsFrom(f: Parsed, task: TaskName, device: string, outDir: string | undefined): TrainerOptions {
  const rate = f['sparse-rate'] as number;
  if (!(rate > 0 && rate <= 1)) throw new SiftError('E_ARG', `flag --sparse-rate must be in (0, 1], got ${rate}`);
  if (f.steps !== undefined && f.epochs !== undefined) throw new SiftError('E_ARG', 'give --steps or --epochs, not both');
  if (!((f.lr as number) > 0)) throw new SiftError('E_ARG', `flag --lr must be positive, got ${f.lr}`);
  if (!((f['max-grad-norm'] as number) >= 0))
    throw new SiftError('E_ARG', `flag --max-grad-norm must be >= 0 (0 = off), got ${f['max-grad-norm']}`);
  if (f.epochs !== undefined && !((f.epochs as number) > 0))
    throw new SiftError('E_ARG', `flag --epochs must be positive, got ${f.epochs}`);
  const ratio = f['warmup-ratio'] as number | undefined;
  if (ratio !== undefined && !(ratio >= 0 && ratio <= 1))
    throw new SiftError('E_ARG', `flag --warmup-ratio must be in [0, 1], got ${ratio}`);
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
      selection: {
        batches: positiveInt(f['selection-batches'], 'selection-batches'),
        score: method === 'random-sparse' ? 'random' : (f['selection-score'] as 'abs'),
      },
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
    warmupRatio: f['warmup-ratio'] as number | undefined,
    weightDecay: f['weight-decay'] as number,
    maxGradNorm: f['max-grad-norm'] as number,
    seed: f.seed as number,
    shuffle: f.shuffle as boolean,
    evalEvery: positiveInt(f['eval-every'], 'eval-every', true),
    checkpointEvery: positiveInt(f['checkpoint-every'], 'checkpoint-every', true),
    saveTotalLimit: positiveInt(f['save-total-limit'], 'save-total-limit'),
    metricForBest: (f['metric-for-best'] as string | undefined) ?? (f['early-stopping-patience'] !== undefined ? 'loss' : undefined),
    greaterIsBetter: f['greater-is-better'] as boolean | undefined,
    earlyStoppingPatience: positiveInt(f['early-stopping-patience'], 'early-stopping-patience'),
    resume: !!f.resume,
    device,
    mixedPrecision: f['mixed-precision'] as 'bf16' | 'none' | undefined,
    activationCheckpointing: !!f['activation-checkpointing'],
    outDir,
    maxLength: positiveInt(f['max-length'], 'max-length'),
    // Measured on the last step (and every --grad-proportion-every steps): the other steps keep the SDDMM.
    trackGradProportion: method === 'sift' || method === 'random-sparse' ? 'sampled' : false,
    gradProportionEvery: positiveInt(f['grad-proportion-every'], 'grad-proportion-every', true),
    logEvery: positiveInt(f['log-every'], 'log-every'),
    reportTo: (f['report-to'] as 'none' | 'tensorboard' | undefined) ?? 'none',
    quasiSparsity: !!f['quasi-sparsity'],
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
  /** The best evaluation (--metric-for-best) and where its result is. */
  best?: { step: number; metric: string; value: number; path?: string };
  stoppedEarly?: boolean;
  gradProportion?: Record<string, number>;
  meanGradProportion?: number;
  /** The optimizer step the gradient proportion was measured on. */
  gradProportionStep?: number;
  /** sift, random-sparse: the path the targets' weight gradients took (the SDDMM or the dense gradient). */
  sparseGradient?: SparseGradientPaths;
  /** Data parallel: the processes, and the gradient bytes all-reduced per step beside full fine-tuning's. */
  worldSize?: number;
  communication?: {
    bytesPerStep: number;
    bucketsPerStep: number;
    bucketsInBackward: number;
    overlap: boolean;
    fullFinetuneBytesPerStep: number;
    fraction: number;
  };
  /** The gradient's quasi-sparsity before training (--quasi-sparsity). */
  quasiSparsity?: QuasiSparsity;
}

export function meanOf(v: Record<string, number> | undefined): number | undefined {
  if (!v) return undefined;
  const xs = Object.values(v).filter((x) => Number.isFinite(x));
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : undefined;
}

/**
 * SIGINT and SIGTERM while `run` trains: the first aborts `controller` (the Trainer stops at the
 * next step boundary and writes a checkpoint), a second exits at once with 130. The handlers are
 * the CLI's: the library only sees the AbortSignal.
 */
export async function withInterrupts<T>(controller: AbortController, note: (s: string) => void, run: () => Promise<T>): Promise<T> {
  const onSignal = (sig: NodeJS.Signals) => {
    if (controller.signal.aborted) {
      process.stderr.write(`\nsift-ft: second ${sig}: exiting now (the last checkpoint stays)\n`);
      process.exit(130);
    }
    note(`${sig}: stopping at the next step boundary and writing a checkpoint (press Ctrl-C again to exit at once)`);
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await run();
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** Flags a rank of a group may set differently from the others: where it prints, how long it waits. */
const PER_RANK_FLAGS = new Set(['out', 'json', 'quiet', 'dist-timeout', 'config', 'device', 'report-to', 'merge']);

/** A 32-bit FNV-1a hash of a string (exact in the f64 sums of allReduceNumbers). */
function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** What a rank sees of a path flag: a file's size, a folder's config.json and file sizes (the paths may differ between nodes). */
function pathPrint(p: string | undefined): string {
  if (p === undefined) return '';
  const st = fs.statSync(p);
  if (!st.isDirectory()) return `file ${st.size}`;
  const files = fs.readdirSync(p).sort();
  const config = files.includes('config.json') ? fs.readFileSync(path.join(p, 'config.json'), 'utf8') : '';
  return JSON.stringify([config, files.map((n) => `${n}:${fs.statSync(path.join(p, n)).size}`)]);
}

/**
 * E_MISMATCH on every rank when the ranks of a group were started with different training flags,
 * a different model or different data (another --sparse-rate, --seed, --lr, ...): the ranks would
 * otherwise sum gradient buffers of different sizes (a crash in the collective library) or train
 * silently wrong. Each flag is compared by a hash, in the order of the flag table.
 */
async function checkSameRun(group: ProcessGroup, f: Parsed, paths: Record<string, string | undefined>): Promise<void> {
  const names = Object.keys(finetuneFlags).filter((k) => !PER_RANK_FLAGS.has(k));
  const mine = names.map((k) => hash32(k in paths ? pathPrint(paths[k]) : JSON.stringify(f[k] ?? null)));
  const n = mine.length;
  const W = group.worldSize;
  // The flag tables themselves first (another sift-ft version on a rank): equal counts on every rank.
  const [sum, sumSq] = await group.allReduceNumbers([n, n * n]);
  if (sum !== W * n || sumSq !== W * n * n)
    throw new SiftError('E_MISMATCH', `the ranks of the group run different versions of sift-ft finetune (rank ${group.rank}: ${n} flags)`);
  const all = new Array<number>(W * n).fill(0);
  mine.forEach((h, i) => (all[group.rank * n + i] = h));
  const got = await group.allReduceNumbers(all);
  const differ = new Map<string, number[]>();
  for (let r = 1; r < W; r++)
    for (let i = 0; i < n; i++) if (got[r * n + i] !== got[i]) differ.set(names[i], [...(differ.get(names[i]) ?? []), r]);
  if (differ.size)
    throw new SiftError(
      'E_MISMATCH',
      `the ranks of the group were started with different settings: ${[...differ].map(([k, ranks]) => `--${k} (rank${ranks.length > 1 ? 's' : ''} ${ranks.join(', ')} differ${ranks.length > 1 ? '' : 's'} from rank 0)`).join(', ')}; every process must run the same finetune command`,
    );
}

export async function runFinetune(f: Parsed, _argv: string[] = [], parsed?: ParseResult): Promise<number> {
  const modelDir = requireFile(f.model, 'model', 'the model folder');
  const dataFile = requireFile(f.data, 'data', 'the training data file');
  const task = requireTask(f.task);
  const out = requireFlag(f.out as string | undefined, 'out', 'the output folder');
  if (f.quantize !== undefined && f.merge) {
    throw new SiftError(
      'E_ARG',
      '--merge writes full weights, which a quantized base no longer has; apply OUT/delta.safetensors to the original model with sift-ft merge',
    );
  }
  const evalFile = f['eval-data'] === undefined ? undefined : requireFile(f['eval-data'], 'eval-data', 'the evaluation data file');
  let device = resolveDevice(f.device);
  // Started by sift-ft launch or torchrun: join the group first (each CUDA process takes cuda:LOCAL_RANK).
  const group = distEnv() ? await ProcessGroup.init({ device, timeoutSec: f['dist-timeout'] as number }) : undefined;
  if (group) device = group.device;
  if (group) await checkSameRun(group, f, { model: modelDir, data: dataFile, 'eval-data': evalFile });
  const writer = !group || group.rank === 0;
  const opts = trainerOptionsFrom(f, task, device, out);
  opts.processGroup = group;
  opts.distBucketMb = f['dist-bucket-mb'] as number;
  opts.distOverlap = f['dist-overlap'] as boolean;
  if (opts.metricForBest && !evalFile)
    throw new SiftError(
      'E_ARG',
      `--metric-for-best${f['metric-for-best'] === undefined ? ' (implied by --early-stopping-patience)' : ''} needs --eval-data`,
    );
  if (opts.resume && !latestCheckpoint(out))
    throw new SiftError(
      'E_IO',
      `--resume: no checkpoint in ${out} (checkpoint-<step>/ folders are written there by --checkpoint-every, on interruption and at the end)`,
    );
  fs.mkdirSync(out, { recursive: true });
  if (writer) {
    // The configuration the run resolved (defaults, --config file, flags), beside its results.
    // Paths made absolute, so that the file is a --config for the same run from any folder.
    const runConfig = resolvedConfig(parsed ?? { flags: f, sources: {} });
    for (const k of ['model', 'data', 'eval-data', 'out'])
      if (typeof runConfig[k] === 'string') runConfig[k] = path.resolve(runConfig[k] as string);
    writeFileAtomic(path.join(out, 'run_config.json'), [JSON.stringify(runConfig, null, 2) + '\n']);
  }

  // Before anything is allocated: one line when the plan says the run will not fit the device
  // (for model folders: an .onnx graph has no config.json to plan from).
  const isOnnx = modelDir.toLowerCase().endsWith('.onnx');
  const warning = isOnnx
    ? null
    : planWarning(loadConfig(modelDir) as HFConfig, {
        task,
        method: opts.method,
        sparseRate: opts.sift?.sparseRate,
        batchSize: opts.batchSize,
        maxLength: opts.maxLength,
        activationCheckpointing: opts.activationCheckpointing,
        mixedPrecision: opts.mixedPrecision,
        device: device.startsWith('cuda') ? 'cuda' : 'cpu',
        loraRank: opts.lora?.rank,
        quantize: f.quantize as 'int8' | 'nf4' | undefined,
        targetModules: opts.method === 'lora' ? opts.lora?.targetModules : opts.sift?.targetModules,
        denseModules: opts.sift?.denseModules,
      });
  if (warning) process.stderr.write(warning + '\n');

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
  const controller = new AbortController();
  opts.signal = controller.signal;
  // The trainer quantizes the frozen base when training starts, once it knows what trains: LoRA's
  // base; SIFT's targets too (their trained entries stay f32 beside the codes; the increment
  // applies to the original base). Full fine-tuning has no frozen base.
  if (f.quantize !== undefined && opts.method !== 'full') opts.quantize = f.quantize as 'int8' | 'nf4';
  const trainer = new Trainer(loaded.model, loaded.tokenizer, opts);
  if (f.quantize !== undefined && opts.method === 'full' && !f.quiet)
    process.stderr.write(`--quantize ${f.quantize}: every linear layer trains; none was quantized\n`);
  const progress = f.quiet || !writer ? null : new Progress(process.stderr, `finetune ${opts.method}`);
  const note = (s: string) => (progress ? progress.note(s) : process.stderr.write(`sift-ft finetune: ${s}\n`));
  const rec = new RunRecorder();
  let tokensPerSec = 0;
  let steps = 0;
  try {
    await withInterrupts(controller, note, async () => {
      for await (const e of trainer.fit(rows, evalRows) as AsyncGenerator<TrainerEvent>) {
        rec.add(e);
        if (e.type === 'step') {
          tokensPerSec = e.tokensPerSec;
          steps = e.step;
          progress?.step(e);
        } else if (e.type === 'selection') {
          progress?.note(
            `selection done after ${e.batches} batch(es): ${fmtInt(e.trainable)} of ${fmtInt(e.total)} parameters trainable (${((100 * e.trainable) / e.total).toPrecision(3)}%)`,
          );
        } else if (e.type === 'eval') {
          progress?.note(`eval at step ${e.step}: ${fmtMetrics(e.metrics)}`);
        } else if (e.type === 'checkpoint') {
          progress?.note(`checkpoint at step ${e.step}: ${e.path}`);
        } else if (e.type === 'quasi-sparsity') {
          progress?.note(
            `quasi-sparsity: the top ${e.fractions.map((x, i) => `${+(100 * x).toPrecision(3)}% of entries carry ${(100 * e.overall[i]).toFixed(1)}%`).join(', ')} of the gradient's squared norm`,
          );
        }
      }
    });
    progress?.end();
    const done = rec.done;
    if (!writer) {
      // Rank 0 writes the results; the others only take part in the collectives (evaluation
      // included), and in the same cases as rank 0: an interrupted run evaluates nothing there.
      if (done?.interrupted) return 130;
      if (!done?.metrics && evalRows) await trainer.evaluate(evalRows);
      return 0;
    }
    if (done?.interrupted) {
      const ckpt = latestCheckpoint(out);
      process.stderr.write(
        `sift-ft finetune: interrupted at step ${done.step}; checkpoint ${ckpt}; no increment written. Run the same command with --resume to finish.\n`,
      );
      return 130;
    }
    if (done?.stoppedEarly)
      process.stderr.write(
        `sift-ft finetune: early stopping at step ${done.step}: ${opts.earlyStoppingPatience} evaluations without improvement of ${done.best?.metric}\n`,
      );
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
      best: done?.best ? { ...done.best, path: done.best.path ? path.resolve(done.best.path) : undefined } : undefined,
      stoppedEarly: done?.stoppedEarly,
      gradProportion: rec.gradProportion,
      meanGradProportion: meanOf(rec.gradProportion),
      gradProportionStep: done?.gradProportionStep,
      sparseGradient: done?.sparseGradient,
      ...(group ? { worldSize: group.worldSize, communication: done?.communication } : {}),
      quasiSparsity: rec.quasiSparsity,
    };
    const config: Record<string, unknown> = {
      model: path.resolve(modelDir),
      data: path.resolve(dataFile),
      evalData: evalFile ? path.resolve(evalFile) : undefined,
      device,
      ...flatOptions(opts),
    };
    // Curves from log.jsonl: after --resume it holds the steps of the earlier run(s) too.
    const fromLog = curvesFromLog(result.log) ?? rec;
    if (!fromLog.gradProportion) fromLog.gradProportion = rec.gradProportion;
    fs.writeFileSync(
      result.report,
      renderReport({
        title: `sift-ft finetune: ${opts.method} on ${path.basename(dataFile)}`,
        subtitle: `${path.basename(modelDir)}, task ${task}, ${steps} optimizer steps in ${fmtDuration(seconds)} on ${device}`,
        runs: [fromLog.run(opts.method!, config, summaryOf(result))],
      }),
    );
    if (f.json) {
      writeJson(result);
    } else {
      const lines = [
        `method ${result.method}: ${fmtInt(result.trainable)} of ${fmtInt(result.total)} parameters trained, ${steps} steps in ${fmtDuration(seconds)}, ${Math.round(tokensPerSec)} tokens/s, peak memory ${fmtBytes(result.peakMemoryBytes)}`,
      ];
      if (metrics) lines.push(`eval: ${fmtMetrics(metrics)}`);
      if (result.meanGradProportion !== undefined)
        lines.push(
          `gradient proportion on the selected entries (mean over targets${result.gradProportionStep !== undefined ? `, step ${result.gradProportionStep}` : ''}): ${(100 * result.meanGradProportion).toFixed(1)}%`,
        );
      if (result.sparseGradient) lines.push(`weight gradient: ${fmtSparseGradient(result.sparseGradient)}`);
      if (result.communication)
        lines.push(
          `data parallel over ${result.worldSize} processes: ${fmtBytes(result.communication.bytesPerStep)} of gradients all-reduced per step in ${result.communication.bucketsPerStep} bucket(s)${result.communication.overlap ? ' overlapped with the backward' : ''} (full fine-tuning: ${fmtBytes(result.communication.fullFinetuneBytesPerStep)}, ${(100 * result.communication.fraction).toPrecision(3)}%)`,
        );
      if (result.delta) lines.push(`increment: ${result.delta}`);
      if (merged) lines.push(`merged model: ${result.merged}`);
      if (done?.best)
        lines.push(
          `best: ${done.best.metric} ${done.best.value.toPrecision(4)} at step ${done.best.step}, saved to ${path.resolve(done.best.path ?? out, '')} (checkpoint-${done.best.step})`,
        );
      lines.push(`log: ${result.log}`, `report: ${result.report}`);
      if (opts.reportTo === 'tensorboard') lines.push(`tensorboard: tensorboard --logdir ${result.outDir}`);
      process.stdout.write(lines.join('\n') + '\n');
    }
    return 0;
  } finally {
    trainer.dispose();
    loaded.model.dispose();
    group?.destroy();
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
    'weight gradient': r.sparseGradient ? fmtSparseGradient(r.sparseGradient) : undefined,
  };
}

/** TrainerOptions without the functions and signals, with selectors as strings, for reports. */
export function flatOptions(o: TrainerOptions): Record<string, unknown> {
  const sel = (s: ModuleSelector | undefined) => (Array.isArray(s) ? s.join(',') : s === 'all-linear' || s === undefined ? s : `re:${s}`);
  const out: Record<string, unknown> = {
    task: o.task,
    method: o.method,
    steps: o.steps,
    epochs: o.epochs,
    batchSize: o.batchSize,
    gradAccum: o.gradAccum,
    lr: o.lr,
    lrSchedule: o.lrSchedule,
    warmupSteps: o.warmupSteps,
    weightDecay: o.weightDecay,
    maxGradNorm: o.maxGradNorm,
    seed: o.seed,
    shuffle: o.shuffle,
    maxLength: o.maxLength,
  };
  if (o.method === 'sift' || o.method === 'random-sparse') {
    Object.assign(out, {
      sparseRate: o.sift?.sparseRate,
      targetModules: sel(o.sift?.targetModules),
      denseModules: sel(o.sift?.denseModules),
      selection: o.sift?.selection,
    });
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
