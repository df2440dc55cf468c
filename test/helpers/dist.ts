/**
 * What the multi-process tests (test/dist) share: the environment a rank is started with, free
 * ports, the built CLI they spawn, and comparing the increments two runs trained.
 */
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { ChildProcessWithoutNullStreams, spawn, spawnSync } from 'child_process';
import { SafetensorsReader } from '../../lib/io/safetensors';
import type { HFConfig } from '../../lib/models';
import { createByteTokenizer } from '../../lib/tokenizers';
import { saveRandomModel, writeJsonl } from './cli';
import { tinyGpt2Config } from './tiny-configs';

export const ROOT = path.join(__dirname, '..', '..');
/** The built CLI that spawned ranks run (ensureDist keeps it current). */
export const BIN = path.join(ROOT, 'dist', 'lib', 'cli', 'main.js');

/** Rebuilds dist/ when a source the spawned CLI runs is newer than its output. */
export function ensureDist(): void {
  const stale = (dir: string): boolean =>
    fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true }).some((d) => {
      const rel = path.join(dir, d.name);
      if (d.isDirectory()) return stale(rel);
      if (!d.name.endsWith('.ts')) return false;
      const js = path.join(ROOT, 'dist', rel.replace(/\.ts$/, '.js'));
      return !fs.existsSync(js) || fs.statSync(js).mtimeMs < fs.statSync(path.join(ROOT, rel)).mtimeMs;
    });
  if (!stale('lib')) return;
  const r = spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', path.join(ROOT, 'tsconfig.json')], {
    cwd: ROOT,
    stdio: 'inherit',
  });
  if (r.status !== 0) throw new Error('tsc failed');
}

/** The variables that put a process in a group (or tie it to a launcher). */
const GROUP_VARS = [
  'RANK',
  'WORLD_SIZE',
  'LOCAL_RANK',
  'LOCAL_WORLD_SIZE',
  'MASTER_ADDR',
  'MASTER_PORT',
  'TORCHELASTIC_USE_AGENT_STORE',
  'SIFT_FT_LAUNCHER_FD',
];

/** This process's environment without any group (one thread per process: the tests run several). */
export function cleanEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env, SIFT_FT_NUM_THREADS: '1' };
  for (const k of GROUP_VARS) delete env[k];
  return env;
}

/**
 * The environment torchrun gives the worker of rank `rank` of `world` on one node, rendezvous at
 * 127.0.0.1:port. With agentStore, torchrun's own store holds MASTER_PORT (TORCHELASTIC_USE_AGENT_STORE=True,
 * as torchrun sets it), and sift-ft's rendezvous takes the next port.
 */
export function torchrunEnv(rank: number, world: number, port: number, opts: { agentStore?: boolean } = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...cleanEnv(),
    RANK: String(rank),
    WORLD_SIZE: String(world),
    LOCAL_RANK: String(rank),
    LOCAL_WORLD_SIZE: String(world),
    MASTER_ADDR: '127.0.0.1',
    MASTER_PORT: String(port),
  };
  if (opts.agentStore) Object.assign(env, { GROUP_RANK: '0', TORCHELASTIC_USE_AGENT_STORE: 'True', TORCHELASTIC_RUN_ID: 'none' });
  return env;
}

/** A TCP server on a port of this host (0: a free one), e.g. torchrun's store or another job holding the port. */
export function holdPort(port = 0): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer((c) => c.destroy());
    srv.once('error', reject);
    srv.listen(port, () => resolve(srv));
  });
}
export const portOf = (srv: net.Server): number => (srv.address() as net.AddressInfo).port;
export const closeServer = (srv: net.Server): Promise<void> => new Promise<void>((resolve) => srv.close(() => resolve()));

/** A port that was free a moment ago. */
export async function freePort(): Promise<number> {
  const srv = await holdPort();
  const port = portOf(srv);
  await closeServer(srv);
  return port;
}

/** Two consecutive free ports: torchrun's store takes the first, sift-ft's rendezvous the second. */
export async function twoFreePorts(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const a = await holdPort();
    const p = portOf(a);
    const b = p < 65535 ? await holdPort(p + 1).catch(() => null) : null;
    await closeServer(a);
    if (b) {
      await closeServer(b);
      return p;
    }
  }
  throw new Error('no two consecutive free ports');
}

