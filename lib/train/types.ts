/**
 * The training layer's shared types: rows read from data files, tasks that turn rows into batches
 * and metrics, the methods (sift, full, lora, random-sparse), and the Trainer's options and events.
 * Written first so that the trainer, the CLI and the demo agree on one API.
 */
import type { Tensor } from '../engine/tensor';
import type { ModelOutput } from '../models/common';
import type { ScheduleOptions } from '../sift/schedule';
import type { ModuleSelector } from '../sift/targets';
import type { QuantFormat } from '../autograd/quant';
import type { SelectionOptions, SparseGradientMode } from '../sift/sift';
import type { ReportTo } from '../io/tensorboard';
import type { ProcessGroup } from '../dist/group';

/** One record of a data file: JSONL objects, CSV/TSV rows by column name, or raw text. */
export type Row = Record<string, unknown>;

export type TaskName = 'classify' | 'regress' | 'causal-lm' | 'instruct' | 'chat';

export interface ColumnOptions {
  textColumn?: string;
  textPairColumn?: string;
  labelColumn?: string;
}

/**
 * Training data read as it is needed instead of held in an array (pre-training on a corpus larger
 * than memory): the Trainer asks for the micro-batch at each position in turn, starting at the
 * run's first position (0, or the checkpoint's on resume). A source is a pure function of the
 * position, like the in-memory sampler, so that a resumed run sees the same batches.
 */
