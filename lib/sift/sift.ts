/**
 * SIFT: Sparse Increment Fine-Tuning. Chooses, per target weight, the k entries with the largest
 * gradient scores over the first selection micro-batches, then trains only those with a sparse
 * AdamW. Dense gradients never pile up: each target's gradient is gathered to its k entries (or
 * scored, while selecting) in the autograd hook as soon as it is complete, and freed there.
 */
import { Tensor } from '../engine/tensor';
import { SiftError, check } from '../engine/errors';
import { native } from '../engine/native';
import { keep } from '../engine/scope';
import { synchronizeAsync } from '../engine/runtime';
import { noGrad } from '../autograd/tape';
import { SparseWeightGradient, setSparseWeightGradient } from '../autograd/matmul';
import { QuantFormat, TrainedEntries, parseQuantFormat } from '../autograd/quant';
import { Linear } from '../nn/layers';
import { NamedModel, ModuleSelector, modulePath, planTargets } from './targets';
import { TensorFingerprint, fingerprint, fingerprintSteps } from './fingerprint';

/**
 * What select's steps ask of their driver: wait until a device ran its queued work (a device
 * name), or just a chance to let other work run (undefined).
 */
type SelectWait = string | void;

export type SelectionScore = 'abs' | 'fisher' | 'random' | 'magnitude';

export type SparseGradientMode = 'auto' | 'sddmm' | 'dense';

export interface SelectionOptions {
  /** Micro-batches whose gradients are accumulated before choosing (default 1, as the reference). */
  batches?: number;
  /** |accumulated gradient| (default), sum of squared gradients, random (ablation) or |weight|. */
  score?: SelectionScore;
  /** k per tensor (default) or one budget over all targets. */
  scope?: 'tensor' | 'global';
}

export interface SiftOptions {
  /** Fraction of each target tensor's entries to train (e.g. 0.01). */
  sparseRate: number;
  targetModules?: ModuleSelector;
  denseModules?: ModuleSelector;
  selection?: SelectionOptions;
  /** Seed of the random selection. */
  seed?: number;
  /**
   * Measure each target's gradient proportion on the selected entries (the share of the gradient's
   * squared norm on them; it needs the dense gradient): true at every backward, 'sampled' only at
   * the backwards run while `measureGradProportion` is set (the others keep the SDDMM).
   */
  trackGradProportion?: boolean | 'sampled';
  /**
   * How a 2-D target's gradient reaches its k entries once they are chosen, where the target is
   * the weight of a linear layer: 'sddmm' computes only those entries from the layer's input and
   * output gradient (no dense weight gradient); 'dense' computes the dense gradient and gathers;
   * 'auto' (default) is 'sddmm' for targets on the CPU and 'dense' on CUDA. Selection always uses
   * the dense gradient, and so do the backwards that measure the gradient proportion (every one
   * with trackGradProportion true; with 'sampled', those run while measureGradProportion is set).
   */
  sparseGradient?: SparseGradientMode;
  /**
   * Data parallel: sums a selection gradient over the ranks (in place, f32 contiguous), so that
   * every rank scores the gradient of the whole global batch and chooses the same indices.
   */
  reduceSelectionGradient?: (g: Tensor) => void;
  /**
   * Stores the targets' weights quantized (int8 or NF4) and trains the selected entries as f32
   * values beside the codes (the increment is unchanged: trained minus base, applied to the
   * original weights). Targets that are not a Linear layer's weight (biases, GPT-2's Conv1D, the
   * LM head, tied weights) stay dense. Needs one budget per tensor (scope 'tensor').
   */
  quantize?: QuantFormat;
}

/** A quantized SIFT target's layer and the positions [0, k) its values are written at. */
export interface QuantizedTarget {
  readonly layer: Linear;
  /** 0..k-1 (i32): the optimizer writes the masters into `param` (the values) through these. */
  local: Tensor | null;
}

