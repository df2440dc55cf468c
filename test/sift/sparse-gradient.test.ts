/**
 * SIFT's sparse weight gradient through the SDDMM (sparseGradient 'sddmm') against the dense
 * weight gradient plus gather ('dense'): the same sparse gradients for nn.Linear and GPT-2 Conv1D
 * layouts, in f32 and bf16, through checkpointed blocks and with LoRA adapters on the model; and
 * a whole training run giving the same increment.
 */
import { createModel, HFConfig, PreTrainedModel } from '../../lib/models';
import { Sift, SparseGradientMode } from '../../lib/sift/sift';
import { applyLora } from '../../lib/train/lora';
import { Trainer } from '../../lib/train/trainer';
import { manualSeed, tidy } from '../../lib';
import { settledCpuTensors } from '../helpers/live';
import { expectClose } from '../helpers/gradcheck';
import { tinyGpt2Classifier, tinyLlama } from '../helpers/tiny-configs';
import { toyClassRows, toyLmBatch } from '../helpers/toy-rows';

const configs: [string, HFConfig][] = [
  ['gpt2 (Conv1D, [in, out])', { model_type: 'gpt2', vocab_size: 50, n_positions: 16, n_embd: 32, n_layer: 2, n_head: 2 }],
  ['llama (Linear, [out, in])', tinyLlama],
];

const batch = toyLmBatch;

interface Run {
  names: string[];
  idx: number[][];
  grads: number[][];
  sddmm: number;
  twoD: number;
}

function siftRun(
  cfg: HFConfig,
  mode: SparseGradientMode,
  o: { dtype?: 'f32' | 'bf16'; checkpointing?: boolean; lora?: boolean } = {},
): Run {
  const m: PreTrainedModel = createModel(cfg, { task: 'causal-lm', dtype: o.dtype ?? 'f32', seed: 5 });
  const lora = o.lora ? applyLora(m, { rank: 4, seed: 9 }) : null;
  // The adapters stay frozen here: the base weights under them are the sparse targets.
  if (lora) for (const p of lora.parameters()) p.requiresGrad = false;
  const sift = new Sift(m, { sparseRate: 0.05, sparseGradient: mode, denseModules: [] });
  m.gradientCheckpointing = o.checkpointing ?? false;
  const step = (seed: number) => {
    manualSeed(seed);
    tidy(() => m.forward(batch(seed)).loss!.backward());
  };
  step(1);
  sift.select();
  step(2);
  step(3);
  const out: Run = {
    names: sift.targets.map((t) => t.name),
    idx: sift.targets.map((t) => Array.from(t.idx!.toArray() as Int32Array, Number)),
    grads: sift.targets.map((t) => Array.from(t.grad!.toArray() as Float32Array)),
    sddmm: sift.targets.filter((t) => sift.usesSddmm(t)).length,
    twoD: sift.targets.filter((t) => t.param.ndim === 2).length,
  };
  sift.dispose();
  lora?.dispose();
  m.dispose();
  return out;
}

function expectSameSparseGrads(got: Run, want: Run, relTol: number): void {
  expect(got.names).toEqual(want.names);
  expect(got.idx).toEqual(want.idx);
  got.grads.forEach((g, i) => {
    const scale = Math.max(1e-30, ...want.grads[i].map(Math.abs));
    expectClose(g, want.grads[i], { atol: relTol * scale, rtol: relTol, label: got.names[i] });
  });
}

describe.each(configs)('%s', (_name, cfg) => {
  const dense = siftRun(cfg, 'dense');

  test('the SDDMM gives the dense path sparse gradients within f32 rounding, over two accumulated backwards', () => {
    const sddmm = siftRun(cfg, 'sddmm');
    expect(dense.sddmm).toBe(0);
    // Every 2-D target; biases keep the dense path.
    expect(sddmm.sddmm).toBe(sddmm.twoD);
    expect(sddmm.twoD).toBeGreaterThan(0);
    expectSameSparseGrads(sddmm, dense, 1e-5);
    // 'auto' is the SDDMM for targets on the CPU.
    expect(siftRun(cfg, 'auto').grads).toEqual(sddmm.grads);
  });

  test('through checkpointed blocks', () => {
    expectSameSparseGrads(siftRun(cfg, 'sddmm', { checkpointing: true }), dense, 1e-5);
  });

  test('bf16 weights: within bf16 rounding of the dense bf16 weight gradient', () => {
    const d = siftRun(cfg, 'dense', { dtype: 'bf16' });
    expectSameSparseGrads(siftRun(cfg, 'sddmm', { dtype: 'bf16' }), d, 2e-2);
  });

  test('with LoRA adapters on the model', () => {
    const d = siftRun(cfg, 'dense', { lora: true });
    const s = siftRun(cfg, 'sddmm', { lora: true });
    expectSameSparseGrads(s, d, 1e-5);
  });
});

test('a whole SIFT training run gives the same increment with the SDDMM as with the dense gradient', async () => {
  const cfg = tinyGpt2Classifier;
  const rows = toyClassRows(32, 3, 3);
  const before = await settledCpuTensors();
  const run = async (mode: SparseGradientMode) => {
    const m = createModel(cfg, { task: 'sequence-classification', seed: 7 });
    const t = new Trainer(m, null, {
      task: 'classify',
      method: 'sift',
      sift: { sparseRate: 0.1, sparseGradient: mode },
      steps: 6,
      batchSize: 8,
      lr: 1e-2,
    });
    for await (const _ of t.fit(rows));
    const uses = t.sift!.targets.filter((x) => t.sift!.usesSddmm(x)).length;
    const inc = t.sift!.targets.map((x) => {
      const w = tidy(() => Array.from(x.param.contiguous().toArray() as Float32Array));
      const base = Array.from(x.base!.toArray() as Float32Array);
      return Array.from(x.idx!.toArray() as Int32Array, (f, j) => w[f] - base[j]);
    });
    t.dispose();
    m.dispose();
    return { inc, uses };
  };
  const d = await run('dense');
  const sd = await run('sddmm');
  expect(d.uses).toBe(0);
  expect(sd.uses).toBeGreaterThan(0);
  expect(sd.inc.length).toBe(d.inc.length);
  // AdamW normalises each entry's update, so an entry whose gradient stays near zero can move by
  // up to lr per step on a rounding difference (the sums' order differs between the two paths, and
  // between thread splits): nearly every entry agrees to 1e-4, none by more than 2 lr per step.
  const all = sd.inc.flat();
  const ref = d.inc.flat();
  const off = all.filter((v, i) => Math.abs(v - ref[i]) > 1e-4 + 1e-3 * Math.abs(ref[i])).length;
  expect(off).toBeLessThanOrEqual(Math.max(1, Math.ceil(0.02 * all.length)));
  all.forEach((v, i) => expect(Math.abs(v - ref[i])).toBeLessThanOrEqual(2 * 1e-2 * 6));
  expect(await settledCpuTensors()).toBe(before);
}, 120000);
