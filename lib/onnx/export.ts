/**
 * ONNX export of sift-ft's models (GPT-2, BERT, RoBERTa and the decoders of decoder.ts; causal LM, sequence
 * classification and base models): the forward written out in standard ai.onnx ops (opset 17+),
 * inputs input_ids / attention_mask (/ token_type_ids for BERT) with dynamic batch and sequence
 * axes, and each weight as an initializer named by its state-dict key in its own layout (Linear
 * weights stay [out, in] behind a Transpose node), so an import gives back the same parameters.
 * Models over 2 GB write their weights to an external data file next to the graph.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Tensor } from '../engine/tensor';
import { SiftError, check } from '../engine/errors';
import { noGrad } from '../autograd/tape';
import { cast } from '../autograd/shape';
import { PreTrainedModel, cfgOptInt } from '../models/common';
import { GPT2LMHeadModel, GPT2ForSequenceClassification, GPT2BaseModel, gpt2Params } from '../models/gpt2';
import { BertForSequenceClassification, RobertaForSequenceClassification, BertBaseModel } from '../models/bert';
import { DecoderForCausalLM, DecoderForSequenceClassification, DecoderBaseModel, DecoderParams, GemmaRMSNorm } from '../models/decoder';
import { ropeInvFreq } from '../models/rope';
import { RMSNorm } from '../nn/layers';
import { applyIncrement, unmergeIncrement, loadIncrement } from '../sift/increment';
import { writeFileAtomic } from '../io/atomic';
import { GraphBuilder, LazyInitializer, ONNX_DTYPE } from './builder';
import { onnxType, encodeMessage } from './proto';

export interface ExportOnnxOptions {
  /** Default opset of the ai.onnx domain: 17 (LayerNormalization); 17 to 21 accepted. */
  opset?: number;
  /** A SIFT increment file (or loaded increment) merged into the weights for the export only. */
  delta?: string;
  /** Weights in `<out>.data` instead of inside the graph: true, false, or 'auto' (over 2 GB; default). */
  externalData?: boolean | 'auto';
}

export interface ExportOnnxResult {
  path: string;
  /** The external data file, when one was written. */
  dataPath: string | null;
  inputs: string[];
  outputs: string[];
  opset: number;
  initializers: number;
  bytes: number;
}

/** Protobuf messages cannot exceed 2 GiB; stay clear of it with the graph's own bytes. */
const EXTERNAL_THRESHOLD = 2 ** 31 - 2 ** 26;

/** Writes a model's forward as ONNX nodes (exported for the tests of its attention lowering). */
export class Emitter {
  readonly g: GraphBuilder;
  private readonly names = new Map<Tensor, string>();
  constructor(
    readonly model: PreTrainedModel,
    opset: number,
  ) {
    this.g = new GraphBuilder(opset);
    for (const [n, t] of model.namedParameters()) this.names.set(t, n);
  }

  /** The initializer of a parameter (its f32 values read when the file is written). */
  w(t: Tensor): string {
    const name = this.names.get(t);
    if (!name) throw new SiftError('E_ARG', 'export-onnx: a weight is not a parameter of the model');
    return this.g.initializer({
      name,
      dtype: 'f32',
      dims: t.shape,
      nbytes: t.size * 4,
      bytes: () =>
        noGrad(() => {
          const f = t.dtype === 'f32' ? t : cast(t, 'f32');
          const a = f.toArray() as Float32Array;
          if (f !== t) f.dispose();
          return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
        }),
    });
  }

  op(op: string, inputs: string[], attrs: Parameters<GraphBuilder['node']>[2] = {}): string {
    return this.g.node(op, inputs, attrs);
  }

  /** x @ W^T + b for a torch Linear weight [out, in]. */
  linear(x: string, weight: Tensor, bias: Tensor | null): string {
    const wt = this.op('Transpose', [this.w(weight)], { perm: { ints: [1, 0] } });
    const y = this.op('MatMul', [x, wt]);
    return bias ? this.op('Add', [y, this.w(bias)]) : y;
  }

