/**
 * How the processes of a group start, find each other and end: under torchrun (whose own store
 * holds MASTER_PORT), with the port taken or a rank missing (the errors say which), when the
 * launcher is killed outright (the ranks stop as on SIGTERM) or a rank dies (the survivor's own
 * E_DIST reaches the terminal before the launcher stops it). The multi-process cases skip, saying
 * why, when the addon was built without gloo.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ChildProcess, spawn, spawnSync } from 'child_process';
import { SiftError } from '../../lib/engine/errors';
import { glooAvailable, distEnv, explainRendezvousError, ProcessGroup } from '../../lib/dist/group';
import { cgroupCpuQuota, planLaunch, rankEnv, usableCores } from '../../lib/cli/launch';
import { parseCommand } from '../../lib/cli/args';
import { finetuneFlags } from '../../lib/cli/finetune';
import {
  BIN,
  ROOT,
  cleanEnv,
  closeServer,
  ensureDist,
  expectSameIncrement,
  finetuneArgs as distFinetuneArgs,
  holdPort,
  joinRendezvousOnly,
  rendezvousSet,
  setUpTinyLm,
  torchrunEnv,
  twoFreePorts,
  untilTraining,
  startLaunch,
} from '../helpers/dist';

const GLOO = glooAvailable();
if (!GLOO)
  console.warn('test/dist/launch: skipped the multi-process tests: this build of the addon has no gloo (install libgloo-dev and rebuild)');
const withGloo = GLOO ? describe : describe.skip;

let tmp: string;
let base: string;
let data: string;

// The flags of test/dist/dist.test.ts's runs: the equivalence there holds here too.
const finetuneArgs = (out: string, batch: number, extra: string[] = []): string[] => distFinetuneArgs(base, data, out, batch, extra);

function run(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [BIN, ...args], { env });
    let err = '';
    p.stderr.on('data', (c) => (err += String(c)));
    p.on('exit', (code, sig) => resolve({ code: code ?? (sig ? 128 : -1), err }));
  });
}

/** Alive and not a zombie (a killed launcher's children are reparented; their reaper may be slow). */
function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** The launcher's children, by rank (read from their environment). */
function ranksOf(launcher: ChildProcess): Map<number, number> {
  const pids = spawnSync('ps', ['-o', 'pid=', '--ppid', String(launcher.pid)], { encoding: 'utf8' })
    .stdout.trim()
    .split(/\s+/)
    .map(Number)
    .filter((p) => p > 0);
  const byRank = new Map<number, number>();
  for (const pid of pids) {
    const env = fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
    const rank = env.find((v) => v.startsWith('RANK='));
    if (rank) byRank.set(Number(rank.slice(5)), pid);
  }
  return byRank;
}

