/**
 * Why CUDA is or is not usable, in words a user can act on. The addon reports facts (the driver's
 * and the runtime's CUDA versions, cudaGetDeviceCount's error, the architectures compiled in, and
 * per device its compute capability and whether it can load this binary's kernels); cudaStatus()
 * turns them into one reason and one message.
 */

export type CudaReason = 'usable' | 'not-compiled' | 'no-driver' | 'driver-too-old' | 'no-device' | 'arch-not-covered' | 'error';

/** What the addon's CUDA probe found (backends().cuda.probe). */
export interface CudaProbe {
  /** Newest CUDA version the installed driver supports, as cudaDriverGetVersion gives it (12040 = 12.4; 0: no driver). */
  driverVersion: number;
  /** The CUDA runtime linked into the addon (13000 = 13.0). */
  runtimeVersion: number;
  /** cudaGetDeviceCount's error name ('' when it succeeded) and its description. */
  error: string;
  errorText: string;
  deviceCount: number;
  /** Architectures compiled in, CMake syntax joined with ',': '75-real,80-real,86-real,89-real,90'. */
  archs: string;
}

export interface CudaDeviceFacts {
  index: number;
  name: string;
  computeCapability: string;
  /** '' when the device loaded this binary's kernels; else the CUDA error. Absent: not checked. */
  kernelImageError?: string;
}

export interface CudaStatus {
  usable: boolean;
  reason: CudaReason;
  message: string;
  /** Per device: whether this binary can run on it, and why not. */
  devices: { index: number; supported: boolean; problem?: string }[];
}

/** Oldest NVIDIA driver branch for each CUDA major version (NVIDIA's CUDA compatibility tables). */
const MIN_DRIVER: Record<number, string> = { 11: 'R450', 12: 'R525', 13: 'R580' };

/** 12040 -> '12.4'. */
export function cudaVersionString(v: number): string {
  return `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}`;
}

export interface ArchList {
  /** Architectures with SASS (machine code), as compute capabilities times ten: 75, 80, ... */
  sass: number[];
  /** Architectures with PTX, which the driver compiles for that capability and any newer one. */
  ptx: number[];
}

/** '75-real,80-real,90' -> SASS 75, 80, 90 and PTX 90 (CMake: 'NN' is both, '-real' SASS, '-virtual' PTX). */
export function parseArchs(list: string): ArchList {
  const sass: number[] = [];
  const ptx: number[] = [];
  for (const item of list.split(/[,;\s]+/).filter(Boolean)) {
    const m = /^(?:sm_|compute_)?(\d+)[a-z]?(?:-(real|virtual))?$/.exec(item);
    if (!m) continue;
    const n = Number(m[1]);
    if (m[2] !== 'virtual') sass.push(n);
    if (m[2] !== 'real') ptx.push(n);
  }
  return { sass, ptx };
}

function ccNumber(cc: string): number {
  const [major, minor] = cc.split('.').map(Number);
  return major * 10 + (minor || 0);
}

/**
 * Whether a device of compute capability `cc` ('8.6') can run code built for `archs`: SASS of
 * X.Y runs on X.Z for Z >= Y (same major), PTX of X.Y is compiled by the driver for any X.Y or newer.
 */
export function archCovers(cc: string, archs: ArchList): boolean {
  const d = ccNumber(cc);
  if (archs.sass.some((a) => Math.floor(a / 10) === Math.floor(d / 10) && a <= d)) return true;
  return archs.ptx.some((a) => a <= d);
}

/** '7.5, 8.0, 8.6 (machine code) and PTX 9.0 (9.0 and newer)'. */
export function describeArchs(archs: ArchList): string {
  const f = (a: number) => `${Math.floor(a / 10)}.${a % 10}`;
  const sass = archs.sass.length ? `${archs.sass.map(f).join(', ')} (machine code)` : '';
  const ptx = archs.ptx.length
    ? `PTX ${archs.ptx.map(f).join(', ')} (compiled by the driver for ${f(Math.min(...archs.ptx))} and newer)`
    : '';
  return [sass, ptx].filter(Boolean).join(' and ') || 'no architecture';
}

