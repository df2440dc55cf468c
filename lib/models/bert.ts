/**
 * BERT and RoBERTa encoders as in transformers (BertModel, BertForSequenceClassification,
 * RobertaModel, RobertaForSequenceClassification): word + position + token-type embeddings,
 * post-LayerNorm blocks (eps from the config), erf GELU, a tanh pooler on the first token, and the
 * two classification heads (BERT: dropout + classifier on the pooled output; RoBERTa: dense, tanh,
 * out_proj on <s>, no pooler). RoBERTa's positions start at pad_token_id + 1 and skip padding.
 */
import { Tensor } from '../engine/tensor';
import { check } from '../engine/errors';
import { Module } from '../nn/module';
import { Embedding, LayerNorm, Dropout, Linear } from '../nn/layers';
import { add, tanh } from '../autograd/elementwise';
import { reshape, permute, slice } from '../autograd/shape';
import { scaledDotProductAttention } from '../autograd/attention';
import { tensor } from '../autograd/creation';
import { ModuleList } from './layers';
import {
  PreTrainedModel,
  HFConfig,
  ModelOptions,
  ModelInputs,
  ModelOutput,
  ModelCtx,
  modelCtx,
  initOpts,
  cfgNum,
  cfgInt,
  cfgOptInt,
  cfgStr,
  numLabels,
  activation,
  idsTensor,
  rangePositions,
  classifierOutput,
  hostRows,
  maskTensor,
  zeroRow,
  releaseInto,
} from './common';

export interface BertParams {
  vocab: number;
  D: number;
  nLayer: number;
  nHead: number;
  inner: number;
  act: string;
  eps: number;
  hiddenDropout: number;
  attnDropout: number;
  classifierDropout: number;
  maxPositions: number;
  typeVocab: number;
  std: number;
  padTokenId: number | null;
  roberta: boolean;
}

export function bertParams(cfg: HFConfig, roberta: boolean): BertParams {
  const D = cfgInt(cfg, 'hidden_size', 768);
  const hiddenDropout = cfgNum(cfg, 'hidden_dropout_prob', 0.1);
  const p: BertParams = {
    vocab: cfgInt(cfg, 'vocab_size', roberta ? 50265 : 30522),
    D,
    nLayer: cfgInt(cfg, 'num_hidden_layers', 12),
    nHead: cfgInt(cfg, 'num_attention_heads', 12),
    inner: cfgInt(cfg, 'intermediate_size', 3072),
    act: cfgStr(cfg, 'hidden_act', 'gelu'),
    eps: cfgNum(cfg, 'layer_norm_eps', 1e-12),
    hiddenDropout,
    attnDropout: cfgNum(cfg, 'attention_probs_dropout_prob', 0.1),
    classifierDropout:
      cfg.classifier_dropout === null || cfg.classifier_dropout === undefined ? hiddenDropout : cfgNum(cfg, 'classifier_dropout'),
    maxPositions: cfgInt(cfg, 'max_position_embeddings', 512),
    typeVocab: cfgInt(cfg, 'type_vocab_size', 2),
    std: cfgNum(cfg, 'initializer_range', 0.02),
    padTokenId: cfgOptInt(cfg, 'pad_token_id') ?? (roberta ? 1 : 0),
    roberta,
  };
  check(D % p.nHead === 0, 'E_ARG', `config.json: hidden_size ${D} is not a multiple of num_attention_heads ${p.nHead}`);
  const pet = cfgStr(cfg, 'position_embedding_type', 'absolute');
  check(pet === 'absolute', 'E_UNSUPPORTED', `config.json: position_embedding_type '${pet}' is not supported (absolute only)`);
  return p;
}

