/**
 * Dense AdamW for full fine-tuning and LoRA, with the semantics of SIFT's SparseAdamW (PyTorch
 * AdamW, f32 moments, f32 master copies of f16/bf16 weights, global-norm clipping computed on the
 * device, the same schedules), over the native fused multi-tensor adamW kernel.
 */
import { Tensor } from '../engine/tensor';
import { check } from '../engine/errors';
import { native } from '../engine/native';
import { keep } from '../engine/scope';
import { AdamWOptions, ResolvedAdamWOptions, adamWHyper, resolveAdamWOptions, restoreState } from '../sift/optimizer';
import { lrMultiplier } from '../sift/schedule';

interface Slot {
  name: string;
  param: Tensor;
  m: Tensor;
  v: Tensor;
  master: Tensor | null;
}

export class DenseAdamW {
  readonly options: ResolvedAdamWOptions;
  stepCount = 0;
  private readonly slots: Slot[];
  private lastNormSq: Tensor | null = null;
  private disposed = false;

  /**
   * params: the trained tensors by name. masters: f32 values to start the masters from (e.g. the
   * f32 weights before a cast to bf16); by default the masters are the params cast to f32.
   */
  constructor(params: [string, Tensor][], opts: AdamWOptions, masters?: Map<string, Tensor>) {
    this.options = resolveAdamWOptions(opts);
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
    const hp = adamWHyper(this.options, this.stepCount);
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
    restoreState(this.stateTensors(), tensors);
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
