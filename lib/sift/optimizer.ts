/**
 * SparseAdamW: AdamW on the k selected entries of each SIFT target (f32 moments and f32 master
 * values, also for bf16/f16 weights) and ordinary AdamW on dense modules, in one optimizer.
 * PyTorch semantics (betas, eps, bias correction, decoupled weight decay on the full value). The
 * updated entries are written into the weights within step(). Gradient clipping uses the global norm
 * over all trained entries, computed on the device; nothing in step() waits for the host.
 */
import { Tensor } from '../engine/tensor';
import { SiftError, check } from '../engine/errors';
import { native } from '../engine/native';
import { keep } from '../engine/scope';
import type { AdamWHyper, NativeTensor } from '../engine/addon-types';
import { Sift, SparseTarget, paramIndices } from './sift';
import { ScheduleOptions, lrMultiplier } from './schedule';

export interface AdamWOptions {
  lr: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
  schedule?: ScheduleOptions;
  /** Clip the global gradient norm to this value; 0 or undefined turns clipping off. */
  maxGradNorm?: number;
}

export type ResolvedAdamWOptions = Required<Omit<AdamWOptions, 'schedule'>> & { schedule: ScheduleOptions };

/** Defaults and checks shared by SparseAdamW and DenseAdamW. */
export function resolveAdamWOptions(opts: AdamWOptions): ResolvedAdamWOptions {
  check(
    typeof opts.lr === 'number' && opts.lr >= 0 && Number.isFinite(opts.lr),
    'E_ARG',
    `lr must be a non-negative number, got ${opts.lr}`,
  );
  const betas = opts.betas ?? [0.9, 0.999];
  check(betas[0] >= 0 && betas[0] < 1 && betas[1] >= 0 && betas[1] < 1, 'E_ARG', `betas must be in [0, 1), got [${betas}]`);
  const o: ResolvedAdamWOptions = {
    lr: opts.lr,
    betas,
    eps: opts.eps ?? 1e-8,
    weightDecay: opts.weightDecay ?? 0,
    maxGradNorm: opts.maxGradNorm ?? 0,
    schedule: opts.schedule ?? { type: 'constant' },
  };
  check(o.eps > 0, 'E_ARG', `eps must be positive, got ${o.eps}`);
  check(o.maxGradNorm >= 0, 'E_ARG', `maxGradNorm must be >= 0, got ${o.maxGradNorm}`);
  return o;
}

/** The native kernel's hyper-parameters for the step after `stepCount` steps. */
export function adamWHyper(o: ResolvedAdamWOptions, stepCount: number): AdamWHyper {
  return {
    lr: o.lr * lrMultiplier(stepCount, o.schedule),
    beta1: o.betas[0],
    beta2: o.betas[1],
    eps: o.eps,
    weightDecay: o.weightDecay,
    step: stepCount + 1,
  };
}

/** Copies saved optimizer state into the live state tensors (every name present, shapes equal). */
export function restoreState(live: [string, Tensor][], saved: Map<string, Tensor>): void {
  for (const [name, t] of live) {
    const src = saved.get(name);
    if (!src) throw new SiftError('E_FORMAT', `optimizer state has no '${name}'`);
    if (src.shape.join() !== t.shape.join())
      throw new SiftError('E_MISMATCH', `optimizer state '${name}' has shape [${src.shape}], expected [${t.shape}]`);
    native().copy_(t.handle, src.handle);
  }
}

/**
 * Dense AdamW state of whole tensors (f32 moments; an f32 master copy for f16/bf16 weights) and the
 * native multi-tensor update over those with a gradient: the one mechanism behind DenseAdamW and
 * SparseAdamW's dense modules. The caller computes the clipping scale (over everything it trains).
 */
/**
 * The global gradient norm of an optimizer's steps, on the device: the sum of squares over the
 * step's gradients, the clipping scale from it, and the last step's value kept to be read.
 */
export class GradNorm {
  private sq: Tensor | null = null;

  /** Measures `grads` (the step's value from now on); the clipping scale when maxGradNorm > 0 (the caller disposes it). */
  measure(grads: NativeTensor[], maxGradNorm: number): Tensor | null {
    const N = native();
    this.sq?.dispose();
    this.sq = keep(new Tensor(N.sumSquares(grads)));
    return maxGradNorm > 0 ? new Tensor(N.clipCoefficient(this.sq.handle, maxGradNorm)) : null;
  }

