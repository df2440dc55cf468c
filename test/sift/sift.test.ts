import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  Sift,
  SparseAdamW,
  Module,
  Linear,
  Tensor,
  tensor,
  tidy,
  noGrad,
  liveTensors,
  SiftError,
  kForRate,
  saveIncrement,
  loadIncrement,
  applyIncrement,
  unmergeIncrement,
  exactDelta,
  mul,
  lrMultiplier,
} from '../../lib';
import { seededValues } from '../helpers/gradcheck';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-inc-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SiftError);
    return (e as SiftError).code;
  }
  return undefined;
}

/** A toy model whose loss is sum(W_i * C_i): the gradient of W_i is exactly C_i. */
class Toy extends Module {
  layers: Linear[] = [];
  head: Linear;
  lm_head: Linear;
  constructor(n: number, dtype: 'f32' | 'bf16' = 'f32') {
    super();
    for (let i = 0; i < n; i++) this.layers.push(this.registerModule(`layer${i}`, new Linear(8, 6, { seed: i + 1, std: 0.5, dtype })));
    this.head = this.registerModule('head', new Linear(6, 3, { seed: 100, dtype }));
    this.lm_head = this.registerModule('lm_head', new Linear(6, 4, { seed: 101, bias: false, dtype }));
  }
}

function coefficients(model: Toy, seed: number): Map<Tensor, Tensor> {
  const out = new Map<Tensor, Tensor>();
  let s = seed;
  for (const [, p] of model.namedParameters()) out.set(p, tensor(seededValues(p.size, s++), p.shape, { dtype: p.dtype }));
  return out;
}

function backwardLinear(model: Toy, coef: Map<Tensor, Tensor>): void {
  tidy(() => {
    let loss: Tensor | null = null;
    for (const [, p] of model.namedParameters()) {
      if (!p.requiresGrad) continue;
      const term = mul(p, coef.get(p)!).sum();
      loss = loss ? loss.add(term) : term;
    }
    loss!.backward();
  });
}

function values(t: Tensor): number[] {
  return Array.from(t.toArray() as ArrayLike<number | bigint>, Number);
}

/** Reference top-k: largest |x|, ties toward the lower index, returned sorted ascending. */
function refTopk(scores: number[], k: number): number[] {
  return scores
    .map((v, i) => [v, i] as [number, number])
    .sort((a, b) => b[0] - a[0] || a[1] - b[1])
    .slice(0, k)
    .map((x) => x[1])
    .sort((a, b) => a - b);
}

describe('targets', () => {
  test('lists match names or suffixes; regexes match whole paths; all-linear skips lm_head', () => {
    const m = new Toy(3);
    const a = new Sift(m, { sparseRate: 0.1, targetModules: ['layer1', 'head'], selection: { score: 'random' } });
    expect(a.targets.map((t) => t.name)).toEqual(['layer1.weight', 'layer1.bias', 'head.weight', 'head.bias']);
    a.dispose();
    const b = new Sift(m, { sparseRate: 0.1, targetModules: 'layer[02]', selection: { score: 'random' } });
    expect(b.targets.map((t) => t.name)).toEqual(['layer0.weight', 'layer0.bias', 'layer2.weight', 'layer2.bias']);
    b.dispose();
    const c = new Sift(m, { sparseRate: 0.1, targetModules: 'all-linear', denseModules: ['lm_head'], selection: { score: 'random' } });
    expect(c.targets.map((t) => t.name)).not.toContain('lm_head.weight');
    expect(c.dense.map(([n]) => n)).toEqual(['lm_head.weight']);
    const s = c.summary();
    expect(s.total).toBe(m.numParameters());
    expect(s.trainable).toBe(c.targets.reduce((acc, t) => acc + kForRate(0.1, t.numel), 0) + 24);
    c.dispose();
    expect(codeOf(() => new Sift(m, { sparseRate: 0.1, targetModules: ['nothing'] }))).toBe('E_ARG');
    expect(codeOf(() => new Sift(m, { sparseRate: 0.1, targetModules: ['head'], denseModules: 'head' }))).toBe('E_ARG');
    expect(codeOf(() => new Sift(m, { sparseRate: 0 }))).toBe('E_ARG');
    expect(codeOf(() => new Sift(m, { sparseRate: 0.1, targetModules: '(' }))).toBe('E_ARG');
    m.dispose();
  });

  test('k = min(floor(rate * numel) + 1, numel)', () => {
    expect(kForRate(0.008, 1000)).toBe(9);
    expect(kForRate(0.01, 100)).toBe(2);
    expect(kForRate(1, 5)).toBe(5);
    expect(kForRate(0.5, 1)).toBe(1);
  });
});

