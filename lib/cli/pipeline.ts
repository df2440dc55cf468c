/**
 * The steps the demo and the real-data experiment share: pre-train a small causal LM from scratch,
 * save it as a model folder, then fine-tune copies of it with several methods and collect one
 * comparable row per method (trainable parameters, peak memory, tokens/s, metric, gradient share).
 */
import * as fs from 'fs';
import * as path from 'path';
import { saveModelFolder } from '../io/hf';
import { createModel, loadStateDictInto, stateDict } from '../models';
import { tensor } from '../autograd/creation';
import { SiftError } from '../engine/errors';
import type { HFConfig, PreTrainedModel } from '../models/common';
import type { HfTokenizer } from '../tokenizers';
import { Trainer } from '../train/trainer';
import type { MethodName, Metrics, Row, SparseGradientPaths, TrainerEvent, TrainerOptions } from '../train/types';
import { fmtBytes, fmtDuration, fmtInt, fmtSparseGradient, loadModelForTask, table } from './common';
import { meanOf } from './finetune';
import { Progress, fmtMetrics } from './progress';
import { RunData, RunRecorder, renderReport } from './report';

export interface Logger {
  (line: string): void;
}

async function drain(
  trainer: Trainer,
  train: Row[],
  evalRows: Row[] | undefined,
  rec: RunRecorder,
  progress: Progress | null,
  log: Logger,
): Promise<number> {
  let tokensPerSec = 0;
  const samples: number[] = [];
  for await (const e of trainer.fit(train, evalRows) as AsyncGenerator<TrainerEvent>) {
    rec.add(e);
    if (e.type === 'step') {
      // Steady-state throughput: the first steps pay for warm-up and allocation.
      samples.push(e.tokensPerSec);
      tokensPerSec = e.tokensPerSec;
      progress?.step(e);
    } else if (e.type === 'eval') {
      progress?.note(`eval at step ${e.step}: ${fmtMetrics(e.metrics)}`);
    } else if (e.type === 'selection') {
      progress?.note(`selected ${fmtInt(e.trainable)} of ${fmtInt(e.total)} parameters after ${e.batches} batch(es)`);
    }
  }
  progress?.end();
  void log;
  const tail = samples.slice(Math.floor(samples.length / 2));
  return tail.length ? tail.reduce((a, b) => a + b, 0) / tail.length : tokensPerSec;
}

export interface PretrainSpec {
  config: HFConfig;
  tokenizer: HfTokenizer;
  texts: Row[];
  outDir: string;
  device: string;
  steps: number;
  batchSize: number;
  blockSize: number;
  lr: number;
  seed: number;
  quiet?: boolean;
}

export interface PretrainResult {
  dir: string;
  seconds: number;
  finalLoss: number;
  firstLoss: number;
  tokensPerSec: number;
  parameters: number;
  run: RunData;
}

/** Full training of a freshly initialised causal LM; writes a model folder with the tokenizer. */
export async function pretrain(spec: PretrainSpec, log: Logger): Promise<PretrainResult> {
  const t0 = Date.now();
  const tok = spec.tokenizer;
  const config: HFConfig = {
    ...spec.config,
    bos_token_id: tok.bosTokenId,
    eos_token_id: tok.eosTokenId,
    pad_token_id: tok.padTokenId ?? tok.eosTokenId,
    vocab_size: Math.max(Number(spec.config.vocab_size ?? 0), tok.vocabSize),
  };
  const model: PreTrainedModel = createModel(config, { task: 'causal-lm', device: spec.device, seed: spec.seed });
  const opts: TrainerOptions = {
    task: 'causal-lm',
    method: 'full',
    steps: spec.steps,
    batchSize: spec.batchSize,
    lr: spec.lr,
    lrSchedule: 'cosine',
    warmupSteps: Math.max(1, Math.round(spec.steps * 0.05)),
    weightDecay: 0.01,
    maxGradNorm: 1,
    seed: spec.seed,
    device: spec.device,
    maxLength: spec.blockSize,
    packing: true,
    outDir: path.join(spec.outDir, 'pretrain-run'),
    logEvery: 1,
  };
  const rec = new RunRecorder();
  const trainer = new Trainer(model, tok, opts);
  let tps: number;
  try {
    tps = await drain(trainer, spec.texts, undefined, rec, spec.quiet ? null : new Progress(process.stderr, 'pretrain'), log);
  } finally {
    trainer.dispose();
  }
  const dir = path.join(spec.outDir, 'pretrained');
  fs.rmSync(dir, { recursive: true, force: true });
  saveModelFolder(dir, { config: model.config, stateDict: stateDict(model), tokenizerFiles: tok.toFiles() });
  const parameters = model.numParameters();
  model.dispose();
  const seconds = (Date.now() - t0) / 1000;
  const losses = rec.steps.map((s) => s.loss);
  const k = Math.max(1, Math.min(10, Math.floor(losses.length / 5)));
  const avg = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  const result = {
    dir,
    seconds,
    firstLoss: avg(losses.slice(0, k)),
    finalLoss: avg(losses.slice(-k)),
    tokensPerSec: tps,
    parameters,
    run: rec.run('pre-training (full)', flatConfig(opts), {}),
  };
  result.run.summary = {
    parameters,
    'optimizer steps': spec.steps,
    'first loss': result.firstLoss,
    'final loss': result.finalLoss,
    'tokens/s': Math.round(tps),
    'wall time': fmtDuration(seconds),
  };
  log(
    `pre-trained ${fmtInt(parameters)} parameters for ${spec.steps} steps in ${fmtDuration(seconds)}: loss ${result.firstLoss.toFixed(3)} -> ${result.finalLoss.toFixed(3)} (${Math.round(tps)} tokens/s); saved to ${dir}`,
  );
  return result;
}

