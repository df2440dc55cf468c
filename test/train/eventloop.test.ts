/**
 * The event loop keeps running while a model trains: device waits happen off the JavaScript thread
 * (fences awaited on worker threads), the CPU pool can leave the main thread a core, and the
 * results do not depend on either.
 */
import { execFile } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { tidy, tensor, embedding, SiftError, stateDict } from '../../lib';
import { native } from '../../lib/engine/native';
import { Tensor } from '../../lib/engine/tensor';
import { matmul } from '../../lib/autograd/matmul';
import { DeviceFence, executorStats, numThreads, resetExecutorStats, setNumThreads, synchronizeAsync } from '../../lib/engine/runtime';
import { llamaForLoad, LoadRun, trainWatched, watchEventLoop } from '../../bench/eventloop';
import { describeCuda } from '../helpers/gradcheck';
import { Trainer } from '../../lib/train/trainer';
import type { TrainerOptions } from '../../lib/train/types';

function bytesOf(t: Tensor): Buffer {
  return Buffer.from(native().toBuffer(native().contiguous(t.handle)));
}

/** Queues `n` products of a [m, m] matrix with itself on the device; returns the last. */
function queueWork(device: string, m: number, n: number): Tensor {
  return tidy(() => {
    let x = tensor(
      Array.from({ length: m * m }, (_, i) => ((i * 7919) % 13) / 13 - 0.5),
      [m, m],
    ).to(device);
    const w = tensor(
      Array.from({ length: m * m }, (_, i) => ((i * 104729) % 17) / (17 * m)),
      [m, m],
    ).to(device);
    for (let i = 0; i < n; i++) x = matmul(x, w);
    return x;
  });
}

/**
 * An embedding step that meets an out-of-range id, awaited through a fence as the trainer awaits
 * its steps: the wait rejects with E_INDEX, as a synchronous read would, and only once (the next
 * step and its wait go on).
 */
async function expectIndexErrorAtFence(device: string): Promise<void> {
  const w = tensor(
    Array.from({ length: 20 }, (_, i) => i / 20),
    [5, 4],
  ).to(device);
  const bad = tensor([0, 9], [2], { dtype: 'i32' }).to(device);
  const ok = tensor([1, 4], [2], { dtype: 'i32' }).to(device);
  // Work queued ahead: the ids are checked by the queued kernel, not up front (an idle CPU queue
  // lets the op check them at once).
  const busy = queueWork(device, 256, 8);
  const y = embedding(w, bad);
  const err = await new DeviceFence(device).wait().then(
    () => null,
    (e) => e as SiftError,
  );
  expect(err).toBeInstanceOf(SiftError);
  expect(err!.code).toBe('E_INDEX');
  const z = embedding(w, ok);
  await new DeviceFence(device).wait();
  await synchronizeAsync(device);
  expect(Array.from(z.toArray())).toEqual([4, 5, 6, 7, 16, 17, 18, 19].map((v) => Math.fround(v / 20)));
  for (const t of [w, bad, ok, busy, y, z]) t.dispose();
}

/**
 * dataAfter(fence) reads what the work before the fence wrote while later work still runs: the
 * values are those of a full wait, and the read does not wait for the later work (the queue is
 * still busy after it).
 */
async function expectReadAfterFence(device: string): Promise<void> {
  const y = queueWork(device, 256, 6);
  const fence = new DeviceFence(device);
  const later = queueWork(device, 384, 60);
  const early = await y.dataAfter(fence);
  if (device === 'cpu') expect(executorStats().pending).toBeGreaterThan(0);
  expect(Buffer.from(early.buffer).equals(Buffer.from((await y.data()).buffer))).toBe(true);
  const bf = y.to('bf16');
  await expect(bf.dataAfter(new DeviceFence(device))).rejects.toMatchObject({ code: 'E_DTYPE' });
  await expect(y.T.dataAfter(new DeviceFence(device))).rejects.toMatchObject({ code: 'E_ARG' });
  await synchronizeAsync(device);
  for (const t of [y, later, bf]) t.dispose();
}

