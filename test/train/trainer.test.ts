import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  createModel,
  createByteTokenizer,
  HFConfig,
  SiftError,
  tidy,
  noGrad,
  loadModelFolder,
  loadStateDictInto,
  loadSafetensors,
  loadIncrement,
} from '../../lib';
import { Trainer } from '../../lib/train/trainer';
import { describeCuda } from '../helpers/gradcheck';
import { toyClassRows } from '../helpers/toy-rows';
import type { TrainerEvent, TrainerOptions, Row } from '../../lib/train/types';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-trainer-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const noDrop = { embd_pdrop: 0, attn_pdrop: 0, resid_pdrop: 0 };
const cls: HFConfig = {
  model_type: 'gpt2',
  vocab_size: 12,
  n_positions: 16,
  n_embd: 16,
  n_layer: 1,
  n_head: 2,
  num_labels: 2,
  pad_token_id: 0,
  initializer_range: 0.2,
};

const train = toyClassRows(48, 1);
const evalRows = toyClassRows(16, 2);

function model(cfg: HFConfig = { ...cls, ...noDrop }, seed = 7) {
  return createModel(cfg, { task: 'sequence-classification', seed });
}

async function run(t: Trainer, rows: Row[], evalData?: Row[], onEvent?: (e: TrainerEvent) => void): Promise<TrainerEvent[]> {
  const out: TrainerEvent[] = [];
  for await (const e of t.fit(rows, evalData)) {
    out.push(e);
    onEvent?.(e);
  }
  return out;
}

const stepLosses = (ev: TrainerEvent[]) =>
  ev.filter((e): e is Extract<TrainerEvent, { type: 'step' }> => e.type === 'step').map((e) => e.loss);
const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;

describe('Trainer methods learn a tiny task', () => {
  const base: TrainerOptions = { task: 'classify', steps: 30, batchSize: 8, lr: 2e-2, seed: 3, lrSchedule: 'constant' };
  for (const [method, extra] of [
    ['sift', { sift: { sparseRate: 0.2 }, trackGradProportion: true }],
    ['random-sparse', { sift: { sparseRate: 0.2 } }],
    ['full', {}],
    ['lora', { lora: { rank: 4, alpha: 8 } }],
  ] as [TrainerOptions['method'], Partial<TrainerOptions>][]) {
    test(`${method}`, async () => {
      const m = model();
      const t = new Trainer(m, null, { ...base, ...extra, method });
      const ev = await run(t, train, evalRows);
      const losses = stepLosses(ev);
      expect(losses.length).toBe(30);
      expect(mean(losses.slice(-5))).toBeLessThan(mean(losses.slice(0, 5)) * 0.8);
      const done = ev[ev.length - 1];
      expect(done.type).toBe('done');
      if (done.type !== 'done') return;
      expect(done.step).toBe(30);
      expect(done.peakMemoryBytes).toBeGreaterThan(0);
      expect(done.trainable).toBeGreaterThan(0);
      expect(done.trainable).toBeLessThanOrEqual(done.total);
      expect(done.metrics?.accuracy).toBeDefined();
      if (method === 'sift') {
        expect(ev[0]).toMatchObject({ type: 'selection', batches: 1 });
        expect(Object.keys(done.gradProportion ?? {}).length).toBeGreaterThan(0);
        for (const v of Object.values(done.gradProportion!)) {
          expect(v).toBeGreaterThan(0);
          expect(v).toBeLessThanOrEqual(1 + 1e-6);
        }
        expect(t.sift).toBeDefined();
        // The classification head is trained densely by default.
        expect(t.sift!.dense.map(([n]) => n)).toEqual(['score.weight']);
      }
      if (method === 'random-sparse') expect(ev[0]).toMatchObject({ type: 'selection', batches: 0 });
      if (method === 'full') expect(done.trainable).toBe(done.total);
      const step = ev.find((e) => e.type === 'step');
      expect(step).toMatchObject({ totalSteps: 30 });
      if (step?.type === 'step') {
        expect(step.tokensPerSec).toBeGreaterThan(0);
        expect(step.etaSec).toBeGreaterThanOrEqual(0);
        expect(step.gradNorm).toBeGreaterThan(0);
      }
      t.dispose();
      m.dispose();
    });
  }
});

