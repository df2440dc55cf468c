/** Reductions: sum, mean, max, min over dims (or everything), argmax, and p-norms. */
import { Tensor } from '../engine/tensor';
import type { ReduceOp } from '../engine/addon-types';
import { SiftError } from '../engine/errors';
import { record } from './tape';
import { N, wrap, normDim } from './util';

function resolveDims(x: Tensor, dim: number | number[] | undefined, op: string): number[] {
  if (dim === undefined) return x.shape.map((_, i) => i);
  const dims = (Array.isArray(dim) ? dim : [dim]).map((d) => normDim(d, x.ndim, op));
  if (new Set(dims).size !== dims.length) throw new SiftError('E_SHAPE', `${op}: repeated dimension in [${dim}]`);
  return dims.sort((a, b) => a - b);
}

function keptShape(shape: number[], dims: number[]): number[] {
  return shape.map((s, i) => (dims.includes(i) ? 1 : s));
}

/** Broadcasts a reduced gradient back over x's shape as a dense tensor. */
function expandBack(g: Tensor, inShape: number[], dims: number[]): Tensor {
  const kept = keptShape(inShape, dims);
  const gc = wrap(N().contiguous(g.handle));
  const gk = wrap(N().view(gc.handle, kept, contiguousStrides(kept), 0));
  const strides = contiguousStrides(kept).map((s, i) => (kept[i] === 1 && inShape[i] !== 1 ? 0 : s));
  const ex = wrap(N().view(gk.handle, inShape, strides, 0));
  return wrap(N().contiguous(ex.handle));
}

function contiguousStrides(shape: number[]): number[] {
  const st = new Array(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    st[i] = acc;
    acc *= shape[i];
  }
  return st;
}

export function reduce(op: 'sum' | 'mean' | 'max' | 'min', x: Tensor, dim?: number | number[], keepdim = false): Tensor {
  const dims = resolveDims(x, dim, op);
  const y = wrap(N().reduce(op as ReduceOp, x.handle, dims, keepdim));
  const inShape = x.shape;
  record(op, [x], [y], ([g]) => {
    if (op === 'sum') return [expandBack(g!, inShape, dims)];
    if (op === 'mean') {
      const count = dims.reduce((a, d) => a * inShape[d], 1);
      return [wrap(N().scalarOp('div', expandBack(g!, inShape, dims).handle, count))];
    }
    // max/min: the gradient is shared evenly among the elements equal to the extremum.
    const yk = expandBack(y, inShape, dims);
    const eq = wrap(N().binary('eq', x.handle, yk.handle));
    const mask = wrap(N().cast(eq.handle, x.dtype));
    const count = wrap(N().reduce('sum', mask.handle, dims, true));
    const share = wrap(N().binary('div', mask.handle, count.handle));
    return [wrap(N().binary('mul', share.handle, expandBack(g!, inShape, dims).handle))];
  });
  return y;
}

export function argmax(x: Tensor, dim = -1, keepdim = false): Tensor {
  return wrap(N().argmax(x.handle, normDim(dim, x.ndim, 'argmax'), keepdim));
}

/** p-norm: p = 2 (default), 1 or Infinity, over dims or all elements. */
export function norm(x: Tensor, p: number = 2, dim?: number | number[], keepdim = false): Tensor {
  const dims = resolveDims(x, dim, 'norm');
  const inShape = x.shape;
  if (p === 2) {
    const ss = wrap(N().reduce('sumsq', x.handle, dims, keepdim));
    const y = wrap(N().unary('sqrt', ss.handle));
    ss.dispose();
    record('norm2', [x], [y], ([g]) => {
      // d||x||/dx = x / ||x|| (0 where the norm is 0)
      const yk = expandBack(y, inShape, dims);
      const gk = expandBack(g!, inShape, dims);
      const zero = wrap(N().full([], 0, x.dtype, x.device));
      const isZero = wrap(N().scalarOp('eq', yk.handle, 0));
      const ratio = wrap(N().binary('div', gk.handle, yk.handle));
      const safe = wrap(N().where(isZero.handle, zero.handle, ratio.handle));
      return [wrap(N().binary('mul', safe.handle, x.handle))];
    });
    return y;
  }
  if (p === 1) {
    const ax = wrap(N().unary('abs', x.handle));
    const out = wrap(N().reduce('sum', ax.handle, dims, keepdim));
    ax.dispose();
    record('norm1', [x], [out], ([g]) => {
      const sg = wrap(N().unary('sign', x.handle));
      return [wrap(N().binary('mul', sg.handle, expandBack(g!, inShape, dims).handle))];
    });
    return out;
  }
  if (p === Infinity) {
    const y = wrap(N().reduce('absmax', x.handle, dims, keepdim));
    record('normInf', [x], [y], ([g]) => {
      const ax = wrap(N().unary('abs', x.handle));
      const yk = expandBack(y, inShape, dims);
      const eq = wrap(N().binary('eq', ax.handle, yk.handle));
      const mask = wrap(N().cast(eq.handle, x.dtype));
      const count = wrap(N().reduce('sum', mask.handle, dims, true));
      const share = wrap(N().binary('div', mask.handle, count.handle));
      const sg = wrap(N().unary('sign', x.handle));
      const signed = wrap(N().binary('mul', share.handle, sg.handle));
      return [wrap(N().binary('mul', signed.handle, expandBack(g!, inShape, dims).handle))];
    });
    return y;
  }
  throw new SiftError('E_ARG', `norm: p must be 1, 2 or Infinity, got ${p}`);
}
