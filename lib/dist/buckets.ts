/**
 * Gradient buckets of data-parallel training, reduced while the backward goes on (as PyTorch's
 * DistributedDataParallel does). The gradients to sum are cut into buckets of about `bucketMb` in
 * the order the backward completes them (the reverse of the forward): SIFT's selected values of
 * consecutive targets are one contiguous run of their flat buffer, reduced in place; a dense
 * gradient (a classifier head, LoRA, full fine-tuning) is copied into its bucket's flat staging
 * buffer and back. A bucket is started, on the group's communication thread (gloo) or stream
 * (NCCL), by the post-accumulate hook of the last of its gradients in the step's last backward,
 * while the earlier layers' backward runs; buckets are started in the same order on every rank
 * (bucket i only after bucket i - 1), which the collectives need. finish() starts any bucket not
 * started yet (gradients the backward did not reach are summed as zeros) and queues the waits
 * before the optimizer step.
 */
import { Tensor, contiguousStrides } from '../engine/tensor';
import type { DTypeName } from '../engine/addon-types';
import { check } from '../engine/errors';
import { native } from '../engine/native';
import { keep } from '../engine/scope';
import type { ProcessGroup } from './group';

/** PyTorch DDP's bucket_cap_mb. */
export const DEFAULT_BUCKET_MB = 25;

/** A gradient to sum over the ranks: a slice of a flat f32 buffer (SIFT's selected values), or a parameter's .grad. */
export type GradientSource =
  | { kind: 'slice'; param: Tensor; buffer: Tensor; offset: number; span: number }
  | { kind: 'grad'; param: Tensor };

export interface BucketOptions {
  /** Bytes per bucket, in MiB (default 25). A gradient larger than that is a bucket of its own. */
  bucketMb?: number;
  /** Start each bucket as soon as its gradients are complete (default true); false: all after the backward. */
  overlap?: boolean;
}

interface Bucket {
  kind: 'slice' | 'grad';
  params: Tensor[];
  /** The flat tensor reduced: a view of the sparse buffer, or the staging buffer of dense gradients. */
  flat: Tensor;
  /** grad buckets: each parameter's view of the staging buffer. */
  views: Tensor[];
  bytes: number;
  ready: number;
  work: number | null;
}

export interface BucketStats {
  /** Payload bytes all-reduced this step (the buffer sizes). */
  bytes: number;
  buckets: number;
  /** Buckets started inside the backward (the rest were started after it). */
  startedInBackward: number;
}

function elementBytes(dtype: string): number {
  return dtype === 'f64' || dtype === 'i64' ? 8 : dtype === 'bf16' || dtype === 'f16' ? 2 : 4;
}

export class GradientBuckets {
  readonly buckets: Bucket[] = [];
  readonly overlap: boolean;
  private readonly bucketOf = new Map<Tensor, Bucket>();
  private readonly removers: (() => void)[] = [];
  private armed = false;
  private next = 0;

  /** sources: in the order the backward completes them (the reverse of the forward). */
  constructor(
    private readonly group: ProcessGroup,
    sources: GradientSource[],
    opts: BucketOptions = {},
  ) {
    const mb = opts.bucketMb ?? DEFAULT_BUCKET_MB;
    check(Number.isFinite(mb) && mb > 0, 'E_ARG', `the gradient bucket size must be a positive number of MiB, got ${mb}`);
    this.overlap = opts.overlap ?? true;
    const cap = mb * 1024 * 1024;
    let run: GradientSource[] = [];
    let runBytes = 0;
    const close = () => {
      if (run.length) this.buckets.push(this.makeBucket(run));
      run = [];
      runBytes = 0;
    };
    const seen = new Set<Tensor>();
    for (const s of sources) {
      check(!seen.has(s.param), 'E_ARG', `gradient buckets: ${s.param.name ?? 'a parameter'} is listed twice`);
      seen.add(s.param);
      const prev = run[run.length - 1];
      const fits =
        prev &&
        prev.kind === s.kind &&
        prev.param.device === s.param.device &&
        (s.kind === 'slice'
          ? prev.kind === 'slice' && prev.buffer === s.buffer && s.offset + s.span === prev.offset
          : this.stagingDType(prev.param) === this.stagingDType(s.param));
      if (!fits) close();
      run.push(s);
      runBytes += s.kind === 'slice' ? 4 * s.span : elementBytes(this.stagingDType(s.param)) * s.param.size;
      if (runBytes >= cap) close();
    }
    close();
    for (const b of this.buckets)
      for (const p of b.params) {
        this.bucketOf.set(p, b);
        this.removers.push(p.registerPostAccumulateGradHook((q) => this.onGradient(q)));
      }
  }

