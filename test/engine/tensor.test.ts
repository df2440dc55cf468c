import {
  tensor,
  zeros,
  ones,
  full,
  randn,
  rand,
  arange,
  tidy,
  keep,
  liveTensors,
  SiftError,
  Tensor,
  backends,
  concat,
  split,
} from '../../lib';
import { expectClose } from '../helpers/gradcheck';

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SiftError);
    return (e as SiftError).code;
  }
  return undefined;
}

describe('tensor creation and reading back', () => {
  test('nested arrays infer shape and dtype f32', () => {
    const t = tensor([
      [1, 2, 3],
      [4, 5, 6],
    ]);
    expect(t.shape).toEqual([2, 3]);
    expect(t.dtype).toBe('f32');
    expect(t.device).toBe('cpu');
    expect(Array.from(t.toArray() as Float32Array)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(t.tolist()).toEqual([
      [1, 2, 3],
      [4, 5, 6],
    ]);
    t.dispose();
  });

  test('every dtype round-trips through the native side', () => {
    const vals = [0, 1, -2, 3.5, 65504, -0.25];
    for (const dtype of ['f32', 'f64', 'f16', 'bf16'] as const) {
      const t = tensor(vals, [6], { dtype });
      expect(t.dtype).toBe(dtype);
      const back = Array.from(t.toArray() as Float32Array);
      if (dtype === 'bf16') expectClose(back, vals, { rtol: 1 / 128, atol: 0 });
      else expect(back).toEqual(vals);
      t.dispose();
    }
    const i = tensor([1, -2, 3], [3], { dtype: 'i32' });
    expect(Array.from(i.toArray() as Int32Array)).toEqual([1, -2, 3]);
    const l = tensor([1, -2, 2 ** 40], [3], { dtype: 'i64' });
    expect(Array.from(l.toArray() as BigInt64Array)).toEqual([1n, -2n, 2n ** 40n]);
    const b = tensor([1, 0, 5], [3], { dtype: 'bool' });
    expect(Array.from(b.toArray() as Uint8Array)).toEqual([1, 0, 1]);
    for (const t of [i, l, b]) t.dispose();
  });

  test('f16 and bf16 round to nearest even, with subnormals and overflow', () => {
    const vals = [1 + 2 ** -11, 1 + 3 * 2 ** -11, 2 ** -24, 2 ** -25, 3 * 2 ** -26, 70000, -1e-8];
    const h = tensor(vals, [vals.length], { dtype: 'f16' });
    expect(Array.from(h.toArray() as Float32Array)).toEqual([1, 1 + 2 ** -9, 2 ** -24, 0, 2 ** -24, Infinity, -0]);
    const b = tensor([1 + 2 ** -8, 1 + 3 * 2 ** -8], [2], { dtype: 'bf16' });
    expect(Array.from(b.toArray() as Float32Array)).toEqual([1, 1 + 2 ** -6]);
    h.dispose();
    b.dispose();
  });

  test('typed arrays keep their dtype; casts convert', () => {
    const t = tensor(new Float64Array([1.5, -2.5]));
    expect(t.dtype).toBe('f64');
    const c = t.to('i32');
    expect(Array.from(c.toArray() as Int32Array)).toEqual([1, -2]);
    const f = c.to('f32');
    expect(Array.from(f.toArray() as Float32Array)).toEqual([1, -2]);
    for (const x of [t, c, f]) x.dispose();
  });

  test('zeros, ones, full, arange', () => {
    expect(Array.from(zeros([2, 2]).toArray() as Float32Array)).toEqual([0, 0, 0, 0]);
    expect(Array.from(ones([3], { dtype: 'f64' }).toArray() as Float64Array)).toEqual([1, 1, 1]);
    expect(Array.from(full([2], 7, { dtype: 'i32' }).toArray() as Int32Array)).toEqual([7, 7]);
    expect(Array.from(arange(5).toArray() as BigInt64Array)).toEqual([0n, 1n, 2n, 3n, 4n]);
    expect(Array.from(arange(1, 2, 0.25, { dtype: 'f32' }).toArray() as Float32Array)).toEqual([1, 1.25, 1.5, 1.75]);
  });

  test('randn is seeded, reproducible and standard normal', () => {
    const a = randn([100000], { seed: 42 });
    const b = randn([100000], { seed: 42 });
    const c = randn([100000], { seed: 43 });
    const av = a.toArray() as Float32Array;
    expect(Array.from(av.slice(0, 10))).toEqual(Array.from((b.toArray() as Float32Array).slice(0, 10)));
    expect(av[0]).not.toBe((c.toArray() as Float32Array)[0]);
    let m = 0;
    for (const v of av) m += v;
    m /= av.length;
    let s = 0;
    for (const v of av) s += (v - m) ** 2;
    s = Math.sqrt(s / av.length);
    expect(Math.abs(m)).toBeLessThan(0.02);
    expect(Math.abs(s - 1)).toBeLessThan(0.02);
    const u = rand([1000], { seed: 1 }).toArray() as Float32Array;
    expect(Math.min(...u)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...u)).toBeLessThan(1);
    for (const t of [a, b, c]) t.dispose();
  });

  test('async data() resolves with the values', async () => {
    const t = tensor([1, 2, 3]);
    expect(Array.from((await t.data()) as Float32Array)).toEqual([1, 2, 3]);
    t.dispose();
  });
});

