/**
 * Hugging Face tokenizers (tokenizer.json + tokenizer_config.json + special_tokens_map.json)
 * through the @huggingface/tokenizers package, behind the uniform TextTokenizer interface.
 * The package tokenizes and decodes; truncation, special tokens, segment ids and padding are done
 * here so that pairs are truncated before the special tokens go in (longest-first, as the Rust
 * tokenizers do) and batches pad either side.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Tokenizer as HfCoreTokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import { SiftError } from '../engine/errors';
import { writeFileAtomic } from '../io/atomic';
import { readJsonObject, resolveModelDir, ResolveOptions } from '../io/hf';
import { legacyTokenizerJson } from './legacy';
import { BYTE_TO_CHAR } from './bytelevel';
import type {
  BatchEncodeOptions,
  BatchEncoding,
  DecodeOptions,
  EncodeOptions,
  Encoding,
  TextInput,
  TextTokenizer,
  TruncationStrategy,
} from './types';

type Json = Record<string, unknown>;

export const SPECIAL_TOKEN_NAMES = ['bos', 'eos', 'unk', 'pad', 'cls', 'sep', 'mask'] as const;
export type SpecialTokenName = (typeof SPECIAL_TOKEN_NAMES)[number];

/** Tokens tried, in order, when neither config file names a special token. */
const FALLBACK_TOKENS: Record<SpecialTokenName, string[]> = {
  bos: ['<s>', '<|begin_of_text|>', '<|endoftext|>'],
  eos: ['</s>', '<|end_of_text|>', '<|endoftext|>'],
  unk: ['[UNK]', '<unk>'],
  pad: ['[PAD]', '<pad>'],
  cls: ['[CLS]'],
  sep: ['[SEP]'],
  mask: ['[MASK]', '<mask>'],
};

/** A config's special-token value: a string or an AddedToken dict ({content: ...}). */
function tokenContent(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (v !== null && typeof v === 'object' && typeof (v as Json).content === 'string') return (v as Json).content as string;
  return null;
}

function asObject(v: unknown, what: string): Json {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new SiftError('E_FORMAT', `${what} is not a JSON object`);
  return v as Json;
}

/** Applies add_prefix_space from tokenizer_config.json to ByteLevel pre-tokenizers, as transformers does. */
function withPrefixSpace(pre: unknown, add: boolean): unknown {
  if (pre === null || typeof pre !== 'object') return pre;
  const p = pre as Json;
  if (p.type === 'ByteLevel') return { ...p, add_prefix_space: add };
  if (p.type === 'Sequence' && Array.isArray(p.pretokenizers))
    return { ...p, pretokenizers: p.pretokenizers.map((x) => withPrefixSpace(x, add)) };
  return pre;
}

/** LLaMA-family tokenizers rebuild their template from add_bos_token/add_eos_token (LlamaTokenizerFast.update_post_processor). */
function llamaTemplate(
  bos: string | null,
  eos: string | null,
  addBos: boolean,
  addEos: boolean,
  vocab: (t: string) => number | undefined,
): Json | null {
  if ((addBos && bos === null) || (addEos && eos === null)) return null;
  const special = (t: string, typeId: number): Json => ({ SpecialToken: { id: t, type_id: typeId } });
  const seq = (id: string, typeId: number): Json => ({ Sequence: { id, type_id: typeId } });
  const single: Json[] = [];
  const pair: Json[] = [];
  if (addBos) single.push(special(bos!, 0));
  single.push(seq('A', 0));
  if (addEos) single.push(special(eos!, 0));
  pair.push(...single);
  if (addBos) pair.push(special(bos!, 1));
  pair.push(seq('B', 1));
  if (addEos) pair.push(special(eos!, 1));
  const specials: Json = {};
  for (const t of [addBos ? bos : null, addEos ? eos : null]) {
    if (t === null) continue;
    const id = vocab(t);
    if (id === undefined) return null;
    specials[t] = { id: t, ids: [id], tokens: [t] };
  }
  return { type: 'TemplateProcessing', single, pair, special_tokens: specials };
}

export interface TokenizerFiles {
  /** Parsed tokenizer.json. */
  tokenizer: Json;
  /** Parsed tokenizer_config.json (optional). */
  config?: Json;
  /** Parsed special_tokens_map.json (optional). */
  specialTokensMap?: Json;
  /** A chat template from chat_template.jinja (optional). */
  chatTemplate?: string;
  /** Parsed generation_config.json of the model folder (optional): its eos_token_id ends generation. */
  generationConfig?: Json;
}