test('gradient accumulation: 2 micro-batches of 1 give the update of 1 micro-batch of 2', async () => {
  const rows = toyClassRows(6, 9);
  const results: Float32Array[] = [];
  const losses: number[][] = [];
  for (const [batchSize, gradAccum] of [
    [2, 1],
    [1, 2],
  ]) {
    const m = model();
    // A large eps makes AdamW's update proportional to the gradient: sign(g) of gradients that are
    // float noise around 0 would otherwise turn rounding differences into full-size updates.
    const t = new Trainer(m, null, {
      task: 'classify',
      method: 'full',
      steps: 3,
      batchSize,
      gradAccum,
      lr: 0.1,
      eps: 1,
      shuffle: false,
      seed: 1,
    });
    losses.push(stepLosses(await run(t, rows)));
    results.push(noGrad(() => Float32Array.from(m.parameters().flatMap((p) => Array.from(p.toArray() as Float32Array)))));
    t.dispose();
    m.dispose();
  }
  for (let i = 0; i < 3; i++) expect(losses[1][i]).toBeCloseTo(losses[0][i], 5);
  let d = 0;
  for (let i = 0; i < results[0].length; i++) d = Math.max(d, Math.abs(results[0][i] - results[1][i]));
  expect(d).toBeLessThan(1e-6);
});

