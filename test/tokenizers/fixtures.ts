/**
 * Small tokenizer.json files in the formats of real models, built here because none can be
 * downloaded: a BERT WordPiece, a RoBERTa byte-level BPE and a LLaMA-style Metaspace BPE with
 * byte fallback. Texts come from ../shared/data when present (with a built-in sample otherwise).
 */
import * as fs from 'fs';
import * as path from 'path';
import { learnBpeMerges, trainByteBpe, BYTE_TO_CHAR, HfTokenizer } from '../../lib/tokenizers';

type Json = Record<string, unknown>;

export const DATA_DIR = path.join(path.resolve(__dirname, '..', '..'), '..', 'shared', 'data');
export const HAVE_DATA = fs.existsSync(path.join(DATA_DIR, 'sst2', 'dev.tsv'));

export const SAMPLE = [
  'The quick brown fox jumps over the lazy dog.',
  "It's a wonderful, heart-warming film; don't miss it!",
  'First Citizen: Before we proceed any further, hear me speak.',
  'Stocks rose 3.5% on Tuesday as the Fed held rates at 5.25 percent.',
  'the expressive power of the camera',
  'Speak, speak. You are all resolved rather to die than to famish?',
];

function lines(file: string, max: number, column?: number, skipHeader = false): string[] {
  const all = fs.readFileSync(path.join(DATA_DIR, file), 'utf8').split('\n');
  const out: string[] = [];
  for (let i = skipHeader ? 1 : 0; i < all.length && out.length < max; i++) {
    const l = column === undefined ? all[i] : all[i].split('\t')[column];
    if (l !== undefined && l.trim().length > 0) out.push(l);
  }
  return out;
}

/** Texts of the three data sets (limited so the suite stays fast), or null without ../shared/data. */
export function datasetTexts(): { sst2: string[]; agnews: string[]; shakespeare: string[] } | null {
  if (!HAVE_DATA) return null;
  return {
    sst2: lines('sst2/dev.tsv', 1200, 0, true),
    agnews: lines('agnews/dev.tsv', 400, 0),
    shakespeare: lines('tinyshakespeare/input.txt', 2000),
  };
}

export function trainingTexts(): string[] {
  const d = datasetTexts();
  return d ? [...SAMPLE, ...d.sst2.slice(0, 1000), ...d.shakespeare.slice(0, 1000)] : SAMPLE;
}

const special = (id: number, content: string): Json => ({
  id,
  content,
  single_word: false,
  lstrip: false,
  rstrip: false,
  normalized: false,
  special: true,
});

/** The BERT reference normalisation: clean, lowercase, strip accents, split on whitespace and punctuation. */
export const PUNCT = '\\p{P}\\u0021-\\u002F\\u003A-\\u0040\\u005B-\\u0060\\u007B-\\u007E';
export function bertWords(text: string): string[] {
  let t = '';
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    if (cp === 0 || cp === 0xfffd || (/\p{C}/u.test(ch) && !/[\t\n\r]/.test(ch))) continue;
    t += /\s/.test(ch) ? ' ' : ch;
  }
  t = t
    .toLowerCase()
    .normalize('NFD')
    .replace(/\p{Mn}/gu, '');
  return t.match(new RegExp(`[^\\s${PUNCT}]+|[${PUNCT}]`, 'gu')) ?? [];
}

/** A BERT-style WordPiece tokenizer whose vocabulary covers every character of the texts. */
export function bertFiles(texts: string[]): { tokenizer: Json; config: Json; vocab: string[] } {
  const vocab = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'];
  const seen = new Set(vocab);
  const add = (t: string): void => {
    if (!seen.has(t)) {
      seen.add(t);
      vocab.push(t);
    }
  };
  const freq = new Map<string, number>();
  for (const text of texts) {
    for (const w of bertWords(text)) {
      freq.set(w, (freq.get(w) ?? 0) + 1);
      for (const ch of w) {
        add(ch);
        add(`##${ch}`);
      }
    }
  }
  for (const [w] of [...freq].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, 400)) add(w);
  for (const piece of ['##ing', '##ed', '##s', '##ly', 'un', '##able']) add(piece);
  const ids = Object.fromEntries(vocab.map((t, i) => [t, i]));
  const tokenizer: Json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [0, 1, 2, 3, 4].map((i) => special(i, vocab[i])),
    normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: { type: 'BertProcessing', sep: ['[SEP]', 3], cls: ['[CLS]', 2] },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: false },
    model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab: ids },
  };
  const config: Json = {
    tokenizer_class: 'BertTokenizer',
    do_lower_case: true,
    model_max_length: 512,
    clean_up_tokenization_spaces: false,
    unk_token: '[UNK]',
    sep_token: '[SEP]',
    pad_token: '[PAD]',
    cls_token: '[CLS]',
    mask_token: '[MASK]',
  };
  return { tokenizer, config, vocab };
}