describe('waiting for the device off the event loop', () => {
  test('a fence resolves after the work before it, and the event loop runs meanwhile', async () => {
    const y = queueWork('cpu', 384, 40);
    const fence = new DeviceFence('cpu');
    let turns = 0;
    const timer = setInterval(() => turns++, 1);
    await fence.wait();
    clearInterval(timer);
    expect(executorStats().fence).toBeGreaterThanOrEqual(40);
    // Work before the fence has run: reading is immediate and matches a synchronous read.
    resetExecutorStats();
    const a = bytesOf(y);
    expect(executorStats().mainThreadWaits.maxMs).toBeLessThan(5);
    expect(a.equals(Buffer.from((await y.data()).buffer))).toBe(true);
    expect(turns).toBeGreaterThan(0);
    expect(fence.wait()).toBe(fence.wait()); // one promise per fence
    y.dispose();
  });

  test('synchronizeAsync rejects with the asynchronous error, named', async () => {
    const s = tensor([1, Number.NaN, 3, 4], [4]);
    const idx = native().topk(s.handle, 2, 'layer.weight');
    const err = await synchronizeAsync('cpu').then(
      () => null,
      (e) => e as SiftError,
    );
    expect(err).toBeInstanceOf(SiftError);
    expect(err!.code).toBe('E_NUMERIC');
    expect(err!.message).toContain("'layer.weight'");
    native().dispose(idx);
    s.dispose();
    await synchronizeAsync('cpu'); // the error was reported once
  });

  test('an index out of range before a fence rejects its wait with E_INDEX, once (cpu)', async () => {
    await expectIndexErrorAtFence('cpu');
  });

  test('dataAfter(fence) reads the work before the fence without waiting for the work after it (cpu)', async () => {
    await expectReadAfterFence('cpu');
  });

  test('bad arguments are E_ARG / E_DEVICE', () => {
    expect(() => native().waitFenceAsync('cpu', -1)).toThrow(/fence/);
    expect(() => new DeviceFence('tpu')).toThrow(SiftError);
  });
});

describe('CPU threads at run time', () => {
  test('setNumThreads changes the count used by later kernels; results are the same', async () => {
    const before = numThreads();
    expect(before.hardware).toBeGreaterThanOrEqual(1);
    const ref = queueWork('cpu', 256, 6);
    const refBytes = Buffer.from((await ref.data()).buffer);
    setNumThreads(1);
    expect(numThreads().threads).toBe(1);
    const one = queueWork('cpu', 256, 6);
    expect(Buffer.from((await one.data()).buffer).equals(refBytes)).toBe(true);
    setNumThreads('auto');
    expect(numThreads().threads).toBe(before.default);
    expect(() => setNumThreads(0)).toThrow(SiftError);
    expect(() => setNumThreads(1.5)).toThrow(/numThreads/);
    ref.dispose();
    one.dispose();
  });
});

describe('Trainer thread options', () => {
  test('numThreads / reserveMainThread apply while fit() runs and are restored after', async () => {
    const before = numThreads().threads;
    for (const [opts, want] of [
      [{ numThreads: 1 }, 1],
      [{ reserveMainThread: true }, Math.max(1, Math.min(numThreads().default, numThreads().hardware - 1))],
    ] as [Partial<TrainerOptions>, number][]) {
      const { model, rows } = llamaForLoad({ hidden: 64, layers: 1, seq: 16, batch: 4, vocab: 96 }, 4);
      const trainer = new Trainer(model, null, { task: 'causal-lm', steps: 2, batchSize: 4, sift: { sparseRate: 0.05 }, ...opts });
      const during: number[] = [];
      for await (const e of trainer.fit(rows)) if (e.type === 'step') during.push(numThreads().threads);
      expect(during).toEqual([want, want]);
      expect(numThreads().threads).toBe(before);
      trainer.dispose();
      model.dispose();
    }
    expect(
      () =>
        new Trainer(llamaForLoad({ hidden: 64, layers: 1, seq: 16, batch: 4, vocab: 96 }, 4).model, null, {
          task: 'causal-lm',
          numThreads: 0,
        }),
    ).toThrow(/numThreads/);
  });
});

/** Options of a SIFT run on the small LLaMA: gradient accumulation, so that fences sit between micro-batches. */
const small: TrainerOptions = {
  task: 'causal-lm',
  steps: 4,
  batchSize: 4,
  gradAccum: 2,
  lr: 1e-3,
  seed: 5,
  logEvery: 2,
  lrSchedule: 'constant',
  sift: { sparseRate: 0.05 },
};

async function trainedBytes(device: string, asyncWaits: boolean): Promise<{ losses: number[]; weights: Map<string, Buffer> }> {
  const { model, rows } = llamaForLoad({ hidden: 64, layers: 2, seq: 16, batch: 4, vocab: 96 }, 3);
  if (device !== 'cpu') model.to(device);
  const r = await trainWatched(model, rows, { ...small, device, asyncWaits, numThreads: 2 });
  const weights = new Map<string, Buffer>();
  for (const [k, t] of stateDict(model)) weights.set(k, Buffer.from((await t.data()).buffer));
  model.dispose();
  return { losses: r.losses, weights };
}