export interface ChatMessage {
  role: string;
  content: string;
  [key: string]: unknown;
}

/** A Hugging Face tokenizer. Build it with fromFolder, fromFiles or (for byte-level from scratch) trainByteBpe. */
export class HfTokenizer implements TextTokenizer {
  private readonly core: HfCoreTokenizer;
  private readonly files: TokenizerFiles;
  private readonly specials = new Map<SpecialTokenName, string>();
  private readonly robertaTypes: boolean;
  private readonly specialCount: [number, number];
  private readonly maxId: number;
  private padOverride: number | undefined;
  private specialIdsCache: number[] | undefined;
  /** tokenizer_config.json model_max_length (undefined when absent or effectively unlimited). */
  readonly modelMaxLength: number | undefined;
  readonly paddingSide: 'right' | 'left';
  readonly truncationSide: 'right' | 'left';
  private readonly cleanUp: boolean;

  constructor(files: TokenizerFiles) {
    const tokenizerJson = asObject(files.tokenizer, 'tokenizer.json');
    const config = files.config ? asObject(files.config, 'tokenizer_config.json') : {};
    const stm = files.specialTokensMap ? asObject(files.specialTokensMap, 'special_tokens_map.json') : {};
    if (tokenizerJson.model === null || typeof tokenizerJson.model !== 'object')
      throw new SiftError('E_FORMAT', "tokenizer.json has no 'model'");
    // The package requires these keys present (null allowed), as every tokenizers-written file has them.
    const tj: Json = { normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, added_tokens: [], ...tokenizerJson };
    if (typeof config.add_prefix_space === 'boolean') tj.pre_tokenizer = withPrefixSpace(tj.pre_tokenizer, config.add_prefix_space);
    // The package reads additional_special_tokens as strings.
    const coreConfig: Json = { ...stm, ...config };
    if (Array.isArray(coreConfig.additional_special_tokens)) {
      coreConfig.additional_special_tokens = coreConfig.additional_special_tokens.map(tokenContent).filter((t) => t !== null);
    }
    for (const name of SPECIAL_TOKEN_NAMES) {
      const key = `${name}_token`;
      if (key in coreConfig) coreConfig[key] = tokenContent(coreConfig[key]) ?? undefined;
    }
    let core: HfCoreTokenizer;
    try {
      core = new HfCoreTokenizer(tj, coreConfig);
    } catch (e) {
      throw new SiftError('E_FORMAT', `tokenizer.json: ${(e as Error).message}`);
    }
    // Special tokens: tokenizer_config.json, then special_tokens_map.json, then the post-processor and common names.
    const pp = (tj.post_processor ?? null) as Json | null;
    for (const name of SPECIAL_TOKEN_NAMES) {
      const key = `${name}_token`;
      let tok: string | null = null;
      let named = false;
      for (const src of [config, stm]) {
        if (key in src) {
          tok = tokenContent(src[key]);
          named = true;
          break;
        }
      }
      if (!named) {
        if ((name === 'cls' || name === 'sep') && pp && Array.isArray(pp[name])) tok = String((pp[name] as unknown[])[0]);
        else if (name === 'unk' && typeof (tj.model as Json).unk_token === 'string') tok = (tj.model as Json).unk_token as string;
        else tok = FALLBACK_TOKENS[name].find((t) => core.token_to_id(t) !== undefined) ?? null;
      }
      if (tok !== null && core.token_to_id(tok) !== undefined) this.specials.set(name, tok);
    }
    // LLaMA and Gemma tokenizer configs (Mistral and Phi-3 use LLaMA's class) carry add_bos_token /
    // add_eos_token, which transformers turns into the post-processor's template.
    const cls = typeof config.tokenizer_class === 'string' ? config.tokenizer_class : '';
    if (/Llama|Gemma/.test(cls) && (typeof config.add_bos_token === 'boolean' || typeof config.add_eos_token === 'boolean')) {
      const tpl = llamaTemplate(
        this.specials.get('bos') ?? null,
        this.specials.get('eos') ?? null,
        config.add_bos_token !== false,
        config.add_eos_token === true,
        (t) => core.token_to_id(t),
      );
      if (tpl) {
        tj.post_processor = tpl;
        core = new HfCoreTokenizer(tj, coreConfig);
      }
    }
    this.core = core;
    this.files = { ...files, tokenizer: tj, config, specialTokensMap: files.specialTokensMap };
    // RoBERTa has a single segment embedding: its pairs keep type id 0 (transformers returns none).
    this.robertaTypes = ppType(tj.post_processor) === 'RobertaProcessing';
    this.specialCount = [this.postProcess([], null, true).tokens.length, this.postProcess([], [], true).tokens.length];
    let maxId = -1;
    for (const id of core.get_vocab(true).values()) if (id > maxId) maxId = id;
    this.maxId = maxId;
    const mml = config.model_max_length;
    this.modelMaxLength = typeof mml === 'number' && mml > 0 && mml < 1e9 ? mml : undefined;
    const padding = tj.padding as Json | null | undefined;
    const pside = config.padding_side ?? (padding && padding.direction === 'Left' ? 'left' : undefined);
    this.paddingSide = pside === 'left' ? 'left' : 'right';
    this.truncationSide = config.truncation_side === 'left' ? 'left' : 'right';
    this.cleanUp = config.clean_up_tokenization_spaces === true;
    if (
      !this.specials.has('pad') &&
      padding &&
      typeof padding.pad_token === 'string' &&
      core.token_to_id(padding.pad_token) !== undefined
    ) {
      this.specials.set('pad', padding.pad_token);
    }
  }

