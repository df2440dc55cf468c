/**
 * 1,000 deterministic corruptions of a valid safetensors file (truncations, byte flips in the
 * length, header and data, and structured edits of offsets, dtypes, shapes, keys and metadata).
 * An independent validator written from the format's rules predicts each outcome: an invalid file
 * must be an E_FORMAT SiftError (never a crash or another error), a valid one must open and read.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { tensor, SiftError, Tensor } from '../../lib';
import { native } from '../../lib/engine/native';
import { AsyncSafetensorsReader, SafetensorsReader, saveSafetensors } from '../../lib/io/safetensors';
import { StateDictReader } from '../../lib/io/hf';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-fuzz-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---- the reference validator -----------------------------------------------------------------

const SIZES: Record<string, number> = { F32: 4, F16: 2, BF16: 2, F64: 8, I32: 4, I64: 8, BOOL: 1, U8: 1 };

/** Whether a JSON text (already known valid) repeats a key inside one object. */
function hasDuplicateKey(t: string): boolean {
  let i = 0;
  const ws = (): void => {
    while (i < t.length && ' \t\n\r'.includes(t[i])) i++;
  };
  const str = (): string => {
    const s = i++;
    while (t[i] !== '"') i += t[i] === '\\' ? 2 : 1;
    i++;
    return JSON.parse(t.slice(s, i)) as string;
  };
  const val = (): boolean => {
    ws();
    if (t[i] === '{') {
      i++;
      const seen = new Set<string>();
      ws();
      if (t[i] === '}') return (i++, false);
      for (;;) {
        ws();
        const k = str();
        if (seen.has(k)) return true;
        seen.add(k);
        ws();
        i++;
        if (val()) return true;
        ws();
        if (t[i++] === ',') continue;
        return false;
      }
    }
    if (t[i] === '[') {
      i++;
      ws();
      if (t[i] === ']') return (i++, false);
      for (;;) {
        if (val()) return true;
        ws();
        if (t[i++] === ',') continue;
        return false;
      }
    }
    if (t[i] === '"') return (str(), false);
    while (i < t.length && !',}] \t\n\r'.includes(t[i])) i++;
    return false;
  };
  return val();
}

function isValid(buf: Buffer): boolean {
  if (buf.length < 8) return false;
  const n = buf.readBigUInt64LE(0);
  if (n < 2n || n > 100n * 1024n * 1024n || 8n + n > BigInt(buf.length)) return false;
  const len = Number(n);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(buf.subarray(8, 8 + len));
  } catch {
    return false;
  }
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch {
    return false;
  }
  if (j === null || typeof j !== 'object' || Array.isArray(j) || hasDuplicateKey(text)) return false;
  const dataLen = buf.length - 8 - len;
  const ranges: [number, number][] = [];
  for (const [k, v] of Object.entries(j as Record<string, unknown>)) {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
    const e = v as Record<string, unknown>;
    if (k === '__metadata__') {
      if (!Object.values(e).every((x) => typeof x === 'string')) return false;
      continue;
    }
    const size = typeof e.dtype === 'string' ? SIZES[e.dtype] : undefined;
    if (!size) return false;
    const shape = e.shape;
    if (!Array.isArray(shape) || shape.length > 16 || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) return false;
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isSafeInteger(d) && d >= 0)) return false;
    const [b, en] = off as number[];
    if (b > en || en > dataLen) return false;
    let numel = 1;
    for (const d of shape as number[]) {
      numel *= d;
      if (numel > Number.MAX_SAFE_INTEGER) return false;
    }
    if (numel * size !== en - b) return false;
    ranges.push([b, en]);
  }
  ranges.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  let cur = 0;
  for (const [b, en] of ranges) {
    if (b !== cur) return false;
    cur = en;
  }
  return cur === dataLen;
}

// ---- the valid file and its mutations ---------------------------------------------------------