  /** GPT-2's Conv1D: x @ W + b with W [in, out]. */
  conv1d(x: string, weight: Tensor, bias: Tensor): string {
    return this.op('Add', [this.op('MatMul', [x, this.w(weight)]), this.w(bias)]);
  }

  layerNorm(x: string, weight: Tensor | null, bias: Tensor | null, eps: number, dim: number): string {
    const wName = weight ? this.w(weight) : this.g.constant('f32', [dim], new Float32Array(dim).fill(1));
    const inputs = [x, wName];
    if (bias) inputs.push(this.w(bias));
    return this.op('LayerNormalization', inputs, { axis: { int: -1 }, epsilon: { float: eps } });
  }

  reduceMeanLast(x: string): string {
    if (this.g.opset >= 18) return this.op('ReduceMean', [x, this.g.i64([-1])], { keepdims: { int: 1 } });
    return this.op('ReduceMean', [x], { axes: { ints: [-1] }, keepdims: { int: 1 } });
  }

  /** LLaMA's RMSNorm: x / sqrt(mean(x^2) + eps) * w. */
  rmsNorm(x: string, weight: Tensor, eps: number): string {
    return this.rmsNormWith(x, this.w(weight), eps);
  }

  /** RMSNorm with a graph value as the scale (Gemma's 1 + w). */
  rmsNormWith(x: string, scale: string, eps: number): string {
    const ms = this.reduceMeanLast(this.op('Pow', [x, this.g.f32(2)]));
    const den = this.op('Sqrt', [this.op('Add', [ms, this.g.f32(eps)])]);
    return this.op('Mul', [this.op('Div', [x, den]), scale]);
  }

  /** tanh(x / cap) * cap. */
  softcap(x: string, cap: number): string {
    return this.op('Mul', [this.op('Tanh', [this.op('Div', [x, this.g.f32(cap)])]), this.g.f32(cap)]);
  }

  /** Splits the last dim into pieces of the given sizes. */
  split(x: string, sizes: number[]): string[] {
    return this.g.nodeN('Split', [x, this.g.i64(sizes)], { axis: { int: -1 } }, sizes.length);
  }

  act(x: string, name: string): string {
    const c = (v: number) => this.g.f32(v);
    switch (name) {
      case 'gelu': {
        const e = this.op('Erf', [this.op('Div', [x, c(Math.SQRT2)])]);
        return this.op('Mul', [this.op('Mul', [x, c(0.5)]), this.op('Add', [e, c(1)])]);
      }
      case 'gelu_new':
      case 'gelu_pytorch_tanh':
      case 'gelu_fast': {
        const cube = this.op('Pow', [x, c(3)]);
        const inner = this.op('Mul', [this.op('Add', [x, this.op('Mul', [cube, c(0.044715)])]), c(Math.sqrt(2 / Math.PI))]);
        return this.op('Mul', [this.op('Mul', [x, c(0.5)]), this.op('Add', [this.op('Tanh', [inner]), c(1)])]);
      }
      case 'relu':
        return this.op('Relu', [x]);
      case 'silu':
      case 'swish':
        return this.op('Mul', [x, this.op('Sigmoid', [x])]);
      case 'tanh':
        return this.op('Tanh', [x]);
      case 'sigmoid':
        return this.op('Sigmoid', [x]);
      default:
        throw new SiftError('E_UNSUPPORTED', `export-onnx: activation '${name}' is not supported`);
    }
  }

  /** [B, T, H*hd] -> [B, H, T, hd]. */
  heads(x: string, H: number, hd: number): string {
    return this.op('Transpose', [this.op('Reshape', [x, this.g.i64([0, 0, H, hd])])], { perm: { ints: [0, 2, 1, 3] } });
  }

  merge(x: string, width: number): string {
    return this.op('Reshape', [this.op('Transpose', [x], { perm: { ints: [0, 2, 1, 3] } }), this.g.i64([0, 0, width])]);
  }

