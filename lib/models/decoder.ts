/**
 * The decoder-only transformers of the LLaMA lineage as transformers computes them, one
 * implementation with switches read from config.json by model_type:
 *
 * - llama: RMSNorm pre-norm blocks, grouped-query attention, rotary embeddings, a SwiGLU MLP,
 *   attention_bias / mlp_bias, tied or untied head;
 * - qwen2: bias on q/k/v, none on o; sliding windows on layers >= max_window_layers when
 *   use_sliding_window;
 * - qwen3: explicit head_dim, per-head RMSNorm q_norm / k_norm before rotary;
 * - mistral: explicit head_dim, sliding_window on every layer;
 * - gemma: RMSNorm scaled by (1 + weight) in f32, embeddings times sqrt(hidden) in the
 *   activations' dtype, tanh-GELU gated MLP, tied head;
 * - gemma2: gemma plus post-attention and pre/post-feedforward norms, attention and final logit
 *   soft-capping, query_pre_attn_scalar, sliding windows on alternate layers;
 * - phi3: fused qkv_proj and gate_up_proj, partial_rotary_factor, sliding_window, resid_pdrop.
 *
 * Every family reads transformers' `layer_types` when the config has it, and every rope_scaling of
 * rope.ts. Causal LM, sequence classification (score on the last non-padding token) and the bare
 * model, with transformers' class names per family.
 */
import { Tensor } from '../engine/tensor';
import { SiftError, check } from '../engine/errors';
import type { DType } from '../engine/dtype';
import { Module } from '../nn/module';
import { Embedding, RMSNorm, Linear } from '../nn/layers';
import { add, mul, div, silu, tanh } from '../autograd/elementwise';
import { reshape, permute, concat, slice, split, cast } from '../autograd/shape';
import { rmsNorm } from '../autograd/nn';
import { scaledDotProductAttention, rotaryEmbedding, dropout, AttentionOptions } from '../autograd/attention';
import { tensor, zeros } from '../autograd/creation';
import { keep } from '../engine/scope';
import { LMHead, ModuleList } from './layers';
import {
  PreTrainedModel,
  HFConfig,
  ModelOptions,
  ModelInputs,
  ModelOutput,
  KVCache,
  LayerCache,
  ModelCtx,
  modelCtx,
  initOpts,
  cfgNum,
  cfgInt,
  cfgOptInt,
  cfgBool,
  cfgStr,
  numLabels,
  activation,
  idsTensor,
  rangePositions,
  causalLmLoss,
  classifierOutput,
  hostRows,
  lastTokenLogits,
  maskTensor,
  zeroRow,
  releaseInto,
} from './common';
import { RopeSpec, ropeFields, ropeSpec, ropeInvFreq, ropeVariant, ropeIsDynamic } from './rope';

export type DecoderFamily = 'llama' | 'qwen2' | 'qwen3' | 'mistral' | 'gemma' | 'gemma2' | 'phi3';

/** transformers' class-name prefix per family. */
export const DECODER_FAMILIES: Record<DecoderFamily, string> = {
  llama: 'Llama',
  qwen2: 'Qwen2',
  qwen3: 'Qwen3',
  mistral: 'Mistral',
  gemma: 'Gemma',
  gemma2: 'Gemma2',
  phi3: 'Phi3',
};

export interface DecoderParams {
  family: DecoderFamily;
  vocab: number;
  D: number;
  nLayer: number;
  nHead: number;
  nKV: number;
  headDim: number;
  inner: number;
  act: string;
  eps: number;
  rope: RopeSpec;
  maxPositions: number;
  /** Bias on q_proj, k_proj, v_proj (and qkv_proj). */
  qkvBias: boolean;
  /** Bias on o_proj. */
  oBias: boolean;
  mlpBias: boolean;
  /** Per-head RMSNorm of queries and keys before rotary (qwen3's q_norm, k_norm). */
  qkNorm: boolean;
  /** RMSNorm computed in f32 and scaled by (1 + weight), weights initialised to 0 (gemma). */
  normPlusOne: boolean;
  /** Embeddings multiplied by sqrt(hidden_size) rounded to the activations' dtype (gemma). */
  embedScale: boolean;
  /** post_attention_layernorm on the attention output, pre/post_feedforward_layernorm around the MLP (gemma2). */
  sandwichNorms: boolean;
  /** Scale of q k^T before soft-capping: query_pre_attn_scalar^-0.5 (gemma2) or head_dim^-0.5. */
  attnScale: number;
  attnSoftcap: number | null;
  finalSoftcap: number | null;
  /** Sliding window per layer (null: full causal attention). */
  windows: (number | null)[];
  /** phi3's fused projections. */
  fusedQkv: boolean;
  fusedGateUp: boolean;
  attnDropout: number;
  residDropout: number;
  tieDefault: boolean;
  std: number;
  padTokenId: number | null;
}