describe('views', () => {
  test('transpose and permute are views; contiguous copies', () => {
    const t = tensor([
      [1, 2, 3],
      [4, 5, 6],
    ]);
    const tt = t.transpose(0, 1);
    expect(tt.shape).toEqual([3, 2]);
    expect(tt.isContiguous).toBe(false);
    expect(Array.from(tt.toArray() as Float32Array)).toEqual([1, 4, 2, 5, 3, 6]);
    const c = tt.contiguous();
    expect(c.isContiguous).toBe(true);
    expect(Array.from(c.toArray() as Float32Array)).toEqual([1, 4, 2, 5, 3, 6]);
    const r = tt.reshape(6);
    expect(Array.from(r.toArray() as Float32Array)).toEqual([1, 4, 2, 5, 3, 6]);
    const p = tensor(
      Array.from({ length: 24 }, (_, i) => i),
      [2, 3, 4],
    ).permute(2, 0, 1);
    expect(p.shape).toEqual([4, 2, 3]);
    expect((p.tolist() as number[][][])[1][1][2]).toBe(1 * 12 + 2 * 4 + 1);
  });

  test('slice, narrow, split, expand, squeeze, unsqueeze, flatten', () => {
    const t = tensor(
      Array.from({ length: 12 }, (_, i) => i),
      [3, 4],
    );
    expect(t.slice(1, 1, 3).tolist()).toEqual([
      [1, 2],
      [5, 6],
      [9, 10],
    ]);
    expect(t.slice(0, -1).tolist()).toEqual([[8, 9, 10, 11]]);
    expect(t.narrow(0, 1, 1).tolist()).toEqual([[4, 5, 6, 7]]);
    const parts = t.split(3, 1);
    expect(parts.map((p) => p.shape)).toEqual([
      [3, 3],
      [3, 1],
    ]);
    expect(parts[1].tolist()).toEqual([[3], [7], [11]]);
    expect(tensor([1, 2]).unsqueeze(0).expand(3, 2).tolist()).toEqual([
      [1, 2],
      [1, 2],
      [1, 2],
    ]);
    expect(tensor([[1], [2]]).squeeze().shape).toEqual([2]);
    expect(t.reshape(3, 2, 2).flatten(1).shape).toEqual([3, 4]);
    expect(t.reshape(-1, 6).shape).toEqual([2, 6]);
  });

  test('concat and split are inverses', () => {
    const a = tensor([
      [1, 2],
      [3, 4],
    ]);
    const b = tensor([[5, 6]]);
    const c = concat([a, b], 0);
    expect(c.tolist()).toEqual([
      [1, 2],
      [3, 4],
      [5, 6],
    ]);
    const [x, y] = split(c, [2, 1], 0);
    expect(x.tolist()).toEqual(a.tolist());
    expect(y.tolist()).toEqual(b.tolist());
    expect(concat([a, a], 1).tolist()).toEqual([
      [1, 2, 1, 2],
      [3, 4, 3, 4],
    ]);
  });
});