class BertEmbeddings extends Module {
  word_embeddings: Embedding;
  position_embeddings: Embedding;
  token_type_embeddings: Embedding;
  LayerNorm: LayerNorm;
  dropout: Dropout;
  constructor(
    private readonly p: BertParams,
    c: ModelCtx,
  ) {
    super();
    this.word_embeddings = this.registerModule('word_embeddings', new Embedding(p.vocab, p.D, initOpts(c, p.std)));
    zeroRow(this.word_embeddings.weight, p.padTokenId);
    this.position_embeddings = this.registerModule('position_embeddings', new Embedding(p.maxPositions, p.D, initOpts(c, p.std)));
    // RobertaEmbeddings gives its position table padding_idx too (BERT's has none).
    if (p.roberta) zeroRow(this.position_embeddings.weight, p.padTokenId);
    this.token_type_embeddings = this.registerModule('token_type_embeddings', new Embedding(p.typeVocab, p.D, initOpts(c, p.std)));
    this.LayerNorm = this.registerModule('LayerNorm', new LayerNorm(p.D, p.eps, { device: c.device, dtype: c.dtype }));
    this.dropout = this.registerModule('dropout', new Dropout(p.hiddenDropout));
  }
  forward(inputs: ModelInputs): Tensor {
    const device = this.word_embeddings.weight.device;
    const ids = idsTensor(inputs.inputIds, device, 'inputIds');
    const [B, T] = ids.shape;
    let pos: Tensor;
    if (inputs.positionIds) pos = idsTensor(inputs.positionIds, device, 'positionIds');
    else if (this.p.roberta) pos = robertaPositions(hostRows(inputs.inputIds, 'inputIds'), this.p.padTokenId ?? 1, device);
    else pos = rangePositions(B, T, 0, device);
    check(pos.shape[1] <= this.p.maxPositions, 'E_ARG', `sequence of ${T} tokens exceeds max_position_embeddings ${this.p.maxPositions}`);
    const types = inputs.tokenTypeIds
      ? idsTensor(inputs.tokenTypeIds, device, 'tokenTypeIds')
      : tensor(new BigInt64Array(B * T), [B, T], { dtype: 'i64', device });
    const w = this.word_embeddings.forward(ids),
      t = this.token_type_embeddings.forward(types);
    const wt = releaseInto(add(w, t), w, t);
    const pe = this.position_embeddings.forward(pos);
    const e = releaseInto(add(wt, pe), wt, pe);
    const n = this.LayerNorm.forward(e);
    return releaseInto(this.dropout.forward(n), n);
  }
}

/**
 * transformers' create_position_ids_from_input_ids: cumulative count of non-padding tokens, offset
 * by padding_idx, with padding_idx on padding itself.
 */
export function robertaPositions(rows: number[][], pad: number, device: string): Tensor {
  const B = rows.length;
  const T = B ? rows[0].length : 0;
  const flat = new BigInt64Array(B * T);
  rows.forEach((r, b) => {
    let n = 0;
    r.forEach((v, t) => {
      if (v !== pad) n++;
      flat[b * T + t] = BigInt(v !== pad ? n + pad : pad);
    });
  });
  return tensor(flat, [B, T], { dtype: 'i64', device });
}

class BertSelfAttention extends Module {
  query: Linear;
  key: Linear;
  value: Linear;
  constructor(
    private readonly p: BertParams,
    c: ModelCtx,
  ) {
    super();
    this.query = this.registerModule('query', new Linear(p.D, p.D, initOpts(c, p.std)));
    this.key = this.registerModule('key', new Linear(p.D, p.D, initOpts(c, p.std)));
    this.value = this.registerModule('value', new Linear(p.D, p.D, initOpts(c, p.std)));
  }
  forward(x: Tensor, mask: Tensor | null): Tensor {
    const [B, T, D] = x.shape;
    const H = this.p.nHead;
    const hd = D / H;
    const heads = (t: Tensor) => permute(reshape(t, [B, T, H, hd]), [0, 2, 1, 3]);
    const a = scaledDotProductAttention(heads(this.query.forward(x)), heads(this.key.forward(x)), heads(this.value.forward(x)), {
      mask,
      causal: false,
      scale: 1 / Math.sqrt(hd),
      dropoutP: this.training ? this.p.attnDropout : 0,
    });
    return reshape(permute(a, [0, 2, 1, 3]), [B, T, D]);
  }
}

/** dense -> dropout -> LayerNorm(. + residual): BertSelfOutput and BertOutput. */
class BertResidualOutput extends Module {
  dense: Linear;
  LayerNorm: LayerNorm;
  dropout: Dropout;
  constructor(p: BertParams, inFeatures: number, c: ModelCtx) {
    super();
    this.dense = this.registerModule('dense', new Linear(inFeatures, p.D, initOpts(c, p.std)));
    this.LayerNorm = this.registerModule('LayerNorm', new LayerNorm(p.D, p.eps, { device: c.device, dtype: c.dtype }));
    this.dropout = this.registerModule('dropout', new Dropout(p.hiddenDropout));
  }
  forward(h: Tensor, residual: Tensor): Tensor {
    // Neither the dropout nor the residual sum reads its input in backward: they go at once.
    const d = this.dense.forward(h);
    const dd = releaseInto(this.dropout.forward(d), d);
    return this.LayerNorm.forward(releaseInto(add(dd, residual), dd));
  }
}