  /**
   * Loads the tokenizer of a model path: a folder (or a file in it), a hub cache folder or an
   * 'org/name' in the local hub cache. Reads tokenizer.json, or builds the equivalent from
   * vocab.txt (WordPiece) or vocab.json + merges.txt (byte-level BPE) when there is none.
   */
  static fromFolder(p: string, opts: ResolveOptions = {}): HfTokenizer {
    const dir = resolveModelDir(p, opts);
    const file = (name: string): string | null => (fs.existsSync(path.join(dir, name)) ? path.join(dir, name) : null);
    const cfgPath = file('tokenizer_config.json');
    const config = cfgPath ? readJsonObject(cfgPath) : undefined;
    const stmPath = file('special_tokens_map.json');
    const specialTokensMap = stmPath ? readJsonObject(stmPath) : undefined;
    const tplPath = file('chat_template.jinja');
    const chatTemplate = tplPath ? fs.readFileSync(tplPath, 'utf8') : undefined;
    const genPath = file('generation_config.json');
    const generationConfig = genPath ? readJsonObject(genPath) : undefined;
    const tjPath = file('tokenizer.json');
    let tokenizer: Json;
    if (tjPath) tokenizer = readJsonObject(tjPath);
    else tokenizer = legacyTokenizerJson(dir, { ...(specialTokensMap ?? {}), ...(config ?? {}) });
    return new HfTokenizer({ tokenizer, config, specialTokensMap, chatTemplate, generationConfig });
  }

  static fromFiles(files: TokenizerFiles): HfTokenizer {
    return new HfTokenizer(files);
  }

  /** The ids the embedding must cover: the highest id plus one (added tokens included). */
  get vocabSize(): number {
    return this.maxId + 1;
  }

  /** Token string of a special token ('bos', 'eos', 'pad', 'unk', 'cls', 'sep', 'mask'), if the tokenizer has it. */
  specialToken(name: SpecialTokenName): string | undefined {
    return this.specials.get(name);
  }

  private specialId(name: SpecialTokenName): number | undefined {
    const t = this.specials.get(name);
    return t === undefined ? undefined : this.core.token_to_id(t);
  }

