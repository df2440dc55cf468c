/** Small helpers shared by the op files. */
import type { NativeTensor } from '../engine/addon-types';
import { Tensor } from '../engine/tensor';
import { native } from '../engine/native';
import { SiftError } from '../engine/errors';

export const N = native;

/** Wraps a new native handle as a Tensor. */
export function wrap(h: NativeTensor): Tensor {
  return new Tensor(h);
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Reduces a broadcast gradient back to `shape` (no copy when the shapes already match). */
export function sumToShape(g: Tensor, shape: number[]): Tensor {
  if (sameShape(g.shape, shape)) return g;
  return wrap(native().sumTo(g.handle, shape));
}

/** Broadcast shape of two shapes (NumPy rules) or an E_SHAPE error naming the op. */
export function broadcastShapes(a: readonly number[], b: readonly number[], op: string): number[] {
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
