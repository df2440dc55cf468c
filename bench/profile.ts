/**
 * Per-op profile of one training step (the step of bench/train.ts), to find the largest gaps.
 *
 * Every function of the native module is wrapped in place: each call is counted and its host time
 * (the time spent inside the N-API call: argument checks, allocation, the kernel launch or the CPU
 * queueing) summed per op. The step is timed between device synchronisations, so
 * `step - host(native)` shows what JavaScript itself costs and whether the device or the host
 * bounds the step. With --sync-each the device is synchronised after every op and the time
 * attributed to it is (close to) its device time: slower overall, but it names the slow kernels.
 * Launches: calls of ops that queue device work (metadata reads, views and disposals excluded).
 * On CUDA (unless --sync-each or --no-events) every launching op is also bracketed by two CUDA
 * events on the stream, so each op's device time (all its kernels, cuBLAS included) is measured
 * without synchronising inside the step; the sum of those is the device's busy time, and
 * step - busy is how long the device sat idle waiting for the host.
 *
 * Before the instrumented steps, the same steps run plain (no wrappers, no per-op events) between
 * two CUDA events: that wall time per step (plainStepMs) and device span are the step as a user
 * gets it, and busyShare = deviceBusyMs / plainStepMs is the share of the step the device worked.
 *
 * Flags: --model=gpt2|llama, --method=sift|full|lora, --rate=0.01, --small, --cpu-only,
 * --batch=B --seq=T, --steps=N (profiled steps, default 3), --top=N, --sync-each, --no-events,
 * --dtype=bf16|f32, --graphs (CUDA, sift: forward and backward replayed as a CUDA graph; dropout off,
 * as a graph would replay one set of masks), --no-dropout (the same work without graphs, to compare).
 */
import { backends, synchronize } from '../lib';
import { native } from '../lib/engine/native';
import type { Addon } from '../lib/engine/addon-types';
import { setupRun, modelSpec, ModelKey, BenchMethod } from './train';

export const description = 'per-op host/device time and launch count of one training step (finds the largest gaps)';

/** Native functions that only read metadata or release memory: not counted as launches. */
const NOT_LAUNCHES = new Set([
  'shape',
  'strides',
  'offset',
  'dtype',
  'device',
  'isContiguous',
  'sameStorage',
  'isDisposed',
  'dispose',
  'view',
  'backends',
  'liveTensors',
  'cudaMemory',
  'gemmInfo',
  'cudaGemmEpilogues',
  'synchronize',
  'resetPeakMemory',
  'emptyCache',
  'setErrorClass',
  'setCpuGemm',
  'setCudaAttention',
  'cudaEventRecord',
  'cudaEventElapsed',
  'cudaEventsReset',
  'cudaGraphStats',
]);

export interface OpStat {
  op: string;
  calls: number;
  /** Host nanoseconds inside the native call (with --sync-each: until the device finished it). */
  ns: number;
  /** Device milliseconds between the CUDA events around its calls (events mode), else null. */
  deviceMs: number | null;
}

export interface Profiler {
  stats(): OpStat[];
  reset(): void;
  /** Calls of ops that queue work. */
  launches(): number;
  /** Restores the original functions. */
  restore(): void;
  /** Events mode: reads the recorded events (waits for the device) into each op's deviceMs; returns the total. */
  collectDeviceTimes(): number;
}

/**
 * Wraps every function property of the addon object in place (the library reaches the addon
 * through native(), which returns this same object, so library code is profiled unchanged).
 * syncDevice: synchronise that device after each launching op (device time per op).
 */
