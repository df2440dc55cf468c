/**
 * Host tensors of the ONNX interpreter: the integer, boolean and constant values of a graph (ids,
 * masks, positions, shapes, rotary tables) computed in JavaScript, where they cost nothing and need
 * no gradient. Values are stored as float64 (int64 beyond 2^53 only appears as "to the end" in
 * Slice, where clamping is what it means). Every result's size is bounded, so a hostile graph
 * cannot ask for an unbounded allocation.
 */
import { SiftError } from '../engine/errors';

export type HostDType = 'f32' | 'f64' | 'i64' | 'i32' | 'bool';

export interface Host {
  readonly host: true;
  dtype: HostDType;
  shape: number[];
  data: Float64Array;
}

/** Largest host tensor the interpreter makes (elements). */
export const MAX_HOST_ELEMENTS = 1 << 25;

export function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function checkSize(shape: number[], what: string): number {
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new SiftError('E_FORMAT', `${what}: invalid dimension ${d} in [${shape}]`);
  }
  const n = numel(shape);
  if (n > MAX_HOST_ELEMENTS)
    throw new SiftError('E_FORMAT', `${what}: ${n} elements in [${shape}] exceed the interpreter's limit of ${MAX_HOST_ELEMENTS}`);
  return n;
}

export function host(dtype: HostDType, shape: number[], data?: ArrayLike<number>, what = 'tensor'): Host {
  const n = checkSize(shape, what);
  const d = new Float64Array(n);
  if (data) {
    if (data.length !== n) throw new SiftError('E_FORMAT', `${what}: ${data.length} values for shape [${shape}]`);
    d.set(data);
    roundTo(dtype, d);
  }
  return { host: true, dtype, shape: [...shape], data: d };
}

export function isHost(v: unknown): v is Host {
  return !!v && (v as Host).host === true;
}

export function isFloatHost(d: HostDType): boolean {
  return d === 'f32' || d === 'f64';
}

/** Rounds values to the dtype's arithmetic (f32, integer truncation, bool). */
export function roundTo(dtype: HostDType, d: Float64Array): void {
  if (dtype === 'f32') for (let i = 0; i < d.length; i++) d[i] = Math.fround(d[i]);
  else if (dtype === 'i64' || dtype === 'i32') for (let i = 0; i < d.length; i++) d[i] = Math.trunc(d[i]);
  else if (dtype === 'bool') for (let i = 0; i < d.length; i++) d[i] = d[i] ? 1 : 0;
}