beforeAll(() => {
  ({ tmp, base, data } = setUpTinyLm('sift-launch-test-'));
  ensureDist();
}, 180000);

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('group environment', () => {
  test("under torchrun's agent store, every rank takes the port after MASTER_PORT", () => {
    const env = torchrunEnv(1, 2, 29400, { agentStore: true });
    expect(distEnv(env)).toMatchObject({ rank: 1, worldSize: 2, masterAddr: '127.0.0.1', masterPort: 29401, agentStorePort: 29400 });
    // torchrun without a shared store (TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1): MASTER_PORT is free for us.
    const unshared = distEnv({ ...env, TORCHELASTIC_USE_AGENT_STORE: 'False' });
    expect(unshared?.masterPort).toBe(29400);
    expect(unshared).not.toHaveProperty('agentStorePort');
    expect(() => distEnv({ ...env, MASTER_PORT: '65535' })).toThrow(/needs the next port/);
  });

  test('launch gives each process its share of the cores it may run on, and the pipe to watch', () => {
    const plan = planLaunch(['--nproc-per-node', '2', '--', 'finetune']);
    const env = rankEnv(plan, 0, {});
    expect(env.SIFT_FT_NUM_THREADS).toBe(String(Math.max(1, Math.floor(usableCores() / 2))));
    expect(usableCores()).toBeLessThanOrEqual(os.availableParallelism());
    // A container's CPU quota (docker --cpus 1.5: cgroup v2 "150000 100000") counts as 2 cores.
    expect(cgroupCpuQuota('150000 100000\n')).toBe(2);
    expect(cgroupCpuQuota('max 100000\n')).toBeNull();
    expect(cgroupCpuQuota(undefined, '400000\n', '100000\n')).toBe(4);
    expect(cgroupCpuQuota(undefined, '-1\n', '100000\n')).toBeNull();
    expect(cgroupCpuQuota()).toBeNull();
    expect(env.SIFT_FT_LAUNCHER_FD).toBe('3');
    expect(rankEnv(plan, 1, { SIFT_FT_NUM_THREADS: '3' }).SIFT_FT_NUM_THREADS).toBe('3');
    // Restricted to one core (as a container's cpuset does), a process counts one core, not the machine's.
    const script = `const l = require(${JSON.stringify(path.join(ROOT, 'dist', 'lib', 'cli', 'launch.js'))});
      process.stdout.write(l.rankEnv(l.planLaunch(['--nproc-per-node', '1', '--', 'info']), 0, {}).SIFT_FT_NUM_THREADS);`;
    const r = spawnSync('taskset', ['-c', '0', process.execPath, '-e', script], { encoding: 'utf8', env: cleanEnv() });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('1');
  });

  test("Hugging Face's ddp_timeout and ddp_bucket_cap_mb set --dist-timeout and --dist-bucket-mb", () => {
    const f = parseCommand(['--ddp_timeout', '30', '--ddp-bucket-cap-mb', '4'], finetuneFlags).flags;
    expect(f['dist-timeout']).toBe(30);
    expect(f['dist-bucket-mb']).toBe(4);
    const cfg = path.join(tmp, 'ddp.yaml');
    fs.writeFileSync(cfg, 'ddp_timeout: 45\nddp_bucket_cap_mb: 0.5\n');
    const g = parseCommand(['--config', cfg], finetuneFlags).flags;
    expect(g['dist-timeout']).toBe(45);
    expect(g['dist-bucket-mb']).toBe(0.5);
  });

  test("a port taken under torchrun is explained in torchrun's terms; other rendezvous errors pass unchanged", () => {
    const listen = new SiftError(
      'E_IO',
      'rendezvous: rank 0 cannot listen on port 29401 (Address already in use): another process already holds that port, ' +
        'perhaps a second process started as RANK=0 (two launches of one run, or a wrong RANK) or another job; choose another --master-port (MASTER_PORT)',
    );
    const told = explainRendezvousError(listen, distEnv(torchrunEnv(0, 4, 29400, { agentStore: true }))!) as SiftError;
    expect(told.code).toBe('E_IO');
    expect(told.message).toMatch(
      /cannot listen on 127\.0\.0\.1:29401 \(Address already in use\)\. Under torchrun, torchrun's own store holds MASTER_PORT \(29400\)/,
    );
    const env = distEnv(torchrunEnv(0, 4, 29400))!;
    expect(explainRendezvousError(listen, env)).toBe(listen);
    const other = new SiftError('E_DIST', 'rendezvous: rank 3 of 4 did not join within 5 s');
    expect(explainRendezvousError(other, env)).toBe(other);
  });
});