describe('selection and training', () => {
  test('top-|g| selection per tensor, sparse gradients gathered, dense ones freed', () => {
    const m = new Toy(2);
    const coef = coefficients(m, 7);
    const sift = new Sift(m, { sparseRate: 0.1, targetModules: ['layer0', 'layer1'], denseModules: ['head'] });
    expect(sift.needsGradients).toBe(true);
    backwardLinear(m, coef);
    sift.select();
    for (const t of sift.targets) {
      const c = values(coef.get(t.param)!).map(Math.abs);
      expect(values(t.idx!)).toEqual(refTopk(c, t.k));
      expect(t.param.grad).toBeNull();
    }
    // The selection batch was not applied and left no gradients behind.
    expect(m.head.weight.grad).toBeNull();
    backwardLinear(m, coef);
    for (const t of sift.targets) {
      const c = values(coef.get(t.param)!);
      expect(values(t.grad!)).toEqual(values(t.idx!).map((i) => Math.fround(c[i])));
      expect(t.param.grad).toBeNull();
    }
    expect(m.head.weight.grad).not.toBeNull(); // dense modules keep full gradients
    sift.dispose();
    m.dispose();
  });

  test('sparse AdamW steps equal dense AdamW on the selected entries; the rest never changes', () => {
    const m = new Toy(1);
    const coef = coefficients(m, 3);
    const sift = new Sift(m, { sparseRate: 0.2, targetModules: ['layer0'], denseModules: ['head'] });
    backwardLinear(m, coef);
    sift.select();
    const lr = 0.01,
      b1 = 0.9,
      b2 = 0.999,
      eps = 1e-8,
      wd = 0.1;
    const opt = new SparseAdamW(sift, { lr, betas: [b1, b2], eps, weightDecay: wd, maxGradNorm: 0 });
    const w0 = values(m.layers[0].weight);
    const idx = new Set(values(sift.targets[0].idx!));
    const g = values(coef.get(m.layers[0].weight)!).map(Math.fround);
    const ref = w0.slice();
    const mom = new Array(ref.length).fill(0),
      vel = new Array(ref.length).fill(0);
    for (let step = 1; step <= 4; step++) {
      backwardLinear(m, coef);
      opt.step();
      for (const i of idx) {
        ref[i] -= lr * wd * ref[i];
        mom[i] = b1 * mom[i] + (1 - b1) * g[i];
        vel[i] = b2 * vel[i] + (1 - b2) * g[i] * g[i];
        const denom = Math.sqrt(vel[i]) / Math.sqrt(1 - b2 ** step) + eps;
        ref[i] -= ((lr / (1 - b1 ** step)) * mom[i]) / denom;
      }
    }
    const w = values(m.layers[0].weight);
    for (let i = 0; i < w.length; i++) {
      if (idx.has(i)) expect(Math.abs(w[i] - ref[i])).toBeLessThan(1e-6);
      else expect(w[i]).toBe(w0[i]);
    }
    opt.dispose();
    sift.dispose();
    m.dispose();
  });

  test('global budget, fisher, magnitude and random scores', () => {
    const m = new Toy(2);
    const coef = coefficients(m, 11);
    const g = new Sift(m, { sparseRate: 0.05, targetModules: ['layer0', 'layer1'], selection: { scope: 'global' } });
    backwardLinear(m, coef);
    g.select();
    const all: [number, number, number][] = [];
    g.targets.forEach((t, ti) => values(coef.get(t.param)!).forEach((v, i) => all.push([Math.abs(v), ti, i])));
    all.sort((a, b) => b[0] - a[0] || a[1] - b[1] || a[2] - b[2]);
    const K = kForRate(0.05, all.length);
    g.targets.forEach((t, ti) => {
      expect(values(t.idx!)).toEqual(
        all
          .slice(0, K)
          .filter((x) => x[1] === ti)
          .map((x) => x[2])
          .sort((a, b) => a - b),
      );
    });
    expect(g.targets.reduce((a, t) => a + t.k, 0)).toBe(K);
    g.dispose();

    const f = new Sift(m, { sparseRate: 0.1, targetModules: ['layer0'], selection: { score: 'fisher', batches: 2 } });
    backwardLinear(m, coef);
    backwardLinear(m, coef);
    f.select();
    expect(values(f.targets[0].idx!)).toEqual(
      refTopk(
        values(coef.get(m.layers[0].weight)!).map((v) => 2 * v * v),
        f.targets[0].k,
      ),
    );
    f.dispose();

    const mag = new Sift(m, { sparseRate: 0.1, targetModules: ['layer1'], selection: { score: 'magnitude' } });
    expect(mag.selected).toBe(true);
    expect(values(mag.targets[0].idx!)).toEqual(refTopk(values(m.layers[1].weight).map(Math.abs), mag.targets[0].k));
    mag.dispose();

    const r1 = new Sift(m, { sparseRate: 0.1, targetModules: ['layer1'], selection: { score: 'random' }, seed: 5 });
    const r2 = new Sift(m, { sparseRate: 0.1, targetModules: ['layer1'], selection: { score: 'random' }, seed: 5 });
    expect(values(r1.targets[0].idx!)).toEqual(values(r2.targets[0].idx!));
    r1.dispose();
    r2.dispose();
    m.dispose();
  });

  test('NaN in a gradient score is E_NUMERIC naming the tensor', () => {
    const m = new Toy(1);
    const coef = coefficients(m, 1);
    const c = coef.get(m.layers[0].weight)!;
    const bad = values(c);
    bad[3] = NaN;
    coef.set(m.layers[0].weight, tensor(bad, c.shape));
    const sift = new Sift(m, { sparseRate: 0.1, targetModules: ['layer0'] });
    let err: SiftError | undefined;
    try {
      backwardLinear(m, coef);
    } catch (e) {
      err = e as SiftError;
    }
    expect(err?.code).toBe('E_NUMERIC');
    expect(err?.message).toContain('layer0.weight');
    sift.dispose();
    m.dispose();
  });

  test('backward over many targets keeps at most one dense weight gradient alive', () => {
    const m = new Toy(10);
    const coef = coefficients(m, 2);
    const sift = new Sift(m, { sparseRate: 0.1, targetModules: 'layer\\d+' });
    backwardLinear(m, coef);
    sift.select();
    // Wrap the hooks: record live bytes whenever a target's dense gradient arrives.
    let peak = 0;
    let base = 0;
    for (const t of sift.targets)
      t.param.registerGradHook(() => {
        peak = Math.max(peak, liveTensors().cpu.bytes - base);
      });
    tidy(() => {
      let loss: Tensor | null = null;
      for (const t of sift.targets) {
        const term = mul(t.param, coef.get(t.param)!).sum();
        loss = loss ? loss.add(term) : term;
      }
      base = liveTensors().cpu.bytes;
      loss!.backward();
    });
    // One 8x6 f32 gradient (192 bytes) at a time plus the seeds of the sums: far below ten.
    expect(peak).toBeLessThan(2 * 192 + 256);
    sift.dispose();
    m.dispose();
  });
});