const base: [string, Tensor][] = [
  [
    'encoder.layer.0.weight',
    tensor(
      [
        [1, 2, 3],
        [4, 5, 6],
      ],
      undefined,
      { dtype: 'f32' },
    ),
  ],
  ['encoder.layer.0.bias', tensor([0.5, -0.5, 1e-3, 7], [4], { dtype: 'f16' })],
  [
    'norm.weight',
    tensor(
      [
        [1, 2],
        [3, 4],
      ],
      undefined,
      { dtype: 'bf16' },
    ),
  ],
  ['position_ids', tensor([0, 1, 2], [3], { dtype: 'i64' })],
  ['mask', tensor([1, 0, 1, 1, 0], [5], { dtype: 'bool' })],
  ['empty', tensor([], [0, 4], { dtype: 'i32' })],
  ['scale', tensor([Math.PI], [1], { dtype: 'f64' })],
];
const validPath = path.join(dir, 'valid.safetensors');
saveSafetensors(validPath, base, { format: 'pt' });
const VALID = fs.readFileSync(validPath);
const HEADER_LEN = Number(VALID.readBigUInt64LE(0));
const HEADER = JSON.parse(VALID.subarray(8, 8 + HEADER_LEN).toString('utf8')) as Record<string, Record<string, unknown>>;
const DATA = VALID.subarray(8 + HEADER_LEN);
const NAMES = Object.keys(HEADER).filter((k) => k !== '__metadata__');

function assemble(headerText: string | Buffer, data: Buffer = DATA, lenOverride?: bigint): Buffer {
  const h = typeof headerText === 'string' ? Buffer.from(headerText, 'utf8') : headerText;
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lenOverride ?? BigInt(h.length));
  return Buffer.concat([len, h, data]);
}

const WEIRD: unknown[] = [
  -1,
  -4,
  1.5,
  2 ** 53,
  2 ** 64,
  1e300,
  -0,
  '3',
  null,
  true,
  [],
  {},
  [1],
  Number.MAX_SAFE_INTEGER,
  2 ** 31,
  2 ** 32 + 4,
  0,
];