export function instrument(addon: Addon, syncDevice: string | null = null, eventsDevice: number | null = null): Profiler {
  const target = addon as unknown as Record<string, unknown>;
  const originals = new Map<string, Function>();
  const table = new Map<string, OpStat>();
  const sync = target.synchronize as (d: string) => void;
  const record = eventsDevice === null ? () => -1 : (target.cudaEventRecord as (d: number) => number).bind(addon);
  const elapsed = eventsDevice === null ? () => 0 : (target.cudaEventElapsed as (d: number, a: number, b: number) => number).bind(addon);
  const marks: { stat: OpStat; a: number; b: number }[] = [];
  if (eventsDevice !== null) (target.cudaEventsReset as (d: number) => void).call(addon, eventsDevice);
  for (const [name, value] of Object.entries(target)) {
    if (typeof value !== 'function' || name === 'NativeTensor' || name === 'setErrorClass') continue;
    const fn = value as (...a: unknown[]) => unknown;
    originals.set(name, fn);
    const stat: OpStat = { op: name, calls: 0, ns: 0, deviceMs: null };
    table.set(name, stat);
    const launching = !NOT_LAUNCHES.has(name);
    const timed = launching && eventsDevice !== null;
    target[name] = function wrapped(this: unknown, ...args: unknown[]) {
      const t0 = process.hrtime.bigint();
      const a = timed ? record(eventsDevice!) : -1;
      try {
        const r = fn.apply(this, args);
        if (syncDevice && launching) sync(syncDevice);
        return r;
      } finally {
        if (timed) marks.push({ stat, a, b: record(eventsDevice!) });
        stat.calls++;
        stat.ns += Number(process.hrtime.bigint() - t0);
      }
    };
  }
  return {
    stats: () => [...table.values()].filter((s) => s.calls > 0).sort((a, b) => (b.deviceMs ?? 0) - (a.deviceMs ?? 0) || b.ns - a.ns),
    reset: () => {
      table.forEach((s) => {
        s.calls = 0;
        s.ns = 0;
        s.deviceMs = null;
      });
      marks.length = 0;
      if (eventsDevice !== null) (originals.get('cudaEventsReset') as (d: number) => void).call(addon, eventsDevice);
    },
    launches: () => [...table.values()].filter((s) => !NOT_LAUNCHES.has(s.op)).reduce((a, s) => a + s.calls, 0),
    restore: () =>
      originals.forEach((fn, name) => {
        target[name] = fn;
      }),
    collectDeviceTimes: () => {
      let total = 0;
      for (const m of marks) {
        const ms = elapsed(eventsDevice!, m.a, m.b);
        m.stat.deviceMs = (m.stat.deviceMs ?? 0) + ms;
        total += ms;
      }
      marks.length = 0;
      return total;
    },
  };
}

export interface ProfileRow {
  bench: 'profile';
  device: string;
  model: string;
  method: BenchMethod;
  rate: number | null;
  syncEach: boolean;
  steps: number;
  /** Wall time per step between device synchronisations. */
  stepMs: number;
  /** Host time inside native calls per step. */
  nativeHostMs: number;
  /** Waiting for the device after the last step was queued, per step: > 0 when the device bounds the step. */
  deviceWaitMs: number;
  /** stepMs - nativeHostMs - deviceWaitMs: JavaScript itself (autograd, module code, hooks). */
  jsMs: number;
  launchesPerStep: number;
  callsPerStep: number;
  /** Events mode: device busy time per step (sum of the ops' device times), else null. */
  deviceBusyMs: number | null;
  /** Forward and backward replayed as a CUDA graph (--graphs). */
  graphs: boolean;
  /** Wall time per step of the plain (uninstrumented) steps. */
  plainStepMs: number;
  /** CUDA: device time per plain step between events recorded before the first and after the last, else null. */
  plainDeviceSpanMs: number | null;
  /** deviceBusyMs / plainStepMs: the share of the step the device was busy (goal: >= 0.95), else null. */
  busyShare: number | null;
  /** msPerStep: host time; deviceMsPerStep: device time (events mode) or null; share: of the step. */
  top: { op: string; callsPerStep: number; msPerStep: number; deviceMsPerStep: number | null; share: number }[];
}