function familyOf(cfg: HFConfig): DecoderFamily {
  const t = String(cfg.model_type ?? 'llama');
  if (!(t in DECODER_FAMILIES))
    throw new SiftError('E_UNSUPPORTED', `model_type '${t}' is not a decoder family (${Object.keys(DECODER_FAMILIES).join(', ')})`);
  return t as DecoderFamily;
}

function optNum(cfg: HFConfig, key: string): number | null {
  const v = cfg[key];
  if (v === undefined || v === null) return null;
  return cfgNum(cfg, key);
}

/**
 * An optional number whose config class has a default: the default when config.json lacks the key
 * (as transformers' config classes fill it), none when the key is null.
 */
function optNumOr(cfg: HFConfig, key: string, dflt: number): number | null {
  return cfg[key] === undefined ? dflt : optNum(cfg, key);
}

/** sliding_window where config.json lacks it: MistralConfig and Gemma2Config default to 4096, the others to none. */
const SLIDING_DEFAULT: Partial<Record<DecoderFamily, number>> = { mistral: 4096, gemma2: 4096 };

/**
 * The sliding window of each layer: transformers' layer_types when present, else the family's rule
 * (mistral and phi3: every layer when sliding_window is set; qwen2/qwen3: layers from
 * max_window_layers on when use_sliding_window; gemma2: even layers).
 */
function layerWindows(cfg: HFConfig, family: DecoderFamily, nLayer: number): (number | null)[] {
  const dflt = SLIDING_DEFAULT[family];
  const sw = cfg.sliding_window === undefined && dflt !== undefined ? dflt : cfgOptInt(cfg, 'sliding_window');
  const lt = cfg.layer_types;
  const qwen = family === 'qwen2' || family === 'qwen3';
  // Qwen configs carry sliding_window even when use_sliding_window is false; it then means nothing.
  const useSw = qwen ? cfgBool(cfg, 'use_sliding_window', false) : true;
  if (Array.isArray(lt)) {
    check(lt.length === nLayer, 'E_ARG', `config.json: layer_types has ${lt.length} entries for ${nLayer} layers`);
    return lt.map((t, i) => {
      if (t === 'full_attention') return null;
      if (t === 'sliding_attention') {
        check(sw !== null && sw > 0 && useSw, 'E_ARG', `config.json: layer ${i} is 'sliding_attention' but sliding_window is not set`);
        return sw;
      }
      throw new SiftError(
        'E_UNSUPPORTED',
        `config.json: layer type '${String(t)}' of layer ${i} is not supported (full_attention, sliding_attention)`,
      );
    });
  }
  const none = new Array<number | null>(nLayer).fill(null);
  if (sw === null || sw <= 0) return none;
  switch (family) {
    case 'mistral':
    case 'phi3':
      return none.map(() => sw);
    case 'qwen2':
    case 'qwen3': {
      if (!useSw) return none;
      const from = cfgOptInt(cfg, 'max_window_layers') ?? 28;
      return none.map((_, i) => (i >= from ? sw : null));
    }
    case 'gemma2':
      return none.map((_, i) => (i % 2 === 0 ? sw : null));
    default:
      return none;
  }
}