type Mutation = (rnd: () => number) => Buffer;
const pick = <T>(rnd: () => number, xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
const int = (rnd: () => number, n: number): number => Math.floor(rnd() * n);

function editHeader(rnd: () => number, edit: (h: Record<string, Record<string, unknown>>, name: string) => void): Buffer {
  const h = JSON.parse(JSON.stringify(HEADER)) as Record<string, Record<string, unknown>>;
  edit(h, pick(rnd, NAMES));
  return assemble(JSON.stringify(h));
}

const MUTATIONS: [string, Mutation][] = [
  ['truncate', (rnd) => VALID.subarray(0, int(rnd, VALID.length))],
  [
    'flip length byte',
    (rnd) => {
      const b = Buffer.from(VALID);
      b[int(rnd, 8)] ^= 1 + int(rnd, 255);
      return b;
    },
  ],
  [
    'length value',
    (rnd) =>
      assemble(
        VALID.subarray(8, 8 + HEADER_LEN),
        DATA,
        pick(rnd, [
          0n,
          1n,
          2n,
          7n,
          BigInt(HEADER_LEN - 1),
          BigInt(HEADER_LEN + 1),
          BigInt(HEADER_LEN + 8),
          BigInt(VALID.length),
          2n ** 63n,
          2n ** 64n - 1n,
          2n ** 53n + 1n,
          100n * 1024n * 1024n + 1n,
        ]),
      ),
  ],
  [
    'flip header byte',
    (rnd) => {
      const b = Buffer.from(VALID);
      b[8 + int(rnd, HEADER_LEN)] ^= 1 + int(rnd, 255);
      return b;
    },
  ],
  [
    'flip data byte',
    (rnd) => {
      const b = Buffer.from(VALID);
      b[8 + HEADER_LEN + int(rnd, DATA.length)] ^= 1 + int(rnd, 255);
      return b;
    },
  ],
  [
    'offset value',
    (rnd) =>
      editHeader(rnd, (h, n) => {
        const off = h[n].data_offsets as unknown[];
        off[int(rnd, 2)] = rnd() < 0.5 ? pick(rnd, WEIRD) : (off[0] as number) + int(rnd, 9) - 4;
      }),
  ],
  [
    'offsets shape',
    (rnd) =>
      editHeader(rnd, (h, n) => {
        const off = h[n].data_offsets as number[];
        h[n].data_offsets = pick(rnd, [[off[1], off[0]], [off[0]], [off[0], off[1], off[1]], 'x', null, {}, [String(off[0]), off[1]]]);
      }),
  ],
  [
    'dtype',
    (rnd) =>
      editHeader(rnd, (h, n) => {
        h[n].dtype = pick(rnd, [
          'f32',
          'F8_E4M3',
          'I8',
          'U16',
          'U64',
          'F',
          '',
          4,
          null,
          ['F32'],
          'F32 ',
          'F64',
          'F16',
          'BF16',
          'I64',
          'BOOL',
          'U8',
          'I32',
        ]);
      }),
  ],
  [
    'shape',
    (rnd) =>
      editHeader(rnd, (h, n) => {
        const s = [...(h[n].shape as number[])];
        const k = int(rnd, 6);
        if (k === 0 && s.length) s[int(rnd, s.length)] = pick(rnd, WEIRD) as number;
        else if (k === 1) s.push(pick(rnd, [1, 2, 0, 2 ** 40]));
        else if (k === 2) s.pop();
        else if (k === 3) s.reverse();
        else if (k === 4)
          h[n].shape = pick(rnd, ['2,3', null, {}, [[2, 3]], new Array(17).fill(1), [2 ** 30, 2 ** 30, 2 ** 30], [2 ** 53, 0]]);
        if (k !== 4) h[n].shape = s;
      }),
  ],
  [
    'missing field',
    (rnd) =>
      editHeader(rnd, (h, n) => {
        delete h[n][pick(rnd, ['dtype', 'shape', 'data_offsets'])];
      }),
  ],
  [
    'entry type',
    (rnd) =>
      editHeader(rnd, (h, n) => {
        (h as Record<string, unknown>)[n] = pick(rnd, [null, 1, 'x', [], [h[n]]]);
      }),
  ],
  [
    'drop or add tensor',
    (rnd) =>
      editHeader(rnd, (h, n) => {
        if (rnd() < 0.5) delete h[n];
        else h[`${n}.copy`] = { ...h[n] };
      }),
  ],
  [
    'metadata',
    (rnd) =>
      editHeader(rnd, (h) => {
        (h as Record<string, unknown>).__metadata__ = pick(rnd, [
          { format: 1 },
          { format: null },
          'pt',
          ['pt'],
          null,
          { a: { b: 'c' } },
          { format: 'pt', other: 'x' },
        ]);
      }),
  ],
  [
    'duplicate key',
    (rnd) => {
      const name = pick(rnd, [...NAMES, '__metadata__']);
      const text = JSON.stringify(HEADER);
      return assemble(`${text.slice(0, -1)},${JSON.stringify(name)}:${JSON.stringify(HEADER[name])}}`);
    },
  ],
  ['not an object', (rnd) => assemble(pick(rnd, ['[]', 'null', '42', '"x"', '{', '{}}', '', '{"a":', 'true']))],
  [
    'invalid utf-8',
    (rnd) => {
      const text = Buffer.from(JSON.stringify(HEADER), 'utf8');
      const at = 2 + int(rnd, 20);
      return assemble(Buffer.concat([text.subarray(0, at), Buffer.from([pick(rnd, [0xff, 0xc3, 0xe2, 0x80])]), text.subarray(at)]));
    },
  ],
  [
    'trailing or missing data',
    (rnd) => (rnd() < 0.5 ? Buffer.concat([VALID, Buffer.alloc(1 + int(rnd, 16))]) : VALID.subarray(0, VALID.length - 1 - int(rnd, 4))),
  ],
  [
    'random header bytes',
    (rnd) => {
      const n = 2 + int(rnd, 64);
      const h = Buffer.alloc(n);
      for (let i = 0; i < n; i++) h[i] = int(rnd, 256);
      return assemble(h);
    },
  ],
  [
    'pickle magic',
    (rnd) => {
      const b = Buffer.from(VALID);
      Buffer.from(
        pick(rnd, [
          [0x50, 0x4b, 0x03, 0x04],
          [0x80, 0x02, 0x7d, 0x71],
        ]),
      ).copy(b, 0);
      return b;
    },
  ],
];

function codeOf(e: unknown): string {
  return e instanceof SiftError ? e.code : `not a SiftError: ${String(e)}`;
}

function readAll(file: string, via: number): Buffer[] {
  if (via === 0) {
    const r = SafetensorsReader.open(file);
    try {
      return r.names().map((n) => {
        const t = r.tensor(n);
        const b = Buffer.from(native().toBuffer(t.handle));
        t.dispose();
        return b;
      });
    } finally {
      r.close();
    }
  }
  const r = StateDictReader.open(file);
  try {
    return r.names().map((n) => {
      const t = r.tensor(n);
      const b = Buffer.from(native().toBuffer(t.handle));
      t.dispose();
      return b;
    });
  } finally {
    r.close();
  }
}

async function readAllAsync(file: string): Promise<number> {
  const r = await AsyncSafetensorsReader.open(file);
  try {
    for (const n of r.names()) (await r.tensor(n)).dispose();
    return r.names().length;
  } finally {
    await r.close();
  }
}

describe('safetensors fuzz', () => {
  test('the reference validator accepts the valid file', () => {
    expect(isValid(VALID)).toBe(true);
    expect(readAll(validPath, 0).length).toBe(NAMES.length);
  });

  test('1,000 corruptions: E_FORMAT when invalid, a clean read when valid', async () => {
    const rnd = mulberry32(20240611);
    const file = path.join(dir, 'case.safetensors');
    const tally: Record<string, { invalid: number; valid: number }> = {};
    for (let i = 0; i < 1000; i++) {
      const [kind, mutate] = MUTATIONS[i % MUTATIONS.length];
      const buf = mutate(rnd);
      fs.writeFileSync(file, buf);
      const valid = isValid(buf) && !(buf[0] === 0x50 && buf[1] === 0x4b) && !(buf[0] === 0x80 && buf[1] >= 2 && buf[1] <= 5);
      const t = (tally[kind] ??= { invalid: 0, valid: 0 });
      let outcome: string;
      try {
        const parts = readAll(file, i % 2);
        outcome = 'ok';
        // A valid file reads back exactly the bytes it holds.
        if (kind === 'flip data byte') expect(Buffer.concat(parts).length).toBe(DATA.length);
      } catch (e) {
        outcome = codeOf(e);
        if (outcome === 'E_FORMAT') expect((e as Error).message).toContain(file);
      }
      if (outcome !== (valid ? 'ok' : 'E_FORMAT'))
        throw new Error(`case ${i} (${kind}): expected ${valid ? 'a clean read' : 'E_FORMAT'}, got ${outcome}`);
      if (i % 9 === 0) {
        let asyncOutcome: string;
        try {
          await readAllAsync(file);
          asyncOutcome = 'ok';
        } catch (e) {
          asyncOutcome = codeOf(e);
        }
        // The async reader does not sniff pickles; otherwise it agrees with the sync one.
        if (kind !== 'pickle magic') expect(`${kind}: ${asyncOutcome}`).toBe(`${kind}: ${outcome}`);
      }
      t[valid ? 'valid' : 'invalid']++;
    }
    if (process.env.FUZZ_TALLY) console.log(JSON.stringify(tally));
    // Every kind of mutation produced invalid files; data flips stay valid.
    for (const [kind] of MUTATIONS) {
      if (kind === 'flip data byte') expect(tally[kind].valid).toBeGreaterThan(0);
      else expect(tally[kind].invalid).toBeGreaterThan(0);
    }
    expect(tally['flip data byte'].invalid).toBe(0);
  });
});