  get bosTokenId(): number | undefined {
    return this.specialId('bos');
  }
  get eosTokenId(): number | undefined {
    return this.specialId('eos');
  }
  get unkTokenId(): number | undefined {
    return this.specialId('unk');
  }
  get clsTokenId(): number | undefined {
    return this.specialId('cls');
  }
  get sepTokenId(): number | undefined {
    return this.specialId('sep');
  }
  get maskTokenId(): number | undefined {
    return this.specialId('mask');
  }
  /**
   * The ids that end generation: eos_token_id of generation_config.json (a number or a list, as
   * transformers' generate reads it; e.g. Gemma's <end_of_turn>, Llama 3's <|eot_id|>) and the
   * tokenizer's EOS.
   */
  get eosTokenIds(): number[] {
    const ids: number[] = [];
    const g = this.files.generationConfig?.eos_token_id;
    for (const v of Array.isArray(g) ? g : [g]) if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= this.maxId) ids.push(v);
    const eos = this.eosTokenId;
    if (eos !== undefined) ids.push(eos);
    return [...new Set(ids)];
  }

  /** Set it (e.g. to eosTokenId) to pad with a tokenizer that has no pad token, as GPT-2 and LLaMA. */
  get padTokenId(): number | undefined {
    return this.padOverride ?? this.specialId('pad');
  }
  set padTokenId(id: number | undefined) {
    if (id !== undefined && (!Number.isInteger(id) || id < 0 || id > this.maxId))
      throw new SiftError('E_INDEX', `padTokenId ${id} is outside the vocabulary [0, ${this.maxId}]`);
    this.padOverride = id;
  }

  /** Ids of all special tokens (skipped by decode({ skipSpecialTokens: true })). */
  get allSpecialIds(): number[] {
    if (this.specialIdsCache) return [...this.specialIdsCache];
    const ids = new Set<number>();
    for (const [id, t] of this.core.get_added_tokens_decoder()) if (t.special) ids.add(id);
    for (const name of SPECIAL_TOKEN_NAMES) {
      const id = this.specialId(name);
      if (id !== undefined) ids.add(id);
    }
    this.specialIdsCache = [...ids].sort((a, b) => a - b);
    return [...this.specialIdsCache];
  }

  tokenToId(token: string): number | undefined {
    return this.core.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.core.id_to_token(id);
  }

  /** Token strings of a text, without special tokens. */
  tokenize(text: string): string[] {
    if (typeof text !== 'string') throw new SiftError('E_ARG', `tokenize: expected a string, got ${typeof text}`);
    return this.core.tokenize(text);
  }

  /** How many special tokens encode adds to a single text (pair = false) or a pair. */
  numSpecialTokensToAdd(pair = false): number {
    return this.specialCount[pair ? 1 : 0];
  }

  private postProcess(a: string[], b: string[] | null, add: boolean): { tokens: string[]; typeIds: number[] } {
    const pp = this.core.post_processor;
    let tokens: string[];
    let typeIds: number[] | undefined;
    if (pp) {
      const r = pp(a, b, add);
      tokens = r.tokens;
      typeIds = r.token_type_ids;
      // The package's ByteLevel post-processor hands the pair back unmerged.
      if (Array.isArray(r.tokens_pair)) {
        typeIds = [...(typeIds ?? new Array<number>(tokens.length).fill(0)), ...new Array<number>(r.tokens_pair.length).fill(1)];
        tokens = [...tokens, ...r.tokens_pair];
      }
    } else {
      tokens = [...a, ...(b ?? [])];
    }
    if (!typeIds || typeIds.length !== tokens.length) {
      typeIds = [...new Array<number>(a.length).fill(0), ...new Array<number>(tokens.length - a.length).fill(b ? 1 : 0)];
    }
    if (this.robertaTypes) typeIds = new Array<number>(tokens.length).fill(0);
    return { tokens, typeIds };
  }

  private ids(tokens: string[]): number[] {
    const unk = this.core.model?.unk_token_id;
    return tokens.map((t) => {
      const id = this.core.token_to_id(t) ?? unk;
      if (id === undefined) throw new SiftError('E_INTERNAL', `token '${t}' has no id and the tokenizer has no unknown token`);
      return id;
    });
  }

  /** Encodes a text or a pair, truncated to maxLength with special tokens as the model expects. */
  encode(text: string, pair?: string | null, opts: EncodeOptions = {}): Encoding {
    if (typeof text !== 'string') throw new SiftError('E_ARG', `encode: expected a string, got ${typeof text}`);
    if (pair !== undefined && pair !== null && typeof pair !== 'string')
      throw new SiftError('E_ARG', `encode: pair must be a string, got ${typeof pair}`);
    const add = opts.addSpecialTokens !== false;
    let a = this.core.tokenize(text);
    let b = pair === undefined || pair === null ? null : this.core.tokenize(pair);
    const strategy = truncationStrategy(opts);
    if (strategy) {
      const maxLength = opts.maxLength ?? this.modelMaxLength;
      if (maxLength === undefined)
        throw new SiftError('E_ARG', 'encode: truncation needs maxLength (the tokenizer has no model_max_length)');
      checkLength(maxLength, 'maxLength');
      const budget = maxLength - (add ? this.specialCount[b ? 1 : 0] : 0);
      if (budget < 0)
        throw new SiftError('E_ARG', `encode: maxLength ${maxLength} leaves no room after ${maxLength - budget} special tokens`);
      [a, b] = truncate(a, b, budget, strategy, opts.truncationSide ?? this.truncationSide);
    }
    const { tokens, typeIds } = this.postProcess(a, b, add);
    const inputIds = this.ids(tokens);
    return { inputIds, attentionMask: new Array<number>(inputIds.length).fill(1), tokenTypeIds: typeIds };
  }

  /** Encodes texts or [text, pair] items and pads them to one length (see BatchEncodeOptions). */
  encodeBatch(texts: TextInput[], opts: BatchEncodeOptions = {}): BatchEncoding {
    if (!Array.isArray(texts)) throw new SiftError('E_ARG', 'encodeBatch: expected an array of texts or [text, pair] items');
    const encs = texts.map((t) => (Array.isArray(t) ? this.encode(t[0], t[1], opts) : this.encode(t, null, opts)));
    return this.pad(encs, opts);
  }

  /** Pads encodings to one length with the pad token (attention mask 0, token type 0). */
  pad(encs: Encoding[], opts: BatchEncodeOptions = {}): BatchEncoding {
    const padding = opts.padding === undefined || opts.padding === true ? 'longest' : opts.padding;
    let target = 0;
    if (padding === 'longest') target = Math.max(0, ...encs.map((e) => e.inputIds.length));
    else if (padding === 'max_length') {
      const m = opts.maxLength ?? this.modelMaxLength;
      if (m === undefined) throw new SiftError('E_ARG', "encodeBatch: padding 'max_length' needs maxLength");
      checkLength(m, 'maxLength');
      target = Math.max(m, ...encs.map((e) => e.inputIds.length));
    } else if (padding !== false) throw new SiftError('E_ARG', `encodeBatch: unknown padding '${String(padding)}'`);
    if (padding !== false && opts.padToMultipleOf !== undefined) {
      checkLength(opts.padToMultipleOf, 'padToMultipleOf');
      if (opts.padToMultipleOf === 0) throw new SiftError('E_ARG', 'padToMultipleOf must be positive');
      target = Math.ceil(target / opts.padToMultipleOf) * opts.padToMultipleOf;
    }
    const side = opts.paddingSide ?? this.paddingSide;
    const out: BatchEncoding = { inputIds: [], attentionMask: [], tokenTypeIds: [] };
    const needs = padding !== false && encs.some((e) => e.inputIds.length < target);
    const padId = this.padTokenId;
    if (needs && padId === undefined) {
      throw new SiftError(
        'E_ARG',
        'encodeBatch: the tokenizer has no pad token; set tokenizer.padTokenId (e.g. to eosTokenId) or pass padding: false',
      );
    }
    for (const e of encs) {
      const n = padding === false ? 0 : target - e.inputIds.length;
      const fill = (v: number): number[] => new Array<number>(n).fill(v);
      if (side === 'left') {
        out.inputIds.push([...fill(padId ?? 0), ...e.inputIds]);
        out.attentionMask.push([...fill(0), ...e.attentionMask]);
        out.tokenTypeIds.push([...fill(0), ...e.tokenTypeIds]);
      } else {
        out.inputIds.push([...e.inputIds, ...fill(padId ?? 0)]);
        out.attentionMask.push([...e.attentionMask, ...fill(0)]);
        out.tokenTypeIds.push([...e.tokenTypeIds, ...fill(0)]);
      }
    }
    return out;
  }

  /** Text of token ids; ids with no token (e.g. a padded embedding's extra rows) are skipped. */
  decode(ids: ArrayLike<number | bigint>, opts: DecodeOptions = {}): string {
    const list: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const v = Number(ids[i]);
      if (!Number.isInteger(v) || v < 0) throw new SiftError('E_ARG', `decode: token id ${String(ids[i])} is not a non-negative integer`);
      if (this.core.id_to_token(v) !== undefined) list.push(v);
    }
    if (list.length === 0) return '';
    let ids2 = list;
    if (opts.skipSpecialTokens) {
      const special = new Set(this.specialIdsCache ?? this.allSpecialIds);
      ids2 = list.filter((id) => !special.has(id));
      if (ids2.length === 0) return '';
    }
    return this.core.decode(ids2, {
      skip_special_tokens: opts.skipSpecialTokens === true,
      clean_up_tokenization_spaces: opts.cleanUpTokenizationSpaces ?? this.cleanUp,
    });
  }

  decodeBatch(batch: ArrayLike<number | bigint>[], opts: DecodeOptions = {}): string[] {
    return batch.map((ids) => this.decode(ids, opts));
  }

  /** The chat template of tokenizer_config.json (or chat_template.jinja), by name when there are several. */
  chatTemplate(name?: string): string | undefined {
    const c = this.files.chatTemplate ?? this.files.config?.chat_template;
    if (typeof c === 'string') return name === undefined || name === 'default' ? c : undefined;
    if (Array.isArray(c)) {
      const want = name ?? 'default';
      const hit = c.find((t) => t && typeof t === 'object' && (t as Json).name === want);
      return hit ? String((hit as Json).template) : undefined;
    }
    return undefined;
  }

  /**
   * Renders messages with the model's chat template (Jinja, as transformers' apply_chat_template):
   * the special tokens are the variables bos_token, eos_token, ...; `extra` adds others (tools,
   * enable_thinking, ...). A template's raise_exception becomes an E_FORMAT SiftError with its message.
   */
  applyChatTemplate(messages: ChatMessage[], opts: ChatTemplateOptions = {}): string {
    const tpl = opts.template ?? this.chatTemplate();
    if (tpl === undefined) throw new SiftError('E_ARG', 'applyChatTemplate: the tokenizer has no chat_template');
    const vars: Json = {};
    for (const name of SPECIAL_TOKEN_NAMES) vars[`${name}_token`] = this.specials.get(name) ?? '';
    return renderChatTemplate(tpl, messages, { ...opts, extra: { ...vars, ...(opts.extra ?? {}) } });
  }

  /** Special (and added control) token strings a chat template may close a turn with, longest first. */
  get specialTokenStrings(): string[] {
    const out = new Set<string>();
    for (const t of this.core.get_added_tokens_decoder().values()) if (t.special) out.add(t.content);
    for (const name of SPECIAL_TOKEN_NAMES) {
      const t = this.specials.get(name);
      if (t !== undefined) out.add(t);
    }
    return [...out].sort((a, b) => b.length - a.length);
  }

  /**
   * Encodes a text and gives each token the span [start, end) of the text it covers (UTF-16
   * indices; empty for tokens the text does not spell, as a BOS the post-processor adds), as the
   * Rust tokenizers' offsets: used to find which tokens hold the assistant's turns of a rendered
   * conversation. Returns null when the tokens cannot be aligned with the text (a normalizer that
   * rewrites it, e.g. lowercasing).
   */
  encodeWithOffsets(text: string, opts: { addSpecialTokens?: boolean } = {}): { inputIds: number[]; offsets: [number, number][] } | null {
    if (typeof text !== 'string') throw new SiftError('E_ARG', `encodeWithOffsets: expected a string, got ${typeof text}`);
    const pieces = this.core.tokenize(text);
    const tokens = this.postProcess(pieces, null, opts.addSpecialTokens === true).tokens;
    const inputIds = this.ids(tokens);
    const bytes = Buffer.from(text, 'utf8');
    // UTF-16 index of each byte offset (a byte inside a character maps to that character's start).
    const charAt = new Int32Array(bytes.length + 1);
    let ci = 0;
    for (let bi = 0; bi < bytes.length; ) {
      const cp = text.codePointAt(ci)!;
      const n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
      for (let k = 0; k < n; k++) charAt[bi + k] = ci;
      bi += n;
      ci += cp >= 0x10000 ? 2 : 1;
    }
    charAt[bytes.length] = text.length;
    const added = new Set<string>();
    for (const t of this.core.get_added_tokens_decoder().values()) added.add(t.content);
    const byteLevel = hasType(this.files.tokenizer.decoder, 'ByteLevel') || hasType(this.files.tokenizer.pre_tokenizer, 'ByteLevel');
    const byteFallback = (this.files.tokenizer.model as Json).byte_fallback === true;
    const wordPiece = (this.files.tokenizer.model as Json).type === 'WordPiece';
    const prefix =
      typeof (this.files.tokenizer.model as Json).continuing_subword_prefix === 'string'
        ? String((this.files.tokenizer.model as Json).continuing_subword_prefix)
        : '##';
    const matchAt = (b: Uint8Array, at: number): boolean => {
      if (at + b.length > bytes.length) return false;
      for (let k = 0; k < b.length; k++) if (bytes[at + k] !== b[k]) return false;
      return true;
    };
    const isSpace = (x: number): boolean => x === 0x20 || x === 0x09 || x === 0x0a || x === 0x0d || x === 0x0b || x === 0x0c;
    const offsets: [number, number][] = [];
    const pending: number[] = [];
    let cur = 0;
    // Special tokens the post-processor put around the text (they spell nothing in it).
    const a = pieces.length;
    const lead = opts.addSpecialTokens === true ? this.leadingSpecials() : 0;
    const charToByte = charToByteMap();
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i];
      if (i < lead || i >= lead + a) {
        offsets.push([charAt[cur], charAt[cur]]);
        continue;
      }
      let b: Uint8Array;
      if (added.has(t)) b = Buffer.from(t, 'utf8');
      else if (byteLevel) b = Uint8Array.from([...t].map((c) => charToByte.get(c) ?? 0x3f));
      else if (byteFallback && /^<0x[0-9A-Fa-f]{2}>$/.test(t)) b = Uint8Array.of(parseInt(t.slice(3, 5), 16));
      else b = Buffer.from((wordPiece && t.startsWith(prefix) ? t.slice(prefix.length) : t).replace(/\u2581/g, ' '), 'utf8');
      let at = -1;
      let skipLead = 0;
      let deferred = false;
      // The token as spelled; without the space of a dummy prefix; after whitespace an added
      // token's lstrip/rstrip removed.
      for (let c = cur; c <= bytes.length && at < 0; c++) {
        if (matchAt(b, c)) at = c;
        else if (b.length > 1 && b[0] === 0x20 && matchAt(b.subarray(1), c)) {
          at = c;
          skipLead = 1;
        } else if (b.length === 1 && b[0] === 0x20 && c === cur) {
          // A lone dummy-prefix piece spells nothing and takes no text; it stands where the
          // next token starts (as the Rust normalizer aligns a prepended character).
          pending.push(offsets.length);
          offsets.push([charAt[cur], charAt[cur]]);
          deferred = true;
          break;
        }
        if (c < bytes.length && !isSpace(bytes[c])) break;
      }
      if (deferred) continue;
      if (at < 0) return null;
      const end = at + b.length - skipLead;
      for (const k of pending) offsets[k] = [charAt[at], charAt[at]];
      pending.length = 0;
      offsets.push([charAt[at], charAt[end]]);
      cur = end;
    }
    return { inputIds, offsets };
  }

  /** How many special tokens the post-processor puts before a single text. */
  private leadingSpecials(): number {
    const marker = '\u0000';
    const r = this.postProcess([marker], null, true).tokens;
    const i = r.indexOf(marker);
    return i < 0 ? 0 : i;
  }

  /** File name -> contents, for saveModelFolder({ tokenizerFiles }) or save(). */
  toFiles(): Record<string, string> {
    const out: Record<string, string> = { 'tokenizer.json': JSON.stringify(this.files.tokenizer, null, 2) + '\n' };
    if (this.files.config) out['tokenizer_config.json'] = JSON.stringify(this.files.config, null, 2) + '\n';
    if (this.files.specialTokensMap) out['special_tokens_map.json'] = JSON.stringify(this.files.specialTokensMap, null, 2) + '\n';
    if (this.files.chatTemplate !== undefined) out['chat_template.jinja'] = this.files.chatTemplate;
    return out;
  }

  /** Writes the tokenizer files into a folder (each atomically). */
  save(dir: string): string[] {
    const files = this.toFiles();
    for (const [name, data] of Object.entries(files)) writeFileAtomic(path.join(dir, name), [data]);
    return Object.keys(files).map((n) => path.join(dir, n));
  }
}