async function expectSameResults(device: string): Promise<void> {
  const a = await trainedBytes(device, true);
  const b = await trainedBytes(device, false);
  expect(a.losses.length).toBe(2);
  expect(a.losses).toEqual(b.losses);
  expect([...a.weights.keys()]).toEqual([...b.weights.keys()]);
  let changed = 0;
  const { model: fresh } = llamaForLoad({ hidden: 64, layers: 2, seq: 16, batch: 4, vocab: 96 }, 3);
  const base = stateDict(fresh);
  for (const [k, v] of a.weights) {
    expect(v.equals(b.weights.get(k)!)).toBe(true);
    if (!v.equals(Buffer.from((await base.get(k)!.data()).buffer))) changed++;
  }
  fresh.dispose();
  expect(changed).toBeGreaterThan(0); // training did change weights
}

describe("reading each step's loss and gradient norm", () => {
  test('costs no device wait of its own: one wait per micro-batch (the fences), the values read after them (cpu)', async () => {
    const steps = 8;
    const { model, rows } = llamaForLoad({ hidden: 64, layers: 2, seq: 16, batch: 4, vocab: 96 }, 3);
    const r = await trainWatched(model, rows, { ...small, steps, logEvery: 4, numThreads: 2 });
    model.dispose();
    expect(r.losses.length).toBe(2);
    for (const l of r.losses) expect(Number.isFinite(l)).toBe(true);
    // The micro-batches' fences, plus the selection batch's read, the top-k and the end of the run;
    // reading the losses and the gradient norm with waits of their own took 3 more per step.
    const fences = steps * small.gradAccum!;
    // eslint-disable-next-line no-console
    console.log(`device waits: ${r.deviceWaits} over ${steps} steps of ${small.gradAccum} micro-batches`);
    expect(r.deviceWaits).toBeGreaterThanOrEqual(fences - 1);
    expect(r.deviceWaits).toBeLessThanOrEqual(fences + 6);
  });
});

describe('results do not depend on the async waits', () => {
  test('SIFT with gradient accumulation: losses and weights bit-identical (cpu)', async () => {
    await expectSameResults('cpu');
  });
});

