/**
 * The gradient proportion as a sampled measurement (trackGradProportion 'sampled'): the steps that
 * measure take the dense weight gradient, every other step the SDDMM. Against a run measuring at
 * every backward (trackGradProportion true, the dense gradient throughout): the same sparse
 * gradients on both paths, the same increment after a Trainer run (with and without gradient
 * accumulation), the same proportion at the end; and the SDDMM counted on the steps that do not
 * measure. Quantized targets switch the same way.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createModel, PreTrainedModel } from '../../lib/models';
import { Sift, SiftOptions } from '../../lib/sift/sift';
import { Trainer } from '../../lib/train/trainer';
import type { TrainerEvent, TrainerOptions } from '../../lib/train/types';
import { SiftError, manualSeed, tidy } from '../../lib';
import { settledCpuTensors } from '../helpers/live';
import { expectClose } from '../helpers/gradcheck';
import { tinyGpt2Classifier, tinyLlama } from '../helpers/tiny-configs';
import { toyClassRows, toyLmBatch } from '../helpers/toy-rows';

const llama = tinyLlama;
const batch = toyLmBatch;

const grads = (sift: Sift) => sift.targets.map((t) => Array.from(t.grad!.toArray() as Float32Array));

function expectSameGrads(got: number[][], want: number[][], names: string[]): void {
  got.forEach((g, i) => {
    const scale = Math.max(1e-30, ...want[i].map(Math.abs));
    expectClose(g, want[i], { atol: 1e-5 * scale, rtol: 1e-5, label: names[i] });
  });
}

describe.each<[string, Partial<SiftOptions>]>([
  ['f32 targets', {}],
  ['int8-quantized targets', { quantize: 'int8' }],
])('Sift with trackGradProportion sampled: %s', (_name, extra) => {
  test('measuring backwards take the dense gradient, the others the SDDMM, with the same sparse gradients', async () => {
    const before = await settledCpuTensors();
    const m: PreTrainedModel = createModel(llama, { task: 'causal-lm', seed: 5 });
    const sift = new Sift(m, { sparseRate: 0.05, denseModules: [], trackGradProportion: 'sampled', ...extra });
    const backward = (seed: number) => {
      manualSeed(seed);
      tidy(() => m.forward(batch(seed)).loss!.backward());
    };
    // Selection scores the dense gradient whatever the flag says.
    sift.measureGradProportion = false;
    backward(1);
    sift.select();
    const twoD = sift.targets.filter((t) => t.shape.length === 2).length;
    expect(twoD).toBeGreaterThan(0);
    expect(sift.targets.filter((t) => sift.usesSddmm(t)).length).toBe(twoD);
    expect(sift.gradientPaths()).toEqual({ sddmm: 0, dense: 0, sddmmTargets: twoD, targets: sift.targets.length });

    // A step that does not measure: the SDDMM for every 2-D target, two accumulated backwards.
    backward(2);
    backward(3);
    const viaSddmm = grads(sift);
    const p1 = sift.gradientPaths();
    expect(p1.sddmm).toBe(2 * twoD);
    expect(p1.dense).toBe(2 * (sift.targets.length - twoD));
    expect((await sift.gradProportions()).size).toBe(0);
    // The path is fixed for the whole step: switching between its backwards is refused.
    expect(() => (sift.measureGradProportion = true)).toThrow(SiftError);
    sift.zeroGrad();

    // A step that measures: the dense gradient for every target, and the proportion.
    sift.measureGradProportion = true;
    expect(sift.measureGradProportion).toBe(true);
    backward(2);
    backward(3);
    const viaDense = grads(sift);
    const p2 = sift.gradientPaths();
    expect(p2.sddmm).toBe(p1.sddmm);
    expect(p2.dense).toBe(p1.dense + 2 * sift.targets.length);
    expectSameGrads(
      viaSddmm,
      viaDense,
      sift.targets.map((t) => t.name),
    );
    const sampled = await sift.gradProportions();
    sift.zeroGrad();

    // Back to the SDDMM.
    sift.measureGradProportion = false;
    backward(4);
    expect(sift.gradientPaths().sddmm).toBe(p2.sddmm + twoD);
    sift.dispose();
    m.dispose();

    // The proportion equals the one measured at every backward (of the last backward: seed 3).
    const m2 = createModel(llama, { task: 'causal-lm', seed: 5 });
    const every = new Sift(m2, { sparseRate: 0.05, denseModules: [], trackGradProportion: true, ...extra });
    manualSeed(1);
    tidy(() => m2.forward(batch(1)).loss!.backward());
    every.select();
    expect(every.targets.filter((t) => every.usesSddmm(t)).length).toBe(0);
    expect(every.gradientPaths().sddmmTargets).toBe(0);
    for (const seed of [2, 3]) {
      manualSeed(seed);
      tidy(() => m2.forward(batch(seed)).loss!.backward());
    }
    expectSameGrads(
      grads(every),
      viaDense,
      every.targets.map((t) => t.name),
    );
    expect(every.measureGradProportion).toBe(true);
    expect(() => (every.measureGradProportion = false)).toThrow(/sampled/);
    const all = await every.gradProportions();
    expect([...sampled.keys()]).toEqual([...all.keys()]);
    for (const [name, v] of all) {
      expect(v).toBeGreaterThan(0);
      expect(sampled.get(name)!).toBeCloseTo(v, 5);
    }
    every.dispose();
    m2.dispose();
    expect(await settledCpuTensors()).toBe(before);
  });
});

test('trackGradProportion accepts only true, false and sampled', () => {
  const m = createModel(llama, { task: 'causal-lm', seed: 5 });
  expect(() => new Sift(m, { sparseRate: 0.05, trackGradProportion: 'always' as never })).toThrow(/trackGradProportion/);
  const s = new Sift(m, { sparseRate: 0.05 });
  expect(s.measureGradProportion).toBe(false);
  expect(() => (s.measureGradProportion = true)).toThrow(SiftError);
  s.dispose();
  m.dispose();
});

// ---- Trainer runs as the CLI makes them (sift, classify, the gradient proportion tracked)

const cls = tinyGpt2Classifier;

const rowsOf = (n: number) => toyClassRows(n, 3, 3);

const STEPS = 6;
const LR = 1e-2;

async function trainRun(track: TrainerOptions['trackGradProportion'], o: Partial<TrainerOptions> = {}) {
  const m = createModel(cls, { task: 'sequence-classification', seed: 7 });
  const t = new Trainer(m, null, {
    task: 'classify',
    method: 'sift',
    sift: { sparseRate: 0.1 },
    trackGradProportion: track,
    steps: STEPS,
    batchSize: 8,
    lr: LR,
    ...o,
  });
  const events: TrainerEvent[] = [];
  for await (const e of t.fit(rowsOf(48))) events.push(e);
  const paths = t.sift!.gradientPaths();
  const inc = t.sift!.targets.map((x) => {
    const w = tidy(() => Array.from(x.param.contiguous().toArray() as Float32Array));
    const base = Array.from(x.base!.toArray() as Float32Array);
    return Array.from(x.idx!.toArray() as Int32Array, (f, j) => w[f] - base[j]);
  });
  t.dispose();
  m.dispose();
  const done = events.find((e) => e.type === 'done') as Extract<TrainerEvent, { type: 'done' }>;
  const steps = events.filter((e) => e.type === 'step') as Extract<TrainerEvent, { type: 'step' }>[];
  return { inc, done, steps, paths };
}

function expectSameIncrement(got: number[][], want: number[][]): void {
  expect(got.length).toBe(want.length);
  // As in sparse-gradient.test.ts: AdamW normalises each entry's update, so an entry whose gradient
  // stays near zero can move by up to lr per step on a rounding difference between the paths.
  const all = got.flat();
  const ref = want.flat();
  const off = all.filter((v, i) => Math.abs(v - ref[i]) > 1e-4 + 1e-3 * Math.abs(ref[i])).length;
  expect(off).toBeLessThanOrEqual(Math.max(1, Math.ceil(0.02 * all.length)));
  all.forEach((v, i) => expect(Math.abs(v - ref[i])).toBeLessThanOrEqual(2 * LR * STEPS));
}

function expectSameProportion(got: Record<string, number>, want: Record<string, number>): void {
  expect(Object.keys(got)).toEqual(Object.keys(want));
  for (const [name, v] of Object.entries(want)) {
    expect(v).toBeGreaterThan(0);
    expect(Math.abs(got[name] - v)).toBeLessThanOrEqual(1e-3 + 2e-2 * v);
  }
}

describe.each([1, 2])('Trainer, gradAccum %i', (gradAccum) => {
  test("'sampled' gives the all-dense run's increment and final proportion, with the SDDMM on the steps that do not measure", async () => {
    const before = await settledCpuTensors();
    const dense = await trainRun(true, { gradAccum });
    const sampled = await trainRun('sampled', { gradAccum });
    const targets = dense.paths.targets;
    expect(dense.done.sparseGradient).toEqual({ path: 'dense', targets, sddmmTargets: 0, sddmmSteps: 0, denseSteps: STEPS });
    expect(dense.paths.sddmm).toBe(0);
    // Steps 1..5 through the SDDMM, the last (measured) step dense.
    const sg = sampled.done.sparseGradient!;
    expect(sg.path).toBe('sddmm');
    expect(sg.sddmmTargets).toBeGreaterThan(0);
    expect(sg).toEqual({ path: 'sddmm', targets, sddmmTargets: sg.sddmmTargets, sddmmSteps: STEPS - 1, denseSteps: 1 });
    expect(sampled.paths.sddmm).toBe((STEPS - 1) * gradAccum * sg.sddmmTargets);
    expect(sampled.done.gradProportionStep).toBe(STEPS);
    expect(dense.done.gradProportionStep).toBeUndefined();
    expectSameIncrement(sampled.inc, dense.inc);
    expectSameProportion(sampled.done.gradProportion!, dense.done.gradProportion!);
    // Only the last step measured: its step event carries the mean.
    expect(sampled.steps.filter((e) => e.meanGradProportion !== undefined).map((e) => e.step)).toEqual([STEPS]);
    expect(await settledCpuTensors()).toBe(before);
  }, 180000);
});

test('gradProportionEvery: those steps measure (their step events carry the mean proportion) and take the dense gradient', async () => {
  const r = await trainRun('sampled', { gradProportionEvery: 2, logEvery: 5 });
  // Steps 2, 4, 6 measure (6 is the last); 5 logs without measuring.
  expect(r.steps.map((e) => [e.step, e.meanGradProportion !== undefined])).toEqual([
    [2, true],
    [4, true],
    [5, false],
    [6, true],
  ]);
  for (const e of r.steps) if (e.meanGradProportion !== undefined) expect(e.meanGradProportion).toBeGreaterThan(0);
  const props = Object.values(r.done.gradProportion!);
  expect(r.steps[3].meanGradProportion).toBeCloseTo(props.reduce((a, b) => a + b, 0) / props.length, 6);
  expect(r.done.sparseGradient).toMatchObject({ path: 'sddmm', sddmmSteps: 3, denseSteps: 3 });
  const m = createModel(cls, { task: 'sequence-classification', seed: 7 });
  expect(() => new Trainer(m, null, { task: 'classify', gradProportionEvery: -1 })).toThrow(/gradProportionEvery/);
  expect(() => new Trainer(m, null, { task: 'classify', trackGradProportion: 'some' as never })).toThrow(/trackGradProportion/);
  m.dispose();
}, 120000);

// ---- a run that ends elsewhere than after its last step

/** A sift Trainer as in trainRun, and its increment (trained values minus base, per target). */
function siftTrainer(o: Partial<TrainerOptions> = {}) {
  const m = createModel(cls, { task: 'sequence-classification', seed: 7 });
  const t = new Trainer(m, null, {
    task: 'classify',
    method: 'sift',
    sift: { sparseRate: 0.1 },
    trackGradProportion: 'sampled',
    steps: 4,
    batchSize: 8,
    lr: LR,
    ...o,
  });
  const increment = () =>
    t.sift!.targets.map((x) => {
      const w = tidy(() => Array.from(x.param.contiguous().toArray() as Float32Array));
      const base = Array.from(x.base!.toArray() as Float32Array);
      return Array.from(x.idx!.toArray() as Int32Array, (f, j) => w[f] - base[j]);
    });
  const dispose = () => {
    t.dispose();
    m.dispose();
  };
  return { t, increment, dispose };
}