/** A RoBERTa-style byte-level BPE: <s> <pad> </s> <unk> first, bytes, merges, <mask> last. */
const memo = new Map<string, unknown>();
function once<T>(key: string, texts: string[], make: () => T): T {
  const k = `${key}:${texts.length}:${texts[0]}:${texts[texts.length - 1]}`;
  if (!memo.has(k)) memo.set(k, make());
  return memo.get(k) as T;
}

export function robertaFiles(texts: string[]): { tokenizer: Json; config: Json } {
  const merges = once(
    'roberta',
    texts,
    () => JSON.parse(trainByteBpe(texts, 256 + 300, { specialTokens: [] }).toFiles()['tokenizer.json']).model.merges as string[],
  );
  const vocab: Record<string, number> = { '<s>': 0, '<pad>': 1, '</s>': 2, '<unk>': 3 };
  let next = 4;
  for (const c of BYTE_TO_CHAR) vocab[c] = next++;
  for (const m of merges) {
    const t = m.replace(' ', '');
    if (vocab[t] === undefined) vocab[t] = next++;
  }
  vocab['<mask>'] = next;
  const tokenizer: Json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [
      special(0, '<s>'),
      special(1, '<pad>'),
      special(2, '</s>'),
      special(3, '<unk>'),
      { ...special(next, '<mask>'), lstrip: true },
    ],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: 'RobertaProcessing', sep: ['</s>', 2], cls: ['<s>', 0], trim_offsets: true, add_prefix_space: false },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges,
    },
  };
  const config: Json = {
    tokenizer_class: 'RobertaTokenizer',
    model_max_length: 512,
    clean_up_tokenization_spaces: false,
    add_prefix_space: false,
    bos_token: '<s>',
    eos_token: '</s>',
    sep_token: '</s>',
    cls_token: '<s>',
    unk_token: '<unk>',
    pad_token: '<pad>',
    mask_token: { content: '<mask>', lstrip: true, normalized: false, rstrip: false, single_word: false, special: true },
  };
  return { tokenizer, config };
}

/**
 * A LLaMA(-2)-style SentencePiece BPE as transformers converts it: <unk> <s> </s>, the 256
 * <0xNN> byte-fallback tokens, then pieces over ASCII with '▁' for spaces; Metaspace
 * pre-tokenizer (prepend_scheme 'first'), template '<s> $A'.
 */
export function llamaFiles(texts: string[], config: Json = {}): { tokenizer: Json; config: Json } {
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
  let next = 3;
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = next++;
  const counts = new Map<string, number>();
  for (const t of texts) {
    for (const w of t.split(' ')) {
      if (w.length === 0 || !/^[\x21-\x7e]+$/.test(w)) continue;
      counts.set(`▁${w}`, (counts.get(`▁${w}`) ?? 0) + 1);
    }
  }
  const chars = new Set<string>(['▁']);
  for (const w of counts.keys()) for (const c of w) chars.add(c);
  for (const c of [...chars].sort()) vocab[c] = next++;
  const merges = once('llama', texts, () =>
    learnBpeMerges(
      [...counts].map(([w, c]) => [Array.from(w), c] as [string[], number]),
      400,
    ),
  );
  for (const [a, b] of merges) if (vocab[a + b] === undefined) vocab[a + b] = next++;
  const tokenizer: Json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [{ ...special(0, '<unk>'), normalized: false }, special(1, '<s>'), special(2, '</s>')],
    normalizer: null,
    pre_tokenizer: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'first', split: false },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: '<s>', type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '<s>', type_id: 1 } },
        { Sequence: { id: 'B', type_id: 1 } },
      ],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges: merges.map(([a, b]) => [a, b]),
    },
  };
  const cfg: Json = {
    tokenizer_class: 'LlamaTokenizer',
    add_bos_token: true,
    add_eos_token: false,
    legacy: false,
    model_max_length: 4096,
    bos_token: '<s>',
    eos_token: '</s>',
    unk_token: '<unk>',
    pad_token: null,
    padding_side: 'left',
    clean_up_tokenization_spaces: false,
    ...config,
  };
  return { tokenizer, config: cfg };
}

export function load(files: { tokenizer: Json; config?: Json }): HfTokenizer {
  return HfTokenizer.fromFiles(files);
}