  /**
   * softmax(q k^T * scale, masked) v with `allowed` a bool [B, 1, Tq|1, Tk] mask (or null); with
   * softcap > 0 the scores are soft-capped first (softcap * tanh(s / softcap): Div, Tanh, Mul).
   */
  attention(q: string, k: string, v: string, allowed: string | null, scale: number, softcap = 0): string {
    const kt = this.op('Transpose', [k], { perm: { ints: [0, 1, 3, 2] } });
    let s = this.op('Mul', [this.op('MatMul', [q, kt]), this.g.f32(scale)]);
    if (softcap > 0) s = this.op('Mul', [this.op('Tanh', [this.op('Div', [s, this.g.f32(softcap)])]), this.g.f32(softcap)]);
    if (allowed) s = this.op('Where', [allowed, s, this.g.f32(-3.4028234663852886e38)]);
    return this.op('MatMul', [this.op('Softmax', [s], { axis: { int: -1 } }), v]);
  }

  /** Scalar int64 dim `i` of a tensor. */
  dim(x: string, i: number): string {
    return this.op('Gather', [this.op('Shape', [x]), this.g.i64([i], true)], { axis: { int: 0 } });
  }

  /**
   * Padding (and, when causal, causal) mask as bool [B, 1, T|1, T]. window > 0 (causal only) adds
   * the sliding window of scaledDotProductAttention: query i sees key j iff j <= i and i - j < window
   * (the keys with i - j >= window, Trilu's lower part below diagonal -window, are removed).
   */
  attentionMask(mask: string, T: string, causal: boolean, window = 0): string {
    check(window === 0 || causal, 'E_ARG', 'export-onnx: a sliding window needs the causal mask');
    const pad = this.op('Unsqueeze', [this.op('Cast', [mask], { to: { int: ONNX_DTYPE.bool } }), this.g.i64([1, 2])]);
    if (!causal) return pad;
    const TT = this.op('Concat', [this.op('Unsqueeze', [T, this.g.i64([0])]), this.op('Unsqueeze', [T, this.g.i64([0])])], {
      axis: { int: 0 },
    });
    const ones = this.op('ConstantOfShape', [TT], { value: { tensor: { dtype: 'f32', dims: [1], values: [1] } } });
    const lower = (k: number) =>
      this.op('Cast', [this.op('Trilu', k === 0 ? [ones] : [ones, this.g.i64([k], true)], { upper: { int: 0 } })], {
        to: { int: ONNX_DTYPE.bool },
      });
    let tri = lower(0);
    if (window > 0) tri = this.op('And', [tri, this.op('Not', [lower(-window)])]);
    return this.op('And', [tri, pad]);
  }

  /** Positions 0..T-1 as int64 [T]. */
  range(T: string): string {
    return this.op('Range', [this.g.i64([0], true), T, this.g.i64([1], true)]);
  }

  /** hidden [B, T, D] at the last kept token of each row (keep: bool [B, T]) -> [B, D]. */
  lastToken(hidden: string, keep: string, T: string, D: number): string {
    const idx = this.op('Mul', [this.op('Cast', [keep], { to: { int: ONNX_DTYPE.i64 } }), this.range(T)]);
    const last = this.op('ArgMax', [idx], { axis: { int: 1 }, keepdims: { int: 0 } });
    const B = this.dim(hidden, 0);
    const rows = this.op('Mul', [this.op('Range', [this.g.i64([0], true), B, this.g.i64([1], true)]), T]);
    const flat = this.op('Reshape', [hidden, this.g.i64([-1, D])]);
    return this.op('Gather', [flat, this.op('Add', [rows, last])], { axis: { int: 0 } });
  }

  /** Rows to pool for decoder classification: tokens != pad_token_id, else the attention mask. */
  keepMask(ids: string, mask: string, pad: number | null): string {
    if (pad === null) return this.op('Cast', [mask], { to: { int: ONNX_DTYPE.bool } });
    return this.op('Not', [this.op('Equal', [ids, this.g.i64([pad], true)])]);
  }
}

