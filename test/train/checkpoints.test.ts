/**
 * The Trainer's run-survival features on a tiny classifier: numbered checkpoints with a limit,
 * the best result by an eval metric (kept from the limit, saved to OUT/best/), early stopping,
 * E_NUMERIC on a diverging run (no checkpoint after the bad step), warmupRatio in the schedule.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createModel } from '../../lib';
import { settledCpuTensors } from '../helpers/live';
import { tinyGpt2Classifier } from '../helpers/tiny-configs';
import { toyClassRows } from '../helpers/toy-rows';
import { Trainer, listCheckpoints } from '../../lib/train/trainer';
import { lrMultiplier } from '../../lib/sift/schedule';
import type { TrainerEvent, TrainerOptions, Row } from '../../lib/train/types';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-ckpt-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const cfg = tinyGpt2Classifier;

const train = toyClassRows(48, 1);
const evalRows = toyClassRows(16, 2);

async function runFit(opts: TrainerOptions, evalData?: Row[]): Promise<{ events: TrainerEvent[]; error?: unknown }> {
  const m = createModel(cfg, { task: 'sequence-classification', seed: 7 });
  const t = new Trainer(m, null, opts);
  const events: TrainerEvent[] = [];
  try {
    for await (const e of t.fit(train, evalData)) events.push(e);
    return { events };
  } catch (error) {
    return { events, error };
  } finally {
    t.dispose();
    m.dispose();
  }
}

const evals = (ev: TrainerEvent[]) => ev.filter((e): e is Extract<TrainerEvent, { type: 'eval' }> => e.type === 'eval');

test('numbered checkpoints, --save-total-limit, and the best one kept and saved', async () => {
  const out = path.join(dir, 'best');
  const { events, error } = await runFit(
    {
      task: 'classify',
      method: 'sift',
      sift: { sparseRate: 0.2 },
      steps: 8,
      batchSize: 8,
      lr: 5e-2,
      seed: 3,
      evalEvery: 1,
      checkpointEvery: 1,
      saveTotalLimit: 2,
      metricForBest: 'eval_loss',
      outDir: out,
    },
    evalRows,
  );
  expect(error).toBeUndefined();
  const losses = evals(events).map((e) => e.metrics.loss!);
  expect(losses.length).toBe(8);
  const bestStep = losses.indexOf(Math.min(...losses)) + 1;
  const done = events[events.length - 1] as Extract<TrainerEvent, { type: 'done' }>;
  expect(done.best).toMatchObject({ step: bestStep, metric: 'loss', value: Math.min(...losses) });
  const state = JSON.parse(fs.readFileSync(path.join(out, 'trainer_state.json'), 'utf8'));
  expect(state.latest).toBe('checkpoint-8');
  expect(state.best).toMatchObject({ step: bestStep, checkpoint: `checkpoint-${bestStep}`, greaterIsBetter: false });
  // The newest two, and the best one besides them.
  const kept = listCheckpoints(out).map((c) => c.name);
  const expected = [...new Set([`checkpoint-${bestStep}`, 'checkpoint-7', 'checkpoint-8'])].sort();
  expect(kept.sort()).toEqual(expected);
  expect(state.checkpoints.sort()).toEqual(expected);
  expect(fs.existsSync(path.join(out, 'best', 'delta.safetensors'))).toBe(true);
});

test('early stopping after N evaluations without improvement (greater is better for accuracy)', async () => {
  const out = path.join(dir, 'early');
  // lr 0: nothing improves after the first evaluation.
  const { events, error } = await runFit(
    {
      task: 'classify',
      method: 'full',
      steps: 20,
      batchSize: 8,
      lr: 1e-12,
      seed: 3,
      evalEvery: 2,
      metricForBest: 'accuracy',
      earlyStoppingPatience: 2,
      outDir: out,
    },
    evalRows,
  );
  expect(error).toBeUndefined();
  const done = events[events.length - 1] as Extract<TrainerEvent, { type: 'done' }>;
  expect(done).toMatchObject({ stoppedEarly: true, step: 6, best: { step: 2, metric: 'accuracy' } });
  expect(evals(events).map((e) => e.step)).toEqual([2, 4, 6]);
  expect(JSON.parse(fs.readFileSync(path.join(out, 'trainer_state.json'), 'utf8')).best).toMatchObject({
    greaterIsBetter: true,
    evalsWithoutImprovement: 2,
  });
  expect(fs.existsSync(path.join(out, 'best', 'model.safetensors'))).toBe(true);
});

test('a metric the task does not report is an error before training, naming the ones it has', async () => {
  const { events, error } = await runFit(
    { task: 'classify', method: 'full', steps: 2, batchSize: 8, evalEvery: 1, metricForBest: 'bleu' },
    evalRows,
  );
  expect(error).toMatchObject({ code: 'E_ARG', message: expect.stringContaining('accuracy, f1, mcc') });
  expect(events).toEqual([]);
  const noEval = await runFit({ task: 'classify', method: 'full', steps: 2, batchSize: 8, metricForBest: 'loss' });
  expect(noEval.error).toMatchObject({ code: 'E_ARG', message: expect.stringContaining('needs evaluation data') });
});

test('a diverging run stops with E_NUMERIC naming the step; no checkpoint after it', async () => {
  const out = path.join(dir, 'nan');
  const { events, error } = await runFit({
    task: 'classify',
    method: 'full',
    steps: 10,
    batchSize: 8,
    lr: 1e30,
    maxGradNorm: 0,
    seed: 3,
    checkpointEvery: 1,
    outDir: out,
  });
  expect(error).toMatchObject({ code: 'E_NUMERIC' });
  const msg = (error as Error).message;
  const step = Number(/at step (\d+)/.exec(msg)![1]);
  expect(step).toBeGreaterThan(1);
  for (const e of events) if (e.type === 'step') expect(Number.isFinite(e.loss) && Number.isFinite(e.gradNorm!)).toBe(true);
  expect(listCheckpoints(out).map((c) => c.step)).toEqual(Array.from({ length: step - 1 }, (_, i) => i + 1));
  expect(msg).toContain(`checkpoint-${step - 1}`);
  expect(events.some((e) => e.type === 'done')).toBe(false);
});

test('a run that logs every 5th step and diverges between: E_NUMERIC names the step it diverged at, nothing is written', async () => {
  const diverge = { task: 'classify', method: 'full', steps: 10, batchSize: 8, lr: 1e30, maxGradNorm: 0, seed: 3 } as const;
  // Read at once (no asynchronous waits): the step where the loss or gradient norm went non-finite.
  const eager = await runFit({ ...diverge, asyncWaits: false });
  const step = Number(/at step (\d+)/.exec((eager.error as Error).message)![1]);
  expect(step % 5).not.toBe(0); // a step that logs nothing: read one step late
  const out = path.join(dir, 'nan-late');
  const live = await settledCpuTensors();
  const { events, error } = await runFit({ ...diverge, logEvery: 5, outDir: out });
  expect(error).toMatchObject({ code: 'E_NUMERIC' });
  // The step running when the late read failed is freed too (its loss and gradient norm).
  expect(await settledCpuTensors()).toBe(live);
  expect((error as Error).message).toContain(`at step ${step} of 10`);
  expect((error as Error).message).toContain('no checkpoint was written before it');
  // No checkpoint, no best/, no trainer state: only the (empty) log.
  expect(fs.readdirSync(out)).toEqual(['log.jsonl']);
  expect(fs.readFileSync(path.join(out, 'log.jsonl'), 'utf8')).toBe('');
  expect(events.filter((e) => e.type === 'step')).toEqual([]);
});

test('warmupRatio: ceil(ratio x total) warmup steps, warmupSteps overrides it', async () => {
  const lrs = async (o: Partial<TrainerOptions>) =>
    (await runFit({ task: 'classify', method: 'full', steps: 10, batchSize: 8, lr: 1, lrSchedule: 'linear', ...o })).events
      .filter((e): e is Extract<TrainerEvent, { type: 'step' }> => e.type === 'step')
      .map((e) => e.lr);
  const expected = (warm: number) =>
    Array.from({ length: 10 }, (_, s) => lrMultiplier(s, { type: 'linear', warmupSteps: warm, totalSteps: 10 }));
  const a = await lrs({ warmupRatio: 0.25 });
  expect(a.map((x) => +x.toFixed(12))).toEqual(expected(3).map((x) => +x.toFixed(12)));
  expect(a[0]).toBe(0);
  const b = await lrs({ warmupRatio: 0.25, warmupSteps: 5 });
  expect(b.map((x) => +x.toFixed(12))).toEqual(expected(5).map((x) => +x.toFixed(12)));
});

test('a run without resume starts over: checkpoints of an earlier run in outDir are removed', async () => {
  const out = path.join(dir, 'again');
  await runFit(
    { task: 'classify', method: 'full', steps: 4, batchSize: 8, checkpointEvery: 1, evalEvery: 2, metricForBest: 'loss', outDir: out },
    evalRows,
  );
  expect(listCheckpoints(out).map((c) => c.step)).toEqual([1, 2, 3, 4]);
  expect(fs.existsSync(path.join(out, 'best'))).toBe(true);
  const { error } = await runFit({ task: 'classify', method: 'full', steps: 2, batchSize: 8, outDir: out });
  expect(error).toBeUndefined();
  expect(listCheckpoints(out).map((c) => c.step)).toEqual([2]);
  expect(fs.existsSync(path.join(out, 'best'))).toBe(false);
  expect(JSON.parse(fs.readFileSync(path.join(out, 'trainer_state.json'), 'utf8'))).toEqual({
    latest: 'checkpoint-2',
    checkpoints: ['checkpoint-2'],
    best: null,
  });
});

test('a bad reportTo is refused before outDir is touched, and a failed start leaves the Trainer usable', async () => {
  const out = path.join(dir, 'keep');
  await runFit({ task: 'classify', method: 'full', steps: 2, batchSize: 8, checkpointEvery: 1, outDir: out });
  const log = fs.readFileSync(path.join(out, 'log.jsonl'), 'utf8');
  expect(listCheckpoints(out).map((c) => c.step)).toEqual([1, 2]);
  const { error } = await runFit({ task: 'classify', method: 'full', steps: 2, batchSize: 8, outDir: out, reportTo: 'wandb' as never });
  expect(error).toMatchObject({ code: 'E_ARG' });
  // Nothing of the earlier run was deleted or truncated by the refused one.
  expect(listCheckpoints(out).map((c) => c.step)).toEqual([1, 2]);
  expect(fs.readFileSync(path.join(out, 'log.jsonl'), 'utf8')).toBe(log);

  // outDir under a regular file: the start fails with E_IO, every time (not 'fit() is already running').
  const blocker = path.join(dir, 'a-file');
  fs.writeFileSync(blocker, 'x');
  const m = createModel(cfg, { task: 'sequence-classification', seed: 7 });
  const t = new Trainer(m, null, {
    task: 'classify',
    method: 'full',
    steps: 1,
    batchSize: 8,
    outDir: path.join(blocker, 'run'),
    reportTo: 'tensorboard',
  });
  try {
    for (let i = 0; i < 2; i++) {
      let err: unknown;
      try {
        for await (const e of t.fit(train)) void e;
      } catch (e) {
        err = e;
      }
      expect(err).toMatchObject({ code: 'E_IO' });
    }
  } finally {
    t.dispose();
    m.dispose();
  }
});

test("metricForBest is checked against the chat task's metrics before training", async () => {
  const lm = createModel({ ...cfg, num_labels: undefined }, { task: 'causal-lm', seed: 7 });
  const chatRows: Row[] = train.map((r) => ({ input_ids: r.input_ids }));
  try {
    for (const [metric, ok] of [
      ['accuracy', false],
      ['eval_perplexity', true],
    ] as const) {
      const t = new Trainer(lm, null, { task: 'chat', method: 'full', steps: 1, batchSize: 8, evalEvery: 1, metricForBest: metric });
      const events: TrainerEvent[] = [];
      let error: unknown;
      try {
        for await (const e of t.fit(chatRows, chatRows.slice(0, 8))) events.push(e);
      } catch (e) {
        error = e;
      } finally {
        t.dispose();
      }
      if (ok) {
        expect(error).toBeUndefined();
        expect(evals(events).length).toBeGreaterThan(0);
      } else {
        expect(error).toMatchObject({ code: 'E_ARG', message: expect.stringMatching(/task chat reports loss, perplexity/) });
        expect(events.filter((e) => e.type === 'step')).toEqual([]);
      }
    }
  } finally {
    lm.dispose();
  }
});
