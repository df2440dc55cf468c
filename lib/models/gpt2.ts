/**
 * GPT-2 as in transformers (GPT2Model, GPT2LMHeadModel, GPT2ForSequenceClassification): learned
 * absolute positions, pre-LayerNorm blocks, Conv1D projections stored [in, out], gelu_new (tanh
 * GELU), lm_head tied to wte, and c_proj weights initialised with std / sqrt(2 n_layer).
 */
import { Tensor } from '../engine/tensor';
import { check } from '../engine/errors';
import { Module } from '../nn/module';
import { Embedding, LayerNorm, Dropout, Linear } from '../nn/layers';
import { add } from '../autograd/elementwise';
import { reshape, permute, splitHeads, concat } from '../autograd/shape';
import { scaledDotProductAttention } from '../autograd/attention';
import { Conv1D, LMHead, ModuleList } from './layers';
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
  cfgStr,
  cfgBool,
  numLabels,
  activation,
  idsTensor,
  rangePositions,
  causalLmLoss,
  classifierOutput,
  lastTokenLogits,
  maskTensor,
  releaseInto,
} from './common';

interface GPT2Params {
  vocab: number;
  nPositions: number;
  D: number;
  nLayer: number;
  nHead: number;
  inner: number;
  act: string;
  eps: number;
  embdPdrop: number;
  attnPdrop: number;
  residPdrop: number;
  std: number;
  scaleByLayer: boolean;
  scaleWeights: boolean;
}

function gpt2Params(cfg: HFConfig): GPT2Params {
  const D = cfgInt(cfg, 'n_embd', 768);
  const p: GPT2Params = {
    vocab: cfgInt(cfg, 'vocab_size', 50257),
    nPositions: cfgInt(cfg, 'n_positions', 1024),
    D,
    nLayer: cfgInt(cfg, 'n_layer', 12),
    nHead: cfgInt(cfg, 'n_head', 12),
    inner: cfgOptInt(cfg, 'n_inner') ?? 4 * D,
    act: cfgStr(cfg, 'activation_function', 'gelu_new'),
    eps: cfgNum(cfg, 'layer_norm_epsilon', 1e-5),
    embdPdrop: cfgNum(cfg, 'embd_pdrop', 0.1),
    attnPdrop: cfgNum(cfg, 'attn_pdrop', 0.1),
    residPdrop: cfgNum(cfg, 'resid_pdrop', 0.1),
    std: cfgNum(cfg, 'initializer_range', 0.02),
    scaleByLayer: cfgBool(cfg, 'scale_attn_by_inverse_layer_idx', false),
    scaleWeights: cfgBool(cfg, 'scale_attn_weights', true),
  };
  check(D % p.nHead === 0, 'E_ARG', `config.json: n_embd ${D} is not a multiple of n_head ${p.nHead}`);
  return p;
}

class GPT2Attention extends Module {
  c_attn: Conv1D;
  c_proj: Conv1D;
  attn_dropout: Dropout;
  resid_dropout: Dropout;
  private readonly heads: number;
  private readonly scale: number;
  constructor(p: GPT2Params, layerIdx: number, c: ModelCtx) {
    super();
    const o = { device: c.device, dtype: c.dtype };
    this.c_attn = this.registerModule('c_attn', new Conv1D(p.D, 3 * p.D, { ...o, std: p.std, seed: c.seeds.next() }));
    this.c_proj = this.registerModule('c_proj', new Conv1D(p.D, p.D, { ...o, std: p.std / Math.sqrt(2 * p.nLayer), seed: c.seeds.next() }));
    this.attn_dropout = this.registerModule('attn_dropout', new Dropout(p.attnPdrop));
    this.resid_dropout = this.registerModule('resid_dropout', new Dropout(p.residPdrop));
    this.heads = p.nHead;
    const hd = p.D / p.nHead;
    this.scale = (p.scaleWeights ? 1 / Math.sqrt(hd) : 1) / (p.scaleByLayer ? layerIdx + 1 : 1);
  }
  forward(x: Tensor, mask: Tensor | null, past: LayerCache | null): { out: Tensor; kv: LayerCache } {
    const [B, T, D] = x.shape;
    const H = this.heads;
    // split(c_attn(x), D, 2), each reshaped to [B, T, H, hd] and permuted to [B, H, T, hd], in one op.
    const [q, k0, v0] = splitHeads(this.c_attn.forward(x), 3, H);
    let k = k0;
    let v = v0;
    if (past) {
      k = concat([past.k, k], 2);
      v = concat([past.v, v], 2);
    }
    const a = scaledDotProductAttention(q, k, v, {
      mask,
      causal: true,
      scale: this.scale,
      dropoutP: this.attn_dropout.training ? this.attn_dropout.p : 0,
    });
    const merged = reshape(permute(a, [0, 2, 1, 3]), [B, T, D]);
    const proj = this.c_proj.forward(merged);
    return { out: releaseInto(this.resid_dropout.forward(proj), proj), kv: { k, v } };
  }
}