describe('the event loop keeps serving while a model trains', () => {
  test('the watcher sees a stall of the JavaScript thread', async () => {
    const w = watchEventLoop(10);
    await new Promise((r) => setTimeout(r, 50));
    // Busy for 120 ms of the thread's own CPU time (wall time where the kernel does not say): on
    // a loaded machine a wall-clock loop would partly be spent waiting for a CPU.
    const cpuMs = () => {
      try {
        return Number(fs.readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ')[0]) / 1e6;
      } catch {
        return performance.now();
      }
    };
    const t = cpuMs();
    while (cpuMs() - t < 120) {
      /* busy: the JavaScript thread itself stalls the loop */
    }
    await new Promise((r) => setTimeout(r, 30));
    const rep = w.stop();
    expect(rep.maxLateMs).toBeGreaterThan(100);
    expect(rep.maxDelayMs).toBeGreaterThan(100);
    if (rep.maxSelfStallMs !== null) expect(rep.maxSelfStallMs).toBeGreaterThan(100);
    if (rep.maxCpuMs !== null) expect(rep.maxCpuMs).toBeGreaterThan(100);
  });

  test('a LLaMA whose steps take seconds: worst stall under 50 ms, most timer ticks run (cpu)', async () => {
    // In a plain Node process, as a server would run it (the test runner's heap and messages are
    // not the trainer's): bench/eventloop.ts, which first runs a small model once (the first
    // micro-batch of a process compiles the training code, tens of ms, once), then trains a model
    // sized so that one step takes >= 1 s on a 2-core machine with one kernel thread.
    const runTs = (args: string[]) =>
      new Promise<string>((resolve, reject) => {
        execFile(
          process.execPath,
          [path.join(__dirname, '..', 'helpers', 'run-ts.js'), ...args],
          { timeout: 240000, maxBuffer: 1 << 20 },
          (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
        );
      });
    const bench = path.join(__dirname, '..', '..', 'bench');
    // A first process transpiles the sources (cached), so that the measured one does not hold the
    // TypeScript compiler in its heap.
    await runTs([path.join(bench, 'eventloop.ts')]);
    const out = await runTs([
      path.join(bench, 'run.ts'),
      'eventloop',
      '--hidden=512',
      '--layers=2',
      '--seq=192',
      '--batch=8',
      '--steps=3',
      '--reserve=true',
      '--async=true',
    ]);
    const r = JSON.parse(out.trim().split('\n').pop()!) as LoadRun;
    const rep = r.report;
    // eslint-disable-next-line no-console
    console.log(
      `event loop while training: steps ${r.stepMs.map((x) => x.toFixed(0)).join(', ')} ms; delay p50 ${rep.p50DelayMs.toFixed(1)} p99 ${rep.p99DelayMs.toFixed(1)} max ${rep.maxDelayMs.toFixed(1)} ms; ` +
        `ticks ${(100 * rep.tickShare).toFixed(0)}%; longest late tick ${rep.maxLateMs.toFixed(1)} ms, of it the thread's own ${rep.maxSelfStallMs?.toFixed(1)} ms; ` +
        `most CPU time of the thread between two ticks ${rep.maxCpuMs?.toFixed(1)} ms; run-queue wait ${rep.runQueueWaitMs?.toFixed(0)} ms; ` +
        `JS blocked in the executor: max ${r.mainThreadMaxWaitMs.toFixed(1)} ms, total ${r.mainThreadWaitMs.toFixed(0)} ms`,
    );
    expect(r.losses.length).toBe(3);
    expect(r.losses.every(Number.isFinite)).toBe(true);
    // Not vacuous: the steps are long.
    expect([...r.stepMs].sort((a, b) => a - b)[1]).toBeGreaterThan(1000);
    // What the JavaScript thread itself does: never blocked in the executor for long, and never
    // more than 50 ms of work between two ticks of the timer.
    expect(r.mainThreadMaxWaitMs).toBeLessThan(20);
    if (rep.maxCpuMs !== null) {
      expect(rep.maxCpuMs).toBeLessThan(50);
      // A gap less the time the thread waited for a CPU also holds its other sleeps (garbage
      // collection helpers and lock holders starved by other processes on a shared machine): under
      // 50 ms when the machine is not overloaded, bounded with a margin here (the former behaviour
      // stalled for seconds).
      expect(rep.maxSelfStallMs!).toBeLessThan(100);
    } else {
      expect(rep.maxDelayMs).toBeLessThan(50); // where the kernel does not say: the wall clock
    }
    // Wall clock, scheduling included: the 99th percentile and the share of ticks, with a margin.
    expect(rep.p99DelayMs).toBeLessThan(50);
    expect(rep.tickShare).toBeGreaterThan(0.5);
  });
});

describeCuda('waits on the CUDA stream', () => {
  test('fences and synchronizeAsync resolve after the stream ran the work', async () => {
    const y = queueWork('cuda', 512, 50);
    const f = new DeviceFence('cuda');
    await f.wait();
    const again = new DeviceFence('cuda');
    await again.wait(); // recycled events
    await synchronizeAsync('cuda');
    const host = await y.data();
    const ref = queueWork('cpu', 512, 50);
    const r = await ref.data();
    let maxDiff = 0;
    for (let i = 0; i < r.length; i++) maxDiff = Math.max(maxDiff, Math.abs(Number(host[i]) - Number(r[i])));
    expect(maxDiff).toBeLessThan(1e-3);
    y.dispose();
    ref.dispose();
  });

  test('an index out of range before a fence rejects its wait with E_INDEX, once', async () => {
    await expectIndexErrorAtFence('cuda');
  });

  test('dataAfter(fence) reads the work before the fence without waiting for the work after it', async () => {
    await expectReadAfterFence('cuda');
  });

  test('training on CUDA: results bit-identical with and without async waits', async () => {
    await expectSameResults('cuda');
  });

  test('training on CUDA: the event loop keeps its ticks', async () => {
    const { model, rows } = llamaForLoad({ hidden: 1024, layers: 4, seq: 256, batch: 8 }, 1);
    model.to('cuda');
    const r = await trainWatched(model, rows, {
      task: 'causal-lm',
      device: 'cuda',
      steps: 20,
      batchSize: 8,
      gradAccum: 2,
      lr: 1e-3,
      seed: 1,
      logEvery: 5,
      sift: { sparseRate: 0.01 },
    });
    model.dispose();
    // eslint-disable-next-line no-console
    console.log(
      `cuda event loop: delay p99 ${r.report.p99DelayMs.toFixed(1)} max ${r.report.maxDelayMs.toFixed(1)} ms, ticks ${(100 * r.report.tickShare).toFixed(0)}%, longest self stall ${r.report.maxSelfStallMs?.toFixed(1)} ms`,
    );
    if (r.report.maxSelfStallMs !== null) expect(r.report.maxSelfStallMs).toBeLessThan(50);
    expect(r.report.p99DelayMs).toBeLessThan(50);
  });
});
