/**
 * The SDDMM (SIFT's weight gradient at the selected entries only) against the dense weight
 * gradient GEMM plus gather, at SIFT's rate (1% by default), and the end-to-end SIFT step
 * (forward, backward, sparse AdamW) with sparseGradient 'sddmm' and 'dense'. Prints one JSON
 * object per measurement (ratio: dense time / SDDMM time), then a table. Timing: one warm-up,
 * then the median of repeats, each ended by synchronize().
 *
 * Flags: --cpu-only, --cuda-only, --quick, --dtypes=f32,bf16, --rates=0.01,
 * --sizes=OUTxIN[xTOKENS],... (default: 1024x1024x512, 1024x1024x2048, 1024x4096x2048 on the CPU;
 * 4096x4096x4096 and 4096x11008x4096 on CUDA), --no-step (kernels only).
 */
import { randn, synchronize, tidy, Tensor, backends, manualSeed } from '../lib';
import { native } from '../lib/engine/native';
import { matmulRaw } from '../lib/autograd/matmul';
import { createModel, HFConfig } from '../lib/models';
import { Sift, SparseGradientMode } from '../lib/sift/sift';
import { SparseAdamW } from '../lib/sift/optimizer';
import type { DType } from '../lib/engine/dtype';

export const description = 'SIFT sparse weight gradient (SDDMM) vs dense weight-gradient GEMM + gather, and the SIFT step with each';

export interface KernelRow {
  bench: 'sddmm';
  device: string;
  dtype: DType;
  /** weight [out, in] and tokens */
  shape: string;
  rate: number;
  k: number;
  denseMs: number;
  sddmmMs: number;
  /** denseMs / sddmmMs */
  ratio: number;
  repeats: number;
}

export interface StepRow {
  bench: 'sddmm-step';
  device: string;
  dtype: DType;
  model: string;
  tokens: number;
  rate: number;
  denseMs: number;
  sddmmMs: number;
  /** denseMs / sddmmMs */
  ratio: number;
  repeats: number;
}

function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function timeIt(device: string, fn: () => void, budgetMs: number, maxRepeats: number): { ms: number; repeats: number } {
  const once = (): number => {
    synchronize(device);
    const t0 = process.hrtime.bigint();
    tidy(fn);
    synchronize(device);
    return Number(process.hrtime.bigint() - t0) / 1e6;
  };
  const first = once();
  const repeats = Math.max(3, Math.min(maxRepeats, Math.floor(budgetMs / Math.max(first, 1e-3))));
  const ts: number[] = [];
  for (let i = 0; i < repeats; i++) ts.push(once());
  return { ms: median(ts), repeats };
}

function kernelRow(device: string, dtype: DType, out: number, inF: number, tokens: number, rate: number, quick: boolean): KernelRow {
  const N = native();
  return tidy(() => {
    const x = randn([tokens, inF], { dtype, device, seed: 1 });
    const dy = randn([tokens, out], { dtype, device, seed: 2 });
    const numel = out * inF;
    const k = Math.max(1, Math.floor(rate * numel) + 1);
    const scores = randn([numel], { dtype: 'f32', device, seed: 3 });
    const idx = new Tensor(N.topk(scores.handle, k));
    const plan = new Tensor(N.sddmmPlan(idx.handle, out, inF));
    const g = new Tensor(N.full([k], 0, 'f32', device));
    const cuda = device.startsWith('cuda');
    const budget = quick ? 300 : cuda ? 1500 : 4000;
    const reps = quick ? 3 : cuda ? 30 : 7;
    // The dense path of a linear layer's backward: dW = dy^T x ([out, in]), then the k entries.
    const dense = timeIt(
      device,
      () => {
        const gw = matmulRaw(dy, x, true, false);
        N.gatherInto(g.handle, gw.handle, idx.handle, true);
      },
      budget,
      reps,
    );
    const sparse = timeIt(device, () => N.sddmm(g.handle, dy.handle, x.handle, idx.handle, true, plan.handle), budget, reps);
    return {
      bench: 'sddmm',
      device,
      dtype,
      shape: `${out}x${inF}x${tokens}`,
      rate,
      k,
      denseMs: Number(dense.ms.toFixed(3)),
      sddmmMs: Number(sparse.ms.toFixed(3)),
      ratio: Number((dense.ms / sparse.ms).toFixed(2)),
      repeats: Math.min(dense.repeats, sparse.repeats),
    };
  });
}

/** LLaMA-shaped stacks: a few layers at the width of the model named. */
function stepConfig(cuda: boolean, quick: boolean): { name: string; cfg: HFConfig; batch: number; seq: number } {
  if (cuda && !quick) {
    return {
      name: 'llama-1B-width x4 layers',
      cfg: {
        model_type: 'llama',
        vocab_size: 32000,
        hidden_size: 2048,
        intermediate_size: 5632,
        num_hidden_layers: 4,
        num_attention_heads: 32,
        num_key_value_heads: 4,
        max_position_embeddings: 4096,
      },
      batch: 2,
      seq: 2048,
    };
  }
  return {
    name: quick ? 'llama-256 x2 layers' : 'llama-512 x2 layers',
    cfg: {
      model_type: 'llama',
      vocab_size: 1024,
      hidden_size: quick ? 256 : 512,
      intermediate_size: quick ? 688 : 1376,
      num_hidden_layers: 2,
      num_attention_heads: 8,
      num_key_value_heads: 8,
      max_position_embeddings: 512,
    },
    batch: 4,
    seq: quick ? 64 : 256,
  };
}