export function decoderParams(cfg: HFConfig): DecoderParams {
  const family = familyOf(cfg);
  const gemma = family === 'gemma' || family === 'gemma2';
  const D = cfgInt(cfg, 'hidden_size', 4096);
  const nHead = cfgInt(cfg, 'num_attention_heads', 32);
  const nLayer = cfgInt(cfg, 'num_hidden_layers', 32);
  const headDim = cfgOptInt(cfg, 'head_dim') ?? (gemma ? 256 : family === 'qwen3' ? 128 : Math.floor(D / nHead));
  const maxPositions = cfgInt(cfg, 'max_position_embeddings', 2048);
  const rc = ropeFields(cfg);
  const ropeTheta = cfgNum(rc, 'rope_theta', family === 'qwen3' ? 1000000 : 10000);
  const attnBias = cfgBool(cfg, 'attention_bias', false);
  // Gemma's MLP: hidden_activation, else the tanh GELU Gemma was trained with (early Gemma configs say
  // hidden_act 'gelu', which transformers 4.38-4.4x ignored in favour of this default).
  const act = gemma ? cfgStr(cfg, 'hidden_activation', 'gelu_pytorch_tanh') : cfgStr(cfg, 'hidden_act', 'silu');
  const qpas = family === 'gemma2' ? (optNum(cfg, 'query_pre_attn_scalar') ?? 256) : null;
  const p: DecoderParams = {
    family,
    vocab: cfgInt(cfg, 'vocab_size', 32000),
    D,
    nLayer,
    nHead,
    nKV: cfgOptInt(cfg, 'num_key_value_heads') ?? nHead,
    headDim,
    inner: cfgInt(cfg, 'intermediate_size', 11008),
    act,
    eps: cfgNum(cfg, 'rms_norm_eps', family === 'phi3' ? 1e-5 : 1e-6),
    rope: ropeSpec(rc, headDim, ropeTheta, maxPositions),
    maxPositions,
    qkvBias: family === 'qwen2' ? true : family === 'mistral' || family === 'phi3' ? false : attnBias,
    oBias: family === 'qwen2' || family === 'mistral' || family === 'phi3' ? false : attnBias,
    mlpBias: family === 'llama' ? cfgBool(cfg, 'mlp_bias', false) : false,
    qkNorm: family === 'qwen3',
    normPlusOne: gemma,
    embedScale: gemma,
    sandwichNorms: family === 'gemma2',
    attnScale: 1 / Math.sqrt(qpas ?? headDim),
    // Gemma2Config's defaults (50 and 30) where config.json lacks the keys; null turns capping off.
    attnSoftcap: family === 'gemma2' ? optNumOr(cfg, 'attn_logit_softcapping', 50) : null,
    finalSoftcap: family === 'gemma2' ? optNumOr(cfg, 'final_logit_softcapping', 30) : null,
    windows: layerWindows(cfg, family, nLayer),
    fusedQkv: family === 'phi3',
    fusedGateUp: family === 'phi3',
    attnDropout: cfgNum(cfg, 'attention_dropout', 0),
    residDropout: family === 'phi3' ? cfgNum(cfg, 'resid_pdrop', 0) : 0,
    tieDefault: gemma,
    std: cfgNum(cfg, 'initializer_range', 0.02),
    padTokenId: cfgOptInt(cfg, 'pad_token_id'),
  };
  check(
    p.nKV > 0 && p.nHead % p.nKV === 0,
    'E_ARG',
    `config.json: num_attention_heads ${p.nHead} is not a multiple of num_key_value_heads ${p.nKV}`,
  );
  check(p.headDim % 2 === 0, 'E_ARG', `config.json: head dim ${p.headDim} must be even for rotary embeddings`);
  check(p.attnSoftcap === null || p.attnSoftcap > 0, 'E_ARG', `config.json: attn_logit_softcapping must be positive, got ${p.attnSoftcap}`);
  check(
    p.finalSoftcap === null || p.finalSoftcap > 0,
    'E_ARG',
    `config.json: final_logit_softcapping must be positive, got ${p.finalSoftcap}`,
  );
  check(qpas === null || qpas > 0, 'E_ARG', `config.json: query_pre_attn_scalar must be positive, got ${qpas}`);
  if (family === 'phi3') {
    const embd = cfgNum(cfg, 'embd_pdrop', 0);
    // transformers' Phi3Model does not apply embd_pdrop (only resid_pdrop and attention_dropout): checked, not used.
    check(embd >= 0 && embd < 1, 'E_ARG', `config.json: embd_pdrop must be in [0, 1), got ${embd}`);
  }
  check(p.residDropout >= 0 && p.residDropout < 1, 'E_ARG', `config.json: resid_pdrop must be in [0, 1), got ${p.residDropout}`);
  activation(p.act);
  return p;
}

