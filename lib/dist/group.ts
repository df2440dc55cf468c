/**
 * The process group of data-parallel training: rank, world size and the collectives, over gloo
 * (CPU processes) or NCCL (one GPU per process). A process joins when its environment carries
 * torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), as set by
 * `sift-ft launch`, torchrun, or a SLURM/MPI wrapper; nothing else is sift-ft-specific.
 *
 * Collectives are queued on the tensor's stream like any op: every rank issues them in the same
 * program order, and JavaScript waits only where it reads a result. A rank that dies or stops
 * answering ends the others' next collective with E_DIST within the group's timeout.
 */
import { Tensor } from '../engine/tensor';
import { SiftError, check } from '../engine/errors';
import { native } from '../engine/native';
import { numThreads, setNumThreads } from '../engine/runtime';

/** torchrun's variables, parsed. */
export interface DistEnv {
  rank: number;
  worldSize: number;
  localRank: number;
  localWorldSize: number;
  masterAddr: string;
  /** The port of sift-ft's rendezvous on masterAddr (MASTER_PORT, or the next one under torchrun's agent store). */
  masterPort: number;
  /**
   * Under torchrun with TORCHELASTIC_USE_AGENT_STORE=True: MASTER_PORT, where torchrun's own store
   * (PyTorch's TCPStore, hosted by the agent of node 0) listens; sift-ft's rendezvous takes the next port.
   */
  agentStorePort?: number;
}

function envInt(env: NodeJS.ProcessEnv, name: string, def?: number): number {
  const v = env[name];
  if (v === undefined || v === '') {
    if (def !== undefined) return def;
    throw new SiftError('E_ARG', `${name} is not set (a process of a group needs RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT)`);
  }
  const n = Number(v);
  check(Number.isInteger(n) && n >= 0, 'E_ARG', `${name} must be a non-negative integer, got '${v}'`);
  return n;
}

/** The group this process belongs to according to its environment, or null when WORLD_SIZE is unset. */
export function distEnv(env: NodeJS.ProcessEnv = process.env): DistEnv | null {
  if (env.WORLD_SIZE === undefined || env.WORLD_SIZE === '') return null;
  const worldSize = envInt(env, 'WORLD_SIZE');
  check(worldSize >= 1, 'E_ARG', `WORLD_SIZE must be at least 1, got ${worldSize}`);
  const rank = envInt(env, 'RANK');
  check(rank < worldSize, 'E_ARG', `RANK ${rank} is not below WORLD_SIZE ${worldSize}`);
  const localRank = envInt(env, 'LOCAL_RANK', rank);
  const localWorldSize = envInt(env, 'LOCAL_WORLD_SIZE', worldSize);
  const masterPort = envInt(env, 'MASTER_PORT', 29500);
  check(masterPort >= 1 && masterPort <= 65535, 'E_ARG', `MASTER_PORT must be in 1..65535, got ${masterPort}`);
  const masterAddr = env.MASTER_ADDR || '127.0.0.1';
  // torchrun's agent on node 0 already serves its own store on MASTER_ADDR:MASTER_PORT (static and
  // c10d rendezvous alike) and says so to its workers; every rank then derives the same next port.
  if (env.TORCHELASTIC_USE_AGENT_STORE === 'True') {
    check(
      masterPort < 65535,
      'E_ARG',
      `MASTER_PORT ${masterPort} is torchrun's store; sift-ft's rendezvous needs the next port, and there is none`,
    );
    return { rank, worldSize, localRank, localWorldSize, masterAddr, masterPort: masterPort + 1, agentStorePort: masterPort };
  }
  return { rank, worldSize, localRank, localWorldSize, masterAddr, masterPort };
}

/**
 * The native rendezvous's errors, told in torchrun's terms where torchrun's own store holds
 * MASTER_PORT (the addon knows only the port it was given). Anything else passes through unchanged:
 * the native messages name the rank that did not join, who may hold the port, and differing
 * WORLD_SIZE values themselves.
 */
export function explainRendezvousError(e: unknown, env: DistEnv): unknown {
  if (!(e instanceof SiftError) || env.agentStorePort === undefined) return e;
  const listen = /rank 0 cannot listen on port (\d+) \(([^)]*)\)/.exec(e.message);
  if (!listen) return e;
  return new SiftError(
    'E_IO',
    `rendezvous: rank 0 cannot listen on ${env.masterAddr}:${listen[1]} (${listen[2]}). Under torchrun, torchrun's own store holds ` +
      `MASTER_PORT (${env.agentStorePort}) and sift-ft's rendezvous uses the next port, ${listen[1]}, which another process holds: ` +
      'start torchrun with another --master-port (static rendezvous) or run it again (c10d picks a new port)',
  );
}

/** Whether this build of the addon can form CPU (gloo) process groups. */
export function glooAvailable(): boolean {
  return native().distInfo().gloo;
}

export interface ProcessGroupOptions {
  /** 'cpu' (gloo) or 'cuda' (NCCL on cuda:LOCAL_RANK). */
  device: string;
  /** Seconds a collective or the rendezvous waits for a peer before E_DIST (default 600). */
  timeoutSec?: number;
  env?: NodeJS.ProcessEnv;
}