let charToByteCache: Map<string, number> | undefined;
/** GPT-2's byte-to-character map, reversed (built on first use: bytelevel.ts imports this module). */
function charToByteMap(): Map<string, number> {
  charToByteCache ??= new Map<string, number>(BYTE_TO_CHAR.map((c, b) => [c, b]));
  return charToByteCache;
}

function hasType(v: unknown, type: string): boolean {
  if (v === null || typeof v !== 'object') return false;
  const o = v as Json;
  if (o.type === type) return true;
  for (const k of ['pretokenizers', 'decoders', 'processors', 'normalizers'])
    if (Array.isArray(o[k]) && (o[k] as unknown[]).some((x) => hasType(x, type))) return true;
  return false;
}

export interface ChatTemplateOptions {
  /** End with the opening of an assistant turn (add_generation_prompt). */
  addGenerationPrompt?: boolean;
  /** A template to use instead of the tokenizer's own. */
  template?: string;
  /** More template variables (tools, enable_thinking, ...). */
  extra?: Json;
}

/** The `{% generation %}` / `{% endgeneration %}` tags of a template (transformers' assistant masks). */
const GENERATION_TAG = /\{%(-?)\s*(generation|endgeneration)\s*(-?)%\}/g;

/** Whether a chat template marks the assistant's text with {% generation %} blocks. */
export function hasGenerationBlocks(template: string): boolean {
  GENERATION_TAG.lastIndex = 0;
  return GENERATION_TAG.test(template);
}