class BertAttention extends Module {
  self: BertSelfAttention;
  output: BertResidualOutput;
  constructor(p: BertParams, c: ModelCtx) {
    super();
    this.self = this.registerModule('self', new BertSelfAttention(p, c));
    this.output = this.registerModule('output', new BertResidualOutput(p, p.D, c));
  }
  forward(x: Tensor, mask: Tensor | null): Tensor {
    return this.output.forward(this.self.forward(x, mask), x);
  }
}

class BertIntermediate extends Module {
  dense: Linear;
  private readonly act: (x: Tensor) => Tensor;
  constructor(p: BertParams, c: ModelCtx) {
    super();
    this.dense = this.registerModule('dense', new Linear(p.D, p.inner, initOpts(c, p.std)));
    this.act = activation(p.act);
  }
  forward(x: Tensor): Tensor {
    return this.act(this.dense.forward(x));
  }
}

class BertLayer extends Module {
  attention: BertAttention;
  intermediate: BertIntermediate;
  output: BertResidualOutput;
  constructor(p: BertParams, c: ModelCtx) {
    super();
    this.attention = this.registerModule('attention', new BertAttention(p, c));
    this.intermediate = this.registerModule('intermediate', new BertIntermediate(p, c));
    this.output = this.registerModule('output', new BertResidualOutput(p, p.inner, c));
  }
  forward(x: Tensor, mask: Tensor | null): Tensor {
    const a = this.attention.forward(x, mask);
    return this.output.forward(this.intermediate.forward(a), a);
  }
}

class BertEncoder extends Module {
  layer: ModuleList<BertLayer>;
  constructor(p: BertParams, c: ModelCtx) {
    super();
    const layers: BertLayer[] = [];
    for (let i = 0; i < p.nLayer; i++) layers.push(new BertLayer(p, c));
    this.layer = this.registerModule('layer', new ModuleList(layers));
  }
  forward(x: Tensor, mask: Tensor | null): Tensor {
    let h = x;
    for (const l of this.layer.items) h = this.layer.runBlock(h, (x) => l.forward(x, mask));
    return h;
  }
}

class BertPooler extends Module {
  dense: Linear;
  constructor(p: BertParams, c: ModelCtx) {
    super();
    this.dense = this.registerModule('dense', new Linear(p.D, p.D, initOpts(c, p.std)));
  }
  forward(h: Tensor): Tensor {
    const [B, , D] = h.shape;
    return tanh(this.dense.forward(reshape(slice(h, 1, 0, 1), [B, D])));
  }
}

/** BertModel / RobertaModel body: embeddings, encoder, optional pooler. */
export class BertBody extends Module {
  embeddings: BertEmbeddings;
  encoder: BertEncoder;
  pooler: BertPooler | null = null;
  constructor(
    readonly p: BertParams,
    c: ModelCtx,
    withPooler: boolean,
  ) {
    super();
    this.embeddings = this.registerModule('embeddings', new BertEmbeddings(p, c));
    this.encoder = this.registerModule('encoder', new BertEncoder(p, c));
    if (withPooler) this.pooler = this.registerModule('pooler', new BertPooler(p, c));
  }
  forward(inputs: ModelInputs): { hidden: Tensor; pooled?: Tensor } {
    check(!inputs.cache, 'E_ARG', 'BERT/RoBERTa encoders take no KV cache');
    const device = this.embeddings.word_embeddings.weight.device;
    const e = this.embeddings.forward(inputs);
    const [B, T] = e.shape;
    const mask = maskTensor(inputs.attentionMask, device, B, T);
    const hidden = this.encoder.forward(e, mask);
    return { hidden, pooled: this.pooler ? this.pooler.forward(hidden) : undefined };
  }
}

const ENCODER_BUFFERS = [/(^|\.)embeddings\.(position_ids|token_type_ids)$/];