export async function run(args: string[]): Promise<ProfileRow> {
  const opt = (name: string) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  const b = backends();
  const device = !args.includes('--cpu-only') && b.cuda.usable ? 'cuda:0' : 'cpu';
  const cuda = device !== 'cpu';
  const small = args.includes('--small') || !cuda;
  const key = (opt('model') ?? 'gpt2') as ModelKey;
  const method = (opt('method') ?? 'sift') as BenchMethod;
  const rate = Number(opt('rate') ?? 0.01);
  const steps = Number(opt('steps') ?? 3);
  const topN = Number(opt('top') ?? 15);
  const syncEach = args.includes('--sync-each');
  const spec = modelSpec(key, small);
  const setup = setupRun(spec, method, {
    device,
    dtype: (opt('dtype') as 'bf16' | 'f32' | undefined) ?? (cuda ? 'bf16' : 'f32'),
    batch: Number(opt('batch') ?? (small ? 4 : 8)),
    seq: Number(opt('seq') ?? (small ? 64 : 512)),
    rate,
    graphs: args.includes('--graphs'),
    noDropout: args.includes('--no-dropout'),
  });
  console.error(
    `# profile: ${spec.name} ${method}${method === 'sift' ? ` ${rate * 100}%` : ''} on ${cuda ? b.cuda.devices[0]?.name : `cpu x${b.cpu.threads}`}${syncEach ? ', synchronising after each op' : ''}`,
  );
  try {
    setup.step(); // warm-up: allocator caches, GEMM plans, first-use costs (and the graph's capture)
    synchronize(device);
    const Nplain = native();
    const devIndex = cuda ? Number(device.split(':')[1] ?? 0) : null;
    let plainMs: number;
    let spanMs: number | null = null;
    {
      if (devIndex !== null) Nplain.cudaEventsReset(devIndex);
      const p0 = process.hrtime.bigint();
      const e0 = devIndex !== null ? Nplain.cudaEventRecord(devIndex) : -1;
      for (let i = 0; i < steps; i++) setup.step();
      const e1 = devIndex !== null ? Nplain.cudaEventRecord(devIndex) : -1;
      synchronize(device);
      plainMs = Number(process.hrtime.bigint() - p0) / 1e6 / steps;
      if (devIndex !== null) {
        spanMs = Nplain.cudaEventElapsed(devIndex, e0, e1) / steps;
        Nplain.cudaEventsReset(devIndex);
      }
    }
    // The closing wait is timed apart (the original function, not the wrapper): it is how far the
    // device runs behind the host at the end of the steps.
    const N = native();
    const rawSync = N.synchronize.bind(N);
    const events = cuda && !syncEach && !args.includes('--no-events') ? Number(device.split(':')[1] ?? 0) : null;
    const prof = instrument(N, syncEach ? device : null, events);
    let ms: number;
    let waitMs: number;
    try {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < steps; i++) setup.step();
      const t1 = process.hrtime.bigint();
      rawSync(device);
      const t2 = process.hrtime.bigint();
      ms = Number(t2 - t0) / 1e6 / steps;
      waitMs = Number(t2 - t1) / 1e6 / steps;
    } finally {
      prof.restore();
    }
    const busy = events !== null ? prof.collectDeviceTimes() / steps : null;
    const stats = prof.stats();
    const hostMs = stats.reduce((a, s) => a + s.ns, 0) / 1e6 / steps;
    const row: ProfileRow = {
      bench: 'profile',
      device,
      model: spec.name,
      method,
      rate: method === 'sift' ? rate : null,
      syncEach,
      steps,
      stepMs: Number(ms.toFixed(3)),
      nativeHostMs: Number(hostMs.toFixed(3)),
      deviceWaitMs: Number(waitMs.toFixed(3)),
      jsMs: Number((ms - hostMs - waitMs).toFixed(3)),
      launchesPerStep: Number((prof.launches() / steps).toFixed(1)),
      callsPerStep: Number((stats.reduce((a, s) => a + s.calls, 0) / steps).toFixed(1)),
      deviceBusyMs: busy === null ? null : Number(busy.toFixed(3)),
      graphs: args.includes('--graphs'),
      plainStepMs: Number(plainMs.toFixed(3)),
      plainDeviceSpanMs: spanMs === null ? null : Number(spanMs.toFixed(3)),
      busyShare: busy === null ? null : Number((busy / plainMs).toFixed(3)),
      top: stats.slice(0, topN).map((s) => {
        const dms = s.deviceMs === null ? null : s.deviceMs / steps;
        return {
          op: s.op,
          callsPerStep: Number((s.calls / steps).toFixed(1)),
          msPerStep: Number((s.ns / 1e6 / steps).toFixed(3)),
          deviceMsPerStep: dms === null ? null : Number(dms.toFixed(3)),
          share: Number(((dms ?? s.ns / 1e6 / steps) / ms).toFixed(3)),
        };
      }),
    };
    console.log(JSON.stringify(row));
    const lines = [
      `step ${row.stepMs.toFixed(2)} ms = native calls ${row.nativeHostMs.toFixed(2)} ms (host${syncEach ? ' + device, synchronised per op' : ''}) + JavaScript ${row.jsMs.toFixed(2)} ms + waiting for the device ${row.deviceWaitMs.toFixed(2)} ms; ${row.launchesPerStep} launches, ${row.callsPerStep} native calls per step`,
      ...(row.deviceBusyMs === null
        ? []
        : [
            `device busy ${row.deviceBusyMs.toFixed(2)} ms per step (CUDA events around each op; the rest of the step the device waited for the host)`,
          ]),
      '',
      '| graphs | plain step ms | device span ms | device busy ms | busy / step | launches/step |',
      '|---|---|---|---|---|---|',
      `| ${row.graphs ? 'on' : 'off'} | ${row.plainStepMs.toFixed(2)} | ${row.plainDeviceSpanMs === null ? '' : row.plainDeviceSpanMs.toFixed(2)} | ${row.deviceBusyMs === null ? '' : row.deviceBusyMs.toFixed(2)} | ${row.busyShare === null ? '' : `${(row.busyShare * 100).toFixed(1)}%`} | ${row.launchesPerStep} |`,
      '',
      '| op | calls/step | host ms/step | device ms/step | share of step |',
      '|---|---|---|---|---|',
      ...row.top.map(
        (t) =>
          `| ${t.op} | ${t.callsPerStep} | ${t.msPerStep.toFixed(3)} | ${t.deviceMsPerStep === null ? '' : t.deviceMsPerStep.toFixed(3)} | ${(t.share * 100).toFixed(1)}% |`,
      ),
    ];
    console.log('\n' + lines.join('\n'));
    return row;
  } finally {
    setup.dispose();
  }
}