export interface SparseTarget {
  readonly name: string;
  /**
   * The trained tensor: the weight, or for a quantized target its selected entries' values (f32
   * [k], the weight itself being codes in `quant.layer`).
   */
  readonly param: Tensor;
  /** The weight's shape. */
  readonly shape: number[];
  readonly numel: number;
  /** Set when the weight is stored quantized. */
  readonly quant: QuantizedTarget | null;
  /** Entries trained (0 is possible under a global budget). */
  k: number;
  /** Sorted flat indices (i32, or i64 for tensors of 2^31 entries or more). */
  idx: Tensor | null;
  /** Sparse gradient, f32 [k], summed over micro-batches until the optimizer step. */
  grad: Tensor | null;
  /** Weight values at idx before training, f32 [k]. */
  base: Tensor | null;
  baseFingerprint: TensorFingerprint | null;
  /** Selection score buffer, f32 [numel] (only while selecting over several batches or globally). */
  score: Tensor | null;
  /** The SDDMM tile plan of idx, when the target's gradient comes from the SDDMM. */
  plan: Tensor | null;
  backwardCount: number;
}

export interface SiftSummaryRow {
  name: string;
  kind: 'sparse' | 'dense' | 'frozen';
  shape: number[];
  total: number;
  trainable: number;
}

export interface SiftSummary {
  rows: SiftSummaryRow[];
  trainable: number;
  total: number;
  /** trainable / total. */
  fraction: number;
}

/** k for one tensor, as the reference code: min(floor(rate * numel) + 1, numel). */
export function kForRate(rate: number, numel: number): number {
  return Math.min(Math.floor(rate * numel) + 1, numel);
}

/** The indices of a target's entries in its trained tensor (`param`): idx, or 0..k-1 when quantized. */
export function paramIndices(t: SparseTarget): Tensor | null {
  return t.quant ? t.quant.local : t.idx;
}

/**
 * Adds the weight gradient dy^T x (x [M, in], dy [M, out], f32) at the flat indices idx into
 * out (f32 [k]): with the SDDMM's tile plan of idx, the k entries straight from x and dy; without
 * one, the dense product (one layer at a time) and a gather.
 */
export function addWeightGradAt(out: Tensor, x: Tensor, dy: Tensor, idx: Tensor, plan: Tensor | null = null): void {
  const N = native();
  if (plan) {
    N.sddmm(out.handle, dy.handle, x.handle, idx.handle, true, plan.handle);
    return;
  }
  const g = new Tensor(N.matmul(dy.handle, x.handle, true, false));
  try {
    N.gatherInto(out.handle, g.handle, idx.handle, true);
  } finally {
    g.dispose();
  }
}

/** Refuses a trackGradProportion other than true, false or 'sampled' (E_ARG). */
export function checkTrackGradProportion(v: unknown): void {
  check(
    v === undefined || [true, false, 'sampled'].includes(v as never),
    'E_ARG',
    `trackGradProportion must be true, false or 'sampled', got '${String(v)}'`,
  );
}

/** Elements (f32) between the starts of two targets' gradients in the shared buffer: 64 bytes. */
const GRAD_ALIGN = 16;

export class Sift {
  readonly options: Required<Pick<SiftOptions, 'sparseRate' | 'seed'>> & SiftOptions;
  readonly targets: SparseTarget[];
  readonly dense: [string, Tensor][];
  readonly frozen: [string, Tensor][];
  readonly denseFingerprints = new Map<string, TensorFingerprint>();
  /** Dense module values before training (kept for unmerge). */
  readonly denseBase = new Map<string, Tensor>();
  private phase: 'selecting' | 'training' | 'disposed' = 'selecting';
  private readonly removers: (() => void)[] = [];
  private readonly selection: Required<SelectionOptions>;
  /** One f32 buffer per device holding every target's sparse gradient (t.grad are views into it). */
  private readonly gradBuffers: Tensor[] = [];
  /** Where each target's gradient lies in its device's buffer: offset and span (k, padded). */
  private readonly gradSlots = new Map<SparseTarget, { offset: number; span: number }>();
  /** [targets, 2] f32 on the device: [selected g^2, total g^2] per target, when tracked. */
  private proportion: Tensor | null = null;
  /**
   * Whether the NaN/Inf check of the top-k chosen inside backward() (one selection batch, one
   * budget per tensor) waits for the device there (true, the default: backward() throws E_NUMERIC
   * naming the tensor), or is left to the next synchronisation (false: backward() never waits, and
   * selectAsync() or the next read throws the same error). The Trainer sets false.
   */
  checkScoresInBackward = true;
  /** With trackGradProportion 'sampled': whether the backwards from now on measure (see measureGradProportion). */
  private measuring = false;
  /** Gradients added to the targets' sparse gradients since zeroGrad() (one per target and backward). */
  private pendingGradients = 0;
  /** Target gradients (one per target and backward) since selection, by path. */
  private readonly pathCounts = { sddmm: 0, dense: 0 };
  /** The SDDMM sinks of the linear-layer targets, installed while no backward measures. */
  private readonly sinks = new Map<SparseTarget, SparseWeightGradient>();