export interface MethodSpec {
  method: MethodName;
  /** Label in tables (default: the method). */
  name?: string;
  options: Partial<TrainerOptions>;
}

export interface MethodResult {
  name: string;
  method: MethodName;
  trainable: number;
  total: number;
  peakMemoryBytes: number;
  tokensPerSec: number;
  seconds: number;
  /** Metrics on FinetuneSpec.eval (the split that picks learning rates when there is a test split). */
  metrics: Metrics;
  /** Metrics on FinetuneSpec.test, when given: the held-out numbers to report. */
  testMetrics?: Metrics;
  /** Peak learning rate of the run. */
  lr?: number;
  gradProportion?: Record<string, number>;
  meanGradProportion?: number;
  /** sift, random-sparse: the path the targets' weight gradients took (the SDDMM or the dense gradient). */
  sparseGradient?: SparseGradientPaths;
  outDir: string;
  run: RunData;
}

export interface FinetuneSpec {
  baseDir: string;
  task: 'classify';
  train: Row[];
  eval: Row[];
  /** A held-out split scored once after training (eval then only picks among runs). */
  test?: Row[];
  labels: string[];
  device: string;
  outDir: string;
  common: Partial<TrainerOptions>;
  quiet?: boolean;
  /** Also write the merged model as a full folder into OUT/<name>/ itself (the experiment's deliverable). */
  saveMerged?: boolean;
  /**
   * Verbalizer: one token id per label. The classification head starts as the language model's
   * output rows of these tokens (the LM head is tied to the token embeddings), so that the
   * classifier begins as the pre-trained model's own zero-shot prediction of the label word.
   */
  verbalizer?: number[];
}

/** Copies the embedding rows of `tokenIds` into the classification head (`score`, bias-free). */
export function initHeadFromTokens(model: PreTrainedModel, tokenIds: number[]): void {
  const params = new Map(model.namedParameters());
  const head = params.get('score.weight');
  const emb = params.get('transformer.wte.weight') ?? params.get('model.embed_tokens.weight');
  if (!head || !emb)
    throw new SiftError('E_UNSUPPORTED', 'verbalizer head: the model needs a bias-free score head and token embeddings (GPT-2 or LLaMA)');
  const [C, D] = head.shape;
  if (tokenIds.length !== C || emb.shape[1] !== D)
    throw new SiftError('E_SHAPE', `verbalizer head: ${tokenIds.length} tokens for ${C} labels (width ${emb.shape[1]} vs ${D})`);
  const e = emb.toArray() as Float32Array;
  const w = new Float32Array(C * D);
  tokenIds.forEach((id, c) => w.set(e.subarray(id * D, (id + 1) * D), c * D));
  const t = tensor(w, [C, D], { dtype: head.dtype === 'f64' ? 'f64' : 'f32', device: head.device });
  loadStateDictInto(model, new Map([['score.weight', t]]), { strict: false, disposeSource: true });
}