describe('memory', () => {
  test('tidy disposes what it created except the result', () => {
    const before = liveTensors().cpu;
    const kept = tidy(() => {
      const a = ones([100]);
      const b = zeros([100]);
      const c = full([10], 3);
      void a;
      void b;
      return c;
    });
    const after = liveTensors().cpu;
    expect(after.count).toBe(before.count + 1);
    expect(after.bytes).toBe(before.bytes + 40);
    kept.dispose();
    expect(liveTensors().cpu.count).toBe(before.count);
  });

  test('keep() lets a tensor outlive its tidy', () => {
    const before = liveTensors().cpu.count;
    let k: Tensor | undefined;
    tidy(() => {
      k = keep(ones([4]));
      ones([4]);
    });
    expect(liveTensors().cpu.count).toBe(before + 1);
    k!.dispose();
    expect(liveTensors().cpu.count).toBe(before);
  });

  test('views share storage: memory is freed with the last view', () => {
    const before = liveTensors().cpu;
    const t = ones([1000]);
    const v = t.reshape(10, 100);
    t.dispose();
    expect(liveTensors().cpu.count).toBe(before.count + 1);
    expect(Array.from(v.toArray() as Float32Array).slice(0, 2)).toEqual([1, 1]);
    v.dispose();
    expect(liveTensors().cpu.bytes).toBe(before.bytes);
  });

  test('using a disposed tensor is E_DISPOSED', () => {
    const t = ones([2]);
    t.dispose();
    expect(code(() => t.toArray())).toBe('E_DISPOSED');
    t.dispose(); // idempotent
  });
});

describe('errors', () => {
  test('bad shapes, dtypes, devices give SiftError codes', () => {
    expect(code(() => tensor([1, 2, 3], [2, 2]))).toBe('E_SHAPE');
    expect(code(() => tensor([1, 2], [2], { dtype: 'f8' }))).toBe('E_DTYPE');
    expect(code(() => tensor([1, 2], [2], { device: 'tpu' }))).toBe('E_DEVICE');
    expect(code(() => ones([2, 3]).reshape(4, 2))).toBe('E_SHAPE');
    expect(code(() => ones([2, 3]).transpose(0, 5))).toBe('E_SHAPE');
    expect(code(() => concat([ones([2, 3]), ones([2, 4])], 0))).toBe('E_SHAPE');
    expect(code(() => concat([ones([2, 3]), ones([2, 3], { dtype: 'f64' })], 0))).toBe('E_DTYPE');
    expect(code(() => ones([2]).item())).toBe('E_SHAPE');
    if (!backends().cuda.usable) expect(code(() => ones([2], { device: 'cuda' }))).toBe('E_DEVICE');
  });

  test('native argument errors name the argument', () => {
    const { native } = require('../../lib/engine/native');
    expect(() => native().full('x', 1, 'f32', 'cpu')).toThrow(/shape/);
    expect(() => native().view(ones([4]).handle, [5], [1], 0)).toThrow(/outside its storage/);
  });
});

describe('backends', () => {
  test('reports CPU and CUDA status', () => {
    const b = backends();
    expect(b.cpu.usable).toBe(true);
    expect(b.cpu.threads).toBeGreaterThanOrEqual(1);
    expect(typeof b.cuda.compiled).toBe('boolean');
    if (!b.cuda.usable) expect(b.cuda.devices).toEqual([]);
  });
});
