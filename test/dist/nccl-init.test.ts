/**
 * NCCL communicator creation without NCCL or a GPU: test/native/host/nccl_init.cpp drives
 * native/dist/nccl.cpp with fake NCCL entry points (a peer that joins after a few polls, one that
 * never joins and is aborted after the timeout, a failing initialisation, an NCCL too old for the
 * config API, threads sharing one communicator) and checks the shared run-time loader
 * (native/core/dl_loader.cpp) on libm and on a library whose dependency is missing. Compiled
 * with the host C++ compiler; skipped, saying why, where there is none.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const root = path.join(__dirname, '..', '..');
const cxx = [process.env.CXX, 'c++', 'g++', 'clang++'].find((c) => !!c && spawnSync(c, ['--version']).status === 0);
if (!cxx) console.warn('test/dist/nccl-init: skipped: no C++ compiler (c++, g++ or clang++) found');

(cxx ? describe : describe.skip)('NCCL initialisation (host, fake NCCL)', () => {
  test('non-blocking init polled to ready, aborted with E_DIST after the timeout, blocking before 2.14; the shared loader', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-nccl-init-'));
    try {
      const exe = path.join(dir, 'nccl_init');
      const sources = ['test/native/host/nccl_init.cpp', 'native/dist/nccl.cpp', 'native/core/dl_loader.cpp'];
      const c = spawnSync(cxx!, ['-std=c++17', '-O1', '-Wall', ...sources.map((f) => path.join(root, f)), '-o', exe, '-ldl', '-lpthread'], {
        encoding: 'utf8',
        timeout: 240000,
      });
      expect(c.stderr).toBe('');
      expect(c.status).toBe(0);
      // A library whose dependency is gone: the loader must name the dependency.
      const dep = path.join(dir, 'libsift_dep_gone.so');
      const top = path.join(dir, 'libsift_top.so');
      fs.writeFileSync(path.join(dir, 'dep.cpp'), 'extern "C" int sift_dep() { return 1; }\n');
      fs.writeFileSync(path.join(dir, 'top.cpp'), 'extern "C" int sift_dep();\nextern "C" int sift_top() { return sift_dep(); }\n');
      for (const [src, out, extra] of [
        ['dep.cpp', dep, []],
        ['top.cpp', top, [`-L${dir}`, '-lsift_dep_gone']],
      ] as [string, string, string[]][]) {
        const b = spawnSync(cxx!, ['-shared', '-fPIC', path.join(dir, src), '-o', out, ...extra], { encoding: 'utf8' });
        expect(b.stderr).toBe('');
        expect(b.status).toBe(0);
      }
      fs.rmSync(dep);
      const r = spawnSync(exe, [top], { encoding: 'utf8', timeout: 60000 });
      expect(r.stdout).toMatch(/^0 of \d+ cases wrong/m);
      expect(r.status).toBe(0);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 300000);
});
