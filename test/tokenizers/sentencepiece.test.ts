/**
 * SentencePiece models written with protobufjs (BPE and Unigram, byte fallback or not) against the
 * tokenizer.json a converter makes of the same model, run by @huggingface/tokenizers: the same ids
 * and the same decoded text on ../shared/data texts (when present) and on hand-made strings.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { HfTokenizer, SentencePieceTokenizer, SiftError } from '../../lib';
import { spmType, encodeMessage } from '../../lib/onnx/proto';

const U = '\u2581';
const DATA = path.resolve(__dirname, '../../../shared/data');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-spm-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const SAMPLE = `First Citizen: Before we proceed any further, hear me speak.
All: Speak, speak. You are all resolved rather to die than to famish?
The quick brown fox jumps over the lazy dog; the dog sleeps, the fox runs.`;

function dataTexts(): string[] | null {
  const files = ['tinyshakespeare/input.txt', 'sst2/dev.tsv', 'agnews/dev.tsv'].map((f) => path.join(DATA, f));
  if (!files.every((f) => fs.existsSync(f))) return null;
  const lines = (f: string, n: number) =>
    fs
      .readFileSync(f, 'utf8')
      .split('\n')
      .filter((l) => l.trim())
      .slice(0, n);
  return [
    ...lines(files[0], 300),
    ...lines(files[1], 120).map((l) => l.split('\t')[0]),
    ...lines(files[2], 60).map((l) => l.split('\t').slice(-1)[0]),
  ];
}

const HAND = [
  'Hello world',
  'the fox',
  ' leading and  double  spaces ',
  'unicode: café, naïve, 日本語 and emoji 🎉!',
  'a',
  'tabs\tand\nnewlines',
  'x',
  '12345 67',
  'SHOUTING the THE',
  'ünïcödé wörds',
  '  ',
  'speak,speak.speak',
];

/** Pieces learnt by plain BPE over words (with the U+2581 prefix), best merge first. */
function learnPieces(text: string, merges: number): { chars: string[]; merged: string[] } {
  const words = new Map<string, number>();
  for (const w of text.split(/\s+/).filter(Boolean)) words.set(U + w, (words.get(U + w) ?? 0) + 1);
  const chars = [...new Set([...words.keys()].flatMap((w) => [...w]))].sort();
  let segs = [...words].map(([w, c]) => ({ s: [...w], c }));
  const merged: string[] = [];
  for (let m = 0; m < merges; m++) {
    const pairs = new Map<string, number>();
    for (const { s, c } of segs)
      for (let i = 0; i + 1 < s.length; i++) pairs.set(s[i] + '\u0000' + s[i + 1], (pairs.get(s[i] + '\u0000' + s[i + 1]) ?? 0) + c);
    let best = '';
    let bc = 1;
    for (const [p, c] of pairs)
      if (c > bc || (c === bc && best && p < best)) {
        best = p;
        bc = c;
      }
    if (!best) break;
    const [a, b] = best.split('\u0000');
    if (!merged.includes(a + b)) merged.push(a + b);
    segs = segs.map(({ s, c }) => {
      const out: string[] = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === a && s[i + 1] === b) {
          out.push(a + b);
          i++;
        } else out.push(s[i]);
      }
      return { s: out, c };
    });
  }
  return { chars, merged };
}

interface Spec {
  type: 'bpe' | 'unigram';
  byteFallback: boolean;
  text: string;
}

/** A ModelProto object: <unk> <s> </s>, byte pieces (with fallback), merged pieces, then characters. */
function modelObject(spec: Spec): { obj: Record<string, unknown>; pieces: { piece: string; score: number; type: number }[] } {
  const { chars, merged } = learnPieces(spec.text, 220);
  const pieces: { piece: string; score: number; type: number }[] = [
    { piece: '<unk>', score: 0, type: 2 },
    { piece: '<s>', score: 0, type: 3 },
    { piece: '</s>', score: 0, type: 3 },
  ];
  if (spec.byteFallback)
    for (let b = 0; b < 256; b++) pieces.push({ piece: `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`, score: 0, type: 6 });
  // Unigram scores: log-probability-like, decreasing, with a length bonus so that segmentations differ from greedy.
  merged.forEach((p, i) => pieces.push({ piece: p, score: spec.type === 'bpe' ? -i : -2 - i * 0.013 + [...p].length * 0.31, type: 1 }));
  chars
    .filter((c) => !merged.includes(c))
    .forEach((c, i) => pieces.push({ piece: c, score: spec.type === 'bpe' ? -merged.length - i : -4.5 - i * 0.021, type: 1 }));
  const obj = {
    pieces,
    trainer_spec: {
      model_type: spec.type === 'bpe' ? 2 : 1,
      byte_fallback: spec.byteFallback,
      unk_id: 0,
      bos_id: 1,
      eos_id: 2,
      pad_id: -1,
    },
    normalizer_spec: { name: 'identity', add_dummy_prefix: true, remove_extra_whitespaces: false, escape_whitespaces: true },
  };
  return { obj, pieces };
}

