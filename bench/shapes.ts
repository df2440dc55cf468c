/**
 * Real shapes: one SIFT step of a Llama-3.2-1B-shaped model (its published config, random bf16
 * weights) on the CPU backend, its measured peak against `sift-ft plan`'s prediction; the
 * Llama-3-8B shape is planned (bf16 and NF4). Run with SIFT_FT_CPU_QUEUE=1 so tensors live as on a
 * CUDA stream. Flags: --seq T (default 128), --batch B (1), --rate R (0.01), --plan-only.
 */
import * as fs from 'fs';
import * as path from 'path';
import { createModel, liveTensors } from '../lib';
import { Trainer } from '../lib/train/trainer';
import { planMemory, MemoryPlan } from '../lib/plan/plan';
import type { HFConfig } from '../lib/models/common';

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

export async function run(args: string[]): Promise<void> {
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
