/**
 * SIFT top-k: time of topk(|g|, rate * numel) on weight-sized score tensors, with the effective
 * bandwidth (bytes of scores read once / time), the floor (those bytes at the device's copy
 * bandwidth) and time / floor. The copy bandwidth is measured and, for H100 / H200, also given
 * from the datasheet figure; the floor uses the given figure when there is one (bench/measure.ts).
 * Prints one JSON object per measurement, then a table. Timing: one warm-up, then the median of
 * repeats, each ended by synchronize(). A bracket row counts its calls (the warm-up and the
 * repeats) in which the bracket missed (cudaSelectStats: those ran the radix kernels).
 *
 * Flags: --cpu-only, --cuda-only, --quick (smaller sizes, fewer repeats), --dtypes=f32,bf16,
 * --rates=0.01,0.05, --sizes=4096x4096,4096x11008 (default: those two on CPU, plus 8192x28672 on CUDA),
 * --kernels=radix,bracket (the CUDA kernels timed, one row each; default: the current setCudaSelect
 * mode). The speedups over torch.topk are in the gpu-check summary (bench/summary.ts, peers.jsonl).
 */
import { randn, tidy, Tensor } from '../lib';
import { native } from '../lib/engine/native';
import type { DType } from '../lib/engine/dtype';
import { benchDevices, flagValue, floorBandwidth, floorFields, kernelChoice, markdownTable, repeatTimed, timedCall } from './measure';

export const description = 'SIFT top-k selection time and effective bandwidth vs the copy-bandwidth floor';

export interface Row {
  bench: 'select';
  device: string;
  /** the CUDA kernels (setCudaSelect), 'cpu' on the CPU */
  kernel: 'cpu' | 'radix' | 'bracket';
  /** kernel 'bracket': of the row's repeats + 1 calls (the warm-up included), those in which the bracket missed (the radix kernels selected) */
  bracketMisses?: number;
  dtype: DType;
  shape: string;
  numel: number;
  rate: number;
  k: number;
  ms: number;
  /** bytes of scores / time, GB/s */
  gbps: number;
  /** scores' bytes at the copy bandwidth used, ms */
  floorMs: number;
  /** ms / floorMs */
  ratio: number;
  bandwidth: number;
  bandwidthSource: 'datasheet' | 'measured';
  repeats: number;
}

/** |N(0, 1)| scores of the given dtype on the device (the usual SIFT score is |grad|). */
function scores(rows: number, cols: number, dtype: DType, device: string): Tensor {
  const N = native();
  const g = randn([rows, cols], { dtype: 'f32', device, seed: 1234 });
  const s = new Tensor(N.full([rows, cols], 0, 'f32', device));
  N.scoreAccumulate(s.handle, g.handle, 'abs', false);
  g.dispose();
  if (dtype === 'f32') return s;
  const c = new Tensor(N.cast(s.handle, dtype));
  s.dispose();
  return c;
}

export async function run(args: string[]): Promise<Row[]> {
  const quick = args.includes('--quick');
  const opt = (name: string) => flagValue(args, name);
  const dtypes = (opt('dtypes')?.split(',') ?? ['f32', 'bf16']) as DType[];
  const rates = opt('rates')?.split(',').map(Number) ?? [0.01, 0.05];
  const parseSize = (s: string) => s.split('x').map(Number) as [number, number];
  const devices = benchDevices('select', args);
  const N = native();
  const choice = kernelChoice('select', args, ['radix', 'bracket'] as const, (m) => N.setCudaSelect(m));

  const rows: Row[] = [];
  for (const device of devices) {
    const cuda = device.startsWith('cuda');
    const defaults = quick ? ['1024x4096', '4096x4096'] : cuda ? ['4096x4096', '4096x11008', '8192x28672'] : ['4096x4096', '4096x11008'];
    const sizes = (opt('sizes')?.split(',') ?? defaults).map(parseSize);
    const bw = floorBandwidth(device, quick);
    for (const dtype of dtypes) {
      for (const [r, c] of sizes) {
        tidy(() => {
          const s = scores(r, c, dtype, device);
          const numel = r * c;
          const bytes = numel * (dtype === 'f64' ? 8 : dtype === 'f32' ? 4 : 2);
          for (const rate of rates) {
            for (const kernel of cuda ? choice.kernels : (['cpu'] as const)) {
              const k = Math.max(1, Math.round(rate * numel));
              const budget = quick ? 300 : cuda ? 1500 : 3000;
              const before = N.cudaSelectStats();
              const { ms, repeats } = choice.using(kernel, () =>
                repeatTimed(() => timedCall(device, () => new Tensor(N.topk(s.handle, k))), budget, quick ? 5 : cuda ? 30 : 7),
              );
              const row: Row = {
                bench: 'select',
                device,
                kernel,
                ...(kernel === 'bracket' ? { bracketMisses: N.cudaSelectStats().bracketMisses - before.bracketMisses } : {}),
                dtype,
                shape: `${r}x${c}`,
                numel,
                rate,
                k,
                ...floorFields(ms, bytes, bw),
                repeats,
              };
              console.log(JSON.stringify(row));
              rows.push(row);
            }
          }
        });
      }
    }
  }
  const table = markdownTable(
    ['device', 'kernel', 'dtype', 'shape', 'rate', 'k', 'ms', 'GB/s', 'floor ms', 'ms/floor'],
    rows.map((x) => [
      x.device,
      x.bracketMisses ? `${x.kernel} (missed ${x.bracketMisses}x: radix)` : x.kernel,
      x.dtype,
      x.shape,
      `${x.rate * 100}%`,
      x.k,
      x.ms.toFixed(3),
      x.gbps.toFixed(1),
      x.floorMs.toFixed(3),
      x.ratio.toFixed(1),
    ]),
  );
  console.log('\n' + table);
  return rows;
}
