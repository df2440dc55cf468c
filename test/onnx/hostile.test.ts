import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createModel, tidy, SiftError } from '../../lib';
import { exportOnnx, loadOnnxModel, loadOnnxModelFromBuffer } from '../../lib/onnx';
import { onnxType, encodeMessage } from '../../lib/onnx/proto';
import { CASES } from './configs';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-onnx-bad-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof SiftError)) throw e;
    return e.code;
  }
  return undefined;
}

const vi = (name: string, elem = 1) => ({ name, type: { tensor_type: { elem_type: elem, shape: { dim: [{ dim_param: 'n' }] } } } });

function model(graph: Record<string, unknown>): Uint8Array {
  return encodeMessage(onnxType('ModelProto'), {
    ir_version: 8,
    opset_import: [{ domain: '', version: 17 }],
    graph: { name: 'g', ...graph },
  });
}

const f32 = (vals: number[]) => new Uint8Array(Float32Array.from(vals).buffer);

let good: Uint8Array;
beforeAll(() => {
  const m = createModel(CASES[0].config, { task: 'causal-lm', seed: 2 });
  const file = path.join(dir, 'good.onnx');
  exportOnnx(m, file);
  m.dispose();
  good = fs.readFileSync(file);
});

test('truncated files are E_FORMAT', () => {
  for (const cut of [1, 2, 7, 100, Math.floor(good.length / 2), good.length - 3]) {
    expect(codeOf(() => loadOnnxModelFromBuffer(good.subarray(0, cut)))).toBe('E_FORMAT');
  }
  expect(codeOf(() => loadOnnxModelFromBuffer(new Uint8Array(0)))).toBe('E_FORMAT');
});

test('wrong wire types are E_FORMAT', () => {
  const bad = Buffer.from(good);
  // The graph (field 7, wire type 2 = 0x3a) re-tagged as a varint, a fixed64 and a fixed32.
  const at = bad.indexOf(0x3a);
  for (const tag of [0x38, 0x39, 0x3d]) {
    bad[at] = tag;
    expect(codeOf(() => loadOnnxModelFromBuffer(bad))).toBe('E_FORMAT');
  }
});

test('cycles, undefined values and duplicate outputs are E_FORMAT', () => {
  const cyc = model({
    input: [vi('x')],
    output: [vi('b')],
    node: [
      { op_type: 'Add', input: ['x', 'b'], output: ['a'], name: 'n1' },
      { op_type: 'Relu', input: ['a'], output: ['b'], name: 'n2' },
    ],
  });
  expect(() => loadOnnxModelFromBuffer(cyc)).toThrow(/cycle/);
  expect(codeOf(() => loadOnnxModelFromBuffer(cyc))).toBe('E_FORMAT');
  const undef = model({ input: [vi('x')], output: [vi('a')], node: [{ op_type: 'Add', input: ['x', 'nope'], output: ['a'] }] });
  expect(codeOf(() => loadOnnxModelFromBuffer(undef))).toBe('E_FORMAT');
  const dup = model({
    input: [vi('x')],
    output: [vi('a')],
    node: [
      { op_type: 'Relu', input: ['x'], output: ['a'] },
      { op_type: 'Relu', input: ['x'], output: ['a'] },
    ],
  });
  expect(codeOf(() => loadOnnxModelFromBuffer(dup))).toBe('E_FORMAT');
});

test('huge declared sizes are E_FORMAT without allocating', () => {
  const huge = model({
    input: [vi('x')],
    output: [vi('y')],
    initializer: [{ name: 'w', dims: [1e9, 1e9], data_type: 1, raw_data: f32([1, 2]) }],
    node: [{ op_type: 'Add', input: ['x', 'w'], output: ['y'] }],
  });
  expect(codeOf(() => loadOnnxModelFromBuffer(huge))).toBe('E_FORMAT');
  const short = model({
    input: [vi('x')],
    output: [vi('y')],
    initializer: [{ name: 'w', dims: [1000, 1000], data_type: 1, raw_data: f32([1, 2]) }],
    node: [{ op_type: 'Add', input: ['x', 'w'], output: ['y'] }],
  });
  expect(codeOf(() => loadOnnxModelFromBuffer(short))).toBe('E_FORMAT');
  // A constant shape asking for 2^60 elements at run time.
  const big = model({
    input: [vi('x', 7)],
    output: [vi('y')],
    node: [
      {
        op_type: 'Constant',
        output: ['s'],
        attribute: [{ name: 'value', type: 4, t: { dims: [2], data_type: 7, int64_data: [2 ** 30, 2 ** 30] } }],
      },
      { op_type: 'ConstantOfShape', input: ['s'], output: ['y'] },
    ],
  });
  const g = loadOnnxModelFromBuffer(big);
  expect(codeOf(() => g.run({ x: [[1]] }))).toBe('E_FORMAT');
});

