/**
 * Fused sparse AdamW: one sparseAdamW step over all linear weights of a LLaMA-shaped model
 * (per layer q, k, v, o 4096x4096; gate, up 11008x4096; down 4096x11008; 32 layers on CUDA, 4 on
 * the CPU by default), bf16 weights, f32 state, i32 indices, at selection rates 1% and 5%.
 *
 * Floor: the bytes that must move / bandwidth. Per entry the kernel streams g, m, v, master, idx in
 * (5 x 4 B) and m, v, master out (3 x 4 B); it never reads the weight itself (the master is the
 * value). Each weight write is scattered and costs a whole memory transaction: on the CPU one
 * 64-byte cache line read and written back; on CUDA one 32-byte sector read and written back. The
 * CUDA read was missing from this model until the first H200 run: HBM3/HBM3e on H100/H200 runs
 * with ECC on (the default), whose check bits cover the whole sector, so a 2-byte write into a
 * sector must be merged with the sector's old contents (L2 reads the sector from DRAM, then writes
 * it back); a sector whose bytes are not all written can only reach DRAM that way. The kernel
 * cannot avoid it (the other bytes of the sector belong to unselected entries), so it is part of
 * the floor, not slack. Not yet measured: on a GPU, Nsight Compute's dram__bytes_read.sum over the
 * step should be about k x (20 + 32) B. Never more than the weight's own bytes each way (when the
 * selection is dense enough that the sectors of a tensor are all touched). Bandwidth: the datasheet figure given for H100
 * (3.35e12 B/s) and H200 (4.16e12 B/s), else a measured copy bandwidth (copy_ into a touched
 * buffer: read + write). The selection is evenly spaced (every 1/rate-th entry): at 5% of bf16
 * the writes are 40 bytes apart, so on CUDA every write is its own sector, as the worst case counts.
 * On a 7B shape: 5% (k = 323.8M) moves k x 96 B = 31.1 GB (7.47 ms at 4.16 TB/s; 4.98 ms without
 * the sector reads), 1% (k = 64.76M) 6.2 GB (1.49 ms; 1.00 ms without).
 * Prints one JSON object per measurement, then a table.
 *
 * Flags: --cpu-only, --cuda-only, --quick (1 layer, fewer repeats), --layers=N, --rates=0.01,0.05,
 * --dtype=bf16 (weight dtype), --kernels=rounds,prefetch (the CUDA kernels timed, one row each;
 * default: the current setCudaSparseAdamW mode). Every row carries the floor's formula.
 */
import { tidy, Tensor } from '../lib';
import { native } from '../lib/engine/native';
import type { DType } from '../lib/engine/dtype';
import { benchDevices, flagValue, floorBandwidth, floorFields, kernelChoice, markdownTable, repeatTimed, timedCall } from './measure';

export const description = 'fused sparse AdamW step over a LLaMA-7B-shaped model vs the bytes-moved floor';

export interface Row {
  bench: 'adamw';
  device: string;
  /** the CUDA kernel (setCudaSparseAdamW), 'cpu' on the CPU */
  kernel: 'cpu' | 'rounds' | 'prefetch';
  weightDtype: DType;
  layers: number;
  tensors: number;
  params: number;
  rate: number;
  k: number;
  ms: number;
  /** floor bytes / time, GB/s */
  gbps: number;
  floorBytes: number;
  floorMs: number;
  /** how floorBytes is counted */
  floorFormula: string;
  ratio: number;
  bandwidth: number;
  bandwidthSource: 'datasheet' | 'measured';
  repeats: number;
}

const LAYER_SHAPES: [string, number, number][] = [
  ['q', 4096, 4096],
  ['k', 4096, 4096],
  ['v', 4096, 4096],
  ['o', 4096, 4096],
  ['gate', 11008, 4096],
  ['up', 11008, 4096],
  ['down', 4096, 11008],
];

const itemsize = (dt: DType): number => (dt === 'f64' ? 8 : dt === 'f32' ? 4 : 2);

