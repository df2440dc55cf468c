/**
 * safetensors files: an 8-byte little-endian header length, a JSON header, then the tensor bytes.
 * The reader validates everything before touching data (header bounds, dtypes, shapes, offsets
 * inside the file, sizes equal to shape x dtype, no overlaps or holes) and reads one tensor at a time.
 * Malformed files are E_FORMAT errors naming the file and tensor. Writes are atomic.
 */
import * as fs from 'fs';
import { Tensor } from '../engine/tensor';
import { DType, dtypeSize, normalizeDevice } from '../engine/dtype';
import { SiftError } from '../engine/errors';
import { native } from '../engine/native';
import { writeFileAtomic } from './atomic';

const ST_TO_DTYPE: Record<string, DType> = {
  F32: 'f32',
  F16: 'f16',
  BF16: 'bf16',
  F64: 'f64',
  I32: 'i32',
  I64: 'i64',
  BOOL: 'bool',
  U8: 'bool',
};
const DTYPE_TO_ST: Record<DType, string> = { f32: 'F32', f16: 'F16', bf16: 'BF16', f64: 'F64', i32: 'I32', i64: 'I64', bool: 'BOOL' };
/** Header size limit: real headers of large sharded models are a few MB. */
const MAX_HEADER = 100 * 1024 * 1024;

export interface TensorInfo {
  name: string;
  dtype: DType;
  /** The dtype string in the file (U8 is read as bool). */
  fileDType: string;
  shape: number[];
  /** Byte range inside the data section. */
  begin: number;
  end: number;
}

function formatError(file: string, msg: string): SiftError {
  return new SiftError('E_FORMAT', `${file}: ${msg}`);
}

/** Parses and validates a header given the file size. */
export function parseHeader(
  file: string,
  headerBytes: Uint8Array,
  fileSize: number,
  headerLen: number,
): { tensors: Map<string, TensorInfo>; metadata: Record<string, string> } {
  let text: string;
  try {
    // Invalid UTF-8 must not be silently replaced by U+FFFD (that would rename tensors).
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    throw formatError(file, 'header is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw formatError(file, `header is not valid JSON (${(e as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw formatError(file, 'header is not a JSON object');
  // JSON.parse keeps the last of duplicate keys: a header naming a tensor twice is ambiguous.
  const dup = findDuplicateKey(text);
  if (dup !== null) throw formatError(file, `header names '${dup}' twice`);
  const dataLen = fileSize - 8 - headerLen;
  const tensors = new Map<string, TensorInfo>();
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
        throw formatError(file, '__metadata__ must be an object of strings');
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') throw formatError(file, `__metadata__.${k} is not a string`);
      }
      metadata = raw as Record<string, string>;
      continue;
    }
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw formatError(file, `tensor '${name}': entry is not an object`);
    const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e.dtype !== 'string') throw formatError(file, `tensor '${name}': missing dtype`);
    const dtype = ST_TO_DTYPE[e.dtype];
    if (!dtype) throw formatError(file, `tensor '${name}': unsupported dtype ${JSON.stringify(e.dtype)}`);
    if (!Array.isArray(e.shape) || e.shape.length > 16 || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw formatError(file, `tensor '${name}': invalid shape ${JSON.stringify(e.shape)}`);
    }
    const shape = e.shape as number[];
    if (!Array.isArray(e.data_offsets) || e.data_offsets.length !== 2 || !e.data_offsets.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw formatError(file, `tensor '${name}': invalid data_offsets ${JSON.stringify(e.data_offsets)}`);
    }
    const [begin, end] = e.data_offsets as number[];
    if (begin > end || end > dataLen) {
      throw formatError(
        file,
        `tensor '${name}': data_offsets [${begin}, ${end}] outside the data section of ${dataLen} bytes (truncated file?)`,
      );
    }
    let numel = 1;
    for (const d of shape) {
      numel *= d;
      if (numel > Number.MAX_SAFE_INTEGER) throw formatError(file, `tensor '${name}': shape too large`);
    }
    const expected = numel * dtypeSize(dtype);
    if (end - begin !== expected) {
      throw formatError(file, `tensor '${name}': ${end - begin} bytes for shape [${shape}] of ${e.dtype} (expected ${expected})`);
    }
    tensors.set(name, { name, dtype, fileDType: e.dtype, shape, begin, end });
  }
  // No overlaps, no holes: sorted ranges must tile the data section.
  const sorted = [...tensors.values()].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const t of sorted) {
    if (t.begin < cursor) throw formatError(file, `tensor '${t.name}': data overlaps another tensor`);
    if (t.begin > cursor) throw formatError(file, `tensor '${t.name}': ${t.begin - cursor} unused bytes before its data`);
    cursor = t.end;
  }
  if (cursor !== dataLen) throw formatError(file, `${dataLen - cursor} bytes after the last tensor's data`);
  return { tensors, metadata };
}

