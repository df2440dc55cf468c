/**
 * Attention logit soft-capping and the sliding window: forward (out, lse) and backward (dq, dk,
 * dv) against a float64 reference in plain loops (transformers' eager order: scores * scale, then
 * softcap * tanh(. / softcap), then the mask, softmax, dropout), with padding and additive masks,
 * grouped-query heads, windows smaller than, equal to and larger than the sequence, KV-cache
 * offsets (Tq < Tk), several tiles, every float dtype, finite differences, argument errors, and
 * the CUDA kernels (CUDA cores and tensor cores) against the CPU.
 */
import { tensor, transpose, tidy, SiftError, Tensor, scaledDotProductAttention, AttentionOptions } from '../../lib';
import { native } from '../../lib/engine/native';
import { randomTensor, gradcheck, expectClose, describeCuda, seededValues } from '../helpers/gradcheck';
import { attentionReference, Case, makeInputs as makeCaseInputs, maskTensor, nums, RefOpts, visible } from '../helpers/attention-ref';

const cases: Case[] = [
  { name: 'window smaller than the sequence', B: 1, H: 2, Hkv: 2, Tq: 7, Tk: 7, D: 3, causal: true, window: 3 },
  { name: 'window 1 (each query sees only itself)', B: 1, H: 1, Hkv: 1, Tq: 5, Tk: 5, D: 2, causal: true, window: 1 },
  { name: 'window equal to the sequence', B: 1, H: 2, Hkv: 1, Tq: 6, Tk: 6, D: 3, causal: true, window: 6 },
  { name: 'window larger than the sequence', B: 2, H: 1, Hkv: 1, Tq: 4, Tk: 4, D: 2, causal: true, window: 20 },
  { name: 'window with a KV cache (Tq < Tk)', B: 1, H: 2, Hkv: 1, Tq: 3, Tk: 9, D: 3, causal: true, window: 4 },
  { name: 'window with Tq > Tk (first rows see nothing)', B: 1, H: 1, Hkv: 1, Tq: 6, Tk: 4, D: 2, causal: true, window: 2 },
  {
    name: 'window, grouped-query, padding mask',
    B: 2,
    H: 4,
    Hkv: 2,
    Tq: 6,
    Tk: 6,
    D: 2,
    causal: true,
    window: 3,
    pad: [1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1],
  },
  {
    name: 'window and an additive [B, 1, 1, Tk] mask',
    B: 2,
    H: 1,
    Hkv: 1,
    Tq: 5,
    Tk: 5,
    D: 2,
    causal: true,
    window: 2,
    add: { data: [0, -1, 0.5, 0, 0.25, 0, 0, -Infinity, 0.3, 0], shape: [2, 1, 1, 5] },
  },
  { name: 'softcap alone', B: 1, H: 2, Hkv: 2, Tq: 4, Tk: 5, D: 3, softcap: 1.5 },
  {
    name: 'softcap with causal and padding',
    B: 2,
    H: 2,
    Hkv: 1,
    Tq: 4,
    Tk: 4,
    D: 3,
    causal: true,
    softcap: 2,
    pad: [1, 1, 1, 0, 0, 1, 1, 1],
  },
  {
    name: 'softcap with an additive mask [Tq, Tk]',
    B: 1,
    H: 1,
    Hkv: 1,
    Tq: 3,
    Tk: 3,
    D: 2,
    softcap: 0.8,
    add: { data: [0, -Infinity, 0.5, -1, 0, 0.2, 0.1, -0.3, 0], shape: [3, 3] },
  },
  { name: 'softcap and window, grouped-query', B: 1, H: 4, Hkv: 1, Tq: 8, Tk: 8, D: 3, causal: true, softcap: 1.2, window: 3 },
  { name: 'softcap and window with a KV cache', B: 1, H: 2, Hkv: 2, Tq: 2, Tk: 7, D: 2, causal: true, softcap: 3, window: 5 },
  { name: 'dropout with softcap and window', B: 1, H: 2, Hkv: 1, Tq: 6, Tk: 6, D: 3, causal: true, softcap: 1.5, window: 4, dropoutP: 0.3 },
];

