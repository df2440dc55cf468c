/**
 * LLaMA as in transformers (LlamaModel, LlamaForCausalLM, LlamaForSequenceClassification):
 * RMSNorm pre-norm blocks, grouped-query attention (num_key_value_heads), rotary embeddings with
 * rope_theta (and 'linear' / 'llama3' rope_scaling), a SwiGLU MLP, and tied or untied embeddings.
 */
import { Tensor } from '../engine/tensor';
import { SiftError, check } from '../engine/errors';
import { Module } from '../nn/module';
import { Embedding, RMSNorm, Linear } from '../nn/layers';
import { add, mul, silu } from '../autograd/elementwise';
import { reshape, permute, concat } from '../autograd/shape';
import { scaledDotProductAttention, rotaryEmbedding } from '../autograd/attention';
import { tensor } from '../autograd/creation';
import { keep } from '../engine/scope';
import { LMHead, ModuleList } from './layers';
import {
  PreTrainedModel, HFConfig, ModelOptions, ModelInputs, ModelOutput, KVCache, LayerCache, SeedStream,
  cfgNum, cfgInt, cfgOptInt, cfgBool, cfgStr, numLabels, activation, idsTensor, rangePositions, causalLmLoss,
  classificationLoss, hostRows, lastTokenIndices, gatherTokens, maskTensor, zeroRow, releaseInto,
} from './common';

export interface LlamaParams {
  vocab: number;
  D: number;
  nLayer: number;
  nHead: number;
  nKV: number;
  headDim: number;
  inner: number;
  act: string;
  eps: number;
  ropeTheta: number;
  ropeScaling: Record<string, unknown> | null;
  maxPositions: number;
  attnBias: boolean;
  mlpBias: boolean;
  attnDropout: number;
  std: number;
  padTokenId: number | null;
}

export function llamaParams(cfg: HFConfig): LlamaParams {
  const D = cfgInt(cfg, 'hidden_size', 4096);
  const nHead = cfgInt(cfg, 'num_attention_heads', 32);
  const p: LlamaParams = {
    vocab: cfgInt(cfg, 'vocab_size', 32000),
    D,
    nLayer: cfgInt(cfg, 'num_hidden_layers', 32),
    nHead,
    nKV: cfgOptInt(cfg, 'num_key_value_heads') ?? nHead,
    headDim: cfgOptInt(cfg, 'head_dim') ?? Math.floor(D / nHead),
    inner: cfgInt(cfg, 'intermediate_size', 11008),
    act: cfgStr(cfg, 'hidden_act', 'silu'),
    eps: cfgNum(cfg, 'rms_norm_eps', 1e-6),
    ropeTheta: cfgNum(cfg, 'rope_theta', 10000),
    ropeScaling: (cfg.rope_scaling as Record<string, unknown> | null | undefined) ?? null,
    maxPositions: cfgInt(cfg, 'max_position_embeddings', 2048),
    attnBias: cfgBool(cfg, 'attention_bias', false),
    mlpBias: cfgBool(cfg, 'mlp_bias', false),
    attnDropout: cfgNum(cfg, 'attention_dropout', 0),
    std: cfgNum(cfg, 'initializer_range', 0.02),
    padTokenId: cfgOptInt(cfg, 'pad_token_id'),
  };
  check(p.nHead % p.nKV === 0, 'E_ARG', `config.json: num_attention_heads ${p.nHead} is not a multiple of num_key_value_heads ${p.nKV}`);
  check(p.headDim % 2 === 0, 'E_ARG', `config.json: head dim ${p.headDim} must be even for rotary embeddings`);
  return p;
}

/**
 * Inverse frequencies as transformers computes them in f32 (1 / theta^(2i/d)), with rope_scaling
 * 'linear' (divide by factor) or 'llama3' (frequency-dependent smoothing) applied.
 */