/** LLaMA's name for decoderParams (kept for callers of the LLaMA-only API). */
export const llamaParams = decoderParams;

/** The inverse frequencies a forward at sequence length 0 uses (rope.ts has the length-dependent ones). */
export function llamaInvFreq(p: DecoderParams): Float32Array {
  return ropeInvFreq(p.rope, 0);
}

/** v rounded to what a scalar tensor of `dtype` holds (torch.tensor(v, dtype=...)). */
export function roundToDType(v: number, dtype: DType): number {
  if (dtype === 'f64') return v;
  const f = new Float32Array([v]);
  if (dtype === 'f32') return f[0];
  const u = new Uint32Array(f.buffer);
  if (dtype === 'bf16') {
    const x = u[0];
    u[0] = ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) << 16;
    return f[0];
  }
  if (dtype === 'f16') {
    // Round to 11 significant bits (normal range; the values used here are far from the limits).
    const e = Math.floor(Math.log2(Math.abs(v)));
    const q = Math.pow(2, e - 10);
    const r = v / q;
    const n = Math.round(r);
    const even = Math.abs(r - Math.trunc(r)) === 0.5 ? 2 * Math.round(r / 2) : n;
    return even * q;
  }
  return v;
}

/**
 * Gemma's RMSNorm: x / sqrt(mean(x^2) + eps) * (1 + weight), computed in f32 whatever the
 * activations' dtype and cast back (transformers' GemmaRMSNorm); the weight starts at 0.
 */
export class GemmaRMSNorm extends Module {
  weight: Tensor;
  constructor(
    readonly dim: number,
    readonly eps = 1e-6,
    opts: { device?: string; dtype?: ModelCtx['dtype'] } = {},
  ) {
    super();
    this.weight = this.registerParameter('weight', zeros([dim], { device: opts.device, dtype: opts.dtype }))!;
  }
  forward(x: Tensor): Tensor {
    const wide = x.dtype === 'f32' || x.dtype === 'f64';
    const xf = wide ? x : cast(x, 'f32');
    const w = this.weight.dtype === xf.dtype ? this.weight : cast(this.weight, xf.dtype);
    const y = rmsNorm(xf, add(w, 1), this.eps);
    return wide ? y : cast(y, x.dtype);
  }
}

type Norm = RMSNorm | GemmaRMSNorm;

function makeNorm(p: DecoderParams, dim: number, c: ModelCtx): Norm {
  const o = { device: c.device, dtype: c.dtype };
  return p.normPlusOne ? new GemmaRMSNorm(dim, p.eps, o) : new RMSNorm(dim, p.eps, o);
}

/** What attention needs besides q, k, v for one forward. */
interface AttnCtx {
  pos: Tensor;
  invFreq: Tensor;
  mask: Tensor | null;
}

export class DecoderAttention extends Module {
  q_proj?: Linear;
  k_proj?: Linear;
  v_proj?: Linear;
  qkv_proj?: Linear;
  o_proj: Linear;
  q_norm?: RMSNorm;
  k_norm?: RMSNorm;
  constructor(
    private readonly p: DecoderParams,
    private readonly window: number | null,
    c: ModelCtx,
  ) {
    super();
    const o = (bias: boolean) => ({ device: c.device, dtype: c.dtype, std: p.std, seed: c.seeds.next(), bias });
    const { D, nHead, nKV, headDim } = p;
    if (p.fusedQkv) {
      this.qkv_proj = this.registerModule('qkv_proj', new Linear(D, (nHead + 2 * nKV) * headDim, o(p.qkvBias)));
    } else {
      this.q_proj = this.registerModule('q_proj', new Linear(D, nHead * headDim, o(p.qkvBias)));
      this.k_proj = this.registerModule('k_proj', new Linear(D, nKV * headDim, o(p.qkvBias)));
      this.v_proj = this.registerModule('v_proj', new Linear(D, nKV * headDim, o(p.qkvBias)));
    }
    this.o_proj = this.registerModule('o_proj', new Linear(nHead * headDim, D, o(p.oBias)));
    if (p.qkNorm) {
      this.q_norm = this.registerModule('q_norm', new RMSNorm(headDim, p.eps, { device: c.device, dtype: c.dtype }));
      this.k_norm = this.registerModule('k_norm', new RMSNorm(headDim, p.eps, { device: c.device, dtype: c.dtype }));
    }
  }

