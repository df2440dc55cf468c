/**
 * ONNX graphs as trainable models: `loadOnnxModel(path)` reads and checks the file, refuses
 * unsupported operators (all of them listed, before any weight is read), turns float
 * initializers into parameters in a module tree named after the initializers' dotted paths
 * (`transformer.h.0.attn.c_attn.weight` -> module `transformer.h.0.attn.c_attn`), whose kinds
 * follow their use (the right operand of MatMul/Gemm is a 'Linear', so targetModules and
 * "all-linear" work as on native models), and runs the graph with the interpreter.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Tensor } from '../engine/tensor';
import { SiftError, check } from '../engine/errors';
import { DType } from '../engine/dtype';
import { Module } from '../nn/module';
import { tensor } from '../autograd/creation';
import { ModelInputs, ModelOutput, ModelTask, hostRows, causalLmLoss, classificationLoss, IdsInput } from '../models/common';
import { OnnxGraph, TensorRef, FLOAT_TYPES, parseOnnx, refToHost } from './graph';
import { Host, host, isHost } from './host';
import { OPS, Value, RunContext, isSupported, toEngine } from './interpreter';

export interface OnnxLoadOptions {
  device?: string;
  /** How logits are scored when labels are given (default: from the graph's metadata or output rank). */
  task?: ModelTask;
  /** Parameter dtype for float weights (default f32; f64 initializers stay f64). */
  dtype?: 'f32' | 'f64';
}

/** Initializers that are buffers in transformers, never weights. */
const BUFFER_NAMES = /(^|\.)(attn\.(masked_)?bias|inv_freq|position_ids|token_type_ids|rotary_emb\..*)$/;

const KIND_RANK: Record<string, number> = { Embedding: 4, Linear: 3, LayerNorm: 2, RMSNorm: 1, Parameter: 0 };

class OnnxModule extends Module {
  kindName = 'Parameter';
  override get kind(): string {
    return this.kindName;
  }
  addParameter(name: string, t: Tensor): void {
    this.registerParameter(name, t);
    (this as unknown as Record<string, unknown>)[name] = t;
  }
  child(name: string): OnnxModule {
    const found = this.children().find(([n]) => n === name);
    if (found) return found[1] as OnnxModule;
    return this.registerModule(name, new OnnxModule());
  }
}

function sanitize(part: string): string {
  const s = part.replace(/[^A-Za-z0-9_]/g, '_');
  return s || '_';
}

/** Module path and parameter name of an initializer. */
export function parameterPath(name: string): { modulePath: string[]; param: string } {
  const parts = name.split('.');
  if (parts.length < 2 || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(parts[parts.length - 1]))
    return { modulePath: [sanitize(name)], param: 'weight' };
  return { modulePath: parts.slice(0, -1).map(sanitize), param: parts[parts.length - 1] };
}

/** A model read from an ONNX graph: a Module of the graph's weights with forward(). */
export class OnnxModel extends Module {
  readonly architecture: string;
  readonly task: ModelTask;
  readonly graph: OnnxGraph;
  readonly config: Record<string, unknown>;
  private readonly values = new Map<string, Value>();
  /** Parameter key (dotted path) -> initializer name in the graph. */
  readonly initializerOf = new Map<string, string>();
  private readonly root = new OnnxModule();
  private readonly devStr: string;