const makeInputs = (c: Case, dtype = 'f64', requiresGrad = false) => makeCaseInputs(c, 2, dtype, requiresGrad);

const SEED = 4321;
const optsFor = (c: Case, mask: Tensor | null): AttentionOptions => ({
  mask,
  causal: c.causal,
  softcap: c.softcap,
  window: c.window,
  dropoutP: c.dropoutP,
  seed: SEED,
});
const refOpts = (c: Case): RefOpts => ({
  causal: c.causal,
  softcap: c.softcap,
  window: c.window,
  pad: c.pad,
  add: c.add,
  dropoutP: c.dropoutP,
  seed: SEED,
});

// ---- CPU -----------------------------------------------------------------------------------

describe('attention soft-capping and sliding window against the float64 reference', () => {
  for (const c of cases) {
    test(`${c.name}: out, lse, dq, dk, dv`, () => {
      const { q, k, v } = makeInputs(c, 'f64', true);
      const mask = maskTensor(c);
      const g = randomTensor([c.B, c.H, c.Tq, c.D], 14);
      const ref = attentionReference(nums(q), nums(k), nums(v), nums(g), [c.B, c.H, c.Tq, c.D], [c.Hkv, c.Tk], refOpts(c));
      tidy(() => {
        const [oh, lh] = native().attention(
          q.handle,
          k.handle,
          v.handle,
          mask?.handle ?? null,
          !!c.causal,
          1 / Math.sqrt(c.D),
          c.dropoutP ?? 0,
          SEED,
          c.softcap ?? 0,
          c.window ?? 0,
        );
        expectClose(nums(new Tensor(oh)), ref.out, { atol: 1e-12, rtol: 1e-10, label: 'out' });
        expectClose(nums(new Tensor(lh)), ref.lse, { atol: 1e-12, rtol: 1e-10, label: 'lse' });
        scaledDotProductAttention(q, k, v, optsFor(c, mask)).backward(g);
      });
      expectClose(nums(q.grad!), ref.gq, { atol: 1e-12, rtol: 1e-10, label: 'dq' });
      expectClose(nums(k.grad!), ref.gk, { atol: 1e-12, rtol: 1e-10, label: 'dk' });
      expectClose(nums(v.grad!), ref.gv, { atol: 1e-12, rtol: 1e-10, label: 'dv' });
      for (const t of [q, k, v, g, mask]) t?.dispose();
    });
  }

  test('the reference masks what transformers masks: window 3 over 5 tokens', () => {
    const rows: string[] = [];
    for (let i = 0; i < 5; i++) {
      let r = '';
      for (let j = 0; j < 5; j++) r += visible(i, j, 5, 5, { causal: true, window: 3 }) ? '1' : '0';
      rows.push(r);
    }
    expect(rows).toEqual(['10000', '11000', '11100', '01110', '00111']);
  });

  test('a window at least the key count equals plain causal attention, bit for bit (with dropout)', () =>
    tidy(() => {
      const q = randomTensor([1, 2, 40, 8], 1),
        k = randomTensor([1, 2, 90, 8], 2),
        v = randomTensor([1, 2, 90, 8], 3);
      const plain = nums(scaledDotProductAttention(q, k, v, { causal: true, dropoutP: 0.2, seed: 9 }));
      for (const window of [90, 91, 1000]) {
        expect(nums(scaledDotProductAttention(q, k, v, { causal: true, window, dropoutP: 0.2, seed: 9 }))).toEqual(plain);
      }
      // softcap 0 and window 0 are off: identical to leaving them out
      expect(nums(scaledDotProductAttention(q, k, v, { causal: true, window: 0, softcap: 0, dropoutP: 0.2, seed: 9 }))).toEqual(plain);
    }));

  test('several query and key tiles (tiles outside the window skipped): f64, f32, f16, bf16, strided q', () => {
    // Tq = Tk = 150 and a KV-cache step 70 x 200: windows that start and end inside tiles of 32
    // queries and 64 keys, so whole tiles fall outside the window.
    for (const s of [
      { Tq: 150, Tk: 150, window: 40, softcap: 0 },
      { Tq: 70, Tk: 200, window: 50, softcap: 2.5 },
      { Tq: 150, Tk: 150, window: 130, softcap: 1 },
    ]) {
      const B = 1,
        H = 2,
        Hkv = 1,
        D = 16;
      const q64 = randomTensor([B, s.Tq, H, D], 21, { scale: 1.5 });
      const k64 = randomTensor([B, Hkv, s.Tk, D], 22, { scale: 1.5 });
      const v64 = randomTensor([B, Hkv, s.Tk, D], 23);
      const g64 = randomTensor([B, H, s.Tq, D], 24);
      const pad = seededValues(B * s.Tk, 5).map((x) => (x > -0.8 ? 1 : 0));
      const o: RefOpts = { causal: true, window: s.window, softcap: s.softcap, pad };
      const ref = attentionReference(
        nums(transpose(q64, 1, 2).contiguous()),
        nums(k64),
        nums(v64),
        nums(g64),
        [B, H, s.Tq, D],
        [Hkv, s.Tk],
        o,
      );
      const tol: Record<string, number> = { f64: 1e-11, f32: 2e-5, f16: 2e-2, bf16: 6e-2 };
      for (const dt of ['f64', 'f32', 'f16', 'bf16'] as const) {
        const q = q64.to(dt),
          k = k64.to(dt),
          v = v64.to(dt);
        for (const t of [q, k, v]) t.requiresGrad = true;
        tidy(() => {
          const mask = tensor(pad, [B, s.Tk], { dtype: 'bool' });
          const out = scaledDotProductAttention(transpose(q, 1, 2), k, v, { causal: true, window: s.window, softcap: s.softcap, mask });
          expect(out.dtype).toBe(dt);
          const label = `${dt} ${JSON.stringify(s)}`;
          expectClose(nums(out), ref.out, { atol: tol[dt], rtol: tol[dt], label: `${label} out` });
          out.backward(g64.to(dt));
        });
        const gmax = (a: number[]) => Math.max(1, ...a.map(Math.abs));
        expectClose(nums(transpose(q.grad!, 1, 2).contiguous()), ref.gq, {
          atol: tol[dt] * gmax(ref.gq),
          rtol: tol[dt],
          label: `${dt} dq`,
        });
        expectClose(nums(k.grad!), ref.gk, { atol: tol[dt] * gmax(ref.gk), rtol: tol[dt], label: `${dt} dk` });
        expectClose(nums(v.grad!), ref.gv, { atol: tol[dt] * gmax(ref.gv), rtol: tol[dt], label: `${dt} dv` });
        for (const t of [q, k, v]) t.dispose();
      }
      for (const t of [q64, k64, v64, g64]) t.dispose();
    }
  });

  for (const c of cases.filter((x) => !x.dropoutP && !x.pad).slice(0, 6)) {
    test(`finite differences: ${c.name}`, () => {
      const { q, k, v } = makeInputs(c, 'f64', true);
      const mask = maskTensor(c);
      gradcheck((a, b, d) => scaledDotProductAttention(a, b, d, optsFor(c, mask)), [q, k, v], { atol: 1e-6, rtol: 1e-5 });
      for (const t of [q, k, v, mask]) t?.dispose();
    });
  }
});

