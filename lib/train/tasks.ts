/**
 * Tasks turn rows into tokenized examples, examples into padded batches on a device, batches into
 * a loss (transformers' conventions, computed by the model's own head), and outputs into metrics:
 * classify (single sentences or pairs; labels by config.label2id, given names, or learned from the
 * data), regress (one score, STS-B style), causal-lm (raw text packed into blocks, or one example
 * per document), instruct (Alpaca prompts or the tokenizer's chat template; the prompt is masked
 * out of the loss) and chat (multi-turn conversations through the chat template, the loss on the
 * assistant's turns only). Pre-tokenized rows ({input_ids, attention_mask?, token_type_ids?, labels?,
 * label?}) are accepted by every task and need no tokenizer.
 */
import { Tensor } from '../engine/tensor';
import { SiftError, check } from '../engine/errors';
import { tensor } from '../autograd/creation';
import { noGrad } from '../autograd/tape';
import type { HFConfig, ModelOutput, PreTrainedModel } from '../models/common';
import { numLabels } from '../models/common';
import type { TextTokenizer } from '../tokenizers/types';
import type { Batch, ColumnOptions, Example, Metrics, Row, TaskName } from './types';
import { padSequences, padTo } from './batching';
import { accuracy, f1, mcc, pearson, spearman, perplexity } from './metrics';
import { DEFAULT_CHAT_TEMPLATE, chatMessages, encodeRenderedChat, renderChat } from './chat';
import type { ChatCapableTokenizer } from './chat';
import type { ChatMessage } from '../tokenizers/tokenizer';

export interface TaskOptions {
  tokenizer: TextTokenizer | null;
  config: HFConfig;
  columns?: ColumnOptions;
  /** Token limit per example (block size when packing); default from the config's positions (at most 512 / 1024). */
  maxLength?: number;
  /** Class names by id (classify). */
  labels?: string[];
  /** causal-lm on raw text: pack into blocks of maxLength (default) or one example per document. */
  packing?: boolean;
  /** More variables for the chat template (chat, instruct), e.g. { enable_thinking: false }. */
  chatTemplateVars?: Record<string, unknown>;
  /** Where a task says something once (the default chat template, rows skipped); default: a line on stderr. */
  onNotice?: (message: string) => void;
}

export interface Task {
  readonly name: TaskName;
  readonly maxLength: number;
  /** Class names by id (classify), once known: given, from config.label2id, or learned by the first prepare(). */
  labels: string[] | undefined;
  /** Tokenizes rows (or passes pre-tokenized rows and Examples through). */
  prepare(rows: (Row | Example)[]): Example[];
  /** Pads examples into a batch on a device. */
  collate(examples: Example[], device: string): Batch;
  /** The model's output and loss on a batch. */
  forward(model: PreTrainedModel, batch: Batch): ModelOutput;
  /** Class ids (classify) or scores (regress) per row of the batch; empty for language modelling. */
  predict(output: ModelOutput): number[];
  /** Reference values per example for metrics (class ids or scores; empty for language modelling). */
  targets(examples: Example[]): number[];
  /** Weight of an example in a mean loss: label tokens predicted (language modelling) or 1. */
  lossWeight(example: Example): number;
  metrics(predictions: number[], labels: number[], loss: number): Metrics;
}

export const ALPACA_PROMPT_WITH_INPUT =
  'Below is an instruction that describes a task, paired with an input that provides further context. ' +
  'Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n';
export const ALPACA_PROMPT_NO_INPUT =
  'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n' +
  '### Instruction:\n{instruction}\n\n### Response:\n';

/** The Alpaca prompt of an instruction (and optional input). */
export function alpacaPrompt(instruction: string, input?: string): string {
  return input
    ? ALPACA_PROMPT_WITH_INPUT.replace('{instruction}', instruction).replace('{input}', input)
    : ALPACA_PROMPT_NO_INPUT.replace('{instruction}', instruction);
}

function isExample(r: Row | Example): r is Example {
  return Array.isArray((r as Example).inputIds);
}

function intArray(v: unknown, what: string, rowNo: number): number[] {
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && Number.isInteger(x))) {
    throw new SiftError('E_FORMAT', `row ${rowNo}: '${what}' must be an array of integers`);
  }
  return v as number[];
}

