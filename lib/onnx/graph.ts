/**
 * Reading an ONNX ModelProto into a checked graph: tensors (inline, typed fields or external data
 * confined to the model's folder) with every declared size checked against the bytes actually
 * present before anything is allocated, attributes as plain values, node references resolved and
 * the nodes put in topological order (a cycle is E_FORMAT). Operator support is checked by the
 * caller, for all nodes at once, before any weight is read.
 */
import * as fs from 'fs';
import * as path from 'path';
import { SiftError } from '../engine/errors';
import { onnxType, decodeMessage, toNum } from './proto';
import { Host, HostDType, host } from './host';

// biome-ignore lint/suspicious/noExplicitAny: protobufjs decodes to untyped messages
type Msg = any;

/** Largest tensor accepted from a file (elements); far above any weight, far below 2^53. */
const MAX_TENSOR_ELEMENTS = 2 ** 36;

export type AttrValue = number | number[] | string | string[] | Host | { graph: true };

export interface OnnxNode {
  index: number;
  name: string;
  op: string;
  domain: string;
  inputs: string[];
  outputs: string[];
  attrs: Map<string, AttrValue>;
}

/** A tensor whose bytes have been located and checked, read on demand. */
export interface TensorRef {
  name: string;
  dataType: number;
  dims: number[];
  count: number;
  /** Values: float types as Float32Array (f64 as Float64Array), integers and bools as Float64Array. */
  read(): Float32Array | Float64Array;
}

export interface OnnxGraph {
  opset: number;
  irVersion: number;
  producer: string;
  metadata: Record<string, string>;
  inputs: { name: string; elemType: number; dims: (number | string)[] }[];
  outputs: string[];
  initializers: Map<string, TensorRef>;
  /** Nodes in topological order. */
  nodes: OnnxNode[];
}

const ELEM_SIZE: Record<number, number> = { 1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2 };
export const FLOAT_TYPES = new Set([1, 10, 11, 16]);

export function hostDTypeOf(dataType: number): HostDType {
  if (dataType === 1 || dataType === 10 || dataType === 16) return 'f32';
  if (dataType === 11) return 'f64';
  if (dataType === 9) return 'bool';
  if (dataType === 6 || dataType === 2 || dataType === 3 || dataType === 4 || dataType === 5) return 'i32';
  return 'i64';
}

function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

const bf16Scratch = new DataView(new ArrayBuffer(4));
function bf16ToF32(h: number): number {
  bf16Scratch.setUint32(0, (h & 0xffff) << 16, true);
  return bf16Scratch.getFloat32(0, true);
}

function decodeRaw(bytes: Uint8Array, dataType: number, count: number): Float32Array | Float64Array {
  const buf = new Uint8Array(bytes.byteLength);
  buf.set(bytes);
  const dv = new DataView(buf.buffer);
  switch (dataType) {
    case 1:
      return new Float32Array(buf.buffer, 0, count);
    case 11:
      return new Float64Array(buf.buffer, 0, count);
    case 10:
      return Float32Array.from({ length: count }, (_, i) => f16ToF32(dv.getUint16(2 * i, true)));
    case 16:
      return Float32Array.from({ length: count }, (_, i) => bf16ToF32(dv.getUint16(2 * i, true)));
    default: {
      const out = new Float64Array(count);
      for (let i = 0; i < count; i++) {
        switch (dataType) {
          case 2:
            out[i] = dv.getUint8(i);
            break;
          case 3:
            out[i] = dv.getInt8(i);
            break;
          case 4:
            out[i] = dv.getUint16(2 * i, true);
            break;
          case 5:
            out[i] = dv.getInt16(2 * i, true);
            break;
          case 6:
            out[i] = dv.getInt32(4 * i, true);
            break;
          case 7:
            out[i] = Number(dv.getBigInt64(8 * i, true));
            break;
          case 9:
            out[i] = dv.getUint8(i) ? 1 : 0;
            break;
          case 12:
            out[i] = dv.getUint32(4 * i, true);
            break;
          case 13:
            out[i] = Number(dv.getBigUint64(8 * i, true));
            break;
        }
      }
      return out;
    }
  }
}

