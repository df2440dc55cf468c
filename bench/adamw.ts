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
import { synchronize, tidy, Tensor, backends } from '../lib';
import { native } from '../lib/engine/native';
import type { DType } from '../lib/engine/dtype';

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

function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function datasheetBandwidth(name: string): number | null {
  if (/H200/i.test(name)) return 4.16e12;
  if (/H100/i.test(name)) return 3.35e12;
  return null;
}

function measuredBandwidth(device: string, quick: boolean): number {
  return tidy(() => {
    const n = quick ? 1 << 24 : 1 << 27;
    const x = new Tensor(native().full([n], 1, 'f32', device));
    const y = new Tensor(native().full([n], 0, 'f32', device)); // touched first: no page faults timed
    const ts: number[] = [];
    for (let i = 0; i < (quick ? 3 : 7); i++) {
      synchronize(device);
      const t0 = process.hrtime.bigint();
      native().copy_(y.handle, x.handle);
      synchronize(device);
      ts.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    return (2 * 4 * n) / (median(ts.slice(1)) / 1e3);
  });
}

const itemsize = (dt: DType): number => (dt === 'f64' ? 8 : dt === 'f32' ? 4 : 2);

export async function run(args: string[]): Promise<Row[]> {
  const quick = args.includes('--quick');
  const opt = (name: string) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  const rates = opt('rates')?.split(',').map(Number) ?? [0.01, 0.05];
  const wdtype = (opt('dtype') ?? 'bf16') as DType;
  const b = backends();
  const devices: string[] = [];
  if (!args.includes('--cuda-only')) devices.push('cpu');
  if (!args.includes('--cpu-only') && b.cuda.usable) devices.push('cuda:0');
  console.error(
    `# adamw bench: cpu ${b.cpu.threads} threads, cuda ${b.cuda.usable ? b.cuda.devices.map((d) => d.name).join(', ') : 'not usable'}`,
  );
  const N = native();
  const current = N.setCudaSparseAdamW('rounds');
  N.setCudaSparseAdamW(current);
  const kernels = (opt('kernels')?.split(',') ?? [current]) as ('rounds' | 'prefetch')[];
  for (const k of kernels) if (k !== 'rounds' && k !== 'prefetch') throw new Error(`adamw bench: unknown kernel '${k}'`);
  const rows: Row[] = [];

  for (const device of devices) {
    const cuda = device.startsWith('cuda');
    const layers = Number(opt('layers') ?? (quick ? 1 : cuda ? 32 : 4));
    const measured = measuredBandwidth(device, quick);
    const given = cuda ? datasheetBandwidth(b.cuda.devices[0]?.name ?? '') : null;
    const bandwidth = given ?? measured;
    console.error(
      `# ${device}: measured copy bandwidth ${(measured / 1e9).toFixed(1)} GB/s${given ? `, datasheet ${(given / 1e9).toFixed(0)} GB/s` : ''}`,
    );
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
          for (const kernel of cuda ? kernels : (['cpu'] as const)) {
            const once = (): number => {
              synchronize(device);
              const t0 = process.hrtime.bigint();
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
              synchronize(device);
              return Number(process.hrtime.bigint() - t0) / 1e6;
            };
            if (kernel !== 'cpu') N.setCudaSparseAdamW(kernel);
            const ts: number[] = [];
            let repeats = 0;
            try {
              const first = once();
              const budget = quick ? 300 : cuda ? 2000 : 5000;
              repeats = Math.max(3, Math.min(quick ? 5 : cuda ? 30 : 9, Math.floor(budget / Math.max(first, 1e-3))));
              for (let i = 0; i < repeats; i++) ts.push(once());
            } finally {
              N.setCudaSparseAdamW(current);
            }
            const ms = median(ts);
            const floorMs = (floorBytes / bandwidth) * 1e3;
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
              ms: Number(ms.toFixed(3)),
              gbps: Number((floorBytes / (ms / 1e3) / 1e9).toFixed(1)),
              floorBytes,
              floorMs: Number(floorMs.toFixed(3)),
              floorFormula,
              ratio: Number((ms / floorMs).toFixed(2)),
              bandwidth,
              bandwidthSource: given ? 'datasheet' : 'measured',
              repeats,
            };
            console.log(JSON.stringify(row));
            rows.push(row);
          }
        });
      }
    });
  }

  const header = ['device', 'kernel', 'weights', 'layers', 'rate', 'k', 'ms', 'GB/s (floor bytes)', 'floor ms', 'ms/floor'];
  const lines = [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`];
  for (const x of rows) {
    lines.push(
      `| ${[x.device, x.kernel, x.weightDtype, x.layers, `${x.rate * 100}%`, x.k, x.ms.toFixed(3), x.gbps.toFixed(1), x.floorMs.toFixed(3), x.ratio.toFixed(2)].join(' | ')} |`,
    );
  }
  if (rows.length) lines.push('', `floor bytes: ${rows[rows.length - 1].floorFormula}`);
  console.log('\n' + lines.join('\n'));
  return rows;
}