/** The tokenizer.json transformers' converter writes for such a model (LLaMA-style normalizer and decoders). */
function tokenizerJson(spec: Spec, pieces: { piece: string; score: number; type: number }[]): Record<string, unknown> {
  const vocabIds = new Map(pieces.map((p, i) => [p.piece, i]));
  let model: Record<string, unknown>;
  if (spec.type === 'bpe') {
    const merges: [string, string, number][] = [];
    pieces.forEach((p, id) => {
      if (p.type !== 1) return;
      const cs = [...p.piece];
      for (let k = 1; k < cs.length; k++) {
        const l = cs.slice(0, k).join('');
        const r = cs.slice(k).join('');
        if (vocabIds.has(l) && vocabIds.has(r)) merges.push([l, r, id]);
      }
    });
    merges.sort((a, b) => a[2] - b[2] || vocabIds.get(a[0])! - vocabIds.get(b[0])!);
    model = {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: spec.byteFallback,
      ignore_merges: false,
      vocab: Object.fromEntries(vocabIds),
      merges: merges.map(([l, r]) => [l, r]),
    };
  } else {
    model = { type: 'Unigram', unk_id: 0, vocab: pieces.map((p) => [p.piece, p.score]), byte_fallback: spec.byteFallback };
  }
  const special = (id: number, content: string) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [special(0, '<unk>'), special(1, '<s>'), special(2, '</s>')],
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: U },
        { type: 'Replace', pattern: { String: ' ' }, content: U },
      ],
    },
    pre_tokenizer: null,
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
        { type: 'Replace', pattern: { String: U }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model,
  };
}

const texts = dataTexts();
if (!texts) console.warn(`SentencePiece tests: ${DATA} not found; data-set texts skipped (hand-made strings still run)`);

const SPECS: Spec[] = [
  { type: 'bpe', byteFallback: true, text: SAMPLE },
  { type: 'bpe', byteFallback: false, text: SAMPLE },
  { type: 'unigram', byteFallback: true, text: SAMPLE },
  { type: 'unigram', byteFallback: false, text: SAMPLE },
];

describe.each(SPECS)('SentencePiece $type (byte fallback $byteFallback) matches its tokenizer.json', (spec) => {
  const trainText = texts ? `${SAMPLE}\n${texts.slice(0, 200).join('\n')}` : SAMPLE;
  const { obj, pieces } = modelObject({ ...spec, text: trainText });
  const file = path.join(dir, `${spec.type}-${spec.byteFallback}.model`);
  fs.writeFileSync(file, encodeMessage(spmType('ModelProto'), obj));
  const sp = SentencePieceTokenizer.fromFile(file);
  const hf = new HfTokenizer({ tokenizer: tokenizerJson(spec, pieces) });

  const check = (t: string) => {
    const a = sp.encode(t).inputIds;
    const b = hf.encode(t).inputIds;
    // @huggingface/tokenizers (JS) ignores byte_fallback in Unigram models and emits <unk> where
    // SentencePiece (and the Rust tokenizers) emit bytes: compare those texts by round trip only.
    if (spec.type === 'unigram' && spec.byteFallback && b.includes(0)) {
      expect(a).not.toContain(0);
      expect(sp.decode(a, { skipSpecialTokens: true })).toBe(t);
      return;
    }
    if (a.join() !== b.join()) throw new Error(`encode(${JSON.stringify(t)}): sentencepiece [${a}] vs tokenizer.json [${b}]`);
    const da = sp.decode(a, { skipSpecialTokens: true });
    const db = hf.decode(b, { skipSpecialTokens: true });
    if (da !== db) throw new Error(`decode of ${JSON.stringify(t)}: ${JSON.stringify(da)} vs ${JSON.stringify(db)}`);
    if (spec.byteFallback) expect(da).toBe(t);
  };

  test('hand-made strings', () => {
    for (const t of HAND) check(t);
    expect(sp.encode('').inputIds).toEqual([1]);
    expect(sp.encode('the fox', 'runs').tokenTypeIds).toEqual(hf.encode('the fox', 'runs').tokenTypeIds);
    expect(sp.encode('the fox', 'runs').inputIds).toEqual(hf.encode('the fox', 'runs').inputIds);
  });

  (texts ? test : test.skip)('../shared/data texts', () => {
    for (const t of texts!) check(t);
  });

  test('model type and specials', () => {
    expect(sp.modelType).toBe(spec.type);
    expect(sp.vocabSize).toBe(pieces.length);
    expect([sp.unkId, sp.bosTokenId, sp.eosTokenId, sp.padTokenId]).toEqual([0, 1, 2, undefined]);
    const batch = sp.encodeBatch(['the fox', 'a']);
    expect(batch.inputIds[0].length).toBe(batch.inputIds[1].length);
  });
});

test('bad tokenizer.model files are E_FORMAT', () => {
  const { obj } = modelObject({ type: 'bpe', byteFallback: true, text: SAMPLE });
  const good = Buffer.from(encodeMessage(spmType('ModelProto'), obj));
  const codeOf = (b: Uint8Array) => {
    try {
      SentencePieceTokenizer.fromBuffer(b);
      return 'ok';
    } catch (e) {
      if (!(e instanceof SiftError)) throw e;
      return e.code;
    }
  };
  expect(codeOf(good)).toBe('ok');
  expect(codeOf(good.subarray(0, good.length - 5))).toBe('E_FORMAT');
  expect(codeOf(new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]))).toBe('E_FORMAT');
  let s = 7;
  const rnd = () => (s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32;
  for (let i = 0; i < 300; i++) {
    const b = Buffer.from(good);
    if (i % 2) b[Math.floor(rnd() * b.length)] = Math.floor(rnd() * 256);
    const cut = i % 2 ? b : b.subarray(0, Math.floor(rnd() * b.length));
    const code = codeOf(cut);
    expect(['ok', 'E_FORMAT', 'E_UNSUPPORTED']).toContain(code);
    if (code === 'ok') SentencePieceTokenizer.fromBuffer(cut).encode('the fox 🎉');
  }
});