  constructor(model: NamedModel, options: SiftOptions) {
    check(
      typeof options.sparseRate === 'number' && options.sparseRate > 0 && options.sparseRate <= 1,
      'E_ARG',
      `sparseRate must be in (0, 1], got ${options.sparseRate}`,
    );
    const sel = options.selection ?? {};
    this.selection = { batches: sel.batches ?? 1, score: sel.score ?? 'abs', scope: sel.scope ?? 'tensor' };
    check(
      Number.isInteger(this.selection.batches) && this.selection.batches >= 1,
      'E_ARG',
      `selection.batches must be a positive integer, got ${sel.batches}`,
    );
    check(
      ['abs', 'fisher', 'random', 'magnitude'].includes(this.selection.score),
      'E_ARG',
      `selection.score must be abs, fisher, random or magnitude, got '${sel.score}'`,
    );
    check(['tensor', 'global'].includes(this.selection.scope), 'E_ARG', `selection.scope must be tensor or global, got '${sel.scope}'`);
    checkTrackGradProportion(options.trackGradProportion);
    check(
      options.sparseGradient === undefined || ['auto', 'sddmm', 'dense'].includes(options.sparseGradient),
      'E_ARG',
      `sparseGradient must be auto, sddmm or dense, got '${options.sparseGradient}'`,
    );
    this.options = { ...options, seed: options.seed ?? 0 };
    if (options.quantize !== undefined) {
      parseQuantFormat(options.quantize);
      check(
        this.selection.scope === 'tensor',
        'E_UNSUPPORTED',
        "quantized SIFT targets need selection.scope 'tensor' (k per tensor is fixed when the weights are quantized)",
      );
    }
    const plan = planTargets(model, options.targetModules, options.denseModules);
    const layers = this.quantizableLayers(model, plan.sparse);
    const modules = new Map<string, unknown>(model.namedModules?.() ?? []);
    if (plan.quantized.length) {
      check(
        this.selection.scope === 'tensor',
        'E_UNSUPPORTED',
        "SIFT targets whose weights are already quantized need selection.scope 'tensor'",
      );
    }
    this.dense = plan.dense;
    this.frozen = plan.frozen;
    for (const [, t] of plan.frozen) t.requiresGrad = false;
    for (const [, t] of plan.dense) t.requiresGrad = true;
    this.targets = plan.sparse.map(([name, param]) => {
      check(
        ['f32', 'f16', 'bf16', 'f64'].includes(param.dtype),
        'E_DTYPE',
        `SIFT target '${name}' has dtype ${param.dtype}; only float weights can be trained`,
      );
      const k = kForRate(options.sparseRate, param.size);
      const layer = layers.get(name);
      if (layer) return this.quantizeTarget(name, param, layer, k);
      param.requiresGrad = true;
      return {
        name,
        param,
        shape: param.shape.slice(),
        numel: param.size,
        quant: null,
        k,
        idx: null,
        grad: null,
        base: null,
        baseFingerprint: null,
        score: null,
        plan: null,
        backwardCount: 0,
      };
    });
    // Targets quantized before SIFT saw them (a model loaded or built quantized): no dense weight,
    // so no fingerprint of it; such an increment cannot be saved (see saveIncrement).
    for (const [name, path] of plan.quantized) {
      const layer = modules.get(path) as Linear;
      const [o, i] = layer.quantized!.shape;
      this.targets.push(this.quantizedTarget(name, [o, i], layer.quantized!.device, layer, kForRate(options.sparseRate, o * i), null));
    }
    for (const t of this.targets) if (!t.quant) this.removers.push(t.param.registerGradHook((g) => this.onTargetGrad(t, g)));
    for (const [, p] of this.dense)
      this.removers.push(p.registerGradHook(() => (this.phase === 'selecting' && this.needsGradients ? null : undefined)));
    if (!this.needsGradients) this.select();
  }

