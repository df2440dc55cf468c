import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  HfTokenizer,
  loadTokenizer,
  truncate,
  trainByteBpe,
  createByteTokenizer,
  learnBpeMerges,
  batchToTensors,
} from '../../lib/tokenizers';
import { SiftError } from '../../lib/engine/errors';
import { bertFiles, bertWords, datasetTexts, HAVE_DATA, DATA_DIR, llamaFiles, load, robertaFiles, SAMPLE, trainingTexts } from './fixtures';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-tok-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const data = datasetTexts();
const train = trainingTexts();
if (!HAVE_DATA)
  console.warn(
    `tokenizer tests: ${DATA_DIR} is absent, so the round trips over SST-2, AG News and Tiny Shakespeare are skipped (built-in sample only)`,
  );
const withData = HAVE_DATA ? test : test.skip;

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SiftError);
    return (e as SiftError).code;
  }
  return undefined;
}

// The built-in sample alone supports only a few dozen merges; the shared data supports many more.
const MERGES = HAVE_DATA ? 600 : 24;
const gpt2 = trainByteBpe(train, 256 + 2 + MERGES);
const EXTRA = ['Café  DÉJÀ vu…', '  spaced\tout\n'];
const bert = load(bertFiles([...train, ...EXTRA, ...(data ? [...data.sst2, ...data.agnews] : [])]));
const roberta = load(robertaFiles(train));
const llama = load(llamaFiles(train));