/** Fine-tunes a fresh copy of the base model with one method. */
export async function finetuneMethod(spec: FinetuneSpec, m: MethodSpec, log: Logger): Promise<MethodResult> {
  const name = m.name ?? m.method;
  const outDir = path.join(spec.outDir, name);
  fs.rmSync(outDir, { recursive: true, force: true });
  fs.mkdirSync(outDir, { recursive: true });
  const loaded = loadModelForTask(spec.baseDir, { task: spec.task, device: spec.device, labels: spec.labels, seed: spec.common.seed ?? 0 });
  if (spec.verbalizer) initHeadFromTokens(loaded.model, spec.verbalizer);
  const opts: TrainerOptions = {
    task: spec.task,
    device: spec.device,
    labels: loaded.labels,
    outDir,
    // Measured on the last step: the other steps keep the SDDMM.
    trackGradProportion: m.method === 'sift' || m.method === 'random-sparse' ? 'sampled' : false,
    ...spec.common,
    ...m.options,
    method: m.method,
  };
  const t0 = Date.now();
  const rec = new RunRecorder();
  const trainer = new Trainer(loaded.model, loaded.tokenizer, opts);
  try {
    const tps = await drain(trainer, spec.train, spec.eval, rec, spec.quiet ? null : new Progress(process.stderr, `finetune ${name}`), log);
    const metrics = rec.done?.metrics ?? (await trainer.evaluate(spec.eval));
    const testMetrics = spec.test ? await trainer.evaluate(spec.test) : undefined;
    const seconds = (Date.now() - t0) / 1000;
    trainer.save(outDir);
    if (spec.saveMerged) trainer.saveMerged(outDir);
    const res: MethodResult = {
      name,
      method: m.method,
      trainable: rec.done?.trainable ?? 0,
      total: rec.done?.total ?? loaded.model.numParameters(),
      peakMemoryBytes: rec.done?.peakMemoryBytes ?? 0,
      tokensPerSec: tps,
      seconds,
      metrics,
      testMetrics,
      lr: opts.lr,
      gradProportion: rec.gradProportion,
      meanGradProportion: meanOf(rec.gradProportion),
      sparseGradient: rec.done?.sparseGradient,
      outDir,
      run: rec.run(name, flatConfig(opts), {}),
    };
    res.run.summary = summaryRow(res);
    fs.writeFileSync(
      path.join(outDir, 'report.html'),
      renderReport({ title: `sift-ft: ${name}`, subtitle: `fine-tuned from ${spec.baseDir} on ${spec.device}`, runs: [res.run] }),
    );
    log(
      `${name}${opts.lr !== undefined ? ` (lr ${opts.lr})` : ''}: ${fmtMetrics(metrics)}${testMetrics ? `; test ${fmtMetrics(testMetrics)}` : ''} (${fmtDuration(seconds)})`,
    );
    return res;
  } finally {
    trainer.dispose();
    loaded.model.dispose();
  }
}

/** Metrics of the base model itself (with its verbalizer head, if any) on rows, before any training. */
export async function evaluateBase(spec: FinetuneSpec, rows: Row[]): Promise<Metrics> {
  const loaded = loadModelForTask(spec.baseDir, { task: spec.task, device: spec.device, labels: spec.labels, seed: spec.common.seed ?? 0 });
  const trainer = new Trainer(loaded.model, loaded.tokenizer, {
    task: spec.task,
    device: spec.device,
    labels: loaded.labels,
    ...spec.common,
    method: 'full',
  });
  try {
    if (spec.verbalizer) initHeadFromTokens(loaded.model, spec.verbalizer);
    return await trainer.evaluate(rows);
  } finally {
    trainer.dispose();
    loaded.model.dispose();
  }
}

export function summaryRow(r: MethodResult): Record<string, unknown> {
  return {
    'trainable parameters': r.trainable,
    'trainable share': r.total ? `${((100 * r.trainable) / r.total).toPrecision(3)}%` : '-',
    'peak memory': fmtBytes(r.peakMemoryBytes),
    'tokens/s': Math.round(r.tokensPerSec),
    'wall time': fmtDuration(r.seconds),
    ...Object.fromEntries(Object.entries(r.metrics).map(([k, v]) => [`eval ${k}`, v])),
    ...Object.fromEntries(Object.entries(r.testMetrics ?? {}).map(([k, v]) => [`test ${k}`, v])),
    'mean gradient proportion': r.meanGradProportion !== undefined ? `${(100 * r.meanGradProportion).toFixed(1)}%` : undefined,
    'weight gradient': r.sparseGradient ? fmtSparseGradient(r.sparseGradient) : undefined,
  };
}

/**
 * The comparison table printed by the demo and the experiment: the metric on the test split when
 * the runs have one (else on eval), and each run's learning rate with `opts.lr`.
 */
export function resultsTable(results: MethodResult[], metric: 'accuracy' = 'accuracy', opts: { lr?: boolean } = {}): string {
  const head = [
    'method',
    'trainable params',
    'share',
    'peak memory',
    'tokens/s',
    ...(opts.lr ? ['lr'] : []),
    metric,
    'grad proportion',
    'time',
  ];
  return table(
    head,
    results.map((r) => {
      const v = (r.testMetrics ?? r.metrics)[metric];
      return [
        r.name,
        fmtInt(r.trainable),
        r.total ? `${((100 * r.trainable) / r.total).toPrecision(3)}%` : '-',
        fmtBytes(r.peakMemoryBytes),
        fmtInt(r.tokensPerSec),
        ...(opts.lr ? [r.lr !== undefined ? r.lr.toExponential(0) : '-'] : []),
        typeof v === 'number' ? v.toFixed(4) : '-',
        r.meanGradProportion !== undefined ? `${(100 * r.meanGradProportion).toFixed(1)}%` : r.method === 'full' ? '100% (all)' : '-',
        fmtDuration(r.seconds),
      ];
    }),
  );
}

function flatConfig(o: TrainerOptions): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) {
    if (v === undefined || k === 'signal' || k === 'labels') continue;
    out[k] = v instanceof RegExp ? `re:${v.source}` : v;
  }
  return out;
}
