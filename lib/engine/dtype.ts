import type { DTypeName } from './addon-types';
import { SiftError } from './errors';

export type DType = DTypeName;
export const DTYPES: readonly DType[] = ['f32', 'f16', 'bf16', 'i32', 'i64', 'f64', 'bool'];

export function dtypeSize(d: DType): number {
  switch (d) {
    case 'f64':
    case 'i64':
      return 8;
    case 'f32':
    case 'i32':
      return 4;
    case 'f16':
    case 'bf16':
      return 2;
    case 'bool':
      return 1;
  }
}

export function isFloat(d: DType): boolean {
  return d === 'f32' || d === 'f16' || d === 'bf16' || d === 'f64';
}

export function isInt(d: DType): boolean {
  return d === 'i32' || d === 'i64';
}

export function parseDType(d: string): DType {
  const aliases: Record<string, DType> = {
    float32: 'f32',
    float16: 'f16',
    bfloat16: 'bf16',
    int32: 'i32',
    int64: 'i64',
    float64: 'f64',
    float: 'f32',
    half: 'f16',
    double: 'f64',
    long: 'i64',
    int: 'i32',
  };
  if ((DTYPES as readonly string[]).includes(d)) return d as DType;
  if (aliases[d]) return aliases[d];
  throw new SiftError('E_DTYPE', `unknown dtype '${d}' (expected one of ${DTYPES.join(', ')})`);
}

/** Element type of the typed array that toArray() returns for a dtype. */
export type ArrayFor<D extends DType> = D extends 'f64'
  ? Float64Array
  : D extends 'i32'
    ? Int32Array
    : D extends 'i64'
      ? BigInt64Array
      : D extends 'bool'
        ? Uint8Array
        : Float32Array;

export type AnyTypedArray = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array | Uint16Array;

export function normalizeDevice(d: string): string {
  if (d === 'cpu') return 'cpu';
  if (d === 'cuda') return 'cuda:0';
  if (/^cuda:\d+$/.test(d)) return d;
  throw new SiftError('E_DEVICE', `unknown device '${d}' (expected cpu, cuda or cuda:N)`);
}