function fieldValues(tp: Msg, dataType: number): ArrayLike<unknown> | null {
  const nonEmpty = (a: unknown) => (Array.isArray(a) && a.length ? (a as unknown[]) : null);
  switch (dataType) {
    case 1:
      return nonEmpty(tp.float_data);
    case 11:
      return nonEmpty(tp.double_data);
    case 7:
      return nonEmpty(tp.int64_data);
    case 12:
    case 13:
      return nonEmpty(tp.uint64_data);
    default:
      return nonEmpty(tp.int32_data);
  }
}

/** Checks a tensor's declaration and locates its bytes; nothing is read or allocated here. */
export function tensorRef(tp: Msg, what: string, baseDir: string | null): TensorRef {
  const name = typeof tp.name === 'string' ? tp.name : '';
  const label = `${what}${name ? ` '${name}'` : ''}`;
  const dataType = toNum(tp.data_type, label);
  const size = ELEM_SIZE[dataType];
  if (dataType === 8 || dataType === 14 || dataType === 15)
    throw new SiftError('E_UNSUPPORTED', `${label}: string and complex tensors are not supported`);
  if (!size) throw new SiftError('E_FORMAT', `${label}: unknown data type ${dataType}`);
  const dims = ((tp.dims ?? []) as unknown[]).map((d) => toNum(d, label));
  let count = 1;
  for (const d of dims) {
    if (d < 0) throw new SiftError('E_FORMAT', `${label}: negative dimension in [${dims}]`);
    count *= d;
    if (count > MAX_TENSOR_ELEMENTS) throw new SiftError('E_FORMAT', `${label}: declared size [${dims}] is too large`);
  }
  const nbytes = count * size;
  const external = toNum(tp.data_location, label) === 1;
  if (external) {
    const ext = new Map<string, string>(((tp.external_data ?? []) as Msg[]).map((e) => [String(e.key ?? ''), String(e.value ?? '')]));
    const loc = ext.get('location');
    if (!loc) throw new SiftError('E_FORMAT', `${label}: external data without a location`);
    if (baseDir === null) throw new SiftError('E_FORMAT', `${label}: external data '${loc}' but the model was not read from a file`);
    if (path.isAbsolute(loc) || loc.split(/[\\/]/).includes('..') || loc.includes('\0')) {
      throw new SiftError('E_FORMAT', `${label}: external data location '${loc}' leaves the model's folder`);
    }
    const file = path.resolve(baseDir, loc);
    const rel = path.relative(path.resolve(baseDir), file);
    if (rel.startsWith('..') || path.isAbsolute(rel))
      throw new SiftError('E_FORMAT', `${label}: external data location '${loc}' leaves the model's folder`);
    const offset = ext.has('offset') ? Number(ext.get('offset')) : 0;
    const length = ext.has('length') ? Number(ext.get('length')) : nbytes;
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length !== nbytes) {
      throw new SiftError(
        'E_FORMAT',
        `${label}: external data offset ${ext.get('offset')} / length ${ext.get('length')} do not fit ${nbytes} bytes of [${dims}]`,
      );
    }
    let st: fs.Stats;
    try {
      st = fs.statSync(file);
    } catch {
      throw new SiftError('E_FORMAT', `${label}: external data file '${loc}' not found`);
    }
    if (!st.isFile() || offset + length > st.size)
      throw new SiftError('E_FORMAT', `${label}: external data '${loc}' holds ${st.size} bytes, needs ${offset + length}`);
    return {
      name,
      dataType,
      dims,
      count,
      read: () => {
        const buf = Buffer.alloc(length);
        const fd = fs.openSync(file, 'r');
        try {
          let done = 0;
          while (done < length) {
            const n = fs.readSync(fd, buf, done, length - done, offset + done);
            if (n <= 0) throw new SiftError('E_FORMAT', `${label}: external data '${loc}' ended early`);
            done += n;
          }
        } finally {
          fs.closeSync(fd);
        }
        return decodeRaw(buf, dataType, count);
      },
    };
  }
  const raw = tp.raw_data as Uint8Array | undefined;
  if (raw && raw.byteLength > 0) {
    if (raw.byteLength !== nbytes)
      throw new SiftError('E_FORMAT', `${label}: raw_data has ${raw.byteLength} bytes, [${dims}] needs ${nbytes}`);
    return { name, dataType, dims, count, read: () => decodeRaw(raw, dataType, count) };
  }
  const vals = fieldValues(tp, dataType);
  const have = vals ? vals.length : 0;
  if (have !== count) throw new SiftError('E_FORMAT', `${label}: ${have} values for [${dims}] (${count} elements)`);
  return {
    name,
    dataType,
    dims,
    count,
    read: () => {
      if (!vals) return dataType === 11 ? new Float64Array(0) : FLOAT_TYPES.has(dataType) ? new Float32Array(0) : new Float64Array(0);
      if (dataType === 1) return Float32Array.from(vals as number[]);
      if (dataType === 11) return Float64Array.from(vals as number[]);
      if (dataType === 10) return Float32Array.from(vals as number[], (v) => f16ToF32(Number(v)));
      if (dataType === 16) return Float32Array.from(vals as number[], (v) => bf16ToF32(Number(v)));
      return Float64Array.from(vals as unknown[], (v) => (dataType === 9 ? (toNum(v, label) ? 1 : 0) : toNum(v, label)));
    },
  };
}

