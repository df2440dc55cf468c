/**
 * `sift-ft demo`: the verdict sentences follow the numbers they are given (separated or not, which
 * side wins, rates at the grid's edge), the spread statistics, and a --quick run end to end: one
 * learning-rate grid searched by every method, three seeds at the chosen rate, mean and spread
 * consistent with the per-seed numbers, LoRA at about SIFT's trainable count.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { main } from '../../lib/cli/main';
import { MethodSummary, demoTable, spreadOf, summaryJson, verdict } from '../../lib/cli/demo';
import type { MethodName } from '../../lib/train/types';

function summary(method: MethodName, tests: number[], lr = 1e-2, extra: Partial<MethodSummary> = {}): MethodSummary {
  return {
    method,
    lr,
    search: [],
    seeds: tests.map((t, i) => ({ seed: i + 1, test: t, dev: t })),
    ...spreadOf(tests),
    trainable: method === 'full' ? 480000 : 8000,
    total: 480000,
    peakMemoryBytes: 1,
    tokensPerSec: 1,
    seconds: 1,
    run: {} as never,
    ...extra,
  };
}

describe('verdict', () => {
  test('spread: mean, sample standard deviation, range', () => {
    const s = spreadOf([0.8, 0.9, 1.0]);
    expect(s.mean).toBeCloseTo(0.9, 12);
    expect(s.std).toBeCloseTo(0.1, 12);
    expect([s.min, s.max]).toEqual([0.8, 1.0]);
    expect(spreadOf([0.7]).std).toBe(0);
  });

  test('a method that wins on every seed beyond the spread is named the winner, whichever it is', () => {
    const grid = [1e-3, 1e-2, 1e-1];
    const lost = verdict([summary('sift', [0.84, 0.86, 0.85]), summary('full', [0.98, 0.99, 0.99])], { grid });
    expect(lost).toMatch(/full fine-tuning beats SIFT on every seed \(98\.7% ± 0\.6% vs 85\.0% ± 1\.0%/);
    const won = verdict([summary('sift', [0.95, 0.96, 0.97]), summary('random-sparse', [0.85, 0.86, 0.84])], { grid });
    expect(won).toMatch(/SIFT beats random-sparse on every seed/);
    expect(won).toMatch(/Mean test accuracy over 3 seeds \(± standard deviation\): SIFT 96\.0% ± 1\.0%, random-sparse 85\.0% ± 1\.0%\./);
  });

  test('overlapping seeds are reported as not separated', () => {
    const v = verdict([summary('sift', [0.88, 0.93, 0.9]), summary('lora', [0.91, 0.87, 0.89], 1e-2, { rank: 2, trainable: 8192 })], {
      grid: [1e-3, 1e-2, 1e-1],
    });
    expect(v).toMatch(
      /SIFT \(90\.3% ± 2\.5%\) and LoRA \(89\.0% ± 2\.0%\) are within each other's seed-to-seed spread \(ranges 88\.0%-93\.0% and 87\.0%-91\.0%\): this run does not separate them\./,
    );
    expect(v).toMatch(/LoRA ran at rank 2, 8,192 trainable parameters against SIFT's 8,000\./);
    expect(v).not.toMatch(/beats/);
  });

  test('rates at the edge of the grid, gradient proportions and chance level are said as they are', () => {
    const grid = [1e-3, 1e-2, 1e-1];
    const v = verdict(
      [
        summary('sift', [0.8, 0.81, 0.82], 1e-3, { gradProportion: 0.15 }),
        summary('random-sparse', [0.9, 0.91, 0.92], 1e-1, { gradProportion: 0.03 }),
      ],
      { grid, zeroShot: 0.6, testSize: 500 },
    );
    expect(v).toMatch(/SIFT and random-sparse chose a rate at the edge of the grid/);
    expect(v).toMatch(
      /carried 15\.0% of the gradient's squared norm on average \(random entries: 3\.0%\).*did not make the chosen entries the better ones/,
    );
    expect(v).toMatch(/right on 60\.0% of the held-out/);
    expect(verdict([summary('sift', [0.5, 0.52, 0.49]), summary('full', [0.55, 0.5, 0.51])], { grid })).toMatch(
      /No method got far above chance/,
    );
  });

  test('the gradient is called concentrated only when the chosen entries carry well over what random ones do', () => {
    const grid = [1e-3, 1e-2, 1e-1];
    const flat = verdict(
      [
        summary('sift', [0.9, 0.91, 0.92], 1e-2, { gradProportion: 0.03 }),
        summary('random-sparse', [0.8, 0.81, 0.82], 1e-2, { gradProportion: 0.025 }),
      ],
      { grid },
    );
    expect(flat).toMatch(
      /carried 3\.0% of the gradient's squared norm on average \(random entries: 2\.5%\): not much more than as many random entries carry \(2\.5%\), so this run does not show the gradient concentrated/,
    );
    expect(flat).not.toMatch(/the gradient is concentrated/);
    // Without random-sparse, the chance level is SIFT's share of the entries (8,000 of 480,000).
    expect(
      verdict([summary('sift', [0.9, 0.91, 0.92], 1e-2, { gradProportion: 0.02 }), summary('full', [0.9, 0.92, 0.91])], { grid }),
    ).toMatch(/not much more than as many random entries carry \(1\.7%\)/);
    expect(
      verdict([summary('sift', [0.9, 0.91, 0.92], 1e-2, { gradProportion: 0.2 }), summary('full', [0.9, 0.92, 0.91])], { grid }),
    ).toMatch(/carried 20\.0% .*: the gradient is concentrated on few weights\./);
  });

  test('the table shows mean ± std, range and every seed', () => {
    const t = demoTable([summary('sift', [0.84, 0.86, 0.85], 3e-3)]);
    expect(t).toMatch(/sift.*3e-3.*85\.0% ± 1\.0.*84\.0-86\.0%.*84\.0 \/ 86\.0 \/ 85\.0/);
  });
});

describe('summaryJson', () => {
  test("one method's results.json entry: the summary's fields in order, the run left out, its report only when asked", () => {
    const s = summary('lora', [0.5, 1], 3e-3, {
      search: [{ lr: 3e-3, devAccuracy: 0.75 }],
      rank: 2,
      run: { outDir: path.join('runs', 'lora-3e-3-seed1') } as never,
    });
    const seeds = '[{"seed":1,"test":0.5,"dev":0.5},{"seed":2,"test":1,"dev":1}]';
    const fields =
      `{"method":"lora","lr":0.003,"search":[{"lr":0.003,"devAccuracy":0.75}],"seeds":${seeds},` +
      `"mean":0.75,"std":${spreadOf([0.5, 1]).std},"min":0.5,"max":1,"trainable":8000,"total":480000,"rank":2,` +
      '"peakMemoryBytes":1,"tokensPerSec":1,"seconds":1';
    expect(JSON.stringify(summaryJson(s))).toBe(`${fields}}`);
    const report = JSON.stringify(path.join('runs', 'lora-3e-3-seed1', 'report.html'));
    expect(JSON.stringify(summaryJson(s, { report: true }))).toBe(`${fields},"report":${report}}`);
    expect(JSON.parse(JSON.stringify(summaryJson({ ...s, gradProportion: 0.25 }))).meanGradProportion).toBe(0.25);
  });
});

describe('sift-ft demo --quick', () => {
  let tmp: string;
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-demo-test-'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  test('every method searches the same grid, then runs three seeds at its chosen rate', async () => {
    const out = path.join(tmp, 'demo');
    let stdout = '';
    const o = jest.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => {
      stdout += String(c);
      return true;
    });
    const e = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
    let code: number;
    try {
      code = await main(['demo', '--quick', '--out', out, '--device', 'cpu', '--json']);
    } finally {
      o.mockRestore();
      e.mockRestore();
    }
    expect(code).toBe(0);
    const res = JSON.parse(stdout);
    expect(res.results.map((x: { method: string }) => x.method)).toEqual(['sift', 'full', 'random-sparse', 'lora']);
    expect(res.seeds).toEqual([1, 2, 3]);
    expect(res.grid.length).toBeGreaterThan(1);
    for (const r of res.results) {
      // The same grid for every method, searched on dev; the chosen rate is the best dev accuracy.
      expect(r.search.map((s: { lr: number }) => s.lr)).toEqual(res.grid);
      const bestDev = Math.max(...r.search.map((s: { devAccuracy: number }) => s.devAccuracy));
      expect(r.search.find((s: { lr: number }) => s.lr === r.lr).devAccuracy).toBe(bestDev);
      expect(r.seeds.map((s: { seed: number }) => s.seed)).toEqual([1, 2, 3]);
      const tests = r.seeds.map((s: { test: number }) => s.test);
      for (const t of tests) expect(t).toBeGreaterThanOrEqual(0);
      expect(r.mean).toBeCloseTo(tests.reduce((a: number, b: number) => a + b, 0) / 3, 12);
      expect(r.min).toBe(Math.min(...tests));
      expect(r.max).toBe(Math.max(...tests));
      expect(r.std).toBeCloseTo(spreadOf(tests).std, 12);
    }
    const [sift, full, rnd, lora] = res.results;
    expect(sift.trainable).toBeLessThan(full.trainable);
    expect(rnd.trainable).toBeLessThan(full.trainable);
    expect(lora.rank).toBeGreaterThanOrEqual(1);
    // Matched within one rank step of SIFT's count.
    expect(Math.abs(lora.trainable - sift.trainable)).toBeLessThanOrEqual(lora.trainable / lora.rank);
    // Seeds change the run: not every seed gives the same test accuracy for every method.
    expect(res.results.some((r: { seeds: { test: number }[] }) => new Set(r.seeds.map((s) => s.test)).size > 1)).toBe(true);
    expect(res.verdict).toMatch(/pre-trained model's own verdict word/);
    expect(fs.existsSync(path.join(out, 'report.html'))).toBe(true);
    expect(JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')).verdict).toBe(res.verdict);
    expect(fs.existsSync(path.join(out, 'pretrained', 'tokenizer.json'))).toBe(true);
    // One pre-training for all runs.
    expect(
      fs
        .readdirSync(out)
        .filter((d) => d.startsWith('pretrain'))
        .sort(),
    ).toEqual(['pretrain-run', 'pretrained']);
  });

  test('bad flags are E_ARG', async () => {
    const e = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      expect(await main(['demo', '--quick', '--methods', 'sift,adapter'])).toBe(2);
      expect(await main(['demo', '--quick', '--seeds', '0'])).toBe(2);
    } finally {
      e.mockRestore();
    }
  });
});
