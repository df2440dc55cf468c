/**
 * Protocol Buffers schemas (proto/onnx.proto, proto/sentencepiece_model.proto) loaded at run time
 * with protobufjs, and decoding that turns every malformed input into E_FORMAT. protobufjs checks
 * each length against the buffer before reading, so a hostile length cannot allocate beyond the
 * input's own size.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as protobuf from 'protobufjs';
import { SiftError } from '../engine/errors';

let protoDirCache: string | null = null;

/** The package's proto/ folder: next to lib/ in the sources, next to dist/ once compiled. */
export function protoDir(): string {
  if (protoDirCache) return protoDirCache;
  let d = __dirname;
  for (let i = 0; i < 6; i++) {
    const c = path.join(d, 'proto');
    if (fs.existsSync(path.join(c, 'onnx.proto'))) return (protoDirCache = c);
    d = path.dirname(d);
  }
  throw new SiftError('E_IO', `cannot find the proto/ folder with onnx.proto above ${__dirname}`);
}

const roots = new Map<string, protobuf.Root>();

/** A message type of one of the package's .proto files (field names kept as written there). */
export function protoType(file: string, name: string): protobuf.Type {
  let root = roots.get(file);
  if (!root) {
    root = new protobuf.Root();
    root.loadSync(path.join(protoDir(), file), { keepCase: true });
    roots.set(file, root);
  }
  return root.lookupType(name);
}

export const onnxType = (name: string): protobuf.Type => protoType('onnx.proto', `onnx.${name}`);
export const spmType = (name: string): protobuf.Type => protoType('sentencepiece_model.proto', `sentencepiece.${name}`);

/** Decodes bytes as `type`; truncation, bad wire types and runaway nesting become E_FORMAT. */
export function decodeMessage<T>(type: protobuf.Type, bytes: Uint8Array, what: string): T {
  try {
    return type.decode(bytes) as unknown as T;
  } catch (e) {
    throw new SiftError('E_FORMAT', `${what}: not a valid ${type.name} protobuf (${(e as Error).message})`);
  }
}

export function encodeMessage(type: protobuf.Type, obj: Record<string, unknown>): Uint8Array {
  const err = type.verify(obj);
  if (err) throw new SiftError('E_ARG', `${type.name}: ${err}`);
  return type.encode(type.fromObject(obj)).finish();
}

/** A protobuf integer (number, Long or string) as a JS number; E_FORMAT beyond 2^53. */
export function toNum(v: unknown, what: string): number {
  if (v === undefined || v === null) return 0;
  let n: number;
  if (typeof v === 'number') n = v;
  else if (typeof v === 'string') n = Number(v);
  else if (typeof (v as { toNumber?: unknown }).toNumber === 'function') {
    const l = v as { toNumber(): number; high: number; low: number };
    n = l.toNumber();
  } else n = NaN;
  if (!Number.isFinite(n) || !Number.isSafeInteger(Math.trunc(n)))
    throw new SiftError('E_FORMAT', `${what}: integer ${String(v)} out of range`);
  return n;
}

/** Like toNum but clamps huge values (INT64_MAX in Slice ends) instead of rejecting them. */
export function toNumClamped(v: unknown): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'string') return Number(v);
  if (v && typeof (v as { toNumber?: unknown }).toNumber === 'function') return (v as { toNumber(): number }).toNumber();
  return 0;
}
