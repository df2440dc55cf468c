/**
 * Scaled dot-product attention: forward against the float64 reference (test/helpers/attention-ref.ts: masks,
 * causal bottom-right alignment, KV-cache shapes, grouped-query heads, fully masked rows,
 * dropout with the mask regenerated from the seed in BigInt), gradients by finite differences,
 * argument errors, and CUDA against CPU.
 */
import { tensor, transpose, tidy, SiftError, Tensor, scaledDotProductAttention, AttentionOptions } from '../../lib';
import { native } from '../../lib/engine/native';
import { randomTensor, gradcheck, expectClose, describeCuda, seededValues } from '../helpers/gradcheck';
import { attentionReference, Case, makeInputs as makeCaseInputs, maskTensor, nums } from '../helpers/attention-ref';

const cases: Case[] = [
  { name: 'plain', B: 2, H: 2, Hkv: 2, Tq: 3, Tk: 3, D: 4 },
  { name: 'causal', B: 1, H: 2, Hkv: 2, Tq: 4, Tk: 4, D: 3, causal: true },
  { name: 'causal KV cache (Tq < Tk, bottom-right)', B: 1, H: 2, Hkv: 1, Tq: 2, Tk: 5, D: 3, causal: true },
  { name: 'causal Tq > Tk (first rows see nothing)', B: 1, H: 1, Hkv: 1, Tq: 5, Tk: 3, D: 2, causal: true },
  { name: 'non-causal Tq != Tk', B: 1, H: 1, Hkv: 1, Tq: 2, Tk: 6, D: 5 },
  { name: 'grouped-query', B: 1, H: 4, Hkv: 2, Tq: 3, Tk: 4, D: 2 },
  { name: 'bool padding mask with a fully padded batch', B: 2, H: 2, Hkv: 1, Tq: 2, Tk: 3, D: 3, pad: [1, 0, 1, 0, 0, 0] },
  {
    name: 'additive mask [Tq, Tk] with -inf',
    B: 1,
    H: 2,
    Hkv: 2,
    Tq: 3,
    Tk: 3,
    D: 2,
    add: { data: [0, -Infinity, 0.5, -1, 0, -Infinity, -Infinity, -Infinity, -Infinity], shape: [3, 3] },
  },
  {
    name: 'additive mask [B, 1, 1, Tk] with causal',
    B: 2,
    H: 1,
    Hkv: 1,
    Tq: 3,
    Tk: 3,
    D: 2,
    causal: true,
    add: { data: [0, -2, 0, 0.3, 0, -Infinity], shape: [2, 1, 1, 3] },
  },
  { name: 'dropout', B: 1, H: 2, Hkv: 1, Tq: 3, Tk: 4, D: 3, dropoutP: 0.4 },
  { name: 'dropout + causal + padding', B: 2, H: 1, Hkv: 1, Tq: 3, Tk: 3, D: 2, dropoutP: 0.3, causal: true, pad: [1, 1, 0, 0, 1, 1] },
];

const makeInputs = (c: Case, dtype = 'f64', requiresGrad = false) => makeCaseInputs(c, 1.5, dtype, requiresGrad);

const SEED = 1234;
function optsFor(c: Case, mask: Tensor | null): AttentionOptions {
  return { mask, causal: c.causal, dropoutP: c.dropoutP, seed: SEED };
}

// ---- tests ---------------------------------------------------------------------------------

