/**
 * The Trainer: fine-tunes a model on a task with SIFT (default), full fine-tuning, LoRA or
 * random-sparse SIFT, as an async iterator of events (selection, step, eval, checkpoint, done).
 *
 * Determinism: the micro-batch at position p (micro-batches since the start, selection batches
 * included) is a pure function of (seed, p), and the engine's generator (dropout) is reseeded
 * from (seed, p) before each micro-batch, so a run resumed from a checkpoint (trainable weights,
 * optimizer state, step, position) follows the same loss trajectory as an uninterrupted one.
 * SIFT's indices are not stored as state to trust: a resumed run replays the selection batches on
 * the base model it is given and checks that the indices equal the checkpoint's (E_MISMATCH if not).
 *
 * Event loop: the device waits happen off the JavaScript thread (asyncWaits, default): one
 * micro-batch stays queued ahead of the device while the trainer awaits the one before it, and
 * reads (losses, selection, checkpoints) await the device first, so a server keeps serving while
 * it trains (docs/server.md).
 */
import * as fs from 'fs';
import * as path from 'path';
import { Tensor } from '../engine/tensor';
import { SiftError, check } from '../engine/errors';
import { native } from '../engine/native';
import { keep, tidy } from '../engine/scope';
import {
  DeviceFence,
  executorStats,
  liveTensors,
  numThreads,
  resetPeakMemory,
  setNumThreads,
  synchronizeAsync,
  threadsLeavingMainThread,
} from '../engine/runtime';
import { manualSeed } from '../autograd/creation';
import { mul } from '../autograd/elementwise';
import { detach } from '../autograd/shape';
import { noGrad } from '../autograd/tape';
import type { PreTrainedModel } from '../models/common';
import { stateDict } from '../models/weights';
import type { TextTokenizer } from '../tokenizers/types';
import { Sift, checkTrackGradProportion, paramIndices } from '../sift/sift';
import { Linear } from '../nn/layers';
import { SparseAdamW } from '../sift/optimizer';
import { saveIncrement } from '../sift/increment';
import { moduleMatcher, ModuleSelector } from '../sift/targets';
import { ScheduleOptions, lrMultiplier } from '../sift/schedule';
import { saveSafetensors, loadSafetensors } from '../io/safetensors';
import { saveModelFolder } from '../io/hf';
import { writeFileAtomic } from '../io/atomic';
import type { Example, ExampleSource, Metrics, MethodName, Row, TaskName, TrainerEvent, TrainerOptions } from './types';
import { createTask, Task } from './tasks';
import { BatchSampler, deriveSeed } from './batching';
import { applyLora, LoraAdapters } from './lora';
import { peftTaskType } from '../io/peft';
import { TensorBoardLogger, wantsTensorboard } from '../io/tensorboard';
import { DenseAdamW } from './optim';
import type { ProcessGroup } from '../dist/group';
import { GradientBuckets, GradientSource } from '../dist/buckets';
import { measureQuasiSparsity } from '../sift/quasi';
import { planTargets } from '../sift/targets';

const CHECKPOINT_VERSION = 1;
const LINEAR_KINDS = new Set(['Linear', 'Conv1D']);

interface CheckpointMeta {
  version: number;
  method: MethodName;
  task: string;
  step: number;
  /** Position of the next micro-batch. */
  position: number;
  totalSteps: number;
  seed: number;
  batchSize: number;
  gradAccum: number;
  /** Processes of the run that wrote it (batchSize is the global batch: processes x per-process batch). */
  worldSize?: number;
  /** The engine generator is reseeded from (seed, position) before each micro-batch: nothing else to store. */
  rng: { scheme: 'per-microbatch'; seed: number };
  labels?: string[];
  /** Best-checkpoint and early-stopping state at this step. */
  best?: BestState;
  time: string;
}

/** The best evaluation so far (metricForBest) and evaluations since it improved. */
export interface BestState {
  metric: string;
  greaterIsBetter: boolean;
  value: number | null;
  step: number | null;
  /** Folder of the checkpoint written at that step (relative to outDir). */
  checkpoint: string | null;
  evalsWithoutImprovement: number;
}

/** OUT/trainer_state.json: the index of the run's checkpoints. */
export interface TrainerState {
  latest: string | null;
  checkpoints: string[];
  best: BestState | null;
}

/** The metrics each task's evaluation reports (checked before training when metricForBest is set). */
const TASK_METRICS: Record<TaskName, string[]> = {
  classify: ['loss', 'accuracy', 'f1', 'mcc'],
  regress: ['loss', 'pearson', 'spearman'],
  'causal-lm': ['loss', 'perplexity'],
  instruct: ['loss', 'perplexity'],
  chat: ['loss', 'perplexity'],
};

/** Metrics where lower is better; every other metric is better when greater. */
const LOWER_IS_BETTER = new Set(['loss', 'perplexity']);
/** The integer options that may be 0 (the others must be positive). */
const NON_NEGATIVE = new Set<string>(['warmupSteps', 'evalEvery', 'checkpointEvery', 'gradProportionEvery']);

/** 'eval_accuracy' (Hugging Face's spelling) -> 'accuracy'. */
export function metricName(m: string): string {
  return m.replace(/^eval[_-]/, '');
}

/** checkpoint-<step> folders of outDir, oldest first. */
/** The newest checkpoint folder of outDir (checkpoint-<step>, or the single 'checkpoint' of earlier versions), or null. */
export function latestCheckpoint(outDir: string): string | null {
  const all = listCheckpoints(outDir);
  if (all.length) return path.join(outDir, all[all.length - 1].name);
  const single = path.join(outDir, 'checkpoint');
  return fs.existsSync(path.join(single, 'trainer.json')) ? single : null;
}

export function listCheckpoints(outDir: string): { name: string; step: number }[] {
  let names: string[];
  try {
    names = fs.readdirSync(outDir);
  } catch {
    return [];
  }
  return names
    .map((n) => /^checkpoint-(\d+)$/.exec(n))
    .filter((m): m is RegExpExecArray => !!m && fs.existsSync(path.join(outDir, m[0], 'trainer.json')))
    .map((m) => ({ name: m[0], step: Number(m[1]) }))
    .sort((a, b) => a.step - b.step);
}

type Optimizer = SparseAdamW | DenseAdamW;

/** A step's values still on the device: its micro-batches' losses and the squared gradient norm. */
interface StepRead {
  step: number;
  losses: Tensor[];
  shardWeights: number[];
  W: number;
  normSq: Tensor | null;
  /** Marked after the step's work (asyncWaits); without one the values are read synchronously. */
  fence: DeviceFence | null;
}

function disposeStepRead(r: StepRead): void {
  for (const l of r.losses) l.dispose();
  r.normSq?.dispose();
  r.losses = [];
  r.normSq = null;
}

