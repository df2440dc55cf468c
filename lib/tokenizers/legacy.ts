/**
 * Model folders saved by older "slow" tokenizers carry vocab.txt (WordPiece, BERT) or vocab.json +
 * merges.txt (byte-level BPE, GPT-2 / RoBERTa) instead of tokenizer.json. This builds the
 * tokenizer.json that transformers' converters would produce from them.
 */
import * as fs from 'fs';
import * as path from 'path';
import { SiftError } from '../engine/errors';
import { readJsonObject } from '../io/hf';

type Json = Record<string, unknown>;

function tok(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (v !== null && typeof v === 'object' && typeof (v as Json).content === 'string') return (v as Json).content as string;
  return null;
}

function addedTokens(vocab: Record<string, number>, names: (string | null)[]): Json[] {
  const out: Json[] = [];
  const seen = new Set<string>();
  for (const t of names) {
    if (t === null || seen.has(t) || vocab[t] === undefined) continue;
    seen.add(t);
    out.push({ id: vocab[t], content: t, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  }
  return out.sort((a, b) => (a.id as number) - (b.id as number));
}

/** tokenizer.json equivalent of the legacy files in `dir`; `config` is tokenizer_config.json merged over special_tokens_map.json. */
export function legacyTokenizerJson(dir: string, config: Json): Json {
  const specials = ['bos', 'eos', 'unk', 'sep', 'pad', 'cls', 'mask'].map((n) => tok(config[`${n}_token`]));
  const vocabTxt = path.join(dir, 'vocab.txt');
  if (fs.existsSync(vocabTxt)) {
    const vocab: Record<string, number> = {};
    fs.readFileSync(vocabTxt, 'utf8')
      .split('\n')
      .forEach((line, i, all) => {
        const t = line.replace(/\r$/, '');
        if (t.length === 0 && i === all.length - 1) return;
        if (vocab[t] === undefined) vocab[t] = i;
      });
    const unk = tok(config.unk_token) ?? '[UNK]';
    const cls = tok(config.cls_token) ?? '[CLS]';
    const sep = tok(config.sep_token) ?? '[SEP]';
    for (const t of [unk, cls, sep])
      if (vocab[t] === undefined) throw new SiftError('E_FORMAT', `${vocabTxt}: special token '${t}' is not in the vocabulary`);
    return {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: addedTokens(vocab, [...specials, unk, cls, sep, '[PAD]', '[MASK]']),
      normalizer: {
        type: 'BertNormalizer',
        clean_text: true,
        handle_chinese_chars: config.tokenize_chinese_chars !== false,
        strip_accents: typeof config.strip_accents === 'boolean' ? config.strip_accents : null,
        lowercase: config.do_lower_case !== false,
      },
      pre_tokenizer: { type: 'BertPreTokenizer' },
      post_processor: { type: 'BertProcessing', sep: [sep, vocab[sep]], cls: [cls, vocab[cls]] },
      decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
      model: { type: 'WordPiece', unk_token: unk, continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab },
    };
  }
  const vocabJson = path.join(dir, 'vocab.json');
  const mergesTxt = path.join(dir, 'merges.txt');
  if (fs.existsSync(vocabJson) && fs.existsSync(mergesTxt)) {
    const raw = readJsonObject(vocabJson);
    const vocab: Record<string, number> = {};
    for (const [k, v] of Object.entries(raw)) {
      if (!Number.isSafeInteger(v) || (v as number) < 0)
        throw new SiftError('E_FORMAT', `${vocabJson}: id of '${k}' is not a non-negative integer`);
      vocab[k] = v as number;
    }
    const merges = fs
      .readFileSync(mergesTxt, 'utf8')
      .split('\n')
      .map((l) => l.replace(/\r$/, ''))
      .filter((l, i) => l.length > 0 && !(i === 0 && l.startsWith('#version')));
    for (const m of merges) if (m.split(' ').length !== 2) throw new SiftError('E_FORMAT', `${mergesTxt}: line '${m}' is not two symbols`);
    const roberta = typeof config.tokenizer_class === 'string' && /Roberta|Bart|Longformer/.test(config.tokenizer_class);
    const addPrefix = config.add_prefix_space === true;
    const cls = tok(config.cls_token) ?? '<s>';
    const sep = tok(config.sep_token) ?? '</s>';
    return {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: addedTokens(vocab, [...specials, '<|endoftext|>']),
      normalizer: null,
      pre_tokenizer: { type: 'ByteLevel', add_prefix_space: addPrefix, trim_offsets: true, use_regex: true },
      post_processor:
        roberta && vocab[cls] !== undefined && vocab[sep] !== undefined
          ? { type: 'RobertaProcessing', sep: [sep, vocab[sep]], cls: [cls, vocab[cls]], trim_offsets: true, add_prefix_space: addPrefix }
          : { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: {
        type: 'BPE',
        dropout: null,
        unk_token: tok(config.unk_token),
        continuing_subword_prefix: null,
        end_of_word_suffix: null,
        fuse_unk: false,
        byte_fallback: false,
        ignore_merges: false,
        vocab,
        merges,
      },
    };
  }
  if (fs.existsSync(path.join(dir, 'tokenizer.model'))) {
    throw new SiftError(
      'E_FORMAT',
      `${dir}: only a SentencePiece tokenizer.model; save the tokenizer with transformers (tokenizer.save_pretrained) to get tokenizer.json`,
    );
  }
  throw new SiftError('E_IO', `${dir}: no tokenizer files (tokenizer.json, vocab.txt, or vocab.json + merges.txt)`);
}