export async function run(args: string[]): Promise<Row[]> {
  const quick = args.includes('--quick');
  const opt = (name: string) => flagValue(args, name);
  const rates = opt('rates')?.split(',').map(Number) ?? [0.01, 0.05];
  const wdtype = (opt('dtype') ?? 'bf16') as DType;
  const devices = benchDevices('adamw', args);
  const N = native();
  const choice = kernelChoice('adamw', args, ['rounds', 'prefetch'] as const, (m) => N.setCudaSparseAdamW(m));
  const rows: Row[] = [];

  for (const device of devices) {
    const cuda = device.startsWith('cuda');
    const layers = Number(opt('layers') ?? (quick ? 1 : cuda ? 32 : 4));
    const bw = floorBandwidth(device, quick);
    // Bytes of weight memory that one scattered write moves: a sector (CUDA) or a line (CPU), read and
    // written back (see the header: ECC on HBM makes a partial sector write a read-modify-write).
    const sector = cuda ? 32 : 64;
    const perWrite = 2 * sector;
    const floorFormula =
      `k x 32 B (read g, m, v, master, idx: 5 x 4 B; written m, v, master: 3 x 4 B) + per weight tensor ` +
      `min(k x ${perWrite} B, 2 x its bytes rounded to ${sector} B) (a scattered write moves its ${cuda ? 'sector' : 'cache line'} ` +
      `in and out); floor ms = bytes / bandwidth; ratio = ms / floor ms`;
    console.error(`# ${device} floor: ${floorFormula}`);

    tidy(() => {
      const shapes: [number, number][] = [];
      for (let l = 0; l < layers; l++) for (const [, r, c] of LAYER_SHAPES) shapes.push([r, c]);
      const weights = shapes.map(([r, c]) => new Tensor(N.full([r, c], 0.01, wdtype, device)));
      const params = shapes.reduce((a, [r, c]) => a + r * c, 0);
      for (const rate of rates) {
        tidy(() => {
          const stride = Math.max(1, Math.round(1 / rate));
          let k = 0;
          let floorBytes = 0;
          const idx: Tensor[] = [],
            g: Tensor[] = [],
            m: Tensor[] = [],
            v: Tensor[] = [],
            p: Tensor[] = [];
          shapes.forEach(([r, c], t) => {
            const numel = r * c;
            const it = new Tensor(N.arange(t % stride, numel, stride, 'i32', device));
            const kt = it.shape[0];
            idx.push(it);
            g.push(new Tensor(N.randn([kt], 'f32', device, 1000 + t)));
            m.push(new Tensor(N.full([kt], 0, 'f32', device)));
            v.push(new Tensor(N.full([kt], 0, 'f32', device)));
            p.push(new Tensor(N.full([kt], 0.01, 'f32', device)));
            k += kt;
            const weightBytes = Math.ceil((numel * itemsize(wdtype)) / sector) * sector;
            floorBytes += kt * 32 + Math.min(kt * perWrite, weightBytes * (perWrite / sector));
          });
          const H = (ts: Tensor[]) => ts.map((x) => x.handle);
          let step = 0;
          const adamwStep = () =>
            N.sparseAdamW(
              H(weights),
              H(idx),
              H(g),
              H(m),
              H(v),
              H(p),
              { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: ++step },
              null,
            );
          for (const kernel of cuda ? choice.kernels : (['cpu'] as const)) {
            const budget = quick ? 300 : cuda ? 2000 : 5000;
            const { ms, repeats } = choice.using(kernel, () =>
              repeatTimed(() => timedCall(device, adamwStep), budget, quick ? 5 : cuda ? 30 : 9),
            );
            const row: Row = {
              bench: 'adamw',
              device,
              kernel,
              weightDtype: wdtype,
              layers,
              tensors: shapes.length,
              params,
              rate,
              k,
              floorBytes,
              floorFormula,
              ...floorFields(ms, floorBytes, bw, 3),
              repeats,
            };
            console.log(JSON.stringify(row));
            rows.push(row);
          }
        });
      }
    });
  }

  const table = markdownTable(
    ['device', 'kernel', 'weights', 'layers', 'rate', 'k', 'ms', 'GB/s (floor bytes)', 'floor ms', 'ms/floor'],
    rows.map((x) => [
      x.device,
      x.kernel,
      x.weightDtype,
      x.layers,
      `${x.rate * 100}%`,
      x.k,
      x.ms.toFixed(3),
      x.gbps.toFixed(1),
      x.floorMs.toFixed(3),
      x.ratio.toFixed(2),
    ]),
  );
  console.log('\n' + table + (rows.length ? `\n\nfloor bytes: ${rows[rows.length - 1].floorFormula}` : ''));
  return rows;
}
