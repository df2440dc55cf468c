/**
 * Pieces shared by the model graphs: the forward inputs/outputs, the pretrained-model base class,
 * input conversion (JS arrays or tensors), activations by transformers' names, the KV cache, the
 * causal-LM and sequence-classification losses, and seeded initialisation helpers.
 */
import { Tensor } from '../engine/tensor';
import { SiftError, check } from '../engine/errors';
import { DType, isInt } from '../engine/dtype';
import { Module } from '../nn/module';
import { Linear } from '../nn/layers';
import type { QuantFormat } from '../autograd/quant';
import { tensor, full } from '../autograd/creation';
import { toDevice, cast, reshape, squeeze, concat } from '../autograd/shape';
import { slice } from '../autograd/shape';
import { compare, gelu, relu, silu, tanh, sigmoid, sub, mul, add, neg, exp, log, abs, maximum } from '../autograd/elementwise';
import { crossEntropy, embedding as embeddingGather } from '../autograd/nn';
import { noGrad } from '../autograd/tape';
import { drawSeed } from '../autograd/creation';
import { reduce } from '../autograd/reduce';

/** Token ids, masks or labels: a tensor, or JavaScript arrays ([B][T], or [T] for one sequence). */
export type IdsInput = Tensor | number[][] | number[] | Int32Array | BigInt64Array;

export interface LayerCache {
  /** Keys and values of the tokens seen so far: [B, Hkv, Tpast, D]. */
  k: Tensor;
  v: Tensor;
}

/** Per-layer keys and values of a decoder, for incremental decoding. */
export interface KVCache {
  layers: LayerCache[];
  /** Number of positions already in the cache. */
  length: number;
}

export function disposeCache(cache: KVCache | undefined | null): void {
  if (!cache) return;
  for (const l of cache.layers) {
    l.k.dispose();
    l.v.dispose();
  }
  cache.layers = [];
}

export interface ModelInputs {
  inputIds: IdsInput;
  /** 1 (or true) where a token is attended, 0 on padding: [B, T] (with a cache: [B, Tpast + T]). */
  attentionMask?: IdsInput | null;
  /** Segment ids for sentence pairs (BERT): [B, T]. */
  tokenTypeIds?: IdsInput | null;
  /** Explicit positions [B, T] (defaults follow transformers per architecture). */
  positionIds?: IdsInput | null;
  /**
   * Causal LM: token ids [B, T] (shifted inside, -100 ignored). Classification: class ids [B]
   * (or floats [B, num_labels] for multi-label); regression: floats [B] or [B, num_labels].
   */
  labels?: IdsInput | Float32Array | null;
  /** Keys/values of earlier positions (decoders); a new cache is returned in the output. */
  cache?: KVCache | null;
  /** Return a cache even when none was passed (decoders). */
  useCache?: boolean;
}

export interface ModelOutput {
  /** [B, T, V] for language models, [B, num_labels] for classifiers, [B, T, D] for base models. */
  logits: Tensor;
  /** Scalar f32 loss when labels were given. */
  loss?: Tensor;
  /** The updated cache (decoders, when a cache was passed or useCache was set). */
  cache?: KVCache;
  /** Final hidden states [B, T, D]. */
  hiddenStates?: Tensor;
  /** BERT/RoBERTa pooled output [B, D] when the model has a pooler. */
  pooledOutput?: Tensor;
}

export type ModelTask = 'causal-lm' | 'sequence-classification' | 'base';

/** A Hugging Face config.json object (fields by transformers' names). */
export type HFConfig = Record<string, unknown> & { model_type?: string; architectures?: string[] };

export interface ModelOptions {
  task?: ModelTask;
  device?: string;
  dtype?: 'f32' | 'f16' | 'bf16' | 'f64';
  /** Seed of the random initialisation (drawn from the engine's generator when absent). */
  seed?: number;
  /** Store the Linear layers' frozen weights quantized (PreTrainedModel.quantize). */
  quantize?: QuantFormat;
}

/**
 * Base of every architecture: a Module whose parameter paths are transformers' state-dict keys,
 * with the config it was built from.
 */