/** A small constant tensor (attribute or initializer) as a host value. */
export function refToHost(r: TensorRef, what: string): Host {
  return host(hostDTypeOf(r.dataType), r.dims, r.read(), what);
}

function parseAttr(a: Msg, where: string, baseDir: string | null): [string, AttrValue] {
  const name = String(a.name ?? '');
  if (!name) throw new SiftError('E_FORMAT', `${where}: attribute without a name`);
  let type = toNum(a.type, where);
  if (type === 0) {
    // IR < 0.0.2 files have no type: take the field that is set.
    if (a.t) type = 4;
    else if (a.ints?.length) type = 7;
    else if (a.floats?.length) type = 6;
    else if (a.strings?.length) type = 8;
    else if (a.s?.length) type = 3;
    else if (a.f !== undefined && a.f !== 0) type = 1;
    else type = 2;
  }
  const label = `${where} attribute '${name}'`;
  switch (type) {
    case 1:
      return [name, Number(a.f ?? 0)];
    case 2:
      return [name, toNum(a.i, label)];
    case 3:
      return [name, Buffer.from((a.s ?? new Uint8Array(0)) as Uint8Array).toString('utf8')];
    case 4: {
      if (!a.t) throw new SiftError('E_FORMAT', `${label}: tensor attribute without a tensor`);
      return [name, refToHost(tensorRef(a.t, label, baseDir), label)];
    }
    case 6:
      return [name, ((a.floats ?? []) as number[]).map(Number)];
    case 7:
      return [name, ((a.ints ?? []) as unknown[]).map((v) => toNum(v, label))];
    case 8:
      return [name, ((a.strings ?? []) as Uint8Array[]).map((s) => Buffer.from(s).toString('utf8'))];
    case 5:
    case 10:
      return [name, { graph: true }];
    default:
      throw new SiftError('E_UNSUPPORTED', `${label}: attribute type ${type} is not supported`);
  }
}

function dimsOf(vi: Msg): (number | string)[] {
  const dims = vi?.type?.tensor_type?.shape?.dim;
  if (!Array.isArray(dims)) return [];
  return dims.map((d: Msg) =>
    d.dim_param ? String(d.dim_param) : d.dim_value !== undefined && d.dim_value !== null ? toNum(d.dim_value, 'input dim') : '?',
  );
}

