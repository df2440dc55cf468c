/**
 * `sift-ft launch --nproc-per-node N [--nnodes M --node-rank R --master-addr A --master-port P] --
 * <command> [flags]`: starts N sift-ft processes on this node with torchrun's variables (RANK,
 * WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), divides the CPU cores among
 * them, forwards SIGINT/SIGTERM (a hang-up as SIGTERM), and ends them all with a clear message when
 * one fails. Each process holds one end of a pipe from the launcher (SIFT_FT_LAUNCHER_FD): when the
 * launcher dies, even by SIGKILL, the pipe closes and the process stops as on SIGTERM.
 */
import { spawn, ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { SiftError } from '../engine/errors';
import { FlagSpec, Parsed, parseCommand } from './args';
import { takeEnv } from '../engine/env';

export const launchFlags: Record<string, FlagSpec> = {
  'nproc-per-node': { type: 'number', integer: true, min: 1, help: 'processes on this node (one per GPU on CUDA)' },
  nnodes: { type: 'number', integer: true, min: 1, default: 1, help: 'nodes in the group' },
  'node-rank': {
    type: 'number',
    integer: true,
    min: 0,
    default: 0,
    help: "this node's index (0 runs rank 0, which serves the rendezvous)",
  },
  'master-addr': { type: 'string', default: '127.0.0.1', help: "rank 0's host (reachable from every node)" },
  'master-port': { type: 'number', integer: true, min: 1, default: 29500, help: 'a free TCP port on the master host for the rendezvous' },
};

export const launchHelp =
  'Starts a data-parallel run: N processes of a sift-ft command per node, joined in one process group (as torchrun does).';

/** Seconds the others get after a rank failed to notice it themselves and say why, before SIGTERM. */
const NOTICE_SEC = 2;
/** Seconds the others get to stop after SIGTERM, before SIGKILL. */
const GRACE_SEC = 10;
/** The child's descriptor of the pipe from the launcher (stdio index 3). */
const LAUNCHER_FD = 3;

export interface LaunchPlan {
  nproc: number;
  nnodes: number;
  nodeRank: number;
  masterAddr: string;
  masterPort: number;
  command: string[];
}

/** Splits `launch` arguments at `--` and checks them. */
export function planLaunch(argv: string[]): LaunchPlan {
  const sep = argv.indexOf('--');
  if (sep < 0 || sep === argv.length - 1)
    throw new SiftError(
      'E_ARG',
      'give the command after --, e.g. sift-ft launch --nproc-per-node 2 -- finetune --model M --data D --task T --out O',
    );
  const f: Parsed = parseCommand(argv.slice(0, sep), launchFlags).flags;
  if (f._.length) throw new SiftError('E_ARG', `unexpected argument '${f._[0]}' before -- (the command goes after --)`);
  if (f['nproc-per-node'] === undefined) throw new SiftError('E_ARG', '--nproc-per-node is required');
  const plan: LaunchPlan = {
    nproc: f['nproc-per-node'] as number,
    nnodes: f.nnodes as number,
    nodeRank: f['node-rank'] as number,
    masterAddr: f['master-addr'] as string,
    masterPort: f['master-port'] as number,
    command: argv.slice(sep + 1),
  };
  if (plan.nodeRank >= plan.nnodes) throw new SiftError('E_ARG', `--node-rank ${plan.nodeRank} must be below --nnodes ${plan.nnodes}`);
  if (plan.masterPort > 65535) throw new SiftError('E_ARG', `--master-port must be at most 65535, got ${plan.masterPort}`);
  if (plan.command[0] === 'launch') throw new SiftError('E_ARG', 'the command cannot be launch itself');
  return plan;
}

/** The environment of local process `local` of the plan. */
export function rankEnv(plan: LaunchPlan, local: number, base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...base,
    RANK: String(plan.nodeRank * plan.nproc + local),
    WORLD_SIZE: String(plan.nnodes * plan.nproc),
    LOCAL_RANK: String(local),
    LOCAL_WORLD_SIZE: String(plan.nproc),
    GROUP_RANK: String(plan.nodeRank),
    MASTER_ADDR: plan.masterAddr,
    MASTER_PORT: String(plan.masterPort),
  };
  // Each process gets its share of the cores this node lets it use, unless the user chose a thread count.
  if (!base.SIFT_FT_NUM_THREADS) env.SIFT_FT_NUM_THREADS = String(Math.max(1, Math.floor(usableCores() / plan.nproc)));
  env.SIFT_FT_LAUNCHER_FD = String(LAUNCHER_FD);
  return env;
}