  /** The last step's norm before clipping (reads the device); 0 before the first step. */
  last(): number {
    return this.sq ? Math.sqrt(this.sq.item()) : 0;
  }

  /**
   * The last step's squared norm as a tensor of the caller's own (a view that the next step
   * leaves as it is), to read later without waiting for the device; null before the first step.
   */
  lastSquared(): Tensor | null {
    return this.sq ? keep(this.sq.reshape(1)) : null;
  }

  dispose(): void {
    this.sq?.dispose();
    this.sq = null;
  }
}

export class DenseSlots {
  private readonly slots: { name: string; param: Tensor; m: Tensor; v: Tensor; master: Tensor | null }[];

  /** masters: f32 values to start the masters from (e.g. the f32 weights before a cast to bf16). */
  constructor(params: [string, Tensor][], masters?: Map<string, Tensor>) {
    const N = native();
    this.slots = params.map(([name, p]) => {
      check(
        ['f32', 'f16', 'bf16', 'f64'].includes(p.dtype),
        'E_DTYPE',
        `'${name}' has dtype ${p.dtype}; only float weights can be trained`,
      );
      let master: Tensor | null = null;
      if (p.dtype !== 'f32' && p.dtype !== 'f64') {
        const given = masters?.get(name);
        master = keep(new Tensor(given ? N.clone(given.handle) : N.cast(p.handle, 'f32')));
      }
      return {
        name,
        param: p,
        master,
        m: keep(new Tensor(N.full(p.shape, 0, 'f32', p.device))),
        v: keep(new Tensor(N.full(p.shape, 0, 'f32', p.device))),
      };
    });
  }

  /** Handles of the gradients the next update() will use. */
  gradHandles(): NativeTensor[] {
    return this.live().map((s) => s.param.grad!.handle);
  }

  /** One AdamW update of every tensor with a gradient (scale: clipping coefficient or null). */
  update(hp: AdamWHyper, scale: Tensor | null): void {
    const live = this.live();
    if (!live.length) return;
    native().adamW(
      live.map((s) => s.param.handle),
      live.map((s) => s.param.grad!.handle),
      live.map((s) => s.m.handle),
      live.map((s) => s.v.handle),
      live.map((s) => (s.master ? s.master.handle : null)),
      hp,
      scale ? scale.handle : null,
    );
  }

  zeroGrad(): void {
    for (const s of this.slots) s.param.zeroGrad();
  }

  /** State for checkpoints: <name>.exp_avg, <name>.exp_avg_sq and <name>.master where there is one. */
  stateTensors(): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const s of this.slots) {
      out.push([`${s.name}.exp_avg`, s.m], [`${s.name}.exp_avg_sq`, s.v]);
      if (s.master) out.push([`${s.name}.master`, s.master]);
    }
    return out;
  }

  dispose(): void {
    for (const s of this.slots) {
      s.m.dispose();
      s.v.dispose();
      s.master?.dispose();
    }
  }

  private live() {
    return this.slots.filter((s) => s.param.grad !== null && !s.param.grad.isDisposed);
  }
}

interface SparseLists {
  targets: SparseTarget[];
  params: Tensor[];
  idx: (Tensor | null)[];
  grads: (Tensor | null)[];
  weightHandles: NativeTensor[];
  idxHandles: NativeTensor[];
  gradHandles: NativeTensor[];
  mHandles: NativeTensor[];
  vHandles: NativeTensor[];
  masterHandles: NativeTensor[];
}

export class SparseAdamW {
  readonly options: ResolvedAdamWOptions;
  /** Optimizer steps taken. */
  stepCount = 0;
  private readonly m: Tensor[];
  private readonly v: Tensor[];
  private readonly masters: Tensor[];
  private readonly dense: DenseSlots;
  private readonly norm = new GradNorm();
  private disposed = false;
  private sparseCache: SparseLists | null = null;

  constructor(
    readonly sift: Sift,
    opts: AdamWOptions,
  ) {
    check(sift.selected, 'E_ARG', 'SparseAdamW: choose the SIFT indices first (run the selection batches, then sift.select())');
    this.options = resolveAdamWOptions(opts);
    const N = native();
    const active = sift.targets.filter((t) => t.k > 0);
    this.m = active.map((t) => keep(new Tensor(N.full([t.k], 0, 'f32', t.param.device))));
    this.v = active.map((t) => keep(new Tensor(N.full([t.k], 0, 'f32', t.param.device))));
    this.masters = active.map((t) => keep(new Tensor(N.clone(t.base!.handle))));
    this.dense = new DenseSlots(sift.dense);
  }