  /** The Linear layers whose target weights are stored quantized (with options.quantize), by parameter name. */
  private quantizableLayers(model: NamedModel, sparse: [string, Tensor][]): Map<string, Linear> {
    const out = new Map<string, Linear>();
    if (this.options.quantize === undefined) return out;
    const modules = new Map<string, unknown>(model.namedModules?.() ?? []);
    const uses = new Map<Tensor, number>();
    for (const [, p] of model.namedParameters()) uses.set(p, (uses.get(p) ?? 0) + 1);
    for (const [name, p] of sparse) {
      const m = modules.get(modulePath(name));
      if (!(m instanceof Linear) || !name.endsWith('.weight') || m.quantized || p.ndim !== 2) continue;
      // Kept dense as by model.quantize(): the LM head (often tied, feeds the loss) and tied weights.
      if (/(^|\.)lm_head$/.test(modulePath(name)) || (uses.get(p) ?? 0) > 1) continue;
      out.set(name, m);
    }
    return out;
  }

  /**
   * Quantizes a target's layer: the fingerprint of the dense weight first (the increment applies
   * to it), then the codes replace the weight; the k values and the hook into the layer's
   * backward take the weight's place.
   */
  private quantizeTarget(name: string, weight: Tensor, layer: Linear, k: number): SparseTarget {
    const fp = fingerprint(weight);
    const shape = weight.shape.slice();
    const device = weight.device;
    layer.quantize(this.options.quantize!);
    return this.quantizedTarget(name, shape, device, layer, k, fp);
  }

  /** The target of a quantized layer: k f32 values (trained) and the hook into the layer's backward. */
  private quantizedTarget(
    name: string,
    shape: number[],
    device: string,
    layer: Linear,
    k: number,
    fp: TensorFingerprint | null,
  ): SparseTarget {
    const values = keep(new Tensor(native().full([k], 0, 'f32', device), { shape: [k], dtype: 'f32', device, contiguous: true }));
    values.requiresGrad = true;
    const t: SparseTarget = {
      name,
      param: values,
      shape,
      numel: shape[0] * shape[1],
      quant: { layer, local: null },
      k,
      idx: null,
      grad: null,
      base: null,
      baseFingerprint: fp,
      score: null,
      plan: null,
      backwardCount: 0,
    };
    const entries: TrainedEntries = {
      marker: values,
      entries: () => (this.phase === 'training' && t.idx && t.k > 0 ? { idx: t.idx, values } : null),
      weightGrad: (x, dy) => this.onQuantizedGrad(t, x, dy),
    };
    layer.trainedEntries = entries;
    this.removers.push(() => {
      if (layer.trainedEntries === entries) layer.trainedEntries = null;
    });
    return t;
  }

  /** The weight gradient of a quantized target, as its factors x [M, in] and dy [M, out] (f32). */
  private onQuantizedGrad(t: SparseTarget, x: Tensor, dy: Tensor): void {
    check(this.phase !== 'disposed', 'E_DISPOSED', 'this Sift was disposed');
    if (this.phase === 'training' && !this.measuresNow) {
      if (t.k > 0) {
        addWeightGradAt(t.grad!, x, dy, t.idx!, t.plan);
        this.noteGradient(t.plan ? 'sddmm' : 'dense');
      }
      return;
    }
    // Selection scores (and the tracked proportion) read the dense gradient, one layer at a time.
    const g = new Tensor(native().matmul(dy.handle, x.handle, true, false));
    try {
      this.onTargetGrad(t, g);
    } finally {
      g.dispose();
    }
  }

  /** Whether selection still waits for gradients (false for the random and magnitude scores). */
  get needsGradients(): boolean {
    return this.selection.score === 'abs' || this.selection.score === 'fisher';
  }

  /** Whether the indices have been chosen. */
  get selected(): boolean {
    return this.phase === 'training';
  }

  get selectionBatches(): number {
    return this.needsGradients ? this.selection.batches : 0;
  }

  get selectionOptions(): Required<SelectionOptions> {
    return { ...this.selection };
  }

  private get immediate(): boolean {
    // One batch, one budget per tensor: choose inside the hook; no score buffer of the model's size.
    return this.selection.batches === 1 && this.selection.scope === 'tensor';
  }

