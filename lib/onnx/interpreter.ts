/**
 * The ONNX interpreter: each node mapped to the engine's autograd ops (so the backward comes from
 * the tape) when a value may carry a gradient, or evaluated on the host (host.ts) when its inputs
 * are constants, ids, masks or shapes. Engine values are always floating point: integer and
 * boolean results live on the host, where reading them costs nothing.
 */
import { Tensor } from '../engine/tensor';
import { SiftError } from '../engine/errors';
import { DType, isFloat } from '../engine/dtype';
import { tensor } from '../autograd/creation';
import * as E from '../autograd/elementwise';
import { reshape, permute, squeeze, slice, split, concat, expand, cast, contiguous } from '../autograd/shape';
import { reduce } from '../autograd/reduce';
import { matmul, linear } from '../autograd/matmul';
import { softmax, logSoftmax, layerNorm, rmsNorm, embedding } from '../autograd/nn';
import {
  Host,
  HostDType,
  host,
  isHost,
  isFloatHost,
  mapN,
  expandTo,
  transposeHost,
  sliceHost,
  concatHost,
  gatherHost,
  reduceHost,
  matmulHost,
  broadcastShapes,
  numel,
  checkSize,
  stridesOf,
} from './host';
import { OnnxNode, hostDTypeOf } from './graph';

export type Value = Tensor | Host;

export interface RunContext {
  device: string;
  opset: number;
  /** Float dtype for host constants meeting engine values when no engine operand says otherwise. */
  floatDType: DType;
}

type OpFn = (n: OnnxNode, ins: (Value | undefined)[], c: RunContext) => (Value | undefined)[];

// ---- helpers

function fail(n: OnnxNode, code: 'E_FORMAT' | 'E_UNSUPPORTED' | 'E_SHAPE', msg: string): never {
  throw new SiftError(code, `ONNX node '${n.name}' (${n.op}): ${msg}`);
}

function attrInt(n: OnnxNode, k: string, d: number): number {
  const v = n.attrs.get(k);
  if (v === undefined) return d;
  if (typeof v !== 'number') fail(n, 'E_FORMAT', `attribute '${k}' must be an int`);
  return v;
}

function attrFloat(n: OnnxNode, k: string, d: number): number {
  return attrInt(n, k, d);
}

function attrInts(n: OnnxNode, k: string): number[] | undefined {
  const v = n.attrs.get(k);
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'number')) fail(n, 'E_FORMAT', `attribute '${k}' must be a list of ints`);
  return v as number[];
}

function attrStr(n: OnnxNode, k: string, d: string): string {
  const v = n.attrs.get(k);
  return typeof v === 'string' ? v : d;
}

function need(n: OnnxNode, ins: (Value | undefined)[], i: number): Value {
  const v = ins[i];
  if (v === undefined) fail(n, 'E_FORMAT', `input ${i} is missing`);
  return v;
}

function shapeOf(v: Value): number[] {
  return isHost(v) ? v.shape : v.shape;
}

function hostDTypeOfEngine(d: DType): HostDType {
  if (d === 'f64') return 'f64';
  if (d === 'i64') return 'i64';
  if (d === 'i32') return 'i32';
  if (d === 'bool') return 'bool';
  return 'f32';
}

export function toHost(v: Value, what = 'value'): Host {
  if (isHost(v)) return v;
  checkSize(v.shape, what);
  const a = v.toArray() as ArrayLike<number | bigint>;
  return host(hostDTypeOfEngine(v.dtype), v.shape, Array.from(a, Number), what);
}

export function toEngine(v: Value, c: RunContext, floatDType?: DType): Tensor {
  if (!isHost(v)) return v;
  if (isFloatHost(v.dtype)) {
    const dt = floatDType ?? (v.dtype === 'f64' ? 'f64' : c.floatDType);
    return tensor(dt === 'f64' ? v.data : Float32Array.from(v.data), v.shape, { dtype: dt, device: c.device });
  }
  if (v.dtype === 'bool') return tensor(Uint8Array.from(v.data), v.shape, { dtype: 'bool', device: c.device });
  return tensor(
    BigInt64Array.from(v.data, (x) => BigInt(x)),
    v.shape,
    { dtype: 'i64', device: c.device },
  );
}

/** Integers listed by a host input (shapes, axes, indices). */
function ints(n: OnnxNode, v: Value | undefined, what: string): number[] {
  if (v === undefined) fail(n, 'E_FORMAT', `${what} is missing`);
  if (!isHost(v)) fail(n, 'E_UNSUPPORTED', `${what} must be a constant or computed from shapes and ids, not from weights`);
  return Array.from(v.data);
}