  /** The learning rate the next step will use. */
  get currentLr(): number {
    return this.options.lr * lrMultiplier(this.stepCount, this.options.schedule);
  }

  /**
   * The handle lists of the sparse targets for the native call, built once: the targets' weights,
   * indices and gradient buffers stay the same tensors from step to step (the gradients are
   * refilled in place), so only a change of those tensors (or a disposed one) rebuilds them.
   */
  private sparseLists(active: SparseTarget[]): SparseLists {
    const c = this.sparseCache;
    if (c && c.targets.length === active.length) {
      let same = true;
      for (let i = 0; i < active.length; i++) {
        const t = active[i];
        if (
          t !== c.targets[i] ||
          t.param !== c.params[i] ||
          t.idx !== c.idx[i] ||
          t.grad !== c.grads[i] ||
          t.param.isDisposed ||
          t.idx!.isDisposed ||
          t.grad!.isDisposed
        ) {
          same = false;
          break;
        }
      }
      if (same) return c;
    }
    const lists: SparseLists = {
      targets: active.slice(),
      params: active.map((t) => t.param),
      idx: active.map((t) => t.idx),
      grads: active.map((t) => t.grad),
      weightHandles: active.map((t) => t.param.handle),
      idxHandles: active.map((t) => paramIndices(t)!.handle),
      gradHandles: active.map((t) => t.grad!.handle),
      mHandles: this.m.map((x) => x.handle),
      vHandles: this.v.map((x) => x.handle),
      masterHandles: this.masters.map((x) => x.handle),
    };
    this.sparseCache = lists;
    return lists;
  }

  /** Applies one update from the accumulated gradients, then clears them. */
  step(): void {
    check(!this.disposed, 'E_DISPOSED', 'this optimizer was disposed');
    const N = native();
    const active = this.sift.targets.filter((t) => t.k > 0);
    const denseGrads = this.dense.gradHandles();
    const hp = adamWHyper(this.options, this.stepCount);
    let scale: Tensor | null = null;
    const lists = active.length ? this.sparseLists(active) : null;
    if (active.length || denseGrads.length) {
      const handles = denseGrads.length === 0 ? lists!.gradHandles : [...(lists ? lists.gradHandles : []), ...denseGrads];
      scale = this.norm.measure(handles, this.options.maxGradNorm);
    }
    if (lists) {
      // m, v and masters were made for exactly these targets (k > 0), in this order.
      N.sparseAdamW(
        lists.weightHandles,
        lists.idxHandles,
        lists.gradHandles,
        lists.mHandles,
        lists.vHandles,
        lists.masterHandles,
        hp,
        scale ? scale.handle : null,
      );
    }
    this.dense.update(hp, scale);
    scale?.dispose();
    this.sift.zeroGrad();
    this.stepCount++;
  }

  /** Global gradient norm before clipping at the last step (reads the device). */
  lastGradNorm(): number {
    return this.norm.last();
  }

  /** The last step's squared gradient norm, a tensor of the caller's own (GradNorm.lastSquared). */
  lastGradNormSq(): Tensor | null {
    return this.norm.lastSquared();
  }

  /** Optimizer state for checkpoints: tensors by name and the step count. */
  stateTensors(): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    const active = this.sift.targets.filter((t) => t.k > 0);
    active.forEach((t, i) => {
      out.push([`${t.name}.exp_avg`, this.m[i]], [`${t.name}.exp_avg_sq`, this.v[i]], [`${t.name}.master`, this.masters[i]]);
    });
    out.push(...this.dense.stateTensors());
    return out;
  }

  /** Restores state saved by stateTensors() (shapes must match). */
  loadState(tensors: Map<string, Tensor>, stepCount: number): void {
    restoreState(this.stateTensors(), tensors);
    this.stepCount = stepCount;
  }

  dispose(): void {
    if (this.disposed) return;
    for (const t of [...this.m, ...this.v, ...this.masters]) t.dispose();
    this.dense.dispose();
    this.norm.dispose();
    this.sparseCache = null;
    this.disposed = true;
  }
}
