/**
 * Elementwise ops with NumPy broadcasting. Operands must share a dtype (numbers adopt the
 * tensor's). Gradients of broadcast operands are summed back to their shapes.
 */
import { Tensor } from '../engine/tensor';
import type { BinaryOp, ScalarOp, UnaryOp } from '../engine/addon-types';
import { SiftError, check } from '../engine/errors';
import { record } from './tape';
import { N, wrap, fresh, sumToShape, broadcastShapes, sameShape } from './util';

function checkPair(a: Tensor, b: Tensor, op: string): void {
  if (a.dtype !== b.dtype) throw new SiftError('E_DTYPE', `${op}: dtypes differ (${a.dtype} and ${b.dtype}); cast one with .to()`);
  if (a.device !== b.device) throw new SiftError('E_DEVICE', `${op}: tensors on different devices (${a.device} and ${b.device})`);
  if (!sameShape(a.shape, b.shape)) broadcastShapes(a.shape, b.shape, op);
}

const COMPARISONS = new Set<string>(['eq', 'ne', 'lt', 'le', 'gt', 'ge']);

// The native ops allocate their outputs (contiguous, offset 0): shape, dtype and device are known.
function binaryRaw(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
  const h = N().binary(op, a.handle, b.handle);
  const as = a.shape,
    bs = b.shape;
  return fresh(h, sameShape(as, bs) ? as : broadcastShapes(as, bs, op), COMPARISONS.has(op) ? 'bool' : a.dtype, a.device);
}

function scalarRaw(op: ScalarOp, a: Tensor, s: number): Tensor {
  return fresh(N().scalarOp(op, a.handle, s), a.shape, COMPARISONS.has(op) ? 'bool' : a.dtype, a.device);
}

function unaryRaw(op: UnaryOp, x: Tensor): Tensor {
  return fresh(N().unary(op, x.handle), x.shape, x.dtype, x.device);
}

export function add(a: Tensor, b: Tensor | number): Tensor {
  if (typeof b === 'number') {
    const y = scalarRaw('add', a, b);
    record('add', [a], [y], ([g]) => [g]);
    return y;
  }
  checkPair(a, b, 'add');
  const y = binaryRaw('add', a, b);
  const as = a.shape,
    bs = b.shape;
  record('add', [a, b], [y], ([g]) => [a.requiresGrad ? sumToShape(g!, as) : null, b.requiresGrad ? sumToShape(g!, bs) : null]);
  return y;
}

export function sub(a: Tensor, b: Tensor | number): Tensor {
  if (typeof b === 'number') {
    const y = scalarRaw('sub', a, b);
    record('sub', [a], [y], ([g]) => [g]);
    return y;
  }
  checkPair(a, b, 'sub');
  const y = binaryRaw('sub', a, b);
  const as = a.shape,
    bs = b.shape;
  record('sub', [a, b], [y], ([g]) => [a.requiresGrad ? sumToShape(g!, as) : null, b.requiresGrad ? neg(sumToShape(g!, bs)) : null]);
  return y;
}

export function mul(a: Tensor, b: Tensor | number): Tensor {
  if (typeof b === 'number') {
    const y = scalarRaw('mul', a, b);
    record('mul', [a], [y], ([g]) => [scalarRaw('mul', g!, b)]);
    return y;
  }
  checkPair(a, b, 'mul');
  const y = binaryRaw('mul', a, b);
  const as = a.shape,
    bs = b.shape;
  record('mul', [a, b], [y], ([g]) => [
    a.requiresGrad ? sumToShape(binaryRaw('mul', g!, b), as) : null,
    b.requiresGrad ? sumToShape(binaryRaw('mul', g!, a), bs) : null,
  ]);
  return y;
}

export function div(a: Tensor, b: Tensor | number): Tensor {
  if (typeof b === 'number') {
    const y = scalarRaw('div', a, b);
    record('div', [a], [y], ([g]) => [scalarRaw('div', g!, b)]);
    return y;
  }
  checkPair(a, b, 'div');
  const y = binaryRaw('div', a, b);
  const as = a.shape,
    bs = b.shape;
  record('div', [a, b], [y], ([g]) => {
    const ga = a.requiresGrad || b.requiresGrad ? binaryRaw('div', g!, b) : null; // g / b
    return [
      a.requiresGrad ? sumToShape(ga!, as) : null,
      // d(a/b)/db = -(a/b)/b = -y/b  ->  -(g/b) * y
      b.requiresGrad ? sumToShape(scalarRaw('mul', binaryRaw('mul', ga!, y), -1), bs) : null,
    ];
  });
  return y;
}

export function pow(a: Tensor, b: Tensor | number): Tensor {
  if (typeof b === 'number') {
    const y = scalarRaw('pow', a, b);
    record('pow', [a], [y], ([g]) => [binaryRaw('mul', g!, scalarRaw('mul', scalarRaw('pow', a, b - 1), b))]);
    return y;
  }
  checkPair(a, b, 'pow');
  const y = binaryRaw('pow', a, b);
  const as = a.shape,
    bs = b.shape;
  record('pow', [a, b], [y], ([g]) => [
    a.requiresGrad ? sumToShape(binaryRaw('mul', g!, binaryRaw('mul', b, binaryRaw('pow', a, scalarRaw('sub', b, 1)))), as) : null,
    b.requiresGrad ? sumToShape(binaryRaw('mul', g!, binaryRaw('mul', y, unaryRaw('log', a))), bs) : null,
  ]);
  return y;
}

