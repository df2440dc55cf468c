/** Engine-wide functions: memory accounting, backends, synchronisation. */
import { native } from './native';
import type { BackendsInfo, MemoryCount } from './addon-types';
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

/** Returns cached CUDA blocks to the driver. */
export function emptyCache(): void {
  native().emptyCache();
}

export function resetPeakMemory(): void {
  native().resetPeakMemory();
}