/**
 * The first key that appears twice in one object of a JSON text (already known to be valid JSON),
 * or null. A scan rather than a parser: strings are skipped with their escapes, braces open and
 * close key sets, and a string followed by ':' is a key.
 */
export function findDuplicateKey(text: string): string | null {
  const stack: (Set<string> | null)[] = [];
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      const start = i;
      i++;
      while (i < n) {
        const d = text.charCodeAt(i);
        if (d === 0x5c /* \\ */) i += 2;
        else if (d === 0x22) break;
        else i++;
      }
      const end = ++i;
      let j = i;
      while (j < n && (text[j] === ' ' || text[j] === '\t' || text[j] === '\n' || text[j] === '\r')) j++;
      const keys = stack[stack.length - 1];
      if (text[j] === ':' && keys) {
        const key = JSON.parse(text.slice(start, end)) as string;
        if (keys.has(key)) return key;
        keys.add(key);
      }
      continue;
    }
    if (c === 0x7b /* { */) stack.push(new Set());
    else if (c === 0x5b /* [ */) stack.push(null);
    else if (c === 0x7d /* } */ || c === 0x5d /* ] */) stack.pop();
    i++;
  }
  return null;
}

/** Validates the 8-byte length prefix against the file size; returns the header length. */
export function checkHeaderLength(file: string, len64: bigint, fileSize: number): number {
  if (len64 > BigInt(MAX_HEADER)) throw formatError(file, `header length ${len64} exceeds the ${MAX_HEADER}-byte limit`);
  const headerLen = Number(len64);
  if (headerLen < 2) throw formatError(file, `header length ${headerLen} is too small`);
  if (8 + headerLen > fileSize) throw formatError(file, `header length ${headerLen} runs past the end of the ${fileSize}-byte file`);
  return headerLen;
}

/** Reads a safetensors file lazily: the header at open, each tensor's bytes when asked for. */
export class SafetensorsReader {
  readonly path: string;
  readonly tensors: Map<string, TensorInfo>;
  readonly metadata: Record<string, string>;
  private readonly dataStart: number;
  private fd: number | null;

  private constructor(path: string, fd: number, tensors: Map<string, TensorInfo>, metadata: Record<string, string>, dataStart: number) {
    this.path = path;
    this.fd = fd;
    this.tensors = tensors;
    this.metadata = metadata;
    this.dataStart = dataStart;
  }

  static open(path: string): SafetensorsReader {
    let fd: number;
    try {
      fd = fs.openSync(path, 'r');
    } catch (e) {
      throw new SiftError('E_IO', `cannot open ${path}: ${(e as Error).message}`);
    }
    try {
      const size = fs.fstatSync(fd).size;
      if (size < 8) throw formatError(path, `file of ${size} bytes is too short for a safetensors header`);
      const lenBuf = Buffer.alloc(8);
      readFully(fd, lenBuf, 0, path);
      const headerLen = checkHeaderLength(path, lenBuf.readBigUInt64LE(0), size);
      const header = Buffer.alloc(headerLen);
      readFully(fd, header, 8, path);
      const { tensors, metadata } = parseHeader(path, header, size, headerLen);
      return new SafetensorsReader(path, fd, tensors, metadata, 8 + headerLen);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new SiftError('E_FORMAT', `${this.path}: no tensor named '${name}'`);
    return t;
  }

  /** The raw bytes of one tensor. */
  bytes(name: string): Buffer {
    const t = this.info(name);
    if (this.fd === null) throw new SiftError('E_DISPOSED', `${this.path} was closed`);
    const buf = Buffer.alloc(t.end - t.begin);
    readFully(this.fd, buf, this.dataStart + t.begin, this.path, name);
    return buf;
  }

  /** One tensor on a device, optionally converted to a dtype. */
  tensor(name: string, opts: { device?: string; dtype?: DType } = {}): Tensor {
    return tensorFromBytes(this.info(name), this.bytes(name), opts);
  }

  close(): void {
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }
}

/** Uploads one tensor's bytes to a device, casting when another dtype is asked for. */
function tensorFromBytes(info: TensorInfo, buf: Buffer, opts: { device?: string; dtype?: DType }): Tensor {
  const device = normalizeDevice(opts.device ?? 'cpu');
  const h = native().fromBuffer(buf, info.shape, info.dtype, device);
  if (opts.dtype && opts.dtype !== info.dtype) {
    try {
      return new Tensor(native().cast(h, opts.dtype));
    } finally {
      native().dispose(h);
    }
  }
  return new Tensor(h);
}

/**
 * The same reader over fs.promises, so that loading a large checkpoint does not block the event
 * loop: the header at open, each tensor's bytes when asked for.
 */
export class AsyncSafetensorsReader {
  readonly path: string;
  readonly tensors: Map<string, TensorInfo>;
  readonly metadata: Record<string, string>;
  private readonly dataStart: number;
  private fh: fs.promises.FileHandle | null;

