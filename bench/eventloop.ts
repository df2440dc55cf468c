/**
 * Event-loop responsiveness while a model trains (`npm run bench -- eventloop [--flags]`), and the
 * watcher the tests use. Flags: --steps N (4), --hidden N (512), --layers N (2), --seq N (128),
 * --batch N (8), --grad-accum N (1), --async true|false (true), --reserve true|false (true),
 * --threads N, --log-every N (1), --warmup true|false (true: a short run of a small model first, so
 * that the one-time compilation of the training code is not measured). Prints one JSON line: the trainer's step time and the loop report.
 *
 * Watches the event loop while something runs: monitorEventLoopDelay's histogram, a periodic
 * timer's ticks, and, on Linux, the JavaScript thread's own stalls: the gap between two ticks less
 * the time the thread waited for a CPU (its run-queue wait, /proc/self/task/<pid>/schedstat), so
 * that a machine loaded by other processes does not count against the code under test.
 */
import * as fs from 'fs';
import { monitorEventLoopDelay } from 'perf_hooks';
import { createModel, HFConfig } from '../lib';
import { executorStats, resetExecutorStats } from '../lib/engine/runtime';
import { Trainer } from '../lib/train/trainer';
import type { Row, TrainerEvent, TrainerOptions } from '../lib/train/types';

export const description = 'event-loop delay and timer ticks while a LLaMA-shaped model trains on the CPU';

export interface LoopReport {
  durationMs: number;
  /** monitorEventLoopDelay (wall clock, scheduling included). */
  maxDelayMs: number;
  p50DelayMs: number;
  p99DelayMs: number;
  /** Ticks of the timer that ran, and the share of the ticks the duration allows. */
  ticks: number;
  tickShare: number;
  /** Longest time between two ticks, less the interval (wall clock). */
  maxLateMs: number;
  /** The same, less the time the thread waited for a CPU in between (null where unknown). */
  maxSelfStallMs: number | null;
  /** Most CPU time the thread used between two ticks: its longest run of work (null where unknown). */
  maxCpuMs: number | null;
  /** Time the JavaScript thread waited for a CPU over the whole run (null where unknown). */
  runQueueWaitMs: number | null;
}

const SCHEDSTAT = `/proc/self/task/${process.pid}/schedstat`;

/** CPU time and run-queue wait of the main thread in ms, or null where the kernel does not say. */
function schedstat(): { cpu: number; queue: number } | null {
  try {
    const f = fs.readFileSync(SCHEDSTAT, 'utf8').trim().split(/\s+/);
    return { cpu: Number(f[0]) / 1e6, queue: Number(f[1]) / 1e6 };
  } catch {
    return null;
  }
}

export function watchEventLoop(intervalMs = 10): { stop(): LoopReport } {
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  const t0 = performance.now();
  const q0 = schedstat();
  let last = t0;
  let lastQ = q0;
  let ticks = 0;
  let maxLate = 0;
  let maxSelf: number | null = q0 === null ? null : 0;
  let maxCpu: number | null = q0 === null ? null : 0;
  const timer = setInterval(() => {
    const now = performance.now();
    const q = lastQ === null ? null : schedstat();
    const late = now - last - intervalMs;
    if (late > maxLate) maxLate = late;
    if (maxSelf !== null && maxCpu !== null && q !== null && lastQ !== null) {
      maxSelf = Math.max(maxSelf, late - (q.queue - lastQ.queue));
      maxCpu = Math.max(maxCpu, q.cpu - lastQ.cpu);
    }
    last = now;
    lastQ = q;
    ticks++;
  }, intervalMs);
  return {
    stop(): LoopReport {
      clearInterval(timer);
      h.disable();
      const durationMs = performance.now() - t0;
      const q1 = schedstat();
      return {
        durationMs,
        maxDelayMs: h.max / 1e6,
        p50DelayMs: h.percentile(50) / 1e6,
        p99DelayMs: h.percentile(99) / 1e6,
        ticks,
        tickShare: ticks / Math.max(1, Math.floor(durationMs / intervalMs)),
        maxLateMs: maxLate,
        maxSelfStallMs: maxSelf,
        maxCpuMs: maxCpu,
        runQueueWaitMs: q0 !== null && q1 !== null ? q1.queue - q0.queue : null,
      };
    },
  };
}

export interface LoadShape {
  hidden: number;
  layers: number;
  seq: number;
  batch: number;
  vocab?: number;
}

