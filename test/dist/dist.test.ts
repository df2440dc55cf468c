/**
 * Data parallel on CPU processes (gloo): two processes at batch B train the same increment as one
 * at 2B (same indices, values equal up to summation order), a killed rank ends the other with
 * E_DIST instead of a hang, and a checkpoint of a one-process run resumes on two. Skipped, saying
 * why, when the addon was built without gloo.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as net from 'net';
import { spawn, spawnSync, SpawnSyncReturns } from 'child_process';
import { createModel, stateDict } from '../../lib/models';
import { saveModelFolder } from '../../lib/io/hf';
import { glooAvailable, distEnv, ProcessGroup } from '../../lib/dist/group';
import { planLaunch, rankEnv } from '../../lib/cli/launch';
import {
  BIN,
  ROOT,
  cleanEnv,
  ensureDist,
  expectSameIncrement,
  finetuneArgs as distFinetuneArgs,
  freePort,
  joinRendezvousOnly,
  readTensors,
  setUpTinyLm,
  torchrunEnv,
  untilTraining,
  startLaunch,
} from '../helpers/dist';

const GLOO = glooAvailable();
if (!GLOO)
  console.warn('test/dist: skipped the multi-process tests: this build of the addon has no gloo (install libgloo-dev and rebuild)');
const withGloo = GLOO ? describe : describe.skip;

let tmp: string;
let base: string;
let data: string;
let cls: string;
let wide: string;

const finetuneArgs = (out: string, batch: number, extra: string[] = [], model = base): string[] =>
  distFinetuneArgs(model, data, out, batch, extra);

/** A CLI run that must succeed: exit 0 and no typed error on stderr. */
function expectOk(r: SpawnSyncReturns<string>): SpawnSyncReturns<string> {
  expect(r.stderr).not.toMatch(/\[E_/);
  expect(r.status).toBe(0);
  return r;
}

/** `sift-ft <args>` in one process (no group unless env carries one). */
function runSingle(args: string[], env: NodeJS.ProcessEnv = cleanEnv()): SpawnSyncReturns<string> {
  return expectOk(spawnSync(process.execPath, [BIN, ...args], { env, encoding: 'utf8' }));
}

/** `sift-ft launch --nproc-per-node <nproc> -- <args>` on a free port. */
async function runLaunched(args: string[], nproc = 2): Promise<SpawnSyncReturns<string>> {
  const port = await freePort();
  return expectOk(
    spawnSync(process.execPath, [BIN, 'launch', '--nproc-per-node', String(nproc), '--master-port', String(port), '--', ...args], {
      env: cleanEnv(),
      encoding: 'utf8',
    }),
  );
}

/** The parts of `finetune --json` these tests read. */
interface FinetuneResult {
  worldSize: number;
  communication: {
    bytesPerStep: number;
    fullFinetuneBytesPerStep: number;
    bucketsPerStep: number;
    bucketsInBackward: number;
    overlap: boolean;
  };
  metrics: { examples: number; accuracy: number; loss: number };
}

interface OneVersusTwo {
  /** Output folders of the single process and of the two launched ones. */
  one: string;
  two: string;
  /** Their `--json` results. */
  single: FinetuneResult;
  launched: FinetuneResult;
}

// Single-process references by name: tests comparing other two-process variants against the same
// single run share it.
const singles = new Map<string, FinetuneResult>();

/**
 * The promise of data parallel: `args(out, 2B)` in one process trains what `args(out, B)` trains on
 * two launched processes (`launchExtra` added to theirs). The single run of a `name` runs once;
 * `variant` names the two-process folder when one name is compared several times.
 */
async function oneVersusTwo(
  name: string,
  args: (out: string, batch: number) => string[],
  opts: { batch?: number; launchExtra?: string[]; variant?: string } = {},
): Promise<OneVersusTwo> {
  const batch = opts.batch ?? 2;
  const one = path.join(tmp, `${name}-one`);
  if (!singles.has(name)) singles.set(name, JSON.parse(runSingle(args(one, 2 * batch)).stdout));
  const two = path.join(tmp, `${name}-two${opts.variant ? `-${opts.variant}` : ''}`);
  const r = await runLaunched([...args(two, batch), ...(opts.launchExtra ?? [])]);
  return { one, two, single: singles.get(name)!, launched: JSON.parse(r.stdout) };
}

beforeAll(() => {
  const lm = setUpTinyLm('sift-dist-test-');
  ({ tmp, base, data } = lm);
  const { tok, config } = lm;
  const rows = [
    'good film',
    'great movie',
    'bad film',
    'awful movie',
    'lovely story',
    'boring plot',
    'nice acting',
    'poor script',
    'fine cast',
    'dull end',
  ];
  cls = path.join(tmp, 'cls.csv');
  fs.writeFileSync(cls, 'sentence,label\n' + rows.map((t, i) => `${t},${i % 2 ? 'neg' : 'pos'}`).join('\n') + '\n');
  // Wide enough that SIFT's per-target padding is negligible, as in real models.
  const wideModel = createModel({ ...config, n_embd: 128, n_inner: 512, n_head: 4, n_layer: 2 }, { task: 'causal-lm', seed: 4 });
  wide = path.join(tmp, 'wide');
  saveModelFolder(wide, { config: wideModel.config, stateDict: stateDict(wideModel), tokenizerFiles: tok.toFiles() });
  wideModel.dispose();
  if (GLOO) ensureDist();
}, 180000);

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('launch: plan and environment', () => {
  test('torchrun variables per rank, cores divided, the command after --', () => {
    const plan = planLaunch([
      '--nproc-per-node',
      '2',
      '--nnodes',
      '2',
      '--node-rank',
      '1',
      '--master-addr',
      'h0',
      '--master-port',
      '29511',
      '--',
      'finetune',
      '--steps',
      '3',
    ]);
    expect(plan.command).toEqual(['finetune', '--steps', '3']);
    const env = rankEnv(plan, 1, {});
    expect(env).toMatchObject({
      RANK: '3',
      WORLD_SIZE: '4',
      LOCAL_RANK: '1',
      LOCAL_WORLD_SIZE: '2',
      MASTER_ADDR: 'h0',
      MASTER_PORT: '29511',
    });
    expect(Number(env.SIFT_FT_NUM_THREADS)).toBeGreaterThanOrEqual(1);
    expect(distEnv(env)).toEqual({ rank: 3, worldSize: 4, localRank: 1, localWorldSize: 2, masterAddr: 'h0', masterPort: 29511 });
    expect(distEnv({})).toBeNull();
    expect(() => planLaunch(['--nproc-per-node', '2', 'finetune'])).toThrow(/after --/);
    expect(() => planLaunch(['--nproc-per-node', '2', '--node-rank', '1', '--', 'finetune'])).toThrow(/node-rank/);
    expect(() => distEnv({ WORLD_SIZE: '2', RANK: '2' })).toThrow(/RANK 2/);
  });
});

describe('launch: the CPU cores divided', () => {
  test("each process's kernel thread pool has its share of the cores", async () => {
    ensureDist();
    const env = cleanEnv();
    delete env.SIFT_FT_NUM_THREADS;
    const port = await freePort();
    // `info` runs once per process and prints the thread count its addon uses.
    const r = spawnSync(process.execPath, [BIN, 'launch', '--nproc-per-node', '2', '--master-port', String(port), '--', 'info', '--json'], {
      env,
      encoding: 'utf8',
    });
    expect(r.status).toBe(0);
    const threads = [...r.stdout.matchAll(/"threads": (\d+)/g)].map((m) => Number(m[1]));
    const share = Math.max(1, Math.floor(os.cpus().length / 2));
    expect(threads).toEqual([share, share]);
  }, 120000);
});

withGloo('two CPU processes (gloo)', () => {
  test('2 processes at batch 2 train the increment of 1 process at batch 4', async () => {
    const { one, two, launched } = await oneVersusTwo('sift', finetuneArgs);
    expect(launched.worldSize).toBe(2);
    expect(launched.communication.bytesPerStep).toBeGreaterThan(0);
    expect(launched.communication.bytesPerStep).toBeLessThan(launched.communication.fullFinetuneBytesPerStep);
    expectSameIncrement(one, two);
    // The loss curve is the global batch's on rank 0.
    const steps = (d: string) =>
      fs
        .readFileSync(path.join(d, 'log.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l))
        .filter((e) => e.type === 'step');
    const a = steps(one);
    const b = steps(two);
    expect(b.length).toBe(a.length);
    a.forEach((e, i) => expect(b[i].loss).toBeCloseTo(e.loss, 4));
  }, 180000);

  test('small gradient buckets, overlapped with the backward or not, train the same increment', async () => {
    // 128 bytes per bucket: about one target's selected values per bucket (a bucket holds more than one
    // target where they are smaller), started in the backward as each completes.
    const bucketsOf = async (overlap: boolean) => {
      const launchExtra = ['--dist-bucket-mb', String(128 / 2 ** 20), ...(overlap ? [] : ['--no-dist-overlap'])];
      const r = await oneVersusTwo('sift', finetuneArgs, { launchExtra, variant: overlap ? 'buckets-overlap' : 'buckets-after' });
      expectSameIncrement(r.one, r.two);
      return r.launched.communication;
    };
    const a = await bucketsOf(true);
    expect(a.bucketsPerStep).toBeGreaterThan(3);
    expect(a.overlap).toBe(true);
    // Every bucket started inside the backward (the last one when the embedding's gradient completed).
    expect(a.bucketsInBackward).toBe(a.bucketsPerStep);
    const b = await bucketsOf(false);
    expect(b.bucketsPerStep).toBe(a.bucketsPerStep);
    expect(b.bytesPerStep).toBe(a.bytesPerStep);
    expect(b.overlap).toBe(false);
    expect(b.bucketsInBackward).toBe(0);
  }, 240000);

  test('full fine-tuning in 2 KB buckets (dense gradients staged and copied back): 2 x 2 equals 1 x 4', async () => {
    const args = (out: string, batch: number) =>
      finetuneArgs(out, batch, ['--method', 'full']).filter((a, i, all) => a !== '--sparse-rate' && all[i - 1] !== '--sparse-rate');
    const { one, two, launched } = await oneVersusTwo('full', args, { launchExtra: ['--dist-bucket-mb', '0.002'] });
    const c = launched.communication;
    expect(c.bucketsPerStep).toBeGreaterThan(3);
    expect(c.bytesPerStep).toBe(c.fullFinetuneBytesPerStep);
    const A = readTensors(path.join(one, 'model.safetensors'));
    const B = readTensors(path.join(two, 'model.safetensors'));
    expect([...B.keys()].sort()).toEqual([...A.keys()].sort());
    for (const [n, x] of A) {
      const y = B.get(n)!;
      for (let i = 0; i < x.length; i++) expect(Math.abs(x[i] - y[i])).toBeLessThan(1e-4 + 1e-3 * Math.abs(x[i]));
    }
  }, 180000);

  test('classify with a dense head and sharded evaluation: 2 x 2 equals 1 x 4', async () => {
    const args = (out: string, batch: number) => [
      'finetune',
      '--model',
      base,
      '--data',
      cls,
      '--eval-data',
      cls,
      '--task',
      'classify',
      '--out',
      out,
      '--steps',
      '3',
      '--batch-size',
      String(batch),
      '--sparse-rate',
      '0.05',
      '--lr',
      '0.01',
      '--seed',
      '7',
      '--device',
      'cpu',
      '--quiet',
      '--json',
    ];
    // Small buckets: the head's weight and bias share a staged bucket, the sparse values others.
    const { one, two, single, launched } = await oneVersusTwo('cls', args, { launchExtra: ['--dist-bucket-mb', '0.001'] });
    expectSameIncrement(one, two);
    expect(launched.communication.bucketsPerStep).toBeGreaterThan(1);
    expect(launched.metrics.examples).toBe(single.metrics.examples);
    expect(launched.metrics.accuracy).toBe(single.metrics.accuracy);
    expect(launched.metrics.loss).toBeCloseTo(single.metrics.loss, 4);
  }, 180000);

  test("the gradient bytes of SIFT at 1% are at most 2% of full fine-tuning's", async () => {
    const out = path.join(tmp, 'bytes');
    const r = runSingle(finetuneArgs(out, 2, ['--steps', '1', '--sparse-rate', '0.01'], wide), torchrunEnv(0, 1, await freePort()));
    const c = JSON.parse(r.stdout).communication;
    expect(c.bytesPerStep).toBeGreaterThan(0);
    expect(c.fraction).toBeLessThanOrEqual(0.02);
  }, 180000);

  test('checkpoints resume on another number of processes: 1 -> 2 and 2 -> 1', async () => {
    const withCheckpoints = (out: string, batch: number) => finetuneArgs(out, batch, ['--checkpoint-every', '2']);
    const { one, two } = await oneVersusTwo('checkpoints', withCheckpoints);
    expectSameIncrement(one, two);
    // Each run cut back to its step-2 checkpoint, then finished on the other number of processes.
    const cut = (from: string, name: string) => {
      const dir = path.join(tmp, name);
      fs.cpSync(from, dir, { recursive: true });
      fs.rmSync(path.join(dir, 'checkpoint-4'), { recursive: true, force: true });
      fs.rmSync(path.join(dir, 'delta.safetensors'));
      return dir;
    };
    // The steps the last run of a folder logged (its log lines follow its own 'selection' line).
    const lastRunSteps = (dir: string) => {
      const events = fs
        .readFileSync(path.join(dir, 'log.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      const start = events.map((e) => e.type).lastIndexOf('selection');
      return events
        .slice(start)
        .filter((e) => e.type === 'step')
        .map((e) => e.step);
    };
    const oneThenTwo = cut(one, 'resume-1-2');
    await runLaunched([...withCheckpoints(oneThenTwo, 2), '--resume']);
    expect(lastRunSteps(oneThenTwo)).toEqual([3, 4]);
    expectSameIncrement(one, oneThenTwo);
    const twoThenOne = cut(two, 'resume-2-1');
    runSingle([...withCheckpoints(twoThenOne, 4), '--resume']);
    expect(lastRunSteps(twoThenOne)).toEqual([3, 4]);
    expectSameIncrement(one, twoThenOne);
  }, 240000);

  test('a killed rank ends the other with E_DIST, not a hang', async () => {
    const out = path.join(tmp, 'killed');
    const port = await freePort();
    const args = finetuneArgs(out, 2, ['--steps', '100000', '--dist-timeout', '20']);
    const r0 = spawn(process.execPath, [BIN, ...args], { env: torchrunEnv(0, 2, port) });
    const r1 = spawn(process.execPath, [BIN, ...args], { env: torchrunEnv(1, 2, port) });
    let err0 = '';
    r0.stderr.on('data', (c) => (err0 += String(c)));
    const exit0 = new Promise<number>((resolve) => r0.on('exit', (code) => resolve(code ?? -1)));
    // Wait until training runs, then kill rank 1.
    await untilTraining(out);
    r1.kill('SIGKILL');
    const killedAt = Date.now();
    const code = await exit0;
    expect(Date.now() - killedAt).toBeLessThan(25000);
    expect(code).not.toBe(0);
    expect(err0).toMatch(/E_DIST/);
  }, 180000);

  test('a stopped rank (SIGSTOP) ends the other with E_DIST within --dist-timeout, writing no increment', async () => {
    const out = path.join(tmp, 'stopped');
    const port = await freePort();
    const timeout = 4;
    const args = finetuneArgs(out, 2, ['--steps', '100000', '--dist-timeout', String(timeout)]);
    const r0 = spawn(process.execPath, [BIN, ...args], { env: torchrunEnv(0, 2, port) });
    const r1 = spawn(process.execPath, [BIN, ...args], { env: torchrunEnv(1, 2, port) });
    try {
      let err0 = '';
      r0.stderr.on('data', (c) => (err0 += String(c)));
      const exit0 = new Promise<number>((resolve) => r0.on('exit', (code) => resolve(code ?? -1)));
      await untilTraining(out);
      // Alive but not answering: its sockets stay open, so only the timeout can notice.
      r1.kill('SIGSTOP');
      const stoppedAt = Date.now();
      const code = await exit0;
      const waited = (Date.now() - stoppedAt) / 1000;
      expect(waited).toBeGreaterThanOrEqual(timeout - 1);
      expect(waited).toBeLessThan(timeout + 15);
      expect(code).not.toBe(0);
      expect(err0).toMatch(/E_DIST/);
      expect(err0).toMatch(/stopped answering within 4 s/);
      // Nothing half-written: no increment, no temporary files, no checkpoint.
      const files = fs.readdirSync(out);
      expect(files).not.toContain('delta.safetensors');
      expect(files.filter((f) => f.includes('.tmp') || f.startsWith('checkpoint-'))).toEqual([]);
    } finally {
      r1.kill('SIGKILL');
      r0.kill('SIGKILL');
    }
  }, 180000);

  test('a rank 0 that accepts the rendezvous but never answers ends the others with E_DIST after the timeout', async () => {
    // A listener that takes connections and reads nothing: a stopped rank 0 looks the same (the
    // kernel accepts into its backlog), and a store read without a timeout would wait forever.
    const sockets: net.Socket[] = [];
    const silent = net.createServer((s) => sockets.push(s));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as net.AddressInfo).port;
    try {
      const t0 = Date.now();
      const r = spawnSync(process.execPath, [BIN, ...finetuneArgs(path.join(tmp, 'silent'), 2, ['--dist-timeout', '3'])], {
        env: torchrunEnv(1, 2, port),
        encoding: 'utf8',
        timeout: 60000,
      });
      const waited = (Date.now() - t0) / 1000;
      expect(r.status).not.toBe(0);
      expect(r.stderr).toMatch(/E_DIST/);
      expect(r.stderr).toMatch(/rendezvous: rank 0 at 127\.0\.0\.1:\d+ did not answer within 3 s/);
      expect(waited).toBeLessThan(30);
    } finally {
      for (const s of sockets) s.destroy();
      silent.close();
    }
  }, 90000);

  test('processes started by torchrun rather than launch take their share of the cores too', async () => {
    const port = await freePort();
    const script = [
      `const { ProcessGroup } = require(${JSON.stringify(path.join(ROOT, 'dist', 'lib', 'dist', 'group'))});`,
      `const { numThreads } = require(${JSON.stringify(path.join(ROOT, 'dist', 'lib', 'engine', 'runtime'))});`,
      "ProcessGroup.init({ device: 'cpu', timeoutSec: 60 }).then(async (g) => {",
      '  await g.barrier();',
      '  console.log(JSON.stringify(numThreads()));',
      '  g.destroy();',
      '});',
    ].join('\n');
    const run = (rank: number, threads?: number, p0 = port) =>
      new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
        const env = torchrunEnv(rank, 2, p0);
        delete env.SIFT_FT_NUM_THREADS;
        if (threads) env.SIFT_FT_NUM_THREADS = String(threads);
        const p = spawn(process.execPath, ['-e', script], { env });
        let out = '';
        let err = '';
        p.stdout.on('data', (c) => (out += String(c)));
        p.stderr.on('data', (c) => (err += String(c)));
        p.on('exit', (code) => resolve({ code, out, err }));
      });
    for (const r of await Promise.all([run(0), run(1)])) {
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      const t = JSON.parse(r.out);
      expect(t.threads).toBe(Math.max(1, Math.floor(t.hardware / 2)));
      expect(t.fromEnv).toBe(false);
    }
    // A count set explicitly stays, even the machine's whole count.
    const hw = os.cpus().length;
    const port2 = await freePort();
    for (const r of await Promise.all([run(0, hw, port2), run(1, hw, port2)])) {
      expect(r.code).toBe(0);
      const t = JSON.parse(r.out);
      expect(t.fromEnv).toBe(true);
      expect(t.threads).toBe(t.default);
    }
  }, 60000);

  test('launch ends the other processes and names the rank when one dies', async () => {
    const out = path.join(tmp, 'launch-killed');
    const port = await freePort();
    const l = startLaunch(port, finetuneArgs(out, 2, ['--steps', '100000']));
    const launcher = l.proc;
    const exited = l.exited;
    await untilTraining(out);
    // The launcher's children: kill one of them.
    const ps = spawnSync('ps', ['-o', 'pid=', '--ppid', String(launcher.pid)], { encoding: 'utf8' });
    const pids = ps.stdout
      .trim()
      .split(/\s+/)
      .map(Number)
      .filter((p) => p > 0);
    expect(pids.length).toBe(2);
    process.kill(pids[1], 'SIGKILL');
    const killedAt = Date.now();
    const code = await exited;
    expect(Date.now() - killedAt).toBeLessThan(20000);
    expect(code).not.toBe(0);
    expect(l.err).toMatch(/sift-ft launch: rank \d of 2 was killed by SIGKILL/);
    for (const p of pids) expect(() => process.kill(p, 0)).toThrow();
  }, 180000);

  test.each(['SIGINT', 'SIGHUP'] as const)(
    '%s to launch stops every rank at a step boundary with a checkpoint, with evaluation data too',
    async (sig) => {
      const out = path.join(tmp, `launch-${sig}`);
      const port = await freePort();
      const args = finetuneArgs(out, 2, ['--steps', '100000', '--eval-data', data, '--dist-timeout', '30']);
      const l = startLaunch(port, args);
      const launcher = l.proc;
      const exited = l.exited;
      const log = path.join(out, 'log.jsonl');
      const t0 = Date.now();
      while (!(fs.existsSync(log) && fs.readFileSync(log, 'utf8').includes('"type":"step"'))) {
        if (Date.now() - t0 > 120000) throw new Error('training did not start');
        await new Promise((r) => setTimeout(r, 100));
      }
      const pids = spawnSync('ps', ['-o', 'pid=', '--ppid', String(launcher.pid)], { encoding: 'utf8' })
        .stdout.trim()
        .split(/\s+/)
        .map(Number)
        .filter((p) => p > 0);
      try {
        launcher.kill(sig);
        const code = await exited;
        // Every rank ended as interrupted (130): none went on to evaluate alone, none failed.
        expect(l.err).not.toMatch(/\[E_|failed/);
        expect(l.err).toMatch(/interrupted at step \d+; checkpoint/);
        expect(code).toBe(130);
        const files = fs.readdirSync(out);
        expect(files.filter((f) => f.startsWith('checkpoint-')).length).toBe(1);
        expect(files).not.toContain('delta.safetensors');
        for (const p of pids) expect(() => process.kill(p, 0)).toThrow();
      } finally {
        for (const p of pids) {
          try {
            process.kill(p, 'SIGKILL');
          } catch {
            // already gone
          }
        }
      }
    },
    180000,
  );

  test('pretrain in a group of several processes is refused, not run once per process into the same --out', () => {
    const out = path.join(tmp, 'pretrain-group');
    const env = { ...cleanEnv(), RANK: '1', WORLD_SIZE: '2', LOCAL_RANK: '1', MASTER_ADDR: '127.0.0.1', MASTER_PORT: '1' };
    const r = spawnSync(
      process.execPath,
      [BIN, 'pretrain', '--architecture', 'gpt2', '--size', 'tiny', '--data', data, '--tokenizer', base, '--steps', '2', '--out', out],
      { env, encoding: 'utf8' },
    );
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/pretrain does not train as a data-parallel group \(this process is rank 1 of 2\).*\[E_UNSUPPORTED\]/);
    expect(fs.existsSync(out)).toBe(false);
  }, 60000);

  test('ranks started with different settings end with E_MISMATCH naming them, before training', async () => {
    const out = path.join(tmp, 'mismatch');
    const port = await freePort();
    const env = (rank: number) => ({
      ...cleanEnv(),
      RANK: String(rank),
      WORLD_SIZE: '2',
      LOCAL_RANK: String(rank),
      MASTER_ADDR: '127.0.0.1',
      MASTER_PORT: String(port),
    });
    const run = (rank: number, extra: string[]) =>
      new Promise<{ code: number; err: string }>((resolve) => {
        // The other sparse rate would sum gradient buffers of another size: gloo aborts the process.
        const p = spawn(process.execPath, [BIN, ...finetuneArgs(out, 2, ['--dist-timeout', '30', ...extra])], { env: env(rank) });
        let err = '';
        p.stderr.on('data', (c) => (err += String(c)));
        p.on('exit', (code) => resolve({ code: code ?? -1, err }));
      });
    const [r0, r1] = await Promise.all([run(0, []), run(1, ['--sparse-rate', '0.1', '--seed', '6'])]);
    for (const r of [r0, r1]) {
      expect(r.code).toBe(1);
      expect(r.err).toMatch(/--sparse-rate \(rank 1 differs from rank 0\), --seed \(rank 1 differs from rank 0\).*\[E_MISMATCH\]/);
    }
    expect(fs.existsSync(path.join(out, 'delta.safetensors'))).toBe(false);
  }, 120000);
});

// On a GPU machine (gpu-check runs the [cuda] tests): a one-rank NCCL group through the whole
// finetune path. Several GPUs are needed for more ranks (NCCL takes one GPU per rank).
const CUDA = (() => {
  try {
    return require('../../lib/engine/runtime').cudaAvailable() as boolean;
  } catch {
    return false;
  }
})();
(CUDA ? describe : describe.skip)('NCCL', () => {
  // What the first test found: whether NCCL loads, and whether it has the non-blocking initialisation.
  let nonBlocking: boolean | undefined;

  test('[cuda] a one-rank NCCL group initialises through the config API (non-blocking, with the timeout) and reduces', async () => {
    let group: ProcessGroup;
    try {
      group = await ProcessGroup.init({ device: 'cuda', timeoutSec: 60, env: torchrunEnv(0, 1, await freePort()) });
    } catch (e) {
      if (/NCCL was not found/.test(String(e))) {
        console.warn(`NCCL test not run: ${String(e)}`);
        return;
      }
      throw e;
    }
    try {
      expect(group.backend).toBe('nccl');
      // NCCL 2.14 and later: ncclCommInitRankConfig with blocking = 0, polled; older ones say why not.
      const version = /NCCL (\d+)\.(\d+)\./.exec(group.library);
      expect(version).not.toBeNull();
      const atLeast214 = Number(version![1]) > 2 || (Number(version![1]) === 2 && Number(version![2]) >= 14);
      expect(group.library).toMatch(atLeast214 ? /: non-blocking initialisation$/ : /blocking initialisation, without a timeout/);
      nonBlocking = atLeast214;
      // Calls on a non-blocking communicator may return ncclInProgress: they are waited for.
      expect(await group.allReduceNumbers([1.5, -2])).toEqual([1.5, -2]);
      await group.barrier();
    } finally {
      group.destroy();
    }
  }, 120000);

  test('[cuda] rank 0 of 2 whose peer never joins: NCCL initialisation ends with E_DIST after the timeout', async () => {
    if (!nonBlocking) {
      // Without NCCL, or before 2.14 (blocking initialisation: it would wait for the peer forever).
      console.warn(
        `NCCL initialisation timeout test not run: ${nonBlocking === undefined ? 'NCCL was not found' : 'NCCL older than 2.14'}`,
      );
      return;
    }
    // Rank 1 joins the rendezvous (so that rank 0 gets past it) but never initialises NCCL.
    const port = await freePort();
    const t0 = Date.now();
    const joined = ProcessGroup.init({ device: 'cuda', timeoutSec: 5, env: torchrunEnv(0, 2, port) });
    joined.catch(() => {});
    await joinRendezvousOnly(port, 1, 2);
    await expect(joined).rejects.toThrow(/NCCL initialisation did not finish within 5 s on rank 0 of 2/);
    await expect(joined).rejects.toMatchObject({ code: 'E_DIST' });
    const waited = (Date.now() - t0) / 1000;
    expect(waited).toBeGreaterThanOrEqual(4.5);
    expect(waited).toBeLessThan(60);
  }, 120000);

  test('[cuda] a one-rank NCCL group trains on cuda:LOCAL_RANK, in buckets on the comm stream, as without a group', async () => {
    if (!fs.existsSync(BIN)) ensureDist();
    // f32 (no bf16 rounding of gradients), so that the comparison below is tight.
    const onCuda = (args: string[]) => [...args.map((a) => (a === 'cpu' ? 'cuda' : a)), '--mixed-precision', 'none'];
    const out = path.join(tmp, 'nccl');
    const env = torchrunEnv(0, 1, await freePort());
    // 128-byte buckets: several all-reduces started on the comm stream during the backward.
    const r = spawnSync(process.execPath, [BIN, ...onCuda(finetuneArgs(out, 2, ['--dist-bucket-mb', String(128 / 2 ** 20)]))], {
      env,
      encoding: 'utf8',
    });
    if (r.status !== 0 && /NCCL was not found/.test(r.stderr)) {
      console.warn(`NCCL test not run: ${r.stderr.trim()}`);
      return;
    }
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const res = JSON.parse(r.stdout);
    expect(res.worldSize).toBe(1);
    expect(res.communication.bytesPerStep).toBeGreaterThan(0);
    expect(res.communication.bucketsPerStep).toBeGreaterThan(3);
    expect(res.communication.bucketsInBackward).toBe(res.communication.bucketsPerStep);
    // A sum over one rank changes nothing: the increment is the one trained without a group.
    const alone = path.join(tmp, 'nccl-alone');
    runSingle(onCuda(finetuneArgs(alone, 2)));
    expectSameIncrement(alone, out);
  }, 180000);
});