describe('resume', () => {
  for (const method of ['sift', 'full', 'lora'] as const) {
    test(`${method}: 3 steps, stop, resume 3 more == 6 uninterrupted (exact losses, with dropout and shuffling)`, async () => {
      const cfg = { ...cls, embd_pdrop: 0.1, attn_pdrop: 0.1, resid_pdrop: 0.1 };
      const opts: TrainerOptions = {
        task: 'classify',
        method,
        steps: 6,
        batchSize: 4,
        gradAccum: 2,
        lr: 1e-2,
        seed: 11,
        warmupSteps: 2,
        sift: { sparseRate: 0.1 },
        lora: { rank: 2, dropout: 0.1 },
      };
      const m1 = model(cfg);
      const t1 = new Trainer(m1, null, { ...opts, outDir: path.join(dir, `full-${method}`) });
      const whole = stepLosses(await run(t1, train));
      t1.dispose();
      m1.dispose();

      const out = path.join(dir, `resumed-${method}`);
      const ctl = new AbortController();
      const m2 = model(cfg);
      const t2 = new Trainer(m2, null, { ...opts, outDir: out, signal: ctl.signal });
      const first = await run(t2, train, undefined, (e) => {
        if (e.type === 'step' && e.step === 3) ctl.abort();
      });
      expect(first[first.length - 1]).toMatchObject({ type: 'done', step: 3, interrupted: true });
      expect(fs.existsSync(path.join(out, 'checkpoint-3', 'state.safetensors'))).toBe(true);
      expect(JSON.parse(fs.readFileSync(path.join(out, 'checkpoint-3', 'trainer.json'), 'utf8'))).toMatchObject({ step: 3, method });
      t2.dispose();
      m2.dispose();

      const m3 = model(cfg);
      const t3 = new Trainer(m3, null, { ...opts, outDir: out, resume: true });
      const rest = await run(t3, train);
      t3.dispose();
      m3.dispose();
      expect([...stepLosses(first), ...stepLosses(rest)]).toEqual(whole);
      // log.jsonl: one JSON line per event, across both runs.
      const lines = fs
        .readFileSync(path.join(out, 'log.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      expect(lines.length).toBe(first.length + rest.length);
      expect(lines.filter((l) => l.type === 'step').map((l) => l.loss)).toEqual(whole);
    });
  }

  test('a checkpoint from another configuration is refused', async () => {
    const out = path.join(dir, 'mismatch');
    const m = model();
    const t = new Trainer(m, null, { task: 'classify', method: 'full', steps: 1, batchSize: 4, outDir: out });
    await run(t, train);
    t.dispose();
    const t2 = new Trainer(m, null, { task: 'classify', method: 'full', steps: 2, batchSize: 4, outDir: out, resume: true });
    await expect(run(t2, train)).rejects.toMatchObject({ code: 'E_MISMATCH' });
    t2.dispose();
    m.dispose();
  });
});

test('abort before the first step still ends with done; the event loop stays responsive', async () => {
  const m = model();
  const ctl = new AbortController();
  let ticks = 0;
  const timer = setInterval(() => ticks++, 0);
  const t = new Trainer(m, null, { task: 'classify', method: 'full', steps: 40, batchSize: 8, signal: ctl.signal, logEvery: 5 });
  const ev = await run(t, train, undefined, (e) => {
    if (e.type === 'step' && e.step === 20) ctl.abort();
  });
  clearInterval(timer);
  expect(ev.filter((e) => e.type === 'step').map((e) => (e as { step: number }).step)).toEqual([5, 10, 15, 20]);
  expect(ev[ev.length - 1]).toMatchObject({ type: 'done', step: 20 });
  expect(ticks).toBeGreaterThan(3);
  const ctl2 = new AbortController();
  ctl2.abort();
  const t2 = new Trainer(m, null, { task: 'classify', method: 'full', steps: 5, signal: ctl2.signal });
  const ev2 = await run(t2, train);
  expect(ev2.map((e) => e.type)).toEqual(['done']);
  t.dispose();
  t2.dispose();
  m.dispose();
});

test('evaluation every N steps, and evaluate()', async () => {
  const m = model();
  const t = new Trainer(m, null, { task: 'classify', method: 'full', steps: 4, evalEvery: 2, batchSize: 8, lr: 1e-2 });
  const ev = await run(t, train, evalRows);
  expect(ev.filter((e) => e.type === 'eval').map((e) => e.step)).toEqual([2, 4]);
  const metrics = await t.evaluate(evalRows);
  expect(metrics.examples).toBe(16);
  for (const k of ['loss', 'accuracy', 'f1', 'mcc'] as const) expect(Number.isFinite(metrics[k])).toBe(true);
  t.dispose();
  m.dispose();
});

describe('saving', () => {
  const tok = createByteTokenizer();
  const textRows: Row[] = [
    { sentence: 'good fun', label: 'pos' },
    { sentence: 'bad', label: 'neg' },
    { sentence: 'great', label: 'pos' },
    { sentence: 'awful mess', label: 'neg' },
  ];
  const bytes: HFConfig = {
    model_type: 'gpt2',
    vocab_size: 258,
    n_positions: 32,
    n_embd: 16,
    n_layer: 1,
    n_head: 2,
    num_labels: 2,
    pad_token_id: 257,
    ...noDrop,
  };

  function logits(mm: ReturnType<typeof createModel>): number[] {
    return tidy(() => noGrad(() => Array.from(mm.forward({ inputIds: [[103, 111, 111, 100]] }).logits.toArray() as Float32Array)));
  }

  test('sift: delta.safetensors; saveMerged writes a folder with labels and tokenizer that reloads', async () => {
    const m = createModel(bytes, { task: 'sequence-classification', seed: 1 });
    const t = new Trainer(m, tok, { task: 'classify', steps: 3, batchSize: 2, lr: 1e-2, sift: { sparseRate: 0.05 } });
    await run(t, textRows);
    expect(t.task.labels).toEqual(['neg', 'pos']);
    const out = path.join(dir, 'save-sift');
    t.save(out);
    const inc = loadIncrement(path.join(out, 'delta.safetensors'));
    expect(inc.metadata.task).toBe('classify');
    inc.dispose();
    t.saveMerged(path.join(out, 'model'));
    const folder = loadModelFolder(path.join(out, 'model'));
    expect(folder.config.id2label).toEqual({ 0: 'neg', 1: 'pos' });
    expect(fs.existsSync(path.join(out, 'model', 'tokenizer.json'))).toBe(true);
    const m2 = createModel(folder.config, { task: 'sequence-classification' });
    loadStateDictInto(m2, folder.stateDict);
    for (const x of folder.stateDict.values()) x.dispose();
    expect(logits(m2)).toEqual(logits(m));
    t.dispose();
    m.dispose();
    m2.dispose();
  });

  test('lora: adapter file with the dense head; merged folder equals the adapted model', async () => {
    const m = createModel(bytes, { task: 'sequence-classification', seed: 1 });
    const t = new Trainer(m, tok, { task: 'classify', method: 'lora', steps: 3, batchSize: 2, lr: 1e-2, lora: { rank: 2 } });
    await run(t, textRows);
    const out = path.join(dir, 'save-lora');
    t.save(out);
    const { tensors } = loadSafetensors(path.join(out, 'adapter_model.safetensors'));
    expect([...tensors.keys()]).toContain('base_model.model.score.weight');
    expect([...tensors.keys()]).toContain('base_model.model.transformer.h.0.attn.c_attn.lora_A.weight');
    for (const x of tensors.values()) x.dispose();
    // As PEFT: the head is listed in modules_to_save, so PEFT wraps and loads it too.
    expect(JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8')).modules_to_save).toEqual(['score']);
    const adapted = logits(m);
    t.saveMerged(path.join(out, 'model'));
    // Merging for the save leaves the trained model as it was.
    expect(logits(m)).toEqual(adapted);
    const folder = loadModelFolder(path.join(out, 'model'));
    const m2 = createModel(folder.config, { task: 'sequence-classification' });
    loadStateDictInto(m2, folder.stateDict);
    for (const x of folder.stateDict.values()) x.dispose();
    const merged = logits(m2);
    merged.forEach((v, i) => expect(v).toBeCloseTo(adapted[i], 4));
    t.dispose();
    m.dispose();
    m2.dispose();
  });

  test('full: a model folder in outDir', async () => {
    const m = createModel(bytes, { task: 'sequence-classification', seed: 1 });
    const t = new Trainer(m, tok, { task: 'classify', method: 'full', steps: 2, batchSize: 2 });
    await run(t, textRows);
    const out = path.join(dir, 'save-full');
    t.save(out);
    expect(fs.existsSync(path.join(out, 'model.safetensors'))).toBe(true);
    expect(fs.existsSync(path.join(out, 'config.json'))).toBe(true);
    t.dispose();
    m.dispose();
  });
});

test('causal-lm on raw text with SIFT: loss goes down', async () => {
  const tok = createByteTokenizer();
  const cfg: HFConfig = {
    model_type: 'gpt2',
    vocab_size: 258,
    n_positions: 32,
    n_embd: 32,
    n_layer: 1,
    n_head: 2,
    initializer_range: 0.2,
    ...noDrop,
  };
  const m = createModel(cfg, { task: 'causal-lm', seed: 2 });
  const text = Array.from({ length: 40 }, () => ({ text: 'abcabcabc abcabc' }));
  const t = new Trainer(m, tok, {
    task: 'causal-lm',
    steps: 25,
    batchSize: 4,
    maxLength: 16,
    lr: 3e-2,
    lrSchedule: 'constant',
    sift: { sparseRate: 0.2 },
  });
  const ev = await run(t, text, text.slice(0, 4));
  const losses = stepLosses(ev);
  expect(losses[losses.length - 1]).toBeLessThan(losses[0] * 0.7);
  const done = ev[ev.length - 1];
  expect(done.type === 'done' && done.metrics?.perplexity).toBeGreaterThan(1);
  t.dispose();
  m.dispose();
});

test('bad options are E_ARG / E_UNSUPPORTED', () => {
  const m = model();
  const code = (fn: () => unknown) => {
    try {
      fn();
    } catch (e) {
      expect(e).toBeInstanceOf(SiftError);
      return (e as SiftError).code;
    }
    return undefined;
  };
  expect(code(() => new Trainer(m, null, { task: 'classify', method: 'adam' as never }))).toBe('E_ARG');
  expect(code(() => new Trainer(m, null, { task: 'classify', batchSize: 0 }))).toBe('E_ARG');
  expect(code(() => new Trainer(m, null, { task: 'classify', resume: true }))).toBe('E_ARG');
  // Activation checkpointing is a model flag the trainer turns on (test/autograd/checkpoint.test.ts checks the gradients).
  expect(m.gradientCheckpointing).toBe(false);
  new Trainer(m, null, { task: 'classify', activationCheckpointing: true });
  expect(m.gradientCheckpointing).toBe(true);
  m.dispose();
});

describe('mixed precision', () => {
  for (const method of ['full', 'sift', 'lora'] as const) {
    test(`${method}: bf16 weights with f32 masters (asked for on CPU) learn; saveMerged writes the original dtype`, async () => {
      const m = model();
      const t = new Trainer(m, null, {
        task: 'classify',
        method,
        mixedPrecision: 'bf16',
        steps: 20,
        batchSize: 8,
        lr: 2e-2,
        lrSchedule: 'constant',
        sift: { sparseRate: 0.2 },
        lora: { rank: 4 },
      });
      const ev = await run(t, train);
      expect(m.dtype).toBe('bf16');
      const losses = stepLosses(ev);
      expect(losses.every(Number.isFinite)).toBe(true);
      expect(mean(losses.slice(-4))).toBeLessThan(mean(losses.slice(0, 4)));
      const out = path.join(dir, `bf16-${method}`);
      t.saveMerged(out);
      const cfg = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
      expect(cfg.torch_dtype).toBe('float32');
      t.dispose();
      m.dispose();
    });
  }
});

describeCuda('Trainer on CUDA', () => {
  test('bf16 by default; SIFT learns; resume is exact', async () => {
    const opts: TrainerOptions = { task: 'classify', device: 'cuda', steps: 6, batchSize: 8, lr: 2e-2, seed: 5, sift: { sparseRate: 0.2 } };
    const m1 = model();
    const t1 = new Trainer(m1, null, { ...opts, outDir: path.join(dir, 'cuda-whole') });
    const whole = stepLosses(await run(t1, train));
    expect(m1.dtype).toBe('bf16');
    expect(m1.device.startsWith('cuda')).toBe(true);
    t1.dispose();
    m1.dispose();
    const out = path.join(dir, 'cuda-resumed');
    const ctl = new AbortController();
    const m2 = model();
    const t2 = new Trainer(m2, null, { ...opts, outDir: out, signal: ctl.signal });
    const first = await run(t2, train, undefined, (e) => {
      if (e.type === 'step' && e.step === 3) ctl.abort();
    });
    const done = first[first.length - 1];
    expect(done.type === 'done' && done.peakMemoryBytes).toBeGreaterThan(0);
    t2.dispose();
    m2.dispose();
    const m3 = model();
    const t3 = new Trainer(m3, null, { ...opts, outDir: out, resume: true });
    const rest = stepLosses(await run(t3, train));
    expect([...stepLosses(first), ...rest]).toEqual(whole);
    t3.dispose();
    m3.dispose();
  });
});
