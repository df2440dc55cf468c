/**
 * The memory planner behind `sift-ft plan`: the peak memory of a training run and its parts,
 * predicted before anything is allocated. Parameter shapes come from the model classes themselves,
 * built shape-only (every parameter a one-element buffer viewed at its real shape), and the SIFT
 * targets, k per target and LoRA adapters from the trainer's and SIFT's own code run on that tree.
 * Activations follow the tensors each op of the decoder block keeps for its backward
 * (lib/plan/activations.ts); docs/memory.md lists the formulas and the measured agreement.
 */
import { check } from '../engine/errors';
import { dtypeSize, DType } from '../engine/dtype';
import { shapeOnly } from '../autograd/creation';
import { createModel } from '../models/registry';
import type { HFConfig, PreTrainedModel } from '../models/common';
import { planTargets, moduleMatcher, ModuleSelector } from '../sift/targets';
import { kForRate } from '../sift/sift';
import { siftSelectors } from '../train/trainer';
import { applyLora } from '../train/lora';
import type { MethodName, TaskName, TrainerOptions } from '../train/types';
import { activationBytes, ActivationEstimate } from './activations';
import { quantizedBytes } from '../autograd/quant';

export type QuantizeMode = 'int8' | 'nf4';

export interface PlanOptions {
  task?: TaskName;
  method?: MethodName;
  sparseRate?: number;
  batchSize?: number;
  /** Tokens per example (the padded or packed length the run will use). */
  maxLength?: number;
  quantize?: QuantizeMode;
  activationCheckpointing?: boolean;
  /** bf16 weights and activations (default: bf16 on CUDA, none on CPU), as the trainer. */
  mixedPrecision?: 'bf16' | 'none';
  device?: 'cpu' | 'cuda';
  loraRank?: number;
  targetModules?: ModuleSelector;
  denseModules?: ModuleSelector;
}

export interface PlanParts {
  /** Parameters held in the run's dtype (all of them, or those left unquantized). */
  weights: number;
  /** Quantized frozen weights with their scales. */
  quantizedWeights: number;
  /** Trainable state that lives through the run: masters + moments + indices + SIFT's base copies and sparse gradients. */
  trainableState: number;
  masters: number;
  moments: number;
  indices: number;
  /** Dense gradients: all of them (full), the adapters' (LoRA), or the largest target's, gathered and freed in its hook (SIFT; a checkpointed block's targets together). */
  gradients: number;
  /** Tensors the forward keeps for the backward, at the peak. */
  activations: number;
  /** Transient buffers at the peak: output-layer gradients, a block's backward intermediates. */
  workspace: number;
}

export interface MemoryPlan {
  model: string;
  method: MethodName;
  device: 'cpu' | 'cuda';
  batchSize: number;
  maxLength: number;
  weightDType: DType;
  activationDType: DType;
  quantize: QuantizeMode | null;
  activationCheckpointing: boolean;
  parameters: number;
  trainable: number;
  peakBytes: number;
  parts: PlanParts;
  activationDetail: ActivationEstimate;
}

const LINEAR_KINDS = new Set(['Linear', 'Conv1D']);

/** The model's module tree with real parameter shapes, in a few bytes per parameter. */
export function shapeOnlyModel(config: HFConfig, task: TaskName): PreTrainedModel {
  const modelTask = task === 'classify' || task === 'regress' ? 'sequence-classification' : 'causal-lm';
  const cfg: HFConfig = { ...config };
  if (task === 'regress') cfg.num_labels = 1;
  const arch = Array.isArray(cfg.architectures) ? String(cfg.architectures[0]) : '';
  const sameHead = modelTask === 'causal-lm' ? /(CausalLM|LMHeadModel)$/.test(arch) : /SequenceClassification$/.test(arch);
  if (!sameHead) delete cfg.architectures;
  return shapeOnly(() => createModel(cfg, { task: modelTask, device: 'cpu' }));
}