export function llamaInvFreq(p: LlamaParams): Float32Array {
  const d = p.headDim;
  const f = new Float32Array(d / 2);
  for (let i = 0; i < d / 2; i++) f[i] = Math.fround(1 / Math.fround(Math.pow(p.ropeTheta, Math.fround((2 * i) / d))));
  const rs = p.ropeScaling;
  if (!rs) return f;
  const type = String(rs.rope_type ?? rs.type ?? 'default');
  if (type === 'default') return f;
  const factor = Number(rs.factor ?? 1);
  if (type === 'linear') return f.map((v) => v / factor);
  if (type === 'llama3') {
    const low = Number(rs.low_freq_factor ?? 1);
    const high = Number(rs.high_freq_factor ?? 4);
    const oldCtx = Number(rs.original_max_position_embeddings ?? 8192);
    const lowWave = oldCtx / low;
    const highWave = oldCtx / high;
    return f.map((v) => {
      const wave = (2 * Math.PI) / v;
      if (wave < highWave) return v;
      if (wave > lowWave) return v / factor;
      const smooth = (oldCtx / wave - low) / (high - low);
      return (1 - smooth) * (v / factor) + smooth * v;
    });
  }
  throw new SiftError('E_UNSUPPORTED', `LLaMA: rope_scaling type '${type}' is not supported (default, linear, llama3)`);
}

interface Ctx {
  device: string;
  dtype: 'f32' | 'f16' | 'bf16' | 'f64';
  seeds: SeedStream;
}

class LlamaAttention extends Module {
  q_proj: Linear;
  k_proj: Linear;
  v_proj: Linear;
  o_proj: Linear;
  constructor(private readonly p: LlamaParams, c: Ctx) {
    super();
    const o = (bias: boolean) => ({ device: c.device, dtype: c.dtype, std: p.std, seed: c.seeds.next(), bias });
    this.q_proj = this.registerModule('q_proj', new Linear(p.D, p.nHead * p.headDim, o(p.attnBias)));
    this.k_proj = this.registerModule('k_proj', new Linear(p.D, p.nKV * p.headDim, o(p.attnBias)));
    this.v_proj = this.registerModule('v_proj', new Linear(p.D, p.nKV * p.headDim, o(p.attnBias)));
    this.o_proj = this.registerModule('o_proj', new Linear(p.nHead * p.headDim, p.D, o(p.attnBias)));
  }
  forward(x: Tensor, pos: Tensor, invFreq: Tensor, mask: Tensor | null, past: LayerCache | null): { out: Tensor; kv: LayerCache } {
    const [B, T] = x.shape;
    const { nHead, nKV, headDim } = this.p;
    const heads = (t: Tensor, h: number) => permute(reshape(t, [B, T, h, headDim]), [0, 2, 1, 3]);
    // The rotary backward reads no activation: the projections before rotation go at once (the
    // projection, its reshape and its permute are three handles on one buffer).
    const rotated = (proj: Tensor, h: number) => {
      const r = reshape(proj, [B, T, h, headDim]);
      const pr = permute(r, [0, 2, 1, 3]);
      return releaseInto(rotaryEmbedding(pr, pos, invFreq), pr, r, proj);
    };
    const q = rotated(this.q_proj.forward(x), nHead);
    let k = rotated(this.k_proj.forward(x), nKV);
    let v = heads(this.v_proj.forward(x), nKV);
    if (past) {
      k = concat([past.k, k], 2);
      v = concat([past.v, v], 2);
    }
    const a = scaledDotProductAttention(q, k, v, {
      mask, causal: true, scale: 1 / Math.sqrt(headDim), dropoutP: this.training ? this.p.attnDropout : 0,
    });
    const merged = reshape(permute(a, [0, 2, 1, 3]), [B, T, nHead * headDim]);
    return { out: this.o_proj.forward(merged), kv: { k, v } };
  }
}

class LlamaMLP extends Module {
  gate_proj: Linear;
  up_proj: Linear;
  down_proj: Linear;
  private readonly act: (x: Tensor) => Tensor;
  constructor(p: LlamaParams, c: Ctx) {
    super();
    const o = () => ({ device: c.device, dtype: c.dtype, std: p.std, seed: c.seeds.next(), bias: p.mlpBias });
    this.gate_proj = this.registerModule('gate_proj', new Linear(p.D, p.inner, o()));
    this.up_proj = this.registerModule('up_proj', new Linear(p.D, p.inner, o()));
    this.down_proj = this.registerModule('down_proj', new Linear(p.inner, p.D, o()));
    this.act = p.act === 'silu' ? silu : activation(p.act);
  }
  forward(x: Tensor): Tensor {
    return this.down_proj.forward(mul(this.act(this.gate_proj.forward(x)), this.up_proj.forward(x)));
  }
}