class GPT2MLP extends Module {
  c_fc: Conv1D;
  c_proj: Conv1D;
  dropout: Dropout;
  private readonly act: (x: Tensor) => Tensor;
  private readonly actIsGeluTanh: boolean;
  constructor(p: GPT2Params, c: ModelCtx) {
    super();
    const o = { device: c.device, dtype: c.dtype };
    this.c_fc = this.registerModule('c_fc', new Conv1D(p.D, p.inner, { ...o, std: p.std, seed: c.seeds.next() }));
    this.c_proj = this.registerModule(
      'c_proj',
      new Conv1D(p.inner, p.D, { ...o, std: p.std / Math.sqrt(2 * p.nLayer), seed: c.seeds.next() }),
    );
    this.dropout = this.registerModule('dropout', new Dropout(p.residPdrop));
    this.act = activation(p.act);
    this.actIsGeluTanh = p.act === 'gelu_new' || p.act === 'gelu_pytorch_tanh' || p.act === 'gelu_fast';
  }
  forward(x: Tensor): Tensor {
    const h = this.actIsGeluTanh ? this.c_fc.forwardGeluTanh(x, this.act) : this.act(this.c_fc.forward(x));
    const proj = this.c_proj.forward(h);
    return releaseInto(this.dropout.forward(proj), proj);
  }
}

class GPT2Block extends Module {
  ln_1: LayerNorm;
  attn: GPT2Attention;
  ln_2: LayerNorm;
  mlp: GPT2MLP;
  constructor(p: GPT2Params, layerIdx: number, c: ModelCtx) {
    super();
    const o = { device: c.device, dtype: c.dtype };
    this.ln_1 = this.registerModule('ln_1', new LayerNorm(p.D, p.eps, o));
    this.attn = this.registerModule('attn', new GPT2Attention(p, layerIdx, c));
    this.ln_2 = this.registerModule('ln_2', new LayerNorm(p.D, p.eps, o));
    this.mlp = this.registerModule('mlp', new GPT2MLP(p, c));
  }
  forward(x: Tensor, mask: Tensor | null, past: LayerCache | null): { out: Tensor; kv: LayerCache } {
    const { out: a, kv } = this.attn.forward(this.ln_1.forward(x), mask, past);
    // Residual sums read neither branch in their backward: the branches go at once.
    const h = releaseInto(add(x, a), a);
    const m = this.mlp.forward(this.ln_2.forward(h));
    return { out: releaseInto(add(h, m), m), kv };
  }
}

/** GPT2Model: embeddings, blocks, final LayerNorm. Keys: wte, wpe, h.N..., ln_f. */
export class GPT2Model extends Module {
  wte: Embedding;
  wpe: Embedding;
  drop: Dropout;
  h: ModuleList<GPT2Block>;
  ln_f: LayerNorm;
  constructor(
    readonly p: GPT2Params,
    c: ModelCtx,
  ) {
    super();
    const o = { device: c.device, dtype: c.dtype, std: p.std };
    this.wte = this.registerModule('wte', new Embedding(p.vocab, p.D, { ...o, seed: c.seeds.next() }));
    this.wpe = this.registerModule('wpe', new Embedding(p.nPositions, p.D, { ...o, seed: c.seeds.next() }));
    this.drop = this.registerModule('drop', new Dropout(p.embdPdrop));
    const blocks: GPT2Block[] = [];
    for (let i = 0; i < p.nLayer; i++) blocks.push(new GPT2Block(p, i, c));
    this.h = this.registerModule('h', new ModuleList(blocks));
    this.ln_f = this.registerModule('ln_f', new LayerNorm(p.D, p.eps, { device: c.device, dtype: c.dtype }));
  }

  forward(inputs: ModelInputs, wantCache: boolean): { hidden: Tensor; cache?: KVCache } {
    const device = this.wte.weight.device;
    const ids = idsTensor(inputs.inputIds, device, 'inputIds');
    const [B, T] = ids.shape;
    const past = inputs.cache ?? null;
    const offset = past ? past.length : 0;
    check(offset + T <= this.p.nPositions, 'E_ARG', `GPT-2: ${offset + T} positions exceed n_positions ${this.p.nPositions}`);
    const pos = inputs.positionIds ? idsTensor(inputs.positionIds, device, 'positionIds') : rangePositions(B, T, offset, device);
    const tok = this.wte.forward(ids),
      posEmb = this.wpe.forward(pos);
    let h = releaseInto(add(tok, posEmb), tok, posEmb);
    if (inputs.tokenTypeIds) {
      const typ = this.wte.forward(idsTensor(inputs.tokenTypeIds, device, 'tokenTypeIds'));
      h = releaseInto(add(h, typ), h, typ);
    }
    h = releaseInto(this.drop.forward(h), h);
    const mask = maskTensor(inputs.attentionMask, device, B, offset + T);
    const layers: LayerCache[] = [];
    this.h.items.forEach((block, i) => {
      if (!wantCache && !past) {
        h = this.h.runBlock(h, (x) => block.forward(x, mask, null).out);
        return;
      }
      const r = block.forward(h, mask, past ? past.layers[i] : null);
      h = r.out;
      if (wantCache) layers.push(r.kv);
    });
    h = this.ln_f.forward(h);
    return { hidden: h, cache: wantCache ? { layers, length: offset + T } : undefined };
  }
}