describe('softcap and window argument errors', () => {
  const codeOf = (fn: () => unknown): string | undefined => {
    try {
      tidy(() => {
        fn();
      });
    } catch (e) {
      expect(e).toBeInstanceOf(SiftError);
      return (e as SiftError).code;
    }
    return undefined;
  };
  const q = () => randomTensor([1, 2, 3, 2], 1);
  const kv = () => randomTensor([1, 2, 3, 2], 2);
  test('softcap must be finite and >= 0', () => {
    for (const softcap of [-1, NaN, Infinity]) {
      expect(codeOf(() => scaledDotProductAttention(q(), kv(), kv(), { softcap }))).toBe('E_ARG');
      expect(codeOf(() => native().attention(q().handle, kv().handle, kv().handle, null, false, 1, 0, 0, softcap, 0))).toBe('E_ARG');
    }
  });
  test('window must be an integer >= 0 and needs causal', () => {
    for (const window of [-1, 1.5, NaN, Infinity]) {
      expect(codeOf(() => scaledDotProductAttention(q(), kv(), kv(), { causal: true, window }))).toBe('E_ARG');
      expect(codeOf(() => native().attention(q().handle, kv().handle, kv().handle, null, true, 1, 0, 0, 0, window))).toBe('E_ARG');
    }
    expect(codeOf(() => scaledDotProductAttention(q(), kv(), kv(), { window: 2 }))).toBe('E_ARG');
    expect(codeOf(() => native().attention(q().handle, kv().handle, kv().handle, null, false, 1, 0, 0, 0, 2))).toBe('E_ARG');
    expect(codeOf(() => scaledDotProductAttention(q(), kv(), kv(), { causal: true, window: 2, softcap: 30 }))).toBeUndefined();
  });
  test('the backward checks them too', () => {
    const qq = q(),
      k = kv(),
      v = kv();
    const [o, l] = native().attention(qq.handle, k.handle, v.handle, null, true, 1, 0, 0, 1, 2);
    const out = new Tensor(o),
      lse = new Tensor(l);
    expect(
      codeOf(() =>
        native().attentionBackward(out.handle, qq.handle, k.handle, v.handle, out.handle, lse.handle, null, true, 1, 0, 0, -1, 2),
      ),
    ).toBe('E_ARG');
    expect(
      codeOf(() =>
        native().attentionBackward(out.handle, qq.handle, k.handle, v.handle, out.handle, lse.handle, null, false, 1, 0, 0, 1, 2),
      ),
    ).toBe('E_ARG');
    for (const t of [qq, k, v, out, lse]) t.dispose();
  });
});