test('external data must stay inside the model folder', () => {
  fs.writeFileSync(path.join(dir, 'w.bin'), Buffer.alloc(64));
  const ext = (location: string, length = 16) =>
    model({
      input: [vi('x')],
      output: [vi('y')],
      initializer: [
        {
          name: 'w',
          dims: [4],
          data_type: 1,
          data_location: 1,
          external_data: [
            { key: 'location', value: location },
            { key: 'length', value: String(length) },
          ],
        },
      ],
      node: [{ op_type: 'Add', input: ['x', 'w'], output: ['y'] }],
    });
  const load = (bytes: Uint8Array) => {
    const f = path.join(dir, 'ext.onnx');
    fs.writeFileSync(f, bytes);
    return loadOnnxModel(f);
  };
  expect(load(ext('w.bin')).namedParameters()).toHaveLength(1);
  for (const loc of ['../w.bin', '/etc/passwd', 'sub/../../w.bin', 'missing.bin']) expect(codeOf(() => load(ext(loc)))).toBe('E_FORMAT');
  expect(codeOf(() => load(ext('w.bin', 1 << 30)))).toBe('E_FORMAT');
});

test('unsupported operators are all listed before any work', () => {
  const bytes = model({
    input: [vi('x')],
    output: [vi('z')],
    node: [
      { op_type: 'Foo', input: ['x'], output: ['y'], name: 'first' },
      { op_type: 'Relu', input: ['y'], output: ['y2'] },
      { op_type: 'Bar', input: ['y2'], output: ['z'], name: 'second', domain: 'com.example' },
    ],
  });
  let err: SiftError | null = null;
  try {
    loadOnnxModelFromBuffer(bytes);
  } catch (e) {
    err = e as SiftError;
  }
  expect(err?.code).toBe('E_UNSUPPORTED');
  expect(err?.message).toMatch(/Foo \(node 'first'\)/);
  expect(err?.message).toMatch(/com\.example\.Bar \(node 'second'\)/);
});

test('fuzz: 500 deterministic mutations never crash', () => {
  let s = 12345;
  const rnd = () => {
    s = (s * 1103515245 + 12345) >>> 0;
    return s / 2 ** 32;
  };
  const codes = new Map<string, number>();
  for (let i = 0; i < 500; i++) {
    let b = Buffer.from(good);
    const kind = i % 4;
    if (kind === 0) b = b.subarray(0, Math.floor(rnd() * b.length));
    else if (kind === 1) for (let k = 0; k < 1 + Math.floor(rnd() * 4); k++) b[Math.floor(rnd() * b.length)] = Math.floor(rnd() * 256);
    else if (kind === 2) {
      const at = Math.floor(rnd() * b.length);
      b = Buffer.concat([
        b.subarray(0, at),
        Buffer.from(Array.from({ length: 1 + Math.floor(rnd() * 8) }, () => Math.floor(rnd() * 256))),
        b.subarray(at),
      ]);
    } else b[Math.floor(rnd() * Math.min(b.length, 400))] ^= 1 << Math.floor(rnd() * 8);
    let code = 'ok';
    try {
      const g = loadOnnxModelFromBuffer(b);
      try {
        tidy(() => g.forward({ inputIds: [[1, 2, 3]] }).logits.toArray());
      } catch (e) {
        if (!(e instanceof SiftError)) throw new Error(`mutation ${i}: forward threw ${(e as Error).stack}`);
        code = `run:${e.code}`;
      } finally {
        g.dispose();
      }
    } catch (e) {
      if (!(e instanceof SiftError)) throw new Error(`mutation ${i}: load threw ${(e as Error).stack}`);
      expect(['E_FORMAT', 'E_UNSUPPORTED']).toContain(e.code);
      code = e.code;
    }
    codes.set(code, (codes.get(code) ?? 0) + 1);
  }
  expect(codes.get('E_FORMAT')).toBeGreaterThan(100);
});
