/** Creating tensors: from JavaScript data, constants, seeded random numbers, ranges. */
import { Tensor } from '../engine/tensor';
import { DType, normalizeDevice, parseDType, isFloat } from '../engine/dtype';
import { SiftError, check } from '../engine/errors';
import { N, wrap } from './util';

export interface TensorOptions {
  dtype?: DType | string;
  device?: string;
  requiresGrad?: boolean;
}

type NestedNumbers = number | boolean | bigint | NestedNumbers[];
export type TensorData =
  | NestedNumbers[]
  | number
  | Float32Array
  | Float64Array
  | Int32Array
  | BigInt64Array
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array;

function inferShape(data: unknown): number[] {
  const shape: number[] = [];
  let cur: unknown = data;
  while (Array.isArray(cur)) {
    shape.push(cur.length);
    cur = cur[0];
  }
  return shape;
}

function flatten(data: unknown, shape: number[], out: (number | bigint)[], depth = 0): void {
  if (depth === shape.length) {
    if (typeof data === 'boolean') out.push(data ? 1 : 0);
    else if (typeof data === 'number' || typeof data === 'bigint') out.push(data);
    else throw new SiftError('E_ARG', `tensor(): expected a number, got ${typeof data}`);
    return;
  }
  if (!Array.isArray(data) || data.length !== shape[depth]) {
    throw new SiftError('E_SHAPE', `tensor(): ragged nested array (expected length ${shape[depth]} at depth ${depth})`);
  }
  for (const v of data) flatten(v, shape, out, depth + 1);
}

function defaultDType(data: unknown): DType {
  if (data instanceof Float64Array) return 'f64';
  if (data instanceof Int32Array) return 'i32';
  if (data instanceof BigInt64Array) return 'i64';
  if (data instanceof Uint8Array) return 'bool';
  return 'f32';
}

function hostArray(values: ArrayLike<number | bigint>, dtype: DType): ArrayBufferView {
  const n = values.length;
  switch (dtype) {
    case 'f64':
      return Float64Array.from(values as ArrayLike<number>, Number);
    case 'i32':
      return Int32Array.from(values as ArrayLike<number>, Number);
    case 'i64': {
      const a = new BigInt64Array(n);
      for (let i = 0; i < n; i++) {
        const v = values[i];
        a[i] = typeof v === 'bigint' ? v : BigInt(Math.trunc(Number(v)));
      }
      return a;
    }
    case 'bool':
      return Uint8Array.from(values as ArrayLike<number>, (v) => (Number(v) !== 0 ? 1 : 0));
    default:
      return Float32Array.from(values as ArrayLike<number>, Number); // f32; f16/bf16 cast after upload
  }
}

/** A tensor from JavaScript data (nested arrays, a flat array with a shape, or a typed array). */
export function tensor(data: TensorData, shape?: number[], opts: TensorOptions = {}): Tensor {
  const dtype = opts.dtype ? parseDType(opts.dtype) : defaultDType(data);
  const device = normalizeDevice(opts.device ?? 'cpu');
  let flat: ArrayLike<number | bigint>;
  let inferred: number[];
  if (typeof data === 'number') {
    flat = [data];
    inferred = [];
  } else if (ArrayBuffer.isView(data)) {
    flat = data as ArrayLike<number | bigint>;
    inferred = [flat.length];
  } else {
    inferred = inferShape(data);
    const out: (number | bigint)[] = [];
    flatten(data, inferred, out);
    flat = out;
  }
  const finalShape = shape ?? inferred;
  const numel = finalShape.reduce((a, b) => a * b, 1);
  check(
    finalShape.every((d) => Number.isInteger(d) && d >= 0),
    'E_SHAPE',
    `tensor(): invalid shape [${finalShape}]`,
  );
  check(numel === flat.length, 'E_SHAPE', `tensor(): ${flat.length} values do not fill shape [${finalShape}] (${numel} elements)`);
  let t: Tensor;
  if (dtype === 'f16' || dtype === 'bf16') {
    const h = N().fromBuffer(hostArray(flat, 'f32'), finalShape, 'f32', device);
    t = wrap(N().cast(h, dtype));
    N().dispose(h);
  } else {
    const sameType =
      (dtype === 'f32' && data instanceof Float32Array) ||
      (dtype === 'f64' && data instanceof Float64Array) ||
      (dtype === 'i32' && data instanceof Int32Array) ||
      (dtype === 'i64' && data instanceof BigInt64Array) ||
      (dtype === 'bool' && data instanceof Uint8Array);
    const view: ArrayBufferView = sameType ? (data as ArrayBufferView) : hostArray(flat, dtype);
    t = wrap(N().fromBuffer(view, finalShape, dtype, device));
  }
  if (opts.requiresGrad) t.requiresGrad_(true);
  return t;
}

function finish(t: Tensor, opts: TensorOptions): Tensor {
  if (opts.requiresGrad) t.requiresGrad_(true);
  return t;
}