test('a caller that stops reading after a measured step leaves the SDDMM on', async () => {
  const r = siftTrainer({ gradProportionEvery: 2 });
  for await (const e of r.t.fit(rowsOf(48))) if (e.type === 'step' && e.step === 2) break;
  expect(r.t.sift!.measureGradProportion).toBe(false);
  r.dispose();
}, 60000);

test('an error halfway through a measured step: the SDDMM again, and a new fit runs that step from its start', async () => {
  const clean = siftTrainer({ gradProportionEvery: 2, gradAccum: 2 });
  for await (const e of clean.t.fit(rowsOf(48))) void e;
  const want = clean.increment();
  clean.dispose();

  const r = siftTrainer({ gradProportionEvery: 2, gradAccum: 2 });
  const trainer = r.t as unknown as { microBatch: (...a: unknown[]) => unknown };
  const microBatch = trainer.microBatch.bind(r.t);
  // Selection takes the first call; step 1 the next two; step 2 (measured) fails in its second micro-batch.
  let calls = 0;
  trainer.microBatch = (...a: unknown[]) => {
    if (++calls === 5) throw new Error('injected failure');
    return microBatch(...a);
  };
  await expect(
    (async () => {
      for await (const e of r.t.fit(rowsOf(48))) void e;
    })(),
  ).rejects.toThrow('injected failure');
  expect(r.t.sift!.measureGradProportion).toBe(false);
  const events: TrainerEvent[] = [];
  for await (const e of r.t.fit(rowsOf(48))) events.push(e);
  const done = events.find((e) => e.type === 'done') as Extract<TrainerEvent, { type: 'done' }>;
  // Steps 2 to 4 in the second fit: 2 and 4 measured.
  expect(done.sparseGradient).toMatchObject({ path: 'sddmm', sddmmSteps: 1, denseSteps: 2 });
  expect(r.increment()).toEqual(want);
  r.dispose();
}, 120000);

