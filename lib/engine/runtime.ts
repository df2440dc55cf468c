/** Engine-wide functions: memory accounting, backends, synchronisation. */
import { native } from './native';
import type { BackendsInfo, MemoryCount } from './addon-types';

export interface LiveTensors {
  cpu: MemoryCount;
  cuda: MemoryCount;
}

/** Live native allocations (count and bytes) per device, after queued CPU work has run. */
export function liveTensors(): LiveTensors {
  return native().liveTensors();
}

/** What was compiled in and what is usable here (GPU names, memory, compute capability). */
export function backends(): BackendsInfo {
  const b = native().backends();
  const g = native().gemmInfo ? native().gemmInfo() : undefined;
  if (g) b.cpu.gemm = g.cpu;
  return b;
}

export function cudaAvailable(): boolean {
  return native().backends().cuda.usable;
}

/** Waits until the device has run all queued work; throws an asynchronous error if one occurred. */
export function synchronize(device = 'cpu'): void {
  native().synchronize(device);
}

/** Returns cached CUDA blocks to the driver. */
export function emptyCache(): void {
  native().emptyCache();
}

export function resetPeakMemory(): void {
  native().resetPeakMemory();
}
