/**
 * A byte-level BPE tokenizer for models trained from scratch: the 256 bytes (ids 0-255, in
 * GPT-2's byte-to-unicode spelling), optionally merges learned from text, then a few special
 * tokens. It is written as a standard tokenizer.json (model BPE, ByteLevel pre-tokenizer and
 * decoder) plus tokenizer_config.json, so HfTokenizer reads it back like any other and
 * transformers' PreTrainedTokenizerFast loads it too. Every text round-trips exactly.
 */
import { SiftError } from '../engine/errors';
import { HfTokenizer } from './tokenizer';
import { learnBpeMerges } from './train';

type Json = Record<string, unknown>;

/** GPT-2's reversible map from bytes to printable characters (so no token holds a space or control). */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const map = new Array<string>(256);
  for (const b of bs) map[b] = String.fromCharCode(b);
  let n = 0;
  for (let b = 0; b < 256; b++) if (map[b] === undefined) map[b] = String.fromCharCode(256 + n++);
  return map;
})();

/** GPT-2's pre-tokenization pattern (the one the ByteLevel pre-tokenizer applies). */
const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** The byte-level symbols of each pre-token of a text, as BPE sees them. */
export function byteLevelWords(text: string): string[] {
  const enc = new TextEncoder();
  return (text.match(GPT2_SPLIT) ?? []).map((w) => Array.from(enc.encode(w), (b) => BYTE_TO_CHAR[b]).join(''));
}

export interface ByteTokenizerOptions {
  /** Special tokens, given ids after the bytes and merges in this order (default: <|endoftext|>, <pad>). */
  specialTokens?: string[];
  /** Roles of special tokens (each must be in specialTokens). Defaults: bos = eos = '<|endoftext|>', pad = '<pad>' when present. */
  bos?: string | null;
  eos?: string | null;
  pad?: string | null;
  unk?: string | null;
  /** Put bos before / eos after each text when encoding with special tokens (default false: GPT-2 style). */
  addBosToken?: boolean;
  addEosToken?: boolean;
  /** model_max_length in tokenizer_config.json. */
  modelMaxLength?: number;
}

export interface TrainByteBpeOptions extends ByteTokenizerOptions {
  /** Pairs seen fewer times are not merged (default 2), so the vocabulary may stay below vocabSize. */
  minFrequency?: number;
}

