/**
 * Which examples go into which micro-batch, and how they are padded. The order is a pure function
 * of (seed, epoch, position), so a resumed run given only the position of the next micro-batch
 * sees the same batches as an uninterrupted one. Shuffling buckets by length (sort within windows
 * of a few batches, then shuffle the batches) so that little padding is wasted; without shuffling
 * rows are taken in file order and the stream wraps around at the end.
 */
import { SiftError, check } from '../engine/errors';

/** A small seeded generator (mulberry32 over a splitmix-style seed): identical everywhere. */
export class SeededRng {
  private s: number;
  constructor(seed: number) {
    let z = (Math.floor(seed) ^ 0x9e3779b9) >>> 0;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    this.s = (z ^ (z >>> 16)) >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
}

/** Fisher-Yates shuffle in place. */
export function shuffleInPlace<T>(a: T[], rng: SeededRng): T[] {
  for (let i = a.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
  return a;
}

/** A seed for (seed, a, b): distinct streams for epochs, micro-batches, dropout. */
export function deriveSeed(seed: number, a: number, b = 0): number {
  let h = (Math.floor(seed) >>> 0) ^ Math.imul(a + 1, 0x9e3779b1) ^ Math.imul(b + 1, 0x85ebca77);
  h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d);
  h = Math.imul(h ^ (h >>> 12), 0x297a2d39);
  return (h ^ (h >>> 15)) >>> 0;
}

export interface SamplerOptions {
  batchSize: number;
  /** Default true. */
  shuffle?: boolean;
  seed?: number;
  /** Example lengths, for length bucketing when shuffling. */
  lengths?: number[];
  /** Bucket by length when shuffling and lengths are given (default true). */
  bucket?: boolean;
  /** Batches per bucketing window (default 50). */
  bucketWindow?: number;
}

/** Micro-batches of example indices by global position (micro-batches since the start of training). */
export class BatchSampler {
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly seed: number;
  private readonly lengths: number[] | null;
  private readonly window: number;
  private cachedEpoch = -1;
  private cached: number[][] = [];

  constructor(
    readonly size: number,
    opts: SamplerOptions,
  ) {
    check(Number.isInteger(size) && size > 0, 'E_ARG', `no examples to batch (got ${size})`);
    check(Number.isInteger(opts.batchSize) && opts.batchSize > 0, 'E_ARG', `batchSize must be a positive integer, got ${opts.batchSize}`);
    this.batchSize = opts.batchSize;
    this.shuffle = opts.shuffle ?? true;
    this.seed = opts.seed ?? 0;
    this.lengths = opts.lengths && opts.bucket !== false ? opts.lengths : null;
    if (this.lengths && this.lengths.length !== size)
      throw new SiftError('E_ARG', `lengths has ${this.lengths.length} entries for ${size} examples`);
    this.window = opts.bucketWindow ?? 50;
  }

  /** Micro-batches in one pass over the data (the last one may be short when shuffling). */
  get batchesPerEpoch(): number {
    return Math.ceil(this.size / this.batchSize);
  }

  /** The micro-batches of an epoch (shuffle mode). */
  epochBatches(epoch: number): number[][] {
    if (epoch === this.cachedEpoch) return this.cached;
    const rng = new SeededRng(deriveSeed(this.seed, epoch, 0x5eed));
    const order = shuffleInPlace(
      Array.from({ length: this.size }, (_, i) => i),
      rng,
    );
    const batches: number[][] = [];
    if (this.lengths) {
      const L = this.lengths;
      const w = this.window * this.batchSize;
      for (let s = 0; s < order.length; s += w) {
        // Stable sort inside the window: ties keep their shuffled order.
        const win = order.slice(s, s + w).sort((a, b) => L[a] - L[b]);
        for (let i = 0; i < win.length; i += this.batchSize) batches.push(win.slice(i, i + this.batchSize));
      }
      shuffleInPlace(batches, rng);
    } else {
      for (let i = 0; i < order.length; i += this.batchSize) batches.push(order.slice(i, i + this.batchSize));
    }
    this.cachedEpoch = epoch;
    this.cached = batches;
    return batches;
  }

  /** The example indices of micro-batch number `position` (0-based, counted from the start of training). */
  batchAt(position: number): number[] {
    check(Number.isInteger(position) && position >= 0, 'E_ARG', `batch position must be a non-negative integer, got ${position}`);
    if (!this.shuffle) {
      const start = (position * this.batchSize) % this.size;
      return Array.from({ length: this.batchSize }, (_, i) => (start + i) % this.size);
    }
    const nb = this.batchesPerEpoch;
    return this.epochBatches(Math.floor(position / nb))[position % nb];
  }

  /** The epoch (fractional) reached after `position` micro-batches. */
  epochAt(position: number): number {
    return (position * this.batchSize) / this.size;
  }
}

/** Right- (or left-) pads sequences to the longest one: ids with `pad`, and a 0/1 attention mask. */
export function padSequences(
  seqs: number[][],
  pad: number,
  opts: { side?: 'right' | 'left'; multipleOf?: number; fillMask?: number[][] } = {},
): { ids: number[][]; mask: number[][]; length: number } {
  let T = seqs.reduce((a, s) => Math.max(a, s.length), 0);
  if (opts.multipleOf && opts.multipleOf > 1) T = Math.ceil(T / opts.multipleOf) * opts.multipleOf;
  const left = opts.side === 'left';
  const ids: number[][] = [];
  const mask: number[][] = [];
  seqs.forEach((s, b) => {
    const n = T - s.length;
    const m = opts.fillMask?.[b] ?? s.map(() => 1);
    const padIds = new Array<number>(n).fill(pad);
    const padMask = new Array<number>(n).fill(0);
    ids.push(left ? [...padIds, ...s] : [...s, ...padIds]);
    mask.push(left ? [...padMask, ...m] : [...m, ...padMask]);
  });
  return { ids, mask, length: T };
}

/** Pads rows of values (labels, token types) to length T with `value`. */
export function padTo(rows: number[][], T: number, value: number, side: 'right' | 'left' = 'right'): number[][] {
  return rows.map((r) => {
    const p = new Array<number>(Math.max(0, T - r.length)).fill(value);
    return side === 'left' ? [...p, ...r] : [...r, ...p];
  });
}