  private onTargetGrad(t: SparseTarget, g: Tensor): null {
    check(this.phase !== 'disposed', 'E_DISPOSED', 'this Sift was disposed');
    const N = native();
    if (this.phase === 'selecting') {
      if (!this.needsGradients) return null;
      t.backwardCount++;
      if (this.options.reduceSelectionGradient) {
        const cast = new Tensor(N.cast(g.handle, 'f32'));
        const reduced = new Tensor(N.contiguous(cast.handle));
        cast.dispose();
        this.options.reduceSelectionGradient(reduced);
        try {
          return this.scoreSelection(t, reduced);
        } finally {
          reduced.dispose();
        }
      }
      return this.scoreSelection(t, g);
    }
    // Training: keep the k entries, drop the dense gradient.
    if (t.k > 0) {
      N.gatherInto(t.grad!.handle, g.handle, t.idx!.handle, true);
      this.noteGradient('dense');
      if (this.measuresNow) N.gradProportion(this.proportionBuffer(g.device).handle, this.targets.indexOf(t), g.handle, t.idx!.handle);
    }
    return null;
  }

  private scoreSelection(t: SparseTarget, g: Tensor): null {
    const N = native();
    if (this.immediate) {
      if (!t.idx) {
        const score = new Tensor(N.full([t.numel], 0, 'f32', g.device));
        N.scoreAccumulate(score.handle, g.handle, this.selection.score === 'fisher' ? 'square' : 'abs', false);
        t.idx = keep(this.topkNamed(score, t.k, t.name));
        score.dispose();
        if (this.checkScoresInBackward) native().synchronize(g.device);
      }
      return null;
    }
    if (!t.score) t.score = keep(new Tensor(N.full([t.numel], 0, 'f32', g.device)));
    if (this.selection.score === 'fisher') {
      N.scoreAccumulate(t.score.handle, g.handle, 'square', true);
    } else {
      // |sum of gradients|: accumulate the signed sum, take the absolute value at select().
      const dense = new Tensor(N.contiguous(g.handle));
      const flat = new Tensor(N.view(dense.handle, [t.numel], [1], 0));
      dense.dispose();
      const f32 = flat.dtype === 'f32' ? flat : new Tensor(N.cast(flat.handle, 'f32'));
      N.addInplace(t.score.handle, f32.handle, 1);
      if (f32 !== flat) f32.dispose();
      flat.dispose();
    }
    return null;
  }

  /** The flat f32 buffers (one per device) holding every target's sparse gradient, once selected. */
  get sparseGradientBuffers(): readonly Tensor[] {
    return this.gradBuffers;
  }

  /**
   * Where each target's sparse gradient lies (once selected): its device's buffer, the offset and
   * the span (k rounded up to the alignment), in target order. Data parallel reduces contiguous
   * runs of these as buckets.
   */
  get sparseGradientSlots(): { target: SparseTarget; buffer: Tensor; offset: number; span: number }[] {
    return this.targets.map((target) => {
      const slot = this.gradSlots.get(target)!;
      return { target, buffer: this.gradBuffers.find((b) => b.device === target.param.device)!, ...slot };
    });
  }

  private proportionBuffer(device: string): Tensor {
    if (!this.proportion) this.proportion = keep(new Tensor(native().full([this.targets.length, 2], 0, 'f32', device)));
    return this.proportion;
  }

  private topkNamed(score: Tensor, k: number, name: string): Tensor {
    // The top-k reports NaN/Inf in the scores asynchronously, naming `name`.
    return new Tensor(native().topk(score.handle, k, name));
  }

  /**
   * Chooses the indices from the accumulated scores (called automatically for the random and
   * magnitude scores; call it after `selectionBatches` backward passes otherwise), records the base
   * values and fingerprints, and switches the hooks to sparse-gradient gathering.
   */
  select(): void {
    const steps = this.selectSteps();
    let r = noGrad(() => steps.next());
    while (!r.done) {
      const wait = r.value;
      r = noGrad(() => {
        if (typeof wait !== 'string') return steps.next();
        try {
          native().synchronize(wait);
        } catch (e) {
          return steps.throw(e);
        }
        return steps.next();
      });
    }
  }