function normAxis(n: OnnxNode, a: number, r: number): number {
  const x = a < 0 ? a + r : a;
  if (!(x >= 0 && x < Math.max(r, 1))) fail(n, 'E_FORMAT', `axis ${a} out of range for rank ${r}`);
  return x;
}

function engineFloat(ins: (Value | undefined)[]): DType | undefined {
  for (const v of ins) if (v && !isHost(v)) return v.dtype;
  return undefined;
}

// ---- op families

const HOST_UNARY: Record<string, (x: number) => number> = {
  Neg: (x) => -x,
  Abs: Math.abs,
  Sqrt: Math.sqrt,
  Exp: Math.exp,
  Log: Math.log,
  Tanh: Math.tanh,
  Sin: Math.sin,
  Cos: Math.cos,
  Reciprocal: (x) => 1 / x,
  Sigmoid: (x) => 1 / (1 + Math.exp(-x)),
  Relu: (x) => Math.max(0, x),
  Erf: erfHost,
  Floor: Math.floor,
  Ceil: Math.ceil,
  Round: roundHalfEven,
  Sign: Math.sign,
  Not: (x) => (x ? 0 : 1),
  IsNaN: (x) => (Number.isNaN(x) ? 1 : 0),
  IsInf: (x) => (x === Infinity || x === -Infinity ? 1 : 0),
};

const ENGINE_UNARY: Record<string, (x: Tensor) => Tensor> = {
  Neg: E.neg,
  Abs: E.abs,
  Sqrt: E.sqrt,
  Exp: E.exp,
  Log: E.log,
  Tanh: E.tanh,
  Sin: E.sin,
  Cos: E.cos,
  Reciprocal: E.reciprocal,
  Sigmoid: E.sigmoid,
  Relu: E.relu,
  Erf: E.erf,
};

function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function erfHost(x: number): number {
  // Abramowitz-Stegun 7.1.26 (absolute error under 1.5e-7): host erf only meets constants.
  const s = Math.sign(x);
  const a = Math.abs(x);
  const t = 1 / (1 + 0.3275911 * a);
  const y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-a * a);
  return s * y;
}