function emitGpt2(
  e: Emitter,
  m: GPT2LMHeadModel | GPT2ForSequenceClassification | GPT2BaseModel,
): { out: string; kind: 'lm' | 'cls' | 'base'; width: number } {
  const g = e.g;
  const p = gpt2Params(m.config);
  const body = m instanceof GPT2BaseModel ? m.body : m.transformer;
  const ids = g.input('input_ids', 'i64', ['batch_size', 'sequence_length']);
  const mask = g.input('attention_mask', 'i64', ['batch_size', 'sequence_length']);
  const T = e.dim(ids, 1);
  const pos = e.op('Unsqueeze', [e.range(T), g.i64([0])]);
  let h = e.op('Add', [e.op('Gather', [e.w(body.wte.weight), ids]), e.op('Gather', [e.w(body.wpe.weight), pos])]);
  const allowed = e.attentionMask(mask, T, true);
  const hd = p.D / p.nHead;
  body.h.items.forEach((blk, i) => {
    const x = e.layerNorm(h, blk.ln_1.weight, blk.ln_1.bias, blk.ln_1.eps, p.D);
    const qkv = e.conv1d(x, blk.attn.c_attn.weight, blk.attn.c_attn.bias);
    const [q, k, v] = g.nodeN('Split', [qkv, g.i64([p.D, p.D, p.D])], { axis: { int: 2 } }, 3);
    const scale = (p.scaleWeights ? 1 / Math.sqrt(hd) : 1) / (p.scaleByLayer ? i + 1 : 1);
    const a = e.attention(e.heads(q, p.nHead, hd), e.heads(k, p.nHead, hd), e.heads(v, p.nHead, hd), allowed, scale);
    h = e.op('Add', [h, e.conv1d(e.merge(a, p.D), blk.attn.c_proj.weight, blk.attn.c_proj.bias)]);
    const y = e.layerNorm(h, blk.ln_2.weight, blk.ln_2.bias, blk.ln_2.eps, p.D);
    const f = e.act(e.conv1d(y, blk.mlp.c_fc.weight, blk.mlp.c_fc.bias), p.act);
    h = e.op('Add', [h, e.conv1d(f, blk.mlp.c_proj.weight, blk.mlp.c_proj.bias)]);
  });
  h = e.layerNorm(h, body.ln_f.weight, body.ln_f.bias, body.ln_f.eps, p.D);
  if (m instanceof GPT2LMHeadModel) return { out: e.linear(h, m.lm_head.currentWeight(), null), kind: 'lm', width: p.vocab };
  if (m instanceof GPT2ForSequenceClassification) {
    const pooled = e.lastToken(h, e.keepMask(ids, mask, cfgOptInt(m.config, 'pad_token_id')), T, p.D);
    return { out: e.linear(pooled, m.score.weight, m.score.bias), kind: 'cls', width: m.numLabels };
  }
  return { out: h, kind: 'base', width: p.D };
}