  /**
   * select() without blocking the event loop: waits for the device off the JavaScript thread
   * before reading it, and hashes the base fingerprints a chunk at a time between event-loop turns.
   * Same result as select().
   */
  async selectAsync(): Promise<void> {
    const steps = this.selectSteps();
    let r = noGrad(() => steps.next());
    let last = Date.now();
    while (!r.done) {
      const wait = r.value;
      let error: unknown;
      let failed = false;
      if (typeof wait === 'string') {
        try {
          await synchronizeAsync(wait);
        } catch (e) {
          error = e;
          failed = true;
        }
        last = Date.now();
      } else if (Date.now() - last >= 4) {
        await new Promise<void>((res) => setImmediate(res));
        last = Date.now();
      }
      r = noGrad(() => (failed ? steps.throw(error) : steps.next()));
    }
  }

  private *selectSteps(): Generator<SelectWait, void, void> {
    check(
      this.phase === 'selecting',
      'E_ARG',
      this.phase === 'training' ? 'select(): indices were already chosen' : 'this Sift was disposed',
    );
    const N = native();
    const devices = [...new Set(this.targets.map((t) => t.param.device))];
    // Top-k chosen inside backward() is checked here (it may not have been waited for).
    for (const d of devices) yield d;
    if (this.needsGradients) {
      const missing = this.targets.filter((t) => t.backwardCount === 0).map((t) => t.name);
      check(
        missing.length === 0,
        'E_ARG',
        () =>
          `select(): no gradient reached ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ` and ${missing.length - 5} more` : ''}; run backward() on ${this.selection.batches} selection batch(es) first`,
      );
    }
    {
      // Scores for the modes that did not choose inside the hook.
      const scores: (Tensor | null)[] = this.targets.map((t, i) => {
        if (t.idx) return null;
        switch (this.selection.score) {
          case 'random':
            return new Tensor(N.rand([t.numel], 'f32', t.param.device, (this.options.seed * 1000003 + i * 7919 + 1) >>> 0));
          case 'magnitude': {
            const w = t.quant ? t.quant.layer.quantized!.dequantize() : t.param;
            const a = new Tensor(N.unary('abs', w.handle));
            if (w !== t.param) w.dispose();
            const f = new Tensor(N.cast(a.handle, 'f32'));
            a.dispose();
            const flat = new Tensor(N.view(f.handle, [t.numel], [1], 0));
            f.dispose();
            return flat;
          }
          case 'fisher':
            return t.score;
          default: {
            const s = new Tensor(N.unary('abs', t.score!.handle));
            t.score!.dispose();
            t.score = null;
            return s;
          }
        }
      });
      if (this.selection.scope === 'global') {
        const total = this.targets.reduce((a, t) => a + t.numel, 0);
        const K = kForRate(this.options.sparseRate, total);
        let idxs: Tensor[];
        // topkGlobal waits for the device (its output sizes depend on the data): wait first.
        for (const d of devices) yield d;
        try {
          idxs = N.topkGlobal(
            scores.map((s) => s!.handle),
            K,
          ).map((h) => new Tensor(h));
        } catch (e) {
          if (e instanceof SiftError && e.code === 'E_NUMERIC')
            throw new SiftError('E_NUMERIC', `selection scores contain NaN or Inf: ${e.message}`);
          throw e;
        }
        this.targets.forEach((t, i) => {
          t.idx = keep(idxs[i]);
          t.k = idxs[i].size;
        });
      } else {
        this.targets.forEach((t, i) => {
          if (!t.idx) t.idx = keep(this.topkNamed(scores[i]!, t.k, t.name));
        });
      }
      for (const s of scores) s?.dispose();
      // Surfaces a NaN/Inf in the scores (named) before anything else is read.
      for (const d of devices) yield d;
      // Fingerprints of the base weights first, while nothing is queued: the reads do not wait.
      for (const t of this.targets) {
        if (t.score) {
          t.score.dispose();
          t.score = null;
        }
        if (!t.quant) t.baseFingerprint = yield* fingerprintSteps(t.param);
      }
      for (const [name, p] of this.dense) this.denseFingerprints.set(name, yield* fingerprintSteps(p));
      // The sparse gradients of all targets on one device are views into one f32 buffer, so that
      // zeroGrad() is one fill per device instead of one per target. Each view starts on a 64-byte
      // boundary, as its own allocation did (kernels take vectorised paths on aligned pointers).
      const padded = (k: number) => Math.ceil(k / GRAD_ALIGN) * GRAD_ALIGN;
      const totals = new Map<string, number>();
      for (const t of this.targets) totals.set(t.param.device, (totals.get(t.param.device) ?? 0) + padded(t.k));
      const offsets = new Map<string, number>();
      for (const [device, total] of totals) {
        this.gradBuffers.push(
          keep(new Tensor(N.full([total], 0, 'f32', device), { shape: [total], dtype: 'f32', device, contiguous: true })),
        );
        offsets.set(device, 0);
      }
      for (const t of this.targets) {
        const device = t.param.device;
        t.base = keep(new Tensor(N.full([t.k], 0, 'f32', device), { shape: [t.k], dtype: 'f32', device, contiguous: true }));
        const buf = this.gradBuffers.find((b) => b.device === device)!;
        const off = offsets.get(device)!;
        offsets.set(device, off + padded(t.k));
        this.gradSlots.set(t, { offset: off, span: padded(t.k) });
        t.grad = keep(new Tensor(N.view(buf.handle, [t.k], [1], off), { shape: [t.k], dtype: 'f32', device, strides: [1], offset: off }));
        if (t.quant) {
          // The base values are the dequantized weight's; the values start from them.
          t.quant.local = keep(new Tensor(N.arange(0, t.k, 1, 'i32', device)));
          if (t.k > 0) {
            const w = t.quant.layer.quantized!.dequantize();
            N.gatherInto(t.base.handle, w.handle, t.idx!.handle, false);
            w.dispose();
            N.copy_(t.param.handle, t.base.handle);
          }
        } else if (t.k > 0) N.gatherInto(t.base.handle, t.param.handle, t.idx!.handle, false);
        if (t.k > 0 && this.usesSddmm(t)) {
          t.plan = keep(new Tensor(N.sddmmPlan(t.idx!.handle, t.shape[0], t.shape[1])));
          // A quantized layer hands its gradient's factors to the target (onQuantizedGrad).
          if (!t.quant) {
            const sink: SparseWeightGradient = { grad: t.grad, idx: t.idx!, plan: t.plan, onUse: () => this.noteGradient('sddmm') };
            this.sinks.set(t, sink);
            if (!this.measuring) setSparseWeightGradient(t.param, sink);
          }
        }
      }
      for (const [name, p] of this.dense) {
        this.denseBase.set(name, keep(new Tensor(N.clone(p.handle))));
        p.zeroGrad();
      }
    }
    this.phase = 'training';
  }