/**
 * Cores a cgroup CPU quota allows, from cgroup v2's cpu.max ("200000 100000": 2) or v1's
 * cfs_quota_us and cfs_period_us; null when there is no quota ("max", -1) or no file.
 */
export function cgroupCpuQuota(v2?: string, v1Quota?: string, v1Period?: string): number | null {
  const cores = (quota: number, period: number) => (quota > 0 && period > 0 ? Math.max(1, Math.ceil(quota / period)) : null);
  if (v2 !== undefined) {
    const [q, p] = v2.trim().split(/\s+/);
    return q === 'max' ? null : cores(Number(q), Number(p));
  }
  if (v1Quota !== undefined && v1Period !== undefined) return cores(Number(v1Quota), Number(v1Period));
  return null;
}

/**
 * The cores this process may use: the CPU affinity mask (os.availableParallelism: taskset, a
 * cpuset), capped by this cgroup's CPU quota (a container's --cpus), which Node 20 does not count.
 */
export function usableCores(): number {
  const read = (f: string) => {
    try {
      return fs.readFileSync(f, 'utf8');
    } catch {
      return undefined;
    }
  };
  // cgroup v2: this process's own cgroup (inside a container with its cgroup namespace, '/').
  const own = /^0::(\/.*)$/m.exec(read('/proc/self/cgroup') ?? '')?.[1] ?? '/';
  const quota = cgroupCpuQuota(
    read(path.join('/sys/fs/cgroup', own, 'cpu.max')),
    read('/sys/fs/cgroup/cpu/cpu.cfs_quota_us'),
    read('/sys/fs/cgroup/cpu/cpu.cfs_period_us'),
  );
  return Math.min(os.availableParallelism(), quota ?? Number.POSITIVE_INFINITY);
}

/**
 * In a process started by `sift-ft launch`: when the launcher's end of the pipe closes (the launcher
 * exited or was killed, even by SIGKILL, which it cannot forward), this process stops as on SIGTERM
 * (finetune: at the next step boundary, rank 0 writing a checkpoint). The launcher never writes.
 */
export function watchLauncher(): void {
  // Taken out of the environment: a process this one starts has no such pipe.
  const v = takeEnv('SIFT_FT_LAUNCHER_FD');
  if (v === undefined) return;
  const fd = Number(v);
  if (!Number.isInteger(fd) || fd < 3) return;
  let pipe: net.Socket;
  try {
    pipe = new net.Socket({ fd, readable: true, writable: false });
  } catch {
    return; // not a pipe here (the variable was inherited by a process launch did not start)
  }
  let gone = false;
  const onGone = () => {
    if (gone) return;
    gone = true;
    process.stderr.write('sift-ft: the launcher is gone: stopping as on SIGTERM\n');
    process.kill(process.pid, 'SIGTERM');
  };
  pipe.on('end', onGone);
  pipe.on('close', onGone);
  pipe.on('error', onGone);
  pipe.resume();
  pipe.unref();
}

interface Failure {
  rank: number;
  code: number;
  why: string;
  signal: NodeJS.Signals | null;
}