class LlamaDecoderLayer extends Module {
  self_attn: LlamaAttention;
  mlp: LlamaMLP;
  input_layernorm: RMSNorm;
  post_attention_layernorm: RMSNorm;
  constructor(p: LlamaParams, c: Ctx) {
    super();
    const o = { device: c.device, dtype: c.dtype };
    this.self_attn = this.registerModule('self_attn', new LlamaAttention(p, c));
    this.mlp = this.registerModule('mlp', new LlamaMLP(p, c));
    this.input_layernorm = this.registerModule('input_layernorm', new RMSNorm(p.D, p.eps, o));
    this.post_attention_layernorm = this.registerModule('post_attention_layernorm', new RMSNorm(p.D, p.eps, o));
  }
  forward(x: Tensor, pos: Tensor, invFreq: Tensor, mask: Tensor | null, past: LayerCache | null): { out: Tensor; kv: LayerCache } {
    const { out: a, kv } = this.self_attn.forward(this.input_layernorm.forward(x), pos, invFreq, mask, past);
    // Residual sums read neither branch in their backward: the branches go at once.
    const h = releaseInto(add(x, a), a);
    const m = this.mlp.forward(this.post_attention_layernorm.forward(h));
    return { out: releaseInto(add(h, m), m), kv };
  }
}

/** LlamaModel: embed_tokens, layers.N..., norm. */
export class LlamaModel extends Module {
  embed_tokens: Embedding;
  layers: ModuleList<LlamaDecoderLayer>;
  norm: RMSNorm;
  private readonly invFreqHost: Float32Array;
  private readonly invFreqByDevice = new Map<string, Tensor>();
  constructor(readonly p: LlamaParams, c: Ctx) {
    super();
    this.embed_tokens = this.registerModule('embed_tokens', new Embedding(p.vocab, p.D, { device: c.device, dtype: c.dtype, std: p.std, seed: c.seeds.next() }));
    zeroRow(this.embed_tokens.weight, p.padTokenId);
    const layers: LlamaDecoderLayer[] = [];
    for (let i = 0; i < p.nLayer; i++) layers.push(new LlamaDecoderLayer(p, c));
    this.layers = this.registerModule('layers', new ModuleList(layers));
    this.norm = this.registerModule('norm', new RMSNorm(p.D, p.eps, { device: c.device, dtype: c.dtype }));
    this.invFreqHost = llamaInvFreq(p);
  }

