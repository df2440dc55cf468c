/**
 * What the kernel benches share: the devices a run covers, a call timed between two
 * synchronisations, the median of budgeted repeats, the bandwidth a floor is computed from, the
 * choice of CUDA kernels (--kernels) and the markdown table they print after their JSON rows.
 */
import { synchronize, tidy, Tensor, backends } from '../lib';
import { native } from '../lib/engine/native';

export function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** The value of `--name=value` in args. */
export function flagValue(args: string[], name: string): string | undefined {
  return args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
}

/** 'cpu' and 'cuda:0' (where usable), less what --cuda-only / --cpu-only leave out; prints the bench's first line. */
export function benchDevices(bench: string, args: string[]): string[] {
  const b = backends();
  const devices: string[] = [];
  if (!args.includes('--cuda-only')) devices.push('cpu');
  if (!args.includes('--cpu-only') && b.cuda.usable) devices.push('cuda:0');
  console.error(
    `# ${bench} bench: cpu ${b.cpu.threads} threads, cuda ${b.cuda.usable ? b.cuda.devices.map((d) => d.name).join(', ') : 'not usable'}`,
  );
  return devices;
}

/** Milliseconds of one call of `fn`, between two synchronisations of the device; what it returns is disposed after. */
export function timedCall(device: string, fn: () => { dispose(): void } | null | void): number {
  synchronize(device);
  const t0 = process.hrtime.bigint();
  const y = fn();
  synchronize(device);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  y?.dispose();
  return ms;
}

/**
 * One warm-up call (its time sizes the run), then as many repeats as fit in budgetMs (at least 3,
 * at most maxRepeats); the median of the repeats.
 */
export function repeatTimed(once: () => number, budgetMs: number, maxRepeats: number): { ms: number; repeats: number } {
  const first = once();
  const repeats = Math.max(3, Math.min(maxRepeats, Math.floor(budgetMs / Math.max(first, 1e-3))));
  const ts: number[] = [];
  for (let i = 0; i < repeats; i++) ts.push(once());
  return { ms: median(ts), repeats };
}

/** The memory bandwidth a floor is computed from, in B/s. */
export interface Bandwidth {
  bandwidth: number;
  bandwidthSource: 'datasheet' | 'measured';
  /** the measured copy bandwidth */
  measured: number;
}

function datasheetBandwidth(name: string): number | null {
  if (/H200/i.test(name)) return 4.16e12;
  if (/H100/i.test(name)) return 3.35e12;
  return null;
}

/**
 * The device's copy bandwidth, measured (copy_ into a buffer touched first, so no page faults are
 * timed: each byte read and written once), and the datasheet figure for H100 (3.35e12 B/s) and
 * H200 (4.16e12 B/s); a floor uses the datasheet figure where there is one. Prints both.
 */
export function floorBandwidth(device: string, quick: boolean): Bandwidth {
  const measured = tidy(() => {
    const n = quick ? 1 << 24 : 1 << 27;
    const x = new Tensor(native().full([n], 1, 'f32', device));
    const y = new Tensor(native().full([n], 0, 'f32', device));
    const ts: number[] = [];
    for (let i = 0; i < (quick ? 3 : 7); i++) ts.push(timedCall(device, () => native().copy_(y.handle, x.handle)));
    return (2 * 4 * n) / (median(ts.slice(1)) / 1e3);
  });
  const b = backends();
  const given = device.startsWith('cuda') ? datasheetBandwidth(b.cuda.devices[0]?.name ?? '') : null;
  console.error(
    `# ${device}: measured copy bandwidth ${(measured / 1e9).toFixed(1)} GB/s${given ? `, datasheet ${(given / 1e9).toFixed(0)} GB/s` : ''}`,
  );
  return { bandwidth: given ?? measured, bandwidthSource: given ? 'datasheet' : 'measured', measured };
}

/** ms against a floor of `bytes` at `bw`: the row fields every floor bench reports. */
export function floorFields(
  ms: number,
  bytes: number,
  bw: Bandwidth,
  floorDigits = 4,
): { ms: number; gbps: number; floorMs: number; ratio: number; bandwidth: number; bandwidthSource: Bandwidth['bandwidthSource'] } {
  const floorMs = (bytes / bw.bandwidth) * 1e3;
  return {
    ms: Number(ms.toFixed(3)),
    gbps: Number((bytes / (ms / 1e3) / 1e9).toFixed(1)),
    floorMs: Number(floorMs.toFixed(floorDigits)),
    ratio: Number((ms / floorMs).toFixed(2)),
    bandwidth: bw.bandwidth,
    bandwidthSource: bw.bandwidthSource,
  };
}

/**
 * The CUDA kernels a bench times, one row each: --kernels=a,b, by default the current mode of the
 * native switch `set` (which returns the previous mode). `using(kernel, fn)` runs fn under that
 * kernel ('cpu': unchanged) and restores the mode.
 */
export function kernelChoice<K extends string>(
  bench: string,
  args: string[],
  known: readonly K[],
  set: (mode: K) => K,
): { kernels: K[]; using<T>(kernel: K | 'cpu', fn: () => T): T } {
  const current = set(known[0]);
  set(current);
  const kernels = (flagValue(args, 'kernels')?.split(',') ?? [current]) as K[];
  for (const k of kernels) if (!known.includes(k)) throw new Error(`${bench} bench: unknown kernel '${k}'`);
  return {
    kernels,
    using<T>(kernel: K | 'cpu', fn: () => T): T {
      if (kernel === 'cpu') return fn();
      set(kernel);
      try {
        return fn();
      } finally {
        set(current);
      }
    },
  };
}

/** A markdown table; null and undefined cells are empty, '|' and newlines in a cell are escaped. */
export function markdownTable(header: string[], rows: (string | number | null | undefined)[][]): string {
  const cell = (x: string | number | null | undefined) =>
    x === null || x === undefined ? '' : String(x).replace(/\|/g, '/').replace(/\n/g, ' ');
  return [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.map(cell).join(' | ')} |`)].join(
    '\n',
  );
}