function positionsOf(cfg: HFConfig): number {
  const v = cfg.n_positions ?? cfg.max_position_embeddings;
  if (typeof v !== 'number') return 512;
  // RoBERTa's positions start after padding_idx + 1.
  return cfg.model_type === 'roberta' ? v - 2 : v;
}

function padIdOf(cfg: HFConfig, tok: TextTokenizer | null): number {
  if (typeof cfg.pad_token_id === 'number') return cfg.pad_token_id;
  return tok?.padTokenId ?? tok?.eosTokenId ?? (typeof cfg.eos_token_id === 'number' ? cfg.eos_token_id : 0);
}

const TEXT_CANDIDATES = ['text', 'sentence', 'sentence1', 'question', 'question1', 'premise', 'content', 'review'];
const PAIR_OF: Record<string, string> = { sentence1: 'sentence2', question1: 'question2', premise: 'hypothesis', question: 'sentence' };

abstract class BaseTask implements Task {
  abstract readonly name: TaskName;
  readonly maxLength: number;
  labels: string[] | undefined;
  protected readonly tok: TextTokenizer | null;
  protected readonly cfg: HFConfig;
  protected readonly columns: ColumnOptions;
  protected readonly padId: number;
  protected readonly usesTokenTypes: boolean;

  constructor(opts: TaskOptions, defaultMax: number) {
    this.tok = opts.tokenizer;
    this.cfg = opts.config;
    this.columns = opts.columns ?? {};
    this.maxLength = opts.maxLength ?? Math.min(positionsOf(opts.config), defaultMax);
    check(Number.isInteger(this.maxLength) && this.maxLength >= 2, 'E_ARG', `maxLength must be an integer >= 2, got ${this.maxLength}`);
    this.padId = padIdOf(opts.config, opts.tokenizer);
    this.usesTokenTypes = typeof opts.config.type_vocab_size === 'number' && opts.config.type_vocab_size > 0;
    this.labels = opts.labels;
  }

  protected needTokenizer(): TextTokenizer {
    if (!this.tok)
      throw new SiftError(
        'E_ARG',
        `task '${this.name}': these rows hold text, which needs a tokenizer (or give pre-tokenized rows with input_ids)`,
      );
    return this.tok;
  }

  protected column(row: Row, given: string | undefined, candidates: string[], what: string, rowNo: number): string {
    if (given !== undefined) {
      if (!(given in row))
        throw new SiftError('E_FORMAT', `row ${rowNo}: no column '${given}' (${what}); columns: ${Object.keys(row).join(', ')}`);
      return given;
    }
    const c = candidates.find((k) => k in row);
    if (!c)
      throw new SiftError(
        'E_FORMAT',
        `row ${rowNo}: no ${what} column (tried ${candidates.join(', ')}; columns: ${Object.keys(row).join(', ')}); name it with the column options`,
      );
    return c;
  }

  /** A pre-tokenized row as an Example (labels/label handled by the task). */
  protected pretokenized(row: Row, rowNo: number): Example {
    const ids = intArray(row.input_ids, 'input_ids', rowNo);
    const ex: Example = { inputIds: ids.slice(0, this.maxLength) };
    if (row.attention_mask !== undefined) ex.attentionMask = intArray(row.attention_mask, 'attention_mask', rowNo).slice(0, this.maxLength);
    if (row.token_type_ids !== undefined) ex.tokenTypeIds = intArray(row.token_type_ids, 'token_type_ids', rowNo).slice(0, this.maxLength);
    if (row.labels !== undefined) ex.labels = intArray(row.labels, 'labels', rowNo).slice(0, this.maxLength);
    for (const [k, v] of [
      ['attention_mask', ex.attentionMask],
      ['token_type_ids', ex.tokenTypeIds],
      ['labels', ex.labels],
    ] as const) {
      if (v && v.length !== ex.inputIds.length)
        throw new SiftError('E_FORMAT', `row ${rowNo}: '${k}' has ${v.length} entries for ${ex.inputIds.length} input_ids`);
    }
    return ex;
  }

  abstract prepare(rows: (Row | Example)[]): Example[];
  abstract predict(output: ModelOutput): number[];
  abstract targets(examples: Example[]): number[];
  abstract metrics(predictions: number[], labels: number[], loss: number): Metrics;
  protected abstract labelTensor(examples: Example[], T: number, device: string): Tensor | undefined;

