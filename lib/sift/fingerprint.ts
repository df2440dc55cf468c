/** Content fingerprints of weights: sha256 over dtype, shape and raw bytes, per tensor. */
import { createHash } from 'crypto';
import { Tensor } from '../engine/tensor';
import { native } from '../engine/native';

export interface TensorFingerprint {
  shape: number[];
  dtype: string;
  sha256: string;
}

/** Bytes read back and hashed at a time by fingerprintSteps (a few ms of work each). */
const CHUNK_BYTES = 4 << 20;

/**
 * The fingerprint, computed a chunk at a time: the generator yields between chunks (so that an
 * async caller can let the event loop run) and returns the fingerprint. Reads the tensor
 * synchronously: the caller waits for the device first when it must not block.
 */
export function* fingerprintSteps(t: Tensor): Generator<void, TensorFingerprint, void> {
  const N = native();
  const h = createHash('sha256');
  h.update(`${t.dtype}[${t.shape.join(',')}]`);
  const dense = t.isContiguous ? t : new Tensor(N.contiguous(t.handle));
  try {
    const itemBytes = dense.nbytes / Math.max(1, dense.size);
    const perChunk = Math.max(1, Math.floor(CHUNK_BYTES / Math.max(1, itemBytes)));
    const base = dense.offset;
    for (let start = 0; start < dense.size; start += perChunk) {
      const n = Math.min(perChunk, dense.size - start);
      if (start === 0 && n === dense.size) {
        h.update(new Uint8Array(N.toBuffer(dense.handle)));
        yield;
        break;
      }
      const v = N.view(dense.handle, [n], [1], base + start);
      try {
        h.update(new Uint8Array(N.toBuffer(v)));
      } finally {
        N.dispose(v);
      }
      yield;
    }
  } finally {
    if (dense !== t) dense.dispose();
  }
  return { shape: t.shape.slice(), dtype: t.dtype, sha256: h.digest('hex') };
}

export function fingerprint(t: Tensor): TensorFingerprint {
  const steps = fingerprintSteps(t);
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

export function sameFingerprint(a: TensorFingerprint, b: TensorFingerprint): boolean {
  return a.sha256 === b.sha256 && a.dtype === b.dtype && a.shape.length === b.shape.length && a.shape.every((d, i) => d === b.shape[i]);
}