  /** The inverse frequencies on a device (a buffer, made once per device; not a parameter). */
  invFreq(device: string): Tensor {
    let t = this.invFreqByDevice.get(device);
    if (!t || t.isDisposed) {
      t = keep(tensor(this.invFreqHost, [this.invFreqHost.length], { dtype: 'f32', device }));
      this.invFreqByDevice.set(device, t);
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
    const mask = maskTensor(inputs.attentionMask, device, B, offset + T);
    const invFreq = this.invFreq(device);
    let h = this.embed_tokens.forward(ids);
    const layers: LayerCache[] = [];
    this.layers.items.forEach((layer, i) => {
      if (!wantCache && !past) {
        h = this.layers.runBlock(h, (x) => layer.forward(x, pos, invFreq, mask, null).out);
        return;
      }
      const r = layer.forward(h, pos, invFreq, mask, past ? past.layers[i] : null);
      h = r.out;
      if (wantCache) layers.push(r.kv);
    });
    h = this.norm.forward(h);
    return { hidden: h, cache: wantCache ? { layers, length: offset + T } : undefined };
  }

  disposeBuffers(): void {
    for (const t of this.invFreqByDevice.values()) t.dispose();
    this.invFreqByDevice.clear();
  }
}

function ctxOf(opts: ModelOptions): Ctx {
  return { device: opts.device === 'cuda' ? 'cuda:0' : opts.device ?? 'cpu', dtype: opts.dtype ?? 'f32', seeds: new SeedStream(opts.seed) };
}

const LLAMA_BUFFERS = [/(^|\.)rotary_emb\.inv_freq$/];

export class LlamaForCausalLM extends PreTrainedModel {
  readonly architecture = 'LlamaForCausalLM';
  readonly task = 'causal-lm' as const;
  readonly baseModelPrefix = 'model';
  model: LlamaModel;
  lm_head: LMHead;
  constructor(config: HFConfig, opts: ModelOptions = {}) {
    super(config, opts);
    const c = ctxOf(opts);
    const p = llamaParams(config);
    this.model = this.registerModule('model', new LlamaModel(p, c));
    const tie = cfgBool(config, 'tie_word_embeddings', false);
    this.lm_head = this.registerModule('lm_head', new LMHead(p.D, p.vocab, tie ? this.model.embed_tokens : null, { device: c.device, dtype: c.dtype, std: p.std, seed: c.seeds.next() }));
  }
  override tiedParameters(): Record<string, string> {
    return this.lm_head.isTied ? { 'lm_head.weight': 'model.embed_tokens.weight' } : {};
  }
  override ignoredCheckpointKeys(): RegExp[] {
    return LLAMA_BUFFERS;
  }
  forward(inputs: ModelInputs): ModelOutput {
    const wantCache = !!inputs.cache || !!inputs.useCache;
    const { hidden, cache } = this.model.forward(inputs, wantCache);
    const logits = this.lm_head.forward(hidden);
    const out: ModelOutput = { logits, hiddenStates: hidden, cache };
    if (inputs.labels) out.loss = causalLmLoss(logits, inputs.labels as never);
    return out;
  }
  override dispose(): void {
    this.model.disposeBuffers();
    super.dispose();
  }
}

/** LlamaForSequenceClassification: score (no bias) on the last non-padding token. */
export class LlamaForSequenceClassification extends PreTrainedModel {
  readonly architecture = 'LlamaForSequenceClassification';
  readonly task = 'sequence-classification' as const;
  readonly baseModelPrefix = 'model';
  model: LlamaModel;
  score: Linear;
  readonly numLabels: number;
  constructor(config: HFConfig, opts: ModelOptions = {}) {
    super(config, opts);
    const c = ctxOf(opts);
    const p = llamaParams(config);
    this.numLabels = numLabels(config);
    this.model = this.registerModule('model', new LlamaModel(p, c));
    this.score = this.registerModule('score', new Linear(p.D, this.numLabels, { device: c.device, dtype: c.dtype, std: p.std, seed: c.seeds.next(), bias: false }));
  }
  override ignoredCheckpointKeys(): RegExp[] {
    return LLAMA_BUFFERS;
  }
  forward(inputs: ModelInputs): ModelOutput {
    const { hidden } = this.model.forward(inputs, false);
    const ids = hostRows(inputs.inputIds, 'inputIds');
    const mask = inputs.attentionMask ? hostRows(inputs.attentionMask, 'attentionMask') : null;
    const idx = lastTokenIndices(ids, this.model.p.padTokenId, mask);
    const logits = this.score.forward(gatherTokens(hidden, idx));
    const out: ModelOutput = { logits, hiddenStates: hidden };
    if (inputs.labels) out.loss = classificationLoss(logits, inputs.labels, this.numLabels, (this.config.problem_type as string) ?? null);
    return out;
  }
  override dispose(): void {
    this.model.disposeBuffers();
    super.dispose();
  }
}

/** LlamaModel alone (task 'base'): logits are the final hidden states; keys without the 'model.' prefix. */
export class LlamaBaseModel extends PreTrainedModel {
  readonly architecture = 'LlamaModel';
  readonly task = 'base' as const;
  readonly baseModelPrefix = 'model';
  readonly body: LlamaModel;
  constructor(config: HFConfig, opts: ModelOptions = {}) {
    super(config, opts);
    this.body = new LlamaModel(llamaParams(config), ctxOf(opts));
    for (const [name, child] of this.body.children()) this.registerModule(name, child);
  }
  override ignoredCheckpointKeys(): RegExp[] {
    return LLAMA_BUFFERS;
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