describe('increment files', () => {
  function train(m: Toy, dtype: 'f32' | 'bf16' = 'f32'): Sift {
    const coef = coefficients(m, 5);
    const sift = new Sift(m, { sparseRate: 0.15, targetModules: ['layer0', 'layer1'], denseModules: ['head'] });
    backwardLinear(m, coef);
    sift.select();
    const opt = new SparseAdamW(sift, { lr: dtype === 'bf16' ? 0.05 : 0.01, weightDecay: 0.01, maxGradNorm: 1 });
    for (let i = 0; i < 3; i++) {
      backwardLinear(m, coef);
      opt.step();
    }
    opt.dispose();
    return sift;
  }

  for (const dtype of ['f32', 'bf16'] as const) {
    test(`base + increment reproduces the trained ${dtype} weights exactly; unmerge restores the base`, () => {
      const trained = new Toy(2, dtype);
      const sift = train(trained, dtype);
      const file = path.join(dir, `inc-${dtype}.safetensors`);
      saveIncrement(sift, file);
      const base = new Toy(2, dtype); // same seeds: the same base weights
      applyIncrement(base, file);
      for (const [[n, a], [, b]] of base.namedParameters().map((e, i) => [e, trained.namedParameters()[i]] as const)) {
        expect([n, values(a)]).toEqual([n, values(b)]);
      }
      // Applying twice is refused: the weights no longer match the base fingerprint.
      expect(codeOf(() => applyIncrement(base, file))).toBe('E_MISMATCH');
      unmergeIncrement(base, file);
      const fresh = new Toy(2, dtype);
      for (const [[n, a], [, b]] of base.namedParameters().map((e, i) => [e, fresh.namedParameters()[i]] as const)) {
        expect([n, values(a)]).toEqual([n, values(b)]);
      }
      const inc = loadIncrement(file);
      expect(inc.targets.get('layer0.weight')!.idx.dtype).toBe('i32');
      expect(inc.config.sparseRate).toBe(0.15);
      inc.dispose();
      sift.dispose();
      for (const x of [trained, base, fresh]) x.dispose();
    });
  }

  test('a different base is E_MISMATCH; truncated or corrupted files are E_FORMAT', () => {
    const trained = new Toy(2);
    const sift = train(trained);
    const file = path.join(dir, 'inc.safetensors');
    saveIncrement(sift, file);
    const other = new Toy(2);
    noGrad(() => other.layers[1].weight.addInplace(tensor(new Array(48).fill(1e-3), [6, 8])));
    expect(codeOf(() => applyIncrement(other, file))).toBe('E_MISMATCH');
    const bytes = fs.readFileSync(file);
    for (const cut of [3, 20, Math.floor(bytes.length / 2), bytes.length - 1]) {
      const p = path.join(dir, `cut-${cut}.safetensors`);
      fs.writeFileSync(p, bytes.subarray(0, cut));
      expect([cut, codeOf(() => loadIncrement(p))]).toEqual([cut, 'E_FORMAT']);
    }
    // Corrupt an index: out of range or out of order.
    const r = require('../../lib').SafetensorsReader.open(file);
    const info = r.info('layer0.weight.sift_idx');
    const start = 8 + Number(bytes.readBigUInt64LE(0)) + info.begin;
    r.close();
    const corrupt = Buffer.from(bytes);
    corrupt.writeInt32LE(1 << 30, start);
    const pc = path.join(dir, 'corrupt.safetensors');
    fs.writeFileSync(pc, corrupt);
    expect(codeOf(() => loadIncrement(pc))).toBe('E_FORMAT');
    sift.dispose();
    trained.dispose();
    other.dispose();
  });

  test('exactDelta makes base + delta round to the trained value', () => {
    const cases: [number, number][] = [
      [1, 1 + 2 ** -20],
      [1e-30, 0.5],
      [0.3, -0.7],
      [123.456, 123.45601],
      [0, 1e-40],
    ];
    for (const [b0, m0] of cases) {
      const b = Math.fround(b0),
        m = Math.fround(m0);
      expect(Math.fround(b + exactDelta(b, m))).toBe(m);
    }
  });
});

describe('schedules', () => {
  test('match transformers: warmup from 0, linear and cosine decay', () => {
    expect(lrMultiplier(0, { type: 'linear', warmupSteps: 10, totalSteps: 110 })).toBe(0);
    expect(lrMultiplier(5, { type: 'linear', warmupSteps: 10, totalSteps: 110 })).toBe(0.5);
    expect(lrMultiplier(60, { type: 'linear', warmupSteps: 10, totalSteps: 110 })).toBe(0.5);
    expect(lrMultiplier(110, { type: 'linear', warmupSteps: 10, totalSteps: 110 })).toBe(0);
    expect(lrMultiplier(60, { type: 'cosine', warmupSteps: 10, totalSteps: 110 })).toBeCloseTo(0.5, 12);
    expect(lrMultiplier(1000, { type: 'constant' })).toBe(1);
    expect(codeOf(() => lrMultiplier(0, { type: 'cosine' }))).toBe('E_ARG');
  });
});
