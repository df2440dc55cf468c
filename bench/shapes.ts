/**
 * Real shapes: one SIFT step of a Llama-3.2-1B-shaped model (its published config, random bf16
 * weights) on the CPU backend, its measured peak against `sift-ft plan`'s prediction; the
 * Llama-3-8B shape is planned (bf16 and NF4). With --8b-nf4, one SIFT step of the Llama-3-8B shape
 * with NF4 linear layers (targets included) and bf16 for the rest, built one layer at a time so
 * that the dense weights never exist together. Run with SIFT_FT_CPU_QUEUE=1 so tensors live as on
 * a CUDA stream. Flags: --seq T (default 128), --batch B (1), --rate R (0.01), --plan-only, --8b-nf4.
 */
import * as fs from 'fs';
import * as path from 'path';
import { createModel, liveTensors, Linear, randn, ones, mul, noGrad, synchronize, QuantFormat } from '../lib';
import { Trainer } from '../lib/train/trainer';
import { planMemory, MemoryPlan, shapeOnlyModel } from '../lib/plan/plan';
import type { HFConfig, PreTrainedModel } from '../lib/models/common';

export const description = 'one SIFT step of a Llama-3.2-1B shape on the CPU (bf16) against plan; Llama-3-8B planned';

function flag(args: string[], name: string, def: number): number {
  const a = args.find((x) => x.startsWith(`--${name}=`));
  return a ? Number(a.split('=')[1]) : def;
}

function config(name: string): HFConfig {
  return JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'bench', 'configs', name), 'utf8')) as HFConfig;
}

const gib = (n: number) => `${(n / 2 ** 30).toFixed(3)} GiB`;

function show(label: string, p: MemoryPlan): void {
  console.log(
    JSON.stringify({
      bench: 'shapes',
      label,
      plannedPeakBytes: p.peakBytes,
      parameters: p.parameters,
      trainable: p.trainable,
      parts: p.parts,
    }),
  );
  console.log(
    `${label}: plan ${gib(p.peakBytes)} (weights ${gib(p.parts.weights)}, quantized ${gib(p.parts.quantizedWeights)}, state ${gib(p.parts.trainableState)}, activations ${gib(p.parts.activations)})`,
  );
}

/**
 * The model of `cfg` with random bf16 weights (normal, std 0.02; norms at one), its Linear layers
 * but the LM head stored quantized as they are made: one dense weight exists at a time.
 */
function quantizedRandomModel(cfg: HFConfig, format: QuantFormat): PreTrainedModel {
  const model = shapeOnlyModel(cfg, 'causal-lm');
  const modules = new Map(model.namedModules());
  let seed = 1;
  for (const [name, p] of model.namedParameters()) {
    const at = name.lastIndexOf('.');
    const path = name.slice(0, at);
    const m = modules.get(path)!;
    const t = noGrad(() => {
      if (/norm\.weight$/.test(name)) return ones(p.shape, { dtype: 'bf16' });
      const r = randn(p.shape, { dtype: 'bf16', seed: seed++ });
      const w = mul(r, 0.02);
      r.dispose();
      return w;
    });
    m.setParameter(name.slice(at + 1), t);
    if (m instanceof Linear && !/(^|\.)lm_head$/.test(path) && name.endsWith('.weight')) {
      m.quantize(format);
      synchronize();
    }
  }
  return model;
}