describe('scaledDotProductAttention forward', () => {
  for (const c of cases) {
    test(`${c.name}: out and lse match the float64 reference`, () =>
      tidy(() => {
        const { q, k, v } = makeInputs(c);
        const mask = maskTensor(c);
        const [oh, lh] = native().attention(
          q.handle,
          k.handle,
          v.handle,
          mask?.handle ?? null,
          !!c.causal,
          1 / Math.sqrt(c.D),
          c.dropoutP ?? 0,
          SEED,
        );
        const out = new Tensor(oh);
        const lse = new Tensor(lh);
        expect(lse.dtype).toBe('f64');
        expect(lse.shape).toEqual([c.B, c.H, c.Tq]);
        const ref = attentionReference(nums(q), nums(k), nums(v), null, [c.B, c.H, c.Tq, c.D], [c.Hkv, c.Tk], {
          causal: c.causal,
          pad: c.pad,
          add: c.add,
          dropoutP: c.dropoutP,
          seed: SEED,
        });
        expectClose(nums(out), ref.out, { atol: 1e-12, rtol: 1e-10, label: 'out' });
        expectClose(nums(lse), ref.lse, { atol: 1e-12, rtol: 1e-10, label: 'lse' });
        for (const x of nums(out)) expect(Number.isNaN(x)).toBe(false);
      }));
  }

  test('fully masked rows give zeros and lse = -inf', () =>
    tidy(() => {
      const c = cases.find((x) => x.name.startsWith('causal Tq > Tk'))!;
      const { q, k, v } = makeInputs(c);
      const [oh, lh] = native().attention(q.handle, k.handle, v.handle, null, true, 0.5, 0, 0);
      const out = nums(new Tensor(oh));
      const lse = nums(new Tensor(lh));
      // query i sees keys j <= i - 2: rows 0 and 1 see nothing
      expect(lse.slice(0, 2)).toEqual([-Infinity, -Infinity]);
      expect(out.slice(0, 2 * c.D)).toEqual(new Array(2 * c.D).fill(0));
      expect(Number.isFinite(lse[2])).toBe(true);
    }));

  test('f32, f16 and bf16 across several query and key blocks, strided inputs', () =>
    tidy(() => {
      const B = 2,
        H = 4,
        Hkv = 2,
        Tq = 70,
        Tk = 133,
        D = 24;
      // q built as [B, T, H, D] and transposed: a non-contiguous view with unit head-dim stride.
      const q64 = randomTensor([B, Tq, H, D], 21, { scale: 1.2 });
      const k64 = randomTensor([B, Tk, Hkv, D], 22, { scale: 1.2 });
      const v64 = randomTensor([B, Hkv, Tk, D], 23);
      const pad = seededValues(B * Tk, 5).map((x) => (x > -0.7 ? 1 : 0));
      const qt = transpose(q64, 1, 2);
      const kt = transpose(k64, 1, 2);
      expect(qt.isContiguous).toBe(false);
      const qd = nums(qt.contiguous());
      const kd = nums(kt.contiguous());
      const ref = attentionReference(qd, kd, nums(v64), null, [B, H, Tq, D], [Hkv, Tk], { causal: true, pad });
      const tol: Record<string, number> = { f64: 1e-12, f32: 2e-5, f16: 2e-2, bf16: 6e-2 };
      for (const dt of ['f64', 'f32', 'f16', 'bf16'] as const) {
        const mask = tensor(pad, [B, Tk], { dtype: 'bool' });
        const out = scaledDotProductAttention(transpose(q64.to(dt), 1, 2), transpose(k64.to(dt), 1, 2), v64.to(dt), { causal: true, mask });
        expect(out.dtype).toBe(dt);
        expectClose(nums(out), ref.out, { atol: tol[dt], rtol: tol[dt], label: dt });
      }
    }));

  test('additive f32 mask on f64 inputs and same-dtype masks agree', () =>
    tidy(() => {
      const c = cases.find((x) => x.name.startsWith('additive mask [Tq'))!;
      const { q, k, v } = makeInputs(c);
      const a = scaledDotProductAttention(q, k, v, { mask: tensor(c.add!.data, c.add!.shape, { dtype: 'f64' }) });
      const b = scaledDotProductAttention(q, k, v, { mask: tensor(c.add!.data, c.add!.shape, { dtype: 'f32' }) });
      expectClose(nums(a), nums(b), { atol: 1e-7, rtol: 1e-6 });
    }));

  test('dropout: deterministic for a seed, differs across seeds, and the expected fraction', () =>
    tidy(() => {
      const B = 1,
        H = 2,
        T = 40,
        D = 4;
      const q = randomTensor([B, H, T, D], 1);
      const k = randomTensor([B, H, T, D], 2);
      const v = tensor(new Array(B * H * T * D).fill(1), [B, H, T, D], { dtype: 'f64' });
      const a = nums(scaledDotProductAttention(q, k, v, { dropoutP: 0.5, seed: 7 }));
      const b = nums(scaledDotProductAttention(q, k, v, { dropoutP: 0.5, seed: 7 }));
      const c = nums(scaledDotProductAttention(q, k, v, { dropoutP: 0.5, seed: 8 }));
      expect(a).toEqual(b);
      expect(a).not.toEqual(c);
      // With v = 1 the output is the kept probability mass / (1 - p): its mean is about 1.
      const mean = a.reduce((s, x) => s + x, 0) / a.length;
      expect(Math.abs(mean - 1)).toBeLessThan(0.1);
    }));
});