  /** [B, T, h * hd] -> [B, h, T, hd], normalised per head (qwen3) and rotated. */
  private rotated(proj: Tensor, h: number, norm: RMSNorm | undefined, a: AttnCtx): Tensor {
    const [B, T] = proj.shape;
    const { headDim } = this.p;
    const { rotaryDim, attentionFactor } = this.p.rope;
    const r = reshape(proj, [B, T, h, headDim]);
    const n = norm ? norm.forward(r) : r;
    const pr = permute(n, [0, 2, 1, 3]);
    if (rotaryDim === headDim) {
      // The rotary backward reads no activation: what led to it goes at once, except the input
      // of a q/k norm, which its backward reads.
      return norm
        ? releaseInto(rotaryEmbedding(pr, a.pos, a.invFreq), pr, n)
        : releaseInto(rotaryEmbedding(pr, a.pos, a.invFreq), pr, r, proj);
    }
    // Partial rotary (phi3): the first rotaryDim features of each head turn, the rest pass; the
    // attention factor multiplies only the turned part, as transformers' cos and sin do.
    const turned = rotaryEmbedding(slice(pr, 3, 0, rotaryDim), a.pos, a.invFreq);
    const scaled = attentionFactor === 1 ? turned : mul(turned, attentionFactor);
    return concat([scaled, slice(pr, 3, rotaryDim, headDim)], 3);
  }

  forward(x: Tensor, a: AttnCtx, past: LayerCache | null): { out: Tensor; kv: LayerCache } {
    const [B, T] = x.shape;
    const { nHead, nKV, headDim } = this.p;
    let qp: Tensor, kp: Tensor, vp: Tensor;
    if (this.qkv_proj) {
      const qkv = this.qkv_proj.forward(x);
      [qp, kp, vp] = split(qkv, [nHead * headDim, nKV * headDim, nKV * headDim], 2);
      // The split's backward reads nothing: the handle goes (the views keep the buffer).
      qkv.releaseData();
    } else {
      qp = this.q_proj!.forward(x);
      kp = this.k_proj!.forward(x);
      vp = this.v_proj!.forward(x);
    }
    const q = this.rotated(qp, nHead, this.q_norm, a);
    let k = this.rotated(kp, nKV, this.k_norm, a);
    let v = permute(reshape(vp, [B, T, nKV, headDim]), [0, 2, 1, 3]);
    if (past) {
      k = concat([past.k, k], 2);
      v = concat([past.v, v], 2);
    }
    const { rotaryDim, attentionFactor } = this.p.rope;
    // An attention factor multiplies cos and sin, so q and k: with full rotary it is the scale's f^2.
    const f2 = rotaryDim === headDim ? attentionFactor * attentionFactor : 1;
    const opts: AttentionOptions = {
      mask: a.mask,
      causal: true,
      scale: this.p.attnScale * f2,
      dropoutP: this.training ? this.p.attnDropout : 0,
    };
    if (this.p.attnSoftcap !== null) opts.softcap = this.p.attnSoftcap;
    if (this.window !== null && this.window < k.shape[2]) opts.window = this.window;
    const out = scaledDotProductAttention(q, k, v, opts);
    const merged = reshape(permute(out, [0, 2, 1, 3]), [B, T, nHead * headDim]);
    return { out: this.o_proj.forward(merged), kv: { k, v } };
  }
}