  lossWeight(_example: Example): number {
    return 1;
  }

  collate(examples: Example[], device: string): Batch {
    check(examples.length > 0, 'E_ARG', 'collate: no examples');
    const masks = examples.map((e) => e.attentionMask ?? e.inputIds.map(() => 1));
    const {
      ids,
      mask,
      length: T,
    } = padSequences(
      examples.map((e) => e.inputIds),
      this.padId,
      { fillMask: masks },
    );
    const B = examples.length;
    const numTokens = mask.reduce((a, r) => a + r.reduce((s, v) => s + (v ? 1 : 0), 0), 0);
    const i64 = (rows: number[][]) => {
      const flat = new BigInt64Array(B * T);
      rows.forEach((r, b) => r.forEach((v, t) => (flat[b * T + t] = BigInt(v))));
      return tensor(flat, [B, T], { dtype: 'i64', device });
    };
    const owned: Tensor[] = [];
    const inputIds = i64(ids);
    const attentionMask = i64(mask);
    owned.push(inputIds, attentionMask);
    let tokenTypeIds: Tensor | undefined;
    if (this.usesTokenTypes && examples.some((e) => e.tokenTypeIds)) {
      tokenTypeIds = i64(
        padTo(
          examples.map((e) => e.tokenTypeIds ?? e.inputIds.map(() => 0)),
          T,
          0,
        ),
      );
      owned.push(tokenTypeIds);
    }
    const labels = this.labelTensor(examples, T, device);
    if (labels) owned.push(labels);
    return {
      inputIds,
      attentionMask,
      tokenTypeIds,
      labels,
      numTokens,
      size: B,
      dispose() {
        for (const t of owned) t.dispose();
      },
    };
  }

  forward(model: PreTrainedModel, batch: Batch): ModelOutput {
    const full = batch.numTokens === batch.inputIds.size;
    return model.forward({
      inputIds: batch.inputIds,
      // No padding: no mask, so that the attention kernels take their unmasked path.
      attentionMask: full ? null : batch.attentionMask,
      tokenTypeIds: batch.tokenTypeIds ?? null,
      labels: batch.labels ?? null,
    });
  }
}

// ---- classification and regression

class ClassifyTask extends BaseTask {
  readonly name: TaskName = 'classify';
  private index: Map<string, number> | null = null;

  constructor(opts: TaskOptions) {
    super(opts, 512);
    if (!this.labels) {
      const l2i = opts.config.label2id as Record<string, number> | undefined;
      const keys = l2i && typeof l2i === 'object' ? Object.keys(l2i) : [];
      // transformers writes LABEL_0.. when no names were given: those carry no mapping.
      if (keys.length && !keys.every((k) => /^LABEL_\d+$/.test(k))) {
        const names: string[] = [];
        for (const k of keys) names[l2i![k]] = k;
        this.labels = names;
      }
    }
    if (this.labels) this.buildIndex();
  }

  private buildIndex(): void {
    this.index = new Map(this.labels!.map((n, i) => [String(n), i]));
  }

  private get numClasses(): number {
    return this.labels?.length ?? numLabels(this.cfg);
  }

  private learn(rows: (Row | Example)[]): void {
    const seen = new Set<string>();
    rows.forEach((r, i) => {
      if (isExample(r)) {
        if (typeof r.label === 'number') seen.add(String(r.label));
        return;
      }
      const col =
        'input_ids' in r
          ? (this.columns.labelColumn ?? 'label')
          : this.column(r, this.columns.labelColumn, ['label', 'labels'], 'label', i + 1);
      const v = r[col];
      if (v !== undefined && v !== null && v !== '') seen.add(String(v).trim());
    });
    if (!seen.size) return;
    const vals = [...seen];
    const numeric = vals.every((v) => /^-?\d+$/.test(v));
    if (numeric) {
      const ints = vals.map(Number).sort((a, b) => a - b);
      // Class ids 0..n-1 (possibly some absent from this split) keep their ids.
      if (ints[0] >= 0) {
        const n = Math.max(ints[ints.length - 1] + 1, numLabels(this.cfg));
        this.labels = Array.from({ length: n }, (_, i) => String(i));
      } else {
        this.labels = ints.map(String);
      }
    } else {
      this.labels = vals.sort();
    }
    this.buildIndex();
  }

