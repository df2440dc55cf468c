/** Content fingerprints of weights: sha256 over dtype, shape and raw bytes, per tensor. */
import { createHash } from 'crypto';
import { Tensor } from '../engine/tensor';
import { native } from '../engine/native';

export interface TensorFingerprint {
  shape: number[];
  dtype: string;
  sha256: string;
}

export function fingerprint(t: Tensor): TensorFingerprint {
  const h = createHash('sha256');
  h.update(`${t.dtype}[${t.shape.join(',')}]`);
  h.update(new Uint8Array(native().toBuffer(t.handle)));
  return { shape: t.shape.slice(), dtype: t.dtype, sha256: h.digest('hex') };
}

export function sameFingerprint(a: TensorFingerprint, b: TensorFingerprint): boolean {
  return a.sha256 === b.sha256 && a.dtype === b.dtype && a.shape.length === b.shape.length && a.shape.every((d, i) => d === b.shape[i]);
}