async function stepRow(device: string, dtype: DType, rate: number, quick: boolean): Promise<StepRow> {
  const cuda = device.startsWith('cuda');
  const { name, cfg, batch, seq } = stepConfig(cuda, quick);
  const ids = Array.from({ length: batch }, (_, b) =>
    Array.from({ length: seq }, (_, i) => 1 + ((b * 7919 + i * 31) % ((cfg.vocab_size as number) - 1))),
  );
  // Both set-ups side by side, their steps interleaved, so that load on a shared machine hits both alike.
  const setup = (mode: SparseGradientMode) => {
    const m = createModel(cfg, { task: 'causal-lm', dtype: dtype as 'f32' | 'bf16', seed: 1 }).to(device);
    const sift = new Sift(m, { sparseRate: rate, sparseGradient: mode });
    manualSeed(1);
    tidy(() => m.forward({ inputIds: ids, labels: ids }).loss!.backward());
    sift.select();
    const opt = new SparseAdamW(sift, { lr: 1e-4 });
    const step = () => {
      m.forward({ inputIds: ids, labels: ids }).loss!.backward();
      opt.step();
    };
    const dispose = () => {
      opt.dispose();
      sift.dispose();
      m.dispose();
    };
    return { step, dispose };
  };
  const runs = [setup('dense'), setup('sddmm')];
  const once = (i: number): number => {
    synchronize(device);
    const t0 = process.hrtime.bigint();
    tidy(runs[i].step);
    synchronize(device);
    return Number(process.hrtime.bigint() - t0) / 1e6;
  };
  once(0);
  once(1);
  const repeats = quick ? 3 : cuda ? 20 : 10;
  const times: number[][] = [[], []];
  for (let r = 0; r < repeats; r++) for (const i of [0, 1]) times[i].push(once(i));
  for (const x of runs) x.dispose();
  const d = { ms: median(times[0]), repeats };
  const s = { ms: median(times[1]), repeats };
  return {
    bench: 'sddmm-step',
    device,
    dtype,
    model: name,
    tokens: batch * seq,
    rate,
    denseMs: Number(d.ms.toFixed(2)),
    sddmmMs: Number(s.ms.toFixed(2)),
    ratio: Number((d.ms / s.ms).toFixed(3)),
    repeats: Math.min(d.repeats, s.repeats),
  };
}

export async function run(args: string[]): Promise<(KernelRow | StepRow)[]> {
  const quick = args.includes('--quick');
  const opt = (name: string) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  const dtypes = (opt('dtypes')?.split(',') ?? ['f32', 'bf16']) as DType[];
  const rates = opt('rates')?.split(',').map(Number) ?? [0.01];
  const b = backends();
  const devices: string[] = [];
  if (!args.includes('--cuda-only')) devices.push('cpu');
  if (!args.includes('--cpu-only') && b.cuda.usable) devices.push('cuda:0');
  console.error(
    `# sddmm bench: cpu ${b.cpu.threads} threads, cuda ${b.cuda.usable ? b.cuda.devices.map((d) => d.name).join(', ') : 'not usable'}`,
  );
  const rows: (KernelRow | StepRow)[] = [];
  for (const device of devices) {
    const cuda = device.startsWith('cuda');
    const defaults = quick
      ? ['256x512x256']
      : cuda
        ? ['4096x4096x4096', '4096x11008x4096']
        : ['1024x1024x512', '1024x1024x2048', '1024x4096x2048'];
    const sizes = (opt('sizes')?.split(',') ?? defaults).map((s) => {
      const [o, i, t] = s.split('x').map(Number);
      return [o, i, t ?? 2048] as [number, number, number];
    });
    for (const dtype of dtypes) {
      for (const rate of rates) {
        for (const [o, i, t] of sizes) {
          const row = kernelRow(device, dtype, o, i, t, rate, quick);
          console.log(JSON.stringify(row));
          rows.push(row);
        }
        if (!args.includes('--no-step')) {
          const row = await stepRow(device, dtype, rate, quick);
          console.log(JSON.stringify(row));
          rows.push(row);
        }
      }
    }
  }
  const header = ['device', 'dtype', 'what', 'rate', 'dense ms', 'sddmm ms', 'dense / sddmm'];
  const lines = [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`];
  for (const x of rows) {
    const what = x.bench === 'sddmm' ? `dW ${x.shape}` : `step ${x.model}, ${x.tokens} tokens`;
    lines.push(
      `| ${[x.device, x.dtype, what, `${x.rate * 100}%`, x.denseMs.toFixed(3), x.sddmmMs.toFixed(3), x.ratio.toFixed(2)].join(' | ')} |`,
    );
  }
  console.log('\n' + lines.join('\n'));
  return rows;
}