  constructor(graph: OnnxGraph, opts: OnnxLoadOptions = {}) {
    super();
    this.graph = graph;
    this.devStr = opts.device === 'cuda' ? 'cuda:0' : (opts.device ?? 'cpu');
    let cfg: Record<string, unknown> = {};
    try {
      cfg = graph.metadata['sift-ft.config'] ? JSON.parse(graph.metadata['sift-ft.config']) : {};
    } catch {
      cfg = {};
    }
    this.config = cfg && typeof cfg === 'object' ? cfg : {};
    this.architecture = graph.metadata['sift-ft.architecture'] || `onnx:${graph.producer || 'graph'}`;
    const metaTask = graph.metadata['sift-ft.task'] as ModelTask | undefined;
    this.task =
      opts.task ?? (metaTask === 'causal-lm' || metaTask === 'sequence-classification' || metaTask === 'base' ? metaTask : 'base');
    const kinds = usageKinds(graph);
    for (const [name, ref] of graph.initializers) {
      if (isParameter(name, ref)) {
        const data = ref.read();
        const dt: DType = data instanceof Float64Array ? 'f64' : (opts.dtype ?? 'f32');
        const t = tensor(dt === 'f64' ? Float64Array.from(data) : data instanceof Float32Array ? data : Float32Array.from(data), ref.dims, {
          dtype: dt,
          device: this.devStr,
        });
        const { modulePath, param } = parameterPath(name);
        let m = this.root;
        for (const p of modulePath) m = m.child(p);
        let pname = param;
        for (let k = 1; m.ownParameters().some(([n]) => n === pname); k++) pname = `${param}_${k}`;
        m.addParameter(pname, t);
        const kind = kinds.get(name) ?? 'Parameter';
        if (pname === 'weight' || (KIND_RANK[kind] ?? 0) > (KIND_RANK[m.kindName] ?? 0)) m.kindName = kind;
        this.values.set(name, t);
        this.initializerOf.set([...modulePath, pname].join('.'), name);
      } else {
        this.values.set(name, refToHost(ref, `initializer '${name}'`));
      }
    }
    for (const [n, child] of this.root.children()) this.registerModule(n, child);
  }

  get device(): string {
    const p = this.namedParameters()[0];
    return p ? p[1].device : this.devStr;
  }

  /** The graph's inputs by name. */
  get inputNames(): string[] {
    return this.graph.inputs.map((i) => i.name);
  }

  /** Runs the graph on named inputs (tensors, JS arrays of ids) and returns every graph output. */
  run(feeds: Record<string, Value | IdsInput>): Map<string, Value> {
    const floatParam = this.namedParameters()[0]?.[1].dtype ?? 'f32';
    const c: RunContext = { device: this.device, opset: this.graph.opset, floatDType: floatParam };
    const env = new Map<string, Value>(this.values);
    for (const inp of this.graph.inputs) {
      const v = feeds[inp.name];
      if (v === undefined)
        throw new SiftError('E_ARG', `ONNX model: input '${inp.name}' is required (inputs: ${this.inputNames.join(', ')})`);
      env.set(inp.name, asValue(v, inp.elemType, inp.name));
    }
    for (const n of this.graph.nodes) {
      const ins = n.inputs.map((i) => {
        if (i === '') return undefined;
        const v = env.get(i);
        if (v === undefined) throw new SiftError('E_FORMAT', `ONNX node '${n.name}' (${n.op}): input '${i}' was not computed`);
        return v;
      });
      const outs = OPS[n.op](n, ins, c);
      n.outputs.forEach((o, i) => {
        const v = outs[i];
        if (o !== '' && v !== undefined) env.set(o, v);
      });
    }
    const result = new Map<string, Value>();
    for (const o of this.graph.outputs) result.set(o, env.get(o)!);
    return result;
  }

  /** The model interface of lib/models: logits (the 'logits' output, else the first) and the loss. */
  forward(inputs: ModelInputs): ModelOutput {
    const feeds: Record<string, Value | IdsInput> = {};
    const rows = hostRows(inputs.inputIds, 'inputIds');
    const B = rows.length;
    const T = B ? rows[0].length : 0;
    const fill = (v: number) => rows.map((r) => r.map(() => v));
    for (const inp of this.graph.inputs) {
      switch (inp.name) {
        case 'input_ids':
          feeds[inp.name] = rows;
          break;
        case 'attention_mask':
          feeds[inp.name] = inputs.attentionMask ? hostRows(inputs.attentionMask, 'attentionMask') : fill(1);
          break;
        case 'token_type_ids':
          feeds[inp.name] = inputs.tokenTypeIds ? hostRows(inputs.tokenTypeIds, 'tokenTypeIds') : fill(0);
          break;
        case 'position_ids':
          feeds[inp.name] = inputs.positionIds
            ? hostRows(inputs.positionIds, 'positionIds')
            : rows.map(() => Array.from({ length: T }, (_, t) => t));
          break;
        default:
          throw new SiftError(
            'E_UNSUPPORTED',
            `ONNX model: graph input '${inp.name}' has no counterpart in the model inputs (input_ids, attention_mask, token_type_ids, position_ids)`,
          );
      }
    }
    const outs = this.run(feeds);
    const key = outs.has('logits') ? 'logits' : this.graph.outputs[0];
    const lv = outs.get(key)!;
    const logits = toEngine(lv, { device: this.device, opset: this.graph.opset, floatDType: 'f32' });
    const out: ModelOutput = { logits };
    if (inputs.labels) {
      const task = this.task !== 'base' ? this.task : logits.ndim === 3 ? 'causal-lm' : 'sequence-classification';
      if (task === 'causal-lm') out.loss = causalLmLoss(logits, inputs.labels as IdsInput);
      else out.loss = classificationLoss(logits, inputs.labels, logits.shape[1], (this.config.problem_type as string) ?? null);
    }
    return out;
  }
}