describe('scaledDotProductAttention gradients (float64 finite differences)', () => {
  for (const c of cases) {
    test(c.name, () => {
      const { q, k, v } = makeInputs(c, 'f64', true);
      const mask = maskTensor(c);
      gradcheck((a, b, d) => scaledDotProductAttention(a, b, d, optsFor(c, mask)), [q, k, v], { atol: 1e-6, rtol: 1e-5 });
      for (const t of [q, k, v]) for (const x of nums(t.grad!)) expect(Number.isFinite(x)).toBe(true);
      for (const t of [q, k, v, mask]) t?.dispose();
    });
  }

  test('several blocks (Tq = 40, Tk = 70), causal, grouped-query, strided q', () => {
    const q0 = randomTensor([1, 40, 2, 3], 31, { requiresGrad: true });
    const k = randomTensor([1, 1, 70, 3], 32, { requiresGrad: true });
    const v = randomTensor([1, 1, 70, 3], 33, { requiresGrad: true });
    gradcheck((a, b, d) => scaledDotProductAttention(transpose(a, 1, 2), b, d, { causal: true }), [q0, k, v]);
    for (const t of [q0, k, v]) t.dispose();
  });

  test('fully masked rows have zero gradients', () => {
    const c = cases.find((x) => x.name.startsWith('causal Tq > Tk'))!;
    const { q, k, v } = makeInputs(c, 'f64', true);
    tidy(() =>
      scaledDotProductAttention(q, k, v, { causal: true }).backward(
        tensor(new Array(c.Tq * c.D).fill(1), [1, 1, c.Tq, c.D], { dtype: 'f64' }),
      ),
    );
    expect(nums(q.grad!).slice(0, 2 * c.D)).toEqual(new Array(2 * c.D).fill(0));
    for (const t of [q, k, v]) t.dispose();
  });
});

