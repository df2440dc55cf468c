/**
 * Real shapes: one SIFT step of a Llama-3.2-1B-shaped model (its published config, random bf16
 * weights) on the CPU backend, its measured peak against `sift-ft plan`'s prediction; the
 * Llama-3-8B shape is planned (bf16 and NF4). With --8b-nf4, one SIFT step of the Llama-3-8B shape
 * with NF4 linear layers (targets included) and bf16 for the rest, built one layer at a time so
 * that the dense weights never exist together. Run with SIFT_FT_CPU_QUEUE=1 so tensors live as on
 * a CUDA stream. Flags: --seq T (default 128), --batch B (1), --rate R (0.01), --plan-only, --8b-nf4.
 *
 * --device=cuda: SIFT on the GPU, bf16: tokens/s and peak memory of the Llama-3.2-1B and Llama-3-8B
 * shapes (default batch 8 x 2048 and 4 x 2048, --steps N timed steps after the selection step,
 * default 4), then one step of the Llama-3-70B shape with an NF4 base (--70b-nf4 runs that alone;
 * batch 1 x 512). Each row has the plan's prediction beside the measured peak; activation
 * checkpointing is switched on where the plan without it exceeds 80% of --memory-gib (default 139,
 * one H200). --batch/--seq then apply to every shape. --config=PATH [--quantize=nf4] runs that one
 * config.json the same way on --device (default cpu; batch 1 x 64 unless given).
 */
import * as fs from 'fs';
import * as path from 'path';
import { createModel, emptyCache, liveTensors, Linear, randn, ones, mul, noGrad, synchronize, QuantFormat } from '../lib';
import { Trainer } from '../lib/train/trainer';
import { planMemory, MemoryPlan, shapeOnlyModel } from '../lib/plan/plan';
import type { HFConfig, PreTrainedModel } from '../lib/models/common';

export const description = 'one SIFT step of a Llama-3.2-1B shape on the CPU (bf16) against plan; Llama-3-8B planned';

function flag(args: string[], name: string, def: number): number {
  const a = args.find((x) => x.startsWith(`--${name}=`));
  return a ? Number(a.split('=')[1]) : def;
}

/** `--device=cuda` (or `--device cuda` when called directly). */
function deviceFlag(args: string[]): 'cpu' | 'cuda' {
  const i = args.indexOf('--device');
  const v = i >= 0 ? args[i + 1] : args.find((x) => x.startsWith('--device='))?.split('=')[1];
  return v === 'cuda' ? 'cuda' : 'cpu';
}