export interface ExampleSource {
  /** The rows or examples of the micro-batch at `position` (batchSize of them). */
  batch(position: number, batchSize: number): Promise<(Row | Example)[]>;
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
  /** How targets' gradients reach their selected entries after selection (SiftOptions.sparseGradient). */
  sparseGradient?: SparseGradientMode;
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
  /** Warmup as a share of the total steps (ceil), used when warmupSteps is 0 or unset. */
  warmupRatio?: number;
  weightDecay?: number;
  /** 0 turns clipping off. */
  maxGradNorm?: number;
  seed?: number;
  shuffle?: boolean;
  evalEvery?: number;
  device?: string;
  /**
   * Data-parallel training: batchSize is per process, each rank trains on its slice of every
   * global batch (worldSize x batchSize examples), gradients (SIFT: the k selected values) are
   * summed over the ranks before each step, and only rank 0 writes outDir.
   */
  processGroup?: ProcessGroup;
  /**
   * Data parallel: the gradients are summed in buckets of about this many MiB (default 25, as
   * PyTorch DDP's bucket_cap_mb); SIFT's selected values of several targets share a bucket.
   */
  distBucketMb?: number;
  /** Data parallel: start each bucket's all-reduce during the backward, as soon as its gradients are complete (default true). */
  distOverlap?: boolean;
  /**
   * Store the frozen base quantized (int8 or NF4) when training starts: LoRA's base; with SIFT the
   * targets' weights too (their selected entries train as f32 values beside the codes). Not for
   * full fine-tuning. See docs/quantization.md.
   */
  quantize?: QuantFormat;
  /** bf16 weights and activations with f32 optimizer state (CUDA). */
  mixedPrecision?: 'bf16' | 'none';
  /** Recompute each block's activations in the backward. */
  activationCheckpointing?: boolean;
  /** Where log.jsonl, checkpoints, delta.safetensors and report.html go. */
  outDir?: string;
  checkpointEvery?: number;
  /** Keep at most this many checkpoint-<step> folders (the best one is kept besides). */
  saveTotalLimit?: number;
  /** Evaluation metric that picks the best result ('accuracy', 'loss', ...; 'eval_' prefix allowed). */
  metricForBest?: string;
  /** Default: false for loss and perplexity, true for the other metrics. */
  greaterIsBetter?: boolean;
  /** Stop after this many evaluations without improvement of metricForBest. */
  earlyStoppingPatience?: number;
  /** Resume from the newest checkpoint in outDir. */
  resume?: boolean;
  /** Aborting stops the run at the next step boundary with a checkpoint (done event: interrupted). */
  signal?: AbortSignal;
  /** Max sequence length for tokenization / block size for causal-lm packing. */
  maxLength?: number;
  /**
   * Measure SIFT's gradient proportion: per target, the share of the gradient's squared norm on
   * the selected entries, reported in the done event. It needs the dense weight gradient, so it
   * decides which path the targets' gradients take: true measures at every backward (the dense
   * gradient throughout, no SDDMM); 'sampled' measures only on the last optimizer step and every
   * gradProportionEvery-th step, and those steps take the dense gradient while every other step
   * keeps the SDDMM (sift.sparseGradient). The value is of the measured step's last micro-batch.
   */
  trackGradProportion?: boolean | 'sampled';
  /**
   * With trackGradProportion 'sampled': also measure every N optimizer steps. The step events of
   * measured steps (always emitted) carry meanGradProportion. Default 0: the last step only.
   */
  gradProportionEvery?: number;
  logEvery?: number;
  /**
   * Where the logged events also go (transformers' report_to): 'tensorboard' writes
   * outDir/events.out.tfevents.<time>.<host> as the run progresses; 'none' (the default) only log.jsonl.
   */
  reportTo?: ReportTo | ReportTo[];
  /** Column names of the data (classify/regress/instruct). */
  columns?: ColumnOptions;
  /** Class names by id (classify); default: config.label2id, else learned from the training data. */
  labels?: string[];
  /** causal-lm on raw text: pack tokens into blocks of maxLength (default true) or one example per document. */
  packing?: boolean;
  /** More variables for the chat template (chat, instruct), e.g. { enable_thinking: false }. */
  chatTemplateVars?: Record<string, unknown>;
  /** Where the task says something once (e.g. that the default chat template is used); default: a line on stderr. */
  onNotice?: (message: string) => void;
  /** Micro-batch size of evaluate() (default: batchSize). */
  evalBatchSize?: number;
  /**
   * Before training, measure the gradient's quasi-sparsity on the targeted linear layers (the
   * accumulated gradient of SIFT's selection batches, or of the first batch for other methods):
   * a 'quasi-sparsity' event with the share of the squared norm on the top 0.1%, 1%, 5% of entries.
   */
  quasiSparsity?: boolean;
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

/**
 * Which path SIFT's target weight gradients took in a run. `path`: 'sddmm' where some target's
 * gradient came from the SDDMM (computed at the selected entries only) on some step, else 'dense'.
 * `sddmmTargets` of `targets` are set up for it (the others take the dense gradient and a gather,
 * and so do all targets on the steps that measured the gradient proportion); `sddmmSteps` and
 * `denseSteps` count the run's optimizer steps by path.
 */
export interface SparseGradientPaths {
  path: 'sddmm' | 'dense';
  targets: number;
  sddmmTargets: number;
  sddmmSteps: number;
  denseSteps: number;
}

export type TrainerEvent =
  | { type: 'selection'; batches: number; trainable: number; total: number }
  | {
      type: 'quasi-sparsity';
      batches: number;
      fractions: number[];
      overall: number[];
      layers: { name: string; numel: number; shares: number[] }[];
    }
  | {
      type: 'step';
      step: number;
      totalSteps: number;
      loss: number;
      lr: number;
      gradNorm?: number;
      tokensPerSec: number;
      elapsedSec: number;
      etaSec: number;
      /** Steps that measured the gradient proportion (trackGradProportion 'sampled'): its mean over the targets. */
      meanGradProportion?: number;
    }
  | { type: 'eval'; step: number; metrics: Metrics }
  | { type: 'checkpoint'; step: number; path: string }
  | {
      type: 'done';
      step: number;
      metrics?: Metrics;
      peakMemoryBytes: number;
      trainable: number;
      total: number;
      gradProportion?: Record<string, number>;
      /** The optimizer step gradProportion was measured on (the last step, unless the run stopped early). */
      gradProportionStep?: number;
      /** SIFT: the path the targets' weight gradients took on this run's steps (none where it took no step). */
      sparseGradient?: SparseGradientPaths;
      /** Data parallel: the processes and the gradient bytes all-reduced per optimizer step, beside what full fine-tuning's all-reduce would move. */
      worldSize?: number;
      communication?: {
        bytesPerStep: number;
        bucketsPerStep: number;
        bucketsInBackward: number;
        overlap: boolean;
        fullFinetuneBytesPerStep: number;
        fraction: number;
      };
      /** The signal aborted the run (a checkpoint was written; resume to finish). */
      interrupted?: boolean;
      /** earlyStoppingPatience ran out. */
      stoppedEarly?: boolean;
      /** The best evaluation (metricForBest) and the folder its result was saved to. */
      best?: { step: number; metric: string; value: number; path?: string };
    };

/** What a task does with a model's output. */
export interface TaskHead {
  /** Loss (and logits) of a batch. */
  forward(batch: Batch, train: boolean): ModelOutput;
}