/**
 * Renders a Jinja chat template. `markGeneration` replaces {% generation %} and {% endgeneration %}
 * with the two given marker strings (so that the caller finds the blocks in the output).
 */
export function renderChatTemplate(
  template: string,
  messages: ChatMessage[],
  opts: ChatTemplateOptions & { markGeneration?: [string, string] } = {},
): string {
  let tpl = template;
  if (opts.markGeneration) {
    const [open, close] = opts.markGeneration.map((m) => JSON.stringify(m));
    // Still a block tag around the marker, so that trim_blocks / lstrip_blocks act as on the tag.
    tpl = tpl.replace(
      GENERATION_TAG,
      (_m, l: string, which: string, r: string) => `{%${l} if true %}{{ ${which === 'generation' ? open : close} }}{% endif ${r}%}`,
    );
  }
  const vars: Json = {
    messages,
    add_generation_prompt: opts.addGenerationPrompt === true,
    ...(opts.extra ?? {}),
    // The template's raise_exception (the package's own throws a plain Error, and cannot be replaced).
    sift_raise_exception: (msg: unknown) => {
      throw new SiftError('E_FORMAT', `the chat template rejects these messages: ${String(msg)}`);
    },
  };
  tpl = tpl.replace(/\braise_exception\s*\(/g, 'sift_raise_exception(');
  let compiled: Template;
  try {
    compiled = new Template(tpl);
  } catch (e) {
    throw new SiftError('E_FORMAT', `chat template does not parse: ${(e as Error).message}`);
  }
  try {
    return compiled.render(vars);
  } catch (e) {
    if (e instanceof SiftError) throw e;
    throw new SiftError('E_FORMAT', `chat template: ${(e as Error).message}`);
  }
}

function ppType(pp: unknown): string | undefined {
  return pp !== null && typeof pp === 'object' ? String((pp as Json).type) : undefined;
}

function checkLength(n: number, what: string): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new SiftError('E_ARG', `${what} must be a non-negative integer, got ${n}`);
}

