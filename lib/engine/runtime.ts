/** Engine-wide functions: memory accounting, backends, synchronisation. */
import { native } from './native';
import type { BackendsInfo, ExecutorStats, MemoryCount } from './addon-types';
import { normalizeDevice } from './dtype';
import { check } from './errors';
import { cudaStatus, cudaVersionString } from './cuda-status';

export interface LiveTensors {
  cpu: MemoryCount;
  cuda: MemoryCount;
}

/** Live native allocations (count and bytes) per device, after queued CPU work has run. */
export function liveTensors(): LiveTensors {
  return native().liveTensors();
}

/**
 * What was compiled in and what is usable here (GPU names, memory, compute capability). When CUDA
 * is not usable, `cuda.status` says why in words a user can act on and `cuda.reason` as a code.
 */
export function backends(): BackendsInfo {
  const b = native().backends();
  const g = native().gemmInfo ? native().gemmInfo() : undefined;
  if (g) b.cpu.gemm = g.cpu;
  const st = cudaStatus(b.cuda.compiled, b.cuda.probe, b.cuda.devices);
  b.cuda.usable = st.usable;
  b.cuda.reason = st.reason;
  b.cuda.status = st.message;
  b.cuda.driverVersion = b.cuda.probe?.driverVersion ? cudaVersionString(b.cuda.probe.driverVersion) : null;
  for (const d of b.cuda.devices) {
    const s = st.devices.find((x) => x.index === d.index);
    d.supported = s?.supported ?? false;
    if (s?.problem) d.problem = s.problem;
  }
  return b;
}

export function cudaAvailable(): boolean {
  return backends().cuda.usable;
}

/** Waits until the device has run all queued work; throws an asynchronous error if one occurred. */
export function synchronize(device = 'cpu'): void {
  native().synchronize(device);
}

/**
 * Waits until the device has run all work queued so far, without blocking the event loop (the
 * wait runs on a worker thread); rejects with an asynchronous error if one occurred.
 */
export function synchronizeAsync(device = 'cpu'): Promise<void> {
  const d = normalizeDevice(device);
  return native().waitFenceAsync(d, native().deviceFence(d));
}

/**
 * A mark on the device's queue: `fence.wait()` resolves once the device ran everything queued
 * before the mark (off the event loop). A loop that queues work and awaits the fence of its
 * previous iteration keeps one iteration in flight without ever blocking JavaScript.
 */
export class DeviceFence {
  readonly device: string;
  private readonly id: number;
  private waited: Promise<void> | null = null;

  constructor(device = 'cpu') {
    this.device = normalizeDevice(device);
    this.id = native().deviceFence(this.device);
  }

  /** Resolves once the device passed the fence (the same promise on every call). */
  wait(): Promise<void> {
    if (!this.waited) this.waited = native().waitFenceAsync(this.device, this.id);
    return this.waited;
  }
}

/** The CPU executor's queue depth and the time the JavaScript thread spent blocked in it. */
export function executorStats(): ExecutorStats {
  return native().executorStats();
}

export function resetExecutorStats(): void {
  native().resetExecutorStats();
}

/**
 * Threads of the CPU kernels: a count, or 'auto' for the default (SIFT_FT_NUM_THREADS, else the
 * hardware's). Applies to kernels queued after the call. Returns the count in effect before.
 */
export function setNumThreads(threads: number | 'auto'): number {
  check(
    threads === 'auto' || (Number.isInteger(threads) && threads >= 1 && threads <= 256),
    'E_ARG',
    `numThreads must be 'auto' or an integer from 1 to 256, got ${String(threads)}`,
  );
  const before = native().numThreads().threads;
  native().setNumThreads(threads === 'auto' ? 0 : threads);
  return before;
}

/**
 * Threads of the CPU kernels now, the default, the hardware's count, and whether the default
 * comes from SIFT_FT_NUM_THREADS.
 */
export function numThreads(): { threads: number; default: number; hardware: number; fromEnv: boolean } {
  return native().numThreads();
}

/** The thread count that leaves one core to the JavaScript thread (at least 1). */
export function threadsLeavingMainThread(): number {
  const n = native().numThreads();
  return Math.max(1, Math.min(n.default, n.hardware - 1));
}

/** Returns cached CUDA blocks to the driver. */
export function emptyCache(): void {
  native().emptyCache();
}

export function resetPeakMemory(): void {
  native().resetPeakMemory();
}
