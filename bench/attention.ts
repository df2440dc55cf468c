/**
 * Fused attention: forward and backward time of native attention / attentionBackward at the
 * training shapes of the train bench (batch 8 x 512 tokens; GPT-2 124M: 12 heads of 64, causal, dropout
 * 0.1; LLaMA-220M: 16 heads of 64, causal), bf16 on CUDA, for each CUDA kernel family
 * (setCudaAttention: 'auto' = tensor cores where they apply, 'simt' = CUDA cores), with TFLOP/s
 * counted as flash attention does (forward 4 B H Tq Tk D, halved when causal; backward 2.5x the
 * forward). bench/peers/torch_kernels.py --only attention times torch's scaled_dot_product_attention
 * on the same shapes. A long Mistral-style shape (4096 tokens, 32 heads of 128) runs with and without
 * a 1024-token sliding window with Gemma 2's soft-capping (FLOPs counted over the visible pairs),
 * which shows the key tiles outside the window being skipped.
 * On the CPU a small f32 shape runs (a smoke test of this script).
 *
 * Timing: one warm-up, then the median of repeats, each between two device synchronisations.
 * Flags: --cpu-only, --cuda-only, --quick, --modes=auto,simt, --dtype=bf16|f16|f32.
 */
import { tidy, Tensor, backends, randn } from '../lib';
import { native } from '../lib/engine/native';
import type { DType } from '../lib/engine/dtype';
import { markdownTable, repeatTimed, timedCall } from './measure';

export const description = 'fused attention forward/backward (tensor-core and CUDA-core kernels) at the training shapes';

export interface AttentionRow {
  bench: 'attention';
  device: string;
  deviceName: string;
  shape: string;
  mode: 'auto' | 'simt';
  dtype: DType;
  B: number;
  H: number;
  T: number;
  D: number;
  causal: boolean;
  dropout: number;
  window: number;
  softcap: number;
  fwdMs: number;
  bwdMs: number;
  fwdTflops: number;
  bwdTflops: number;
  repeats: number;
}

function timeMs(device: string, fn: () => void, budgetMs: number, maxRepeats: number): { ms: number; repeats: number } {
  timedCall(device, fn); // warm-up: allocator, shared-memory opt-in
  return repeatTimed(() => timedCall(device, fn), budgetMs, maxRepeats);
}

interface Shape {
  name: string;
  B: number;
  H: number;
  T: number;
  D: number;
  causal: boolean;
  dropout: number;
  window?: number;
  softcap?: number;
}

/** Query-key pairs each (b, h) computes: all, the causal half, or those inside the window. */
function visiblePairs(s: Shape): number {
  if (!s.causal) return s.T * s.T;
  if (!s.window || s.window >= s.T) return (s.T * s.T) / 2;
  return (s.window * (s.window + 1)) / 2 + (s.T - s.window) * s.window;
}