export class ProcessGroup {
  /** Payload bytes all-reduced since the counter was last reset (the buffer sizes, not wire traffic). */
  bytes = 0;
  private destroyed = false;

  private constructor(
    readonly env: DistEnv,
    readonly backend: 'gloo' | 'nccl',
    readonly device: string,
    /** The collective library and how the group was set up, e.g. "NCCL 2.21.5 (path): non-blocking initialisation". */
    readonly library: string,
  ) {}

  get rank(): number {
    return this.env.rank;
  }

  get worldSize(): number {
    return this.env.worldSize;
  }

  get localRank(): number {
    return this.env.localRank;
  }

  /** Joins the group described by the environment (rendezvous, off the event loop). */
  static async init(opts: ProcessGroupOptions): Promise<ProcessGroup> {
    const env = distEnv(opts.env ?? process.env);
    check(!!env, 'E_ARG', 'no process group in the environment (WORLD_SIZE is unset); start the processes with sift-ft launch or torchrun');
    const cuda = opts.device.startsWith('cuda');
    const device = cuda ? `cuda:${env.localRank}` : 'cpu';
    const backend = cuda ? 'nccl' : 'gloo';
    const timeoutSec = opts.timeoutSec ?? 600;
    check(timeoutSec > 0, 'E_ARG', `the process group timeout must be positive, got ${timeoutSec}`);
    try {
      await native().distInit({
        rank: env.rank,
        worldSize: env.worldSize,
        masterAddr: env.masterAddr,
        masterPort: env.masterPort,
        timeoutMs: Math.round(timeoutSec * 1000),
        backend,
        cudaDevice: cuda ? env.localRank : 0,
      });
    } catch (e) {
      throw explainRendezvousError(e, env);
    }
    // Processes started by torchrun or srun rather than `sift-ft launch` share the node's cores as
    // launch's do: each takes its share, unless SIFT_FT_NUM_THREADS already set a count.
    const threads = numThreads();
    if (!cuda && env.localWorldSize > 1 && !threads.fromEnv) setNumThreads(Math.max(1, Math.floor(threads.hardware / env.localWorldSize)));
    return new ProcessGroup(env, backend, device, native().distInfo().library ?? backend);
  }

  private live(): void {
    check(!this.destroyed, 'E_DISPOSED', 'this process group was destroyed');
  }

  /** Sums t over the ranks, in place (gloo reduces f16/bf16 through an f32 copy). Returns t. */
  allReduce(t: Tensor): Tensor {
    this.live();
    const N = native();
    this.bytes += t.size * (t.dtype === 'f64' || t.dtype === 'i64' ? 8 : 4);
    if (this.backend === 'gloo' && (t.dtype === 'bf16' || t.dtype === 'f16')) {
      const f = new Tensor(N.cast(t.handle, 'f32'));
      N.distAllReduce(f.handle);
      N.copy_(t.handle, f.handle);
      f.dispose();
      return t;
    }
    N.distAllReduce(t.handle);
    return t;
  }

  /**
   * Starts summing t over the ranks, in place, on the group's communication thread (gloo) or
   * stream (NCCL), once the work queued before it on t's stream has run; returns an id for wait().
   * t (contiguous; f32, f64, i32, i64, and on NCCL bf16, f16) must not be written until then.
   */
  allReduceStart(t: Tensor): number {
    this.live();
    check(
      this.backend === 'nccl' || !['bf16', 'f16'].includes(t.dtype),
      'E_DTYPE',
      `allReduceStart on gloo takes f32, f64, i32 or i64 tensors, got ${t.dtype} (reduce an f32 copy)`,
    );
    this.bytes += t.size * (t.dtype === 'f64' || t.dtype === 'i64' ? 8 : t.dtype === 'bf16' || t.dtype === 'f16' ? 2 : 4);
    return native().distAllReduceStart(t.handle);
  }

  /** Orders what is queued next on the stream after the all-reduce `id` (E_DIST there if it failed). */
  wait(id: number): void {
    this.live();
    native().distWait(id);
  }

  /** Copies root's t to every rank, in place. Returns t. */
  broadcast(t: Tensor, root = 0): Tensor {
    this.live();
    native().distBroadcast(t.handle, root);
    return t;
  }

  /** [worldSize, ...t.shape]: every rank's t in rank order (small buffers). */
  allGather(t: Tensor): Tensor {
    this.live();
    return new Tensor(native().distAllGather(t.handle));
  }

  /** Sums a few numbers over the ranks (f64), e.g. loss sums and counts. */
  async allReduceNumbers(values: number[]): Promise<number[]> {
    // On the group's device: an NCCL group reduces CUDA tensors only.
    const t = new Tensor(native().fromBuffer(new Float64Array(values), [values.length], 'f64', this.device));
    try {
      this.allReduce(t);
      return Array.from((await t.data()) as Float64Array);
    } finally {
      t.dispose();
    }
  }

  /** Resolves once every rank has reached this barrier. */
  async barrier(): Promise<void> {
    this.live();
    const N = native();
    N.distBarrier(this.device);
    const probe = new Tensor(N.full([1], 0, 'f32', this.device));
    try {
      await probe.data();
    } finally {
      probe.dispose();
    }
  }

  /** Leaves the group. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    native().distDestroy();
  }
}
