/**
 * The training layer's shared types: rows read from data files, tasks that turn rows into batches
 * and metrics, the methods (sift, full, lora, random-sparse), and the Trainer's options and events.
 * Written first so that the trainer, the CLI and the demo agree on one API.
 */
import type { Tensor } from '../engine/tensor';
import type { ModelOutput } from '../models/common';
import type { ScheduleOptions } from '../sift/schedule';
import type { ModuleSelector } from '../sift/targets';
import type { SelectionOptions } from '../sift/sift';

/** One record of a data file: JSONL objects, CSV/TSV rows by column name, or raw text. */
export type Row = Record<string, unknown>;

export type TaskName = 'classify' | 'regress' | 'causal-lm' | 'instruct';

export interface ColumnOptions {
  textColumn?: string;
  textPairColumn?: string;
  labelColumn?: string;
}

/** A tokenized example ready for collation. */
export interface Example {
  inputIds: number[];
  attentionMask?: number[];
  tokenTypeIds?: number[];
  /** Token labels (-100 ignored) for language modelling. */
  labels?: number[];
  /** Class id (classify) or score(s) (regress). */
  label?: number | number[];
}

/** A padded batch on a device. */
export interface Batch {
  inputIds: Tensor;
  attentionMask: Tensor;
  tokenTypeIds?: Tensor;
  /** [B, T] token labels or [B] class ids / [B] or [B, n] scores. */
  labels?: Tensor;
  /** Non-padding tokens in the batch (for tokens/s). */
  numTokens: number;
  size: number;
  dispose(): void;
}

export type MetricName = 'loss' | 'accuracy' | 'f1' | 'mcc' | 'pearson' | 'spearman' | 'perplexity';
export type Metrics = Partial<Record<MetricName, number>> & { examples?: number };

export type MethodName = 'sift' | 'full' | 'lora' | 'random-sparse';

export interface SiftMethodOptions {
  sparseRate?: number;
  targetModules?: ModuleSelector;
  denseModules?: ModuleSelector;
  selection?: SelectionOptions;
}

export interface LoraMethodOptions {
  rank?: number;
  alpha?: number;
  dropout?: number;
  targetModules?: ModuleSelector;
  /** Modules trained in full next to the adapters (e.g. a classification head). */
  denseModules?: ModuleSelector;
}

export interface TrainerOptions {
  task: TaskName;
  method?: MethodName;
  sift?: SiftMethodOptions;
  lora?: LoraMethodOptions;
  /** Optimizer steps after the selection batches (or use epochs). */
  steps?: number;
  epochs?: number;
  batchSize?: number;
  gradAccum?: number;
  lr?: number;
  lrSchedule?: ScheduleOptions['type'];
  warmupSteps?: number;
  weightDecay?: number;
  /** 0 turns clipping off. */
  maxGradNorm?: number;
  seed?: number;
  shuffle?: boolean;
  evalEvery?: number;
  device?: string;
  /** bf16 weights and activations with f32 optimizer state (CUDA). */
  mixedPrecision?: 'bf16' | 'none';
  /** Recompute each block's activations in the backward. */
  activationCheckpointing?: boolean;
  /** Where log.jsonl, checkpoints, delta.safetensors and report.html go. */
  outDir?: string;
  checkpointEvery?: number;
  resume?: boolean;
  signal?: AbortSignal;
  /** Max sequence length for tokenization / block size for causal-lm packing. */
  maxLength?: number;
  /** Measure SIFT's gradient proportion (per target) at each logged step. */
  trackGradProportion?: boolean;
  logEvery?: number;
  /** Column names of the data (classify/regress/instruct). */
  columns?: ColumnOptions;
  /** Class names by id (classify); default: config.label2id, else learned from the training data. */
  labels?: string[];
  /** causal-lm on raw text: pack tokens into blocks of maxLength (default true) or one example per document. */
  packing?: boolean;
  /** Micro-batch size of evaluate() (default: batchSize). */
  evalBatchSize?: number;
  /** AdamW betas and eps (defaults 0.9, 0.999, 1e-8). */
  betas?: [number, number];
  eps?: number;
  /**
   * Threads of the CPU kernels while fit() runs: a count, or 'auto' (SIFT_FT_NUM_THREADS, else
   * the hardware's). The count in effect before is restored when fit() ends.
   */
  numThreads?: number | 'auto';
  /**
   * Leave a core to the JavaScript thread (a server's event loop): CPU kernels run on one thread
   * fewer than the default (at least one) while fit() runs. numThreads, when given, wins.
   */
  reserveMainThread?: boolean;
  /**
   * Wait for the device off the JavaScript thread (default true): the trainer keeps one
   * micro-batch queued ahead of the device and awaits the one before it, and waits before reading
   * (selection, checkpoints), so the event loop keeps running while the device computes. false:
   * JavaScript queues ahead until the CPU op queue is full and then blocks in each op (the former
   * behaviour). Results are identical either way.
   */
  asyncWaits?: boolean;
}

export type TrainerEvent =
  | { type: 'selection'; batches: number; trainable: number; total: number }
  | { type: 'step'; step: number; totalSteps: number; loss: number; lr: number; gradNorm?: number; tokensPerSec: number; elapsedSec: number; etaSec: number }
  | { type: 'eval'; step: number; metrics: Metrics }
  | { type: 'checkpoint'; step: number; path: string }
  | { type: 'done'; step: number; metrics?: Metrics; peakMemoryBytes: number; trainable: number; total: number; gradProportion?: Record<string, number> };

/** What a task does with a model's output. */
export interface TaskHead {
  /** Loss (and logits) of a batch. */
  forward(batch: Batch, train: boolean): ModelOutput;
}