/** Resolves once rank 0 has logged a training step in `out` (throws after 2 minutes). */
export async function untilTraining(out: string): Promise<void> {
  const log = path.join(out, 'log.jsonl');
  const t0 = Date.now();
  while (!(fs.existsSync(log) && fs.readFileSync(log, 'utf8').includes('"type":"step"'))) {
    if (Date.now() - t0 > 120000) throw new Error('training did not start');
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Every tensor of a safetensors file, as numbers. */
export function readTensors(file: string): Map<string, Float32Array | Int32Array> {
  const r = SafetensorsReader.open(file);
  const m = new Map<string, Float32Array | Int32Array>();
  try {
    for (const n of r.names()) {
      const t = r.tensor(n);
      m.set(n, t.toArray() as Float32Array | Int32Array);
      t.dispose();
    }
  } finally {
    r.close();
  }
  return m;
}

/** The increments in output folders a and b: same SIFT indices, values equal up to summation order. */
export function expectSameIncrement(a: string, b: string): void {
  const A = readTensors(path.join(a, 'delta.safetensors'));
  const B = readTensors(path.join(b, 'delta.safetensors'));
  expect([...B.keys()].sort()).toEqual([...A.keys()].sort());
  let idx = 0;
  for (const [name, x] of A) {
    const y = B.get(name)!;
    expect(y.length).toBe(x.length);
    if (name.endsWith('.sift_idx')) {
      expect(Array.from(y)).toEqual(Array.from(x));
      idx++;
    } else for (let i = 0; i < x.length; i++) expect(Math.abs(x[i] - y[i])).toBeLessThan(1e-4 + 1e-3 * Math.abs(x[i]));
  }
  expect(idx).toBeGreaterThan(0);
}

/** Sets key in the native rendezvous store at 127.0.0.1:port (its request: 'S', then key and value, each as a u32 length and bytes). */
export function rendezvousSet(port: number, key: string, value: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    const blob = (b: Buffer) => {
      const n = Buffer.alloc(4);
      n.writeUInt32LE(b.length);
      return Buffer.concat([n, b]);
    };
    s.once('error', reject);
    s.once('connect', () => s.write(Buffer.concat([Buffer.from('S'), blob(Buffer.from(key)), blob(Buffer.from(value))])));
    s.once('data', (d) => {
      s.end();
      if (d[0] === 1) resolve();
      else reject(new Error('the rendezvous store refused the entry'));
    });
  });
}

/**
 * A peer that joins the rendezvous of rank 0 at 127.0.0.1:port as `rank` of `world` (publishes its
 * WORLD_SIZE, as every rank does first) and then does nothing: a rank that died between the
 * rendezvous and the collective library's connection. Retries while rank 0 is not listening yet.
 */
export async function joinRendezvousOnly(port: number, rank: number, world: number, timeoutMs = 60000): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    try {
      await rendezvousSet(port, `world/${rank}`, String(world));
      return;
    } catch (e) {
      if (Date.now() - t0 > timeoutMs) throw e;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** The tiny causal-LM set-up the multi-process runs train: a temporary folder, a model and its text data. */
export interface TinyLm {
  /** The temporary folder holding everything (the caller removes it). */
  tmp: string;
  /** The saved GPT-2 model folder (byte tokenizer, seed 3). */
  base: string;
  /** Eight lines of text as JSON lines. */
  data: string;
  /** The model's config, for wider variants. */
  config: HFConfig;
  tok: ReturnType<typeof createByteTokenizer>;
}

/** A temporary folder (named after `prefix`) with the tiny GPT-2 and its text data. */
export function setUpTinyLm(prefix: string): TinyLm {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const tok = createByteTokenizer();
  const config = { ...tinyGpt2Config(tok), n_positions: 48 };
  const base = saveRandomModel(path.join(tmp, 'base'), config, tok.toFiles());
  const texts = [
    'the cat sat on the mat',
    'a dog ran in the big green park',
    'birds sing',
    'fish swim in the deep blue sea today',
    'the sun is warm',
    'rain falls on the old red roof all night',
    'wind',
    'snow covers the quiet hills in winter',
  ];
  const data = writeJsonl(
    path.join(tmp, 'lm.jsonl'),
    texts.map((text) => ({ text })),
  );
  return { tmp, base, data, config, tok };
}

/** `finetune` of `model` on `data` for 4 SIFT steps at `batch` per process (CPU, `--json`), `extra` appended. */
export function finetuneArgs(model: string, data: string, out: string, batch: number, extra: string[] = []): string[] {
  return [
    'finetune',
    '--model',
    model,
    '--data',
    data,
    '--task',
    'causal-lm',
    '--out',
    out,
    '--steps',
    '4',
    '--batch-size',
    String(batch),
    '--sparse-rate',
    '0.05',
    '--lr',
    '0.01',
    '--seed',
    '5',
    '--device',
    'cpu',
    '--quiet',
    '--json',
    ...extra,
  ];
}

/** A `sift-ft launch` of two processes running `args`, its stderr collected as it comes. */
export interface LaunchRun {
  proc: ChildProcessWithoutNullStreams;
  /** What it printed on stderr so far (its ranks' lines too: they inherit it). */
  err: string;
  /** The launcher's exit code ('exit'). */
  exited: Promise<number>;
  /** Its exit code once its stdio closed too ('close': after the ranks that inherited it). */
  closed: Promise<number>;
}

export function startLaunch(port: number, args: string[], env: NodeJS.ProcessEnv = cleanEnv()): LaunchRun {
  const proc = spawn(process.execPath, [BIN, 'launch', '--nproc-per-node', '2', '--master-port', String(port), '--', ...args], { env });
  const run: LaunchRun = {
    proc,
    err: '',
    exited: new Promise<number>((resolve) => proc.on('exit', (code) => resolve(code ?? -1))),
    closed: new Promise<number>((resolve) => proc.on('close', (code) => resolve(code ?? -1))),
  };
  proc.stderr.on('data', (c) => (run.err += String(c)));
  return run;
}
