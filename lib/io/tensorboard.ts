/**
 * TensorBoard event files (`events.out.tfevents.<time>.<host>`): TFRecord framing (u64 length, its
 * masked CRC32C, the record, its masked CRC32C; little-endian) around tensorflow.Event protos
 * (proto/tensorboard.proto), the first one carrying file_version "brain.Event:2", then one Event per
 * step with scalar summaries (Summary.Value.simple_value), which TensorBoard's scalar dashboard shows.
 * Each record goes to the file with its own write, so a running `tensorboard --logdir` sees a run
 * as it progresses. A reader (for tests and tools) checks both CRCs of every record.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type * as protobuf from 'protobufjs';
import { SiftError } from '../engine/errors';
import { decodeMessage, encodeMessage, protoType, toNum } from '../onnx/proto';
import type { TrainerEvent } from '../train/types';

const eventType = (): protobuf.Type => protoType('tensorboard.proto', 'tensorflow.Event');

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    // CRC-32C (Castagnoli), reflected polynomial.
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

export function crc32c(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** TFRecord's masked CRC: rotate right by 15 bits, add a constant (mod 2^32). */
export function maskedCrc32c(bytes: Uint8Array): number {
  const c = crc32c(bytes);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

/** One TFRecord: length, masked CRC of the length bytes, data, masked CRC of the data. */
export function tfRecord(data: Uint8Array): Buffer {
  const out = Buffer.alloc(8 + 4 + data.length + 4);
  out.writeBigUInt64LE(BigInt(data.length), 0);
  out.writeUInt32LE(maskedCrc32c(out.subarray(0, 8)), 8);
  out.set(data, 12);
  out.writeUInt32LE(maskedCrc32c(data), 12 + data.length);
  return out;
}

export interface ScalarRecord {
  wallTime: number;
  step: number;
  tag: string;
  value: number;
}

/** Writes scalars to one event file in `dir`. */
export class EventFileWriter {
  readonly file: string;
  private fd: number | null;

  constructor(dir: string, opts: { time?: number; host?: string } = {}) {
    const time = Math.floor(opts.time ?? Date.now() / 1000);
    const host = (opts.host ?? os.hostname()).replace(/[^A-Za-z0-9_.-]/g, '_');
    this.file = path.join(dir, `events.out.tfevents.${time}.${host}`);
    try {
      fs.mkdirSync(dir, { recursive: true });
      this.fd = fs.openSync(this.file, 'a');
    } catch (e) {
      throw new SiftError('E_IO', `cannot open the TensorBoard event file ${this.file}: ${(e as Error).message}`);
    }
    this.write({ wall_time: Date.now() / 1000, step: 0, file_version: 'brain.Event:2' });
  }

  private write(event: Record<string, unknown>): void {
    if (this.fd === null) throw new SiftError('E_ARG', `${this.file}: the event file is closed`);
    const rec = tfRecord(encodeMessage(eventType(), event));
    let off = 0;
    while (off < rec.length) off += fs.writeSync(this.fd, rec, off, rec.length - off);
  }

  /** One Event at `step` with a simple_value per tag (non-finite values are written too: TensorBoard shows them). */
  scalars(step: number, values: Record<string, number>, wallTime = Date.now() / 1000): void {
    const value = Object.entries(values)
      .filter(([, v]) => typeof v === 'number')
      .map(([tag, v]) => ({ tag, simple_value: v }));
    if (!value.length) return;
    this.write({ wall_time: wallTime, step, summary: { value } });
  }

  close(): void {
    if (this.fd === null) return;
    try {
      fs.fsyncSync(this.fd);
    } finally {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }
}

/** Reads an event file back: every record's framing and both CRCs checked; the scalars and the file version. */
export function readEventFile(file: string): { fileVersion: string | null; scalars: ScalarRecord[]; records: number } {
  const buf = fs.readFileSync(file);
  const scalars: ScalarRecord[] = [];
  let fileVersion: string | null = null;
  let off = 0;
  let records = 0;
  while (off < buf.length) {
    if (off + 12 > buf.length) throw new SiftError('E_FORMAT', `${file}: truncated record header at byte ${off}`);
    const len = Number(buf.readBigUInt64LE(off));
    if (buf.readUInt32LE(off + 8) !== maskedCrc32c(buf.subarray(off, off + 8)))
      throw new SiftError('E_FORMAT', `${file}: bad length CRC at byte ${off}`);
    if (off + 12 + len + 4 > buf.length) throw new SiftError('E_FORMAT', `${file}: truncated record at byte ${off}`);
    const data = buf.subarray(off + 12, off + 12 + len);
    if (buf.readUInt32LE(off + 12 + len) !== maskedCrc32c(data)) throw new SiftError('E_FORMAT', `${file}: bad data CRC at byte ${off}`);
    const ev = decodeMessage<{
      wall_time?: number;
      step?: unknown;
      file_version?: string;
      summary?: { value?: { tag?: string; simple_value?: number }[] };
    }>(eventType(), data, file);
    if (ev.file_version) fileVersion = fileVersion ?? ev.file_version;
    for (const v of ev.summary?.value ?? []) {
      if (typeof v.simple_value === 'number')
        scalars.push({ wallTime: ev.wall_time ?? 0, step: toNum(ev.step, 'step'), tag: v.tag ?? '', value: v.simple_value });
    }
    records++;
    off += 12 + len + 4;
  }
  return { fileVersion, scalars, records };
}

/** Where a run reports its metrics besides log.jsonl: TrainerOptions.reportTo (transformers' report_to). */
export type ReportTo = 'tensorboard' | 'none';

export function wantsTensorboard(reportTo: ReportTo | ReportTo[] | undefined): boolean {
  const list = reportTo === undefined ? [] : Array.isArray(reportTo) ? reportTo : [reportTo];
  for (const r of list)
    if (r !== 'tensorboard' && r !== 'none')
      throw new SiftError('E_ARG', `reportTo: unknown destination '${String(r)}' (allowed: tensorboard, none)`);
  return list.includes('tensorboard');
}

/**
 * Turns the trainer's events into TensorBoard scalars under transformers' tag names: train/loss,
 * train/learning_rate, train/grad_norm, train/tokens_per_second, eval/<metric>; SIFT's selection as
 * sift/trainable_parameters.
 */
export class TensorBoardLogger {
  readonly writer: EventFileWriter;

  constructor(dir: string) {
    this.writer = new EventFileWriter(dir);
  }

  get file(): string {
    return this.writer.file;
  }

  add(e: TrainerEvent): void {
    if (e.type === 'step') {
      const v: Record<string, number> = { 'train/loss': e.loss, 'train/learning_rate': e.lr, 'train/tokens_per_second': e.tokensPerSec };
      if (e.gradNorm !== undefined) v['train/grad_norm'] = e.gradNorm;
      if (e.meanGradProportion !== undefined) v['sift/grad_proportion'] = e.meanGradProportion;
      this.writer.scalars(e.step, v);
    } else if (e.type === 'eval') {
      this.writer.scalars(
        e.step,
        Object.fromEntries(
          Object.entries(e.metrics)
            .filter(([, x]) => typeof x === 'number')
            .map(([k, x]) => [`eval/${k}`, x as number]),
        ),
      );
    } else if (e.type === 'selection') {
      this.writer.scalars(0, { 'sift/trainable_parameters': e.trainable, 'sift/total_parameters': e.total });
    }
  }

  close(): void {
    this.writer.close();
  }
}