function sleepTick(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

/** Paths of the task head of a sequence classifier ('score' or 'classifier'), if the model has one. */
function headModules(model: PreTrainedModel): string[] {
  return model
    .children()
    .map(([n]) => n)
    .filter((n) => n === 'score' || n === 'classifier');
}

/**
 * SIFT's targets and dense modules for a run: the options' own, else every linear layer but the
 * output and task heads (those are trained densely).
 */
export function siftSelectors(
  model: PreTrainedModel,
  options: TrainerOptions,
): { targetModules: ModuleSelector; denseModules?: ModuleSelector } {
  const o = options.sift ?? {};
  const heads = options.task === 'classify' || options.task === 'regress' ? headModules(model) : [];
  const headRe = heads.length ? `(?:${heads.join('|')})(?:\\..*)?` : undefined;
  const underHead = (p: string) => heads.some((h) => p === h || p.startsWith(`${h}.`));
  let targetModules = o.targetModules;
  if (targetModules === undefined) {
    targetModules = model
      .namedModules()
      .filter(([p, m]) => p && LINEAR_KINDS.has(m.kind) && !p.endsWith('lm_head') && !underHead(p))
      .map(([p]) => p);
  }
  let denseModules = o.denseModules;
  if (denseModules === undefined && headRe) {
    const isTarget = moduleMatcher(targetModules, model, 'targetModules');
    const headPaths = model
      .namedModules()
      .map(([p]) => p)
      .filter(underHead);
    if (!isTarget || !headPaths.some((p) => isTarget(p))) denseModules = headRe;
  }
  return { targetModules, denseModules };
}

export class Trainer {
  readonly task: Task;
  readonly method: MethodName;
  readonly device: string;
  readonly precision: 'bf16' | 'none';
  private _sift?: Sift;
  private _lora?: LoraAdapters;
  private opt: Optimizer | null = null;
  private trained: [string, Tensor][] = [];
  private originalDType: string;
  private setupDone = false;
  private running = false;
  private disposed = false;
  private step = 0;
  private position = 0;
  private best: BestState | null = null;
  /** The work queued for the last micro-batch (asyncWaits): awaited once the next one is queued. */
  private inFlight: DeviceFence | null = null;
  private inFlightSeq = 0;

  constructor(
    readonly model: PreTrainedModel,
    readonly tokenizer: TextTokenizer | null,
    readonly options: TrainerOptions,
  ) {
    check(options && typeof options === 'object', 'E_ARG', 'Trainer: options are required ({ task, ... })');
    this.method = options.method ?? 'sift';
    check(
      ['sift', 'full', 'lora', 'random-sparse'].includes(this.method),
      'E_ARG',
      `method must be sift, full, lora or random-sparse, got '${this.method}'`,
    );
    // Recompute each block's activations in backward instead of keeping them (evaluation runs without gradients: unaffected).
    if (options.activationCheckpointing) model.gradientCheckpointing = true;
    for (const k of [
      'steps',
      'batchSize',
      'gradAccum',
      'evalEvery',
      'checkpointEvery',
      'logEvery',
      'gradProportionEvery',
      'warmupSteps',
      'evalBatchSize',
    ] as const) {
      const v = options[k];
      check(
        v === undefined || (Number.isInteger(v) && v >= (NON_NEGATIVE.has(k) ? 0 : 1)),
        'E_ARG',
        `${k} must be a ${NON_NEGATIVE.has(k) ? 'non-negative' : 'positive'} integer, got ${v}`,
      );
    }
    checkTrackGradProportion(options.trackGradProportion);
    check(
      options.epochs === undefined || (typeof options.epochs === 'number' && options.epochs > 0),
      'E_ARG',
      `epochs must be positive, got ${options.epochs}`,
    );
    check(
      options.warmupRatio === undefined || (options.warmupRatio >= 0 && options.warmupRatio <= 1),
      'E_ARG',
      `warmupRatio must be in [0, 1], got ${options.warmupRatio}`,
    );
    for (const k of ['saveTotalLimit', 'earlyStoppingPatience'] as const) {
      const v = options[k];
      check(v === undefined || (Number.isInteger(v) && v >= 1), 'E_ARG', `${k} must be a positive integer, got ${v}`);
    }
    check(
      options.earlyStoppingPatience === undefined || !!options.metricForBest,
      'E_ARG',
      'earlyStoppingPatience needs metricForBest (the metric whose evaluations it counts)',
    );
    check(!options.resume || !!options.outDir, 'E_ARG', 'resume needs outDir (where the checkpoint is)');
    check(
      options.numThreads === undefined ||
        options.numThreads === 'auto' ||
        (Number.isInteger(options.numThreads) && options.numThreads >= 1 && options.numThreads <= 256),
      'E_ARG',
      `numThreads must be 'auto' or an integer from 1 to 256, got ${String(options.numThreads)}`,
    );
    const dev = options.device ?? model.device;
    const group = options.processGroup;
    // Each process of a group drives its own GPU: the group's device (cuda:LOCAL_RANK).
    this.device = group && dev.startsWith('cuda') ? group.device : dev === 'cuda' ? 'cuda:0' : dev;
    if (model.device !== this.device) model.to(this.device);
    this.precision = options.mixedPrecision ?? (this.device.startsWith('cuda') ? 'bf16' : 'none');
    this.originalDType = model.dtype;
    this.task = createTask(options.task, {
      tokenizer,
      config: model.config,
      columns: options.columns,
      maxLength: options.maxLength,
      labels: options.labels,
      packing: options.packing,
      chatTemplateVars: options.chatTemplateVars,
      onNotice: options.onNotice,
    });
  }

  /** SIFT's state (sift and random-sparse methods, once fit() has set it up). */
  get sift(): Sift | undefined {
    return this._sift;
  }

  get lora(): LoraAdapters | undefined {
    return this._lora;
  }

  /** Optimizer steps taken. */
  get stepCount(): number {
    return this.step;
  }

  private get seed(): number {
    return this.options.seed ?? 42;
  }

  /** Examples per micro-batch of this process. */
  private get batchSize(): number {
    return this.options.batchSize ?? 8;
  }

  private get group(): ProcessGroup | undefined {
    return this.options.processGroup;
  }

  private get worldSize(): number {
    return this.group?.worldSize ?? 1;
  }

  /** Examples per micro-batch over all processes: the unit the sampler, checkpoints and the schedule count in. */
  private get globalBatchSize(): number {
    return this.batchSize * this.worldSize;
  }

  /** Whether this process writes outDir (rank 0, or a run without a group). */
  private get writer(): boolean {
    return !this.group || this.group.rank === 0;
  }

  /**
   * This rank's slice of a global micro-batch and its weight in the global mean loss. A rank whose
   * slice is empty (the short last batch of an epoch) runs the first example with weight 0, so that
   * its backward, and the collectives in it, match the other ranks'.
   */
  private shard(global: Example[]): { examples: Example[]; weight: number } {
    if (!this.group) return { examples: global, weight: global.reduce((a, e) => a + this.task.lossWeight(e), 0) };
    const B = this.batchSize;
    const mine = global.slice(this.group.rank * B, (this.group.rank + 1) * B);
    if (mine.length === 0) return { examples: global.slice(0, 1), weight: 0 };
    return { examples: mine, weight: mine.reduce((a, e) => a + this.task.lossWeight(e), 0) };
  }

  /**
   * The gradients summed over the ranks each step, in buckets in the order the backward completes
   * them (the reverse of the forward): SIFT's k selected values per target (runs of its flat
   * buffer) and the dense modules' gradients; every trained gradient for LoRA and full training.
   */
  private gradientBuckets(): GradientBuckets {
    const order = new Map(this.model.namedParameters().map(([, t], i) => [t, i]));
    const sources: GradientSource[] = this._sift
      ? [
          ...this._sift.sparseGradientSlots.map((s) => ({
            kind: 'slice' as const,
            param: s.target.param,
            buffer: s.buffer,
            offset: s.offset,
            span: s.span,
          })),
          ...this._sift.dense.map(([, param]) => ({ kind: 'grad' as const, param })),
        ]
      : this.trained.map(([, param]) => ({ kind: 'grad' as const, param }));
    // Reverse forward order; parameters outside the model's list (LoRA adapters) keep their listed order.
    const rank = (p: Tensor, i: number) => order.get(p) ?? i;
    const sorted = sources.map((s, i) => ({ s, key: rank(s.param, i) })).sort((a, b) => b.key - a.key);
    return new GradientBuckets(
      this.group!,
      sorted.map((x) => x.s),
      { bucketMb: this.options.distBucketMb, overlap: this.options.distOverlap },
    );
  }

  /** Bytes full fine-tuning's gradient all-reduce would move per step (f32 gradients of every float parameter). */
  private fullFinetuneBytes(): number {
    return this.model
      .namedParameters()
      .filter(([, t]) => ['f32', 'f16', 'bf16', 'f64'].includes(t.dtype))
      .reduce((a, [, t]) => a + 4 * t.size, 0);
  }

  private get gradAccum(): number {
    return this.options.gradAccum ?? 1;
  }

  // ---- setup

  private siftSelectors(): { targetModules: ModuleSelector; denseModules?: ModuleSelector } {
    return siftSelectors(this.model, this.options);
  }

  private setup(): void {
    if (this.setupDone) return;
    const o = this.options;
    // f32 copies of the weights before the cast to bf16, as masters of dense training.
    let masters: Map<string, Tensor> | undefined;
    if (this.precision === 'bf16' && this.model.dtype !== 'bf16') {
      if (this.method === 'full') {
        masters = new Map(
          this.model
            .namedParameters()
            .filter(([, t]) => t.dtype === 'f32')
            .map(([n, t]) => [n, keep(new Tensor(native().clone(t.handle)))]),
        );
      }
      this.model.to('bf16');
    }
    this.model.train();
    check(
      o.quantize === undefined || this.method !== 'full',
      'E_UNSUPPORTED',
      'the quantize option stores the frozen base quantized: full fine-tuning has none',
    );
    if (this.method === 'sift' || this.method === 'random-sparse') {
      const s = o.sift ?? {};
      const sel = { ...(s.selection ?? {}) };
      if (this.method === 'random-sparse') sel.score = 'random';
      this._sift = new Sift(this.model, {
        sparseRate: s.sparseRate ?? 0.01,
        ...this.siftSelectors(),
        selection: sel,
        seed: this.seed,
        trackGradProportion: o.trackGradProportion,
        sparseGradient: s.sparseGradient,
        quantize: o.quantize,
        ...(this.group ? { reduceSelectionGradient: (g: Tensor) => void this.group!.allReduce(g) } : {}),
      });
    } else if (this.method === 'full') {
      for (const [, t] of this.model.namedParameters()) if (['f32', 'f16', 'bf16', 'f64'].includes(t.dtype)) t.requiresGrad = true;
      this.trained = this.model.namedParameters().filter(([, t]) => t.requiresGrad);
      this.opt = new DenseAdamW(this.trained, this.adamOptions(), masters);
    } else {
      const l = o.lora ?? {};
      this._lora = applyLora(this.model, {
        rank: l.rank,
        alpha: l.alpha,
        dropout: l.dropout,
        targetModules: l.targetModules,
        seed: this.seed,
      });
      let dense = l.denseModules;
      if (dense === undefined && (o.task === 'classify' || o.task === 'regress')) {
        const heads = headModules(this.model);
        if (heads.length) dense = `(?:${heads.join('|')})(?:\\..*)?`;
      }
      const isDense = moduleMatcher(dense, this.model, 'lora.denseModules');
      const denseParams = isDense
        ? this.model.namedParameters().filter(([n]) => isDense(n.includes('.') ? n.slice(0, n.lastIndexOf('.')) : ''))
        : [];
      for (const [, t] of denseParams) t.requiresGrad = true;
      this.trained = [...this._lora.namedParameters(), ...denseParams];
      this.opt = new DenseAdamW(this.trained, this.adamOptions());
    }
    if (o.quantize !== undefined) {
      // The frozen base: the Linear layers that do not train (SIFT quantized its targets itself;
      // LoRA's adapters and dense modules stay as they are).
      const modules = new Map(this.model.namedModules());
      this.model.quantize(o.quantize, {
        keep: (p) => {
          const m = modules.get(p);
          return m instanceof Linear && !m.quantized && m.weight.requiresGrad;
        },
      });
    }
    if (masters) for (const t of masters.values()) t.dispose();
    this.setupDone = true;
  }

  private totalSteps(sampler: BatchSampler): number {
    if (this.options.steps !== undefined) return this.options.steps;
    const epochs = this.options.epochs ?? 1;
    return Math.max(1, Math.ceil((epochs * sampler.batchesPerEpoch) / this.gradAccum));
  }

  /** Warmup steps: warmupSteps when given (> 0), else ceil(warmupRatio x total steps), as transformers does. */
  private warmupFor(total: number): number {
    const o = this.options;
    if (o.warmupSteps) return o.warmupSteps;
    return o.warmupRatio ? Math.ceil(o.warmupRatio * total) : 0;
  }

  private scheduleFor(total: number): ScheduleOptions {
    const warmupSteps = this.warmupFor(total);
    // A run no longer than its warmup: linear and cosine decay need one step past it.
    return { type: this.options.lrSchedule ?? 'linear', warmupSteps, totalSteps: Math.max(total, warmupSteps + 1) };
  }

  private total = 0;

  private adamOptions() {
    const o = this.options;
    return {
      lr: o.lr ?? (this.method === 'lora' ? 2e-4 : 1e-4),
      betas: o.betas,
      eps: o.eps,
      weightDecay: o.weightDecay ?? 0,
      maxGradNorm: o.maxGradNorm ?? 1,
      schedule: this.scheduleFor(this.total),
    };
  }

  /** Trainable and total parameter counts of the method. */
  counts(): { trainable: number; total: number } {
    if (this._sift) {
      const s = this._sift.summary();
      return { trainable: s.trainable, total: s.total };
    }
    const total = this.model.numParameters() + (this._lora ? this._lora.numParameters() : 0);
    return { trainable: this.trained.reduce((a, [, t]) => a + t.size, 0), total };
  }

  // ---- one micro-batch

  /** Forward and backward of one micro-batch, the loss scaled by `weight`; returns the unscaled loss (detached). */
  private microBatch(examples: Example[], position: number, weight: number): { loss: Tensor; tokens: number } {
    manualSeed(deriveSeed(this.seed, position, 0xd0));
    let tokens = 0;
    const loss = tidy(() => {
      const batch = this.task.collate(examples, this.device);
      tokens = batch.numTokens;
      check(!!batch.labels, 'E_FORMAT', `task '${this.task.name}': training examples need labels`);
      const out = this.task.forward(this.model, batch);
      check(!!out.loss, 'E_ARG', 'the model returned no loss (is the model head right for the task?)');
      const l = out.loss!;
      (weight === 1 ? l : mul(l, weight)).backward();
      return detach(l);
    });
    return { loss, tokens };
  }

  // ---- waiting for the device

  private get asyncWaits(): boolean {
    return this.options.asyncWaits ?? true;
  }

  /**
   * Called after each micro-batch is queued: marks its work and awaits the one queued before, so
   * the device always has the next micro-batch while JavaScript is free between them. On the CPU,
   * when one micro-batch holds more than half the op queue (SIFT_FT_CPU_QUEUE), it awaits this
   * one instead (queueing the next would meet the queue's back-pressure, a wait on the JS thread).
   */
  private async pace(): Promise<void> {
    if (!this.asyncWaits) return;
    const prev = this.inFlight;
    const cur = new DeviceFence(this.device);
    this.inFlight = cur;
    let waitCurrent = false;
    if (this.device === 'cpu') {
      const st = executorStats();
      waitCurrent = 2 * (st.fence - this.inFlightSeq) > st.maxPending;
      this.inFlightSeq = st.fence;
    }
    if (prev) await prev.wait();
    if (waitCurrent) await cur.wait();
  }

  /** Waits (off the JavaScript thread) until the device ran everything queued (asyncWaits). */
  private async deviceIdle(): Promise<void> {
    if (!this.asyncWaits) return;
    const last = this.inFlight;
    this.inFlight = null;
    if (last) await last.wait(); // (recycles its CUDA event)
    await synchronizeAsync(this.device);
  }

  /** Applies numThreads / reserveMainThread; returns what restores the count in effect before. */
  private applyThreads(): () => void {
    const o = this.options;
    if (!this.device.startsWith('cpu') && o.numThreads === undefined) return () => {};
    const want = o.numThreads ?? (o.reserveMainThread ? threadsLeavingMainThread() : undefined);
    if (want === undefined) return () => {};
    const before = numThreads().threads;
    setNumThreads(want);
    return () => {
      setNumThreads(before);
    };
  }

  // ---- training

  /**
   * Trains; yields events. Checkpoints go to outDir/checkpoint-<step>, log lines to
   * outDir/log.jsonl, the best result (metricForBest) to outDir/best/. When `signal` aborts, the
   * run stops at the next step boundary, writes a checkpoint and ends with a done event marked
   * `interrupted`. A non-finite loss or gradient norm throws E_NUMERIC naming the step.
   */
  async *fit(train: (Row | Example)[] | ExampleSource, evalData?: (Row | Example)[]): AsyncGenerator<TrainerEvent> {
    check(!this.disposed, 'E_DISPOSED', 'this Trainer was disposed');
    check(!this.running, 'E_ARG', 'fit() is already running');
    const source = !Array.isArray(train) && train && typeof (train as ExampleSource).batch === 'function' ? (train as ExampleSource) : null;
    check(!!source || (Array.isArray(train) && train.length > 0), 'E_ARG', 'fit(): no training rows');
    check(!source || this.options.steps !== undefined, 'E_ARG', 'fit(): a streamed source needs steps (it has no epochs)');
    const o = this.options;
    // With a process group only rank 0 writes outDir (log, checkpoints, best); every rank reads a checkpoint to resume.
    const outDir = this.writer ? o.outDir : undefined;
    // Checked before anything in outDir is touched (a run that does not resume clears it).
    const tensorboard = wantsTensorboard(o.reportTo);
    check(!tensorboard || !!o.outDir, 'E_ARG', "reportTo 'tensorboard' needs outDir (the event file goes there)");
    this.running = true;
    const restoreThreads = this.applyThreads();
    const log = outDir ? path.join(outDir, 'log.jsonl') : null;
    let tb: TensorBoardLogger | null = null;
    const emit = (e: TrainerEvent): TrainerEvent => {
      if (log) fs.appendFileSync(log, JSON.stringify({ ...e, time: new Date().toISOString() }) + '\n');
      tb?.add(e);
      return e;
    };
    let buckets: GradientBuckets | null = null;
    // A step read one step late (see the loop), until it is read; and the step being run (freed
    // here if the run ends by an error before it is read).
    let unread: StepRead | null = null;
    let current: StepRead | null = null;
    // trackGradProportion 'sampled': the steps that measure take the dense gradient, the others the SDDMM.
    let sampled = false;
    // Between a step's first backward and its optimizer update (a run that ends there drops the step's gradient).
    let inStep = false;
    try {
      if (outDir) {
        try {
          fs.mkdirSync(outDir, { recursive: true });
        } catch (e) {
          throw new SiftError('E_IO', `cannot create outDir ${outDir}: ${(e as Error).message}`);
        }
      }
      if (log && !o.resume) fs.writeFileSync(log, '');
      // A run that does not resume starts over in outDir: checkpoints of an earlier run there would
      // otherwise be taken for its own by a later resume.
      if (outDir && !o.resume) {
        for (const c of listCheckpoints(outDir)) fs.rmSync(path.join(outDir, c.name), { recursive: true, force: true });
        for (const n of ['checkpoint', 'best', 'trainer_state.json']) fs.rmSync(path.join(outDir, n), { recursive: true, force: true });
      }
      if (tensorboard && outDir) tb = new TensorBoardLogger(outDir);
      let at: (pos: number) => Promise<Example[]>;
      if (source) {
        this.total = this.options.steps!;
        at = async (pos) => {
          const ex = this.task.prepare(await source.batch(pos, this.globalBatchSize));
          check(ex.length > 0, 'E_ARG', `fit(): the source's micro-batch at position ${pos} gave no examples`);
          return ex;
        };
      } else {
        const examples = this.task.prepare(train as (Row | Example)[]);
        check(examples.length > 0, 'E_ARG', 'fit(): the training rows gave no examples (text shorter than a block?)');
        const sampler = new BatchSampler(examples.length, {
          batchSize: this.globalBatchSize,
          shuffle: o.shuffle ?? true,
          seed: this.seed,
          lengths: examples.map((e) => e.inputIds.length),
        });
        this.total = this.totalSteps(sampler);
        at = async (pos) => sampler.batchAt(pos).map((i) => examples[i]);
      }
      const evalEx = evalData && evalData.length ? this.task.prepare(evalData) : null;
      if (o.metricForBest) {
        check(!!evalEx, 'E_ARG', 'metricForBest needs evaluation data (fit(train, evalData))');
        const known = TASK_METRICS[this.task.name];
        const m = metricName(o.metricForBest);
        check(known.includes(m), 'E_ARG', `metricForBest '${o.metricForBest}': task ${this.task.name} reports ${known.join(', ')}`);
      }
      const ckpt = o.resume ? this.readCheckpoint(o.outDir!) : null;
      if (ckpt) {
        check(
          ckpt.meta.method === this.method &&
            ckpt.meta.totalSteps === this.total &&
            ckpt.meta.batchSize === this.globalBatchSize &&
            ckpt.meta.gradAccum === this.gradAccum &&
            ckpt.meta.seed === this.seed,
          'E_MISMATCH',
          `the checkpoint in ${o.outDir} was written by another configuration (method ${ckpt.meta.method}, ${ckpt.meta.totalSteps} steps, batch ${ckpt.meta.batchSize} x ${ckpt.meta.gradAccum}, seed ${ckpt.meta.seed})` +
            (this.worldSize > 1 || (ckpt.meta.worldSize ?? 1) > 1
              ? `; the batch counts all processes (this run: ${this.worldSize} x ${this.batchSize})`
              : ''),
        );
      }
      const fresh = !this.setupDone;
      if (o.quasiSparsity && fresh && !ckpt) {
        // Before setup: SIFT's hooks would take the gradients over, LoRA would wrap the layers.
        const nSel = this.method === 'sift' ? (o.sift?.selection?.batches ?? 1) : 1;
        const targets =
          this.method === 'lora' && o.lora?.targetModules !== undefined ? o.lora.targetModules : this.siftSelectors().targetModules;
        const params = planTargets(this.model, targets, undefined).sparse;
        const wasTraining = this.model.training;
        this.model.train();
        const qs = await measureQuasiSparsity(params, async () => {
          for (let i = 0; i < nSel; i++) {
            const { loss } = this.microBatch(await at(i), i, 1 / nSel);
            await loss.data();
            loss.dispose();
          }
        });
        for (const [, p] of this.model.namedParameters()) p.zeroGrad();
        if (!wasTraining) this.model.eval();
        yield emit({
          type: 'quasi-sparsity',
          batches: nSel,
          fractions: qs.fractions,
          overall: qs.overall.shares,
          layers: qs.layers.map((l) => ({ name: l.name, numel: l.numel, shares: l.shares })),
        });
      }
      this.setup();
      if (fresh) this.position = 0;

      // SIFT's selection micro-batches: gradients scored, no update.
      if (this._sift && !this._sift.selected) {
        // The top-k chosen in the selection backward is checked at the next read, not waited for there.
        if (this.asyncWaits) this._sift.checkScoresInBackward = false;
        const nSel = this._sift.selectionBatches;
        for (let i = 0; i < nSel; i++) {
          const global = await at(this.position);
          const W = global.reduce((a, e) => a + this.task.lossWeight(e), 0) || 1;
          const sh = this.shard(global);
          const { loss } = this.microBatch(sh.examples, this.position, sh.weight / W / nSel);
          this.position++;
          await loss.data();
          loss.dispose();
        }
        if (this.asyncWaits) await this._sift.selectAsync();
        else this._sift.select();
      }
      if (this._sift && !this.opt) {
        this.opt = new SparseAdamW(this._sift, this.adamOptions());
      }
      if (this._sift) {
        const c = this.counts();
        yield emit({ type: 'selection', batches: this._sift.selectionBatches, trainable: c.trainable, total: c.total });
      }
      if (ckpt) {
        await this.deviceIdle();
        this.restore(ckpt.tensors, ckpt.meta);
        for (const t of ckpt.tensors.values()) t.dispose();
      }

      resetPeakMemory();
      if (this.device === 'cpu') this.inFlightSeq = executorStats().fence; // ops per micro-batch count from here
      const t0 = Date.now();
      const startStep = this.step;
      let tokens = 0;
      const logEvery = o.logEvery ?? 1;
      let lastEval = -1;
      let lastCheckpoint = ckpt ? this.step : -1;
      let finalMetrics: Metrics | undefined;
      let interrupted = false;
      let stoppedEarly = false;
      let commBytes = 0;
      let commBuckets = 0;
      let commInBackward = 0;
      sampled = !!this._sift && o.trackGradProportion === 'sampled';
      const proportionEvery = o.gradProportionEvery ?? 0;
      // The last step, every proportionEvery-th, and, where early stopping may end the run at an
      // evaluation, each evaluated step (so that a run stopped early reports its last step's share).
      const stopsAtEval = !!evalEx && !!o.evalEvery && !!o.earlyStoppingPatience;
      const measures = (step: number) =>
        sampled &&
        (step === this.total || (proportionEvery > 0 && step % proportionEvery === 0) || (stopsAtEval && step % o.evalEvery! === 0));
      let proportionStep: number | undefined;
      const paths = { sddmm: 0, dense: 0 };
      buckets = this.group ? this.gradientBuckets() : null;
      if (o.metricForBest && !this.best) {
        const metric = metricName(o.metricForBest);
        this.best = {
          metric,
          greaterIsBetter: o.greaterIsBetter ?? !LOWER_IS_BETTER.has(metric),
          value: null,
          step: null,
          checkpoint: null,
          evalsWithoutImprovement: 0,
        };
      }
      const checkpoint = async (): Promise<TrainerEvent> => {
        await this.deviceIdle();
        const p = this.writeCheckpoint(outDir!);
        lastCheckpoint = this.step;
        return emit({ type: 'checkpoint', step: this.step, path: p });
      };
      // With a group, an abort seen by any rank stops every rank after the same step (the flag is
      // summed with the step's loss), so that no rank waits in a collective the others never start.
      let groupAbort = false;
      while (this.step < this.total) {
        if (this.group ? groupAbort : o.signal?.aborted) {
          interrupted = true;
          break;
        }
        const positions = Array.from({ length: this.gradAccum }, (_, i) => this.position + i);
        const batches: Example[][] = [];
        for (const p of positions) batches.push(await at(p));
        // Weights make the accumulated gradient the mean over all label tokens (or examples) of the
        // step's global batch: each rank weighs its slice by its share of that total.
        const weights = batches.map((b) => b.reduce((a, e) => a + this.task.lossWeight(e), 0));
        const W = weights.reduce((a, b) => a + b, 0) || 1;
        const losses: Tensor[] = [];
        const shardWeights: number[] = [];
        const read: StepRead = { step: this.step + 1, losses, shardWeights, W, normSq: null, fence: null };
        current = read;
        // Set for all micro-batches of the step: its accumulated gradient comes from one path.
        const measureNow = measures(read.step);
        if (sampled) this._sift!.measureGradProportion = measureNow;
        const pathsBefore = this._sift?.gradientPaths();
        inStep = true;
        let stepTokens = 0;
        for (let i = 0; i < batches.length; i++) {
          const sh = this.shard(batches[i]);
          // The last backward of the step starts each gradient bucket's all-reduce once it is complete.
          if (buckets && i === batches.length - 1) buckets.arm();
          const r = this.microBatch(sh.examples, positions[i], sh.weight / W);
          losses.push(r.loss);
          shardWeights.push(sh.weight);
          if (sh.weight > 0 || !this.group) stepTokens += r.tokens;
          if (i < batches.length - 1) await this.pace();
        }
        if (buckets) {
          const st = buckets.finish();
          commBytes = st.bytes;
          commBuckets = st.buckets;
          commInBackward = st.startedInBackward;
        }
        if (pathsBefore) {
          if (this._sift!.gradientPaths().sddmm > pathsBefore.sddmm) paths.sddmm++;
          else paths.dense++;
        }
        if (measureNow) proportionStep = read.step;
        this.opt!.step();
        inStep = false;
        read.normSq = this.opt!.lastGradNormSq();
        await this.pace();
        read.fence = this.inFlight;
        this.step++;
        this.position += this.gradAccum;
        // Every step's loss and gradient norm are read: a non-finite one stops the run before
        // anything (checkpoint, best/, increment) is written from the weights that followed it. A
        // step that logs, evaluates or saves nothing is read one step late: pace() has just
        // awaited the work before this step's, so its values are there without a wait.
        if (unread) this.checkFinite(unread.step, await this.readStep(unread), outDir);
        unread = null;
        const logNow = this.step % logEvery === 0 || this.step === this.total || measureNow;
        const evalNow = !!evalEx && !!o.evalEvery && this.step % o.evalEvery === 0;
        const saveNow = !!outDir && !!o.checkpointEvery && this.step % o.checkpointEvery === 0;
        if (!logNow && !evalNow && !saveNow && !this.group && this.asyncWaits && !o.signal?.aborted) {
          unread = read;
          tokens += stepTokens;
          await sleepTick();
          continue;
        }
        let { loss, gradNorm } = await this.readStep(read);
        if (this.group) {
          let aborts: number;
          [loss, stepTokens, aborts] = await this.group.allReduceNumbers([loss, stepTokens, o.signal?.aborted ? 1 : 0]);
          groupAbort = aborts > 0;
        }
        this.checkFinite(read.step, { loss, gradNorm }, outDir);
        tokens += stepTokens;
        if (logNow) {
          const elapsed = (Date.now() - t0) / 1000;
          const done = this.step - startStep;
          let meanGradProportion: number | undefined;
          if (measureNow) {
            const props = [...(await this._sift!.gradProportions()).values()];
            if (props.length) meanGradProportion = props.reduce((a, b) => a + b, 0) / props.length;
          }
          yield emit({
            type: 'step',
            step: this.step,
            totalSteps: this.total,
            loss,
            lr: this.opt!.options.lr * lrMultiplier(this.step - 1, this.opt!.options.schedule),
            gradNorm,
            tokensPerSec: elapsed > 0 ? tokens / elapsed : 0,
            elapsedSec: elapsed,
            etaSec: done > 0 ? (elapsed / done) * (this.total - this.step) : 0,
            ...(meanGradProportion !== undefined ? { meanGradProportion } : {}),
          });
        } else {
          await sleepTick();
        }
        if (evalEx && o.evalEvery && this.step % o.evalEvery === 0) {
          finalMetrics = await this.evaluate(evalEx);
          lastEval = this.step;
          yield emit({ type: 'eval', step: this.step, metrics: finalMetrics });
          const b = this.updateBest(finalMetrics, outDir);
          if (b.improved && outDir && lastCheckpoint !== this.step) yield await checkpoint();
          if (b.stop) {
            stoppedEarly = true;
            break;
          }
        }
        if (outDir && o.checkpointEvery && this.step % o.checkpointEvery === 0 && this.step < this.total && lastCheckpoint !== this.step) {
          yield await checkpoint();
        }
      }
      // The next backward (another fit, or a caller's) starts on the SDDMM again.
      if (sampled) this._sift!.measureGradProportion = false;
      // A run stopped (signal) right after a step read late: that step is checked before anything is written.
      if (unread) this.checkFinite(unread.step, await this.readStep(unread), outDir);
      unread = null;
      if (evalEx && lastEval !== this.step && !interrupted) {
        finalMetrics = await this.evaluate(evalEx);
        yield emit({ type: 'eval', step: this.step, metrics: finalMetrics });
        this.updateBest(finalMetrics, outDir);
      }
      if (outDir && lastCheckpoint !== this.step) {
        // Always leave a checkpoint: an interrupted run resumes from it.
        yield await checkpoint();
      }
      await this.deviceIdle();
      const c = this.counts();
      let gradProportion: Record<string, number> | undefined;
      if (this._sift && o.trackGradProportion && !interrupted && (!sampled || proportionStep !== undefined))
        gradProportion = Object.fromEntries(await this._sift.gradProportions());
      const gp = this._sift?.gradientPaths();
      yield emit({
        type: 'done',
        step: this.step,
        metrics: finalMetrics,
        peakMemoryBytes: this.peakMemory(),
        trainable: c.trainable,
        total: c.total,
        gradProportion,
        ...(gradProportion && sampled ? { gradProportionStep: proportionStep } : {}),
        ...(gp && paths.sddmm + paths.dense > 0
          ? {
              sparseGradient: {
                path: paths.sddmm > 0 ? ('sddmm' as const) : ('dense' as const),
                targets: gp.targets,
                sddmmTargets: gp.sddmmTargets,
                sddmmSteps: paths.sddmm,
                denseSteps: paths.dense,
              },
            }
          : {}),
        ...(interrupted ? { interrupted: true } : {}),
        ...(stoppedEarly ? { stoppedEarly: true } : {}),
        ...(this.group
          ? {
              worldSize: this.worldSize,
              communication: {
                bytesPerStep: commBytes,
                bucketsPerStep: commBuckets,
                bucketsInBackward: commInBackward,
                overlap: buckets?.overlap ?? true,
                fullFinetuneBytesPerStep: this.fullFinetuneBytes(),
                fraction: commBytes / (this.fullFinetuneBytes() || 1),
              },
            }
          : {}),
        ...(this.best && this.best.step !== null
          ? {
              best: {
                step: this.best.step,
                metric: this.best.metric,
                value: this.best.value!,
                path: outDir ? path.join(outDir, 'best') : undefined,
              },
            }
          : {}),
      });
    } finally {
      if (this._sift && !this.disposed) {
        // A step an error ended halfway is run again from its first micro-batch: its partial gradient goes.
        if (inStep) this._sift.zeroGrad();
        // Also after an error or a caller that stopped reading the events: the SDDMM again.
        if (sampled) this._sift.measureGradProportion = false;
      }
      tb?.close();
      buckets?.dispose();
      // A run that ends by an error still waits for its last fence (which recycles its CUDA event);
      // the error that ended the run is the one reported.
      const last = this.inFlight;
      this.inFlight = null;
      if (last) await last.wait().catch(() => undefined);
      if (unread) disposeStepRead(unread);
      if (current) disposeStepRead(current);
      restoreThreads();
      this.running = false;
    }
  }

  /** Reads a step's loss and gradient norm (after its fence: without waiting for what was queued since) and frees them. */
  private async readStep(r: StepRead): Promise<{ loss: number; gradNorm: number }> {
    const fence = r.fence;
    // (A half-precision loss is widened on the device, so it waits for the queue: data().)
    const late = (t: Tensor) => fence && t.dtype !== 'f16' && t.dtype !== 'bf16';
    const value = async (t: Tensor) => Number((late(t) ? await t.dataAfter(fence!) : await t.data())[0]);
    let loss = 0;
    let gradNorm = 0;
    try {
      for (let i = 0; i < r.losses.length; i++) loss += ((await value(r.losses[i])) * r.shardWeights[i]) / r.W;
      if (r.normSq) gradNorm = Math.sqrt(await value(r.normSq));
    } finally {
      disposeStepRead(r);
    }
    return { loss, gradNorm };
  }

  /** E_NUMERIC naming the step when its loss or gradient norm is not finite. */
  private checkFinite(step: number, { loss, gradNorm }: { loss: number; gradNorm: number }, outDir: string | undefined): void {
    if (Number.isFinite(loss) && Number.isFinite(gradNorm)) return;
    const what = !Number.isFinite(loss) ? `loss ${loss}` : `gradient norm ${gradNorm}`;
    const kept = outDir ? latestCheckpoint(outDir) : null;
    throw new SiftError(
      'E_NUMERIC',
      `non-finite ${what} at step ${step} of ${this.total} (learning rate too high?); ` +
        `${kept ? `the last good checkpoint is ${kept}` : 'no checkpoint was written before it'}; nothing else is written`,
    );
  }

  private peakMemory(): number {
    if (this.device.startsWith('cuda')) {
      const idx = Number(this.device.split(':')[1] ?? 0);
      try {
        return native().cudaMemory(idx).peakAllocated;
      } catch {
        return liveTensors().cuda.peakBytes;
      }
    }
    return liveTensors().cpu.peakBytes;
  }

  // ---- evaluation

  /** Loss and the task's metrics over rows or examples (eval mode, no gradients, in order). */
  async evaluate(rows: (Row | Example)[]): Promise<Metrics> {
    check(!this.disposed, 'E_DISPOSED', 'this Trainer was disposed');
    const examples = this.task.prepare(rows);
    check(examples.length > 0, 'E_ARG', 'evaluate(): no examples');
    const bs = this.options.evalBatchSize ?? this.batchSize;
    const wasTraining = this.model.training;
    this.model.eval();
    // With a process group, rank r evaluates the chunks c with c % worldSize == r; the sums and
    // the predictions are then summed over the ranks (each chunk's predictions come from one rank).
    const world = this.worldSize;
    const rank = this.group?.rank ?? 0;
    const nChunks = Math.ceil(examples.length / bs);
    const chunkPreds: number[][] = Array.from({ length: nChunks }, () => []);
    let lossSum = 0;
    let weightSum = 0;
    try {
      for (let c = rank; c < nChunks; c += world) {
        const i = c * bs;
        const chunk = examples.slice(i, i + bs);
        const out = tidy(() =>
          noGrad(() => {
            const batch = this.task.collate(chunk, this.device);
            const r = this.task.forward(this.model, batch);
            return { logits: r.logits, loss: r.loss ? detach(r.loss) : null };
          }),
        );
        try {
          if (out.loss) {
            const l = Number((await out.loss.data())[0]);
            const w = chunk.reduce((a, e) => a + this.task.lossWeight(e), 0);
            lossSum += l * w;
            weightSum += w;
          } else {
            await out.logits.data();
          }
          chunkPreds[c] = this.task.predict({ logits: out.logits });
        } finally {
          out.logits.dispose();
          out.loss?.dispose();
        }
      }
    } finally {
      if (wasTraining) this.model.train();
    }
    let preds: number[];
    if (this.group) {
      const sums = await this.group.allReduceNumbers([lossSum, weightSum, ...chunkPreds.map((p) => p.length)]);
      [lossSum, weightSum] = sums;
      const counts = sums.slice(2);
      const offsets: number[] = [];
      let n = 0;
      for (const k of counts) {
        offsets.push(n);
        n += k;
      }
      const flat = new Array<number>(n).fill(0);
      chunkPreds.forEach((p, c) => p.forEach((v, j) => (flat[offsets[c] + j] = v)));
      preds = n > 0 ? await this.group.allReduceNumbers(flat) : [];
    } else {
      preds = chunkPreds.flat();
    }
    const targets = this.task.targets(examples);
    const loss = weightSum > 0 ? lossSum / weightSum : NaN;
    const m = this.task.metrics(preds, targets, loss);
    m.examples = examples.length;
    return m;
  }

  // ---- checkpoints

  private checkpointTensors(): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    if (this._sift) {
      for (const t of this._sift.targets) if (t.k > 0) out.push([`target.${t.name}.sift_idx`, t.idx!]);
      for (const [n, p] of this._sift.dense) out.push([`param.${n}`, p]);
    } else {
      for (const [n, p] of this.trained) out.push([`param.${n}`, p]);
    }
    for (const [n, t] of this.opt!.stateTensors()) out.push([`optim.${n}`, t]);
    return out;
  }

  /**
   * Records an evaluation for metricForBest: a better value becomes the best (its result saved to
   * outDir/best/ at once), another counts toward earlyStoppingPatience. `stop`: patience ran out.
   */
  private updateBest(metrics: Metrics, outDir: string | undefined): { improved: boolean; stop: boolean } {
    const b = this.best;
    if (!b) return { improved: false, stop: false };
    const v = (metrics as Record<string, number | undefined>)[b.metric];
    if (typeof v !== 'number') {
      const have = Object.keys(metrics).filter((k) => k !== 'examples');
      throw new SiftError('E_ARG', `metricForBest '${b.metric}': the evaluation has no such metric (it has ${have.join(', ')})`);
    }
    const improved = Number.isFinite(v) && (b.value === null || (b.greaterIsBetter ? v > b.value : v < b.value));
    if (improved) {
      b.value = v;
      b.step = this.step;
      b.checkpoint = outDir ? `checkpoint-${this.step}` : null;
      b.evalsWithoutImprovement = 0;
      if (outDir) this.save(path.join(outDir, 'best'));
    } else {
      b.evalsWithoutImprovement++;
    }
    const patience = this.options.earlyStoppingPatience;
    return { improved, stop: !!patience && b.evalsWithoutImprovement >= patience };
  }

  /** The best evaluation so far (with metricForBest). */
  get bestState(): BestState | null {
    return this.best ? { ...this.best } : null;
  }

  /**
   * Writes outDir/checkpoint-<step> atomically (a new folder renamed into place), updates
   * outDir/trainer_state.json and deletes the oldest checkpoints beyond saveTotalLimit (never the
   * best one); returns the checkpoint's path.
   */
  writeCheckpoint(outDir: string): string {
    check(this.setupDone && !!this.opt, 'E_ARG', 'nothing to checkpoint before training has started');
    const name = `checkpoint-${this.step}`;
    const dir = path.join(outDir, name);
    const tmp = path.join(outDir, `.checkpoint.tmp-${process.pid}-${Math.random().toString(36).slice(2, 8)}`);
    fs.mkdirSync(tmp, { recursive: true });
    const meta: CheckpointMeta = {
      version: CHECKPOINT_VERSION,
      method: this.method,
      task: this.task.name,
      step: this.step,
      position: this.position,
      totalSteps: this.total,
      seed: this.seed,
      batchSize: this.globalBatchSize,
      gradAccum: this.gradAccum,
      worldSize: this.worldSize,
      rng: { scheme: 'per-microbatch', seed: this.seed },
      labels: this.task.labels,
      ...(this.best ? { best: { ...this.best } } : {}),
      time: new Date().toISOString(),
    };
    saveSafetensors(path.join(tmp, 'state.safetensors'), this.checkpointTensors(), { format: 'sift-ft-checkpoint' });
    writeFileAtomic(path.join(tmp, 'trainer.json'), [JSON.stringify(meta, null, 2) + '\n']);
    const old = fs.existsSync(dir) ? `${tmp}.old` : null;
    if (old) fs.renameSync(dir, old);
    fs.renameSync(tmp, dir);
    if (old) fs.rmSync(old, { recursive: true, force: true });
    // Rotation: the newest saveTotalLimit checkpoints stay, and the best one besides them.
    let kept = listCheckpoints(outDir);
    const limit = this.options.saveTotalLimit;
    if (limit) {
      const protectedName = this.best?.checkpoint ?? null;
      const others = kept.filter((c) => c.name !== protectedName && c.name !== name);
      const excess = kept.length - limit;
      for (const c of others.slice(0, Math.max(0, excess))) fs.rmSync(path.join(outDir, c.name), { recursive: true, force: true });
      kept = listCheckpoints(outDir);
    }
    const state: TrainerState = { latest: name, checkpoints: kept.map((c) => c.name), best: this.best ? { ...this.best } : null };
    writeFileAtomic(path.join(outDir, 'trainer_state.json'), [JSON.stringify(state, null, 2) + '\n']);
    return dir;
  }

  private readCheckpoint(outDir: string): { meta: CheckpointMeta; tensors: Map<string, Tensor> } | null {
    const dir = latestCheckpoint(outDir);
    if (!dir) return null;
    const metaFile = path.join(dir, 'trainer.json');
    let meta: CheckpointMeta;
    try {
      meta = JSON.parse(fs.readFileSync(metaFile, 'utf8')) as CheckpointMeta;
    } catch (e) {
      throw new SiftError('E_FORMAT', `${metaFile}: ${(e as Error).message}`);
    }
    if (meta.version !== CHECKPOINT_VERSION)
      throw new SiftError('E_FORMAT', `${metaFile}: checkpoint version ${meta.version} is not supported`);
    const { tensors } = loadSafetensors(path.join(dir, 'state.safetensors'), { device: this.device });
    return { meta, tensors };
  }

  private restore(tensors: Map<string, Tensor>, meta: CheckpointMeta): void {
    const N = native();
    const get = (k: string): Tensor => {
      const t = tensors.get(k);
      if (!t) throw new SiftError('E_FORMAT', `checkpoint has no '${k}'`);
      return t;
    };
    const optState = new Map<string, Tensor>();
    for (const [k, t] of tensors) if (k.startsWith('optim.')) optState.set(k.slice(6), t);
    this.opt!.loadState(optState, meta.step);
    noGrad(() => {
      if (this._sift) {
        for (const t of this._sift.targets) {
          if (t.k === 0) continue;
          const saved = get(`target.${t.name}.sift_idx`);
          const a = t.idx!.toArray();
          const b = saved.toArray();
          const same = a.length === b.length && a.every((v, i) => v === b[i]);
          if (!same)
            throw new SiftError(
              'E_MISMATCH',
              `resume: SIFT indices of '${t.name}' differ from the checkpoint's (resume from the same base model, data and seed)`,
            );
          // The f32 masters hold the trained values; the weights are their cast, as the optimizer writes them.
          N.scatterInto(t.param.handle, paramIndices(t)!.handle, get(`optim.${t.name}.master`).handle, 'set');
        }
        for (const [n, p] of this._sift.dense) N.copy_(p.handle, get(`param.${n}`).handle);
      } else {
        for (const [n, p] of this.trained) N.copy_(p.handle, get(`param.${n}`).handle);
      }
    });
    this.step = meta.step;
    this.position = meta.position;
    if (meta.best && this.options.metricForBest && metricName(this.options.metricForBest) === meta.best.metric)
      this.best = { ...meta.best };
    if (meta.labels && !this.task.labels) this.task.labels = meta.labels;
  }

  // ---- saving results

  /** The config to save: the model's, with the label names when the task learned them. */
  private configToSave(): Record<string, unknown> {
    const cfg: Record<string, unknown> = { ...this.model.config };
    const labels = this.task.labels;
    if (this.task.name === 'classify' && labels && labels.length) {
      cfg.id2label = Object.fromEntries(labels.map((l, i) => [String(i), l]));
      cfg.label2id = Object.fromEntries(labels.map((l, i) => [l, i]));
      cfg.num_labels = labels.length;
    }
    return cfg;
  }

  /**
   * What rebuilds the model a result applies to: the task, the architecture (with its head) and
   * the head's config (labels, problem type), stored with every increment and adapter.
   */
  headInfo(): Record<string, unknown> {
    const cfg = this.configToSave();
    const pick = (k: string) => (cfg[k] === undefined ? {} : { [k]: cfg[k] });
    const classifier = this.task.name === 'classify' || this.task.name === 'regress';
    return {
      task: this.task.name,
      architecture: this.model.architecture,
      model_type: cfg.model_type,
      // The seed the run was given: tools that rebuild a fresh head initialise it with this seed.
      seed: this.seed,
      ...(classifier
        ? {
            ...pick('num_labels'),
            ...pick('id2label'),
            ...pick('label2id'),
            ...pick('problem_type'),
            head_modules: headModules(this.model),
          }
        : {}),
    };
  }

  private tokenizerFiles(): Record<string, string> | undefined {
    const t = this.tokenizer as unknown as { toFiles?: () => Record<string, string> } | null;
    return t && typeof t.toFiles === 'function' ? t.toFiles() : undefined;
  }

  /**
   * The trained result in outDir: delta.safetensors (sift, random-sparse), adapter_model.safetensors
   * and adapter_config.json (lora, with the dense head under its own keys), or a model folder (full:
   * config.json, model.safetensors, tokenizer).
   */
  save(outDir: string): void {
    check(this.setupDone, 'E_ARG', 'save(): nothing trained yet (call fit() first)');
    fs.mkdirSync(outDir, { recursive: true });
    const head = this.headInfo();
    const meta = {
      task: this.task.name,
      ...(this.task.labels ? { labels: JSON.stringify(this.task.labels) } : {}),
      sift_head: JSON.stringify(head),
    };
    if (this._sift) {
      saveIncrement(this._sift, path.join(outDir, 'delta.safetensors'), { extraMetadata: meta });
    } else if (this._lora) {
      const file = path.join(outDir, 'adapter_model.safetensors');
      const dense = this.trained.filter(([n]) => !n.includes('.lora_'));
      // PEFT's modules_to_save: the fully trained modules (the task head), by module path; PEFT
      // writes their weights as base_model.model.<module>.<param> (its own wrapper names stripped),
      // as below, and wraps them again on loading because the config lists them.
      const heads = headModules(this.model);
      const modulesToSave = [
        ...new Set(
          dense.map(([n]) => {
            const head = heads.find((h) => n === h || n.startsWith(`${h}.`));
            return head ?? n.slice(0, Math.max(0, n.lastIndexOf('.')));
          }),
        ),
      ].filter((x) => x.length > 0);
      this._lora.saveAdapter(file, {
        extraConfig: {
          task_type: peftTaskType(this.task.name),
          sift_ft_task: this.task.name,
          sift_ft_head: head,
          ...(modulesToSave.length ? { modules_to_save: modulesToSave } : {}),
        },
      });
      if (dense.length) {
        // PEFT keeps fully trained modules (modules_to_save) in the adapter file too.
        const entries: [string, Tensor][] = [
          ...this._lora.namedParameters().map(([n, t]) => [`base_model.model.${n}`, t] as [string, Tensor]),
          ...dense.map(([n, t]) => [`base_model.model.${n}`, t] as [string, Tensor]),
        ];
        saveSafetensors(file, entries, { format: 'pt' });
      }
    } else {
      saveModelFolder(outDir, { config: this.configToSave(), stateDict: stateDict(this.model), tokenizerFiles: this.tokenizerFiles() });
    }
  }

  /** A Hugging Face folder with the merged weights, the config (with labels) and the tokenizer. */
  saveMerged(dir: string): void {
    check(this.setupDone, 'E_ARG', 'saveMerged(): nothing trained yet (call fit() first)');
    const merged = this._lora ? this._lora.mergedStateDict(stateDict(this.model)) : { stateDict: stateDict(this.model), dispose() {} };
    try {
      saveModelFolder(dir, {
        config: this.configToSave(),
        stateDict: merged.stateDict,
        tokenizerFiles: this.tokenizerFiles(),
        dtype: this.originalDType !== this.model.dtype ? (this.originalDType as 'f32') : undefined,
      });
    } finally {
      merged.dispose();
    }
  }

  /** Frees the optimizer, SIFT's buffers and the LoRA adapters (the model itself stays). */
  dispose(): void {
    if (this.disposed) return;
    this.opt?.dispose();
    this._sift?.dispose();
    this._lora?.dispose();
    this.disposed = true;
  }
}