/** One SIFT step of the Llama-3-8B shape with an NF4 base, against the plan. */
async function run8bNf4(T: number, B: number, rate: number): Promise<void> {
  const c8 = config('llama-3-8b.json');
  const opts = {
    task: 'causal-lm' as const,
    method: 'sift' as const,
    sparseRate: rate,
    batchSize: B,
    maxLength: T,
    mixedPrecision: 'bf16' as const,
    device: 'cpu' as const,
    quantize: 'nf4' as const,
  };
  const plan = planMemory(c8, opts);
  show('llama-3-8b nf4', plan);
  const t0 = Date.now();
  const model = quantizedRandomModel(c8, 'nf4');
  const built = (Date.now() - t0) / 1000;
  const rows = Array.from({ length: B * 2 }, (_, i) => ({
    input_ids: Array.from({ length: T }, (_, j) => (i * 7919 + j * 104729) % 128000),
  }));
  const trainer = new Trainer(model, null, {
    task: 'causal-lm',
    method: 'sift',
    steps: 1,
    batchSize: B,
    maxLength: T,
    mixedPrecision: 'bf16',
    sift: { sparseRate: rate },
    quantize: 'nf4',
    device: 'cpu',
    lr: 1e-5,
  });
  let peak = 0;
  for await (const e of trainer.fit(rows)) if (e.type === 'done') peak = e.peakMemoryBytes;
  const seconds = (Date.now() - t0) / 1000;
  console.log(
    JSON.stringify({
      bench: 'shapes',
      label: 'llama-3-8b nf4 measured',
      measuredPeakBytes: peak,
      plannedPeakBytes: plan.peakBytes,
      ratio: plan.peakBytes / peak,
      buildSeconds: built,
      seconds,
      rssBytes: process.memoryUsage().rss,
    }),
  );
  console.log(
    `llama-3-8b nf4, one SIFT ${rate} step, batch ${B} x ${T}: measured ${gib(peak)}, plan ${gib(plan.peakBytes)} (plan/measured ${(plan.peakBytes / peak).toFixed(3)}), ${seconds.toFixed(0)} s (model built in ${built.toFixed(0)} s)`,
  );
  model.dispose();
}

export async function run(args: string[]): Promise<void> {
  if (args.includes('--8b-nf4')) return run8bNf4(flag(args, 'seq', 16), flag(args, 'batch', 1), flag(args, 'rate', 0.01));
  const T = flag(args, 'seq', 128);
  const B = flag(args, 'batch', 1);
  const rate = flag(args, 'rate', 0.01);
  const opts = {
    task: 'causal-lm' as const,
    method: 'sift' as const,
    sparseRate: rate,
    batchSize: B,
    maxLength: T,
    mixedPrecision: 'bf16' as const,
    device: 'cpu' as const,
  };
  const c8 = config('llama-3-8b.json');
  show('llama-3-8b bf16', planMemory(c8, opts));
  show('llama-3-8b nf4', planMemory(c8, { ...opts, quantize: 'nf4' }));
  const c1 = config('llama-3.2-1b.json');
  const plan = planMemory(c1, opts);
  show('llama-3.2-1b bf16', plan);
  if (args.includes('--plan-only')) return;
  if (process.env.SIFT_FT_CPU_QUEUE !== '1')
    console.log('note: SIFT_FT_CPU_QUEUE=1 makes CPU tensors live as on a CUDA stream (the measured peak otherwise differs)');
  const t0 = Date.now();
  const model = createModel(c1, { task: 'causal-lm', dtype: 'bf16', seed: 1 });
  const rows = Array.from({ length: B * 2 }, (_, i) => ({
    input_ids: Array.from({ length: T }, (_, j) => (i * 7919 + j * 104729) % 128000),
  }));
  const trainer = new Trainer(model, null, {
    task: 'causal-lm',
    method: 'sift',
    steps: 1,
    batchSize: B,
    maxLength: T,
    mixedPrecision: 'bf16',
    sift: { sparseRate: rate },
    device: 'cpu',
    lr: 1e-5,
  });
  let peak = 0;
  for await (const e of trainer.fit(rows)) if (e.type === 'done') peak = e.peakMemoryBytes;
  const seconds = (Date.now() - t0) / 1000;
  console.log(
    JSON.stringify({
      bench: 'shapes',
      label: 'llama-3.2-1b bf16 measured',
      measuredPeakBytes: peak,
      plannedPeakBytes: plan.peakBytes,
      ratio: plan.peakBytes / peak,
      seconds,
      live: liveTensors().cpu.bytes,
    }),
  );
  console.log(
    `llama-3.2-1b, one SIFT ${rate} step, batch ${B} x ${T}: measured ${gib(peak)}, plan ${gib(plan.peakBytes)} (plan/measured ${(plan.peakBytes / peak).toFixed(3)}), ${seconds.toFixed(0)} s`,
  );
  model.dispose();
}