export function stridesOf(shape: number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

export function broadcastShapes(shapes: number[][], what: string): number[] {
  const r = Math.max(0, ...shapes.map((s) => s.length));
  const out = new Array<number>(r).fill(1);
  for (const s of shapes) {
    for (let i = 0; i < s.length; i++) {
      const j = r - s.length + i;
      const d = s[i];
      if (out[j] === 1) out[j] = d;
      else if (d !== 1 && d !== out[j])
        throw new SiftError('E_SHAPE', `${what}: shapes ${shapes.map((x) => `[${x}]`).join(', ')} do not broadcast`);
    }
  }
  return out;
}

/** Index of `flat` of `outShape` inside a broadcast operand of shape `s`. */
function broadcastIndexer(s: number[], outShape: number[]): (flat: number) => number {
  const r = outShape.length;
  const st = stridesOf(s);
  const outSt = stridesOf(outShape);
  const off = r - s.length;
  return (flat: number) => {
    let idx = 0;
    for (let j = 0; j < r; j++) {
      const c = Math.floor(flat / outSt[j]) % outShape[j];
      const k = j - off;
      if (k >= 0 && s[k] !== 1) idx += c * st[k];
    }
    return idx;
  };
}

export function mapN(ins: Host[], dtype: HostDType, fn: (...v: number[]) => number, what: string): Host {
  const shape = broadcastShapes(
    ins.map((x) => x.shape),
    what,
  );
  const out = host(dtype, shape, undefined, what);
  const same = ins.every((x) => x.shape.length === shape.length && x.shape.every((d, i) => d === shape[i]));
  const idx = same ? null : ins.map((x) => broadcastIndexer(x.shape, shape));
  const vals = new Array<number>(ins.length);
  for (let i = 0; i < out.data.length; i++) {
    for (let k = 0; k < ins.length; k++) vals[k] = ins[k].data[idx ? idx[k](i) : i];
    out.data[i] = fn(...vals);
  }
  roundTo(dtype, out.data);
  return out;
}

export function expandTo(x: Host, shape: number[]): Host {
  const target = broadcastShapes([x.shape, shape], 'Expand');
  return mapN([x, host(x.dtype, target)], x.dtype, (a) => a, 'Expand');
}

export function transposeHost(x: Host, perm: number[]): Host {
  const shape = perm.map((p) => x.shape[p]);
  const out = host(x.dtype, shape);
  const inSt = stridesOf(x.shape);
  const outSt = stridesOf(shape);
  for (let i = 0; i < out.data.length; i++) {
    let src = 0;
    for (let j = 0; j < shape.length; j++) src += (Math.floor(i / outSt[j]) % shape[j]) * inSt[perm[j]];
    out.data[i] = x.data[src];
  }
  return out;
}

/** Elements start..end by step along each listed axis. */
export function sliceHost(x: Host, starts: number[], ends: number[], axes: number[], steps: number[]): Host {
  const r = x.shape.length;
  const st = new Array<number>(r).fill(0);
  const stp = new Array<number>(r).fill(1);
  const cnt = [...x.shape];
  axes.forEach((a, i) => {
    const d = x.shape[a];
    const step = steps[i];
    if (step === 0) throw new SiftError('E_FORMAT', 'Slice: step 0');
    let s = starts[i] < 0 ? starts[i] + d : starts[i];
    let e = ends[i] < 0 ? ends[i] + d : ends[i];
    if (step > 0) {
      s = Math.min(Math.max(s, 0), d);
      e = Math.min(Math.max(e, 0), d);
      cnt[a] = Math.max(0, Math.ceil((e - s) / step));
    } else {
      s = Math.min(Math.max(s, -1), d - 1);
      e = Math.min(Math.max(e, -1), d - 1);
      cnt[a] = Math.max(0, Math.ceil((e - s) / step));
    }
    st[a] = s;
    stp[a] = step;
  });
  const out = host(x.dtype, cnt, undefined, 'Slice');
  const inSt = stridesOf(x.shape);
  const outSt = stridesOf(cnt);
  for (let i = 0; i < out.data.length; i++) {
    let src = 0;
    for (let j = 0; j < r; j++) src += (st[j] + (Math.floor(i / outSt[j]) % cnt[j]) * stp[j]) * inSt[j];
    out.data[i] = x.data[src];
  }
  return out;
}

export function concatHost(xs: Host[], axis: number): Host {
  const base = xs[0].shape;
  for (const x of xs) {
    if (x.shape.length !== base.length || x.shape.some((d, i) => i !== axis && d !== base[i])) {
      throw new SiftError('E_SHAPE', `Concat: shapes ${xs.map((t) => `[${t.shape}]`).join(', ')} differ off axis ${axis}`);
    }
  }
  const shape = [...base];
  shape[axis] = xs.reduce((a, x) => a + x.shape[axis], 0);
  const out = host(xs[0].dtype, shape, undefined, 'Concat');
  const outer = numel(base.slice(0, axis));
  const inner = numel(base.slice(axis + 1));
  let o = 0;
  for (let i = 0; i < outer; i++) {
    for (const x of xs) {
      const n = x.shape[axis] * inner;
      out.data.set(x.data.subarray(i * n, (i + 1) * n), o);
      o += n;
    }
  }
  return out;
}

export function gatherHost(x: Host, idx: Host, axis: number): Host {
  const d = x.shape[axis];
  const outer = numel(x.shape.slice(0, axis));
  const inner = numel(x.shape.slice(axis + 1));
  const shape = [...x.shape.slice(0, axis), ...idx.shape, ...x.shape.slice(axis + 1)];
  const out = host(x.dtype, shape, undefined, 'Gather');
  let o = 0;
  for (let i = 0; i < outer; i++) {
    for (let k = 0; k < idx.data.length; k++) {
      let j = idx.data[k];
      if (j < 0) j += d;
      if (!(j >= 0 && j < d)) throw new SiftError('E_INDEX', `Gather: index ${idx.data[k]} out of range for a dimension of ${d}`);
      out.data.set(x.data.subarray((i * d + j) * inner, (i * d + j + 1) * inner), o);
      o += inner;
    }
  }
  return out;
}

export function reduceHost(x: Host, axes: number[], keep: boolean, op: 'sum' | 'mean' | 'max' | 'min'): Host {
  const r = x.shape.length;
  const set = new Set(axes.length ? axes : x.shape.map((_, i) => i));
  const outShapeKeep = x.shape.map((d, i) => (set.has(i) ? 1 : d));
  const out = host(isFloatHost(x.dtype) || op !== 'mean' ? x.dtype : 'f32', keep ? outShapeKeep : x.shape.filter((_, i) => !set.has(i)));
  const init = op === 'max' ? -Infinity : op === 'min' ? Infinity : 0;
  out.data.fill(init);
  const inSt = stridesOf(x.shape);
  const oSt = stridesOf(outShapeKeep);
  for (let i = 0; i < x.data.length; i++) {
    let o = 0;
    for (let j = 0; j < r; j++) if (!set.has(j)) o += (Math.floor(i / inSt[j]) % x.shape[j]) * oSt[j];
    const v = x.data[i];
    out.data[o] = op === 'max' ? Math.max(out.data[o], v) : op === 'min' ? Math.min(out.data[o], v) : out.data[o] + v;
  }
  if (op === 'mean') {
    const n = x.data.length / Math.max(1, out.data.length);
    for (let i = 0; i < out.data.length; i++) out.data[i] /= n;
  }
  roundTo(out.dtype, out.data);
  return out;
}

/** Batched matrix product with broadcast batch dims (small host values only, e.g. rotary tables). */
export function matmulHost(a: Host, b: Host): Host {
  const A = a.shape.length === 1 ? host(a.dtype, [1, a.shape[0]], a.data) : a;
  const Bm = b.shape.length === 1 ? host(b.dtype, [b.shape[0], 1], b.data) : b;
  const [M, K] = A.shape.slice(-2);
  const [K2, N] = Bm.shape.slice(-2);
  if (K !== K2) throw new SiftError('E_SHAPE', `MatMul: [${a.shape}] @ [${b.shape}]`);
  const batch = broadcastShapes([A.shape.slice(0, -2), Bm.shape.slice(0, -2)], 'MatMul');
  const out = host(a.dtype, [...batch, M, N], undefined, 'MatMul');
  const ia = broadcastIndexer(A.shape.slice(0, -2), batch);
  const ib = broadcastIndexer(Bm.shape.slice(0, -2), batch);
  const nb = numel(batch);
  for (let t = 0; t < nb; t++) {
    const oa = ia(t) * M * K;
    const ob = ib(t) * K * N;
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += A.data[oa + i * K + k] * Bm.data[ob + k * N + j];
        out.data[t * M * N + i * N + j] = s;
      }
    }
  }
  roundTo(out.dtype, out.data);
  let shape = out.shape;
  if (a.shape.length === 1) shape = [...shape.slice(0, -2), shape[shape.length - 1]];
  if (b.shape.length === 1) shape = shape.slice(0, -1);
  out.shape = shape;
  return out;
}