function asValue(v: Value | IdsInput, elemType: number, name: string): Value {
  if (v instanceof Tensor) return v;
  if (isHost(v as Host)) return v as Host;
  const rows = hostRows(v as IdsInput, name);
  const dt = elemType === 1 ? 'f32' : elemType === 9 ? 'bool' : elemType === 6 ? 'i32' : 'i64';
  return host(dt, [rows.length, rows[0]?.length ?? 0], rows.flat(), name);
}

function isParameter(name: string, ref: TensorRef): boolean {
  return FLOAT_TYPES.has(ref.dataType) && ref.count > 1 && !BUFFER_NAMES.test(name);
}

/** What each initializer is used as: Embedding (Gather data), Linear (MatMul/Gemm right operand), norms. */
function usageKinds(g: OnnxGraph): Map<string, string> {
  const transposed = new Map<string, string>();
  for (const n of g.nodes)
    if ((n.op === 'Transpose' || n.op === 'Identity' || n.op === 'Cast') && g.initializers.has(n.inputs[0]))
      transposed.set(n.outputs[0], n.inputs[0]);
  const kinds = new Map<string, string>();
  const mark = (value: string, kind: string) => {
    const name = g.initializers.has(value) ? value : transposed.get(value);
    if (!name) return;
    const prev = kinds.get(name);
    if (!prev || KIND_RANK[kind] > KIND_RANK[prev]) kinds.set(name, kind);
  };
  for (const n of g.nodes) {
    if (n.op === 'Gather') mark(n.inputs[0], 'Embedding');
    else if ((n.op === 'MatMul' || n.op === 'Gemm') && n.inputs[1]) {
      const name = g.initializers.has(n.inputs[1]) ? n.inputs[1] : transposed.get(n.inputs[1]);
      if (name && g.initializers.get(name)!.dims.length === 2) mark(n.inputs[1], 'Linear');
    } else if (n.op === 'LayerNormalization') {
      mark(n.inputs[1], 'LayerNorm');
      if (n.inputs[2]) mark(n.inputs[2], 'LayerNorm');
    } else if (n.op === 'SimplifiedLayerNormalization') mark(n.inputs[1], 'RMSNorm');
  }
  return kinds;
}

/** Checks that every node can run; lists every unsupported one in one E_UNSUPPORTED error. */
export function checkOperators(g: OnnxGraph): void {
  const bad = g.nodes.filter((n) => !isSupported(n.op, n.domain));
  if (bad.length) {
    const list = bad.map((n) => `${n.domain && n.domain !== 'ai.onnx' ? `${n.domain}.` : ''}${n.op} (node '${n.name}')`);
    throw new SiftError('E_UNSUPPORTED', `ONNX model: ${bad.length} node(s) with unsupported operators: ${list.join(', ')}`);
  }
}

/** A trainable model from ONNX bytes; `baseDir` is the folder external data is read from. */
export function loadOnnxModelFromBuffer(bytes: Uint8Array, opts: OnnxLoadOptions & { baseDir?: string | null } = {}): OnnxModel {
  const g = parseOnnx(bytes, opts.baseDir ?? null);
  checkOperators(g);
  return new OnnxModel(g, opts);
}

/** A trainable model from an .onnx file (external data next to it). */
export function loadOnnxModel(file: string, opts: OnnxLoadOptions = {}): OnnxModel {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    throw new SiftError('E_IO', `cannot read ${file}: ${(e as Error).message}`);
  }
  check(bytes.length > 0, 'E_FORMAT', `${file}: empty file`);
  return loadOnnxModelFromBuffer(bytes, { ...opts, baseDir: path.dirname(path.resolve(file)) });
}