function truncationStrategy(opts: EncodeOptions): TruncationStrategy | null {
  const t = opts.truncation ?? opts.maxLength !== undefined;
  if (t === false) return null;
  if (t === true) return 'longest_first';
  if (t === 'longest_first' || t === 'only_first' || t === 'only_second') return t;
  throw new SiftError('E_ARG', `unknown truncation '${String(t)}' (expected true, false, 'longest_first', 'only_first' or 'only_second')`);
}

function cut(tokens: string[], n: number, side: 'right' | 'left'): string[] {
  if (tokens.length <= n) return tokens;
  return side === 'right' ? tokens.slice(0, n) : tokens.slice(tokens.length - n);
}

/** Fits a text or pair into `budget` tokens (special tokens already subtracted). */
export function truncate(
  a: string[],
  b: string[] | null,
  budget: number,
  strategy: TruncationStrategy,
  side: 'right' | 'left',
): [string[], string[] | null] {
  if (a.length + (b?.length ?? 0) <= budget) return [a, b];
  if (b === null) {
    if (strategy === 'only_second') throw new SiftError('E_ARG', "truncation 'only_second' needs a pair");
    return [cut(a, budget, side), null];
  }
  if (strategy === 'only_first' || strategy === 'only_second') {
    const [keep, shrink] = strategy === 'only_first' ? [b, a] : [a, b];
    const room = budget - keep.length;
    if (room < 0)
      throw new SiftError(
        'E_ARG',
        `truncation '${strategy}': the other sequence alone has ${keep.length} tokens, over the budget of ${budget}`,
      );
    const s = cut(shrink, room, side);
    return strategy === 'only_first' ? [s, b] : [a, s];
  }
  // Longest first, as the Rust tokenizers compute it: the shorter keeps all it can, and when both
  // must shrink the budget is split in half with the odd token going to the longer one.
  let n1 = a.length;
  let n2 = b.length;
  const swap = n1 > n2;
  if (swap) [n1, n2] = [n2, n1];
  n2 = n1 > budget ? n1 : Math.max(n1, budget - n1);
  if (n1 + n2 > budget) {
    n1 = Math.floor(budget / 2);
    n2 = n1 + (budget % 2);
  }
  if (swap) [n1, n2] = [n2, n1];
  return [cut(a, n1, side), cut(b, n2, side)];
}

/** Loads the tokenizer of a model path (see HfTokenizer.fromFolder). */
export function loadTokenizer(p: string, opts: ResolveOptions = {}): HfTokenizer {
  return HfTokenizer.fromFolder(p, opts);
}