function config(name: string): HFConfig {
  const file = name.includes('/') ? name : path.join(__dirname, '..', '..', 'bench', 'configs', name);
  return JSON.parse(fs.readFileSync(file, 'utf8')) as HFConfig;
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
function quantizedRandomModel(cfg: HFConfig, format: QuantFormat, device = 'cpu'): PreTrainedModel {
  const model = shapeOnlyModel(cfg, 'causal-lm');
  const modules = new Map(model.namedModules());
  let seed = 1;
  for (const [name, p] of model.namedParameters()) {
    const at = name.lastIndexOf('.');
    const path = name.slice(0, at);
    const m = modules.get(path)!;
    const t = noGrad(() => {
      if (/norm\.weight$/.test(name)) return ones(p.shape, { dtype: 'bf16', device });
      const r = randn(p.shape, { dtype: 'bf16', seed: seed++, device });
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

interface RunShape {
  label: string;
  /** A file in bench/configs, or a path to a config.json. */
  file: string;
  batch: number;
  seq: number;
  /** Timed steps after the selection step (the first step, which also selects, is not timed). */
  steps: number;
  quantize?: 'nf4';
}

/** One line of the closing table. */
type ShapeResult = { label: string; shape: string; planned: number; measured?: number; tokensPerSec?: number | null; error?: string };

/**
 * SIFT at one shape (bf16, random weights; NF4 linear layers with `quantize`) on `device`: the plan
 * first (checkpointing when the plan without it exceeds 80% of memoryBytes), then the run:
 * tokens/s over the steps after the first, and the peak allocation beside the plan's prediction.
 */

async function runShape(
  s: RunShape,
  device: 'cpu' | 'cuda',
  rate: number,
  memoryBytes: number,
  plannedOnly: boolean,
): Promise<ShapeResult> {
  const cfg = config(s.file);
  const base = {
    task: 'causal-lm' as const,
    method: 'sift' as const,
    sparseRate: rate,
    batchSize: s.batch,
    maxLength: s.seq,
    mixedPrecision: 'bf16' as const,
    device,
    ...(s.quantize ? { quantize: s.quantize } : {}),
  };
  const checkpointing = planMemory(cfg, base).peakBytes > 0.8 * memoryBytes;
  const shape = `${s.batch} x ${s.seq}${checkpointing ? ', checkpointing' : ''}`;
  const plan = planMemory(cfg, { ...base, activationCheckpointing: checkpointing });
  const head = { bench: 'shapes', device, label: s.label, batch: s.batch, seq: s.seq, rate, quantize: s.quantize ?? null, checkpointing };
  console.log(
    JSON.stringify({
      ...head,
      plannedPeakBytes: plan.peakBytes,
      parameters: plan.parameters,
      trainable: plan.trainable,
      parts: plan.parts,
    }),
  );
  if (plannedOnly) {
    console.log(`${s.label} ${device}, batch ${s.batch} x ${s.seq}${checkpointing ? ', checkpointing' : ''}: plan ${gib(plan.peakBytes)}`);
    return { label: s.label, shape, planned: plan.peakBytes };
  }
  const t0 = Date.now();
  let model: PreTrainedModel | null = null;
  try {
    model = s.quantize
      ? quantizedRandomModel(cfg, s.quantize, device)
      : createModel(cfg, { task: 'causal-lm', dtype: 'bf16', seed: 1, device });
    synchronize();
    const built = (Date.now() - t0) / 1000;
    const rows = Array.from({ length: s.batch * (s.steps + 1) }, (_, i) => ({
      input_ids: Array.from({ length: s.seq }, (_, j) => (i * 7919 + j * 104729) % 128000),
    }));
    const trainer = new Trainer(model, null, {
      task: 'causal-lm',
      method: 'sift',
      steps: s.steps + 1,
      batchSize: s.batch,
      maxLength: s.seq,
      mixedPrecision: 'bf16',
      sift: { sparseRate: rate },
      ...(s.quantize ? { quantize: s.quantize } : {}),
      activationCheckpointing: checkpointing,
      device,
      lr: 1e-5,
      logEvery: 1,
    });
    let peak = 0;
    let first = 0;
    let last = 0;
    let timed = 0;
    let loss = NaN;
    for await (const e of trainer.fit(rows)) {
      if (e.type === 'step') {
        if (e.step === 1) first = Date.now();
        else {
          last = Date.now();
          timed++;
        }
        loss = e.loss;
      }
      if (e.type === 'done') peak = e.peakMemoryBytes;
    }
    const seconds = (last - first) / 1000;
    const tokensPerSec = timed > 0 && seconds > 0 ? Math.round((timed * s.batch * s.seq) / seconds) : null;
    console.log(
      JSON.stringify({
        ...head,
        status: 'ok',
        measuredPeakBytes: peak,
        plannedPeakBytes: plan.peakBytes,
        ratio: plan.peakBytes / peak,
        tokensPerSec,
        timedSteps: timed,
        loss,
        buildSeconds: built,
        seconds: (Date.now() - t0) / 1000,
        rssBytes: process.memoryUsage().rss,
        liveBytes: liveTensors()[device].bytes,
      }),
    );
    console.log(
      `${s.label} ${device}, SIFT ${rate}, batch ${s.batch} x ${s.seq}${checkpointing ? ', checkpointing' : ''}: ${tokensPerSec ?? '-'} tokens/s, measured ${gib(peak)}, plan ${gib(plan.peakBytes)} (plan/measured ${(plan.peakBytes / peak).toFixed(3)})`,
    );
    return { label: s.label, shape, planned: plan.peakBytes, measured: peak, tokensPerSec };
  } catch (e) {
    // One shape that fails (out of memory) must not hide the others.
    console.log(
      JSON.stringify({
        ...head,
        status: 'error',
        plannedPeakBytes: plan.peakBytes,
        error: String((e as Error).message ?? e).slice(0, 300),
      }),
    );
    console.log(`${s.label} ${device}: error: ${(e as Error).message}`);
    return { label: s.label, shape, planned: plan.peakBytes, error: String((e as Error).message ?? e).slice(0, 80) };
  } finally {
    model?.dispose();
    // The next shape starts from an empty cache (the 70B one needs the card's memory unfragmented).
    if (device === 'cuda') {
      synchronize();
      emptyCache();
    }
  }
}

export async function run(args: string[]): Promise<void> {
  const configArg = args.find((x) => x.startsWith('--config='))?.slice('--config='.length);
  const device = deviceFlag(args);
  const rate = flag(args, 'rate', 0.01);
  const steps = flag(args, 'steps', 4);
  const B = (d: number) => flag(args, 'batch', d);
  const T = (d: number) => flag(args, 'seq', d);
  let memoryBytes = flag(args, 'memory-gib', 139) * 2 ** 30;
  let list: RunShape[];
  let planOnly = args.includes('--plan-only');
  if (device === 'cuda' || args.includes('--70b-nf4') || configArg) {
    const shapes: RunShape[] = [
      { label: 'llama-3.2-1b bf16', file: 'llama-3.2-1b.json', batch: B(8), seq: T(2048), steps },
      { label: 'llama-3-8b bf16', file: 'llama-3-8b.json', batch: B(4), seq: T(2048), steps },
      { label: 'llama-3-70b nf4', file: 'llama-3-70b.json', batch: B(1), seq: T(512), steps: 0, quantize: 'nf4' },
    ];
    list = configArg
      ? [
          {
            label: path.basename(configArg),
            file: path.resolve(configArg),
            batch: B(1),
            seq: T(64),
            steps,
            ...(args.includes('--quantize=nf4') ? { quantize: 'nf4' as const } : {}),
          },
        ]
      : args.includes('--70b-nf4')
        ? shapes.slice(2)
        : shapes;
    // The billion-parameter shapes are run on CUDA only: elsewhere they are planned (nothing is allocated).
    planOnly ||= device !== 'cuda' && !configArg;
  } else {
    // The CPU: one SIFT step (the selection step), against the plan; no checkpointing.
    memoryBytes = Infinity;
    if (args.includes('--8b-nf4')) {
      list = [{ label: 'llama-3-8b nf4', file: 'llama-3-8b.json', batch: B(1), seq: T(16), steps: 0, quantize: 'nf4' }];
    } else {
      const opts = {
        task: 'causal-lm' as const,
        method: 'sift' as const,
        sparseRate: rate,
        batchSize: B(1),
        maxLength: T(128),
        mixedPrecision: 'bf16' as const,
        device: 'cpu' as const,
      };
      const c8 = config('llama-3-8b.json');
      show('llama-3-8b bf16', planMemory(c8, opts));
      show('llama-3-8b nf4', planMemory(c8, { ...opts, quantize: 'nf4' }));
      list = [{ label: 'llama-3.2-1b bf16', file: 'llama-3.2-1b.json', batch: B(1), seq: T(128), steps: 0 }];
    }
    if (!planOnly && process.env.SIFT_FT_CPU_QUEUE !== '1')
      console.log('note: SIFT_FT_CPU_QUEUE=1 makes CPU tensors live as on a CUDA stream (the measured peak otherwise differs)');
  }
  const results: ShapeResult[] = [];
  for (const s of list) results.push(await runShape(s, device, rate, memoryBytes, planOnly));
  console.log(`\nSIFT ${rate} on ${device}, bf16`);
  console.log('| shape | batch x seq | tokens/s | measured peak | plan peak | plan / measured |');
  console.log('| --- | --- | --- | --- | --- | --- |');
  for (const r of results)
    console.log(
      `| ${r.label} | ${r.shape} | ${r.error ? `error: ${r.error}` : (r.tokensPerSec ?? '-')} | ${r.measured ? gib(r.measured) : '-'} | ${gib(r.planned)} | ${r.measured ? (r.planned / r.measured).toFixed(3) : '-'} |`,
    );
  if (results.some((r) => r.error)) process.exitCode = 1;
}
