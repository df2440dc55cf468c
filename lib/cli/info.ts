/** `sift-ft info`: version, backends compiled and usable, GPUs, GEMM libraries. */
import { backends, version } from '../index';
import { native } from '../engine/native';
import { FlagSpec, Parsed } from './args';

export const infoFlags: Record<string, FlagSpec> = {
  json: { type: 'boolean', help: 'print JSON' },
};

export const infoHelp = 'Shows what this build of sift-ft can use: backends, GPUs, GEMM libraries.';

export function collectInfo(): Record<string, unknown> {
  const b = backends();
  const addon = native();
  const gemm = typeof addon.gemmInfo === 'function' ? addon.gemmInfo() : { cpu: 'unknown', cuda: b.cuda.gemm };
  return {
    version,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    backends: {
      cpu: { compiled: true, usable: true, threads: b.cpu.threads, asyncExecutor: b.cpu.asyncExecutor, gemm: gemm.cpu },
      cuda: {
        compiled: b.cuda.compiled,
        usable: b.cuda.usable,
        status: b.cuda.status,
        runtimeVersion: b.cuda.runtimeVersion || null,
        gemm: b.cuda.compiled ? gemm.cuda : null,
        devices: b.cuda.devices.map((d) => ({
          index: d.index,
          name: d.name,
          computeCapability: d.computeCapability,
          multiprocessors: d.multiprocessors,
          totalMemoryGiB: +(d.totalMemory / 2 ** 30).toFixed(2),
          freeMemoryGiB: +(d.freeMemory / 2 ** 30).toFixed(2),
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
  const lines = [
    `sift-ft ${info.version} (Node ${info.node}, ${info.platform})`,
    `CPU:  usable, ${be.cpu.threads} threads, GEMM: ${be.cpu.gemm}`,
    `CUDA: ${be.cuda.compiled ? 'compiled' : 'not compiled'}${be.cuda.compiled ? `, runtime ${be.cuda.runtimeVersion}` : ''}; ${be.cuda.usable ? 'usable' : String(be.cuda.status)}`,
  ];
  if (be.cuda.compiled) lines.push(`      GEMM: ${be.cuda.gemm}`);
  for (const d of be.cuda.devices) {
    lines.push(`      cuda:${d.index} ${d.name}, compute ${d.computeCapability}, ${d.totalMemoryGiB} GiB (${d.freeMemoryGiB} free), ${d.multiprocessors} SMs`);
  }
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}