describe('attention argument errors', () => {
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
  const q = () => randomTensor([1, 4, 3, 2], 1);
  const kv = (h = 2, t = 3, d = 2, dtype = 'f64') => randomTensor([1, h, t, d], 2, { dtype });
  test('shapes', () => {
    expect(codeOf(() => scaledDotProductAttention(randomTensor([4, 3, 2], 1), kv(), kv()))).toBe('E_SHAPE');
    expect(codeOf(() => scaledDotProductAttention(q(), kv(3), kv(3)))).toBe('E_SHAPE'); // 4 % 3 != 0
    expect(codeOf(() => scaledDotProductAttention(q(), kv(2, 3, 3), kv(2, 3, 3)))).toBe('E_SHAPE'); // head dim
    expect(codeOf(() => scaledDotProductAttention(q(), kv(2, 3), kv(2, 4)))).toBe('E_SHAPE'); // k vs v
    expect(codeOf(() => native().attention(q().handle, kv().handle, kv().handle, null, false, 1, 0, 0))).toBeUndefined();
  });
  test('masks', () => {
    const bad = [
      tensor([1, 0], [1, 2], { dtype: 'bool' }), // bool must be [B, Tk]
      tensor([1, 0, 1], [3, 1], { dtype: 'bool' }),
      randomTensor([2, 3], 3), // additive must broadcast to [1, 4, 3, 3]
      randomTensor([1, 1, 1, 1, 3], 3),
    ];
    for (const m of bad) expect(codeOf(() => scaledDotProductAttention(q(), kv(), kv(), { mask: m }))).toBe('E_SHAPE');
    expect(codeOf(() => scaledDotProductAttention(q(), kv(), kv(), { mask: tensor([1, 0, 1], [1, 3], { dtype: 'i32' }) }))).toBe('E_DTYPE');
    expect(
      codeOf(() => scaledDotProductAttention(q().to('f32'), kv(2, 3, 2, 'f32'), kv(2, 3, 2, 'f32'), { mask: randomTensor([3, 3], 1) })),
    ).toBe('E_DTYPE');
  });
  test('dtypes and arguments', () => {
    expect(codeOf(() => scaledDotProductAttention(q(), kv(2, 3, 2, 'f32'), kv()))).toBe('E_DTYPE');
    const iq = tensor(new Array(24).fill(1), [1, 4, 3, 2], { dtype: 'i32' });
    expect(codeOf(() => scaledDotProductAttention(iq, kv(2, 3, 2, 'i32'), kv(2, 3, 2, 'i32')))).toBe('E_DTYPE');
    expect(codeOf(() => scaledDotProductAttention(q(), kv(), kv(), { dropoutP: 1 }))).toBe('E_ARG');
    expect(codeOf(() => native().attention(q().handle, kv().handle, kv().handle, null, false, NaN, 0, 0))).toBe('E_ARG');
  });
  test('backward arguments', () => {
    const qq = q(),
      k = kv(),
      v = kv();
    const [o, l] = native().attention(qq.handle, k.handle, v.handle, null, false, 1, 0, 0);
    const out = new Tensor(o),
      lse = new Tensor(l);
    expect(
      codeOf(() => native().attentionBackward(kv().handle, qq.handle, k.handle, v.handle, out.handle, lse.handle, null, false, 1, 0, 0)),
    ).toBe('E_SHAPE');
    expect(
      codeOf(() => native().attentionBackward(out.handle, qq.handle, k.handle, v.handle, out.handle, k.handle, null, false, 1, 0, 0)),
    ).toBe('E_SHAPE');
    expect(
      codeOf(() =>
        native().attentionBackward(out.handle, qq.handle, k.handle, v.handle, out.handle, lse.to('f32').handle, null, false, 1, 0, 0),
      ),
    ).toBe('E_DTYPE');
    for (const t of [qq, k, v, out, lse]) t.dispose();
  });
});

