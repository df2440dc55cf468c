/**
 * `sift-ft pretrain` and its streamed data: token blocks read from a gzipped JSONL file and a text
 * file written here, the same blocks at a position whether read on or restarted (what resume
 * relies on), a tiny GPT-2 and LLaMA trained a few steps (the loss falls), the written folder
 * loaded with the library and generating, a resumed run ending on the same weights as an
 * uninterrupted one, --minutes, continued pre-training with --model, and bad input as E_ARG / E_FORMAT.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as zlib from 'zlib';
import { configFor } from '../../lib/cli/pretrain';
import { progressLine } from '../../lib/cli/progress';
import { loadModel } from '../../lib/load';
import { generate } from '../../lib/models/generate';
import type { PreTrainedModel } from '../../lib/models/common';
import { loadSafetensors } from '../../lib/io/safetensors';
import { HfTokenizer, trainByteBpe } from '../../lib/tokenizers';
import { TokenBlockStream, expandDataPaths, readDocuments } from '../../lib/train/stream';
import { readRows } from '../../lib/train/data';
import { runCli } from '../helpers/cli';

const cli = (args: string[]) => runCli(...args);

jest.setTimeout(240_000);

const WORDS = 'the cat sat on a mat and the dog ran to the park while birds sang in tall green trees by the river'.split(' ');

let dir: string;
let jsonl: string;
let txt: string;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-ft-pretrain-'));
  const rows: string[] = [];
  for (let i = 0; i < 40; i++) {
    const t: string[] = [];
    for (let j = 0; j < 60; j++) t.push(WORDS[(i * 7 + j * 3) % WORDS.length]);
    rows.push(JSON.stringify({ title: `book ${i}`, text: `${t.join(' ')}.` }));
  }
  jsonl = path.join(dir, 'books.jsonl.gz');
  fs.writeFileSync(jsonl, zlib.gzipSync(rows.join('\n') + '\n'));
  txt = path.join(dir, 'notes.txt');
  fs.writeFileSync(
    txt,
    Array.from({ length: 300 }, (_, i) => `the dog ran to the park and the cat sat on a mat ${i % 5}`).join('\n') + '\n',
  );
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function losses(outDir: string): number[] {
  return fs
    .readFileSync(path.join(outDir, 'log.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l))
    .filter((e) => e.type === 'step')
    .map((e) => e.loss as number);
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

describe('streamed token blocks', () => {
  test('gzipped JSON lines and text files are read as documents, the gzip decompressed on the fly', async () => {
    const rows: string[] = [];
    for await (const r of readRows(jsonl)) rows.push(String(r.text));
    expect(rows).toHaveLength(40);
    const docs: { text: string; end: boolean }[] = [];
    for await (const d of readDocuments([jsonl, txt], { linesPerChunk: 100 })) docs.push(d);
    // 40 books, then the text file in 3 chunks of 100 lines and its (empty) last piece.
    expect(docs.slice(0, 40).map((d) => d.text)).toEqual(rows);
    expect(docs.slice(0, 40).every((d) => d.end)).toBe(true);
    expect(docs.slice(40).map((d) => d.end)).toEqual([false, false, false, true]);
    expect(
      docs
        .slice(40)
        .map((d) => d.text)
        .join(''),
    ).toBe(fs.readFileSync(txt, 'utf8'));
  });

  test('a corrupt gzip file is E_FORMAT; a folder expands to its data files', async () => {
    const bad = path.join(dir, 'bad.jsonl.gz');
    fs.writeFileSync(bad, Buffer.concat([zlib.gzipSync('{"text": "a"}\n'.repeat(1000)).subarray(0, 40), Buffer.from('garbage garbage')]));
    await expect(
      (async () => {
        for await (const _ of readDocuments([bad])) void _;
      })(),
    ).rejects.toMatchObject({ code: 'E_FORMAT' });
    fs.rmSync(bad);
    expect(expandDataPaths([dir])).toEqual([jsonl, txt]);
    expect(() => expandDataPaths([path.join(dir, 'nope')])).toThrow(expect.objectContaining({ code: 'E_IO' }));
  });

  test('the blocks at a position are the same read on or after a restart; a shuffle buffer of 1 keeps file order', async () => {
    const tok = trainByteBpe(['the cat sat on a mat and the dog ran to the park'], 300);
    const opts = { blockSize: 16, shuffleBuffer: 8, seed: 3 };
    const a = new TokenBlockStream([jsonl, txt], tok, opts);
    const seq: number[][][] = [];
    for (let p = 0; p < 6; p++) seq.push((await a.batch(p, 4)).map((e) => e.inputIds));
    const b = new TokenBlockStream([jsonl, txt], tok, opts);
    expect((await b.batch(4, 4)).map((e) => e.inputIds)).toEqual(seq[4]);
    // Back to an earlier position: the stream restarts and gives the same blocks.
    expect((await b.batch(1, 4)).map((e) => e.inputIds)).toEqual(seq[1]);
    expect(seq.flat().every((blk) => blk.length === 16)).toBe(true);
    // Unshuffled: the concatenated blocks are the token stream of the documents, EOS after each book.
    const c = new TokenBlockStream([jsonl], tok, { blockSize: 16, shuffleBuffer: 1 });
    const first = (await c.batch(0, 3)).flatMap((e) => e.inputIds);
    let doc0 = '';
    for await (const d of readDocuments([jsonl])) {
      doc0 = d.text;
      break;
    }
    const ids = tok.encode(doc0, null, { addSpecialTokens: false }).inputIds;
    expect(first.slice(0, Math.min(48, ids.length))).toEqual(ids.slice(0, 48));
    a.close();
    b.close();
    c.close();
  });

  test('data with less than one block is E_ARG', async () => {
    const small = path.join(dir, 'small.txt');
    fs.writeFileSync(small, 'a b c\n');
    const s = new TokenBlockStream([small], trainByteBpe(['a b c'], 260), { blockSize: 64 });
    await expect(s.batch(0, 2)).rejects.toMatchObject({ code: 'E_ARG' });
    fs.rmSync(small);
  });
});

describe('progress line against the bound in force', () => {
  const now = 1_000_000_000;
  const at = (step: number, totalSteps: number, etaSec: number) =>
    ({ type: 'step', step, totalSteps, loss: 3.25, lr: 1e-3, tokensPerSec: 900, elapsedSec: 60, etaSec }) as const;

  test('steps alone: step n/N and the step ETA', () => {
    const r = progressLine(at(50, 200, 180), {}, now);
    expect(r.text).toBe('step 50/200  loss 3.2500  lr 1.00e-3  900 tok/s  ETA 3m00s');
    expect(r.fraction).toBe(0.25);
  });

  test('--minutes alone: no sentinel step count; the ETA is the time left, the bar the time used', () => {
    const r = progressLine(at(52, 1_000_000_000, 821_855_760), { openEnded: true, deadline: { at: now + 1077_000, seconds: 1800 } }, now);
    expect(r.text).toBe('step 52  loss 3.2500  lr 1.00e-3  900 tok/s  ETA 17m57s (time limit)');
    expect(r.text).not.toContain('1000000000');
    expect(r.fraction).toBeCloseTo(723 / 1800, 12);
    // Past the deadline (the step that ends the run): nothing left, the bar full.
    const end = progressLine(at(60, 1_000_000_000, 1e9), { openEnded: true, deadline: { at: now - 5, seconds: 1800 } }, now);
    expect(end.text).toContain('ETA 0s (time limit)');
    expect(end.fraction).toBe(1);
  });

  test('--tokens: tokens done of the budget', () => {
    const r = progressLine(at(52, 245, 600), { tokens: { total: 5_000_000, perStep: 20_480 } }, now);
    expect(r.text).toBe('step 52/245  tokens 1.1M/5.0M  loss 3.2500  lr 1.00e-3  900 tok/s  ETA 10m00s');
    expect(r.fraction).toBeCloseTo((52 * 20_480) / 5_000_000, 12);
  });

  test('--steps or --tokens with --minutes: whichever ends the run first sets the ETA', () => {
    const bound = { tokens: { total: 5_000_000, perStep: 20_480 }, deadline: { at: now + 120_000, seconds: 600 } };
    const clock = progressLine(at(52, 245, 600), bound, now);
    expect(clock.text).toMatch(/tokens 1\.1M\/5\.0M .* ETA 2m00s \(time limit\)$/);
    expect(clock.fraction).toBeCloseTo(0.8, 12);
    const budget = progressLine(at(52, 245, 60), bound, now);
    expect(budget.text).toMatch(/ETA 1m00s$/);
    expect(budget.fraction).toBeCloseTo((52 * 20_480) / 5_000_000, 12);
  });
});

describe('sift-ft pretrain', () => {
  const base = (out: string, extra: string[] = []) => [
    'pretrain',
    '--data',
    jsonl,
    txt,
    '--tokenizer-vocab',
    '300',
    '--batch-size',
    '8',
    '--block-size',
    '32',
    '--lr',
    '3e-3',
    '--out',
    out,
    '--quiet',
    ...extra,
  ];

  test('a tiny GPT-2 from scratch: the loss falls, the folder loads with the library and generates', async () => {
    const out = path.join(dir, 'gpt2');
    const r = await cli([...base(out, ['--architecture', 'gpt2', '--size', 'tiny', '--steps', '40', '--json'])]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const summary = JSON.parse(r.out);
    expect(summary.steps).toBe(40);
    expect(summary.tokenizer).toMatchObject({ vocabSize: 300, trained: true });
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'log.jsonl', 'report.html'])
      expect(fs.existsSync(path.join(out, f))).toBe(true);
    const l = losses(out);
    expect(l).toHaveLength(40);
    expect(mean(l.slice(-5))).toBeLessThan(mean(l.slice(0, 5)) - 1);
    const cfg = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
    expect(cfg).toMatchObject({ model_type: 'gpt2', n_embd: 64, n_layer: 2, n_head: 2, vocab_size: 300 });
    const model = loadModel(out) as PreTrainedModel;
    const tok = HfTokenizer.fromFolder(out);
    try {
      const ids = tok.encode('the cat', null, { addSpecialTokens: false }).inputIds;
      const [gen] = await generate(model, ids, { maxNewTokens: 8 });
      expect(gen.length).toBe(ids.length + 8);
      // The text it learned: a trained model continues with the corpus's words.
      const words = tok.decode(gen.slice(ids.length)).split(/\s+/).filter(Boolean);
      expect(words.some((w) => WORDS.includes(w.replace(/[^a-z]/g, '')))).toBe(true);
    } finally {
      model.dispose();
    }
  });

  test('a tiny LLaMA from scratch with a given tokenizer; --minutes stops at a step boundary and writes the model', async () => {
    const out = path.join(dir, 'llama');
    const r = await cli([
      ...base(out, ['--architecture', 'llama', '--size', 'tiny', '--tokenizer', path.join(dir, 'gpt2'), '--minutes', '0.04', '--json']),
    ]);
    expect(r.code).toBe(0);
    const s = JSON.parse(r.out);
    expect(s.timeUp).toBe(true);
    expect(s.steps).toBeGreaterThan(0);
    expect(s.tokenizer.trained).toBe(false);
    const cfg = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
    expect(cfg).toMatchObject({ model_type: 'llama', hidden_size: 64, num_hidden_layers: 2, intermediate_size: 192 });
    expect(losses(out)).toHaveLength(s.steps);
    const m = loadModel(out) as PreTrainedModel;
    m.dispose();
  });

  test('a resumed run ends on the weights of an uninterrupted one', async () => {
    const whole = path.join(dir, 'whole');
    const parts = path.join(dir, 'parts');
    const args = ['--architecture', 'gpt2', '--size', 'tiny', '--steps', '12', '--checkpoint-every', '6', '--shuffle-buffer', '16'];
    expect((await cli(base(whole, args))).code).toBe(0);
    expect((await cli(base(parts, args))).code).toBe(0);
    // As if the second run had stopped after step 6: its later checkpoint and model are gone.
    fs.rmSync(path.join(parts, 'checkpoint-12'), { recursive: true });
    fs.rmSync(path.join(parts, 'model.safetensors'));
    const r = await cli(base(parts, [...args, '--resume']));
    expect(r.code).toBe(0);
    const a = loadSafetensors(path.join(whole, 'model.safetensors')).tensors;
    const b = loadSafetensors(path.join(parts, 'model.safetensors')).tensors;
    expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
    for (const [k, t] of a) {
      const x = t.toArray() as number[];
      const y = b.get(k)!.toArray() as number[];
      let d = 0;
      for (let i = 0; i < x.length; i++) d = Math.max(d, Math.abs(x[i] - y[i]));
      expect(d).toBeLessThan(1e-5);
    }
    for (const t of [...a.values(), ...b.values()]) t.dispose();
    expect(losses(parts).slice(0, 6)).toEqual(losses(whole).slice(0, 6));
  });

  test('--model continues pre-training an existing folder', async () => {
    const out = path.join(dir, 'continued');
    const r = await cli([
      'pretrain',
      '--model',
      path.join(dir, 'gpt2'),
      '--data',
      txt,
      '--steps',
      '4',
      '--batch-size',
      '4',
      '--block-size',
      '32',
      '--out',
      out,
      '--quiet',
      '--json',
    ]);
    expect(r.code).toBe(0);
    const s = JSON.parse(r.out);
    // Continued from the trained weights: the loss starts near where pre-training ended, not at ln(vocab).
    expect(s.firstLoss).toBeLessThan(Math.log(300) - 1);
    expect(fs.readFileSync(path.join(out, 'tokenizer.json'), 'utf8')).toBe(
      fs.readFileSync(path.join(dir, 'gpt2', 'tokenizer.json'), 'utf8'),
    );
  });

  test('bad input: clear E_ARG errors', async () => {
    const out = path.join(dir, 'bad');
    const noLen = await cli(['pretrain', '--architecture', 'gpt2', '--size', 'tiny', '--data', txt, '--out', out]);
    expect(noLen.code).toBe(2);
    expect(noLen.err).toMatch(/--steps N, --tokens N or --minutes M/);
    const two = await cli([
      'pretrain',
      '--architecture',
      'gpt2',
      '--model',
      path.join(dir, 'gpt2'),
      '--data',
      txt,
      '--steps',
      '1',
      '--out',
      out,
    ]);
    expect(two.err).toMatch(/give one of --model, --architecture/);
    const stray = await cli(['pretrain', 'oops', '--architecture', 'gpt2', '--data', txt, '--steps', '1', '--out', out]);
    expect(stray.code).toBe(2);
    expect(stray.err).toMatch(/unexpected argument 'oops'/);
    const long = await cli([
      'pretrain',
      '--architecture',
      'gpt2',
      '--size',
      'tiny',
      '--data',
      txt,
      '--steps',
      '1',
      '--block-size',
      '4096',
      '--out',
      out,
      '--tokenizer',
      path.join(dir, 'gpt2'),
    ]);
    expect(long.err).toMatch(/exceeds the model's context of 128/);
    expect(() => configFor('bert', 'tiny')).toThrow(/unknown architecture/);
  });
});