/** Decodes and checks an ONNX model file's bytes. `baseDir` is where external data may live. */
export function parseOnnx(bytes: Uint8Array, baseDir: string | null, what = 'ONNX model'): OnnxGraph {
  const m = decodeMessage<Msg>(onnxType('ModelProto'), bytes, what);
  const g = m.graph;
  if (!g || !Array.isArray(g.node)) throw new SiftError('E_FORMAT', `${what}: no graph`);
  let opset = 0;
  for (const o of (m.opset_import ?? []) as Msg[]) {
    const dom = String(o.domain ?? '');
    if (dom === '' || dom === 'ai.onnx') opset = toNum(o.version, `${what}: opset`);
  }
  if (opset === 0) opset = 1;
  const initializers = new Map<string, TensorRef>();
  for (const t of (g.initializer ?? []) as Msg[]) {
    const r = tensorRef(t, `${what}: initializer`, baseDir);
    if (!r.name) throw new SiftError('E_FORMAT', `${what}: an initializer has no name`);
    if (initializers.has(r.name)) throw new SiftError('E_FORMAT', `${what}: initializer '${r.name}' defined twice`);
    initializers.set(r.name, r);
  }
  const inputs = ((g.input ?? []) as Msg[])
    .filter((vi) => !initializers.has(String(vi.name ?? '')))
    .map((vi) => ({ name: String(vi.name ?? ''), elemType: toNum(vi?.type?.tensor_type?.elem_type, 'input type'), dims: dimsOf(vi) }));
  const defined = new Map<string, number>();
  for (const n of initializers.keys()) defined.set(n, -1);
  for (const i of inputs) {
    if (!i.name) throw new SiftError('E_FORMAT', `${what}: a graph input has no name`);
    if (defined.has(i.name)) throw new SiftError('E_FORMAT', `${what}: graph input '${i.name}' defined twice`);
    defined.set(i.name, -1);
  }
  const nodes: OnnxNode[] = ((g.node ?? []) as Msg[]).map((n, index) => {
    const name = String(n.name ?? '') || `#${index}`;
    const where = `${what}: node '${name}' (${String(n.op_type ?? '?')})`;
    const attrs = new Map<string, AttrValue>();
    for (const a of (n.attribute ?? []) as Msg[]) {
      const [k, v] = parseAttr(a, where, baseDir);
      attrs.set(k, v);
    }
    return {
      index,
      name,
      op: String(n.op_type ?? ''),
      domain: String(n.domain ?? ''),
      inputs: ((n.input ?? []) as unknown[]).map(String),
      outputs: ((n.output ?? []) as unknown[]).map(String),
      attrs,
    };
  });
  for (const n of nodes) {
    if (!n.op) throw new SiftError('E_FORMAT', `${what}: node '${n.name}' has no op_type`);
    for (const o of n.outputs) {
      if (o === '') continue;
      if (defined.has(o)) throw new SiftError('E_FORMAT', `${what}: value '${o}' (output of node '${n.name}') is defined twice`);
      defined.set(o, n.index);
    }
  }
  // Kahn's algorithm over producer -> consumer edges; what remains is a cycle.
  const indeg = new Array<number>(nodes.length).fill(0);
  const consumers: number[][] = nodes.map(() => []);
  for (const n of nodes) {
    for (const i of n.inputs) {
      if (i === '') continue;
      const p = defined.get(i);
      if (p === undefined) throw new SiftError('E_FORMAT', `${what}: node '${n.name}' reads '${i}', which nothing defines`);
      if (p >= 0) {
        indeg[n.index]++;
        consumers[p].push(n.index);
      }
    }
  }
  const order: OnnxNode[] = [];
  const queue = nodes.filter((n) => indeg[n.index] === 0).map((n) => n.index);
  for (let qi = 0; qi < queue.length; qi++) {
    const k = queue[qi];
    order.push(nodes[k]);
    for (const c of consumers[k]) if (--indeg[c] === 0) queue.push(c);
  }
  if (order.length !== nodes.length) {
    const stuck = nodes
      .filter((n) => indeg[n.index] > 0)
      .slice(0, 5)
      .map((n) => `'${n.name}'`);
    throw new SiftError('E_FORMAT', `${what}: the graph has a cycle (through nodes ${stuck.join(', ')})`);
  }
  const outputs = ((g.output ?? []) as Msg[]).map((o) => String(o.name ?? ''));
  for (const o of outputs) if (!defined.has(o)) throw new SiftError('E_FORMAT', `${what}: graph output '${o}' is never computed`);
  if (!outputs.length) throw new SiftError('E_FORMAT', `${what}: the graph has no outputs`);
  const metadata: Record<string, string> = {};
  for (const e of (m.metadata_props ?? []) as Msg[]) metadata[String(e.key ?? '')] = String(e.value ?? '');
  return {
    opset,
    irVersion: toNum(m.ir_version, 'ir_version'),
    producer: String(m.producer_name ?? ''),
    metadata,
    inputs,
    outputs,
    initializers,
    nodes: order,
  };
}