export abstract class PreTrainedModel extends Module {
  /** transformers' class name, e.g. 'GPT2LMHeadModel'. */
  abstract readonly architecture: string;
  abstract readonly task: ModelTask;
  /** transformers' base_model_prefix ('transformer', 'bert', 'roberta', 'model'). */
  abstract readonly baseModelPrefix: string;
  private readonly initDevice: string;
  private readonly initDType: DType;

  constructor(
    readonly config: HFConfig,
    opts: ModelOptions,
  ) {
    super();
    this.initDevice = opts.device === 'cuda' ? 'cuda:0' : (opts.device ?? 'cpu');
    this.initDType = opts.dtype ?? 'f32';
  }

  get modelType(): string {
    return String(this.config.model_type ?? '');
  }

  abstract forward(inputs: ModelInputs): ModelOutput;

  /** Parameters tied to another one: key -> the key it shares its tensor with (e.g. lm_head.weight). */
  tiedParameters(): Record<string, string> {
    return {};
  }

  /** Checkpoint entries that are buffers in transformers (not parameters), skipped when loading. */
  ignoredCheckpointKeys(): RegExp[] {
    return [];
  }

  /**
   * Activation checkpointing per transformer block (transformers' gradient_checkpointing): each
   * block's forward keeps only its input, and backward recomputes its activations. Applies to
   * forwards that record gradients and use no KV cache; generation is unaffected.
   */
  get gradientCheckpointing(): boolean {
    return this.blockStacks().some((l) => l.gradientCheckpointing);
  }

  set gradientCheckpointing(on: boolean) {
    const stacks = this.blockStacks();
    check(!on || stacks.length > 0, 'E_UNSUPPORTED', `${this.architecture} has no block stack to checkpoint`);
    for (const l of stacks) l.gradientCheckpointing = on;
  }

  enableGradientCheckpointing(): this {
    this.gradientCheckpointing = true;
    return this;
  }

  disableGradientCheckpointing(): this {
    this.gradientCheckpointing = false;
    return this;
  }

  private blockStacks(): { gradientCheckpointing: boolean }[] {
    // The block lists (ModuleList) found by their flag: models/layers imports this file.
    return this.namedModules()
      .map(([, m]) => m)
      .filter(
        (m): m is Module & { gradientCheckpointing: boolean } =>
          m !== this && typeof (m as { gradientCheckpointing?: unknown }).gradientCheckpointing === 'boolean',
      );
  }

  /**
   * Stores the frozen weights of the Linear layers quantized (int8 with per-row absmax, or NF4
   * with double-quantized block absmax) and frees the dense ones. Embeddings, norms and the LM
   * head stay dense, and so do Linear layers whose weight is tied to another parameter and those
   * `keep` names (trainable modules). Returns the quantized modules' paths.
   */
  quantize(format: QuantFormat, opts: { keep?: (path: string) => boolean } = {}): string[] {
    const counts = new Map<Tensor, number>();
    for (const [, m] of this.namedModules()) {
      for (const [, t] of m.ownParameters()) counts.set(t, (counts.get(t) ?? 0) + 1);
    }
    const done: string[] = [];
    for (const [path, m] of this.namedModules()) {
      if (!(m instanceof Linear) || m.quantized || opts.keep?.(path)) continue;
      if ((counts.get(m.weight) ?? 0) > 1) continue;
      m.quantize(format);
      done.push(path);
    }
    return done;
  }

  /** The quantization of the Linear layers (null when none is quantized). */
  get quantization(): QuantFormat | null {
    for (const [, m] of this.namedModules()) if (m instanceof Linear && m.quantized) return m.quantized.format;
    return null;
  }

  /** Where the parameters are now (to() moves them). */
  get device(): string {
    const p = this.namedParameters()[0];
    return p ? p[1].device : this.initDevice;
  }

  /** The parameters' dtype now (to() converts them). */
  get dtype(): DType {
    const p = this.namedParameters()[0];
    return p ? p[1].dtype : this.initDType;
  }
}

// ---- config access