  private labelId(v: unknown, rowNo: number): number {
    const s = String(v).trim();
    const id = this.index!.get(s);
    if (id !== undefined) return id;
    if (/^\d+$/.test(s) && Number(s) < this.labels!.length) return Number(s);
    throw new SiftError('E_FORMAT', `row ${rowNo}: label '${s}' is not one of ${this.labels!.slice(0, 20).join(', ')}`);
  }

  prepare(rows: (Row | Example)[]): Example[] {
    if (!this.labels) this.learn(rows);
    const out: Example[] = [];
    let textCol: string | undefined;
    let pairCol: string | null | undefined;
    let labelCol: string | undefined;
    rows.forEach((r, i) => {
      const n = i + 1;
      if (isExample(r)) {
        out.push(r);
        return;
      }
      let ex: Example;
      if ('input_ids' in r) {
        ex = this.pretokenized(r, n);
      } else {
        const tok = this.needTokenizer();
        textCol ??= this.column(r, this.columns.textColumn, TEXT_CANDIDATES, 'text', n);
        if (pairCol === undefined) {
          pairCol =
            this.columns.textPairColumn ??
            (PAIR_OF[textCol] && PAIR_OF[textCol] in r && !this.columns.textColumn ? PAIR_OF[textCol] : null);
        }
        const text = r[textCol];
        if (typeof text !== 'string') throw new SiftError('E_FORMAT', `row ${n}: '${textCol}' must be text`);
        let pair: string | null = null;
        if (pairCol) {
          if (!(pairCol in r)) throw new SiftError('E_FORMAT', `row ${n}: no column '${pairCol}' (text pair)`);
          pair = String(r[pairCol]);
        }
        const enc = tok.encode(text, pair, { maxLength: this.maxLength, truncation: true });
        ex = { inputIds: enc.inputIds, attentionMask: enc.attentionMask, tokenTypeIds: enc.tokenTypeIds };
      }
      labelCol ??= this.columns.labelColumn ?? ['label', 'labels'].find((k) => k in r) ?? 'label';
      const v = r[labelCol];
      if (v !== undefined && v !== null && v !== '') {
        if (!this.index) throw new SiftError('E_FORMAT', `row ${n}: labels appear after rows without any`);
        ex.label = this.labelId(v, n);
      }
      out.push(ex);
    });
    const C = numLabels(this.cfg);
    if (this.labels && this.labels.length > C) {
      throw new SiftError(
        'E_ARG',
        `the data has ${this.labels.length} classes (${this.labels.slice(0, 10).join(', ')}) but the model's head has num_labels = ${C}`,
      );
    }
    return out;
  }

  protected labelTensor(examples: Example[], _T: number, device: string): Tensor | undefined {
    if (examples.some((e) => typeof e.label !== 'number')) return undefined;
    return tensor(
      BigInt64Array.from(examples, (e) => BigInt(e.label as number)),
      [examples.length],
      { dtype: 'i64', device },
    );
  }

  predict(output: ModelOutput): number[] {
    return noGrad(() => {
      const [B, C] = output.logits.shape;
      const v = output.logits.toArray() as Float32Array;
      const out: number[] = [];
      for (let b = 0; b < B; b++) {
        let best = 0;
        for (let c = 1; c < C; c++) if (v[b * C + c] > v[b * C + best]) best = c;
        out.push(best);
      }
      return out;
    });
  }

  targets(examples: Example[]): number[] {
    return examples.map((e) => (typeof e.label === 'number' ? e.label : -1));
  }

  metrics(pred: number[], labels: number[], loss: number): Metrics {
    return {
      loss,
      accuracy: accuracy(pred, labels),
      f1: f1(pred, labels, this.numClasses),
      mcc: mcc(pred, labels),
      examples: labels.length,
    };
  }
}

class RegressTask extends BaseTask {
  readonly name: TaskName = 'regress';
  constructor(opts: TaskOptions) {
    super(opts, 512);
  }

