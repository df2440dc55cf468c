/**
 * Device detection in words: each reason CUDA can be unusable, from the facts the addon reports,
 * and the architecture coverage rule. Then the real addon here (no GPU on CI machines): backends()
 * says why, and `sift-ft info` prints it.
 */
import { archCovers, cudaStatus, CudaProbe, describeArchs, parseArchs } from '../../lib/engine/cuda-status';
import { backends } from '../../lib';
import { collectInfo } from '../../lib/cli/info';

const probe = (p: Partial<CudaProbe>): CudaProbe => ({
  driverVersion: 13000,
  runtimeVersion: 13000,
  error: '',
  errorText: '',
  deviceCount: 1,
  archs: '75-real,80-real,86-real,89-real,90',
  ...p,
});
const h200 = { index: 0, name: 'NVIDIA H200', computeCapability: '9.0', kernelImageError: '' };

describe('parseArchs / archCovers', () => {
  test('CMake syntax: NN is SASS and PTX, -real SASS only, -virtual PTX only', () => {
    expect(parseArchs('75-real,80-real,86-real,89-real,90')).toEqual({ sass: [75, 80, 86, 89, 90], ptx: [90] });
    expect(parseArchs('80-virtual;90-real')).toEqual({ sass: [90], ptx: [80] });
    expect(parseArchs('')).toEqual({ sass: [], ptx: [] });
  });

  test('SASS runs on the same major with an equal or higher minor; PTX on any capability at or above it', () => {
    const a = parseArchs('75-real,80-real,86-real,89-real,90');
    expect(archCovers('7.5', a)).toBe(true);
    expect(archCovers('8.7', a)).toBe(true); // Orin: sm_86 code
    expect(archCovers('9.0', a)).toBe(true);
    expect(archCovers('12.0', a)).toBe(true); // PTX 9.0, compiled by the driver
    expect(archCovers('7.0', a)).toBe(false); // V100
    expect(archCovers('6.1', a)).toBe(false);
    const sassOnly = parseArchs('80-real,90-real');
    expect(archCovers('10.0', sassOnly)).toBe(false);
    expect(archCovers('8.6', sassOnly)).toBe(true);
    expect(describeArchs(a)).toBe('7.5, 8.0, 8.6, 8.9, 9.0 (machine code) and PTX 9.0 (compiled by the driver for 9.0 and newer)');
  });
});