function emitBert(
  e: Emitter,
  m: BertForSequenceClassification | RobertaForSequenceClassification | BertBaseModel,
): { out: string; kind: 'lm' | 'cls' | 'base'; width: number } {
  const g = e.g;
  const body = m instanceof BertForSequenceClassification ? m.bert : m instanceof RobertaForSequenceClassification ? m.roberta : m.body;
  const p = body.p;
  const ids = g.input('input_ids', 'i64', ['batch_size', 'sequence_length']);
  const mask = g.input('attention_mask', 'i64', ['batch_size', 'sequence_length']);
  const T = e.dim(ids, 1);
  const emb = body.embeddings;
  let pos: string;
  let types: string;
  if (p.roberta) {
    // transformers' create_position_ids_from_input_ids: running count of non-padding tokens + pad.
    const pad = p.padTokenId ?? 1;
    const keep = e.op('Cast', [e.op('Not', [e.op('Equal', [ids, g.i64([pad], true)])])], { to: { int: ONNX_DTYPE.i64 } });
    const count = e.op('Mul', [e.op('CumSum', [keep, g.i64([1], true)]), keep]);
    pos = e.op('Add', [count, g.i64([pad], true)]);
    types = e.op('Gather', [e.w(emb.token_type_embeddings.weight), g.i64([0], true)]);
  } else {
    pos = e.op('Unsqueeze', [e.range(T), g.i64([0])]);
    const tt = g.input('token_type_ids', 'i64', ['batch_size', 'sequence_length']);
    types = e.op('Gather', [e.w(emb.token_type_embeddings.weight), tt]);
  }
  let h = e.op('Add', [
    e.op('Add', [e.op('Gather', [e.w(emb.word_embeddings.weight), ids]), types]),
    e.op('Gather', [e.w(emb.position_embeddings.weight), pos]),
  ]);
  h = e.layerNorm(h, emb.LayerNorm.weight, emb.LayerNorm.bias, emb.LayerNorm.eps, p.D);
  const allowed = e.attentionMask(mask, T, false);
  const hd = p.D / p.nHead;
  for (const l of body.encoder.layer.items) {
    const s = l.attention.self;
    const a = e.attention(
      e.heads(e.linear(h, s.query.weight, s.query.bias), p.nHead, hd),
      e.heads(e.linear(h, s.key.weight, s.key.bias), p.nHead, hd),
      e.heads(e.linear(h, s.value.weight, s.value.bias), p.nHead, hd),
      allowed,
      1 / Math.sqrt(hd),
    );
    const ao = l.attention.output;
    h = e.layerNorm(
      e.op('Add', [e.linear(e.merge(a, p.D), ao.dense.weight, ao.dense.bias), h]),
      ao.LayerNorm.weight,
      ao.LayerNorm.bias,
      ao.LayerNorm.eps,
      p.D,
    );
    const f = e.act(e.linear(h, l.intermediate.dense.weight, l.intermediate.dense.bias), p.act);
    const o = l.output;
    h = e.layerNorm(
      e.op('Add', [e.linear(f, o.dense.weight, o.dense.bias), h]),
      o.LayerNorm.weight,
      o.LayerNorm.bias,
      o.LayerNorm.eps,
      p.D,
    );
  }
  const first = () => e.op('Gather', [h, g.i64([0], true)], { axis: { int: 1 } });
  if (m instanceof BertForSequenceClassification) {
    const pooled = e.op('Tanh', [e.linear(first(), body.pooler!.dense.weight, body.pooler!.dense.bias)]);
    return { out: e.linear(pooled, m.classifier.weight, m.classifier.bias), kind: 'cls', width: m.numLabels };
  }
  if (m instanceof RobertaForSequenceClassification) {
    const head = m.classifier as unknown as {
      dense: { weight: Tensor; bias: Tensor | null };
      out_proj: { weight: Tensor; bias: Tensor | null };
    };
    const x = e.op('Tanh', [e.linear(first(), head.dense.weight, head.dense.bias)]);
    return { out: e.linear(x, head.out_proj.weight, head.out_proj.bias), kind: 'cls', width: m.numLabels };
  }
  return { out: h, kind: 'base', width: p.D };
}