// ---- CUDA ----------------------------------------------------------------------------------

describeCuda('attention softcap and window: CUDA vs CPU', () => {
  type Mode = 'auto' | 'simt';
  interface GpuCase {
    B: number;
    H: number;
    Hkv: number;
    Tq: number;
    Tk: number;
    D: number;
    window: number;
    softcap: number;
    pad: boolean;
    p: number;
  }
  const run = (s: GpuCase, dt: string, device: string, mode: Mode) => {
    const prev = native().setCudaAttention(mode);
    try {
      const q32 = randomTensor([s.B, s.Tq, s.H, s.D], 61, { dtype: 'f32', scale: 2 });
      const k32 = randomTensor([s.B, s.Hkv, s.Tk, s.D], 62, { dtype: 'f32', scale: 2 });
      const v32 = randomTensor([s.B, s.Hkv, s.Tk, s.D], 63, { dtype: 'f32' });
      const g32 = randomTensor([s.B, s.H, s.Tq, s.D], 64, { dtype: 'f32' });
      const pad = seededValues(s.B * s.Tk, 12).map((x) => (x > -0.7 ? 1 : 0));
      const q = transpose(q32.to(dt).to(device), 1, 2);
      const [k, v, g] = [k32, v32, g32].map((t) => t.to(dt).to(device));
      const mask = s.pad ? tensor(pad, [s.B, s.Tk], { dtype: 'bool', device }) : null;
      const scale = 1 / Math.sqrt(s.D);
      const [oh, lh] = native().attention(q.handle, k.handle, v.handle, mask?.handle ?? null, true, scale, s.p, 17, s.softcap, s.window);
      const [gq, gk, gv] = native().attentionBackward(
        g.handle,
        q.handle,
        k.handle,
        v.handle,
        oh,
        lh,
        mask?.handle ?? null,
        true,
        scale,
        s.p,
        17,
        s.softcap,
        s.window,
      );
      return [oh, lh, gq, gk, gv].map((h) => nums(new Tensor(h).to('cpu').to('f32')));
    } finally {
      native().setCudaAttention(prev);
    }
  };
  const compare = (a: number[][], b: number[][], tol: number, label: string) => {
    const names = ['out', 'lse', 'gq', 'gk', 'gv'];
    b.forEach((c, i) => {
      const scaleMax = Math.max(1, ...c.filter(Number.isFinite).map(Math.abs));
      expectClose(a[i], c, { atol: tol * scaleMax, rtol: tol, label: `${label} ${names[i]}` });
    });
  };

  // CUDA-core kernels: every dtype and head dim (f32 with D = 20 and 256 never takes tensor cores).
  const simtCases: GpuCase[] = [
    { B: 2, H: 4, Hkv: 2, Tq: 150, Tk: 150, D: 64, window: 40, softcap: 0, pad: true, p: 0 },
    { B: 1, H: 2, Hkv: 1, Tq: 5, Tk: 300, D: 128, window: 100, softcap: 3, pad: false, p: 0 },
    { B: 1, H: 2, Hkv: 2, Tq: 70, Tk: 70, D: 256, window: 16, softcap: 2, pad: false, p: 0.2 },
    { B: 2, H: 1, Hkv: 1, Tq: 33, Tk: 41, D: 20, window: 1000, softcap: 1.5, pad: true, p: 0 },
  ];
  for (const s of simtCases)
    for (const dt of ['f32', 'f16', 'bf16'] as const) {
      test(`CUDA cores ${dt} ${JSON.stringify(s)}`, () =>
        tidy(() => {
          const tol = { f32: 2e-4, f16: 2e-2, bf16: 6e-2 }[dt];
          compare(run(s, dt, 'cuda', 'simt'), run(s, dt, 'cpu', 'auto'), tol, `simt ${dt}`);
        }));
    }

  test('f64 on CUDA matches the CPU with softcap and window', () =>
    tidy(() => {
      const s: GpuCase = { B: 1, H: 2, Hkv: 1, Tq: 40, Tk: 90, D: 16, window: 20, softcap: 2, pad: true, p: 0 };
      compare(run(s, 'f64', 'cuda', 'simt'), run(s, 'f64', 'cpu', 'auto'), 1e-10, 'f64');
    }));

  // Tensor-core kernels (f16/bf16, head dim % 16 == 0, <= 128): windows that start inside a tile
  // and skip whole 64-key tiles, GQA, padding, dropout, soft-capping.
  const tcCases: GpuCase[] = [
    { B: 2, H: 4, Hkv: 4, Tq: 260, Tk: 260, D: 64, window: 70, softcap: 0, pad: false, p: 0.1 },
    { B: 1, H: 4, Hkv: 2, Tq: 200, Tk: 200, D: 128, window: 50, softcap: 2.5, pad: true, p: 0 },
    { B: 2, H: 2, Hkv: 1, Tq: 96, Tk: 96, D: 48, window: 0, softcap: 1.5, pad: true, p: 0 },
    { B: 1, H: 2, Hkv: 1, Tq: 7, Tk: 333, D: 64, window: 129, softcap: 5, pad: false, p: 0 },
  ];
  for (const s of tcCases)
    for (const dt of ['bf16', 'f16'] as const) {
      test(`tensor-core kernels with softcap/window agree with the CUDA-core kernels and the CPU: ${dt} ${JSON.stringify(s)}`, () =>
        tidy(() => {
          const tol = dt === 'bf16' ? 6e-2 : 2e-2;
          const cpu = run(s, dt, 'cpu', 'auto');
          const simt = run(s, dt, 'cuda', 'simt');
          const tc = run(s, dt, 'cuda', 'auto');
          compare(tc, cpu, tol, `tensor cores vs cpu ${dt}`);
          compare(tc, simt, tol, `tensor cores vs cuda cores ${dt}`);
          const again = run(s, dt, 'cuda', 'auto');
          again.forEach((a, i) => expect(a).toEqual(tc[i]));
        }));
    }
});