withGloo('processes of a group (gloo)', () => {
  test("under torchrun (its store holding MASTER_PORT) 2 ranks at batch 2 train 1 process's increment at batch 4", async () => {
    const one = path.join(tmp, 'one');
    const r1 = await run(finetuneArgs(one, 4), cleanEnv());
    expect(r1.err).toBe('');
    expect(r1.code).toBe(0);
    const port = await twoFreePorts();
    const store = await holdPort(port);
    try {
      const two = path.join(tmp, 'torchrun');
      const rs = await Promise.all([0, 1].map((rank) => run(finetuneArgs(two, 2), torchrunEnv(rank, 2, port, { agentStore: true }))));
      for (const r of rs) {
        expect(r.err).toBe('');
        expect(r.code).toBe(0);
      }
      expectSameIncrement(one, two);
    } finally {
      await closeServer(store);
    }
  }, 240000);

  // A real torchrun where one is installed (Debian's python3-torch has one): static rendezvous,
  // whose agent store listens on --master_port. `--redirects 1 --tee 2` because torch 1.13 on
  // Python 3.11 cannot parse the default 0 (its Std flag enum has no member for 0 there).
  const torchrun = spawnSync('torchrun', ['--help'], { encoding: 'utf8' }).status === 0;
  if (!torchrun) console.warn('test/dist/launch: skipped the run under a real torchrun: torchrun is not installed');
  (torchrun ? test : test.skip)(
    'a real torchrun (--no_python) runs 2 ranks that train the increment of 1 process at batch 4',
    async () => {
      const one = path.join(tmp, 'one-ref');
      const r1 = await run(finetuneArgs(one, 4), cleanEnv());
      expect(r1.code).toBe(0);
      const port = await twoFreePorts();
      const two = path.join(tmp, 'real-torchrun');
      const logs = path.join(tmp, 'torchrun-logs');
      const r = spawnSync(
        'torchrun',
        [
          ...['--redirects', '1', '--tee', '2', '--log_dir', logs, '--no_python', '--nproc_per_node', '2'],
          ...['--master_addr', '127.0.0.1', '--master_port', String(port), process.execPath, BIN, ...finetuneArgs(two, 2)],
        ],
        { env: cleanEnv(), encoding: 'utf8' },
      );
      expect(r.stderr).not.toMatch(/\[E_/);
      expect(r.status).toBe(0);
      expectSameIncrement(one, two);
    },
    240000,
  );

  test("under torchrun, with the next port taken too, rank 0 says that torchrun's store holds MASTER_PORT", async () => {
    const port = await twoFreePorts();
    const store = await holdPort(port);
    const other = await holdPort(port + 1);
    try {
      const r = await run(finetuneArgs(path.join(tmp, 'taken'), 2, ['--dist-timeout', '5']), torchrunEnv(0, 2, port, { agentStore: true }));
      expect(r.code).toBe(1);
      expect(r.err).toMatch(
        new RegExp(
          `cannot listen on 127\\.0\\.0\\.1:${port + 1} .*torchrun's own store holds MASTER_PORT \\(${port}\\) and sift-ft's rendezvous uses the next port, ${port + 1}.*\\[E_IO\\]`,
        ),
      );
      // Without torchrun: the port itself, and who may hold it.
      const s = await run(finetuneArgs(path.join(tmp, 'taken'), 2, ['--dist-timeout', '5']), torchrunEnv(0, 2, port));
      expect(s.code).toBe(1);
      expect(s.err).toMatch(/another process already holds that port, perhaps a second process started as RANK=0.*\[E_IO\]/);
    } finally {
      await closeServer(store);
      await closeServer(other);
    }
  }, 60000);

  test('ranks started with different WORLD_SIZE values end with E_MISMATCH saying so, before the timeout', async () => {
    // WORLD_SIZE 2 and 3: the third rank never starts, yet both report the mismatch, not a missing rank.
    const port = await twoFreePorts();
    const out = path.join(tmp, 'worlds');
    const t0 = Date.now();
    const [r0, r1] = await Promise.all([
      run(finetuneArgs(out, 2, ['--dist-timeout', '30']), torchrunEnv(0, 2, port)),
      run(finetuneArgs(out, 2, ['--dist-timeout', '30']), torchrunEnv(1, 3, port)),
    ]);
    const seconds = (Date.now() - t0) / 1000;
    for (const r of [r0, r1]) {
      expect(r.err).toMatch(/the processes were started with different WORLD_SIZE values: rank 1 has 3, rank 0 has 2.*\[E_MISMATCH\]/);
      expect(r.err).not.toMatch(/did not join/);
      expect(r.code).toBe(1);
    }
    expect(seconds).toBeLessThan(30);
  }, 60000);

  test('a rank that starts late, within --dist-timeout, still joins and the run succeeds', async () => {
    // Rank 0 waits in the WORLD_SIZE agreement for rank 1, then both connect gloo: the late rank
    // counts against rank 0's wait, not against a second wait of its own.
    const port = await twoFreePorts();
    const out = path.join(tmp, 'late');
    const t0 = Date.now();
    const early = run(finetuneArgs(out, 2, ['--dist-timeout', '15']), torchrunEnv(0, 2, port));
    await new Promise((r) => setTimeout(r, 5000));
    const late = run(finetuneArgs(out, 2, ['--dist-timeout', '15']), torchrunEnv(1, 2, port));
    for (const r of await Promise.all([early, late])) {
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
    }
    expect((Date.now() - t0) / 1000).toBeGreaterThanOrEqual(5);
  }, 120000);

  test('a rank that never joins is named, with the timeout', async () => {
    const port = await twoFreePorts();
    const r = await run(finetuneArgs(path.join(tmp, 'alone'), 2, ['--dist-timeout', '3']), torchrunEnv(0, 3, port));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/rendezvous: rank [12] of 3 did not join within 3 s .*\[E_DIST\]/);
  }, 60000);

  test("a rank that joined the rendezvous but never connects gloo is named by gloo's wait, with the timeout", async () => {
    const port = await twoFreePorts();
    const t0 = Date.now();
    const joined = ProcessGroup.init({ device: 'cpu', timeoutSec: 3, env: torchrunEnv(0, 2, port) });
    joined.catch(() => {});
    await joinRendezvousOnly(port, 1, 2);
    await expect(joined).rejects.toMatchObject({
      code: 'E_DIST',
      message: expect.stringMatching(/^rendezvous: rank 1 of 2 did not join within 3 s/),
    });
    expect((Date.now() - t0) / 1000).toBeGreaterThanOrEqual(2.9);
  }, 60000);

  test('a rank waiting for rank 0, which waits for a rank that never joins, names that rank, not rank 0', async () => {
    // Rank 0 (a longer timeout) is still waiting for rank 2 when rank 1's wait for rank 0's entry ends.
    const port = await twoFreePorts();
    const script = `const g = require(${JSON.stringify(path.join(ROOT, 'dist', 'lib', 'dist', 'group.js'))});
      g.ProcessGroup.init({ device: 'cpu', timeoutSec: 60 }).catch(() => {});`;
    const rank0 = spawn(process.execPath, ['-e', script], { env: torchrunEnv(0, 3, port), stdio: 'ignore' });
    try {
      await expect(ProcessGroup.init({ device: 'cpu', timeoutSec: 3, env: torchrunEnv(1, 3, port) })).rejects.toMatchObject({
        code: 'E_DIST',
        message: expect.stringMatching(/^rendezvous: rank 2 of 3 did not join within 3 s/),
      });
    } finally {
      rank0.kill('SIGKILL');
    }
  }, 60000);

  test("a check of gloo's that fails (a peer's address of another size) ends the group with E_DIST, prefixed with the rank", async () => {
    const port = await twoFreePorts();
    const joined = ProcessGroup.init({ device: 'cpu', timeoutSec: 10, env: torchrunEnv(0, 2, port) });
    joined.catch(() => {});
    await joinRendezvousOnly(port, 1, 2);
    // Rank 1's entry of gloo's full-mesh connect (named "1", or "rank_1" in later gloo versions), not an address.
    for (const key of ['1', 'rank_1']) await rendezvousSet(port, key, 'not an address');
    await expect(joined).rejects.toMatchObject({
      code: 'E_DIST',
      message: expect.stringMatching(/^process group \(gloo, rank 0 of 2\): /),
    });
  }, 60000);

  test('launch killed by SIGKILL: its processes stop as on SIGTERM within seconds, rank 0 writing a whole checkpoint', async () => {
    const out = path.join(tmp, 'launcher-killed');
    const port = await twoFreePorts();
    const l = startLaunch(port, finetuneArgs(out, 2, ['--steps', '100000']));
    const launcher = l.proc;
    // The ranks write to the launcher's stderr, which they inherited: the pipe outlives the launcher.
    const stderrClosed = l.closed;
    await untilTraining(out);
    const ranks = ranksOf(launcher);
    expect([...ranks.keys()].sort()).toEqual([0, 1]);
    try {
      launcher.kill('SIGKILL');
      const killedAt = Date.now();
      while ([...ranks.values()].some(alive) && Date.now() - killedAt < 30000) await new Promise((r) => setTimeout(r, 100));
      expect([...ranks.values()].filter(alive)).toEqual([]);
      expect(Date.now() - killedAt).toBeLessThan(20000);
      await stderrClosed;
      expect(l.err).toMatch(/the launcher is gone: stopping as on SIGTERM/);
      expect(l.err).toMatch(/interrupted at step \d+; checkpoint/);
      expect(l.err).not.toMatch(/\[E_/);
      // Nothing half-written: one checkpoint with its files, no temporary files, no increment.
      const files = fs.readdirSync(out);
      expect(files).not.toContain('delta.safetensors');
      const ckpts = files.filter((f) => f.startsWith('checkpoint-'));
      expect(ckpts.length).toBe(1);
      const inCkpt = fs.readdirSync(path.join(out, ckpts[0]));
      expect(inCkpt.length).toBeGreaterThan(0);
      const tmpFiles = [...files, ...inCkpt].filter((f) => /\.tmp|\.partial/.test(f));
      expect(tmpFiles).toEqual([]);
      // The checkpoint resumes: one process at the same global batch goes on from the step after it.
      const step = Number(/checkpoint-(\d+)/.exec(ckpts[0])![1]);
      const resumed = spawn(process.execPath, [BIN, ...finetuneArgs(out, 4, ['--steps', '100000', '--resume'])], { env: cleanEnv() });
      let resumedErr = '';
      resumed.stderr.on('data', (c) => (resumedErr += String(c)));
      const log = path.join(out, 'log.jsonl');
      const t0 = Date.now();
      try {
        while (!fs.readFileSync(log, 'utf8').includes(`"type":"step","step":${step + 1},`)) {
          expect(resumed.exitCode).toBeNull();
          if (Date.now() - t0 > 60000) throw new Error(`the resumed run did not reach step ${step + 1}: ${resumedErr}`);
          await new Promise((r) => setTimeout(r, 100));
        }
      } finally {
        resumed.kill('SIGKILL');
      }
      expect(resumedErr).not.toMatch(/\[E_/);
    } finally {
      for (const p of ranks.values()) if (alive(p)) process.kill(p, 'SIGKILL');
    }
  }, 240000);

  test("under launch, a dead rank's survivor says E_DIST itself before the launcher stops it", async () => {
    const out = path.join(tmp, 'rank-killed');
    const port = await twoFreePorts();
    const l = startLaunch(port, finetuneArgs(out, 2, ['--steps', '100000']));
    const launcher = l.proc;
    const exited = l.closed;
    await untilTraining(out);
    const ranks = ranksOf(launcher);
    try {
      process.kill(ranks.get(1)!, 'SIGKILL');
      const code = await exited;
      expect(code).not.toBe(0);
      // Rank 0's own line: which collective failed and why.
      expect(l.err).toMatch(/sift-ft finetune: .*\[E_DIST\]/);
      // The cause, even where rank 0's exit was seen first.
      expect(l.err).toMatch(/sift-ft launch: failed: rank 1 of 2 was killed by SIGKILL/);
    } finally {
      for (const p of ranks.values()) if (alive(p)) process.kill(p, 'SIGKILL');
    }
  }, 180000);
});