  /** The dtype a dense gradient is reduced in: its own, except where gloo has no sum for it (f32). */
  private stagingDType(p: Tensor): DTypeName {
    const d = p.dtype;
    return this.group.backend === 'gloo' && (d === 'bf16' || d === 'f16') ? 'f32' : d;
  }

  private makeBucket(run: GradientSource[]): Bucket {
    const N = native();
    const first = run[0];
    if (first.kind === 'slice') {
      const last = run[run.length - 1] as typeof first;
      const start = last.offset;
      const len = first.offset + first.span - start;
      const device = first.buffer.device;
      const flat = keep(
        new Tensor(N.view(first.buffer.handle, [len], [1], start), { shape: [len], dtype: 'f32', device, strides: [1], offset: start }),
      );
      return { kind: 'slice', params: run.map((s) => s.param), flat, views: [], bytes: 4 * len, ready: 0, work: null };
    }
    const dtype = this.stagingDType(first.param);
    const device = first.param.device;
    const total = run.reduce((a, s) => a + s.param.size, 0);
    const flat = keep(new Tensor(N.full([total], 0, dtype, device), { shape: [total], dtype, device, contiguous: true }));
    let off = 0;
    const views = run.map((s) => {
      const shape = s.param.shape;
      const v = keep(new Tensor(N.view(flat.handle, shape, contiguousStrides(shape), off)));
      off += s.param.size;
      return v;
    });
    return { kind: 'grad', params: run.map((s) => s.param), flat, views, bytes: elementBytes(dtype) * total, ready: 0, work: null };
  }

  /** Called before the step's last backward: from there on, complete buckets are started. */
  arm(): void {
    check(!this.armed, 'E_ARG', 'gradient buckets armed twice without finish()');
    for (const b of this.buckets) {
      b.ready = 0;
      b.work = null;
    }
    this.next = 0;
    this.armed = true;
  }

  private onGradient(p: Tensor): void {
    if (!this.armed) return;
    const b = this.bucketOf.get(p)!;
    b.ready++;
    if (!this.overlap) return;
    while (this.next < this.buckets.length && this.buckets[this.next].ready >= this.buckets[this.next].params.length)
      this.start(this.buckets[this.next++]);
  }

  private start(b: Bucket): void {
    if (b.kind === 'grad') {
      const N = native();
      b.params.forEach((p, i) => {
        if (p.grad && !p.grad.isDisposed) N.copy_(b.views[i].handle, p.grad.handle);
        else N.fill_(b.views[i].handle, 0);
      });
    }
    b.work = this.group.allReduceStart(b.flat);
  }

  /**
   * After the step's last backward: starts the buckets not started yet, then queues the waits
   * (and the copies back into the dense gradients), so that the optimizer step, queued next, sees
   * the sums.
   */
  finish(): BucketStats {
    check(this.armed, 'E_ARG', 'gradient buckets finished without arm()');
    this.armed = false;
    const startedInBackward = this.next;
    while (this.next < this.buckets.length) this.start(this.buckets[this.next++]);
    const N = native();
    let bytes = 0;
    for (const b of this.buckets) {
      this.group.wait(b.work!);
      b.work = null;
      bytes += b.bytes;
      if (b.kind === 'grad')
        b.params.forEach((p, i) => {
          if (p.grad && !p.grad.isDisposed) N.copy_(p.grad.handle, b.views[i].handle);
        });
    }
    return { bytes, buckets: this.buckets.length, startedInBackward };
  }

  /** Removes the hooks and frees the staging buffers (the sparse buffer belongs to SIFT). */
  dispose(): void {
    for (const r of this.removers) r();
    this.removers.length = 0;
    for (const b of this.buckets) {
      for (const v of b.views) v.dispose();
      b.flat.dispose();
    }
    this.buckets.length = 0;
    this.bucketOf.clear();
  }
}
