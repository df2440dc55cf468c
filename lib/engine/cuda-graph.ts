/**
 * CUDA graphs for fixed-shape steps: the first run of a step is captured (its kernels recorded on the
 * device's stream, once per shape key) and every later run with the same key replays the graph with
 * one launch instead of hundreds. A different key destroys the graph and captures again.
 *
 * The contract of a captured step (native/cuda/runtime.h):
 * - it must not wait for the device or read device data (E_UNSUPPORTED while capturing);
 * - the tensors it reads that exist before the capture (weights, optimizer state, input buffers) must
 *   live as long as the graph; inputs that change between steps are copied into such buffers before
 *   run(); host data it uploads itself is frozen into the graph (each replay uploads the same bytes);
 * - scalars it passes to kernels are frozen too (a learning rate or step count that changes per step
 *   belongs outside the captured part);
 * - what it returns is returned again by every replay: the same tensors, rewritten by the replay.
 * Memory the step allocates stays with the graph until dispose() (never reused by other work).
 */
import { native } from './native';
import { SiftError } from './errors';

export class CudaGraphStep<T> {
  private readonly index: number;
  private id: number | null = null;
  private key: string | null = null;
  private result: T | undefined;
  private disposed = false;

  constructor(readonly device: string) {
    const m = /^cuda(?::(\d+))?$/.exec(device);
    if (!m) throw new SiftError('E_DEVICE', `CudaGraphStep: a CUDA device is needed, got '${device}'`);
    this.index = Number(m[1] ?? 0);
  }

  /** Whether a graph is held (captured for the last key). */
  get captured(): boolean {
    return this.id !== null;
  }

  /**
   * Runs the step: captures `fn` and launches the graph when `key` differs from the captured one (or
   * nothing is captured), else replays. Returns what `fn` returned at capture.
   */
  run(key: string, fn: () => T): T {
    if (this.disposed) throw new SiftError('E_DISPOSED', 'CudaGraphStep used after dispose()');
    const N = native();
    if (this.id === null || this.key !== key) {
      this.invalidate();
      const id = N.cudaGraphBegin(this.index);
      let ok = false;
      let result: T;
      try {
        result = fn();
        ok = true;
      } finally {
        N.cudaGraphEnd(this.index, ok);
      }
      this.id = id;
      this.key = key;
      this.result = result;
    }
    // Capturing only recorded the kernels: the first launch runs the step.
    N.cudaGraphLaunch(this.index, this.id);
    return this.result as T;
  }

  /** Destroys the graph (waits for its launches); the next run() captures again. */
  invalidate(): void {
    if (this.id === null) return;
    native().cudaGraphDestroy(this.index, this.id);
    this.id = null;
    this.key = null;
    this.result = undefined;
  }

  dispose(): void {
    this.invalidate();
    this.disposed = true;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
