/** Small helpers shared by the op files. */
import type { NativeTensor } from '../engine/addon-types';
import { Tensor, TensorMeta } from '../engine/tensor';
import type { DType } from '../engine/dtype';
import { native } from '../engine/native';
import { SiftError } from '../engine/errors';

export const N = native;

/** Wraps a new native handle as a Tensor (with what the op knows of its metadata, if anything). */
export function wrap(h: NativeTensor, meta?: TensorMeta): Tensor {
  return new Tensor(h, meta);
}

/**
 * Wraps an op's freshly allocated output (contiguous strides, offset 0) whose shape, dtype and
 * device the op knows: reading them later costs no native call.
 */
export function fresh(h: NativeTensor, shape: number[], dtype: DType, device: string): Tensor {
  return new Tensor(h, { shape, dtype, device, contiguous: true });
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Reduces a broadcast gradient back to `shape` (no copy when the shapes already match). */
export function sumToShape(g: Tensor, shape: number[]): Tensor {
  if (sameShape(g.shape, shape)) return g;
  // The native sumTo reduces into a new tensor here (the shapes differ): contiguous, offset 0.
  return fresh(native().sumTo(g.handle, shape), shape, g.dtype, g.device);
}

/** Broadcast shape of two shapes (NumPy rules) or an E_SHAPE error naming the op. */
export function broadcastShapes(a: readonly number[], b: readonly number[], op: string): number[] {
  if (sameShape(a, b)) return a.slice();
  const n = Math.max(a.length, b.length);
  const out: number[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new SiftError('E_SHAPE', `${op}: shapes [${a}] and [${b}] cannot be broadcast together`);
    }
    out[i] = da === 1 ? db : da;
  }
  return out;
}

export function normDim(dim: number, ndim: number, op: string): number {
  const d = dim < 0 ? dim + ndim : dim;
  if (!Number.isInteger(d) || d < 0 || d >= Math.max(ndim, 1)) {
    throw new SiftError('E_SHAPE', `${op}: dimension ${dim} out of range for a tensor of ${ndim} dimensions`);
  }
  return d;
}
