/**
 * Dense AdamW for full fine-tuning and LoRA, with the semantics of SIFT's SparseAdamW (PyTorch
 * AdamW, f32 moments, f32 master copies of f16/bf16 weights, global-norm clipping computed on the
 * device, the same schedules), over the native fused multi-tensor adamW kernel.
 */
import { Tensor } from '../engine/tensor';
import { check } from '../engine/errors';
import { AdamWOptions, DenseSlots, GradNorm, ResolvedAdamWOptions, adamWHyper, resolveAdamWOptions, restoreState } from '../sift/optimizer';
import { lrMultiplier } from '../sift/schedule';

export class DenseAdamW {
  readonly options: ResolvedAdamWOptions;
  stepCount = 0;
  private readonly slots: DenseSlots;
  private readonly norm = new GradNorm();
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
    const grads = this.slots.gradHandles();
    if (grads.length) {
      const scale = this.norm.measure(grads, this.options.maxGradNorm);
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
    return this.norm.last();
  }

  /** The last step's squared gradient norm, a tensor of the caller's own (GradNorm.lastSquared). */
  lastGradNormSq(): Tensor | null {
    return this.norm.lastSquared();
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
    this.norm.dispose();
    this.disposed = true;
  }
}
