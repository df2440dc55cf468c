/**
 * Dense AdamW for full fine-tuning and LoRA, with the semantics of SIFT's SparseAdamW (PyTorch
 * AdamW, f32 moments, f32 master copies of f16/bf16 weights, global-norm clipping computed on the
 * device, the same schedules), over the native fused multi-tensor adamW kernel.
 */
import { Tensor } from '../engine/tensor';
import { SiftError, check } from '../engine/errors';
import { native } from '../engine/native';
import { keep } from '../engine/scope';
import type { AdamWHyper } from '../engine/addon-types';
import type { AdamWOptions } from '../sift/optimizer';
import { ScheduleOptions, lrMultiplier } from '../sift/schedule';

interface Slot {
  name: string;
  param: Tensor;
  m: Tensor;
  v: Tensor;
  master: Tensor | null;
}

export class DenseAdamW {
  readonly options: Required<Omit<AdamWOptions, 'schedule'>> & { schedule: ScheduleOptions };
  stepCount = 0;
  private readonly slots: Slot[];
  private lastNormSq: Tensor | null = null;
  private disposed = false;

  /**
   * params: the trained tensors by name. masters: f32 values to start the masters from (e.g. the
   * f32 weights before a cast to bf16); by default the masters are the params cast to f32.
   */
  constructor(params: [string, Tensor][], opts: AdamWOptions, masters?: Map<string, Tensor>) {
    check(typeof opts.lr === 'number' && opts.lr >= 0 && Number.isFinite(opts.lr), 'E_ARG', `lr must be a non-negative number, got ${opts.lr}`);
    const betas = opts.betas ?? [0.9, 0.999];
    check(betas[0] >= 0 && betas[0] < 1 && betas[1] >= 0 && betas[1] < 1, 'E_ARG', `betas must be in [0, 1), got [${betas}]`);
    this.options = {
      lr: opts.lr, betas, eps: opts.eps ?? 1e-8, weightDecay: opts.weightDecay ?? 0,
      maxGradNorm: opts.maxGradNorm ?? 0, schedule: opts.schedule ?? { type: 'constant' },
    };
    check(this.options.eps > 0, 'E_ARG', `eps must be positive, got ${this.options.eps}`);
    check(this.options.maxGradNorm >= 0, 'E_ARG', `maxGradNorm must be >= 0, got ${this.options.maxGradNorm}`);
    const N = native();
    this.slots = params.map(([name, p]) => {
      check(['f32', 'f16', 'bf16', 'f64'].includes(p.dtype), 'E_DTYPE', `'${name}' has dtype ${p.dtype}; only float weights can be trained`);
      let master: Tensor | null = null;
      if (p.dtype !== 'f32' && p.dtype !== 'f64') {
        const given = masters?.get(name);
        master = keep(new Tensor(given ? N.clone(given.handle) : N.cast(p.handle, 'f32')));
      }
      return {
        name, param: p, master,
        m: keep(new Tensor(N.full(p.shape, 0, 'f32', p.device))),
        v: keep(new Tensor(N.full(p.shape, 0, 'f32', p.device))),
      };
    });
  }

  get currentLr(): number {
    return this.options.lr * lrMultiplier(this.stepCount, this.options.schedule);
  }

  /** One update from the parameters' accumulated gradients, which are then freed. */
  step(): void {
    check(!this.disposed, 'E_DISPOSED', 'this optimizer was disposed');
    const N = native();
    const live = this.slots.filter((s) => s.param.grad !== null && !s.param.grad.isDisposed);
    const hp: AdamWHyper = {
      lr: this.currentLr, beta1: this.options.betas[0], beta2: this.options.betas[1],
      eps: this.options.eps, weightDecay: this.options.weightDecay, step: this.stepCount + 1,
    };
    if (live.length) {
      this.lastNormSq?.dispose();
      this.lastNormSq = keep(new Tensor(N.sumSquares(live.map((s) => s.param.grad!.handle))));
      const scale = this.options.maxGradNorm > 0 ? new Tensor(N.clipCoefficient(this.lastNormSq.handle, this.options.maxGradNorm)) : null;
      N.adamW(
        live.map((s) => s.param.handle), live.map((s) => s.param.grad!.handle), live.map((s) => s.m.handle),
        live.map((s) => s.v.handle), live.map((s) => (s.master ? s.master.handle : null)), hp, scale ? scale.handle : null,
      );
      scale?.dispose();
    }
    this.zeroGrad();
    this.stepCount++;
  }

  zeroGrad(): void {
    for (const s of this.slots) s.param.zeroGrad();
  }

  /** Global gradient norm before clipping at the last step (reads the device). */
  lastGradNorm(): number {
    return this.lastNormSq ? Math.sqrt(this.lastNormSq.item()) : 0;
  }

  stateTensors(): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const s of this.slots) {
      out.push([`${s.name}.exp_avg`, s.m], [`${s.name}.exp_avg_sq`, s.v]);
      if (s.master) out.push([`${s.name}.master`, s.master]);
    }
    return out;
  }

  loadState(tensors: Map<string, Tensor>, stepCount: number): void {
    for (const [name, t] of this.stateTensors()) {
      const src = tensors.get(name);
      if (!src) throw new SiftError('E_FORMAT', `optimizer state has no '${name}'`);
      if (src.shape.join() !== t.shape.join()) throw new SiftError('E_MISMATCH', `optimizer state '${name}' has shape [${src.shape}], expected [${t.shape}]`);
      native().copy_(t.handle, src.handle);
    }
    this.stepCount = stepCount;
  }

  dispose(): void {
    if (this.disposed) return;
    for (const s of this.slots) {
      s.m.dispose();
      s.v.dispose();
      s.master?.dispose();
    }
    this.lastNormSq?.dispose();
    this.disposed = true;
  }
}