export function cfgNum(cfg: HFConfig, key: string, dflt?: number): number {
  const v = cfg[key];
  if (v === undefined || v === null) {
    if (dflt === undefined) throw new SiftError('E_ARG', `config.json: missing '${key}'`);
    return dflt;
  }
  if (typeof v !== 'number' || !Number.isFinite(v))
    throw new SiftError('E_ARG', `config.json: '${key}' must be a number, got ${JSON.stringify(v)}`);
  return v;
}

export function cfgInt(cfg: HFConfig, key: string, dflt?: number): number {
  const v = cfgNum(cfg, key, dflt);
  if (!Number.isInteger(v) || v < 0) throw new SiftError('E_ARG', `config.json: '${key}' must be a non-negative integer, got ${v}`);
  return v;
}

export function cfgOptInt(cfg: HFConfig, key: string): number | null {
  const v = cfg[key];
  if (v === undefined || v === null) return null;
  return cfgInt(cfg, key);
}

export function cfgStr(cfg: HFConfig, key: string, dflt: string): string {
  const v = cfg[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'string') throw new SiftError('E_ARG', `config.json: '${key}' must be a string, got ${JSON.stringify(v)}`);
  return v;
}

export function cfgBool(cfg: HFConfig, key: string, dflt: boolean): boolean {
  const v = cfg[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'boolean') throw new SiftError('E_ARG', `config.json: '${key}' must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

/** Number of labels as transformers derives it (num_labels, else id2label's size, else 2). */
export function numLabels(cfg: HFConfig): number {
  if (typeof cfg.num_labels === 'number') return cfgInt(cfg, 'num_labels');
  if (cfg.id2label && typeof cfg.id2label === 'object') return Object.keys(cfg.id2label as object).length;
  return 2;
}

// ---- inputs

/** Host copy of a [B, T] integer input (a single sequence becomes one row). */
export function hostRows(x: IdsInput | Float32Array, what: string): number[][] {
  if (x instanceof Tensor) {
    check(x.ndim === 1 || x.ndim === 2, 'E_SHAPE', `${what}: expected [B, T] or [T], got [${x.shape}]`);
    const flat = Array.from(x.toArray() as ArrayLike<number | bigint>, (v) => Number(v));
    const [B, T] = x.ndim === 2 ? x.shape : [1, x.shape[0]];
    const rows: number[][] = [];
    for (let b = 0; b < B; b++) rows.push(flat.slice(b * T, (b + 1) * T));
    return rows;
  }
  if (ArrayBuffer.isView(x)) return [Array.from(x as ArrayLike<number | bigint>, (v) => Number(v))];
  const arr = x as number[] | number[][];
  if (arr.length > 0 && Array.isArray(arr[0])) {
    const rows = arr as number[][];
    const T = rows[0].length;
    check(
      rows.every((r) => Array.isArray(r) && r.length === T),
      'E_SHAPE',
      `${what}: rows of different lengths (pad them)`,
    );
    return rows.map((r) => r.map(Number));
  }
  return [(arr as number[]).map(Number)];
}

/** An integer id tensor [B, T] on `device` (JS arrays become i64; tensors are moved, not copied, when already there). */
export function idsTensor(x: IdsInput, device: string, what: string): Tensor {
  if (x instanceof Tensor) {
    check(isInt(x.dtype), 'E_DTYPE', `${what}: expected an i32 or i64 tensor, got ${x.dtype}`);
    const t = x.ndim === 1 ? reshape(x, [1, x.shape[0]]) : x;
    check(t.ndim === 2, 'E_SHAPE', `${what}: expected [B, T], got [${x.shape}]`);
    return toDevice(t, device);
  }
  const rows = hostRows(x, what);
  const B = rows.length;
  const T = B ? rows[0].length : 0;
  const flat = new BigInt64Array(B * T);
  rows.forEach((r, b) =>
    r.forEach((v, t) => {
      check(Number.isInteger(v), 'E_ARG', `${what}: ids must be integers, got ${v}`);
      flat[b * T + t] = BigInt(v);
    }),
  );
  return tensor(flat, [B, T], { dtype: 'i64', device });
}

/** A bool key-padding mask [B, Tk] (true = attend) from 0/1 ints, bools or a bool tensor. */
export function boolMask(x: IdsInput, device: string): Tensor {
  if (x instanceof Tensor) {
    const t = x.ndim === 1 ? reshape(x, [1, x.shape[0]]) : x;
    check(t.ndim === 2, 'E_SHAPE', `attentionMask: expected [B, T], got [${x.shape}]`);
    const m = t.dtype === 'bool' ? t : compare('ne', t, 0);
    return toDevice(m, device);
  }
  const rows = hostRows(x, 'attentionMask');
  const B = rows.length;
  const T = B ? rows[0].length : 0;
  const flat = new Uint8Array(B * T);
  rows.forEach((r, b) => r.forEach((v, t) => (flat[b * T + t] = v ? 1 : 0)));
  return tensor(flat, [B, T], { dtype: 'bool', device });
}

/** Default positions offset..offset+T-1 for every row, as transformers uses for GPT-2 and LLaMA. */
/**
 * Frees activations that no backward reads (Tensor.releaseData) once `result` has been computed
 * from them, skipping `result` itself (a dropout in eval mode returns its input): the input of a
 * dropout, the branch of a residual sum, embeddings before their sum. Returns `result`.
 */
export function releaseInto(result: Tensor, ...used: Tensor[]): Tensor {
  for (const t of used) if (t !== result) t.releaseData();
  return result;
}

export function rangePositions(B: number, T: number, offset: number, device: string): Tensor {
  const flat = new BigInt64Array(B * T);
  for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) flat[b * T + t] = BigInt(offset + t);
  return tensor(flat, [B, T], { dtype: 'i64', device });
}

// ---- activations

/** transformers' ACT2FN names. */
export function activation(name: string): (x: Tensor) => Tensor {
  switch (name) {
    case 'gelu':
      return (x) => gelu(x, 'none');
    case 'gelu_new':
    case 'gelu_pytorch_tanh':
    case 'gelu_fast':
      return (x) => gelu(x, 'tanh');
    case 'relu':
      return relu;
    case 'silu':
    case 'swish':
      return silu;
    case 'tanh':
      return tanh;
    case 'sigmoid':
      return sigmoid;
    default:
      throw new SiftError('E_UNSUPPORTED', `unsupported activation '${name}'`);
  }
}

// ---- losses

/** transformers' causal-LM loss: logits at t predict labels at t+1; mean over labels != -100. */
export function causalLmLoss(logits: Tensor, labels: IdsInput): Tensor {
  const [B, T, V] = logits.shape;
  let targets: Tensor;
  if (labels instanceof Tensor) {
    // Shift on the device: no host round trip per step.
    check(
      labels.ndim === 2 && labels.shape[0] === B && labels.shape[1] === T,
      'E_SHAPE',
      `labels: expected [${B}, ${T}], got [${labels.shape}]`,
    );
    const onDev = labels.device === logits.device ? labels : toDevice(labels, logits.device);
    const l64 = onDev.dtype === 'i64' ? onDev : cast(onDev, 'i64');
    const tail = full([B, 1], -100, { dtype: 'i64', device: logits.device });
    targets = reshape(concat([slice(l64, 1, 1), tail], 1), [B * T]);
  } else {
    const rows = hostRows(labels, 'labels');
    check(rows.length === B && rows[0].length === T, 'E_SHAPE', `labels: expected [${B}, ${T}], got [${rows.length}, ${rows[0]?.length}]`);
    const shifted = new BigInt64Array(B * T);
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < T; t++) shifted[b * T + t] = BigInt(t + 1 < T ? rows[b][t + 1] : -100);
    }
    targets = tensor(shifted, [B * T], { dtype: 'i64', device: logits.device });
  }
  // crossEntropy takes f16/bf16 logits directly (f32 statistics and loss): no f32 copy of [B*T, V].
  return crossEntropy(reshape(logits, [B * T, V]), targets, { ignoreIndex: -100 });
}

export type ProblemType = 'regression' | 'single_label_classification' | 'multi_label_classification';

/** transformers' sequence-classification loss, with problem_type inferred the same way when unset. */
export function classificationLoss(logits: Tensor, labels: IdsInput | Float32Array, nLabels: number, problemType: string | null): Tensor {
  const device = logits.device;
  const lf = logits.dtype === 'f32' || logits.dtype === 'f64' ? logits : cast(logits, 'f32');
  const B = logits.shape[0];
  let pt = problemType as ProblemType | null;
  const labelIsInt =
    labels instanceof Tensor
      ? isInt(labels.dtype)
      : !(labels instanceof Float32Array) &&
        hostRows(labels as IdsInput, 'labels')
          .flat()
          .every(Number.isInteger);
  if (!pt) {
    if (nLabels === 1) pt = 'regression';
    else if (labelIsInt) pt = 'single_label_classification';
    else pt = 'multi_label_classification';
  }
  if (pt === 'single_label_classification') {
    const t =
      labels instanceof Tensor
        ? toDevice(reshape(labels, [-1]), device)
        : idsTensor([hostRows(labels as IdsInput, 'labels').flat()], device, 'labels');
    const targets = t.ndim === 2 ? reshape(t, [-1]) : t;
    check(targets.shape[0] === B, 'E_SHAPE', `labels: expected ${B} class ids, got ${targets.shape[0]}`);
    return crossEntropy(lf, targets, { ignoreIndex: -100 });
  }
  const y = floatLabels(labels, lf.dtype, device);
  if (pt === 'regression') {
    // MSELoss on squeezed logits and labels (transformers squeezes both when num_labels == 1).
    const a = nLabels === 1 ? squeeze(lf) : lf;
    const b = nLabels === 1 ? squeeze(y) : reshape(y, lf.shape);
    check(a.size === b.size, 'E_SHAPE', `labels: ${b.size} values for logits of shape [${lf.shape}]`);
    const d = sub(a, b);
    return reduce('mean', mul(d, d));
  }
  if (pt === 'multi_label_classification') {
    // BCEWithLogits, the numerically stable form: max(x, 0) - x y + log(1 + exp(-|x|)).
    const yy = reshape(y, lf.shape);
    const term = add(sub(maximum(lf, 0), mul(lf, yy)), log(add(exp(neg(abs(lf))), 1)));
    return reduce('mean', term);
  }
  throw new SiftError('E_UNSUPPORTED', `unsupported problem_type '${pt}'`);
}

function floatLabels(labels: IdsInput | Float32Array, dtype: DType, device: string): Tensor {
  if (labels instanceof Tensor) return toDevice(labels.dtype === dtype ? labels : cast(labels, dtype), device);
  if (labels instanceof Float32Array) return tensor(labels, [labels.length], { dtype, device });
  const rows = hostRows(labels as IdsInput, 'labels');
  const flat = rows.flat();
  return tensor(Float32Array.from(flat), rows.length === 1 ? [flat.length] : [rows.length, rows[0].length], { dtype, device });
}

/** Row index of the last token per batch row that is not padding (transformers' sequence-classification pooling for decoders). */
export function lastTokenIndices(ids: number[][], padTokenId: number | null, mask: number[][] | null): number[] {
  return ids.map((row, b) => {
    let last = row.length - 1;
    if (padTokenId !== null) {
      last = -1;
      row.forEach((v, t) => {
        if (v !== padTokenId) last = t;
      });
      if (last < 0) last = row.length - 1;
    } else if (mask) {
      mask[b].forEach((v, t) => {
        if (v) last = t;
      });
    }
    return last;
  });
}

/**
 * The decoders' sequence-classification head (GPT2ForSequenceClassification and the LLaMA-family
 * ones): `score` on each row's last non-padding token, found by pad_token_id, else by the attention
 * mask, else the last position.
 */
export function lastTokenLogits(score: Linear, hidden: Tensor, inputs: ModelInputs, padTokenId: number | null): Tensor {
  const ids = hostRows(inputs.inputIds, 'inputIds');
  const mask = inputs.attentionMask ? hostRows(inputs.attentionMask, 'attentionMask') : null;
  return score.forward(gatherTokens(hidden, lastTokenIndices(ids, padTokenId, mask)));
}

/** A sequence classifier's output, with transformers' loss for config.problem_type when labels are given. */
export function classifierOutput(
  model: PreTrainedModel & { readonly numLabels: number },
  logits: Tensor,
  inputs: ModelInputs,
  rest: Omit<ModelOutput, 'logits' | 'loss'> = {},
): ModelOutput {
  const out: ModelOutput = { logits, ...rest };
  if (inputs.labels) out.loss = classificationLoss(logits, inputs.labels, model.numLabels, (model.config.problem_type as string) ?? null);
  return out;
}

/** Picks rows of h [B, T, D] at (b, idx[b]) -> [B, D], with a gradient (a gather through the embedding op). */
export function gatherTokens(h: Tensor, idx: number[]): Tensor {
  const [B, T, D] = h.shape;
  if (idx.every((i) => i === 0)) return reshape(slice(h, 1, 0, 1), [B, D]);
  const flat = new BigInt64Array(B);
  idx.forEach((i, b) => (flat[b] = BigInt(b * T + i)));
  const rows = tensor(flat, [B], { dtype: 'i64', device: h.device });
  return embeddingGather(reshape(h, [B * T, D]), rows);
}

// ---- initialisation

/** A stream of per-tensor seeds, so that every parameter gets its own key from one model seed. */
export class SeedStream {
  private n = 0;
  private readonly base: number;
  constructor(seed?: number) {
    this.base = seed ?? drawSeed();
  }
  next(): number {
    // Distinct, well-spread keys per tensor: the generator is counter-based, so nearby keys are fine.
    this.n++;
    return (this.base * 1000003 + this.n * 7919) % 0x1fffffffffffff;
  }
}

/** What a model's modules are built with: the device, the dtype, and each tensor's seed in turn. */
export interface ModelCtx {
  device: string;
  dtype: 'f32' | 'f16' | 'bf16' | 'f64';
  seeds: SeedStream;
}

export function modelCtx(opts: ModelOptions): ModelCtx {
  return {
    device: opts.device === 'cuda' ? 'cuda:0' : (opts.device ?? 'cpu'),
    dtype: opts.dtype ?? 'f32',
    seeds: new SeedStream(opts.seed),
  };
}

/** Options of a layer with weights (Linear, Embedding, LMHead) built in `c`: normal(0, std), the next seed. */
export function initOpts(c: ModelCtx, std: number): { device: string; dtype: ModelCtx['dtype']; std: number; seed: number } {
  return { device: c.device, dtype: c.dtype, std, seed: c.seeds.next() };
}

/** Zeroes row `row` of a [V, D] weight (an embedding's padding_idx), as transformers' init does. */
export function zeroRow(weight: Tensor, row: number | null): void {
  if (row === null || row < 0 || row >= weight.shape[0]) return;
  noGrad(() => {
    const v = slice(weight, 0, row, row + 1);
    v.fill_(0);
    v.dispose();
  });
}

/**
 * The key-padding mask for attention, or null when there is none (or, for JS arrays, when every
 * entry is 1: the kernels then skip the mask). Checks the shape [B, Tk].
 */
export function maskTensor(mask: IdsInput | null | undefined, device: string, B: number, Tk: number): Tensor | null {
  if (mask === null || mask === undefined) return null;
  if (!(mask instanceof Tensor)) {
    const rows = hostRows(mask, 'attentionMask');
    check(
      rows.length === B && (rows[0]?.length ?? 0) === Tk,
      'E_SHAPE',
      `attentionMask: expected [${B}, ${Tk}], got [${rows.length}, ${rows[0]?.length ?? 0}]`,
    );
    if (rows.every((r) => r.every((v) => v))) return null;
    return boolMask(rows, device);
  }
  const m = boolMask(mask, device);
  check(m.shape[0] === B && m.shape[1] === Tk, 'E_SHAPE', `attentionMask: expected [${B}, ${Tk}], got [${m.shape}]`);
  return m;
}