/** A LLaMA-shaped causal LM with random weights and pretokenized rows for it. */
export function llamaForLoad(shape: LoadShape, seed = 1): { model: ReturnType<typeof createModel>; rows: Row[] } {
  const vocab = shape.vocab ?? 2048;
  const cfg: HFConfig = {
    model_type: 'llama',
    vocab_size: vocab,
    max_position_embeddings: shape.seq,
    hidden_size: shape.hidden,
    intermediate_size: shape.hidden * 3,
    num_hidden_layers: shape.layers,
    num_attention_heads: Math.max(1, shape.hidden / 64),
    num_key_value_heads: Math.max(1, shape.hidden / 128),
    tie_word_embeddings: false,
  };
  const model = createModel(cfg, { task: 'causal-lm', seed });
  let s = seed;
  const r = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
  const rows: Row[] = Array.from({ length: shape.batch * 4 }, () => ({
    input_ids: Array.from({ length: shape.seq }, () => Math.floor(r() * vocab)),
  }));
  return { model, rows };
}

export interface LoadRun {
  report: LoopReport;
  /** Wall time of each optimizer step, from the trainer's step events (ms). */
  stepMs: number[];
  losses: number[];
  /** Longest time the JavaScript thread was blocked inside the CPU executor (ms). */
  mainThreadMaxWaitMs: number;
  mainThreadWaitMs: number;
  /** Device waits run on worker threads during the run (fences, asynchronous reads). */
  deviceWaits: number;
}

/** Trains `model` on `rows` while watching the event loop. */
export async function trainWatched(model: ReturnType<typeof createModel>, rows: Row[], options: TrainerOptions): Promise<LoadRun> {
  const trainer = new Trainer(model, null, options);
  resetExecutorStats();
  const watch = watchEventLoop(10);
  // Let both timers run once first: monitorEventLoopDelay records nothing before its first tick.
  await new Promise((r) => setTimeout(r, 50));
  const losses: number[] = [];
  const stepMs: number[] = [];
  let last = performance.now();
  try {
    for await (const e of trainer.fit(rows) as AsyncGenerator<TrainerEvent>) {
      if (e.type === 'selection') last = performance.now();
      if (e.type === 'step') {
        const now = performance.now();
        stepMs.push(now - last);
        last = now;
        losses.push(e.loss);
      }
    }
  } finally {
    trainer.dispose();
  }
  const report = watch.stop();
  const st = executorStats();
  const w = st.mainThreadWaits;
  return { report, stepMs, losses, mainThreadMaxWaitMs: w.maxMs, mainThreadWaitMs: w.totalMs, deviceWaits: st.asyncWaits };
}

export async function run(args: string[]): Promise<void> {
  const flag = (name: string, def: string): string => {
    const a = args.find((x) => x.startsWith(`--${name}=`));
    if (a) return a.slice(name.length + 3);
    const i = args.indexOf(`--${name}`);
    return i >= 0 && i + 1 < args.length ? args[i + 1] : def;
  };
  const shape = {
    hidden: Number(flag('hidden', '512')),
    layers: Number(flag('layers', '2')),
    seq: Number(flag('seq', '128')),
    batch: Number(flag('batch', '8')),
  };
  if (flag('warmup', 'true') === 'true') {
    // The first micro-batch of a process compiles the forward and backward code (tens of ms of
    // JIT, once): a short run of a small model of the same family first.
    const warm = llamaForLoad({ hidden: 64, layers: 2, seq: 16, batch: 4, vocab: 96 }, 2);
    await trainWatched(warm.model, warm.rows, { task: 'causal-lm', steps: 2, batchSize: 4, lr: 1e-3, seed: 1, sift: { sparseRate: 0.01 } });
    warm.model.dispose();
  }
  const { model, rows } = llamaForLoad(shape);
  const threads = flag('threads', '');
  const options: TrainerOptions = {
    task: 'causal-lm',
    steps: Number(flag('steps', '4')),
    batchSize: shape.batch,
    gradAccum: Number(flag('grad-accum', '1')),
    lr: 1e-3,
    seed: 1,
    logEvery: Number(flag('log-every', '1')),
    asyncWaits: flag('async', 'true') === 'true',
    reserveMainThread: flag('reserve', 'true') === 'true',
    ...(threads ? { numThreads: Number(threads) } : {}),
  };
  const r = await trainWatched(model, rows, options);
  model.dispose();
  console.log(
    JSON.stringify({
      shape,
      steps: options.steps,
      asyncWaits: options.asyncWaits,
      reserveMainThread: options.reserveMainThread,
      numThreads: options.numThreads,
      ...r,
    }),
  );
}