const HOST_BINARY: Record<string, (a: number, b: number) => number> = {
  Add: (a, b) => a + b,
  Sub: (a, b) => a - b,
  Mul: (a, b) => a * b,
  Div: (a, b) => a / b,
  Pow: (a, b) => a ** b,
  Max: Math.max,
  Min: Math.min,
  Mod: (a, b) => a - Math.floor(a / b) * b,
  Equal: (a, b) => (a === b ? 1 : 0),
  Less: (a, b) => (a < b ? 1 : 0),
  Greater: (a, b) => (a > b ? 1 : 0),
  LessOrEqual: (a, b) => (a <= b ? 1 : 0),
  GreaterOrEqual: (a, b) => (a >= b ? 1 : 0),
  And: (a, b) => (a && b ? 1 : 0),
  Or: (a, b) => (a || b ? 1 : 0),
  Xor: (a, b) => (a ? 1 : 0) ^ (b ? 1 : 0),
  BitwiseAnd: (a, b) => Number(BigInt(a) & BigInt(b)),
};
const COMPARE = new Set(['Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'And', 'Or', 'Xor']);

function hostBinary(op: string, a: Host, b: Host, n: OnnxNode): Host {
  const f = HOST_BINARY[op];
  const dtype: HostDType = COMPARE.has(op) ? 'bool' : a.dtype;
  let fn = f;
  if (op === 'Div' && !isFloatHost(a.dtype)) fn = (x, y) => Math.trunc(x / y);
  if (op === 'Mod' && !isFloatHost(a.dtype) && attrInt(n, 'fmod', 0) === 0) fn = (x, y) => x - Math.floor(x / y) * y;
  return mapN([a, b], dtype, fn, n.op);
}

function engineBinary(op: string, a: Value, b: Value, c: RunContext): Tensor {
  const dt = engineFloat([a, b])!;
  const scalar = (v: Value) =>
    isHost(v) && numel(v.shape) === 1 && v.shape.length <= Math.max((isHost(a) ? b : a).shape.length, 0) ? v.data[0] : null;
  const sa = scalar(a);
  const sb = scalar(b);
  if (sb !== null && !isHost(a)) {
    switch (op) {
      case 'Add':
        return E.add(a, sb);
      case 'Sub':
        return E.sub(a, sb);
      case 'Mul':
        return E.mul(a, sb);
      case 'Div':
        return E.div(a, sb);
      case 'Pow':
        return E.pow(a, sb);
      case 'Max':
        return E.maximum(a, sb);
      case 'Min':
        return E.minimum(a, sb);
    }
  }
  if (sa !== null && !isHost(b)) {
    switch (op) {
      case 'Add':
        return E.add(b, sa);
      case 'Mul':
        return E.mul(b, sa);
      case 'Sub':
        return E.rsub(sa, b);
      case 'Div':
        return E.rdiv(sa, b);
      case 'Max':
        return E.maximum(b, sa);
      case 'Min':
        return E.minimum(b, sa);
    }
  }
  const ta = toEngine(a, c, dt);
  const tb = toEngine(b, c, dt);
  switch (op) {
    case 'Add':
      return E.add(ta, tb);
    case 'Sub':
      return E.sub(ta, tb);
    case 'Mul':
      return E.mul(ta, tb);
    case 'Div':
      return E.div(ta, tb);
    case 'Pow':
      return E.pow(ta, tb);
    case 'Max':
      return E.maximum(ta, tb);
    case 'Min':
      return E.minimum(ta, tb);
  }
  throw new SiftError('E_UNSUPPORTED', `ONNX ${op} on weights`);
}

function castTarget(to: number): HostDType | null {
  if (to === 1 || to === 10 || to === 16) return 'f32';
  if (to === 11) return 'f64';
  if (to === 9) return 'bool';
  if (to === 6 || to === 7 || to === 2 || to === 3 || to === 4 || to === 5 || to === 12 || to === 13) return hostDTypeOf(to);
  return null;
}

function axesFrom(n: OnnxNode, ins: (Value | undefined)[], idx: number): number[] | undefined {
  if (ins[idx] !== undefined) return ints(n, ins[idx], 'axes');
  return attrInts(n, 'axes');
}

function reshapeTarget(n: OnnxNode, inShape: number[], spec: number[]): number[] {
  const allowzero = attrInt(n, 'allowzero', 0);
  const out = spec.map((d, i) => (d === 0 && !allowzero ? inShape[i] : d));
  const total = numel(inShape);
  const neg = out.filter((d) => d === -1).length;
  if (neg > 1 || out.some((d) => d === undefined || d < -1 || !Number.isSafeInteger(d)))
    fail(n, 'E_FORMAT', `invalid shape [${spec}] for [${inShape}]`);
  if (neg === 1) {
    const known = out.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
    if (known === 0 || total % known !== 0) fail(n, 'E_SHAPE', `cannot reshape [${inShape}] to [${spec}]`);
    out[out.indexOf(-1)] = total / known;
  }
  if (numel(out) !== total) fail(n, 'E_SHAPE', `cannot reshape [${inShape}] to [${spec}]`);
  return out;
}

function unsqueezeShape(n: OnnxNode, shape: number[], axes: number[]): number[] {
  const r = shape.length + axes.length;
  const norm = axes.map((a) => normAxis(n, a, r)).sort((a, b) => a - b);
  const out = [...shape];
  for (const a of norm) out.splice(a, 0, 1);
  return out;
}

function squeezeAxes(n: OnnxNode, shape: number[], axes: number[] | undefined): number[] {
  const ax =
    axes && axes.length ? axes.map((a) => normAxis(n, a, shape.length)) : shape.map((d, i) => (d === 1 ? i : -1)).filter((i) => i >= 0);
  for (const a of ax) if (shape[a] !== 1) fail(n, 'E_SHAPE', `cannot squeeze axis ${a} of [${shape}]`);
  return ax;
}

function sliceParams(
  n: OnnxNode,
  ins: (Value | undefined)[],
  shape: number[],
): { starts: number[]; ends: number[]; axes: number[]; steps: number[] } {
  let starts: number[];
  let ends: number[];
  let axes: number[] | undefined;
  let steps: number[] | undefined;
  if (c_opsetSlice(n, ins)) {
    starts = ints(n, ins[1], 'starts');
    ends = ints(n, ins[2], 'ends');
    axes = ins[3] !== undefined ? ints(n, ins[3], 'axes') : undefined;
    steps = ins[4] !== undefined ? ints(n, ins[4], 'steps') : undefined;
  } else {
    starts = attrInts(n, 'starts') ?? [];
    ends = attrInts(n, 'ends') ?? [];
    axes = attrInts(n, 'axes');
  }
  const ax = (axes ?? starts.map((_, i) => i)).map((a) => normAxis(n, a, shape.length));
  if (starts.length !== ends.length || ax.length !== starts.length) fail(n, 'E_FORMAT', 'starts, ends and axes differ in length');
  return { starts, ends, axes: ax, steps: steps ?? starts.map(() => 1) };
}

function c_opsetSlice(_n: OnnxNode, ins: (Value | undefined)[]): boolean {
  return ins.length > 1;
}

function triMask(rows: number, cols: number, k: number, upper: boolean): Host {
  const m = host('f32', [rows, cols]);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) m.data[i * cols + j] = (upper ? j - i >= k : j - i <= k) ? 1 : 0;
  return m;
}

function gatherEngine(n: OnnxNode, x: Tensor, idx: Host, axis: number): Tensor {
  const r = x.ndim;
  const d = x.shape[axis];
  const ids = idx.data.map((v) => (v < 0 ? v + d : v));
  for (const v of ids) if (!(v >= 0 && v < d)) fail(n, 'E_SHAPE', `index out of range for a dimension of ${d}`);
  if (idx.shape.length === 0) return squeeze(slice(x, axis, ids[0], ids[0] + 1), axis);
  const idT = tensor(
    BigInt64Array.from(ids, (v) => BigInt(v)),
    [ids.length],
    { dtype: 'i64', device: x.device },
  );
  // Move `axis` first, gather rows of [d, rest], then put the index dims back at `axis`.
  const perm = [axis, ...Array.from({ length: r }, (_, i) => i).filter((i) => i !== axis)];
  const moved = axis === 0 ? x : permute(x, perm);
  const rest = moved.shape.slice(1);
  const rows = embedding(reshape(contiguous(moved), [d, numel(rest)]), idT);
  const g = reshape(rows, [...idx.shape, ...rest]);
  if (axis === 0) return g;
  const k = idx.shape.length;
  // g: [idx..., x dims except axis in order]; want [x dims before axis, idx..., after].
  const before = Array.from({ length: axis }, (_, i) => k + i);
  const idxDims = Array.from({ length: k }, (_, i) => i);
  const after = Array.from({ length: r - 1 - axis }, (_, i) => k + axis + i);
  return permute(g, [...before, ...idxDims, ...after]);
}

function constantValue(n: OnnxNode): Host {
  const v = n.attrs.get('value');
  if (v && isHost(v as Host)) return v as Host;
  const f = n.attrs.get('value_float');
  if (typeof f === 'number') return host('f32', [], [f]);
  const fs = n.attrs.get('value_floats');
  if (Array.isArray(fs)) return host('f32', [fs.length], fs as number[]);
  const i = n.attrs.get('value_int');
  if (typeof i === 'number') return host('i64', [], [i]);
  const is = n.attrs.get('value_ints');
  if (Array.isArray(is)) return host('i64', [is.length], is as number[]);
  return fail(n, 'E_UNSUPPORTED', 'only tensor, float(s) and int(s) constants are supported');
}

// ---- the table

const unary: OpFn = (n, ins) => {
  const x = need(n, ins, 0);
  if (isHost(x)) {
    const bool = n.op === 'Not' || n.op === 'IsNaN' || n.op === 'IsInf';
    return [mapN([x], bool ? 'bool' : x.dtype, HOST_UNARY[n.op], n.op)];
  }
  const f = ENGINE_UNARY[n.op];
  if (!f) return [mapN([toHost(x)], n.op === 'Not' || n.op.startsWith('Is') ? 'bool' : 'f32', HOST_UNARY[n.op], n.op)];
  return [f(x)];
};

const binary: OpFn = (n, ins, c) => {
  const vals = ins.filter((v): v is Value => v !== undefined);
  if (vals.length < 2 && !(n.op === 'Max' || n.op === 'Min' || n.op === 'Sum')) fail(n, 'E_FORMAT', 'needs two inputs');
  const op = n.op === 'Sum' ? 'Add' : n.op;
  let acc = vals[0];
  for (let i = 1; i < vals.length; i++) {
    const b = vals[i];
    if (COMPARE.has(op) || op === 'Mod' || op === 'BitwiseAnd' || (isHost(acc) && isHost(b)))
      acc = hostBinary(op, toHost(acc), toHost(b), n);
    else acc = engineBinary(op, acc, b, c);
  }
  return [acc];
};

export const OPS: Record<string, OpFn> = {
  Identity: (n, ins) => [need(n, ins, 0)],
  Dropout: (n, ins) => {
    const x = need(n, ins, 0);
    return [x, n.outputs.length > 1 ? host('bool', shapeOf(x), new Array(numel(shapeOf(x))).fill(1), 'Dropout mask') : undefined];
  },
  Constant: (n) => [constantValue(n)],
  Shape: (n, ins) => {
    const s = shapeOf(need(n, ins, 0));
    const r = s.length;
    const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + r : v, 0), r);
    const start = clamp(attrInt(n, 'start', 0));
    const end = clamp(attrInt(n, 'end', r));
    const part = s.slice(start, Math.max(start, end));
    return [host('i64', [part.length], part)];
  },
  Size: (n, ins) => [host('i64', [], [numel(shapeOf(need(n, ins, 0)))])],
  ConstantOfShape: (n, ins) => {
    const shape = ints(n, ins[0], 'shape');
    const v = n.attrs.get('value');
    const proto = v && isHost(v as Host) ? (v as Host) : host('f32', [1], [0]);
    const out = host(proto.dtype, shape, undefined, 'ConstantOfShape');
    out.data.fill(proto.data[0] ?? 0);
    return [out];
  },
  Range: (n, ins) => {
    const [s, l, d] = [0, 1, 2].map((i) => toHost(need(n, ins, i)));
    const start = s.data[0];
    const delta = d.data[0];
    if (!delta) fail(n, 'E_FORMAT', 'delta 0');
    const count = Math.max(Math.ceil((l.data[0] - start) / delta), 0);
    const out = host(s.dtype, [count], undefined, 'Range');
    for (let i = 0; i < count; i++) out.data[i] = start + i * delta;
    return [out];
  },
  Cast: (n, ins, c) => {
    const x = need(n, ins, 0);
    const to = attrInt(n, 'to', 0);
    const t = castTarget(to);
    if (!t) fail(n, 'E_UNSUPPORTED', `cast to data type ${to}`);
    if (!isHost(x)) {
      if (isFloatHost(t)) {
        const dt: DType = to === 10 ? 'f16' : to === 16 ? 'bf16' : to === 11 ? 'f64' : 'f32';
        return [x.dtype === dt ? x : cast(x, dt)];
      }
      return [mapN([toHost(x)], t, (v) => v, 'Cast')];
    }
    void c;
    return [mapN([x], t, (v) => (t === 'bool' ? (v ? 1 : 0) : v), 'Cast')];
  },
  Reshape: (n, ins) => {
    const x = need(n, ins, 0);
    const target = reshapeTarget(n, shapeOf(x), ints(n, ins[1], 'shape'));
    if (isHost(x)) return [{ ...x, shape: target }];
    return [reshape(x, target)];
  },
  Flatten: (n, ins) => {
    const x = need(n, ins, 0);
    const s = shapeOf(x);
    const a = attrInt(n, 'axis', 1);
    const ax = a < 0 ? a + s.length : a;
    const target = [numel(s.slice(0, ax)), numel(s.slice(ax))];
    return [isHost(x) ? { ...x, shape: target } : reshape(x, target)];
  },
  Transpose: (n, ins) => {
    const x = need(n, ins, 0);
    const r = shapeOf(x).length;
    const perm = attrInts(n, 'perm') ?? Array.from({ length: r }, (_, i) => r - 1 - i);
    if (perm.length !== r || new Set(perm).size !== r || perm.some((p) => p < 0 || p >= r))
      fail(n, 'E_FORMAT', `bad perm [${perm}] for rank ${r}`);
    return [isHost(x) ? transposeHost(x, perm) : permute(x, perm)];
  },
  Unsqueeze: (n, ins) => {
    const x = need(n, ins, 0);
    const axes = axesFrom(n, ins, 1);
    if (!axes) fail(n, 'E_FORMAT', 'no axes');
    const shape = unsqueezeShape(n, shapeOf(x), axes);
    return [isHost(x) ? { ...x, shape } : reshape(x, shape)];
  },
  Squeeze: (n, ins) => {
    const x = need(n, ins, 0);
    const s = shapeOf(x);
    const ax = squeezeAxes(n, s, axesFrom(n, ins, 1));
    const shape = s.filter((_, i) => !ax.includes(i));
    if (isHost(x)) return [{ ...x, shape }];
    let y = x;
    for (const a of [...ax].sort((p, q) => q - p)) y = squeeze(y, a);
    return [y];
  },
  Concat: (n, ins, c) => {
    const xs = ins.filter((v): v is Value => v !== undefined);
    if (!xs.length) fail(n, 'E_FORMAT', 'no inputs');
    const axis = normAxis(n, attrInt(n, 'axis', 0), shapeOf(xs[0]).length);
    if (xs.every(isHost)) return [concatHost(xs as Host[], axis)];
    const dt = engineFloat(xs);
    return [
      concat(
        xs.map((v) => toEngine(v, c, dt)),
        axis,
      ),
    ];
  },
  Slice: (n, ins) => {
    const x = need(n, ins, 0);
    const s = shapeOf(x);
    const p = sliceParams(n, ins, s);
    if (isHost(x)) return [sliceHost(x, p.starts, p.ends, p.axes, p.steps)];
    let y = x;
    p.axes.forEach((a, i) => {
      if (p.steps[i] !== 1) fail(n, 'E_UNSUPPORTED', `step ${p.steps[i]} on a tensor that needs a gradient`);
      const d = s[a];
      const cl = (v: number) => Math.min(Math.max(v < 0 ? v + d : v, 0), d);
      const st = cl(p.starts[i]);
      const en = Math.max(st, cl(p.ends[i]));
      y = slice(y, a, st, en);
    });
    return [y];
  },
  Split: (n, ins) => {
    const x = need(n, ins, 0);
    const s = shapeOf(x);
    const axis = normAxis(n, attrInt(n, 'axis', 0), s.length);
    let sizes = ins[1] !== undefined ? ints(n, ins[1], 'split') : attrInts(n, 'split');
    if (!sizes || !sizes.length) {
      const k = attrInt(n, 'num_outputs', n.outputs.length);
      const each = Math.ceil(s[axis] / k);
      sizes = Array.from({ length: k }, (_, i) => Math.max(0, Math.min(each, s[axis] - i * each)));
    }
    if (sizes.reduce((a, b) => a + b, 0) !== s[axis] || sizes.length !== n.outputs.length)
      fail(n, 'E_SHAPE', `split [${sizes}] of a dimension of ${s[axis]}`);
    if (isHost(x)) {
      let off = 0;
      return sizes.map((z) => {
        const r = sliceHost(x, [off], [off + z], [axis], [1]);
        off += z;
        return r;
      });
    }
    return split(x, sizes, axis);
  },
  Gather: (n, ins) => {
    const x = need(n, ins, 0);
    const idx = toHost(need(n, ins, 1), 'Gather indices');
    const axis = normAxis(n, attrInt(n, 'axis', 0), shapeOf(x).length);
    if (isHost(x)) return [gatherHost(x, idx, axis)];
    return [gatherEngine(n, x, idx, axis)];
  },
  Expand: (n, ins) => {
    const x = need(n, ins, 0);
    const shape = ints(n, ins[1], 'shape');
    if (isHost(x)) return [expandTo(x, shape)];
    const target = broadcastShapes([x.shape, shape], 'Expand');
    checkSize(target, 'Expand');
    const lifted = x.ndim < target.length ? reshape(x, [...new Array(target.length - x.ndim).fill(1), ...x.shape]) : x;
    return [expand(lifted, target)];
  },
  Where: (n, ins, c) => {
    const cond = toHost(need(n, ins, 0), 'Where condition');
    const a = need(n, ins, 1);
    const b = need(n, ins, 2);
    if (isHost(a) && isHost(b)) return [mapN([cond, a, b], a.dtype, (k, x, y) => (k ? x : y), 'Where')];
    const dt = engineFloat([a, b]);
    return [E.where(toEngine({ ...cond, dtype: 'bool' }, c), toEngine(a, c, dt), toEngine(b, c, dt))];
  },
  Trilu: (n, ins, c) => {
    const x = need(n, ins, 0);
    const k = ins[1] !== undefined ? ints(n, ins[1], 'k')[0] : 0;
    const s = shapeOf(x);
    if (s.length < 2) fail(n, 'E_FORMAT', 'needs rank 2 or more');
    const mask = triMask(s[s.length - 2], s[s.length - 1], k, attrInt(n, 'upper', 1) !== 0);
    if (isHost(x)) return [mapN([x, mask], x.dtype, (v, m) => (m ? v : 0), 'Trilu')];
    return [E.mul(x, toEngine(mask, c, x.dtype))];
  },
  CumSum: (n, ins) => {
    const x = need(n, ins, 0);
    if (!isHost(x)) fail(n, 'E_UNSUPPORTED', 'CumSum of a tensor that needs a gradient');
    const s = x.shape;
    const axis = normAxis(n, ints(n, ins[1], 'axis')[0], s.length);
    const excl = attrInt(n, 'exclusive', 0) !== 0;
    const rev = attrInt(n, 'reverse', 0) !== 0;
    const out = host(x.dtype, s);
    const st = stridesOf(s)[axis];
    const d = s[axis];
    for (let i = 0; i < x.data.length; i++) {
      if (Math.floor(i / st) % d !== 0) continue;
      let acc = 0;
      for (let j = 0; j < d; j++) {
        const jj = rev ? d - 1 - j : j;
        const p = i + jj * st;
        if (excl) {
          out.data[p] = acc;
          acc += x.data[p];
        } else {
          acc += x.data[p];
          out.data[p] = acc;
        }
      }
    }
    return [out];
  },
  ArgMax: (n, ins) => argReduce(n, ins, 1),
  ArgMin: (n, ins) => argReduce(n, ins, -1),
  MatMul: (n, ins, c) => {
    const a = need(n, ins, 0);
    const b = need(n, ins, 1);
    if (isHost(a) && isHost(b)) return [matmulHost(a, b)];
    const dt = engineFloat([a, b]);
    return [matmul(toEngine(a, c, dt), toEngine(b, c, dt))];
  },
  Gemm: (n, ins, c) => {
    const dt = engineFloat(ins) ?? c.floatDType;
    let a = toEngine(need(n, ins, 0), c, dt);
    let b = toEngine(need(n, ins, 1), c, dt);
    const C = ins[2] !== undefined ? toEngine(ins[2], c, dt) : null;
    const alpha = attrFloat(n, 'alpha', 1);
    const beta = attrFloat(n, 'beta', 1);
    if (attrInt(n, 'transA', 0)) a = permute(a, [1, 0]);
    let y: Tensor;
    if (attrInt(n, 'transB', 0) && alpha === 1 && beta === 1 && (!C || C.ndim === 1)) return [linear(a, b, C)];
    if (attrInt(n, 'transB', 0)) b = permute(b, [1, 0]);
    y = matmul(a, b);
    if (alpha !== 1) y = E.mul(y, alpha);
    if (C) y = E.add(y, beta === 1 ? C : E.mul(C, beta));
    return [y];
  },
  Softmax: (n, ins, c) => softmaxLike(n, ins, c, softmax),
  LogSoftmax: (n, ins, c) => softmaxLike(n, ins, c, logSoftmax),
  ReduceMean: (n, ins, c) => reduceOp(n, ins, c, 'mean'),
  ReduceSum: (n, ins, c) => reduceOp(n, ins, c, 'sum'),
  ReduceMax: (n, ins, c) => reduceOp(n, ins, c, 'max'),
  ReduceMin: (n, ins, c) => reduceOp(n, ins, c, 'min'),
  LayerNormalization: (n, ins, c) => {
    const x = toEngine(need(n, ins, 0), c);
    const axis = attrInt(n, 'axis', -1);
    if (normAxis(n, axis, x.ndim) !== x.ndim - 1) fail(n, 'E_UNSUPPORTED', `normalization over axis ${axis} (last axis only)`);
    const w = ins[1] !== undefined ? toEngine(ins[1], c, x.dtype) : null;
    const b = ins[2] !== undefined ? toEngine(ins[2], c, x.dtype) : null;
    return [layerNorm(x, w, b, attrFloat(n, 'epsilon', 1e-5))];
  },
  SimplifiedLayerNormalization: (n, ins, c) => {
    const x = toEngine(need(n, ins, 0), c);
    const axis = attrInt(n, 'axis', -1);
    if (normAxis(n, axis, x.ndim) !== x.ndim - 1) fail(n, 'E_UNSUPPORTED', `normalization over axis ${axis} (last axis only)`);
    const w = ins[1] !== undefined ? toEngine(ins[1], c, x.dtype) : null;
    return [rmsNorm(x, w, attrFloat(n, 'epsilon', 1e-5))];
  },
  Gelu: (n, ins, c) => [E.gelu(toEngine(need(n, ins, 0), c), attrStr(n, 'approximate', 'none') === 'tanh' ? 'tanh' : 'none')],
  FastGelu: (n, ins, c) => {
    let x = toEngine(need(n, ins, 0), c);
    if (ins[1] !== undefined) x = E.add(x, toEngine(ins[1], c, x.dtype));
    return [E.gelu(x, 'tanh')];
  },
  ScatterND: (n, ins) => {
    const data = toHost(need(n, ins, 0));
    const idx = toHost(need(n, ins, 1));
    const upd = toHost(need(n, ins, 2));
    if (attrStr(n, 'reduction', 'none') !== 'none') fail(n, 'E_UNSUPPORTED', 'reductions');
    const k = idx.shape[idx.shape.length - 1] ?? 0;
    if (k > data.shape.length) fail(n, 'E_FORMAT', 'index depth exceeds the data rank');
    const out = host(data.dtype, data.shape, data.data);
    const st = stridesOf(data.shape);
    const slab = numel(data.shape.slice(k));
    const nIdx = numel(idx.shape.slice(0, -1));
    if (upd.data.length !== nIdx * slab) fail(n, 'E_SHAPE', 'updates do not match the indices');
    for (let i = 0; i < nIdx; i++) {
      let off = 0;
      for (let j = 0; j < k; j++) {
        let v = idx.data[i * k + j];
        if (v < 0) v += data.shape[j];
        if (!(v >= 0 && v < data.shape[j])) fail(n, 'E_SHAPE', 'index out of range');
        off += v * st[j];
      }
      out.data.set(upd.data.subarray(i * slab, (i + 1) * slab), off);
    }
    return [out];
  },
  Tile: (n, ins) => {
    const x = toHost(need(n, ins, 0));
    const reps = ints(n, ins[1], 'repeats');
    if (reps.length !== x.shape.length) fail(n, 'E_FORMAT', 'repeats must match the rank');
    const shape = x.shape.map((d, i) => d * reps[i]);
    const out = host(x.dtype, shape, undefined, 'Tile');
    const outSt = stridesOf(shape);
    const inSt = stridesOf(x.shape);
    for (let i = 0; i < out.data.length; i++) {
      let src = 0;
      for (let j = 0; j < shape.length; j++) src += ((Math.floor(i / outSt[j]) % shape[j]) % x.shape[j]) * inSt[j];
      out.data[i] = x.data[src];
    }
    return [out];
  },
};

