/**
 * Host floor of one training step: the time the JavaScript thread spends per step (JavaScript plus
 * N-API calls), which the device work must hide. The model keeps the FULL DEPTH and op graph of the
 * train bench's GPT-2 124M and LLaMA-style 220M (12 layers, the same modules, targets and methods)
 * but tiny widths (vocabulary 256, hidden 64, 4 heads; LLaMA intermediate 176) at batch 1 x seq 8 on
 * the CPU, so that device compute is close to nothing and ms/step is (close to) the host cost.
 *
 * Timing: warm-up steps, then `--reps` runs of `--steps` steps each, queued without waiting (as a
 * training loop on a GPU does) and closed by one synchronisation; the row reports the median and
 * the best run, without any profiler wrapping, and the JavaScript thread's CPU time per step (Linux), which
 * other processes on the machine do not inflate. A separate instrumented pass (bench/profile.ts's
 * instrument()) counts native calls and launches per step and names the most frequent calls.
 * Prints one JSON object per run, then a table.
 *
 * Flags: --models=gpt2,llama, --methods=sift,full,lora, --rate=0.01, --steps=N (per run, default
 * 40), --reps=N (default 5), --warmup=N (default 5), --layers=N (default: the full depth, 12),
 * --top=N (calls listed per row, default 8).
 */
import * as fs from 'fs';
import { backends, synchronize } from '../lib';
import { native } from '../lib/engine/native';
import { instrument } from './profile';
import { setupRun, modelSpec, loadApplyLora, ModelKey, BenchMethod, ModelSpec } from './train';
import { markdownTable, median } from './measure';

export const description =
  'host floor of a training step: full-depth GPT-2/LLaMA graphs at tiny widths on the CPU (ms/step, native calls, launches)';

export interface HostRow {
  bench: 'host';
  status: 'ok' | 'error' | 'skipped';
  error?: string;
  device: string;
  model: string;
  method: BenchMethod;
  rate: number | null;
  layers: number;
  batch: number;
  seq: number;
  steps: number;
  reps: number;
  /** Median over the runs of wall ms per step (no profiler). */
  msPerStep: number;
  /** Best run's ms per step. */
  minMsPerStep: number;
  /** CPU time of the JavaScript thread per step over all runs (Linux; null elsewhere): the host cost without waits or preemption. */
  jsCpuMsPerStep: number | null;
  /** Per step, from the instrumented pass. */
  callsPerStep: number;
  launchesPerStep: number;
  /** Host ms per step inside native calls (instrumented pass; the wrapper adds a little). */
  nativeMsPerStep: number;
  topCalls: { op: string; callsPerStep: number }[];
}

/** The train bench's full-size spec with the widths shrunk (depth, modules and targets unchanged). */
export function hostSpec(key: ModelKey, layers?: number): ModelSpec {
  const s = modelSpec(key, false);
  const config =
    key === 'gpt2'
      ? { ...s.config, vocab_size: 256, n_embd: 64, n_head: 4, n_positions: 64, ...(layers ? { n_layer: layers } : {}) }
      : {
          ...s.config,
          vocab_size: 256,
          hidden_size: 64,
          intermediate_size: 176,
          num_attention_heads: 4,
          num_key_value_heads: 4,
          max_position_embeddings: 64,
          ...(layers ? { num_hidden_layers: layers } : {}),
        };
  return { ...s, name: `${key === 'gpt2' ? 'gpt2-124m' : 'llama-220m'}-depth/tiny-width`, config };
}

export interface HostOptions {
  rate: number;
  steps: number;
  reps: number;
  warmup: number;
  layers?: number;
  top: number;
}

/**
 * CPU time the JavaScript thread has used, in ms (Linux: /proc/self/task/<pid>/stat, 10 ms ticks),
 * or null elsewhere. Unlike wall time it is not inflated by other processes taking the cores.
 */
export function jsThreadCpuMs(): number | null {
  try {
    const st = fs.readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(f[11]) + Number(f[12]); // utime + stime
    return Number.isFinite(ticks) ? ticks * 10 : null;
  } catch {
    return null;
  }
}

