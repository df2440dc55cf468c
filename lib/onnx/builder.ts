/**
 * A small ONNX graph builder: named inputs and outputs with symbolic dims, initializers (whose
 * bytes are produced lazily, so that external data can be streamed to disk one tensor at a time),
 * Constant nodes for everything that is not a weight, and nodes of the standard ai.onnx domain.
 */
import { SiftError } from '../engine/errors';

/** ONNX TensorProto.DataType codes. */
export const ONNX_DTYPE = { f32: 1, u8: 2, i8: 3, i32: 6, i64: 7, bool: 9, f16: 10, f64: 11, bf16: 16 } as const;
export type OnnxElem = keyof typeof ONNX_DTYPE;

export type Attr =
  | { int: number }
  | { float: number }
  | { ints: number[] }
  | { floats: number[] }
  | { str: string }
  | { tensor: ConstTensor };

export interface ConstTensor {
  dtype: 'f32' | 'i64' | 'bool' | 'i32';
  dims: number[];
  values: ArrayLike<number>;
}

export interface LazyInitializer {
  name: string;
  dtype: OnnxElem;
  dims: number[];
  nbytes: number;
  /** Little-endian bytes of the tensor, made when the file is written. */
  bytes: () => Uint8Array;
}

interface NodeObj {
  input: string[];
  output: string[];
  name: string;
  op_type: string;
  domain?: string;
  attribute: Record<string, unknown>[];
}

export function constTensorProto(t: ConstTensor, name = ''): Record<string, unknown> {
  const n = t.dims.reduce((a, b) => a * b, 1);
  if (n !== t.values.length) throw new SiftError('E_SHAPE', `constant '${name}': ${t.values.length} values for dims [${t.dims}]`);
  let raw: Uint8Array;
  if (t.dtype === 'f32') raw = new Uint8Array(Float32Array.from(t.values).buffer);
  else if (t.dtype === 'i64') raw = new Uint8Array(BigInt64Array.from(Array.from(t.values, (v) => BigInt(Math.trunc(v)))).buffer);
  else if (t.dtype === 'i32') raw = new Uint8Array(Int32Array.from(t.values).buffer);
  else raw = Uint8Array.from(t.values, (v) => (v ? 1 : 0));
  return { name, dims: t.dims, data_type: ONNX_DTYPE[t.dtype], raw_data: raw };
}

function attrProto(name: string, a: Attr): Record<string, unknown> {
  if ('int' in a) return { name, type: 2, i: a.int };
  if ('float' in a) return { name, type: 1, f: a.float };
  if ('ints' in a) return { name, type: 7, ints: a.ints };
  if ('floats' in a) return { name, type: 6, floats: a.floats };
  if ('str' in a) return { name, type: 3, s: Buffer.from(a.str, 'utf8') };
  return { name, type: 4, t: constTensorProto(a.tensor) };
}

export type Dim = number | string;

export class GraphBuilder {
  readonly nodes: NodeObj[] = [];
  readonly initializers: LazyInitializer[] = [];
  readonly inputs: Record<string, unknown>[] = [];
  readonly outputs: Record<string, unknown>[] = [];
  private readonly used = new Set<string>();
  private counter = 0;

  constructor(readonly opset: number) {}

  private valueInfo(name: string, elem: OnnxElem, dims: Dim[]): Record<string, unknown> {
    return {
      name,
      type: {
        tensor_type: {
          elem_type: ONNX_DTYPE[elem],
          shape: { dim: dims.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d })) },
        },
      },
    };
  }

  input(name: string, elem: OnnxElem, dims: Dim[]): string {
    this.claim(name);
    this.inputs.push(this.valueInfo(name, elem, dims));
    return name;
  }

  /** Declares a graph output, renaming the value through an Identity node. */
  output(value: string, name: string, elem: OnnxElem, dims: Dim[]): void {
    this.claim(name);
    this.nodes.push({ input: [value], output: [name], name: `output_${name}`, op_type: 'Identity', attribute: [] });
    this.outputs.push(this.valueInfo(name, elem, dims));
  }

  initializer(init: LazyInitializer): string {
    if (this.used.has(init.name)) return init.name;
    this.claim(init.name);
    this.initializers.push(init);
    return init.name;
  }

  private claim(name: string): void {
    if (this.used.has(name)) throw new SiftError('E_ARG', `ONNX graph: value name '${name}' used twice`);
    this.used.add(name);
  }

  private fresh(hint: string): string {
    let n: string;
    do n = `/${hint}_${this.counter++}`;
    while (this.used.has(n));
    this.used.add(n);
    return n;
  }

  /** A node with `nOut` outputs; returns their names. */
  nodeN(op: string, inputs: string[], attrs: Record<string, Attr> = {}, nOut = 1, hint = op): string[] {
    const outs = Array.from({ length: nOut }, () => this.fresh(hint));
    this.nodes.push({
      input: inputs,
      output: outs,
      name: `${hint}_node_${this.counter++}`,
      op_type: op,
      attribute: Object.entries(attrs).map(([k, v]) => attrProto(k, v)),
    });
    return outs;
  }

  node(op: string, inputs: string[], attrs: Record<string, Attr> = {}, hint = op): string {
    return this.nodeN(op, inputs, attrs, 1, hint)[0];
  }

  /** A Constant node (not an initializer: importers must not treat it as a weight). */
  constant(dtype: ConstTensor['dtype'], dims: number[], values: ArrayLike<number>): string {
    return this.node('Constant', [], { value: { tensor: { dtype, dims, values } } }, 'Constant');
  }

  i64(values: number[], scalar = false): string {
    return this.constant('i64', scalar ? [] : [values.length], values);
  }

  f32(value: number): string {
    return this.constant('f32', [], [value]);
  }

  /** The ModelProto as a plain object (initializers as given by `tensorProto`). */
  modelObject(
    graphName: string,
    tensorProto: (init: LazyInitializer) => Record<string, unknown>,
    metadata: Record<string, string>,
  ): Record<string, unknown> {
    return {
      ir_version: 8,
      opset_import: [{ domain: '', version: this.opset }],
      producer_name: 'sift-ft',
      producer_version: '0.1.0',
      graph: {
        name: graphName,
        node: this.nodes,
        initializer: this.initializers.map(tensorProto),
        input: this.inputs,
        output: this.outputs,
      },
      metadata_props: Object.entries(metadata).map(([key, value]) => ({ key, value })),
    };
  }
}