function resolve(opts: TensorOptions): { dtype: DType; device: string } {
  return { dtype: opts.dtype ? parseDType(opts.dtype) : 'f32', device: normalizeDevice(opts.device ?? 'cpu') };
}

function checkShape(shape: number[], op: string): void {
  check(Array.isArray(shape) && shape.every((d) => Number.isInteger(d) && d >= 0), 'E_SHAPE', `${op}: invalid shape [${shape}]`);
}

let shapeOnlyDepth = 0;

/**
 * Runs fn with shape-only creation: full, zeros, ones, randn and rand return a one-element buffer
 * viewed (stride 0) as the requested shape, so a module tree of any size is built with its real
 * parameter shapes and dtypes in a few bytes per parameter (what `sift-ft plan` measures). Values
 * are meaningless; nothing built this way may be trained or evaluated.
 */
export function shapeOnly<T>(fn: () => T): T {
  shapeOnlyDepth++;
  try {
    return fn();
  } finally {
    shapeOnlyDepth--;
  }
}

/** Whether creation is shape-only (inside shapeOnly()). */
export function isShapeOnly(): boolean {
  return shapeOnlyDepth > 0;
}

function placeholder(shape: number[], dtype: DType, device: string): Tensor {
  const one = N().full([1], 0, dtype, device);
  const h = N().view(
    one,
    shape,
    shape.map(() => 0),
    0,
  );
  N().dispose(one);
  return wrap(h);
}

export function full(shape: number[], value: number, opts: TensorOptions = {}): Tensor {
  checkShape(shape, 'full');
  const { dtype, device } = resolve(opts);
  if (shapeOnlyDepth > 0) return finish(placeholder(shape, dtype, device), opts);
  return finish(wrap(N().full(shape, value, dtype, device)), opts);
}

export function zeros(shape: number[], opts: TensorOptions = {}): Tensor {
  return full(shape, 0, opts);
}

export function ones(shape: number[], opts: TensorOptions = {}): Tensor {
  return full(shape, 1, opts);
}

export function zerosLike(t: Tensor, opts: TensorOptions = {}): Tensor {
  return full(t.shape, 0, { dtype: t.dtype, device: t.device, ...opts });
}

export function onesLike(t: Tensor, opts: TensorOptions = {}): Tensor {
  return full(t.shape, 1, { dtype: t.dtype, device: t.device, ...opts });
}

export interface RandomOptions extends TensorOptions {
  /** Seed of the counter-based generator: the same seed gives the same numbers on every device. */
  seed?: number | bigint;
}

let autoSeed = 0x5157;
/** Sets the seed from which unseeded random ops (randn, rand, dropout) draw their keys. */
export function manualSeed(seed: number): void {
  autoSeed = seed * 0x10001 + 0x5157;
}
/** The next key for an unseeded random op. */
export function drawSeed(): number {
  autoSeed = (autoSeed + 1) % 0x1fffffffffffff;
  return autoSeed;
}
/** Where the draws of drawSeed() stand (checkpoint() saves it to replay a block's dropout masks). */
export function getSeedState(): number {
  return autoSeed;
}
/** Puts the draws of drawSeed() back where getSeedState() saw them. */
export function setSeedState(state: number): void {
  check(Number.isSafeInteger(state), 'E_ARG', `setSeedState: expected a state from getSeedState(), got ${state}`);
  autoSeed = state;
}
function nextSeed(opts: RandomOptions): number | bigint {
  return opts.seed ?? drawSeed();
}

/** Standard normal samples. */
export function randn(shape: number[], opts: RandomOptions = {}): Tensor {
  checkShape(shape, 'randn');
  const { dtype, device } = resolve(opts);
  check(isFloat(dtype), 'E_DTYPE', `randn: dtype must be floating-point, got ${dtype}`);
  if (shapeOnlyDepth > 0) return finish(placeholder(shape, dtype, device), opts);
  return finish(wrap(N().randn(shape, dtype, device, nextSeed(opts))), opts);
}

/** Uniform samples in [0, 1). */
export function rand(shape: number[], opts: RandomOptions = {}): Tensor {
  checkShape(shape, 'rand');
  const { dtype, device } = resolve(opts);
  check(isFloat(dtype), 'E_DTYPE', `rand: dtype must be floating-point, got ${dtype}`);
  if (shapeOnlyDepth > 0) return finish(placeholder(shape, dtype, device), opts);
  return finish(wrap(N().rand(shape, dtype, device, nextSeed(opts))), opts);
}

/** start, start + step, ... below end (like torch.arange); integer dtype i64 by default. */
export function arange(start: number, end?: number, step = 1, opts: TensorOptions = {}): Tensor {
  if (end === undefined) {
    end = start;
    start = 0;
  }
  const dtype = opts.dtype ? parseDType(opts.dtype) : 'i64';
  const device = normalizeDevice(opts.device ?? 'cpu');
  return finish(wrap(N().arange(start, end, step, dtype, device)), opts);
}
