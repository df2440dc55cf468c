import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { tensor, SafetensorsReader, loadSafetensors, saveSafetensors, SiftError, Tensor } from '../../lib';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-st-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SiftError);
    return (e as SiftError).code;
  }
  return undefined;
}

function writeRaw(name: string, header: unknown, data: Buffer, lenOverride?: bigint): string {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lenOverride ?? BigInt(json.length));
  const p = path.join(dir, name);
  fs.writeFileSync(p, Buffer.concat([len, json, data]));
  return p;
}

describe('safetensors', () => {
  test('round trip is bit-exact for every dtype, with metadata', () => {
    const ts: [string, Tensor][] = [
      ['a.f32', tensor([1.5, -2, 3e-8], [3], { dtype: 'f32' })],
      ['b.f64', tensor([Math.PI, -1e300], [2], { dtype: 'f64' })],
      ['c.f16', tensor([0.1, 65504, -0.5], [3], { dtype: 'f16' })],
      [
        'd.bf16',
        tensor(
          [
            [0.1, 2],
            [3, -4],
          ],
          undefined,
          { dtype: 'bf16' },
        ),
      ],
      ['e.i32', tensor([1, -2, 2 ** 30], [3], { dtype: 'i32' })],
      ['f.i64', tensor([2 ** 40, -1], [2], { dtype: 'i64' })],
      ['g.bool', tensor([1, 0, 1], [3], { dtype: 'bool' })],
      ['h.empty', tensor([], [0, 4], { dtype: 'f32' })],
    ];
    const p = path.join(dir, 'rt.safetensors');
    saveSafetensors(p, ts, { note: 'hello' });
    const { tensors, metadata } = loadSafetensors(p);
    expect(metadata).toEqual({ note: 'hello' });
    for (const [name, t] of ts) {
      const u = tensors.get(name)!;
      expect(u.dtype).toBe(t.dtype);
      expect(u.shape).toEqual(t.shape);
      const { native } = require('../../lib/engine/native');
      expect(Buffer.from(native().toBuffer(u.handle)).equals(Buffer.from(native().toBuffer(t.handle)))).toBe(true);
    }
    // Header is 8-byte aligned as the format recommends.
    const len = Number(fs.readFileSync(p).readBigUInt64LE(0));
    expect(len % 8).toBe(0);
  });

  test('reader converts dtype on load', () => {
    const p = path.join(dir, 'conv.safetensors');
    saveSafetensors(p, { w: tensor([1, 2, 3], [3], { dtype: 'f32' }) });
    const r = SafetensorsReader.open(p);
    const t = r.tensor('w', { dtype: 'bf16' });
    expect(t.dtype).toBe('bf16');
    expect(Array.from(t.toArray() as Float32Array)).toEqual([1, 2, 3]);
    expect(codeOf(() => r.tensor('missing'))).toBe('E_FORMAT');
    r.close();
  });

  test('malformed headers are E_FORMAT, never a crash', () => {
    const data = Buffer.alloc(12);
    const ok = { w: { dtype: 'F32', shape: [3], data_offsets: [0, 12] } };
    expect(() => SafetensorsReader.open(writeRaw('ok.st', ok, data)).close()).not.toThrow();
    const bad: [string, unknown, Buffer, bigint?][] = [
      ['json', '{not json', data],
      ['array', [1, 2], data],
      ['dtype', { w: { dtype: 'F8', shape: [3], data_offsets: [0, 12] } }, data],
      ['shape', { w: { dtype: 'F32', shape: [-3], data_offsets: [0, 12] } }, data],
      ['size', { w: { dtype: 'F32', shape: [4], data_offsets: [0, 12] } }, data],
      ['outside', { w: { dtype: 'F32', shape: [3], data_offsets: [0, 12] } }, Buffer.alloc(8)],
      ['overlap', { w: { dtype: 'F32', shape: [3], data_offsets: [0, 12] }, v: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } }, data],
      ['hole', { w: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, data],
      ['trailing', { w: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, data],
      ['meta', { __metadata__: { a: 1 }, ...ok }, data],
      ['hugelen', ok, data, 2n ** 60n],
      ['pastend', ok, data, 10000n],
    ];
    for (const [name, header, d, len] of bad) {
      const p = writeRaw(`${name}.st`, header, d, len);
      expect([name, codeOf(() => SafetensorsReader.open(p))]).toEqual([name, 'E_FORMAT']);
    }
    const tiny = path.join(dir, 'tiny.st');
    fs.writeFileSync(tiny, Buffer.alloc(3));
    expect(codeOf(() => SafetensorsReader.open(tiny))).toBe('E_FORMAT');
    expect(codeOf(() => SafetensorsReader.open(path.join(dir, 'nope.st')))).toBe('E_IO');
  });

  test('a failed write leaves the previous file untouched', () => {
    const p = path.join(dir, 'atomic.safetensors');
    saveSafetensors(p, { w: tensor([1], [1]) });
    const before = fs.readFileSync(p);
    const t = tensor([2], [1]);
    expect(
      codeOf(() =>
        saveSafetensors(p, [
          ['x', t],
          ['x', t],
        ]),
      ),
    ).toBe('E_ARG');
    expect(fs.readFileSync(p).equals(before)).toBe(true);
    expect(fs.readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
    // The rename fails (the target is a folder): E_IO, and the temporary file is removed.
    const folder = path.join(dir, 'a-folder');
    fs.mkdirSync(folder);
    expect(codeOf(() => saveSafetensors(folder, { w: t }))).toBe('E_IO');
    expect(fs.readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });
});