  private constructor(
    path: string,
    fh: fs.promises.FileHandle,
    tensors: Map<string, TensorInfo>,
    metadata: Record<string, string>,
    dataStart: number,
  ) {
    this.path = path;
    this.fh = fh;
    this.tensors = tensors;
    this.metadata = metadata;
    this.dataStart = dataStart;
  }

  static async open(path: string): Promise<AsyncSafetensorsReader> {
    let fh: fs.promises.FileHandle;
    try {
      fh = await fs.promises.open(path, 'r');
    } catch (e) {
      throw new SiftError('E_IO', `cannot open ${path}: ${(e as Error).message}`);
    }
    try {
      const size = (await fh.stat()).size;
      if (size < 8) throw formatError(path, `file of ${size} bytes is too short for a safetensors header`);
      const lenBuf = Buffer.alloc(8);
      await readFullyAsync(fh, lenBuf, 0, path);
      const headerLen = checkHeaderLength(path, lenBuf.readBigUInt64LE(0), size);
      const header = Buffer.alloc(headerLen);
      await readFullyAsync(fh, header, 8, path);
      const { tensors, metadata } = parseHeader(path, header, size, headerLen);
      return new AsyncSafetensorsReader(path, fh, tensors, metadata, 8 + headerLen);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new SiftError('E_FORMAT', `${this.path}: no tensor named '${name}'`);
    return t;
  }

  async bytes(name: string): Promise<Buffer> {
    const t = this.info(name);
    if (this.fh === null) throw new SiftError('E_DISPOSED', `${this.path} was closed`);
    const buf = Buffer.alloc(t.end - t.begin);
    await readFullyAsync(this.fh, buf, this.dataStart + t.begin, this.path, name);
    return buf;
  }

  async tensor(name: string, opts: { device?: string; dtype?: DType } = {}): Promise<Tensor> {
    const info = this.info(name);
    return tensorFromBytes(info, await this.bytes(name), opts);
  }

  async close(): Promise<void> {
    if (this.fh !== null) {
      const fh = this.fh;
      this.fh = null;
      await fh.close();
    }
  }
}

async function readFullyAsync(fh: fs.promises.FileHandle, buf: Buffer, position: number, file: string, tensor?: string): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesRead } = await fh.read(buf, off, buf.length - off, position + off);
    if (bytesRead === 0) throw formatError(file, `unexpected end of file${tensor ? ` reading tensor '${tensor}'` : ''}`);
    off += bytesRead;
  }
}

function readFully(fd: number, buf: Buffer, position: number, file: string, tensor?: string): void {
  let off = 0;
  while (off < buf.length) {
    const n = fs.readSync(fd, buf, off, buf.length - off, position + off);
    if (n === 0) throw formatError(file, `unexpected end of file${tensor ? ` reading tensor '${tensor}'` : ''}`);
    off += n;
  }
}

/** Reads every tensor of a file (small files: increments, fixtures). */
export function loadSafetensors(
  path: string,
  opts: { device?: string } = {},
): { tensors: Map<string, Tensor>; metadata: Record<string, string> } {
  const r = SafetensorsReader.open(path);
  try {
    const tensors = new Map<string, Tensor>();
    for (const name of r.names()) tensors.set(name, r.tensor(name, opts));
    return { tensors, metadata: r.metadata };
  } finally {
    r.close();
  }
}

/** Encodes tensors into safetensors bytes: header padded with spaces to 8 bytes, then the data. */
export function encodeSafetensors(entries: [string, Tensor][], metadata?: Record<string, string>): Uint8Array[] {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) header.__metadata__ = metadata;
  const datas: Uint8Array[] = [];
  let offset = 0;
  const seen = new Set<string>();
  for (const [name, t] of entries) {
    if (seen.has(name)) throw new SiftError('E_ARG', `safetensors: duplicate tensor name '${name}'`);
    if (name === '__metadata__') throw new SiftError('E_ARG', "safetensors: '__metadata__' is not a tensor name");
    seen.add(name);
    const bytes = new Uint8Array(native().toBuffer(t.handle));
    header[name] = { dtype: DTYPE_TO_ST[t.dtype], shape: t.shape, data_offsets: [offset, offset + bytes.byteLength] };
    offset += bytes.byteLength;
    datas.push(bytes);
  }
  let json = JSON.stringify(header);
  const pad = (8 - (Buffer.byteLength(json) % 8)) % 8;
  json += ' '.repeat(pad);
  const jsonBytes = Buffer.from(json, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(jsonBytes.byteLength), 0);
  return [len, jsonBytes, ...datas];
}

/** Writes tensors (in the given order) atomically. */
export function saveSafetensors(
  path: string,
  tensors: Map<string, Tensor> | [string, Tensor][] | Record<string, Tensor>,
  metadata?: Record<string, string>,
): void {
  const entries: [string, Tensor][] =
    tensors instanceof Map ? [...tensors.entries()] : Array.isArray(tensors) ? tensors : Object.entries(tensors);
  writeFileAtomic(path, encodeSafetensors(entries, metadata));
}