  /**
   * Whether target t's gradient, after selection, comes from the SDDMM (see SiftOptions.sparseGradient;
   * with trackGradProportion 'sampled', on the backwards that do not measure).
   */
  usesSddmm(t: SparseTarget): boolean {
    const mode = this.options.sparseGradient ?? 'auto';
    if (mode === 'dense' || this.options.trackGradProportion === true || t.shape.length !== 2) return false;
    return mode === 'sddmm' || t.param.device === 'cpu';
  }

  /**
   * With trackGradProportion 'sampled': whether the next backwards measure the gradient proportion.
   * While set, every target takes the dense gradient (and the proportion is measured, as with
   * trackGradProportion true); while clear, the targets that use the SDDMM take it. Change it
   * between optimizer steps only (after zeroGrad(), before the step's first backward), so that all
   * micro-batches of one step take the same path. Always true with trackGradProportion true, and
   * false without tracking.
   */
  get measureGradProportion(): boolean {
    return this.measuresNow;
  }

  set measureGradProportion(on: boolean) {
    check(
      this.options.trackGradProportion === 'sampled',
      'E_ARG',
      `measureGradProportion is set per step with trackGradProportion 'sampled' (this Sift has ${this.options.trackGradProportion ?? false})`,
    );
    check(this.phase !== 'disposed', 'E_DISPOSED', 'this Sift was disposed');
    on = !!on;
    if (on === this.measuring) return;
    check(
      this.pendingGradients === 0,
      'E_ARG',
      'measureGradProportion changed between the backwards of one optimizer step: set it before the first (after zeroGrad())',
    );
    this.measuring = on;
    for (const [t, sink] of this.sinks) setSparseWeightGradient(t.param, on ? null : sink);
  }