describeCuda('attention CUDA vs CPU', () => {
  const shapes = [
    { B: 2, H: 4, Hkv: 2, Tq: 67, Tk: 67, D: 64 },
    { B: 1, H: 2, Hkv: 1, Tq: 5, Tk: 150, D: 128 }, // KV-cache step
    { B: 1, H: 2, Hkv: 2, Tq: 40, Tk: 33, D: 256 },
    { B: 2, H: 1, Hkv: 1, Tq: 17, Tk: 19, D: 20 },
    { B: 1, H: 3, Hkv: 1, Tq: 70, Tk: 70, D: 96 },
  ];
  const tol: Record<string, number> = { f32: 2e-4, f16: 2e-2, bf16: 6e-2 };
  for (const s of shapes)
    for (const dt of ['f32', 'f16', 'bf16'] as const)
      for (const variant of ['causal+pad', 'additive', 'dropout']) {
        test(`${dt} ${JSON.stringify(s)} ${variant}: forward and backward`, () =>
          tidy(() => {
            const q32 = randomTensor([s.B, s.Tq, s.H, s.D], 41, { dtype: 'f32', scale: 1.5 });
            const k32 = randomTensor([s.B, s.Hkv, s.Tk, s.D], 42, { dtype: 'f32', scale: 1.5 });
            const v32 = randomTensor([s.B, s.Hkv, s.Tk, s.D], 43, { dtype: 'f32' });
            const g32 = randomTensor([s.B, s.H, s.Tq, s.D], 44, { dtype: 'f32' });
            const pad = seededValues(s.B * s.Tk, 9).map((x) => (x > -0.6 ? 1 : 0));
            const addm = seededValues(s.Tq * s.Tk, 10).map((x) => (x < -0.8 ? -Infinity : x));
            const run = (device: string) => {
              // Same rounded inputs on both devices: cast on the CPU first.
              const q = transpose(q32.to(dt).to(device), 1, 2);
              const k = k32.to(dt).to(device),
                v = v32.to(dt).to(device),
                g = g32.to(dt).to(device);
              let mask: Tensor | null = null;
              if (variant === 'causal+pad') mask = tensor(pad, [s.B, s.Tk], { dtype: 'bool', device });
              if (variant === 'additive') mask = tensor(addm, [1, 1, s.Tq, s.Tk], { dtype: 'f32', device });
              const causal = variant !== 'additive';
              const p = variant === 'dropout' ? 0.25 : 0;
              const [oh, lh] = native().attention(q.handle, k.handle, v.handle, mask?.handle ?? null, causal, 0.125, p, 99);
              const [gq, gk, gv] = native().attentionBackward(
                g.handle,
                q.handle,
                k.handle,
                v.handle,
                oh,
                lh,
                mask?.handle ?? null,
                causal,
                0.125,
                p,
                99,
              );
              return [oh, lh, gq, gk, gv].map((h) => nums(new Tensor(h).to('cpu').to('f32')));
            };
            const cpu = run('cpu');
            const gpu = run('cuda');
            const names = ['out', 'lse', 'gq', 'gk', 'gv'];
            cpu.forEach((c, i) => {
              const scaleMax = Math.max(1, ...c.filter(Number.isFinite).map(Math.abs));
              expectClose(gpu[i], c, { atol: tol[dt] * scaleMax, rtol: tol[dt], label: `${dt} ${names[i]}` });
            });
          }));
      }

  // The tensor-core kernels (f16/bf16, head dim % 16 == 0, <= 128, sm_80+) against the CUDA-core
  // kernels and the CPU at training shapes: several 64-query and 64-key tiles, a ragged last tile,
  // GPT-2's head dim 64 and LLaMA-style 128, GQA, causal with dropout and a padding mask.
  const tcShapes = [
    { B: 2, H: 4, Hkv: 4, T: 200, D: 64, causal: true, p: 0.1, pad: false },
    { B: 1, H: 4, Hkv: 2, T: 130, D: 128, causal: true, p: 0, pad: true },
    { B: 2, H: 2, Hkv: 1, T: 96, D: 48, causal: false, p: 0, pad: true },
  ];
  for (const s of tcShapes)
    for (const dt of ['bf16', 'f16'] as const) {
      test(`tensor-core kernels agree with the CUDA-core kernels and the CPU: ${dt} ${JSON.stringify(s)}`, () =>
        tidy(() => {
          const q32 = randomTensor([s.B, s.H, s.T, s.D], 51, { dtype: 'f32', scale: 1.5 });
          const k32 = randomTensor([s.B, s.Hkv, s.T, s.D], 52, { dtype: 'f32', scale: 1.5 });
          const v32 = randomTensor([s.B, s.Hkv, s.T, s.D], 53, { dtype: 'f32' });
          const g32 = randomTensor([s.B, s.H, s.T, s.D], 54, { dtype: 'f32' });
          const pad = seededValues(s.B * s.T, 11).map((x) => (x > -0.7 ? 1 : 0));
          const run = (device: string, mode: 'auto' | 'simt') => {
            const prev = native().setCudaAttention(mode);
            try {
              const [q, k, v, g] = [q32, k32, v32, g32].map((t) => t.to(dt).to(device));
              const mask = s.pad ? tensor(pad, [s.B, s.T], { dtype: 'bool', device }) : null;
              const scale = 1 / Math.sqrt(s.D);
              const [oh, lh] = native().attention(q.handle, k.handle, v.handle, mask?.handle ?? null, s.causal, scale, s.p, 7);
              const [gq, gk, gv] = native().attentionBackward(
                g.handle,
                q.handle,
                k.handle,
                v.handle,
                oh,
                lh,
                mask?.handle ?? null,
                s.causal,
                scale,
                s.p,
                7,
              );
              return [oh, lh, gq, gk, gv].map((h) => nums(new Tensor(h).to('cpu').to('f32')));
            } finally {
              native().setCudaAttention(prev);
            }
          };
          const cpu = run('cpu', 'auto');
          const simt = run('cuda', 'simt');
          const tc = run('cuda', 'auto');
          const names = ['out', 'lse', 'gq', 'gk', 'gv'];
          const tol = dt === 'bf16' ? 6e-2 : 2e-2;
          cpu.forEach((c, i) => {
            const scaleMax = Math.max(1, ...c.filter(Number.isFinite).map(Math.abs));
            expectClose(tc[i], c, { atol: tol * scaleMax, rtol: tol, label: `tensor cores vs cpu ${dt} ${names[i]}` });
            expectClose(tc[i], simt[i], { atol: tol * scaleMax, rtol: tol, label: `tensor cores vs cuda cores ${dt} ${names[i]}` });
          });
          // Both CUDA paths are deterministic: a second run gives the same bits.
          const again = run('cuda', 'auto');
          again.forEach((a, i) => expect(a).toEqual(tc[i]));
        }));
    }

  test('dropout masks are identical on both devices', () =>
    tidy(() => {
      // v = identity-like ones: an output is 0 exactly where every kept weight was dropped; compare
      // f32 outputs with a tight tolerance, which only holds when the same entries are dropped.
      const q = randomTensor([1, 2, 33, 8], 1, { dtype: 'f32' });
      const k = randomTensor([1, 2, 65, 8], 2, { dtype: 'f32' });
      const v = randomTensor([1, 2, 65, 8], 3, { dtype: 'f32' });
      const a = scaledDotProductAttention(q, k, v, { dropoutP: 0.5, seed: 5 });
      const b = scaledDotProductAttention(q.to('cuda'), k.to('cuda'), v.to('cuda'), { dropoutP: 0.5, seed: 5 });
      expectClose(nums(b.to('cpu')), nums(a), { atol: 1e-5, rtol: 1e-5 });
    }));

  test('f64 on CUDA matches the CPU and head dims over 256 are refused', () =>
    tidy(() => {
      const q = randomTensor([1, 2, 9, 16], 1),
        k = randomTensor([1, 1, 12, 16], 2),
        v = randomTensor([1, 1, 12, 16], 3);
      const a = scaledDotProductAttention(q, k, v, { causal: true });
      const b = scaledDotProductAttention(q.to('cuda'), k.to('cuda'), v.to('cuda'), { causal: true });
      expectClose(nums(b.to('cpu')), nums(a), { atol: 1e-12, rtol: 1e-10 });
      const big = randomTensor([1, 1, 2, 264], 1, { dtype: 'f32', device: 'cuda' });
      expect(() => scaledDotProductAttention(big, big, big)).toThrow(SiftError);
    }));
});

describe('setCudaAttention', () => {
  test('takes auto or simt, returns the previous mode, refuses anything else with E_ARG', () => {
    const prev = native().setCudaAttention('simt');
    expect(['auto', 'simt']).toContain(prev);
    expect(native().setCudaAttention('auto')).toBe('simt');
    expect(native().setCudaAttention(prev)).toBe('auto');
    let code = '';
    try {
      native().setCudaAttention('tensor' as 'auto');
    } catch (e) {
      code = (e as SiftError).code;
    }
    expect(code).toBe('E_ARG');
  });
});