export async function run(args: string[]): Promise<AttentionRow[]> {
  const opt = (name: string) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  const quick = args.includes('--quick');
  const b = backends();
  const devices: string[] = [];
  if (!args.includes('--cuda-only')) devices.push('cpu');
  if (!args.includes('--cpu-only') && b.cuda.usable) devices.push('cuda:0');
  if (devices.length === 2 && !args.includes('--with-cpu')) devices.shift();
  const modes = (opt('modes')?.split(',') ?? ['auto', 'simt']) as ('auto' | 'simt')[];
  const N = native();
  const rows: AttentionRow[] = [];
  for (const device of devices) {
    const cuda = device.startsWith('cuda');
    const dtype = (opt('dtype') as DType | undefined) ?? (cuda ? 'bf16' : 'f32');
    const shapes: Shape[] =
      cuda && !quick
        ? [
            { name: 'gpt2-124m layer', B: 8, H: 12, T: 512, D: 64, causal: true, dropout: 0.1 },
            { name: 'llama-220m layer', B: 8, H: 16, T: 512, D: 64, causal: true, dropout: 0 },
            { name: 'mistral 4k, full causal', B: 1, H: 32, T: 4096, D: 128, causal: true, dropout: 0 },
            {
              name: 'mistral 4k, window 1024 + softcap 50',
              B: 1,
              H: 32,
              T: 4096,
              D: 128,
              causal: true,
              dropout: 0,
              window: 1024,
              softcap: 50,
            },
          ]
        : [{ name: 'small', B: 1, H: 4, T: quick ? 64 : 128, D: 64, causal: true, dropout: 0.1 }];
    for (const s of shapes) {
      for (const mode of cuda ? modes : (['auto'] as const)) {
        const prev = N.setCudaAttention(mode);
        try {
          tidy(() => {
            const mk = (seed: number) => randn([s.B, s.H, s.T, s.D], { dtype: 'f32', device, seed }).to(dtype);
            const q = mk(1),
              k = mk(2),
              v = mk(3),
              g = mk(4);
            const scale = 1 / Math.sqrt(s.D);
            let out: Tensor | null = null,
              lse: Tensor | null = null;
            const fwd = () => {
              out?.dispose();
              lse?.dispose();
              const [o, l] = N.attention(q.handle, k.handle, v.handle, null, s.causal, scale, s.dropout, 11, s.softcap ?? 0, s.window ?? 0);
              out = new Tensor(o);
              lse = new Tensor(l);
            };
            const budget = quick ? 200 : cuda ? 1500 : 1000;
            const maxRep = quick ? 3 : cuda ? 50 : 5;
            const f = timeMs(device, fwd, budget, maxRep);
            const bw = timeMs(
              device,
              () => {
                const grads = N.attentionBackward(
                  g.handle,
                  q.handle,
                  k.handle,
                  v.handle,
                  out!.handle,
                  lse!.handle,
                  null,
                  s.causal,
                  scale,
                  s.dropout,
                  11,
                  s.softcap ?? 0,
                  s.window ?? 0,
                );
                for (const h of grads) N.dispose(h);
              },
              budget,
              maxRep,
            );
            (out as Tensor | null)?.dispose();
            (lse as Tensor | null)?.dispose();
            const flops = 4 * s.B * s.H * visiblePairs(s) * s.D;
            const row: AttentionRow = {
              bench: 'attention',
              device,
              deviceName: cuda ? (b.cuda.devices[0]?.name ?? 'cuda') : `cpu x${b.cpu.threads}`,
              shape: s.name,
              mode,
              dtype,
              B: s.B,
              H: s.H,
              T: s.T,
              D: s.D,
              causal: s.causal,
              dropout: s.dropout,
              window: s.window ?? 0,
              softcap: s.softcap ?? 0,
              fwdMs: Number(f.ms.toFixed(4)),
              bwdMs: Number(bw.ms.toFixed(4)),
              fwdTflops: Number((flops / (f.ms / 1e3) / 1e12).toFixed(2)),
              bwdTflops: Number(((2.5 * flops) / (bw.ms / 1e3) / 1e12).toFixed(2)),
              repeats: f.repeats,
            };
            console.log(JSON.stringify(row));
            rows.push(row);
          });
        } finally {
          N.setCudaAttention(prev);
        }
      }
    }
  }
  const table = markdownTable(
    ['device', 'shape', 'kernels', 'dtype', 'B x H x T x D', 'fwd ms', 'bwd ms', 'fwd TFLOP/s', 'bwd TFLOP/s'],
    rows.map((r) => [
      r.deviceName,
      r.shape,
      r.device === 'cpu' ? 'cpu' : r.mode === 'auto' ? 'auto (tensor cores)' : 'simt (CUDA cores)',
      r.dtype,
      `${r.B} x ${r.H} x ${r.T} x ${r.D}`,
      r.fwdMs.toFixed(3),
      r.bwdMs.toFixed(3),
      r.fwdTflops.toFixed(2),
      r.bwdTflops.toFixed(2),
    ]),
  );
  console.log('\n' + table);
  return rows;
}