export async function runLaunch(_f: Parsed, argv: string[]): Promise<number> {
  const plan = planLaunch(argv);
  const main = path.join(__dirname, 'main.js');
  const world = plan.nnodes * plan.nproc;
  const children: (ChildProcess | null)[] = [];
  // Failures seen before the launcher stopped anyone itself, in the order their exits were seen.
  const failures: Failure[] = [];
  let stopping = false;
  let termTimer: NodeJS.Timeout | null = null;
  let killTimer: NodeJS.Timeout | null = null;
  const stopOthers = (sig: NodeJS.Signals) => {
    for (const c of children) if (c && c.exitCode === null && c.signalCode === null) c.kill(sig);
  };
  let signalled = false;
  // A hang-up (the terminal or the ssh connection closed) stops the run as SIGTERM does: the
  // children are in their own sessions and would otherwise go on training without the launcher.
  const onSignal = (sig: NodeJS.Signals) => {
    signalled = true;
    stopOthers(sig === 'SIGHUP' ? 'SIGTERM' : sig);
  };
  const onExit = () => stopOthers('SIGKILL');
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);
  process.on('exit', onExit);
  try {
    const exits = Array.from(
      { length: plan.nproc },
      (_, local) =>
        new Promise<void>((resolve) => {
          const rank = plan.nodeRank * plan.nproc + local;
          // Each child in its own process group: a Ctrl-C in the terminal reaches the launcher only,
          // which forwards it once (a second SIGINT would make the children exit without a checkpoint).
          // fd 3: a pipe the child watches for the launcher's death (watchLauncher).
          const child = spawn(process.execPath, [main, ...plan.command], {
            env: rankEnv(plan, local),
            stdio: ['inherit', 'inherit', 'inherit', 'pipe'],
            detached: true,
          });
          children[local] = child;
          // The launcher never writes to the pipe; a child's exit only closes it.
          child.stdio[LAUNCHER_FD]?.on('error', () => {});
          child.on('error', (e) => {
            if (!stopping) failures.push({ rank, code: 1, why: `could not start (${e.message})`, signal: null });
            resolve();
          });
          child.on('exit', (code, signal) => {
            // 130: the rank stopped on the forwarded signal (and rank 0 wrote a checkpoint): not a failure.
            const failed = (code !== null && code !== 0 && !(signalled && code === 130)) || (signal !== null && !signalled);
            if (failed && !stopping) {
              const why = code !== null ? `exited with code ${code}` : `was killed by ${signal}`;
              failures.push({ rank, code: code ?? 1, why, signal });
              const others = children.filter((c) => c && c !== child && c.exitCode === null && c.signalCode === null).length;
              if (others && !termTimer) {
                process.stderr.write(
                  `sift-ft launch: rank ${rank} of ${world} ${why}; stopping the other ${others} process(es) on this node\n`,
                );
                // The others usually notice the lost peer at once (E_DIST): give them a moment to say
                // so, then SIGTERM, then SIGKILL.
                termTimer = setTimeout(() => {
                  stopping = true;
                  stopOthers('SIGTERM');
                  killTimer = setTimeout(() => stopOthers('SIGKILL'), GRACE_SEC * 1000);
                }, NOTICE_SEC * 1000);
              }
            }
            resolve();
          });
        }),
    );
    await Promise.all(exits);
  } finally {
    if (termTimer) clearTimeout(termTimer);
    if (killTimer) clearTimeout(killTimer);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('SIGHUP', onSignal);
    process.off('exit', onExit);
  }
  // The cause: a rank killed by a signal (a crash, the OOM killer) rather than one that exited on
  // its own, often an E_DIST about that very rank whose exit was seen first.
  const cause = failures.find((f) => f.signal !== null) ?? failures[0];
  if (cause) {
    const also = failures.filter((f) => f !== cause).map((f) => `rank ${f.rank} ${f.why}`);
    process.stderr.write(
      `sift-ft launch: failed: rank ${cause.rank} of ${world} ${cause.why}${also.length ? ` (then ${also.join(', ')})` : ''}\n`,
    );
    return cause.code || 1;
  }
  return signalled ? 130 : 0;
}
