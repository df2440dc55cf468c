/**
 * SIFT top-k: time of topk(|g|, rate * numel) on weight-sized score tensors, with the effective
 * bandwidth (bytes of scores read once / time), the floor (those bytes at the device's copy
 * bandwidth) and time / floor. The copy bandwidth is measured (a device-to-device clone: read +
 * write) and, for H100 / H200, also given from the datasheet figure (3.35e12 / 4.16e12 B/s); the
 * floor uses the given figure when there is one. Prints one JSON object per measurement, then a
 * table. Timing: one warm-up, then the median of repeats, each ended by synchronize().
 *
 * Flags: --cpu-only, --cuda-only, --quick (smaller sizes, fewer repeats), --dtypes=f32,bf16,
 * --rates=0.01,0.05, --sizes=4096x4096,4096x11008 (default: those two on CPU, plus 8192x28672 on CUDA),
 * --kernels=radix,bracket (the CUDA kernels timed, one row each; default: the current setCudaSelect
 * mode). The speedups over torch.topk are in the gpu-check summary (bench/summary.ts, peers.jsonl).
 */
import { randn, synchronize, tidy, Tensor, backends } from '../lib';
import { native } from '../lib/engine/native';
import type { DType } from '../lib/engine/dtype';

export const description = 'SIFT top-k selection time and effective bandwidth vs the copy-bandwidth floor';

export interface Row {
  bench: 'select';
  device: string;
  /** the CUDA kernels (setCudaSelect), 'cpu' on the CPU */
  kernel: 'cpu' | 'radix' | 'bracket';
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

function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function timeIt(device: string, fn: () => Tensor | null, budgetMs: number, maxRepeats: number): { ms: number; repeats: number } {
  const once = (): number => {
    synchronize(device);
    const t0 = process.hrtime.bigint();
    const y = fn();
    synchronize(device);
    const t1 = process.hrtime.bigint();
    y?.dispose();
    return Number(t1 - t0) / 1e6;
  };
  const first = once();
  const repeats = Math.max(3, Math.min(maxRepeats, Math.floor(budgetMs / Math.max(first, 1e-3))));
  const ts: number[] = [];
  for (let i = 0; i < repeats; i++) ts.push(once());
  return { ms: median(ts), repeats };
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

function datasheetBandwidth(name: string): number | null {
  if (/H200/i.test(name)) return 4.16e12;
  if (/H100/i.test(name)) return 3.35e12;
  return null;
}

/** Copy bandwidth in B/s: a clone reads and writes each byte once. */
function measuredBandwidth(device: string, quick: boolean): number {
  return tidy(() => {
    const n = quick ? 1 << 24 : 1 << 27;
    const x = new Tensor(native().full([n], 1, 'f32', device));
    const { ms } = timeIt(device, () => new Tensor(native().clone(x.handle)), quick ? 200 : 1000, 20);
    return (2 * 4 * n) / (ms / 1e3);
  });
}

export async function run(args: string[]): Promise<Row[]> {
  const quick = args.includes('--quick');
  const opt = (name: string) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  const dtypes = (opt('dtypes')?.split(',') ?? ['f32', 'bf16']) as DType[];
  const rates = opt('rates')?.split(',').map(Number) ?? [0.01, 0.05];
  const parseSize = (s: string) => s.split('x').map(Number) as [number, number];
  const b = backends();
  const devices: string[] = [];
  if (!args.includes('--cuda-only')) devices.push('cpu');
  if (!args.includes('--cpu-only') && b.cuda.usable) devices.push('cuda:0');
  console.error(
    `# select bench: cpu ${b.cpu.threads} threads, cuda ${b.cuda.usable ? b.cuda.devices.map((d) => d.name).join(', ') : 'not usable'}`,
  );

  const current = native().setCudaSelect('radix');
  native().setCudaSelect(current);
  const kernels = (opt('kernels')?.split(',') ?? [current]) as ('radix' | 'bracket')[];
  for (const k of kernels) if (k !== 'radix' && k !== 'bracket') throw new Error(`select bench: unknown kernel '${k}'`);

  const rows: Row[] = [];
  for (const device of devices) {
    const cuda = device.startsWith('cuda');
    const defaults = quick ? ['1024x4096', '4096x4096'] : cuda ? ['4096x4096', '4096x11008', '8192x28672'] : ['4096x4096', '4096x11008'];
    const sizes = (opt('sizes')?.split(',') ?? defaults).map(parseSize);
    const measured = measuredBandwidth(device, quick);
    const given = cuda ? datasheetBandwidth(b.cuda.devices[0]?.name ?? '') : null;
    const bandwidth = given ?? measured;
    console.error(
      `# ${device}: measured copy bandwidth ${(measured / 1e9).toFixed(1)} GB/s${given ? `, datasheet ${(given / 1e9).toFixed(0)} GB/s` : ''}`,
    );
    for (const dtype of dtypes) {
      for (const [r, c] of sizes) {
        tidy(() => {
          const s = scores(r, c, dtype, device);
          const numel = r * c;
          const bytes = numel * (dtype === 'f64' ? 8 : dtype === 'f32' ? 4 : 2);
          for (const rate of rates) {
            for (const kernel of cuda ? kernels : (['cpu'] as const)) {
              const k = Math.max(1, Math.round(rate * numel));
              const budget = quick ? 300 : cuda ? 1500 : 3000;
              if (kernel !== 'cpu') native().setCudaSelect(kernel);
              let timed: { ms: number; repeats: number };
              try {
                timed = timeIt(device, () => new Tensor(native().topk(s.handle, k)), budget, quick ? 5 : cuda ? 30 : 7);
              } finally {
                native().setCudaSelect(current);
              }
              const { ms, repeats } = timed;
              const floorMs = (bytes / bandwidth) * 1e3;
              const row: Row = {
                bench: 'select',
                device,
                kernel,
                dtype,
                shape: `${r}x${c}`,
                numel,
                rate,
                k,
                ms: Number(ms.toFixed(3)),
                gbps: Number((bytes / (ms / 1e3) / 1e9).toFixed(1)),
                floorMs: Number(floorMs.toFixed(4)),
                ratio: Number((ms / floorMs).toFixed(2)),
                bandwidth,
                bandwidthSource: given ? 'datasheet' : 'measured',
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
  const header = ['device', 'kernel', 'dtype', 'shape', 'rate', 'k', 'ms', 'GB/s', 'floor ms', 'ms/floor'];
  const lines = [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`];
  for (const x of rows) {
    lines.push(
      `| ${[x.device, x.kernel, x.dtype, x.shape, `${x.rate * 100}%`, x.k, x.ms.toFixed(3), x.gbps.toFixed(1), x.floorMs.toFixed(3), x.ratio.toFixed(1)].join(' | ')} |`,
    );
  }
  console.log('\n' + lines.join('\n'));
  return rows;
}