/** tokenizer.json and tokenizer_config.json of a byte-level tokenizer with the given merges. */
export function byteLevelTokenizerFiles(merges: [string, string][], opts: ByteTokenizerOptions = {}): { tokenizer: Json; config: Json } {
  const specials = opts.specialTokens ?? ['<|endoftext|>', '<pad>'];
  const vocab: Record<string, number> = {};
  BYTE_TO_CHAR.forEach((c, b) => {
    vocab[c] = b;
  });
  let next = 256;
  for (const [a, b] of merges) {
    if (vocab[a] === undefined || vocab[b] === undefined)
      throw new SiftError('E_ARG', `merge '${a} ${b}' uses a symbol that is neither a byte nor an earlier merge`);
    if (a.includes(' ') || b.includes(' ')) throw new SiftError('E_ARG', `merge '${a} ${b}' holds a space: byte-level symbols never do`);
    const m = a + b;
    if (vocab[m] === undefined) vocab[m] = next++;
  }
  const added: Json[] = [];
  for (const s of specials) {
    if (typeof s !== 'string' || s.length === 0) throw new SiftError('E_ARG', 'special tokens must be non-empty strings');
    if (vocab[s] !== undefined) throw new SiftError('E_ARG', `special token '${s}' is already in the vocabulary`);
    vocab[s] = next++;
    added.push({ id: vocab[s], content: s, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  }
  const role = (given: string | null | undefined, dflt: string | null): string | null => {
    const t = given === undefined ? (dflt !== null && specials.includes(dflt) ? dflt : null) : given;
    if (t !== null && !specials.includes(t))
      throw new SiftError('E_ARG', `'${t}' is not one of the special tokens (${specials.join(', ')})`);
    return t;
  };
  const bos = role(opts.bos, '<|endoftext|>');
  const eos = role(opts.eos, '<|endoftext|>');
  const pad = role(opts.pad, '<pad>');
  const unk = role(opts.unk, null);
  if ((opts.addBosToken && bos === null) || (opts.addEosToken && eos === null))
    throw new SiftError('E_ARG', 'addBosToken/addEosToken need a bos/eos special token');
  let postProcessor: Json = { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true };
  if (opts.addBosToken || opts.addEosToken) {
    const sp = (t: string, typeId: number): Json => ({ SpecialToken: { id: t, type_id: typeId } });
    const single: Json[] = [];
    if (opts.addBosToken) single.push(sp(bos!, 0));
    single.push({ Sequence: { id: 'A', type_id: 0 } });
    if (opts.addEosToken) single.push(sp(eos!, 0));
    const pair: Json[] = [...single];
    if (opts.addBosToken) pair.push(sp(bos!, 1));
    pair.push({ Sequence: { id: 'B', type_id: 1 } });
    if (opts.addEosToken) pair.push(sp(eos!, 1));
    const st: Json = {};
    for (const t of new Set([opts.addBosToken ? bos! : null, opts.addEosToken ? eos! : null]))
      if (t !== null) st[t] = { id: t, ids: [vocab[t]], tokens: [t] };
    postProcessor = { type: 'TemplateProcessing', single, pair, special_tokens: st };
  }
  const tokenizer: Json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: postProcessor,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      // "a b" strings: readable by every tokenizers version (byte-level symbols hold no spaces).
      merges: merges.map(([a, b]) => `${a} ${b}`),
    },
  };
  const config: Json = {
    tokenizer_class: 'PreTrainedTokenizerFast',
    bos_token: bos,
    eos_token: eos,
    pad_token: pad,
    unk_token: unk,
    add_prefix_space: false,
    clean_up_tokenization_spaces: false,
    model_max_length: opts.modelMaxLength ?? 1024,
    added_tokens_decoder: Object.fromEntries(added.map((t) => [String(t.id), { ...t, id: undefined }])),
  };
  return { tokenizer, config };
}

/** A byte-level tokenizer with the given merges (none: one token per byte). */
export function createByteTokenizer(merges: [string, string][] = [], opts: ByteTokenizerOptions = {}): HfTokenizer {
  return HfTokenizer.fromFiles(byteLevelTokenizerFiles(merges, opts));
}

/**
 * Learns a byte-level BPE tokenizer of at most vocabSize tokens (256 bytes + merges + special
 * tokens) from texts.
 */
export function trainByteBpe(texts: Iterable<string>, vocabSize: number, opts: TrainByteBpeOptions = {}): HfTokenizer {
  const specials = opts.specialTokens ?? ['<|endoftext|>', '<pad>'];
  const numMerges = vocabSize - 256 - specials.length;
  if (!Number.isSafeInteger(vocabSize) || numMerges < 0) {
    throw new SiftError('E_ARG', `trainByteBpe: vocabSize ${vocabSize} is below the ${256 + specials.length} byte and special tokens`);
  }
  const counts = new Map<string, number>();
  for (const text of texts) {
    if (typeof text !== 'string') throw new SiftError('E_ARG', 'trainByteBpe: texts must be strings');
    for (const w of byteLevelWords(text)) counts.set(w, (counts.get(w) ?? 0) + 1);
  }
  const words = (function* (): Generator<[string[], number]> {
    for (const [w, c] of counts) yield [Array.from(w), c];
  })();
  const merges = learnBpeMerges(words, numMerges, { minFrequency: opts.minFrequency });
  return createByteTokenizer(merges, { ...opts, specialTokens: specials });
}