export class DecoderMLP extends Module {
  gate_proj?: Linear;
  up_proj?: Linear;
  gate_up_proj?: Linear;
  down_proj: Linear;
  private readonly act: (x: Tensor) => Tensor;
  constructor(
    private readonly p: DecoderParams,
    c: ModelCtx,
  ) {
    super();
    const o = () => ({ device: c.device, dtype: c.dtype, std: p.std, seed: c.seeds.next(), bias: p.mlpBias });
    if (p.fusedGateUp) {
      this.gate_up_proj = this.registerModule('gate_up_proj', new Linear(p.D, 2 * p.inner, o()));
    } else {
      this.gate_proj = this.registerModule('gate_proj', new Linear(p.D, p.inner, o()));
      this.up_proj = this.registerModule('up_proj', new Linear(p.D, p.inner, o()));
    }
    this.down_proj = this.registerModule('down_proj', new Linear(p.inner, p.D, o()));
    this.act = p.act === 'silu' ? silu : activation(p.act);
  }
  forward(x: Tensor): Tensor {
    if (this.gate_up_proj) {
      // phi3: gate | up in one projection; up * act(gate).
      const gu = this.gate_up_proj.forward(x);
      const [gate, up] = split(gu, [this.p.inner, this.p.inner], gu.ndim - 1);
      gu.releaseData();
      return this.down_proj.forward(mul(up, this.act(gate)));
    }
    return this.down_proj.forward(mul(this.act(this.gate_proj!.forward(x)), this.up_proj!.forward(x)));
  }
}

export class DecoderLayer extends Module {
  self_attn: DecoderAttention;
  mlp: DecoderMLP;
  input_layernorm: Norm;
  post_attention_layernorm: Norm;
  pre_feedforward_layernorm?: Norm;
  post_feedforward_layernorm?: Norm;
  constructor(
    private readonly p: DecoderParams,
    readonly window: number | null,
    c: ModelCtx,
  ) {
    super();
    this.self_attn = this.registerModule('self_attn', new DecoderAttention(p, window, c));
    this.mlp = this.registerModule('mlp', new DecoderMLP(p, c));
    this.input_layernorm = this.registerModule('input_layernorm', makeNorm(p, p.D, c));
    this.post_attention_layernorm = this.registerModule('post_attention_layernorm', makeNorm(p, p.D, c));
    if (p.sandwichNorms) {
      this.pre_feedforward_layernorm = this.registerModule('pre_feedforward_layernorm', makeNorm(p, p.D, c));
      this.post_feedforward_layernorm = this.registerModule('post_feedforward_layernorm', makeNorm(p, p.D, c));
    }
  }
  private residDrop(x: Tensor): Tensor {
    return this.training && this.p.residDropout > 0 ? dropout(x, this.p.residDropout, { training: true }) : x;
  }
  forward(x: Tensor, a: AttnCtx, past: LayerCache | null): { out: Tensor; kv: LayerCache } {
    const { out: attn, kv } = this.self_attn.forward(this.input_layernorm.forward(x), a, past);
    if (this.p.sandwichNorms) {
      // gemma2: the branch is normalised before the residual sum (its norm's backward reads it).
      const an = this.post_attention_layernorm.forward(attn);
      const h = releaseInto(add(x, an), an);
      const m = this.post_feedforward_layernorm!.forward(this.mlp.forward(this.pre_feedforward_layernorm!.forward(h)));
      return { out: releaseInto(add(h, m), m), kv };
    }
    // Residual sums read neither branch in their backward: the branches go at once.
    const ad = this.residDrop(attn);
    const h = releaseInto(add(x, ad), ad, attn);
    const m = this.mlp.forward(this.post_attention_layernorm.forward(h));
    const md = this.residDrop(m);
    return { out: releaseInto(add(h, md), md, m), kv };
  }
}

/** The bare decoder (transformers' LlamaModel, Qwen2Model, ...): embed_tokens, layers.N..., norm. */
export class DecoderModel extends Module {
  embed_tokens: Embedding;
  layers: ModuleList<DecoderLayer>;
  norm: Norm;
  private readonly invFreqCache = new Map<string, Tensor>();
  constructor(
    readonly p: DecoderParams,
    c: ModelCtx,
  ) {
    super();
    this.embed_tokens = this.registerModule('embed_tokens', new Embedding(p.vocab, p.D, initOpts(c, p.std)));
    zeroRow(this.embed_tokens.weight, p.padTokenId);
    const layers: DecoderLayer[] = [];
    for (let i = 0; i < p.nLayer; i++) layers.push(new DecoderLayer(p, p.windows[i], c));
    this.layers = this.registerModule('layers', new ModuleList(layers));
    this.norm = this.registerModule('norm', makeNorm(p, p.D, c));
  }