function emitDecoder(
  e: Emitter,
  m: DecoderForCausalLM | DecoderForSequenceClassification | DecoderBaseModel,
): { out: string; kind: 'lm' | 'cls' | 'base'; width: number } {
  const g = e.g;
  const body = m instanceof DecoderBaseModel ? m.body : m.model;
  const p = body.p;
  const { rotaryDim, attentionFactor } = p.rope;
  const ids = g.input('input_ids', 'i64', ['batch_size', 'sequence_length']);
  const mask = g.input('attention_mask', 'i64', ['batch_size', 'sequence_length']);
  const T = e.dim(ids, 1);
  const posF = e.op('Unsqueeze', [e.op('Cast', [e.range(T)], { to: { int: ONNX_DTYPE.f32 } }), g.i64([1])]);
  const freqs = e.op('Mul', [posF, emitInvFreq(e, p, T)]);
  const embAngles = e.op('Concat', [freqs, freqs], { axis: { int: -1 } });
  const cos = e.op('Cos', [embAngles]);
  const sin = e.op('Sin', [embAngles]);
  const half = rotaryDim / 2;
  const rope = (x: string) => {
    const part = rotaryDim === p.headDim ? x : e.op('Slice', [x, g.i64([0]), g.i64([rotaryDim]), g.i64([3])]);
    const x1 = e.op('Slice', [part, g.i64([0]), g.i64([half]), g.i64([3])]);
    const x2 = e.op('Slice', [part, g.i64([half]), g.i64([rotaryDim]), g.i64([3])]);
    const rot = e.op('Concat', [e.op('Neg', [x2]), x1], { axis: { int: 3 } });
    const turned = e.op('Add', [e.op('Mul', [part, cos]), e.op('Mul', [rot, sin])]);
    if (rotaryDim === p.headDim) return turned;
    const scaled = attentionFactor === 1 ? turned : e.op('Mul', [turned, g.f32(attentionFactor)]);
    return e.op('Concat', [scaled, e.op('Slice', [x, g.i64([rotaryDim]), g.i64([p.headDim]), g.i64([3])])], { axis: { int: 3 } });
  };
  const norm = (x: string, n: RMSNorm | GemmaRMSNorm) =>
    n instanceof GemmaRMSNorm ? e.rmsNormWith(x, e.op('Add', [e.w(n.weight), g.f32(1)]), n.eps) : e.rmsNorm(x, n.weight, n.eps);
  // [B, T, h*hd] -> [B, h, T, hd], per-head norm (qwen3) before the transpose.
  const heads = (x: string, h: number, n?: RMSNorm) => {
    const r = e.op('Reshape', [x, g.i64([0, 0, h, p.headDim])]);
    return e.op('Transpose', [n ? norm(r, n) : r], { perm: { ints: [0, 2, 1, 3] } });
  };
  const rep = p.nHead / p.nKV;
  const repeat = (x: string) =>
    rep === 1
      ? x
      : e.op('Reshape', [
          e.op('Expand', [e.op('Unsqueeze', [x, g.i64([2])]), g.i64([1, 1, rep, 1, 1])]),
          g.i64([0, p.nHead, -1, p.headDim]),
        ]);
  let h = e.op('Gather', [e.w(body.embed_tokens.weight), ids]);
  if (p.embedScale) h = e.op('Mul', [h, g.f32(Math.fround(Math.sqrt(p.D)))]);
  const allowed = new Map<number, string>();
  const allowedFor = (w: number | null) => {
    const key = w ?? 0;
    let a = allowed.get(key);
    if (!a) {
      a = e.attentionMask(mask, T, true, key);
      allowed.set(key, a);
    }
    return a;
  };
  const f2 = rotaryDim === p.headDim ? attentionFactor * attentionFactor : 1;
  for (const l of body.layers.items) {
    const x = norm(h, l.input_layernorm);
    const at = l.self_attn;
    let qp: string, kp: string, vp: string;
    if (at.qkv_proj) {
      const qkv = e.linear(x, at.qkv_proj.weight, at.qkv_proj.bias);
      [qp, kp, vp] = e.split(qkv, [p.nHead * p.headDim, p.nKV * p.headDim, p.nKV * p.headDim]);
    } else {
      qp = e.linear(x, at.q_proj!.weight, at.q_proj!.bias);
      kp = e.linear(x, at.k_proj!.weight, at.k_proj!.bias);
      vp = e.linear(x, at.v_proj!.weight, at.v_proj!.bias);
    }
    const q = rope(heads(qp, p.nHead, at.q_norm));
    const k = repeat(rope(heads(kp, p.nKV, at.k_norm)));
    const v = repeat(heads(vp, p.nKV));
    const a = e.attention(q, k, v, allowedFor(l.window), p.attnScale * f2, p.attnSoftcap ?? 0);
    let ao = e.linear(e.merge(a, p.nHead * p.headDim), at.o_proj.weight, at.o_proj.bias);
    if (l.pre_feedforward_layernorm) ao = norm(ao, l.post_attention_layernorm);
    h = e.op('Add', [h, ao]);
    const y = norm(h, l.pre_feedforward_layernorm ?? l.post_attention_layernorm);
    const mlp = l.mlp;
    let gate: string, up: string;
    if (mlp.gate_up_proj) {
      [gate, up] = e.split(e.linear(y, mlp.gate_up_proj.weight, mlp.gate_up_proj.bias), [p.inner, p.inner]);
    } else {
      gate = e.linear(y, mlp.gate_proj!.weight, mlp.gate_proj!.bias);
      up = e.linear(y, mlp.up_proj!.weight, mlp.up_proj!.bias);
    }
    let mo = e.linear(e.op('Mul', [e.act(gate, p.act), up]), mlp.down_proj.weight, mlp.down_proj.bias);
    if (l.post_feedforward_layernorm) mo = norm(mo, l.post_feedforward_layernorm);
    h = e.op('Add', [h, mo]);
  }
  h = norm(h, body.norm);
  if (m instanceof DecoderForCausalLM) {
    let logits = e.linear(h, m.lm_head.currentWeight(), null);
    if (p.finalSoftcap !== null) logits = e.softcap(logits, p.finalSoftcap);
    return { out: logits, kind: 'lm', width: p.vocab };
  }
  if (m instanceof DecoderForSequenceClassification) {
    const pooled = e.lastToken(h, e.keepMask(ids, mask, p.padTokenId), T, p.D);
    return { out: e.linear(pooled, m.score.weight, m.score.bias), kind: 'cls', width: m.numLabels };
  }
  return { out: h, kind: 'base', width: p.D };
}