/** Predicts the peak memory of a training run of `config` with these options. */
export function planMemory(config: HFConfig, opts: PlanOptions = {}): MemoryPlan {
  const method = opts.method ?? 'sift';
  check(
    ['sift', 'full', 'lora', 'random-sparse'].includes(method),
    'E_ARG',
    `method must be sift, full, lora or random-sparse, got '${method}'`,
  );
  const task = opts.task ?? 'causal-lm';
  const device = opts.device ?? 'cpu';
  check(device === 'cpu' || device === 'cuda', 'E_ARG', `device must be cpu or cuda, got '${device}'`);
  const precision = opts.mixedPrecision ?? (device === 'cuda' ? 'bf16' : 'none');
  check(precision === 'bf16' || precision === 'none', 'E_ARG', `mixedPrecision must be bf16 or none, got '${precision}'`);
  const rate = opts.sparseRate ?? 0.01;
  check(rate > 0 && rate <= 1, 'E_ARG', `sparse rate must be in (0, 1], got ${rate}`);
  const B = opts.batchSize ?? 8;
  check(Number.isInteger(B) && B >= 1, 'E_ARG', `batch size must be a positive integer, got ${B}`);
  const positions = Number(config.max_position_embeddings ?? config.n_positions ?? 512);
  const T = opts.maxLength ?? Math.min(positions, task === 'causal-lm' ? 1024 : 512);
  check(Number.isInteger(T) && T >= 1, 'E_ARG', `max length must be a positive integer, got ${T}`);
  check(
    opts.quantize === undefined || opts.quantize === 'int8' || opts.quantize === 'nf4',
    'E_ARG',
    `quantize must be int8 or nf4, got '${opts.quantize}'`,
  );

  const model = shapeOnlyModel(config, task);
  try {
    const wDType: DType = precision === 'bf16' ? 'bf16' : (model.dtype as DType);
    const wSize = dtypeSize(wDType);
    const params = model.namedParameters().filter(([, t]) => ['f32', 'f16', 'bf16', 'f64'].includes(t.dtype));
    const kinds = new Map(model.namedModules().map(([p, m]) => [p, m.kind]));
    const modulePath = (n: string) => (n.includes('.') ? n.slice(0, n.lastIndexOf('.')) : '');
    // Quantized: the weights of linear layers but the output and task heads (bitsandbytes' convention).
    const isQuantized = (name: string, shape: number[]) =>
      !!opts.quantize &&
      shape.length === 2 &&
      name.endsWith('.weight') &&
      LINEAR_KINDS.has(kinds.get(modulePath(name)) ?? '') &&
      !/(^|\.)(lm_head|score|classifier)(\.|$)/.test(name);
    const trainerOpts = {
      task,
      method,
      sift: { sparseRate: rate, targetModules: opts.targetModules, denseModules: opts.denseModules },
    } as TrainerOptions;
    // A run quantizes only the weights that do not train densely: SIFT's dense modules and every
    // weight of full fine-tuning stay in the run's dtype; SIFT's targets are quantized too (their
    // selected entries train as f32 values beside the codes: lib/sift/sift.ts).
    const trained = new Set<string>();
    if (opts.quantize && method === 'full') for (const [n] of params) trained.add(n);
    else if (opts.quantize && method !== 'lora') {
      const sel = siftSelectors(model, trainerOpts);
      const tp = planTargets(model, sel.targetModules, sel.denseModules);
      for (const [n] of tp.dense) trained.add(n);
    }
    let weights = 0;
    let quantizedWeights = 0;
    for (const [n, t] of params) {
      if (isQuantized(n, t.shape) && !trained.has(n)) quantizedWeights += quantizedBytes(opts.quantize!, t.shape[0], t.shape[1]);
      else weights += t.size * wSize;
    }
    const parameters = params.reduce((a, [, t]) => a + t.size, 0);

    let masters = 0;
    let moments = 0;
    let indices = 0;
    let otherState = 0;
    let gradients = 0;
    let trainable = 0;
    let largestTargetGrad = 0;
    const adapters: [number, number, number][] = [];
    if (method === 'sift' || method === 'random-sparse') {
      const sel = siftSelectors(model, trainerOpts);
      const plan = planTargets(model, sel.targetModules, sel.denseModules);
      for (const [n, p] of plan.sparse) {
        const k = kForRate(rate, p.size);
        trainable += k;
        // idx (i32, i64 from 2^31 entries), base f32, master f32, m and v f32, the sparse gradient (64-byte aligned).
        indices += k * (p.size >= 2 ** 31 ? 8 : 4);
        masters += 4 * k;
        moments += 8 * k;
        otherState += 4 * k + 4 * Math.ceil(k / 16) * 16;
        if (isQuantized(n, p.shape)) {
          // The entries' f32 values and their positions 0..k-1 (i32); the transient dense gradient
          // the k entries are gathered from is f32 (lib/sift/sift.ts addWeightGradAt).
          otherState += 8 * k;
          largestTargetGrad = Math.max(largestTargetGrad, 4 * p.size);
        } else largestTargetGrad = Math.max(largestTargetGrad, p.size * wSize);
      }
      for (const [, p] of plan.dense) {
        trainable += p.size;
        // A base copy (for unmerge) and a gradient in the weight's dtype; f32 moments; an f32 master for bf16.
        otherState += p.size * wSize;
        gradients += p.size * wSize;
        moments += 8 * p.size;
        if (wSize < 4) masters += 4 * p.size;
      }
      // A checkpointed block's backward hands the gradients of every weight it reads to the outer
      // backward at once (lib/autograd/checkpoint.ts): the block's targets' dense gradients coexist.
      if (opts.activationCheckpointing) {
        const perBlock = new Map<string, number>();
        for (const [name, p] of plan.sparse) {
          // (A quantized target's gradient is consumed inside its layer's backward.)
          if (isQuantized(name, p.shape)) continue;
          const m = /^(.*?\.\d+)\./.exec(name);
          const key = m ? m[1] : name;
          perBlock.set(key, (perBlock.get(key) ?? 0) + p.size * wSize);
        }
        largestTargetGrad = Math.max(largestTargetGrad, ...perBlock.values());
      }
      gradients += largestTargetGrad;
    } else {
      let trained: [string, { size: number }][];
      if (method === 'full') {
        trained = params;
      } else {
        const lora = shapeOnly(() => applyLora(model, { rank: opts.loraRank ?? 8, targetModules: opts.targetModules, seed: 0 }));
        trained = lora.namedParameters();
        for (const l of lora.layers) adapters.push([l.A.shape[1], l.B.shape[0], l.A.shape[0]]);
        // Modules trained in full beside the adapters: the option's, else the task head (as the trainer).
        const dense = opts.denseModules ?? siftSelectors(model, trainerOpts).denseModules;
        const isDense = moduleMatcher(dense, model, 'denseModules');
        if (isDense) trained = [...trained, ...params.filter(([n]) => isDense(modulePath(n)))];
      }
      for (const [, p] of trained) {
        trainable += p.size;
        gradients += p.size * wSize;
        moments += 8 * p.size;
        if (wSize < 4) masters += 4 * p.size;
      }
      if (method === 'lora') weights += trained.reduce((a, [, p]) => a + p.size, 0) * wSize;
    }
    const act = activationBytes(model, {
      batchSize: B,
      seqLength: T,
      actSize: wSize,
      checkpointing: !!opts.activationCheckpointing,
      task,
      adapters,
    });
    const trainableState = masters + moments + indices + otherState;
    const peakBytes = weights + quantizedWeights + trainableState + gradients + act.saved + act.workspace;
    return {
      model: String(config.model_type ?? 'unknown'),
      method,
      device,
      batchSize: B,
      maxLength: T,
      weightDType: wDType,
      activationDType: wDType,
      quantize: opts.quantize ?? null,
      activationCheckpointing: !!opts.activationCheckpointing,
      parameters,
      trainable,
      peakBytes,
      parts: {
        weights,
        quantizedWeights,
        trainableState,
        masters,
        moments,
        indices,
        gradients,
        activations: act.saved,
        workspace: act.workspace,
      },
      activationDetail: act,
    };
  } finally {
    model.dispose();
  }
}