  prepare(rows: (Row | Example)[]): Example[] {
    let textCol: string | undefined;
    let pairCol: string | null | undefined;
    let labelCol: string | undefined;
    return rows.map((r, i) => {
      const n = i + 1;
      if (isExample(r)) return r;
      let ex: Example;
      if ('input_ids' in r) {
        ex = this.pretokenized(r, n);
      } else {
        const tok = this.needTokenizer();
        textCol ??= this.column(r, this.columns.textColumn, TEXT_CANDIDATES, 'text', n);
        if (pairCol === undefined)
          pairCol =
            this.columns.textPairColumn ??
            (PAIR_OF[textCol] && PAIR_OF[textCol] in r && !this.columns.textColumn ? PAIR_OF[textCol] : null);
        const pair = pairCol ? String(r[pairCol] ?? '') : null;
        const enc = tok.encode(String(r[textCol]), pair, { maxLength: this.maxLength, truncation: true });
        ex = { inputIds: enc.inputIds, attentionMask: enc.attentionMask, tokenTypeIds: enc.tokenTypeIds };
      }
      labelCol ??= this.columns.labelColumn ?? ['label', 'labels', 'score'].find((k) => k in r) ?? 'label';
      const v = r[labelCol];
      if (v !== undefined && v !== null && v !== '') {
        const x = Array.isArray(v) ? v.map(Number) : Number(v);
        if (Array.isArray(x) ? x.some((y) => !Number.isFinite(y)) : !Number.isFinite(x))
          throw new SiftError('E_FORMAT', `row ${n}: score '${v}' is not a number`);
        ex.label = x;
      }
      return ex;
    });
  }

  protected labelTensor(examples: Example[], _T: number, device: string): Tensor | undefined {
    if (examples.some((e) => e.label === undefined)) return undefined;
    const first = examples[0].label!;
    if (Array.isArray(first)) {
      const n = first.length;
      return tensor(Float32Array.from(examples.flatMap((e) => e.label as number[])), [examples.length, n], { device });
    }
    return tensor(
      Float32Array.from(examples, (e) => e.label as number),
      [examples.length],
      { device },
    );
  }

  predict(output: ModelOutput): number[] {
    return Array.from(output.logits.toArray() as Float32Array);
  }

  targets(examples: Example[]): number[] {
    return examples.flatMap((e) => (Array.isArray(e.label) ? e.label : [e.label ?? NaN]));
  }

  metrics(pred: number[], labels: number[], loss: number): Metrics {
    return { loss, pearson: pearson(pred, labels), spearman: spearman(pred, labels), examples: labels.length };
  }
}

// ---- language modelling

abstract class LmTask extends BaseTask {
  protected labelTensor(examples: Example[], T: number, device: string): Tensor {
    const B = examples.length;
    const flat = new BigInt64Array(B * T).fill(-100n);
    examples.forEach((e, b) => {
      const lab = e.labels ?? e.inputIds;
      const mask = e.attentionMask;
      lab.forEach((v, t) => (flat[b * T + t] = BigInt(mask && !mask[t] ? -100 : v)));
    });
    return tensor(flat, [B, T], { dtype: 'i64', device });
  }

  /** Positions whose label the model predicts: t >= 1 with a label other than -100 (and not padding). */
  override lossWeight(e: Example): number {
    const lab = e.labels ?? e.inputIds;
    let n = 0;
    for (let t = 1; t < lab.length; t++) if (lab[t] !== -100 && (!e.attentionMask || e.attentionMask[t])) n++;
    return n;
  }

  predict(_output: ModelOutput): number[] {
    return [];
  }

  targets(_examples: Example[]): number[] {
    return [];
  }

  metrics(_pred: number[], _labels: number[], loss: number): Metrics {
    return { loss, perplexity: perplexity(loss) };
  }
}

class CausalLmTask extends LmTask {
  readonly name: TaskName = 'causal-lm';
  private readonly packing: boolean;
  constructor(opts: TaskOptions) {
    super(opts, 1024);
    this.packing = opts.packing ?? true;
  }