  private get measuresNow(): boolean {
    const track = this.options.trackGradProportion;
    return track === true || (track === 'sampled' && this.measuring);
  }

  private noteGradient(path: 'sddmm' | 'dense'): void {
    this.pathCounts[path]++;
    this.pendingGradients++;
  }

  /**
   * Which path the targets' gradients took since selection, counted once per use of a target in a
   * backward (a weight used by several layers, as a tied embedding, counts once per layer):
   * `sddmm` (the SDDMM, from the layer's input and output gradient) or `dense` (the dense weight
   * gradient, then a gather). `sddmmTargets`: the targets set up for the SDDMM (see usesSddmm).
   */
  gradientPaths(): { sddmm: number; dense: number; sddmmTargets: number; targets: number } {
    return {
      ...this.pathCounts,
      sddmmTargets: this.targets.filter((t) => t.k > 0 && t.plan !== null).length,
      targets: this.targets.length,
    };
  }

  /** Clears the accumulated sparse gradients (the optimizer does this after each step). */
  zeroGrad(): void {
    for (const b of this.gradBuffers) native().fill_(b.handle, 0);
    for (const [, p] of this.dense) p.zeroGrad();
    this.pendingGradients = 0;
  }

  /** Trainable and total entries per tensor and in all. */
  summary(): SiftSummary {
    const rows: SiftSummaryRow[] = [];
    for (const t of this.targets) rows.push({ name: t.name, kind: 'sparse', shape: t.shape, total: t.numel, trainable: t.k });
    for (const [name, p] of this.dense) rows.push({ name, kind: 'dense', shape: p.shape, total: p.size, trainable: p.size });
    for (const [name, p] of this.frozen) rows.push({ name, kind: 'frozen', shape: p.shape, total: p.size, trainable: 0 });
    const trainable = rows.reduce((a, r) => a + r.trainable, 0);
    const total = rows.reduce((a, r) => a + r.total, 0);
    return { rows, trainable, total, fraction: total ? trainable / total : 0 };
  }

  /**
   * Per target, the share of the last measuring backward's gradient squared norm that fell on the
   * selected entries (needs trackGradProportion; with 'sampled', the last backward run while
   * measureGradProportion was set; empty before any). Reads the device once, asynchronously.
   */
  async gradProportions(): Promise<Map<string, number>> {
    check(!!this.options.trackGradProportion, 'E_ARG', "gradProportions() needs the option trackGradProportion (true or 'sampled')");
    const out = new Map<string, number>();
    if (!this.proportion) return out;
    const v = (await this.proportion.data()) as Float32Array;
    this.targets.forEach((t, i) => out.set(t.name, v[2 * i + 1] > 0 ? v[2 * i] / v[2 * i + 1] : 0));
    return out;
  }

  /**
   * Removes the hooks and frees indices, buffers and base copies. The model is left as trained: a
   * quantized target's layer keeps its trained entries (indices and values), which it owns from
   * then on.
   */
  dispose(): void {
    if (this.phase === 'disposed') return;
    const trained = this.phase === 'training';
    for (const r of this.removers) r();
    for (const t of this.targets) {
      if (this.sinks.has(t)) setSparseWeightGradient(t.param, null);
      if (t.quant) {
        t.quant.local?.dispose();
        t.quant.local = null;
        t.param.requiresGrad = false;
        if (trained && t.idx && t.k > 0) {
          const idx = t.idx;
          const values = t.param;
          t.quant.layer.trainedEntries = {
            marker: values,
            entries: () => ({ idx, values }),
            weightGrad: () => {},
            dispose: () => {
              values.dispose();
              idx.dispose();
            },
          };
          t.idx = null;
        } else {
          t.param.dispose();
        }
      }
      for (const x of [t.idx, t.grad, t.base, t.score, t.plan]) x?.dispose();
      t.idx = t.grad = t.base = t.score = t.plan = null;
    }
    for (const b of this.gradBuffers) b.dispose();
    this.gradBuffers.length = 0;
    for (const b of this.denseBase.values()) b.dispose();
    this.denseBase.clear();
    this.proportion?.dispose();
    this.proportion = null;
    this.sinks.clear();
    this.phase = 'disposed';
  }
}