  /**
   * The inverse frequencies on a device for a forward whose positions reach seqLen - 1 (a buffer,
   * made once per device and variant; not a parameter).
   */
  invFreq(device: string, seqLen = 0): Tensor {
    const key = `${device}|${ropeVariant(this.p.rope, seqLen)}`;
    let t = this.invFreqCache.get(key);
    if (!t || t.isDisposed) {
      const host = ropeInvFreq(this.p.rope, seqLen);
      t = keep(tensor(host, [host.length], { dtype: 'f32', device }));
      this.invFreqCache.set(key, t);
      // dynamic: one entry per length beyond max_position_embeddings; keep the latest few.
      if (this.invFreqCache.size > 8) {
        const oldest = this.invFreqCache.keys().next().value as string;
        if (oldest !== key) {
          this.invFreqCache.get(oldest)!.dispose();
          this.invFreqCache.delete(oldest);
        }
      }
    }
    return t;
  }

  forward(inputs: ModelInputs, wantCache: boolean): { hidden: Tensor; cache?: KVCache } {
    const device = this.embed_tokens.weight.device;
    const ids = idsTensor(inputs.inputIds, device, 'inputIds');
    const [B, T] = ids.shape;
    const past = inputs.cache ?? null;
    const offset = past ? past.length : 0;
    const pos = inputs.positionIds ? idsTensor(inputs.positionIds, device, 'positionIds') : rangePositions(B, T, offset, device);
    let seqLen = offset + T;
    if (inputs.positionIds && ropeIsDynamic(this.p.rope)) {
      // transformers: seq_len = max(position_ids) + 1.
      const host =
        inputs.positionIds instanceof Tensor
          ? Array.from(pos.toArray() as ArrayLike<number | bigint>, Number)
          : hostRows(inputs.positionIds, 'positionIds').flat();
      seqLen = host.reduce((m, v) => Math.max(m, v), -1) + 1;
    }
    const mask = maskTensor(inputs.attentionMask, device, B, offset + T);
    const a: AttnCtx = { pos, invFreq: this.invFreq(device, seqLen), mask };
    let h = this.embed_tokens.forward(ids);
    if (this.p.embedScale) {
      // transformers multiplies by torch.tensor(hidden_size ** 0.5, dtype=activations' dtype).
      const e = h;
      h = releaseInto(mul(e, roundToDType(Math.sqrt(this.p.D), e.dtype)), e);
    }
    const layers: LayerCache[] = [];
    this.layers.items.forEach((layer, i) => {
      if (!wantCache && !past) {
        h = this.layers.runBlock(h, (x) => layer.forward(x, a, null).out);
        return;
      }
      const r = layer.forward(h, a, past ? past.layers[i] : null);
      h = r.out;
      if (wantCache) layers.push(r.kv);
    });
    h = this.norm.forward(h);
    return { hidden: h, cache: wantCache ? { layers, length: offset + T } : undefined };
  }

  disposeBuffers(): void {
    for (const t of this.invFreqCache.values()) t.dispose();
    this.invFreqCache.clear();
  }
}

const DECODER_BUFFERS = [/(^|\.)rotary_emb\.inv_freq$/, /(^|\.)rotary_emb\.(short|long)_inv_freq$/, /(^|\.)rotary_emb\.original_inv_freq$/];

function archName(config: HFConfig, suffix: string): string {
  return `${DECODER_FAMILIES[familyOf(config)]}${suffix}`;
}

/** tanh(x / cap) * cap (gemma2's final_logit_softcapping). */
export function softcap(x: Tensor, cap: number): Tensor {
  return mul(tanh(div(x, cap)), cap);
}