for (const op of Object.keys(HOST_UNARY)) OPS[op] = unary;
for (const op of [...Object.keys(HOST_BINARY), 'Sum']) OPS[op] = binary;

function argReduce(n: OnnxNode, ins: (Value | undefined)[], sign: 1 | -1): Value[] {
  const x = toHost(need(n, ins, 0), 'ArgMax input');
  const axis = normAxis(n, attrInt(n, 'axis', 0), x.shape.length);
  const keep = attrInt(n, 'keepdims', 1) !== 0;
  const last = attrInt(n, 'select_last_index', 0) !== 0;
  const outer = numel(x.shape.slice(0, axis));
  const d = x.shape[axis];
  const inner = numel(x.shape.slice(axis + 1));
  const shape = keep ? x.shape.map((v, i) => (i === axis ? 1 : v)) : x.shape.filter((_, i) => i !== axis);
  const out = host('i64', shape);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      let best = 0;
      let bv = -Infinity;
      for (let j = 0; j < d; j++) {
        const v = sign * x.data[(o * d + j) * inner + i];
        if (v > bv || (last && v === bv)) {
          bv = v;
          best = j;
        }
      }
      out.data[o * inner + i] = best;
    }
  }
  return [out];
}

function softmaxLike(n: OnnxNode, ins: (Value | undefined)[], c: RunContext, f: (x: Tensor, dim: number) => Tensor): Value[] {
  const x = toEngine(need(n, ins, 0), c);
  const dflt = c.opset >= 13 ? -1 : 1;
  const axis = normAxis(n, attrInt(n, 'axis', dflt), x.ndim);
  if (c.opset < 13 && axis !== x.ndim - 1) fail(n, 'E_UNSUPPORTED', `opset ${c.opset} ${n.op} over axes ${axis}..end`);
  return [f(x, axis)];
}

function reduceOp(n: OnnxNode, ins: (Value | undefined)[], c: RunContext, op: 'mean' | 'sum' | 'max' | 'min'): Value[] {
  const x = need(n, ins, 0);
  const r = shapeOf(x).length;
  const keep = attrInt(n, 'keepdims', 1) !== 0;
  let axes = axesFrom(n, ins, 1) ?? [];
  if (!axes.length && attrInt(n, 'noop_with_empty_axes', 0)) return [x];
  axes = axes.map((a) => normAxis(n, a, r));
  if (isHost(x)) return [reduceHost(x, axes, keep, op)];
  void c;
  return [reduce(op, x, axes.length ? axes : undefined, keep)];
}

export const SUPPORTED_OPS = new Set(Object.keys(OPS));
/** Operators of ONNX Runtime's com.microsoft domain that the interpreter runs. */
export const MS_OPS = new Set(['SimplifiedLayerNormalization', 'Gelu', 'FastGelu']);

export function isSupported(op: string, domain: string): boolean {
  if (domain === '' || domain === 'ai.onnx') return SUPPORTED_OPS.has(op);
  if (domain === 'com.microsoft') return MS_OPS.has(op);
  return false;
}

export { isFloat };