  prepare(rows: (Row | Example)[]): Example[] {
    const out: Example[] = [];
    let stream: number[] = [];
    let textCol: string | undefined;
    rows.forEach((r, i) => {
      const n = i + 1;
      if (isExample(r)) {
        out.push(r);
        return;
      }
      if ('input_ids' in r) {
        out.push(this.pretokenized(r, n));
        return;
      }
      const tok = this.needTokenizer();
      textCol ??= this.column(r, this.columns.textColumn, TEXT_CANDIDATES, 'text', n);
      const text = r[textCol];
      if (typeof text !== 'string') throw new SiftError('E_FORMAT', `row ${n}: '${textCol}' must be text`);
      const ids = tok.encode(text, null, { addSpecialTokens: true }).inputIds;
      // Documents are separated by EOS, as GPT-2 was trained.
      if (tok.eosTokenId !== undefined && ids[ids.length - 1] !== tok.eosTokenId) ids.push(tok.eosTokenId);
      if (this.packing) {
        for (const id of ids) stream.push(id);
        while (stream.length >= this.maxLength) {
          out.push({ inputIds: stream.slice(0, this.maxLength) });
          stream = stream.slice(this.maxLength);
        }
      } else if (ids.length >= 2) {
        out.push({ inputIds: ids.slice(0, this.maxLength) });
      }
    });
    // The remainder is dropped (as transformers' run_clm) unless it is all there is.
    if (this.packing && out.length === 0 && stream.length >= 2) out.push({ inputIds: stream });
    return out;
  }
}

/**
 * Language modelling on conversations: the chat template formats them and the loss is on the
 * assistant's turns only (see chat.ts). Shared by the chat task and by instruct rows on a
 * tokenizer with a chat template.
 */
abstract class ConversationTask extends LmTask {
  private readonly notice: (message: string) => void;
  private readonly templateVars: Record<string, unknown>;
  private saidDefault = false;
  /** Whether the tokenizer puts a BOS before plain text (known after the first conversation). */
  private tokenizerBos: boolean | undefined;

  constructor(opts: TaskOptions) {
    super(opts, 1024);
    this.notice = opts.onNotice ?? ((m) => process.stderr.write(`sift-ft: ${m}\n`));
    this.templateVars = opts.chatTemplateVars ?? {};
  }

  protected say(message: string): void {
    this.notice(message);
  }

  /** The tokenizer's chat template, if it has one. */
  protected ownTemplate(): string | undefined {
    const t = this.tok as ChatCapableTokenizer | null;
    try {
      return typeof t?.chatTemplate === 'function' ? t.chatTemplate() : undefined;
    } catch {
      return undefined;
    }
  }

  /** A conversation as an example: ids of the rendered text, labels on the assistant's turns, cut to maxLength. */
  protected conversation(messages: ChatMessage[]): Example {
    const tok = this.needTokenizer() as ChatCapableTokenizer;
    const own = this.ownTemplate();
    const template = own ?? DEFAULT_CHAT_TEMPLATE;
    if (!own && !this.saidDefault) {
      this.saidDefault = true;
      this.say(
        "the tokenizer has no chat template: conversations are formatted with the default ChatML template ('<|im_start|>role\\ncontent<|im_end|>\\n')",
      );
    }
    const vars: Record<string, unknown> = {};
    for (const name of ['bos', 'eos', 'unk', 'pad', 'cls', 'sep', 'mask'] as const) vars[`${name}_token`] = tok.specialToken?.(name) ?? '';
    Object.assign(vars, this.templateVars);
    const eos = tok.specialToken?.('eos');
    const markers = [...(tok.specialTokenStrings ?? (eos ? [eos] : [])), ...(own ? [] : ['<|im_end|>'])];
    const chat = renderChat(template, messages, vars, markers);
    // The default template writes no BOS: the tokenizer's own goes first, as for plain text.
    if (this.tokenizerBos === undefined) {
      const withSpecial = tok.encode('a', null, { addSpecialTokens: true }).inputIds;
      this.tokenizerBos =
        tok.bosTokenId !== undefined &&
        withSpecial[0] === tok.bosTokenId &&
        tok.encode('a', null, { addSpecialTokens: false }).inputIds[0] !== tok.bosTokenId;
    }
    const enc = encodeRenderedChat(tok, chat, !own && this.tokenizerBos);
    return { inputIds: enc.inputIds.slice(0, this.maxLength), labels: enc.labels.slice(0, this.maxLength) };
  }