/** BertModel / RobertaModel (task 'base'): logits are the last hidden states; keys at the root. */
export class BertBaseModel extends PreTrainedModel {
  readonly architecture: string;
  readonly task = 'base' as const;
  readonly baseModelPrefix: string;
  readonly body: BertBody;
  constructor(config: HFConfig, opts: ModelOptions = {}, roberta = config.model_type === 'roberta') {
    super(config, opts);
    this.architecture = roberta ? 'RobertaModel' : 'BertModel';
    this.baseModelPrefix = roberta ? 'roberta' : 'bert';
    this.body = new BertBody(bertParams(config, roberta), modelCtx(opts), true);
    for (const [name, child] of this.body.children()) this.registerModule(name, child);
  }
  override ignoredCheckpointKeys(): RegExp[] {
    return [...ENCODER_BUFFERS, /^cls\./, /^lm_head\./];
  }
  forward(inputs: ModelInputs): ModelOutput {
    const { hidden, pooled } = this.body.forward(inputs);
    return { logits: hidden, hiddenStates: hidden, pooledOutput: pooled };
  }
}

export class BertForSequenceClassification extends PreTrainedModel {
  readonly architecture = 'BertForSequenceClassification';
  readonly task = 'sequence-classification' as const;
  readonly baseModelPrefix = 'bert';
  bert: BertBody;
  dropout: Dropout;
  classifier: Linear;
  readonly numLabels: number;
  constructor(config: HFConfig, opts: ModelOptions = {}) {
    super(config, opts);
    const c = modelCtx(opts);
    const p = bertParams(config, false);
    this.numLabels = numLabels(config);
    this.bert = this.registerModule('bert', new BertBody(p, c, true));
    this.dropout = this.registerModule('dropout', new Dropout(p.classifierDropout));
    this.classifier = this.registerModule('classifier', new Linear(p.D, this.numLabels, initOpts(c, p.std)));
  }
  override ignoredCheckpointKeys(): RegExp[] {
    // Pretraining heads of bert-base-* checkpoints (BertForPreTraining / BertForMaskedLM).
    return [...ENCODER_BUFFERS, /^cls\./];
  }
  forward(inputs: ModelInputs): ModelOutput {
    const { hidden, pooled } = this.bert.forward(inputs);
    const logits = this.classifier.forward(this.dropout.forward(pooled!));
    return classifierOutput(this, logits, inputs, { hiddenStates: hidden, pooledOutput: pooled });
  }
}

/** RobertaClassificationHead: dropout, dense, tanh, dropout, out_proj on the <s> token. */
class RobertaClassificationHead extends Module {
  dense: Linear;
  dropout: Dropout;
  out_proj: Linear;
  constructor(p: BertParams, nLabels: number, c: ModelCtx) {
    super();
    this.dense = this.registerModule('dense', new Linear(p.D, p.D, initOpts(c, p.std)));
    this.dropout = this.registerModule('dropout', new Dropout(p.classifierDropout));
    this.out_proj = this.registerModule('out_proj', new Linear(p.D, nLabels, initOpts(c, p.std)));
  }
  forward(h: Tensor): Tensor {
    const [B, , D] = h.shape;
    const x = this.dropout.forward(reshape(slice(h, 1, 0, 1), [B, D]));
    return this.out_proj.forward(this.dropout.forward(tanh(this.dense.forward(x))));
  }
}

export class RobertaForSequenceClassification extends PreTrainedModel {
  readonly architecture = 'RobertaForSequenceClassification';
  readonly task = 'sequence-classification' as const;
  readonly baseModelPrefix = 'roberta';
  roberta: BertBody;
  classifier: RobertaClassificationHead;
  readonly numLabels: number;
  constructor(config: HFConfig, opts: ModelOptions = {}) {
    super(config, opts);
    const c = modelCtx(opts);
    const p = bertParams(config, true);
    this.numLabels = numLabels(config);
    this.roberta = this.registerModule('roberta', new BertBody(p, c, false));
    this.classifier = this.registerModule('classifier', new RobertaClassificationHead(p, this.numLabels, c));
  }
  override ignoredCheckpointKeys(): RegExp[] {
    // RoBERTa checkpoints saved from RobertaModel or *ForMaskedLM carry a pooler and lm_head this model does not have.
    return [...ENCODER_BUFFERS, /^roberta\.pooler\./, /^lm_head\./];
  }
  forward(inputs: ModelInputs): ModelOutput {
    const { hidden } = this.roberta.forward(inputs);
    return classifierOutput(this, this.classifier.forward(hidden), inputs, { hiddenStates: hidden });
  }
}