describe('byte-level BPE (GPT-2 style, trained from scratch)', () => {
  test('vocabulary: 256 bytes, merges, then the special tokens', () => {
    expect(gpt2.vocabSize).toBe(256 + MERGES + 2);
    expect(gpt2.eosTokenId).toBe(256 + MERGES);
    expect(gpt2.bosTokenId).toBe(256 + MERGES);
    expect(gpt2.padTokenId).toBe(256 + MERGES + 1);
    expect(gpt2.tokenToId('a')).toBe(97);
    expect(gpt2.tokenToId('Ġ')).toBe(32);
    // Merges shorten text: fewer tokens than bytes.
    const text = 'Before we proceed any further, hear me speak.';
    expect(gpt2.encode(text).inputIds.length).toBeLessThan(Buffer.byteLength(text) * (HAVE_DATA ? 0.6 : 0.9));
    expect(gpt2.encode(text).inputIds.every((id) => id < 256 + MERGES)).toBe(true);
  });

  test('round trip on the built-in sample, unicode, whitespace and special tokens', () => {
    const texts = [
      ...SAMPLE,
      '',
      ' ',
      '  leading and trailing  ',
      'tabs\tand\nnewlines\r\n',
      'naïve café — 東京 🚀 e\u0301',
      "'s 're 've 123 4.5",
    ];
    for (const t of texts) expect(gpt2.decode(gpt2.encode(t).inputIds)).toBe(t);
    const withSpecial = 'one<|endoftext|>two';
    const ids = gpt2.encode(withSpecial).inputIds;
    expect(ids).toContain(gpt2.eosTokenId);
    expect(gpt2.decode(ids)).toBe(withSpecial);
    expect(gpt2.decode(ids, { skipSpecialTokens: true })).toBe('onetwo');
  });

  withData('round trip on SST-2, AG News and Tiny Shakespeare', () => {
    for (const t of [...data!.sst2, ...data!.agnews, ...data!.shakespeare]) {
      const ids = gpt2.encode(t).inputIds;
      expect(gpt2.decode(ids)).toBe(t);
    }
    // The whole play as one text: newlines and blank lines included.
    const block = data!.shakespeare.slice(0, 200).join('\n') + '\n\n';
    expect(gpt2.decode(gpt2.encode(block).inputIds)).toBe(block);
  });

  test('saved tokenizer.json reads back with the same ids, through a folder', () => {
    const dir = path.join(tmp, 'bytebpe');
    gpt2.save(dir);
    const tj = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));
    expect(tj.model.type).toBe('BPE');
    expect(tj.pre_tokenizer.type).toBe('ByteLevel');
    expect(tj.decoder.type).toBe('ByteLevel');
    expect(tj.model.merges.length).toBe(MERGES);
    expect(tj.added_tokens.map((t: { content: string }) => t.content)).toEqual(['<|endoftext|>', '<pad>']);
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8'));
    expect(cfg.tokenizer_class).toBe('PreTrainedTokenizerFast');
    const back = loadTokenizer(dir);
    for (const t of SAMPLE) expect(back.encode(t).inputIds).toEqual(gpt2.encode(t).inputIds);
    expect(back.vocabSize).toBe(gpt2.vocabSize);
    expect(back.padTokenId).toBe(gpt2.padTokenId);
  });

  test('the same vocab.json + merges.txt (legacy GPT-2 files) encode identically', () => {
    const dir = path.join(tmp, 'legacy-gpt2');
    fs.mkdirSync(dir);
    const tj = JSON.parse(gpt2.toFiles()['tokenizer.json']);
    fs.writeFileSync(path.join(dir, 'vocab.json'), JSON.stringify(tj.model.vocab));
    fs.writeFileSync(path.join(dir, 'merges.txt'), '#version: 0.2\n' + tj.model.merges.join('\n') + '\n');
    fs.writeFileSync(
      path.join(dir, 'tokenizer_config.json'),
      JSON.stringify({ eos_token: '<|endoftext|>', bos_token: '<|endoftext|>', clean_up_tokenization_spaces: false }),
    );
    const legacy = loadTokenizer(dir);
    for (const t of SAMPLE) expect(legacy.encode(t).inputIds).toEqual(gpt2.encode(t).inputIds);
    expect(legacy.eosTokenId).toBe(gpt2.eosTokenId);
  });

  test('bos/eos template, pairs and type ids', () => {
    const tok = createByteTokenizer([], {
      addBosToken: true,
      addEosToken: true,
      specialTokens: ['<s>', '</s>', '<pad>'],
      bos: '<s>',
      eos: '</s>',
    });
    const e = tok.encode('ab', 'c');
    expect(e.inputIds).toEqual([256, 97, 98, 257, 256, 99, 257]);
    expect(e.tokenTypeIds).toEqual([0, 0, 0, 0, 1, 1, 1]);
    expect(tok.decode(e.inputIds, { skipSpecialTokens: true })).toBe('abc');
    // GPT-2 style (no template): a pair is the two texts back to back, second with type 1.
    const p = gpt2.encode('x', 'y');
    expect(p.inputIds).toEqual([120, 121]);
    expect(p.tokenTypeIds).toEqual([0, 1]);
  });

  test('trainer is deterministic and respects the vocabulary size', () => {
    const a = trainByteBpe(SAMPLE, 300);
    const b = trainByteBpe(SAMPLE, 300);
    expect(a.toFiles()['tokenizer.json']).toBe(b.toFiles()['tokenizer.json']);
    expect(a.vocabSize).toBeLessThanOrEqual(300);
    expect(codeOf(() => trainByteBpe(SAMPLE, 100))).toBe('E_ARG');
    // Classic example: 'low' words merge 'l o' then 'lo w'.
    const m = learnBpeMerges(
      [
        [['l', 'o', 'w'], 5],
        [['l', 'o', 'w', 'e', 'r'], 2],
        [['n', 'e', 'w', 'e', 's', 't'], 6],
        [['w', 'i', 'd', 'e', 's', 't'], 3],
      ],
      4,
    );
    expect(m[0]).toEqual(['e', 's']);
    expect(m[1]).toEqual(['es', 't']);
    expect(m[2]).toEqual(['l', 'o']);
  });
});