  /** Drops examples left without a label by truncation (they would add nothing but a 0/0 loss), saying how many. */
  protected keepLabelled(examples: Example[]): Example[] {
    const kept = examples.filter((e) => !e.labels || e.labels.some((v, t) => t >= 1 && v !== -100));
    if (kept.length < examples.length) {
      this.say(
        `${examples.length - kept.length} of ${examples.length} rows have no assistant token within the first ${this.maxLength} tokens and are skipped (raise --max-length to keep them)`,
      );
    }
    return kept;
  }
}

class InstructTask extends ConversationTask {
  readonly name: TaskName = 'instruct';

  prepare(rows: (Row | Example)[]): Example[] {
    const instrCol = this.columns.textColumn ?? 'instruction';
    const inputCol = this.columns.textPairColumn ?? 'input';
    const outCol = this.columns.labelColumn ?? 'output';
    const template = this.ownTemplate() !== undefined;
    const out = rows.map((r, i) => {
      const n = i + 1;
      if (isExample(r)) return r;
      if ('input_ids' in r) return this.pretokenized(r, n);
      const tok = this.needTokenizer();
      for (const c of [instrCol, outCol]) {
        if (typeof r[c] !== 'string')
          throw new SiftError(
            'E_FORMAT',
            `row ${n}: instruct rows need text columns '${instrCol}' and '${outCol}' (and optionally '${inputCol}')`,
          );
      }
      const instruction = r[instrCol] as string;
      const input = typeof r[inputCol] === 'string' ? (r[inputCol] as string) : '';
      const output = r[outCol] as string;
      // With a chat template: one user turn and the assistant's answer, as the chat task formats them.
      if (template)
        return this.conversation([
          { role: 'user', content: input ? `${instruction}\n\n${input}` : instruction },
          { role: 'assistant', content: output },
        ]);
      const prompt = alpacaPrompt(instruction, input);
      // Leading special tokens (e.g. LLaMA's BOS) come from the tokenizer.
      const withSpecial = tok.encode(prompt, null, { addSpecialTokens: true }).inputIds;
      const plain = tok.encode(prompt, null, { addSpecialTokens: false }).inputIds;
      const lead = tok.bosTokenId !== undefined && withSpecial[0] === tok.bosTokenId && plain[0] !== tok.bosTokenId ? [tok.bosTokenId] : [];
      const promptIds = [...lead, ...plain];
      const respIds = tok.encode(output, null, { addSpecialTokens: false }).inputIds;
      if (tok.eosTokenId !== undefined && respIds[respIds.length - 1] !== tok.eosTokenId) respIds.push(tok.eosTokenId);
      const ids = [...promptIds, ...respIds].slice(0, this.maxLength);
      const labels = [...promptIds.map(() => -100), ...respIds].slice(0, this.maxLength);
      return { inputIds: ids, labels };
    });
    return template ? this.keepLabelled(out) : out;
  }
}

/** Conversations ({messages: [{role, content}, ...]}) with the loss on the assistant's turns. */
class ChatTask extends ConversationTask {
  readonly name: TaskName = 'chat';

  prepare(rows: (Row | Example)[]): Example[] {
    const col = this.columns.textColumn ?? 'messages';
    const out = rows.map((r, i) => {
      const n = i + 1;
      if (isExample(r)) return r;
      if ('input_ids' in r) return this.pretokenized(r, n);
      if (!(col in r))
        throw new SiftError(
          'E_FORMAT',
          `row ${n}: chat rows need a '${col}' column (a list of {role, content} messages); columns: ${Object.keys(r).join(', ') || 'none'}`,
        );
      return this.conversation(chatMessages(r[col], n, col));
    });
    return this.keepLabelled(out);
  }
}

/** The task of a name. */
export function createTask(name: TaskName, opts: TaskOptions): Task {
  switch (name) {
    case 'classify':
      return new ClassifyTask(opts);
    case 'regress':
      return new RegressTask(opts);
    case 'causal-lm':
      return new CausalLmTask(opts);
    case 'instruct':
      return new InstructTask(opts);
    case 'chat':
      return new ChatTask(opts);
    default:
      throw new SiftError('E_ARG', `unknown task '${name as string}' (expected classify, regress, causal-lm, instruct or chat)`);
  }
}

/** The model head a task needs. */
export function modelTaskFor(task: TaskName): 'causal-lm' | 'sequence-classification' {
  return task === 'causal-lm' || task === 'instruct' || task === 'chat' ? 'causal-lm' : 'sequence-classification';
}