/** One model x method. Never throws: failures become rows. */
export function hostOne(key: ModelKey, method: BenchMethod, o: HostOptions): HostRow {
  const spec = hostSpec(key, o.layers);
  const layers = Number(key === 'gpt2' ? spec.config.n_layer : spec.config.num_hidden_layers);
  const batch = 1,
    seq = 8;
  const row: HostRow = {
    bench: 'host',
    status: 'ok',
    device: `cpu x${backends().cpu.threads}`,
    model: spec.name,
    method,
    rate: method === 'sift' ? o.rate : null,
    layers,
    batch,
    seq,
    steps: o.steps,
    reps: o.reps,
    msPerStep: 0,
    minMsPerStep: 0,
    jsCpuMsPerStep: null,
    callsPerStep: 0,
    launchesPerStep: 0,
    nativeMsPerStep: 0,
    topCalls: [],
  };
  if (method === 'lora' && !loadApplyLora()) {
    row.status = 'skipped';
    row.error = 'lib/train/lora.ts (applyLora) is not available';
    return row;
  }
  let run: ReturnType<typeof setupRun> | null = null;
  try {
    run = setupRun(spec, method, { device: 'cpu', dtype: 'f32', batch, seq, rate: o.rate });
    for (let i = 0; i < o.warmup; i++) {
      run.step();
      synchronize('cpu');
    }
    const times: number[] = [];
    const cpu0 = jsThreadCpuMs();
    for (let r = 0; r < o.reps; r++) {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < o.steps; i++) run.step();
      synchronize('cpu');
      times.push(Number(process.hrtime.bigint() - t0) / 1e6 / o.steps);
    }
    const cpu1 = jsThreadCpuMs();
    if (cpu0 !== null && cpu1 !== null) row.jsCpuMsPerStep = Number(((cpu1 - cpu0) / (o.reps * o.steps)).toFixed(2));
    row.msPerStep = Number(median(times).toFixed(3));
    row.minMsPerStep = Number(Math.min(...times).toFixed(3));
    const profSteps = Math.max(3, Math.min(o.steps, 10));
    const prof = instrument(native());
    try {
      for (let i = 0; i < profSteps; i++) run.step();
      synchronize('cpu');
    } finally {
      prof.restore();
    }
    const stats = prof.stats().filter((s) => s.op !== 'synchronize');
    row.callsPerStep = Number((stats.reduce((a, s) => a + s.calls, 0) / profSteps).toFixed(1));
    row.launchesPerStep = Number((prof.launches() / profSteps).toFixed(1));
    row.nativeMsPerStep = Number((stats.reduce((a, s) => a + s.ns, 0) / 1e6 / profSteps).toFixed(3));
    row.topCalls = stats
      .slice()
      .sort((a, b) => b.calls - a.calls)
      .slice(0, o.top)
      .map((s) => ({ op: s.op, callsPerStep: Number((s.calls / profSteps).toFixed(1)) }));
  } catch (e) {
    const err = e as Error & { code?: string };
    row.status = 'error';
    row.error = `${err.code ? `${err.code}: ` : ''}${err.message}`.slice(0, 300);
  } finally {
    try {
      run?.dispose();
    } catch {
      /* a failed run may have freed its tensors already */
    }
  }
  return row;
}

export function hostTable(rows: HostRow[]): string {
  const header = [
    'model',
    'method',
    'layers',
    'ms/step (median)',
    'ms/step (best)',
    'JS-thread CPU ms/step',
    'native ms/step',
    'launches/step',
    'native calls/step',
    'most frequent calls',
    'status',
  ];
  return markdownTable(
    header,
    rows.map((r) => {
      const ok = r.status === 'ok';
      return [
        r.model,
        r.method,
        r.layers,
        ok ? r.msPerStep.toFixed(2) : '',
        ok ? r.minMsPerStep.toFixed(2) : '',
        ok && r.jsCpuMsPerStep !== null ? r.jsCpuMsPerStep.toFixed(2) : '',
        ok ? r.nativeMsPerStep.toFixed(2) : '',
        ok ? r.launchesPerStep : '',
        ok ? r.callsPerStep : '',
        ok ? r.topCalls.map((c) => `${c.op} ${c.callsPerStep}`).join(', ') : '',
        ok ? 'ok' : `${r.status}: ${r.error ?? ''}`,
      ];
    }),
  );
}

export async function run(args: string[]): Promise<HostRow[]> {
  const opt = (name: string) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  const num = (name: string, d: number) => (opt(name) === undefined ? d : Number(opt(name)));
  const models = (opt('models')?.split(',') ?? ['gpt2', 'llama']) as ModelKey[];
  const methods = (opt('methods')?.split(',') ?? ['sift', 'full', 'lora']) as BenchMethod[];
  const o: HostOptions = {
    rate: num('rate', 0.01),
    steps: num('steps', 40),
    reps: num('reps', 5),
    warmup: num('warmup', 5),
    layers: opt('layers') === undefined ? undefined : Number(opt('layers')),
    top: num('top', 8),
  };
  console.error(`# host floor: cpu x${backends().cpu.threads}, batch 1 x seq 8, ${o.reps} runs of ${o.steps} steps`);
  const rows: HostRow[] = [];
  for (const key of models) {
    for (const method of methods) {
      const row = hostOne(key, method, o);
      console.log(JSON.stringify(row));
      rows.push(row);
    }
  }
  console.log('\n' + hostTable(rows));
  return rows;
}