/** <Family>ForCausalLM: the decoder and lm_head (tied to embed_tokens when tie_word_embeddings). */
export class DecoderForCausalLM extends PreTrainedModel {
  readonly architecture: string;
  readonly task = 'causal-lm' as const;
  readonly baseModelPrefix = 'model';
  model: DecoderModel;
  lm_head: LMHead;
  constructor(config: HFConfig, opts: ModelOptions = {}) {
    super(config, opts);
    this.architecture = archName(config, 'ForCausalLM');
    const c = modelCtx(opts);
    const p = decoderParams(config);
    this.model = this.registerModule('model', new DecoderModel(p, c));
    const tie = cfgBool(config, 'tie_word_embeddings', p.tieDefault);
    this.lm_head = this.registerModule(
      'lm_head',
      new LMHead(p.D, p.vocab, tie ? this.model.embed_tokens : null, {
        device: c.device,
        dtype: c.dtype,
        std: p.std,
        seed: c.seeds.next(),
      }),
    );
  }
  override tiedParameters(): Record<string, string> {
    return this.lm_head.isTied ? { 'lm_head.weight': 'model.embed_tokens.weight' } : {};
  }
  override ignoredCheckpointKeys(): RegExp[] {
    return DECODER_BUFFERS;
  }
  forward(inputs: ModelInputs): ModelOutput {
    const wantCache = !!inputs.cache || !!inputs.useCache;
    const { hidden, cache } = this.model.forward(inputs, wantCache);
    const cap = this.model.p.finalSoftcap;
    const raw = this.lm_head.forward(hidden);
    const logits = cap === null ? raw : releaseInto(softcap(raw, cap), raw);
    const out: ModelOutput = { logits, hiddenStates: hidden, cache };
    if (inputs.labels) out.loss = causalLmLoss(logits, inputs.labels as never);
    return out;
  }
  override dispose(): void {
    this.model.disposeBuffers();
    super.dispose();
  }
}

/** <Family>ForSequenceClassification: score (no bias) on the last non-padding token. */
export class DecoderForSequenceClassification extends PreTrainedModel {
  readonly architecture: string;
  readonly task = 'sequence-classification' as const;
  readonly baseModelPrefix = 'model';
  model: DecoderModel;
  score: Linear;
  readonly numLabels: number;
  constructor(config: HFConfig, opts: ModelOptions = {}) {
    super(config, opts);
    this.architecture = archName(config, 'ForSequenceClassification');
    const c = modelCtx(opts);
    const p = decoderParams(config);
    this.numLabels = numLabels(config);
    this.model = this.registerModule('model', new DecoderModel(p, c));
    this.score = this.registerModule('score', new Linear(p.D, this.numLabels, { ...initOpts(c, p.std), bias: false }));
  }
  override ignoredCheckpointKeys(): RegExp[] {
    return DECODER_BUFFERS;
  }
  forward(inputs: ModelInputs): ModelOutput {
    const { hidden } = this.model.forward(inputs, false);
    return classifierOutput(this, lastTokenLogits(this.score, hidden, inputs, this.model.p.padTokenId), inputs, { hiddenStates: hidden });
  }
  override dispose(): void {
    this.model.disposeBuffers();
    super.dispose();
  }
}

/** <Family>Model alone (task 'base'): logits are the final hidden states; keys without the 'model.' prefix. */
export class DecoderBaseModel extends PreTrainedModel {
  readonly architecture: string;
  readonly task = 'base' as const;
  readonly baseModelPrefix = 'model';
  readonly body: DecoderModel;
  constructor(config: HFConfig, opts: ModelOptions = {}) {
    super(config, opts);
    this.architecture = archName(config, 'Model');
    this.body = new DecoderModel(decoderParams(config), modelCtx(opts));
    for (const [name, child] of this.body.children()) this.registerModule(name, child);
  }
  override ignoredCheckpointKeys(): RegExp[] {
    return DECODER_BUFFERS;
  }
  forward(inputs: ModelInputs): ModelOutput {
    const wantCache = !!inputs.cache || !!inputs.useCache;
    const { hidden, cache } = this.body.forward(inputs, wantCache);
    return { logits: hidden, hiddenStates: hidden, cache };
  }
  override dispose(): void {
    this.body.disposeBuffers();
    super.dispose();
  }
}
