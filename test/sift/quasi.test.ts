/**
 * Quasi-sparsity as the paper measures it: the share of the gradient's squared norm on the top
 * 0.1%, 1% and 5% of entries, per tensor and pooled. Against a float64 sort reference, on planted
 * sparse and even gradients (shares 1 and the fractions themselves), on a tiny model whose
 * gradients are known in closed form, and through `sift-ft select --report`.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { QUASI_FRACTIONS, measureQuasiSparsity, quasiSparsity, topCount } from '../../lib/sift/quasi';
import { Linear } from '../../lib/nn/layers';
import { tensor } from '../../lib/autograd/creation';
import { mul } from '../../lib/autograd/elementwise';
import { reduce } from '../../lib/autograd/reduce';
import { main } from '../../lib/cli/main';

jest.setTimeout(120_000);

/** Reference: float64 squares, sorted descending, summed. */
function refShares(g: number[], fractions: number[]): number[] {
  const sq = g.map((x) => x * x).sort((a, b) => b - a);
  const total = sq.reduce((a, b) => a + b, 0);
  return fractions.map((f) => sq.slice(0, topCount(f, sq.length)).reduce((a, b) => a + b, 0) / total);
}

function gaussian(n: number, seed: number): number[] {
  let s = seed >>> 0;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 4294967296;
  return Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u()));
}

describe('quasiSparsity', () => {
  test('matches a float64 sort, per layer and pooled', () => {
    const a = gaussian(5000, 1);
    const b = gaussian(20000, 2).map((x) => x * x * x);
    const qs = quasiSparsity([
      ['a', Float32Array.from(a)],
      ['b', Float32Array.from(b)],
    ]);
    expect(qs.fractions).toEqual(QUASI_FRACTIONS);
    const close = (x: number[], y: number[]) => x.forEach((v, i) => expect(v).toBeCloseTo(y[i], 5));
    close(qs.layers[0].shares, refShares(a, QUASI_FRACTIONS));
    close(qs.layers[1].shares, refShares(b, QUASI_FRACTIONS));
    close(qs.overall.shares, refShares([...a, ...b], QUASI_FRACTIONS));
    expect(qs.overall.numel).toBe(25000);
    // Heavy tails (cubes of Gaussians) concentrate more of the norm on the top entries.
    expect(qs.layers[1].shares[1]).toBeGreaterThan(qs.layers[0].shares[1]);
  });

  test('a planted sparse gradient gives shares of 1; an even one gives the fractions themselves', () => {
    const n = 100000;
    const sparse = new Float32Array(n);
    for (let i = 0; i < 100; i++) sparse[(i * 997) % n] = 1 + i; // 0.1% of the entries
    const even = new Float32Array(n).map((_, i) => (i % 2 ? 0.5 : -0.5));
    const qs = quasiSparsity([
      ['sparse', sparse],
      ['even', even],
    ]);
    expect(qs.layers[0].shares).toEqual([1, 1, 1]);
    qs.layers[1].shares.forEach((s, i) => expect(s).toBeCloseTo(QUASI_FRACTIONS[i], 10));
    // Pooled: the planted entries are the largest of all, but the even layer holds most of the norm.
    const sparseNorm = qs.layers[0].sqNorm;
    expect(qs.overall.shares[0]).toBeCloseTo((sparseNorm + 0.25 * (topCount(0.001, 2 * n) - 100)) / (sparseNorm + 0.25 * n), 6);
  });

  test('an all-zero gradient reports shares of 1 (nothing to spread) and bad fractions are E_ARG', () => {
    expect(quasiSparsity([['z', new Float32Array(10)]]).overall.shares).toEqual([1, 1, 1]);
    expect(() => quasiSparsity([['z', new Float32Array(10)]], [0])).toThrow(expect.objectContaining({ code: 'E_ARG' }));
    expect(() => quasiSparsity([])).toThrow(expect.objectContaining({ code: 'E_ARG' }));
  });
});

describe('measureQuasiSparsity on a model with known gradients', () => {
  test('loss = c . (W x): the gradient c x^T is one entry for one-hot c and x, even for all-ones', async () => {
    const lin = new Linear(16, 32, { seed: 3 });
    const params: [string, typeof lin.weight][] = [['weight', lin.weight]];
    const run = (x: number[], c: number[]) => () => {
      const y = lin.forward(tensor(x, [1, 16]));
      reduce('sum', mul(y, tensor(c, [1, 32]))).backward();
    };
    const oneHot = (n: number, i: number) => Array.from({ length: n }, (_, j) => (j === i ? 1 : 0));
    const planted = await measureQuasiSparsity(params, run(oneHot(16, 5), oneHot(32, 7)));
    expect(planted.layers[0].shares).toEqual([1, 1, 1]);
    expect(planted.layers[0].sqNorm).toBeCloseTo(1, 6);
    const even = await measureQuasiSparsity(params, run(new Array(16).fill(1), new Array(32).fill(1)));
    // 512 entries of equal magnitude: the top k carry k / 512.
    even.layers[0].shares.forEach((s, i) => expect(s).toBeCloseTo(topCount(QUASI_FRACTIONS[i], 512) / 512, 6));
    // Two backward passes accumulate: the planted entry and a second one of twice the size.
    const two = await measureQuasiSparsity(params, () => {
      run(oneHot(16, 1), oneHot(32, 1))();
      run(
        oneHot(16, 2),
        oneHot(32, 2).map((v) => 2 * v),
      )();
    });
    expect(two.layers[0].shares[0]).toBeCloseTo(4 / 5, 6);
    expect(two.layers[0].shares[1]).toBeCloseTo(1, 6);
    // Gradients are cleared afterwards.
    expect(lin.weight.grad).toBeNull();
  });
});