/**
 * The inverse frequencies as a graph value: a constant, or for the types that depend on the
 * sequence length, computed from T (longrope: long or short factors; dynamic: the NTK base).
 */
function emitInvFreq(e: Emitter, p: DecoderParams, T: string): string {
  const g = e.g;
  const spec = p.rope;
  const n = spec.rotaryDim / 2;
  if (spec.type === 'longrope') {
    const short = ropeInvFreq(spec, 0);
    const long = ropeInvFreq(spec, spec.originalMax + 1);
    const isLong = e.op('Greater', [T, g.i64([spec.originalMax], true)]);
    return e.op('Where', [isLong, g.constant('f32', [n], long), g.constant('f32', [n], short)]);
  }
  if (spec.type === 'dynamic') {
    const factor = Number(spec.scaling!.factor);
    const d = spec.rotaryDim;
    const L = e.op('Cast', [e.op('Max', [T, g.i64([spec.maxPositions], true)])], { to: { int: ONNX_DTYPE.f32 } });
    const ratio = e.op('Sub', [e.op('Mul', [L, g.f32(factor / spec.maxPositions)]), g.f32(factor - 1)]);
    const base = e.op('Mul', [e.op('Pow', [ratio, g.f32(d / (d - 2))]), g.f32(spec.theta)]);
    const exps = new Float32Array(n).map((_, i) => Math.fround((2 * i) / d));
    return e.op('Reciprocal', [e.op('Pow', [base, g.constant('f32', [n], exps)])]);
  }
  const inv = ropeInvFreq(spec, 0);
  return g.constant('f32', [n], inv);
}