/** Scalar on the left: s - a, s / a, s ** a. */
export function rsub(s: number, a: Tensor): Tensor {
  const y = scalarRaw('rsub', a, s);
  record('rsub', [a], [y], ([g]) => [unaryRaw('neg', g!)]);
  return y;
}

export function rdiv(s: number, a: Tensor): Tensor {
  const y = scalarRaw('rdiv', a, s);
  // d(s/a)/da = -s/a^2 = -y/a
  record('rdiv', [a], [y], ([g]) => [scalarRaw('mul', binaryRaw('mul', g!, binaryRaw('div', y, a)), -1)]);
  return y;
}

function minmax(op: 'maximum' | 'minimum', a: Tensor, b: Tensor | number): Tensor {
  const bt = typeof b === 'number' ? null : b;
  if (bt) checkPair(a, bt, op);
  const y = bt ? binaryRaw(op, a, bt) : scalarRaw(op, a, b as number);
  const as = a.shape;
  record(op, [a, bt], [y], ([g]) => {
    // The gradient goes to the operand that won; ties split it evenly (as PyTorch does).
    const win = op === 'maximum' ? 'gt' : 'lt';
    const res: (Tensor | null)[] = [null, null];
    const other = bt ?? null;
    const winA = other ? binaryRaw(win, a, other) : scalarRaw(win, a, b as number);
    const tie = other ? binaryRaw('eq', a, other) : scalarRaw('eq', a, b as number);
    const wA = binaryRaw('add', wrap(N().cast(winA.handle, a.dtype)), scalarRaw('mul', wrap(N().cast(tie.handle, a.dtype)), 0.5));
    if (a.requiresGrad) res[0] = sumToShape(binaryRaw('mul', g!, wA), as);
    if (bt && bt.requiresGrad) res[1] = sumToShape(binaryRaw('mul', g!, scalarRaw('rsub', wA, 1)), bt.shape);
    return res;
  });
  return y;
}

export function maximum(a: Tensor, b: Tensor | number): Tensor {
  return minmax('maximum', a, b);
}

export function minimum(a: Tensor, b: Tensor | number): Tensor {
  return minmax('minimum', a, b);
}

/** Comparisons give bool tensors (no gradient). */
export function compare(op: 'eq' | 'ne' | 'lt' | 'le' | 'gt' | 'ge', a: Tensor, b: Tensor | number): Tensor {
  if (typeof b === 'number') return scalarRaw(op, a, b);
  checkPair(a, b, op);
  return binaryRaw(op, a, b);
}

/** cond ? a : b, broadcasting all three; cond is bool (or any dtype: nonzero is true). */
export function where(cond: Tensor, a: Tensor, b: Tensor): Tensor {
  checkPair(a, b, 'where');
  check(cond.device === a.device, 'E_DEVICE', `where: condition on ${cond.device}, values on ${a.device}`);
  const y = wrap(N().where(cond.handle, a.handle, b.handle));
  const as = a.shape,
    bs = b.shape;
  record('where', [a, b], [y], ([g]) => {
    const zero = wrap(N().full([], 0, g!.dtype, g!.device));
    return [
      a.requiresGrad ? sumToShape(wrap(N().where(cond.handle, g!.handle, zero.handle)), as) : null,
      b.requiresGrad ? sumToShape(wrap(N().where(cond.handle, zero.handle, g!.handle)), bs) : null,
    ];
  });
  return y;
}

function unaryOp(op: UnaryOp, x: Tensor): Tensor {
  const y = unaryRaw(op, x);
  record(op, [x], [y], ([g]) => [fresh(N().unaryBackward(op, x.handle, y.handle, g!.handle), x.shape, x.dtype, x.device)]);
  return y;
}

export const neg = (x: Tensor) => unaryOp('neg', x);
export const exp = (x: Tensor) => unaryOp('exp', x);
export const log = (x: Tensor) => unaryOp('log', x);
export const tanh = (x: Tensor) => unaryOp('tanh', x);
export const relu = (x: Tensor) => unaryOp('relu', x);
export const silu = (x: Tensor) => unaryOp('silu', x);
export const sigmoid = (x: Tensor) => unaryOp('sigmoid', x);
export const sqrt = (x: Tensor) => unaryOp('sqrt', x);
export const rsqrt = (x: Tensor) => unaryOp('rsqrt', x);
export const abs = (x: Tensor) => unaryOp('abs', x);
export const square = (x: Tensor) => unaryOp('square', x);
export const reciprocal = (x: Tensor) => unaryOp('reciprocal', x);
export const sin = (x: Tensor) => unaryOp('sin', x);
export const cos = (x: Tensor) => unaryOp('cos', x);
export const erf = (x: Tensor) => unaryOp('erf', x);
export const sign = (x: Tensor) => unaryRaw('sign', x);

/** GELU: exact erf form by default (PyTorch's), or the tanh approximation (GPT-2's gelu_new). */
export function gelu(x: Tensor, approximate: 'none' | 'tanh' = 'none'): Tensor {
  if (approximate !== 'none' && approximate !== 'tanh')
    throw new SiftError('E_ARG', `gelu: approximate must be 'none' or 'tanh', got '${approximate}'`);
  return unaryOp(approximate === 'tanh' ? 'gelu_tanh' : 'gelu', x);
}
