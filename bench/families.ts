/**
 * The decoder families at the full shape of their smallest public model (test/fixtures/configs:
 * Qwen2.5-0.5B, Qwen3-0.6B, Gemma-2B, Gemma-2-2B, Phi-3-mini-4k / -128k, Mistral-7B-v0.3), random
 * weights, full depth and vocabulary: build, one SIFT selection step and timed SIFT training steps
 * (forward, backward, sparse AdamW) on random tokens. Prints one JSON object per model, then a table.
 *
 * A model is skipped (with the reason) when its weights in the chosen dtype plus a margin for
 * activations and optimizer state exceed the free memory of the machine (CPU) or device.
 *
 * Flags: --models=qwen2.5-0.5b,gemma-2b,... (default: all), --device=cpu|cuda, --dtype=bf16|f32
 * (default bf16), --batch=B --seq=T (default 1 x 64), --steps=N (timed steps, default 2),
 * --rate=R (SIFT rate, default 0.01), --layers=N (cut the depth, e.g. for a quick look).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { tidy, keep, synchronize, liveTensors, backends, Tensor } from '../lib';
import { tensor } from '../lib/autograd/creation';
import { native } from '../lib/engine/native';
import { createModel } from '../lib/models/registry';
import type { HFConfig } from '../lib/models/common';
import { Sift } from '../lib/sift/sift';
import { SparseAdamW } from '../lib/sift/optimizer';

export const description =
  'decoder families at the shapes of Qwen2.5-0.5B, Qwen3-0.6B, Gemma(-2)-2B, Phi-3-mini, Mistral-7B: build and SIFT steps';

const CONFIG_DIR = path.join(__dirname, '..', '..', 'test', 'fixtures', 'configs');
const MODELS = ['qwen2.5-0.5b', 'qwen3-0.6b', 'gemma-2b', 'gemma-2-2b', 'phi-3-mini-4k', 'phi-3-mini-128k', 'mistral-7b-v0.3'];

interface Row {
  bench: 'families';
  model: string;
  status: 'ok' | 'skipped' | 'error';
  reason?: string;
  device: string;
  dtype: string;
  layers: number;
  params: number;
  trainable: number;
  batch: number;
  seq: number;
  buildMs: number;
  selectionMs: number;
  msPerStep: number;
  tokensPerSec: number;
  peakBytes: number;
  loss: number;
}

function flag(args: string[], name: string): string | undefined {
  const a = args.find((x) => x.startsWith(`--${name}=`));
  return a ? a.slice(name.length + 3) : undefined;
}

function paramCount(cfg: HFConfig): number {
  // From the shapes alone, before allocating (norms and biases left out): for the memory check.
  const D = Number(cfg.hidden_size),
    I = Number(cfg.intermediate_size),
    L = Number(cfg.num_hidden_layers),
    V = Number(cfg.vocab_size);
  const H = Number(cfg.num_attention_heads),
    KV = Number(cfg.num_key_value_heads ?? H);
  const hd = Number(cfg.head_dim ?? Math.floor(D / H));
  const tied = cfg.tie_word_embeddings ?? String(cfg.model_type).startsWith('gemma');
  const block = D * (H + 2 * KV) * hd + H * hd * D + 3 * D * I;
  return V * D * (tied ? 1 : 2) + L * block;
}

function freeBytes(device: string): number {
  if (device.startsWith('cuda')) return backends().cuda.devices[Number(device.split(':')[1] ?? 0)]?.freeMemory ?? 0;
  return os.freemem();
}

function peak(device: string): number {
  return device.startsWith('cuda') ? native().cudaMemory(Number(device.split(':')[1] ?? 0)).peakAllocated : liveTensors().cpu.peakBytes;
}

export function runOne(
  name: string,
  o: { device: string; dtype: 'bf16' | 'f32'; batch: number; seq: number; steps: number; rate: number; layers?: number },
): Row {
  const full = JSON.parse(fs.readFileSync(path.join(CONFIG_DIR, `${name}.json`), 'utf8')) as HFConfig;
  const cfg: HFConfig = o.layers ? { ...full, num_hidden_layers: o.layers } : full;
  const row: Row = {
    bench: 'families',
    model: name,
    status: 'ok',
    device: o.device,
    dtype: o.dtype,
    layers: Number(cfg.num_hidden_layers),
    params: paramCount(cfg),
    trainable: 0,
    batch: o.batch,
    seq: o.seq,
    buildMs: 0,
    selectionMs: 0,
    msPerStep: 0,
    tokensPerSec: 0,
    peakBytes: 0,
    loss: NaN,
  };
  const bytes = row.params * (o.dtype === 'bf16' ? 2 : 4);
  // Weights, a dense gradient of the largest tensor at a time, SIFT state and activations: 1.3x weights.
  const need = bytes * 1.3 + 2 ** 30;
  const free = freeBytes(o.device);
  if (need > free) {
    row.status = 'skipped';
    row.reason = `needs about ${(need / 2 ** 30).toFixed(1)} GiB, ${(free / 2 ** 30).toFixed(1)} GiB free`;
    return row;
  }
  const disposers: (() => void)[] = [];
  try {
    const t0 = Date.now();
    const model = createModel(cfg, { device: o.device, dtype: o.dtype, seed: 1 });
    disposers.push(() => model.dispose());
    row.params = model.numParameters();
    model.train();
    synchronize(o.device);
    row.buildMs = Date.now() - t0;
    const V = Number(cfg.vocab_size);
    const flat = new Int32Array(o.batch * o.seq).map((_, i) => (i * 7919 + 17) % V);
    const ids = keep(tensor(flat, [o.batch, o.seq], { dtype: 'i32', device: o.device }));
    disposers.push(() => ids.dispose());
    const rows = Array.from({ length: o.batch }, (_, b) => Array.from(flat.subarray(b * o.seq, (b + 1) * o.seq)));
    const fb = (): number =>
      tidy(() => {
        const out = model.forward({ inputIds: ids, labels: rows });
        out.loss!.backward();
        return (out.loss as Tensor).item();
      });
    const sift = new Sift(model, { sparseRate: o.rate, targetModules: 'all-linear' });
    disposers.unshift(() => sift.dispose());
    const t1 = Date.now();
    fb();
    sift.select();
    synchronize(o.device);
    row.selectionMs = Date.now() - t1;
    const opt = new SparseAdamW(sift, { lr: 1e-5, weightDecay: 0 });
    disposers.unshift(() => opt.dispose());
    row.trainable = sift.summary().trainable;
    const t2 = Date.now();
    for (let i = 0; i < o.steps; i++) {
      row.loss = fb();
      opt.step();
    }
    synchronize(o.device);
    row.msPerStep = (Date.now() - t2) / o.steps;
    row.tokensPerSec = (o.batch * o.seq) / (row.msPerStep / 1000);
    row.peakBytes = peak(o.device);
  } catch (e) {
    row.status = 'error';
    row.reason = (e as Error).message;
  } finally {
    for (const d of disposers) d();
  }
  return row;
}

export async function run(args: string[]): Promise<void> {
  const models = (flag(args, 'models') ?? MODELS.join(',')).split(',');
  for (const m of models) if (!MODELS.includes(m)) throw new Error(`unknown model '${m}' (known: ${MODELS.join(', ')})`);
  const device = flag(args, 'device') ?? 'cpu';
  const o = {
    device: device === 'cuda' ? 'cuda:0' : device,
    dtype: (flag(args, 'dtype') ?? 'bf16') as 'bf16' | 'f32',
    batch: Number(flag(args, 'batch') ?? 1),
    seq: Number(flag(args, 'seq') ?? 64),
    steps: Number(flag(args, 'steps') ?? 2),
    rate: Number(flag(args, 'rate') ?? 0.01),
    layers: flag(args, 'layers') ? Number(flag(args, 'layers')) : undefined,
  };
  const out: Row[] = [];
  for (const m of models) {
    const r = runOne(m, o);
    console.log(JSON.stringify(r));
    out.push(r);
  }
  const gib = (b: number) => (b / 2 ** 30).toFixed(2);
  console.log('\nmodel              status   layers  params(M)  build s  select s  ms/step  tokens/s  peak GiB');
  for (const r of out) {
    console.log(
      `${r.model.padEnd(18)} ${r.status.padEnd(8)} ${String(r.layers).padStart(6)} ${(r.params / 1e6).toFixed(0).padStart(10)} ${(r.buildMs / 1000).toFixed(1).padStart(8)} ${(r.selectionMs / 1000).toFixed(1).padStart(9)} ${r.msPerStep.toFixed(0).padStart(8)} ${r.tokensPerSec.toFixed(1).padStart(9)} ${gib(r.peakBytes).padStart(9)}${r.reason ? `  (${r.reason})` : ''}`,
    );
  }
}