/** The graph of a model (weights not read yet). */
export function buildOnnxGraph(model: PreTrainedModel, opset = 17): GraphBuilder {
  check(Number.isInteger(opset) && opset >= 17 && opset <= 21, 'E_ARG', `export-onnx: opset must be 17 to 21, got ${opset}`);
  const e = new Emitter(model, opset);
  let r: { out: string; kind: 'lm' | 'cls' | 'base'; width: number };
  if (model instanceof GPT2LMHeadModel || model instanceof GPT2ForSequenceClassification || model instanceof GPT2BaseModel)
    r = emitGpt2(e, model);
  else if (
    model instanceof BertForSequenceClassification ||
    model instanceof RobertaForSequenceClassification ||
    model instanceof BertBaseModel
  )
    r = emitBert(e, model);
  else if (model instanceof DecoderForCausalLM || model instanceof DecoderForSequenceClassification || model instanceof DecoderBaseModel)
    r = emitDecoder(e, model);
  else throw new SiftError('E_UNSUPPORTED', `export-onnx: architecture ${model.architecture} is not supported`);
  if (r.kind === 'cls') e.g.output(r.out, 'logits', 'f32', ['batch_size', r.width]);
  else e.g.output(r.out, r.kind === 'lm' ? 'logits' : 'last_hidden_state', 'f32', ['batch_size', 'sequence_length', r.width]);
  return e.g;
}

/**
 * Writes `model` as an ONNX graph to `outPath`. With `delta`, the increment is merged for the
 * export and removed again afterwards (the model is left as it was).
 */
export function exportOnnx(model: PreTrainedModel, outPath: string, opts: ExportOnnxOptions = {}): ExportOnnxResult {
  const opset = opts.opset ?? 17;
  const g = buildOnnxGraph(model, opset);
  const inc = opts.delta ? loadIncrement(opts.delta, { device: model.device }) : null;
  if (inc) applyIncrement(model, inc);
  try {
    const total = g.initializers.reduce((a, i) => a + i.nbytes, 0);
    const external = opts.externalData === true || ((opts.externalData ?? 'auto') === 'auto' && total > EXTERNAL_THRESHOLD);
    const dataName = `${path.basename(outPath)}.data`;
    const dataPath = path.join(path.dirname(path.resolve(outPath)), dataName);
    let offsets: Map<string, number> | null = null;
    if (external) {
      offsets = new Map();
      let off = 0;
      for (const init of g.initializers) {
        offsets.set(init.name, off);
        off += Math.ceil(init.nbytes / 64) * 64;
      }
      writeFileAtomic(
        dataPath,
        (function* () {
          for (const init of g.initializers) {
            const b = init.bytes();
            yield b;
            const padN = Math.ceil(b.byteLength / 64) * 64 - b.byteLength;
            if (padN) yield new Uint8Array(padN);
          }
        })(),
      );
    }
    const tensorProto = (init: LazyInitializer): Record<string, unknown> => {
      const base = { name: init.name, dims: init.dims, data_type: ONNX_DTYPE[init.dtype] };
      if (!offsets) return { ...base, raw_data: init.bytes() };
      return {
        ...base,
        data_location: 1,
        external_data: [
          { key: 'location', value: dataName },
          { key: 'offset', value: String(offsets.get(init.name)) },
          { key: 'length', value: String(init.nbytes) },
        ],
      };
    };
    const obj = g.modelObject(model.architecture, tensorProto, {
      'sift-ft.architecture': model.architecture,
      'sift-ft.task': model.task,
      'sift-ft.config': JSON.stringify(model.config),
    });
    const bytes = encodeMessage(onnxType('ModelProto'), obj);
    writeFileAtomic(outPath, [bytes]);
    if (!external && fs.existsSync(dataPath)) {
      // A stale data file from an earlier external export would mislead readers.
      try {
        fs.unlinkSync(dataPath);
      } catch {
        /* ignore */
      }
    }
    return {
      path: outPath,
      dataPath: external ? dataPath : null,
      opset,
      inputs: g.inputs.map((i) => String(i.name)),
      outputs: g.outputs.map((o) => String(o.name)),
      initializers: g.initializers.length,
      bytes: bytes.byteLength + (external ? total : 0),
    };
  } finally {
    if (inc) {
      unmergeIncrement(model, inc);
      inc.dispose();
    }
  }
}