export function cudaStatus(compiled: boolean, probe: CudaProbe | undefined, devices: CudaDeviceFacts[]): CudaStatus {
  const none = (reason: CudaReason, message: string): CudaStatus => ({ usable: false, reason, message, devices: [] });
  if (!compiled || !probe) {
    return none(
      'not-compiled',
      'not compiled in: this sift-ft addon is CPU-only (a source build without nvcc, or --cpu-only); ' +
        'install the prebuilt package, which has CUDA, or run `npx sift-ft build --cuda` with the CUDA toolkit',
    );
  }
  const runtime = cudaVersionString(probe.runtimeVersion);
  const runtimeMajor = Math.floor(probe.runtimeVersion / 1000);
  const minDriver = MIN_DRIVER[runtimeMajor] ? ` (${MIN_DRIVER[runtimeMajor]} or newer)` : '';
  if (probe.driverVersion === 0) {
    return none(
      'no-driver',
      `no NVIDIA driver found (libcuda.so.1 could not be loaded): install the NVIDIA driver${minDriver} for CUDA ${runtime}, ` +
        'or in a container expose the GPU (docker run --gpus all); the CPU backend works without it',
    );
  }
  if (
    probe.driverVersion < probe.runtimeVersion &&
    (probe.error === 'cudaErrorInsufficientDriver' || Math.floor(probe.driverVersion / 1000) < runtimeMajor)
  ) {
    return none(
      'driver-too-old',
      `the NVIDIA driver supports CUDA up to ${cudaVersionString(probe.driverVersion)}, but this addon's CUDA runtime is ${runtime}: ` +
        `update the driver${minDriver}, or build the addon against your CUDA toolkit with \`npx sift-ft build --cuda\``,
    );
  }
  if (probe.error === 'cudaErrorNoDevice' || (!probe.error && probe.deviceCount === 0)) {
    return none(
      'no-device',
      `the NVIDIA driver (CUDA ${cudaVersionString(probe.driverVersion)}) sees no GPU: check CUDA_VISIBLE_DEVICES and, in a container, that the GPU is exposed (--gpus)`,
    );
  }
  if (probe.error) return none('error', `CUDA could not start: ${probe.error} (${probe.errorText})`);

  const archs = parseArchs(probe.archs);
  // The native check (the device loading a probe kernel) decides where it ran; an error other than
  // a missing kernel image (the device busy in exclusive mode, out of memory) is not about the
  // architecture and is named as it is.
  const noImage = (e: string) => /NoKernelImage|InvalidDeviceFunction|no kernel image/i.test(e);
  const per = devices.map((d) => {
    const err = d.kernelImageError;
    const supported = err !== undefined ? err === '' : archCovers(d.computeCapability, archs);
    if (supported) return { index: d.index, supported, archProblem: false };
    if (err && !noImage(err))
      return { index: d.index, supported, archProblem: false, problem: `cuda:${d.index} (${d.name}) cannot be used: ${err}` };
    const cc = d.computeCapability.replace('.', '');
    return {
      index: d.index,
      supported,
      archProblem: true,
      problem:
        `cuda:${d.index} (${d.name}) has compute capability ${d.computeCapability}, but this addon has code for ${describeArchs(archs)}: ` +
        `build it for this GPU with \`npx sift-ft build --cuda --cuda-archs ${cc}\``,
    };
  });
  const devicesOut = per.map(({ archProblem: _, ...d }) => d);
  if (per.length > 0 && per.every((d) => !d.supported)) {
    const reason: CudaReason = per.some((d) => d.archProblem) ? 'arch-not-covered' : 'error';
    return { usable: false, reason, message: per.map((d) => d.problem).join('; '), devices: devicesOut };
  }
  const skipped = per.filter((d) => !d.supported).map((d) => d.problem);
  return {
    usable: true,
    reason: 'usable',
    message: skipped.length ? `available (${skipped.join('; ')})` : 'available',
    devices: devicesOut,
  };
}
