import {
  tensor,
  ones,
  tidy,
  noGrad,
  liveTensors,
  SiftError,
  concat,
  split,
  linear,
  crossEntropy,
  layerNorm,
  keep,
  randn,
  zeros,
  embedding,
} from '../../lib';
import { gradcheck, randomTensor } from '../helpers/gradcheck';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return (e as SiftError).code;
  }
  return undefined;
}

describe('autograd tape', () => {
  test('gradients through views: reshape, transpose, permute, slice, expand, concat, split', () => {
    const x = randomTensor([2, 3, 4], 1, { requiresGrad: true });
    gradcheck((a) => a.reshape(6, 4).transpose(0, 1).slice(0, 1, 3), [x]);
    gradcheck((a) => a.permute(2, 0, 1).contiguous(), [x]);
    gradcheck((a) => a.slice(2, 1).unsqueeze(0).expand(3, 2, 3, 3), [x]);
    gradcheck(
      (a) => {
        const [p, q] = split(a, [1, 2], 1);
        return concat([q, p], 1);
      },
      [x],
    );
    gradcheck((a) => split(a, 3, 2)[1], [x]); // only one output of split is used
    x.dispose();
  });

  test('releaseData frees an activation during the forward and gradients still flow through it', () => {
    tidy(() => {
      const w = randomTensor([64, 64], 2, { requiresGrad: true });
      const x = randomTensor([128, 64], 3);
      const run = (release: boolean) => {
        w.zeroGrad();
        let peak = 0;
        const loss = tidy(() => {
          const a = x.matmul(w); // matmul's backward reads x and w, not a
          const b = a.add(1); // add reads neither input
          if (release) a.releaseData();
          const bytes = liveTensors().cpu.bytes;
          const c = b.mul(b); // mul saves b
          peak = Math.max(peak, bytes);
          const l = c.sum();
          l.backward();
          return keep(l.detach());
        });
        const g = Array.from(w.grad!.toArray() as Float64Array);
        loss.dispose();
        return { g, peak };
      };
      const kept = run(false);
      const freed = run(true);
      expect(freed.g).toEqual(kept.g); // the same gradients, bit for bit
      expect(kept.peak - freed.peak).toBe(128 * 64 * 8); // a's f64 buffer was gone
      const t = x.add(1);
      t.releaseData();
      expect(t.isDisposed).toBe(true);
      expect(t.shape).toEqual([128, 64]); // metadata stays readable
      expect(codeOf(() => t.toArray())).toBe('E_DISPOSED');
      t.releaseData(); // a no-op the second time
    });
  });

  test('a tensor used on several paths accumulates its gradient', () => {
    const x = tensor([1, 2, 3], [3], { dtype: 'f64', requiresGrad: true });
    // y = x*x + x  ->  dy/dx = 2x + 1
    tidy(() => x.mul(x).add(x).sum().backward());
    expect(Array.from(x.grad!.toArray() as Float64Array)).toEqual([3, 5, 7]);
    // A second backward adds into .grad (gradient accumulation).
    tidy(() => x.sum().backward());
    expect(Array.from(x.grad!.toArray() as Float64Array)).toEqual([4, 6, 8]);
    x.zeroGrad();
    expect(x.grad).toBeNull();
    x.dispose();
  });

  test('noGrad records nothing; requiresGrad propagates', () => {
    const x = ones([2], { requiresGrad: true });
    const y = noGrad(() => x.mul(2));
    expect(y.requiresGrad).toBe(false);
    expect(y.gradFn).toBeNull();
    const z = x.mul(2);
    expect(z.requiresGrad).toBe(true);
    expect(z.gradFn).not.toBeNull();
    expect(codeOf(() => y.sum().backward())).toBe('E_AUTOGRAD');
    expect(codeOf(() => z.backward())).toBe('E_SHAPE'); // not a scalar and no seed
    for (const t of [x, y, z]) t.dispose();
  });

  test('backward twice through a freed graph is an error unless retainGraph', () => {
    const x = ones([2], { requiresGrad: true });
    const y = x.mul(3).sum();
    y.backward();
    expect(codeOf(() => y.backward())).toBe('E_AUTOGRAD');
    const z = x.mul(3).sum();
    require('../../lib').backward(z, undefined, { retainGraph: true });
    z.backward();
    expect(Array.from(x.grad!.toArray() as Float32Array)).toEqual([9, 9]);
    x.dispose();
  });

  test('hooks run once per parameter when its gradient is complete, and may replace or drop it', () => {
    const w1 = tensor(
      [
        [1, 2],
        [3, 4],
      ],
      undefined,
      { dtype: 'f64', requiresGrad: true },
    );
    const w2 = tensor(
      [
        [1, 0],
        [0, 1],
      ],
      undefined,
      { dtype: 'f64', requiresGrad: true },
    );
    const x = tensor([[1, 1]], undefined, { dtype: 'f64' });
    const events: string[] = [];
    w1.registerGradHook((g) => {
      events.push(`w1:${Array.from(g.toArray() as Float64Array).join(',')}`);
      return null; // drop
    });
    w2.registerGradHook((g) => {
      events.push('w2');
      return g.mul(10); // replace
    });
    // w2 is used twice: its hook must run once, after both uses.
    tidy(() =>
      linear(linear(linear(x, w2), w1), w2)
        .sum()
        .backward(),
    );
    // w1's gradient completes first; w2's only after its second (inner) use.
    expect(events).toEqual(['w1:1,1,1,1', 'w2']);
    expect(w1.grad).toBeNull();
    expect(Array.from(w2.grad!.toArray() as Float64Array)).toEqual([70, 110, 90, 130]);
    for (const t of [w1, w2, x]) t.dispose();
  });

  test('post-accumulate hooks run once per backward, after .grad holds the sum or a hook took the gradient', () => {
    const w = tensor([[2]], undefined, { dtype: 'f64', requiresGrad: true });
    const v = tensor([[3]], undefined, { dtype: 'f64', requiresGrad: true });
    const x = tensor([[1]], undefined, { dtype: 'f64' });
    const seen: string[] = [];
    v.registerGradHook(() => null);
    const removeW = w.registerPostAccumulateGradHook((p) => seen.push(`w:${(p.grad!.toArray() as Float64Array)[0]}`));
    v.registerPostAccumulateGradHook((p) => seen.push(`v:${p.grad === null}`));
    // d/dw of (x w) w v = 2 x w v = 12 at the first backward, accumulated to 24 at the second.
    for (let i = 0; i < 2; i++)
      tidy(() =>
        linear(linear(linear(x, w), w), v)
          .sum()
          .backward(),
      );
    expect(seen).toEqual(['v:true', 'w:12', 'v:true', 'w:24']);
    removeW();
    tidy(() => linear(x, w).sum().backward());
    expect(seen.length).toBe(4);
    for (const t of [w, v, x]) t.dispose();
  });

  test('dense gradients never pile up: a hook that frees them keeps at most one alive', () => {
    // 12 "layers" of 64x64 weights; each hook records live bytes and drops the gradient.
    const layers = Array.from({ length: 12 }, (_, i) =>
      keep(randn([64, 64], { seed: i, requiresGrad: true }).mul(0.1).detach().requiresGrad_()),
    );
    const gradBytes = 64 * 64 * 4;
    let peakExtra = 0;
    let baseline = 0;
    for (const w of layers) {
      w.registerGradHook(() => {
        const live = liveTensors().cpu.bytes;
        peakExtra = Math.max(peakExtra, live - baseline);
        return null;
      });
    }
    tidy(() => {
      let h = randn([8, 64], { seed: 99 });
      for (const w of layers) h = linear(h, w).tanh();
      const loss = h.sum();
      baseline = liveTensors().cpu.bytes; // activations are alive here; gradients are not yet
      loss.backward();
    });
    // While backward runs, activations are freed and transient activation-sized gradients exist; the
    // weight gradients themselves never accumulate: at most one (plus activation grads) above baseline.
    expect(peakExtra).toBeLessThan(2 * gradBytes + 8 * 64 * 4 * 4);
    for (const w of layers) expect(w.grad).toBeNull();
    for (const w of layers) w.dispose();
  });
});

