/**
 * Dense AdamW for full fine-tuning and LoRA, with the semantics of SIFT's SparseAdamW (PyTorch
 * AdamW, f32 moments, f32 master copies of f16/bf16 weights, global-norm clipping computed on the
 * device, the same schedules), over the native fused multi-tensor adamW kernel.
 */
import { Tensor } from '../engine/tensor';
import { check } from '../engine/errors';
import { native } from '../engine/native';
import { keep } from '../engine/scope';
import { AdamWOptions, DenseSlots, ResolvedAdamWOptions, adamWHyper, resolveAdamWOptions, restoreState } from '../sift/optimizer';
import { lrMultiplier } from '../sift/schedule';

export class DenseAdamW {
  readonly options: ResolvedAdamWOptions;
  stepCount = 0;
  private readonly slots: DenseSlots;
  private lastNormSq: Tensor | null = null;
  private disposed = false;

  /**
   * params: the trained tensors by name. masters: f32 values to start the masters from (e.g. the
   * f32 weights before a cast to bf16); by default the masters are the params cast to f32.
   */
  constructor(params: [string, Tensor][], opts: AdamWOptions, masters?: Map<string, Tensor>) {
    this.options = resolveAdamWOptions(opts);
    this.slots = new DenseSlots(params, masters);
  }

  get currentLr(): number {
    return this.options.lr * lrMultiplier(this.stepCount, this.options.schedule);
  }

  /** One update from the parameters' accumulated gradients, which are then freed. */
  step(): void {
    check(!this.disposed, 'E_DISPOSED', 'this optimizer was disposed');
    const N = native();
    const grads = this.slots.gradHandles();
    if (grads.length) {
      this.lastNormSq?.dispose();
      this.lastNormSq = keep(new Tensor(N.sumSquares(grads)));
      const scale = this.options.maxGradNorm > 0 ? new Tensor(N.clipCoefficient(this.lastNormSq.handle, this.options.maxGradNorm)) : null;
      this.slots.update(adamWHyper(this.options, this.stepCount), scale);
      scale?.dispose();
    }
    this.zeroGrad();
    this.stepCount++;
  }

  zeroGrad(): void {
    this.slots.zeroGrad();
  }

  /** Global gradient norm before clipping at the last step (reads the device). */
  lastGradNorm(): number {
    return this.lastNormSq ? Math.sqrt(this.lastNormSq.item()) : 0;
  }

  /**
   * The last step's squared gradient norm as a tensor of the caller's own (a view that the next
   * step leaves as it is), to read later without waiting for the device; null before the first.
   */
  lastGradNormSq(): Tensor | null {
    return this.lastNormSq ? keep(this.lastNormSq.reshape(1)) : null;
  }

  /** lastGradNorm() without blocking the event loop while the device finishes the step. */
  async lastGradNormAsync(): Promise<number> {
    if (!this.lastNormSq) return 0;
    return Math.sqrt(Number((await this.lastNormSq.data())[0]));
  }

  stateTensors(): [string, Tensor][] {
    return this.slots.stateTensors();
  }

  loadState(tensors: Map<string, Tensor>, stepCount: number): void {
    restoreState(this.stateTensors(), tensors);
    this.stepCount = stepCount;
  }

  dispose(): void {
    if (this.disposed) return;
    this.slots.dispose();
    this.lastNormSq?.dispose();
    this.disposed = true;
  }
}