describe('cudaStatus', () => {
  test('usable', () => {
    const s = cudaStatus(true, probe({}), [h200]);
    expect(s).toMatchObject({ usable: true, reason: 'usable', message: 'available' });
    expect(s.devices).toEqual([{ index: 0, supported: true }]);
  });

  test('not compiled in', () => {
    const s = cudaStatus(false, undefined, []);
    expect(s.reason).toBe('not-compiled');
    expect(s.usable).toBe(false);
    expect(s.message).toMatch(/CPU-only/);
    expect(s.message).toMatch(/sift-ft build --cuda/);
  });

  test('no driver: libcuda missing (the static runtime reports driver version 0)', () => {
    const s = cudaStatus(
      true,
      probe({
        driverVersion: 0,
        error: 'cudaErrorInsufficientDriver',
        errorText: 'CUDA driver version is insufficient for CUDA runtime version',
        deviceCount: 0,
      }),
      [],
    );
    expect(s.reason).toBe('no-driver');
    expect(s.message).toMatch(/no NVIDIA driver found \(libcuda\.so\.1/);
    expect(s.message).toMatch(/R580 or newer\) for CUDA 13\.0/);
  });

  test('driver older than the runtime: both versions and the driver branch to install', () => {
    const s = cudaStatus(
      true,
      probe({ driverVersion: 12040, error: 'cudaErrorInsufficientDriver', errorText: 'insufficient', deviceCount: 0 }),
      [],
    );
    expect(s.reason).toBe('driver-too-old');
    expect(s.message).toContain('supports CUDA up to 12.4');
    expect(s.message).toContain('CUDA runtime is 13.0');
    expect(s.message).toContain('R580');
  });

  test('a minor-version-older driver of the same major is not "too old" (CUDA minor version compatibility)', () => {
    const s = cudaStatus(true, probe({ driverVersion: 13000, runtimeVersion: 13010 }), [h200]);
    expect(s.reason).toBe('usable');
  });

  test('driver but no GPU visible', () => {
    const s = cudaStatus(true, probe({ error: 'cudaErrorNoDevice', errorText: 'no CUDA-capable device is detected', deviceCount: 0 }), []);
    expect(s.reason).toBe('no-device');
    expect(s.message).toMatch(/sees no GPU/);
    expect(s.message).toMatch(/CUDA_VISIBLE_DEVICES/);
  });

  test('GPU architecture not covered: its compute capability against the compiled ones', () => {
    const v100 = {
      index: 0,
      name: 'Tesla V100-SXM2-16GB',
      computeCapability: '7.0',
      kernelImageError: 'cudaErrorNoKernelImageForDevice: no kernel image is available for execution on the device',
    };
    const s = cudaStatus(true, probe({}), [v100]);
    expect(s.reason).toBe('arch-not-covered');
    expect(s.usable).toBe(false);
    expect(s.message).toContain('compute capability 7.0');
    expect(s.message).toContain('7.5, 8.0, 8.6, 8.9, 9.0 (machine code)');
    expect(s.message).toContain('sift-ft build --cuda --cuda-archs 70');
    expect(s.devices).toEqual([{ index: 0, supported: false, problem: expect.stringContaining('Tesla V100') }]);
  });

  test('the native image check wins over the arch rule; one covered device keeps CUDA usable', () => {
    const odd = { index: 1, name: 'GPU X', computeCapability: '9.0', kernelImageError: 'cudaErrorNoKernelImageForDevice: no kernel image' };
    const s = cudaStatus(true, probe({ deviceCount: 2 }), [h200, odd]);
    expect(s.usable).toBe(true);
    expect(s.devices.map((d) => d.supported)).toEqual([true, false]);
    expect(s.message).toMatch(/^available \(cuda:1 \(GPU X\)/);
    // Without the native check (older addons), the rule decides.
    const rule = cudaStatus(true, probe({}), [{ index: 0, name: 'P100', computeCapability: '6.0' }]);
    expect(rule.reason).toBe('arch-not-covered');
  });

  test('a device that fails for another reason is named with its error, not as an architecture problem', () => {
    const busy = {
      index: 0,
      name: 'NVIDIA A100',
      computeCapability: '8.0',
      kernelImageError: 'cudaErrorDevicesUnavailable: CUDA-capable device(s) is/are busy or unavailable',
    };
    const s = cudaStatus(true, probe({}), [busy]);
    expect(s.reason).toBe('error');
    expect(s.message).toBe(
      'cuda:0 (NVIDIA A100) cannot be used: cudaErrorDevicesUnavailable: CUDA-capable device(s) is/are busy or unavailable',
    );
  });

  test('any other CUDA error is named', () => {
    const s = cudaStatus(true, probe({ error: 'cudaErrorSystemNotReady', errorText: 'system not yet initialized', deviceCount: 0 }), []);
    expect(s).toMatchObject({ usable: false, reason: 'error' });
    expect(s.message).toContain('cudaErrorSystemNotReady (system not yet initialized)');
  });
});

describe('this machine', () => {
  test('backends() and info give a reason code and words, consistent with each other', () => {
    const b = backends();
    expect(['usable', 'not-compiled', 'no-driver', 'driver-too-old', 'no-device', 'arch-not-covered', 'error']).toContain(b.cuda.reason);
    expect(b.cuda.usable).toBe(b.cuda.reason === 'usable');
    if (!b.cuda.compiled) expect(b.cuda.reason).toBe('not-compiled');
    if (!b.cuda.usable) expect(b.cuda.status.length).toBeGreaterThan(20);
    const info = collectInfo() as { addon: { origin: string; path: string }; backends: { cuda: { reason: string; status: string } } };
    expect(info.backends.cuda.reason).toBe(b.cuda.reason);
    expect(info.backends.cuda.status).toBe(b.cuda.status);
    expect(['SIFT_FT_NATIVE', 'source build', 'prebuilt package']).toContain(info.addon.origin);
  });
});