describe('memory over many iterations', () => {
  test('1,000 forward/backward iterations leave liveTensors unchanged', () => {
    const vocab = 50,
      dim = 16,
      classes = 5;
    const emb = keep(randomTensor([vocab, dim], 3, { dtype: 'f32', requiresGrad: true, scale: 0.1 }));
    const w = keep(randomTensor([classes, dim], 4, { dtype: 'f32', requiresGrad: true, scale: 0.1 }));
    const b = keep(zeros([classes], { requiresGrad: true }));
    const lnw = keep(ones([dim], { requiresGrad: true }));
    const ids = keep(tensor([1, 5, 7, 9, 2, 3], [2, 3], { dtype: 'i64' }));
    const targets = keep(tensor([0, 4, 2, 1, 3, -100], [2, 3], { dtype: 'i64' }));
    const step = () =>
      tidy(() => {
        const h = layerNorm(embedding(emb, ids), lnw, null).gelu();
        const loss = crossEntropy(linear(h, w, b), targets);
        loss.backward();
        for (const p of [emb, w, b, lnw]) p.zeroGrad();
      });
    step();
    const before = liveTensors().cpu;
    for (let i = 0; i < 1000; i++) step();
    const after = liveTensors().cpu;
    expect(after.count).toBe(before.count);
    expect(after.bytes).toBe(before.bytes);
    for (const t of [emb, w, b, lnw, ids, targets]) t.dispose();
  });
});
