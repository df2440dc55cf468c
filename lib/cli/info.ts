/** `sift-ft info`: version, backends compiled and usable, GPUs, GEMM libraries. */
import { backends, version } from '../index';
import { addonSource, native } from '../engine/native';
import { FlagSpec, Parsed } from './args';

export const infoFlags: Record<string, FlagSpec> = {
  json: { type: 'boolean', help: 'print JSON' },
};

export const infoHelp =
  'Shows what this installation of sift-ft can use: the addon, backends, GPUs (and why CUDA is unusable, if it is), GEMM libraries.';

export function collectInfo(): Record<string, unknown> {
  const b = backends();
  const addon = native();
  const gemm = typeof addon.gemmInfo === 'function' ? addon.gemmInfo() : { cpu: 'unknown', cuda: b.cuda.gemm };
  return {
    version,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    addon: addonSource(),
    backends: {
      cpu: { compiled: true, usable: true, threads: b.cpu.threads, asyncExecutor: b.cpu.asyncExecutor, gemm: gemm.cpu },
      cuda: {
        compiled: b.cuda.compiled,
        usable: b.cuda.usable,
        reason: b.cuda.reason,
        status: b.cuda.status,
        runtimeVersion: b.cuda.runtimeVersion || null,
        driverVersion: b.cuda.driverVersion ?? null,
        archs: b.cuda.probe?.archs ? b.cuda.probe.archs.split(',') : [],
        gemm: b.cuda.compiled ? gemm.cuda : null,
        devices: b.cuda.devices.map((d) => ({
          index: d.index,
          name: d.name,
          computeCapability: d.computeCapability,
          multiprocessors: d.multiprocessors,
          totalMemoryGiB: +(d.totalMemory / 2 ** 30).toFixed(2),
          freeMemoryGiB: +(d.freeMemory / 2 ** 30).toFixed(2),
          supported: d.supported ?? false,
          ...(d.problem ? { problem: d.problem } : {}),
        })),
      },
    },
  };
}

export function runInfo(flags: Parsed): number {
  const info = collectInfo();
  if (flags.json) {
    process.stdout.write(JSON.stringify(info, null, 2) + '\n');
    return 0;
  }
  const be = info.backends as { cpu: Record<string, unknown>; cuda: Record<string, unknown> & { devices: Record<string, unknown>[] } };
  const addon = info.addon as { origin: string; path: string; package?: string };
  const driver = be.cuda.driverVersion ? `, driver supports CUDA ${be.cuda.driverVersion}` : '';
  const lines = [
    `sift-ft ${info.version} (Node ${info.node}, ${info.platform})`,
    `addon: ${addon.package ?? addon.origin} (${addon.path})`,
    `CPU:  usable, ${be.cpu.threads} threads, GEMM: ${be.cpu.gemm}`,
    `CUDA: ${be.cuda.compiled ? `compiled (runtime ${be.cuda.runtimeVersion}${driver}); ` : ''}${be.cuda.usable ? 'usable' : `not usable: ${String(be.cuda.status)}`}`,
  ];
  if (be.cuda.compiled) lines.push(`      GEMM: ${be.cuda.gemm}`);
  for (const d of be.cuda.devices) {
    lines.push(
      `      cuda:${d.index} ${d.name}, compute ${d.computeCapability}, ${d.totalMemoryGiB} GiB (${d.freeMemoryGiB} free), ${d.multiprocessors} SMs${d.supported ? '' : ' (not supported by this build)'}`,
    );
  }
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}