test('a resumed run that has no step left reports no gradient path', async () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-sampled-'));
  try {
    const a = siftTrainer({ outDir: out });
    for await (const e of a.t.fit(rowsOf(48))) void e;
    a.dispose();
    const b = siftTrainer({ outDir: out, resume: true });
    const events: TrainerEvent[] = [];
    for await (const e of b.t.fit(rowsOf(48))) events.push(e);
    b.dispose();
    const done = events.find((e) => e.type === 'done') as Extract<TrainerEvent, { type: 'done' }>;
    expect(done.step).toBe(4);
    expect(done.sparseGradient).toBeUndefined();
    expect(done.gradProportion).toBeUndefined();
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
}, 120000);

test('with early stopping each evaluated step measures, so a run stopped at an evaluation reports that step', async () => {
  const r = siftTrainer({ steps: 6, evalEvery: 2, metricForBest: 'eval_loss', earlyStoppingPatience: 100, logEvery: 5 });
  const steps: number[] = [];
  let done: Extract<TrainerEvent, { type: 'done' }> | undefined;
  for await (const e of r.t.fit(rowsOf(48), rowsOf(16))) {
    if (e.type === 'step' && e.meanGradProportion !== undefined) steps.push(e.step);
    if (e.type === 'done') done = e;
  }
  expect(steps).toEqual([2, 4, 6]);
  expect(done!.gradProportionStep).toBe(6);
  expect(done!.sparseGradient).toMatchObject({ path: 'sddmm', sddmmSteps: 3, denseSteps: 3 });
  r.dispose();
}, 60000);
