/**
 * The sift-ft command through main(): help and flag errors of every command, info --json, a
 * finetune -> eval -> merge -> generate round trip on a tiny GPT-2 folder made here, classify with
 * a fresh head, select and export-onnx (the demo has test/cli/demo.test.ts).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createByteTokenizer } from '../../lib/tokenizers';
import { SafetensorsReader } from '../../lib/io/safetensors';
import { tinyGpt2Config } from '../helpers/tiny-configs';
import { cliJson, evalMetrics, finetuneRun, runCli, saveRandomModel, writeJsonl } from '../helpers/cli';

const cli = runCli;

const COMMANDS = ['finetune', 'eval', 'select', 'generate', 'merge', 'bench', 'info', 'demo', 'export-onnx'];

let tmp: string;
let base: string;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-cli-test-'));
  const tok = createByteTokenizer();
  base = saveRandomModel(path.join(tmp, 'base'), tinyGpt2Config(tok), tok.toFiles());
  const texts = [
    'the cat sat on the mat',
    'a dog ran in the park',
    'birds sing at dawn',
    'fish swim in the sea',
    'the sun is warm today',
    'rain falls on the roof',
  ];
  writeJsonl(
    path.join(tmp, 'lm.jsonl'),
    texts.map((text) => ({ text })),
  );
  const cls = ['good film', 'great movie', 'bad film', 'awful movie', 'lovely story', 'boring plot', 'nice acting', 'poor script'];
  fs.writeFileSync(
    path.join(tmp, 'cls.csv'),
    'sentence,label\n' + cls.map((t, i) => `${t},${['pos', 'neg'][Math.floor(i / 2) % 2 === 0 ? 0 : 1]}`).join('\n') + '\n',
  );
});

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('sift-ft help and flags', () => {
  test('top-level usage lists every command', async () => {
    const r = await cli('--help');
    expect(r.code).toBe(0);
    for (const c of COMMANDS) expect(r.out).toContain(c);
  });

  test.each(COMMANDS)('%s --help', async (c) => {
    const r = await cli(c, '--help');
    expect(r.code).toBe(0);
    expect(r.out).toContain(`Usage: sift-ft ${c}`);
    if (c !== 'bench') expect(r.out).toContain('--');
  });

  test("finetune --help lists the issue's flags", async () => {
    const r = await cli('finetune', '--help');
    for (const f of [
      '--model',
      '--data',
      '--task',
      '--method',
      '--out',
      '--sparse-rate',
      '--target-modules',
      '--dense-modules',
      '--selection-batches',
      '--selection-score',
      '--steps',
      '--epochs',
      '--batch-size',
      '--grad-accum',
      '--lr',
      '--lr-schedule',
      '--warmup-steps',
      '--weight-decay',
      '--max-grad-norm',
      '--seed',
      '--shuffle',
      '--eval-data',
      '--eval-every',
      '--resume',
      '--merge',
      '--text-column',
      '--text-pair-column',
      '--label-column',
      '--max-length',
      '--device',
    ]) {
      expect(r.out).toContain(f);
    }
  });

  test('unknown command and unknown flag name what is allowed', async () => {
    let r = await cli('nope');
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/unknown command 'nope'.*finetune/);
    r = await cli('finetune', '--bogus', '1');
    expect(r.code).toBe(2);
    expect(r.err.trim().split('\n')).toHaveLength(1);
    expect(r.err).toMatch(/unknown flag --bogus \(allowed: .*--sparse-rate/);
  });

  test('bad values name the flag and the choices', async () => {
    let r = await cli('finetune', '--method', 'magic');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--method must be one of sift, full, lora, random-sparse; got 'magic'/);
    r = await cli('eval', '--batch-size', 'many');
    expect(r.err).toMatch(/--batch-size expects a number, got 'many'/);
    r = await cli('finetune', '--device', 'tpu');
    expect(r.err).toMatch(/--device must be one of cpu, cuda/);
    r = await cli(
      'finetune',
      '--model',
      base,
      '--data',
      path.join(tmp, 'lm.jsonl'),
      '--task',
      'causal-lm',
      '--out',
      path.join(tmp, 'x'),
      '--sparse-rate',
      '2',
      '--device',
      'cpu',
    );
    expect(r.err).toMatch(/--sparse-rate must be in \(0, 1\]/);
    r = await cli(
      'finetune',
      '--model',
      base,
      '--data',
      path.join(tmp, 'lm.jsonl'),
      '--task',
      'causal-lm',
      '--out',
      path.join(tmp, 'x'),
      '--target-modules',
      're:(',
      '--device',
      'cpu',
    );
    expect(r.err).toMatch(/--target-modules: invalid regular expression/);
  });

  test('missing required flags and files are one clear line', async () => {
    let r = await cli('finetune', '--data', 'x.jsonl');
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/missing --model/);
    r = await cli('eval', '--model', path.join(tmp, 'nowhere'), '--data', 'x', '--task', 'classify');
    expect(r.err).toMatch(/--model .*nowhere: no such file/);
    expect(r.err.trim().split('\n')).toHaveLength(1);
    r = await cli('generate', '--model', base);
    expect(r.err).toMatch(/missing --prompt/);
  });

  test('info --json', async () => {
    const r = await cli('info', '--json');
    expect(r.code).toBe(0);
    const info = JSON.parse(r.out);
    expect(info.backends.cpu.usable).toBe(true);
    expect(typeof info.backends.cuda.usable).toBe('boolean');
  });
});

describe('sift-ft round trip', () => {
  test('finetune (sift, causal-lm, --merge) -> eval -> merge -> generate', async () => {
    const out = path.join(tmp, 'ft');
    const data = path.join(tmp, 'lm.jsonl');
    const lm = { data, task: 'causal-lm', 'max-length': 16, device: 'cpu' };
    const { result: res, delta } = await finetuneRun({
      ...lm,
      model: base,
      method: 'sift',
      out,
      steps: 3,
      'batch-size': 2,
      lr: 1e-2,
      'sparse-rate': 0.05,
      'eval-data': data,
      merge: true,
    });
    expect(res.steps).toBe(3);
    expect(res.trainable).toBeGreaterThan(0);
    expect(res.trainable).toBeLessThan(res.total);
    for (const f of [
      'delta.safetensors',
      'log.jsonl',
      'report.html',
      'model/config.json',
      'model/model.safetensors',
      'model/tokenizer.json',
    ]) {
      expect(fs.existsSync(path.join(out, f))).toBe(true);
    }
    const log = fs
      .readFileSync(path.join(out, 'log.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(log.filter((e) => e.type === 'step')).toHaveLength(3);
    const html = fs.readFileSync(path.join(out, 'report.html'), 'utf8');
    expect(html).toContain('<svg');
    expect(html).toContain('Training loss');
    expect(html).toContain('Gradient proportion');

    const withDelta = await evalMetrics({ ...lm, model: base, delta });
    expect(Number.isFinite(withDelta.loss)).toBe(true);
    expect(withDelta.perplexity).toBeCloseTo(Math.exp(withDelta.loss), 3);
    const baseline = await evalMetrics({ ...lm, model: base });
    expect(withDelta.loss).not.toBeCloseTo(baseline.loss, 6);

    const merged = path.join(tmp, 'merged');
    await cliJson('merge', { model: base, delta, out: merged });
    expect(fs.existsSync(path.join(merged, 'tokenizer.json'))).toBe(true);
    for (const dir of [merged, path.join(out, 'model')]) {
      expect((await evalMetrics({ ...lm, model: dir })).loss).toBeCloseTo(withDelta.loss, 5);
    }

    let r = await cli(
      'generate',
      '--model',
      base,
      '--delta',
      delta,
      '--prompt',
      'the cat',
      '--max-new-tokens',
      '6',
      '--device',
      'cpu',
      '--json',
    );
    expect(r.code).toBe(0);
    const g = JSON.parse(r.out);
    expect(g.tokens.length).toBeGreaterThan(0);
    expect(g.tokens.length).toBeLessThanOrEqual(6);
    r = await cli('generate', '--model', merged, '--prompt', 'the cat', '--max-new-tokens', '6', '--device', 'cpu');
    expect(r.code).toBe(0);
    expect(r.out).toBe(g.completion + '\n');
  });

  test('finetune classify on an LM checkpoint (fresh head, learned labels), then eval the merged model', async () => {
    const out = path.join(tmp, 'cls');
    const data = path.join(tmp, 'cls.csv');
    const cls = { data, task: 'classify', 'text-column': 'sentence', 'max-length': 16, device: 'cpu' };
    const { result: res } = await finetuneRun({
      ...cls,
      model: base,
      out,
      epochs: 2,
      'batch-size': 4,
      'eval-data': data,
      'eval-every': 1,
      merge: true,
    });
    expect(res.steps).toBe(4);
    expect(res.metrics.accuracy).toBeGreaterThanOrEqual(0);
    const cfg = JSON.parse(fs.readFileSync(path.join(out, 'model', 'config.json'), 'utf8'));
    expect(cfg.label2id).toEqual({ neg: 0, pos: 1 });
    expect((await evalMetrics({ ...cls, model: path.join(out, 'model') })).accuracy).toBeCloseTo(res.metrics.accuracy, 6);
  });

  test('full and lora methods run through the CLI', async () => {
    for (const method of ['full', 'lora']) {
      const out = path.join(tmp, method);
      await finetuneRun({
        model: base,
        data: path.join(tmp, 'lm.jsonl'),
        task: 'causal-lm',
        method,
        out,
        steps: 2,
        'batch-size': 2,
        'max-length': 16,
        device: 'cpu',
      });
      expect(fs.existsSync(path.join(out, 'report.html'))).toBe(true);
    }
  });

  test('select saves <name>.sift_idx tensors and reports the gradient proportion', async () => {
    const file = path.join(tmp, 'idx.safetensors');
    const r = await cli(
      'select',
      '--model',
      base,
      '--data',
      path.join(tmp, 'cls.csv'),
      '--task',
      'classify',
      '--text-column',
      'sentence',
      '--out',
      file,
      '--sparse-rate',
      '0.1',
      '--batch-size',
      '4',
      '--max-length',
      '16',
      '--device',
      'cpu',
      '--json',
    );
    expect(r.code).toBe(0);
    const rep = JSON.parse(r.out);
    expect(rep.layers.length).toBeGreaterThan(0);
    for (const l of rep.layers) {
      expect(l.gradProportion).toBeGreaterThanOrEqual(0);
      expect(l.gradProportion).toBeLessThanOrEqual(1 + 1e-6);
    }
    const reader = SafetensorsReader.open(file);
    try {
      const keys = reader.names();
      expect(keys.length).toBe(rep.layers.length);
      expect(keys.every((k: string) => k.endsWith('.sift_idx'))).toBe(true);
      expect(keys.some((k: string) => k.startsWith('score'))).toBe(false);
    } finally {
      reader.close();
    }
  });
});

describe('sift-ft demo', () => {
  test('export-onnx writes a graph that loads back as a trainable model', async () => {
    const out = path.join(tmp, 'base.onnx');
    const r = await cli('export-onnx', '--model', base, '--out', out);
    expect([r.code, r.err]).toEqual([0, '']);
    expect(fs.statSync(out).size).toBeGreaterThan(1000);
    const m = require('../../lib').loadModel(out);
    expect(m.namedParameters().length).toBeGreaterThan(0);
    m.dispose();
    const bad = await cli('export-onnx', '--model', path.join(tmp, 'missing'), '--out', out);
    expect(bad.code).not.toBe(0);
  });
});