/** Buffers of GPT-2 checkpoints (the causal mask), not parameters. */
const GPT2_BUFFERS = [/(^|\.)attn\.(masked_)?bias$/];

/** GPT2Model on its own (task 'base'): logits are the final hidden states. */
export class GPT2BaseModel extends PreTrainedModel {
  readonly architecture = 'GPT2Model';
  readonly task = 'base' as const;
  readonly baseModelPrefix = 'transformer';
  readonly body: GPT2Model;
  constructor(config: HFConfig, opts: ModelOptions = {}) {
    super(config, opts);
    const c = modelCtx(opts);
    this.body = this.adoptBody(new GPT2Model(gpt2Params(config), c));
  }
  private adoptBody(m: GPT2Model): GPT2Model {
    // transformers' GPT2Model has its modules at the root: wte.weight, h.0...
    for (const [name, child] of m.children()) this.registerModule(name, child);
    return m;
  }
  override ignoredCheckpointKeys(): RegExp[] {
    return GPT2_BUFFERS;
  }
  forward(inputs: ModelInputs): ModelOutput {
    const wantCache = !!inputs.cache || !!inputs.useCache;
    const { hidden, cache } = this.body.forward(inputs, wantCache);
    return { logits: hidden, hiddenStates: hidden, cache };
  }
}

export class GPT2LMHeadModel extends PreTrainedModel {
  readonly architecture = 'GPT2LMHeadModel';
  readonly task = 'causal-lm' as const;
  readonly baseModelPrefix = 'transformer';
  transformer: GPT2Model;
  lm_head: LMHead;
  constructor(config: HFConfig, opts: ModelOptions = {}) {
    super(config, opts);
    const c = modelCtx(opts);
    const p = gpt2Params(config);
    this.transformer = this.registerModule('transformer', new GPT2Model(p, c));
    const tie = cfgBool(config, 'tie_word_embeddings', true);
    this.lm_head = this.registerModule('lm_head', new LMHead(p.D, p.vocab, tie ? this.transformer.wte : null, initOpts(c, p.std)));
  }
  override tiedParameters(): Record<string, string> {
    return this.lm_head.isTied ? { 'lm_head.weight': 'transformer.wte.weight' } : {};
  }
  override ignoredCheckpointKeys(): RegExp[] {
    return GPT2_BUFFERS;
  }
  forward(inputs: ModelInputs): ModelOutput {
    const wantCache = !!inputs.cache || !!inputs.useCache;
    const { hidden, cache } = this.transformer.forward(inputs, wantCache);
    const logits = this.lm_head.forward(hidden);
    const out: ModelOutput = { logits, hiddenStates: hidden, cache };
    if (inputs.labels) out.loss = causalLmLoss(logits, inputs.labels as never);
    return out;
  }
}

/** GPT2ForSequenceClassification: score (no bias) on the last non-padding token. */
export class GPT2ForSequenceClassification extends PreTrainedModel {
  readonly architecture = 'GPT2ForSequenceClassification';
  readonly task = 'sequence-classification' as const;
  readonly baseModelPrefix = 'transformer';
  transformer: GPT2Model;
  score: Linear;
  readonly numLabels: number;
  constructor(config: HFConfig, opts: ModelOptions = {}) {
    super(config, opts);
    const c = modelCtx(opts);
    const p = gpt2Params(config);
    this.numLabels = numLabels(config);
    this.transformer = this.registerModule('transformer', new GPT2Model(p, c));
    this.score = this.registerModule('score', new Linear(p.D, this.numLabels, { ...initOpts(c, p.std), bias: false }));
  }
  override ignoredCheckpointKeys(): RegExp[] {
    return GPT2_BUFFERS;
  }
  forward(inputs: ModelInputs): ModelOutput {
    const { hidden } = this.transformer.forward(inputs, false);
    const logits = lastTokenLogits(this.score, hidden, inputs, cfgOptInt(this.config, 'pad_token_id'));
    return classifierOutput(this, logits, inputs, { hiddenStates: hidden });
  }
}

export { gpt2Params };