describe('sift-ft select --report', () => {
  test('prints the table, adds it to --json and writes the picture', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-ft-quasi-'));
    try {
      const data = path.join(tmp, 'lm.jsonl');
      fs.writeFileSync(
        data,
        Array.from({ length: 16 }, (_, i) => JSON.stringify({ text: `the cat sat on the mat number ${i} and the dog ran` })).join('\n') +
          '\n',
      );
      const so = jest.spyOn(process.stdout, 'write').mockImplementation(() => true);
      const se = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
      let code: number;
      const outs: string[] = [];
      try {
        // A model to measure: the pretrain command's smallest.
        code = await main([
          'pretrain',
          '--architecture',
          'gpt2',
          '--size',
          'tiny',
          '--data',
          data,
          '--tokenizer-vocab',
          '280',
          '--steps',
          '2',
          '--batch-size',
          '2',
          '--block-size',
          '8',
          '--out',
          path.join(tmp, 'm'),
          '--quiet',
        ]);
        expect(code).toBe(0);
        so.mockImplementation((s: string | Uint8Array) => (outs.push(String(s)), true));
        code = await main([
          'select',
          '--model',
          path.join(tmp, 'm'),
          '--data',
          data,
          '--task',
          'causal-lm',
          '--max-length',
          '16',
          '--selection-batches',
          '2',
          '--batch-size',
          '4',
          '--out',
          path.join(tmp, 'idx.safetensors'),
          '--report',
          '--json',
        ]);
      } finally {
        so.mockRestore();
        se.mockRestore();
      }
      expect(code).toBe(0);
      const r = JSON.parse(outs.join(''));
      expect(r.quasiSparsity.fractions).toEqual(QUASI_FRACTIONS);
      expect(r.quasiSparsity.layers.map((l: { name: string }) => l.name)).toContain('transformer.h.0.attn.c_attn.weight');
      const o = r.quasiSparsity.overall;
      expect(o.shares[0]).toBeGreaterThanOrEqual(0.001);
      expect(o.shares[0]).toBeLessThanOrEqual(o.shares[1]);
      expect(o.shares[1]).toBeLessThanOrEqual(o.shares[2]);
      expect(o.shares[2]).toBeLessThanOrEqual(1);
      const html = fs.readFileSync(r.report, 'utf8');
      expect(html).toMatch(/<svg/);
      expect(html).toMatch(/top 1% of entries/);

      // A finetune run with --quasi-sparsity: the same measurement of its selection batches, in log.jsonl and report.html.
      const ft = path.join(tmp, 'ft');
      const so2 = jest.spyOn(process.stdout, 'write').mockImplementation(() => true);
      const se2 = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
      try {
        code = await main([
          'finetune',
          '--model',
          path.join(tmp, 'm'),
          '--data',
          data,
          '--task',
          'causal-lm',
          '--max-length',
          '16',
          '--selection-batches',
          '2',
          '--batch-size',
          '4',
          '--steps',
          '2',
          '--out',
          ft,
          '--quasi-sparsity',
          '--quiet',
          '--shuffle',
          'false',
        ]);
      } finally {
        so2.mockRestore();
        se2.mockRestore();
      }
      expect(code).toBe(0);
      const events = fs
        .readFileSync(path.join(ft, 'log.jsonl'), 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l));
      const q = events.find((e) => e.type === 'quasi-sparsity');
      expect(q.batches).toBe(2);
      expect(q.fractions).toEqual(QUASI_FRACTIONS);
      expect(q.layers.map((l: { name: string }) => l.name)).toEqual(r.quasiSparsity.layers.map((l: { name: string }) => l.name));
      // The same batches in the same order (no shuffling): the same shares as select's.
      q.overall.forEach((v: number, i: number) => expect(v).toBeCloseTo(r.quasiSparsity.overall.shares[i], 4));
      expect(fs.readFileSync(path.join(ft, 'report.html'), 'utf8')).toMatch(/top 5% of entries/);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