describe('WordPiece (BERT)', () => {
  test('single text and pairs: [CLS] a [SEP] b [SEP] with token types 0/1', () => {
    const e = bert.encode('The camera!', 'Speak, speak.');
    const toks = e.inputIds.map((i) => bert.idToToken(i));
    expect(toks[0]).toBe('[CLS]');
    const sep1 = toks.indexOf('[SEP]');
    expect(toks.slice(1, sep1).join(' ').replace(/ ##/g, '')).toBe('the camera !');
    expect(toks[toks.length - 1]).toBe('[SEP]');
    expect(e.tokenTypeIds.slice(0, sep1 + 1).every((t) => t === 0)).toBe(true);
    expect(e.tokenTypeIds.slice(sep1 + 1).every((t) => t === 1)).toBe(true);
    expect(e.attentionMask.every((m) => m === 1)).toBe(true);
    expect(bert.clsTokenId).toBe(2);
    expect(bert.sepTokenId).toBe(3);
    expect(bert.padTokenId).toBe(0);
    expect(bert.maskTokenId).toBe(4);
    expect(bert.unkTokenId).toBe(1);
    expect(bert.encode('x', null, { addSpecialTokens: false }).inputIds.length).toBe(1);
    expect(bert.numSpecialTokensToAdd()).toBe(2);
    expect(bert.numSpecialTokensToAdd(true)).toBe(3);
  });

  test('round trip gives the normalised text (lowercased, accents stripped, punctuation split)', () => {
    const texts = [...SAMPLE, ...EXTRA];
    for (const t of texts) {
      expect(bert.decode(bert.encode(t).inputIds, { skipSpecialTokens: true })).toBe(bertWords(t).join(' '));
    }
  });

  withData('round trip on SST-2 and AG News (normalised text)', () => {
    for (const t of [...data!.sst2, ...data!.agnews]) {
      const ids = bert.encode(t).inputIds;
      expect(ids).not.toContain(bert.unkTokenId);
      expect(bert.decode(ids, { skipSpecialTokens: true })).toBe(bertWords(t).join(' '));
    }
  });

  test('unknown characters become [UNK]', () => {
    const ids = bert.encode('zzz ☃').inputIds;
    expect(ids).toContain(bert.unkTokenId);
  });

  test('legacy vocab.txt folder gives the same encodings', () => {
    const dir = path.join(tmp, 'legacy-bert');
    fs.mkdirSync(dir);
    const f = bertFiles([...train, ...EXTRA, ...(data ? [...data.sst2, ...data.agnews] : [])]);
    fs.writeFileSync(path.join(dir, 'vocab.txt'), f.vocab.join('\n') + '\n');
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(f.config));
    const legacy = loadTokenizer(dir);
    for (const t of SAMPLE) expect(legacy.encode(t, 'a pair').inputIds).toEqual(bert.encode(t, 'a pair').inputIds);
  });

  test('truncation: longest first as the Rust tokenizers, only_first, only_second, left side', () => {
    const a = 'a b c d e f g h'; // 8 tokens
    const b = 'i j k'; // 3 tokens
    const r = bert.encode(a, b, { maxLength: 10 }); // budget 7: shorter keeps 3, longer gets 4
    expect(r.inputIds.length).toBe(10);
    expect(bert.decode(r.inputIds, { skipSpecialTokens: true })).toBe('a b c d i j k');
    const r2 = bert.encode(a, 'i j k l m n o p q', { maxLength: 10 }); // 8 vs 9, budget 7: 3 and 4
    expect(bert.decode(r2.inputIds, { skipSpecialTokens: true })).toBe('a b c i j k l');
    const r3 = bert.encode(a, b, { maxLength: 8, truncation: 'only_first' });
    expect(bert.decode(r3.inputIds, { skipSpecialTokens: true })).toBe('a b i j k');
    const r4 = bert.encode(b, a, { maxLength: 9, truncation: 'only_second' });
    expect(bert.decode(r4.inputIds, { skipSpecialTokens: true })).toBe('i j k a b c');
    expect(codeOf(() => bert.encode(a, b, { maxLength: 5, truncation: 'only_first' }))).toBe('E_ARG');
    const r5 = bert.encode(a, null, { maxLength: 5, truncationSide: 'left' });
    expect(bert.decode(r5.inputIds)).toBe('[CLS] f g h [SEP]');
    expect(truncate(['1', '2', '3', '4', '5'], ['6', '7', '8', '9', '10'], 5, 'longest_first', 'right')).toEqual([
      ['1', '2'],
      ['6', '7', '8'],
    ]);
    expect(codeOf(() => bert.encode(a, b, { maxLength: 2 }))).toBe('E_ARG');
    expect(bert.encode(a, null, { maxLength: 100 }).inputIds.length).toBe(10);
    expect(bert.encode(a, null, { maxLength: 4, truncation: false }).inputIds.length).toBe(10);
    // model_max_length is the default limit when truncation is asked without maxLength.
    expect(bert.encode('a '.repeat(600), null, { truncation: true }).inputIds.length).toBe(512);
  });

  test('batch padding right and left, max_length and multiples', () => {
    const batch = bert.encodeBatch(['a b c', ['d', 'e f']]);
    expect(batch.inputIds.map((r) => r.length)).toEqual([6, 6]);
    expect(batch.inputIds[0]).toEqual([...bert.encode('a b c').inputIds, 0]);
    expect(batch.attentionMask).toEqual([
      [1, 1, 1, 1, 1, 0],
      [1, 1, 1, 1, 1, 1],
    ]);
    expect(batch.tokenTypeIds).toEqual([
      [0, 0, 0, 0, 0, 0],
      [0, 0, 0, 1, 1, 1],
    ]);
    const b2 = bert.encodeBatch(['a', 'a b c'], { paddingSide: 'right' });
    expect(b2.inputIds[0]).toEqual([2, bert.tokenToId('a'), 3, 0, 0]);
    expect(b2.attentionMask[0]).toEqual([1, 1, 1, 0, 0]);
    const b3 = bert.encodeBatch(['a', 'a b c'], { paddingSide: 'left' });
    expect(b3.inputIds[0]).toEqual([0, 0, 2, bert.tokenToId('a'), 3]);
    expect(b3.attentionMask[0]).toEqual([0, 0, 1, 1, 1]);
    const b4 = bert.encodeBatch(['a', 'a b c'], { padding: 'max_length', maxLength: 8 });
    expect(b4.inputIds.map((r) => r.length)).toEqual([8, 8]);
    const b5 = bert.encodeBatch(['a', 'a b c d e f g h i j'], { padding: 'max_length', maxLength: 6 });
    expect(b5.inputIds.map((r) => r.length)).toEqual([6, 6]);
    const b6 = bert.encodeBatch(['a', 'a b c'], { padToMultipleOf: 8 });
    expect(b6.inputIds[1].length).toBe(8);
    const b7 = bert.encodeBatch(['a', 'a b c'], { padding: false });
    expect(b7.inputIds.map((r) => r.length)).toEqual([3, 5]);
    expect(codeOf(() => batchToTensors(b7))).toBe('E_SHAPE');
    const t = batchToTensors(b2);
    expect(t.inputIds.shape).toEqual([2, 5]);
    expect(t.inputIds.dtype).toBe('i64');
    expect(Array.from(t.attentionMask.toArray() as BigInt64Array, Number)).toEqual(b2.attentionMask.flat());
    expect(batchToTensors(b2, { dtype: 'i32' }).tokenTypeIds.dtype).toBe('i32');
  });
});

describe('byte-level BPE with RoBERTa processing', () => {
  test('<s> a </s></s> b </s>, all token types 0', () => {
    const e = roberta.encode('Hello world', 'Bye');
    const toks = e.inputIds.map((i) => roberta.idToToken(i));
    expect(toks[0]).toBe('<s>');
    const i = toks.indexOf('</s>');
    expect(toks[i + 1]).toBe('</s>');
    expect(toks[toks.length - 1]).toBe('</s>');
    expect(e.tokenTypeIds.every((t) => t === 0)).toBe(true);
    expect(roberta.decode(e.inputIds, { skipSpecialTokens: true })).toBe('Hello worldBye');
    expect(roberta.padTokenId).toBe(1);
    expect(roberta.clsTokenId).toBe(0);
    expect(roberta.sepTokenId).toBe(2);
    expect(roberta.maskTokenId).toBe(roberta.vocabSize - 1);
    expect(roberta.unkTokenId).toBe(3);
    // <mask> strips the space on its left, as RoBERTa's fill-mask expects.
    const m = roberta.encode('Paris is the <mask> of France').inputIds;
    expect(m).toContain(roberta.maskTokenId);
  });

  withData('round trip on the data sets', () => {
    for (const t of [...data!.sst2.slice(0, 800), ...data!.shakespeare.slice(0, 800)]) {
      expect(roberta.decode(roberta.encode(t).inputIds, { skipSpecialTokens: true })).toBe(t);
    }
  });

  test('add_prefix_space from tokenizer_config.json changes the first token', () => {
    const f = robertaFiles(train);
    const spaced = load({ tokenizer: f.tokenizer, config: { ...f.config, add_prefix_space: true } });
    expect(spaced.tokenize('Hello')[0].startsWith('Ġ')).toBe(true);
    expect(roberta.tokenize('Hello')[0].startsWith('Ġ')).toBe(false);
  });
});

describe('SentencePiece-style BPE (LLaMA)', () => {
  test('<s> prefix, Metaspace, byte fallback, no pad token', () => {
    const e = llama.encode('Hello there, café 🚀!');
    expect(e.inputIds[0]).toBe(1);
    const toks = e.inputIds.map((i) => llama.idToToken(i)!);
    expect(toks[1].startsWith('▁')).toBe(true);
    expect(toks).toContain('<0xC3>');
    expect(toks).toContain('<0xF0>');
    expect(llama.decode(e.inputIds, { skipSpecialTokens: true })).toBe('Hello there, café 🚀!');
    expect(llama.decode(e.inputIds)).toBe('<s> Hello there, café 🚀!');
    expect(llama.padTokenId).toBeUndefined();
    expect(llama.bosTokenId).toBe(1);
    expect(llama.eosTokenId).toBe(2);
    expect(llama.paddingSide).toBe('left');
    expect(codeOf(() => llama.encodeBatch(['a', 'a b c']))).toBe('E_ARG');
    llama.padTokenId = llama.eosTokenId;
    const b = llama.encodeBatch(['a', 'a b c']);
    expect(b.attentionMask[0][0]).toBe(0);
    expect(b.inputIds[0][0]).toBe(2);
    expect(b.inputIds[0][b.inputIds[0].length - 1]).toBe(llama.encode('a').inputIds.at(-1));
    llama.padTokenId = undefined;
    const p = llama.encode('a', 'b');
    expect(p.inputIds.filter((i) => i === 1).length).toBe(2);
    expect(p.tokenTypeIds.at(-1)).toBe(1);
  });

  test('add_eos_token in tokenizer_config.json rebuilds the template', () => {
    const withEos = load(llamaFiles(train, { add_eos_token: true }));
    const ids = withEos.encode('Hello').inputIds;
    expect(ids[0]).toBe(1);
    expect(ids[ids.length - 1]).toBe(2);
    const noBos = load(llamaFiles(train, { add_bos_token: false }));
    expect(noBos.encode('Hello').inputIds[0]).not.toBe(1);
  });

  withData('round trip on the data sets (lines without a leading space)', () => {
    for (const t of [...data!.sst2.slice(0, 1000), ...data!.agnews.slice(0, 300), ...data!.shakespeare.slice(0, 1000)]) {
      const line = t.replace(/^\s+/, '');
      expect(llama.decode(llama.encode(line).inputIds, { skipSpecialTokens: true })).toBe(line);
    }
  });

  test('chat template through @huggingface/jinja', () => {
    const f = llamaFiles(train, {
      chat_template:
        '{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}',
    });
    const tok = load(f);
    const s = tok.applyChatTemplate([{ role: 'user', content: 'hi' }], { addGenerationPrompt: true });
    expect(s).toBe('<s>[user] hi</s>[assistant] ');
    expect(codeOf(() => llama.applyChatTemplate([{ role: 'user', content: 'x' }]))).toBe('E_ARG');
  });
});

describe('errors and edge cases', () => {
  test('bad inputs are SiftErrors', () => {
    expect(codeOf(() => bert.encode(42 as unknown as string))).toBe('E_ARG');
    expect(codeOf(() => bert.decode([1.5]))).toBe('E_ARG');
    expect(codeOf(() => bert.decode([-1]))).toBe('E_ARG');
    expect(codeOf(() => bert.encode('a', null, { maxLength: -1 }))).toBe('E_ARG');
    expect(codeOf(() => bert.encode('a', null, { truncation: 'sideways' as never }))).toBe('E_ARG');
    expect(
      codeOf(() => {
        gpt2.padTokenId = 1e9;
      }),
    ).toBe('E_INDEX');
    expect(codeOf(() => HfTokenizer.fromFiles({ tokenizer: { model: { type: 'Nope' } } }))).toBe('E_FORMAT');
    expect(codeOf(() => HfTokenizer.fromFiles({ tokenizer: {} }))).toBe('E_FORMAT');
    expect(codeOf(() => loadTokenizer(path.join(tmp, 'missing')))).toBe('E_IO');
    const empty = path.join(tmp, 'empty');
    fs.mkdirSync(empty);
    expect(codeOf(() => loadTokenizer(empty))).toBe('E_IO');
  });

  test('decode accepts typed arrays and bigints, skips ids without a token', () => {
    const ids = gpt2.encode('hello').inputIds;
    expect(gpt2.decode(Int32Array.from(ids))).toBe('hello');
    expect(gpt2.decode(BigInt64Array.from(ids.map(BigInt)))).toBe('hello');
    expect(gpt2.decode([...ids, gpt2.vocabSize + 10])).toBe('hello');
    expect(gpt2.decode([])).toBe('');
    expect(gpt2.decodeBatch([ids, ids])).toEqual(['hello', 'hello']);
  });
});
