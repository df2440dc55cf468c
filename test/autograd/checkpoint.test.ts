/**
 * Activation checkpointing: gradients equal those of the plain graph (f64), for toy functions and
 * each architecture; hooks (SIFT) fire once per parameter with the same gradients; dropout replays
 * its masks in the recomputation; and the peak memory of a forward+backward goes down.
 */
import {
  Tensor,
  tidy,
  noGrad,
  manualSeed,
  checkpoint,
  gradients,
  dropout,
  liveTensors,
  resetPeakMemory,
  keep,
  SiftError,
  tanh,
} from '../../lib';
import { createModel, generate, HFConfig, PreTrainedModel } from '../../lib/models';
import { drawSeed } from '../../lib/autograd/creation';
import { backward } from '../../lib/autograd/tape';
import { Sift } from '../../lib/sift/sift';
import { gradcheck, randomTensor, expectClose } from '../helpers/gradcheck';

const f64 = (t: Tensor) => Array.from(t.toArray() as Float64Array);

/** Runs loss() (a scalar) backward and returns the leaves' gradients, clearing them. */
function gradsOf(leaves: Tensor[], loss: () => Tensor): number[][] {
  for (const l of leaves) l.zeroGrad();
  tidy(() => loss().backward());
  return leaves.map((l) => {
    const g = l.grad ? f64(l.grad) : [];
    l.zeroGrad();
    return g;
  });
}

function expectSameGrads(a: number[][], b: number[][], label = ''): void {
  expect(a.length).toBe(b.length);
  a.forEach((g, i) => {
    expect(g.length).toBe(b[i].length);
    expectClose(g, b[i], { atol: 1e-12, rtol: 1e-12, label: `${label}#${i}` });
  });
}

describe('checkpoint() on toy functions (f64)', () => {
  const x = keep(randomTensor([3, 4], 1, { dtype: 'f64', requiresGrad: true }));
  const W = keep(randomTensor([4, 4], 2, { dtype: 'f64', requiresGrad: true }));
  const b = keep(randomTensor([4], 3, { dtype: 'f64', requiresGrad: true }));
  const block = (h: Tensor) => tanh(h.matmul(W).add(b)).mul(h);
  afterAll(() => [x, W, b].forEach((t) => t.dispose()));

  test('gradients equal the plain graph, also for leaves used inside and outside the block', () => {
    const plain = (h: Tensor) => block(block(h)).add(h.matmul(W)).square().sum();
    const ckpt = (h: Tensor) =>
      checkpoint(block, [checkpoint(block, [h])])
        .add(h.matmul(W))
        .square()
        .sum();
    expectSameGrads(
      gradsOf([x, W, b], () => ckpt(x)),
      gradsOf([x, W, b], () => plain(x)),
    );
  });

  test('finite differences through checkpointed blocks (inputs and closed-over parameters)', () => {
    gradcheck((h, w) => checkpoint((y) => tanh(y.matmul(w)).mul(y), [h]).sum(), [x, W]);
    gradcheck(
      (h) =>
        checkpoint((y) => block(y), [h])
          .square()
          .sum(),
      [x],
    );
  });

  test('hooks of a parameter used inside and outside fire once, with the complete gradient', () => {
    const seen: number[][] = [];
    const remove = W.registerGradHook((g) => {
      seen.push(f64(g));
    });
    const ref = gradsOf([W], () => block(x).add(x.matmul(W)).sum())[0];
    expect(seen.length).toBe(1);
    const got = gradsOf([W], () => checkpoint(block, [x]).add(x.matmul(W)).sum())[0];
    remove();
    expect(seen.length).toBe(2);
    expectClose(seen[1], seen[0], { atol: 1e-12, rtol: 1e-12 });
    expectClose(got, ref, { atol: 1e-12, rtol: 1e-12 });
  });

  test('an input without gradients: the parameters inside still get theirs', () => {
    const c = randomTensor([3, 4], 4, { dtype: 'f64' });
    expectSameGrads(
      gradsOf([W, b], () => checkpoint(block, [c]).sum()),
      gradsOf([W, b], () => block(c).sum()),
    );
    c.dispose();
  });

  test('an outer activation closed over by fn: the recomputation stops there and the outer graph carries on', () => {
    const plain = () => {
      const h = x.mul(2).add(b);
      return block(x).mul(h).sum();
    };
    const ckpt = () => {
      const h = x.mul(2).add(b);
      return checkpoint((y) => block(y).mul(h), [x]).sum();
    };
    expectSameGrads(gradsOf([x, W, b], ckpt), gradsOf([x, W, b], plain));
  });

  test('fn returning its input, or a parameter, and several inputs', () => {
    expectSameGrads(
      gradsOf([x], () =>
        checkpoint((y) => y, [x])
          .mul(3)
          .sum(),
      ),
      gradsOf([x], () => x.mul(3).sum()),
    );
    expectSameGrads(
      gradsOf([W], () =>
        checkpoint(() => W, [])
          .square()
          .sum(),
      ),
      gradsOf([W], () => W.square().sum()),
    );
    const y = randomTensor([3, 4], 5, { dtype: 'f64', requiresGrad: true });
    expectSameGrads(
      gradsOf([x, y, W], () => checkpoint((p, q) => block(p).mul(q).add(p), [x, y]).sum()),
      gradsOf([x, y, W], () => block(x).mul(y).add(x).sum()),
    );
    y.dispose();
  });

  test('retainGraph: a second backward recomputes again', () => {
    const ref = gradsOf([x, W], () => block(x).sum()).map((g) => g.map((v) => 2 * v));
    tidy(() => {
      const out = checkpoint(block, [x]).sum();
      backward(out, undefined, { retainGraph: true });
      out.backward();
    });
    expectSameGrads([f64(x.grad!), f64(W.grad!)], ref);
    x.zeroGrad();
    W.zeroGrad();
    b.zeroGrad();
  });

  test('without gradients it is fn itself; no tensors leak', () => {
    const before = liveTensors().cpu.count;
    tidy(() => {
      const y = noGrad(() => checkpoint(block, [x]));
      expect(y.requiresGrad).toBe(false);
      expect(y.gradFn).toBeNull();
    });
    gradsOf([x, W, b], () => checkpoint(block, [checkpoint(block, [x])]).sum());
    expect(liveTensors().cpu.count).toBe(before);
  });

  test('gradients(): returned, not accumulated, and hooks left alone', () => {
    let fired = 0;
    const remove = W.registerGradHook(() => {
      fired++;
    });
    tidy(() => {
      const out = block(x).sum();
      const [gx, gw] = gradients(out, undefined, [x, W]);
      expect(fired).toBe(0);
      expect(x.grad).toBeNull();
      expect(W.grad).toBeNull();
      expect(b.grad).not.toBeNull(); // leaves not asked for are treated as by backward()
      expect(gx!.shape).toEqual([3, 4]);
      expect(gw!.shape).toEqual([4, 4]);
    });
    remove();
    b.zeroGrad();
  });

  test('bad arguments are E_ARG', () => {
    expect(() => checkpoint(null as never, [x])).toThrow(SiftError);
    expect(() => checkpoint(block, [1 as never])).toThrow(SiftError);
    expect(() => checkpoint((() => 3) as never, [x])).toThrow(SiftError);
  });
});

describe('dropout inside a checkpointed block', () => {
  test('the recomputation draws the same masks, and the seed sequence after backward is unchanged', () => {
    const x = randomTensor([4, 8], 6, { dtype: 'f64', requiresGrad: true });
    const W = randomTensor([8, 8], 7, { dtype: 'f64', requiresGrad: true });
    const fn = (h: Tensor) => dropout(dropout(h.matmul(W), 0.5).mul(h), 0.3);
    const run = (ckpt: boolean) => {
      manualSeed(11);
      const g = gradsOf([x, W], () => (ckpt ? checkpoint(fn, [x]) : fn(x)).square().sum());
      return { g, next: drawSeed() };
    };
    const plain = run(false);
    const ck = run(true);
    expectSameGrads(ck.g, plain.g);
    expect(ck.next).toBe(plain.next);
    // The masks matter: another seed gives other gradients.
    manualSeed(12);
    const other = gradsOf([W], () => fn(x).square().sum())[0];
    expect(other).not.toEqual(plain.g[1]);
    x.dispose();
    W.dispose();
  });
});

// Tiny configs of test/models (two blocks here), dropout left on so that the replay is exercised.
const configs: [string, HFConfig, 'causal-lm' | 'sequence-classification'][] = [
  [
    'gpt2',
    {
      model_type: 'gpt2',
      vocab_size: 50,
      n_positions: 16,
      n_embd: 16,
      n_layer: 2,
      n_head: 2,
      attn_pdrop: 0.2,
      resid_pdrop: 0.2,
      embd_pdrop: 0.1,
    },
    'causal-lm',
  ],
  [
    'bert',
    {
      model_type: 'bert',
      vocab_size: 40,
      hidden_size: 16,
      num_hidden_layers: 2,
      num_attention_heads: 2,
      intermediate_size: 24,
      max_position_embeddings: 16,
      type_vocab_size: 2,
      num_labels: 3,
    },
    'sequence-classification',
  ],
  [
    'llama',
    {
      model_type: 'llama',
      vocab_size: 48,
      hidden_size: 16,
      intermediate_size: 24,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      max_position_embeddings: 32,
      pad_token_id: 0,
      attention_dropout: 0.2,
    },
    'causal-lm',
  ],
];
const ids = [
  [5, 7, 9, 11, 13, 3],
  [4, 6, 8, 10, 1, 1],
];
const attentionMask = [
  [1, 1, 1, 1, 1, 1],
  [1, 1, 1, 1, 0, 0],
];
const inputsFor = (task: string) => ({ inputIds: ids, attentionMask, labels: task === 'causal-lm' ? ids : [2, 0] });

function modelGrads(m: PreTrainedModel, task: string, on: boolean): number[][] {
  m.gradientCheckpointing = on;
  manualSeed(21);
  return gradsOf(m.parameters(), () => m.forward(inputsFor(task)).loss!);
}

describe.each(configs)('%s: checkpointed blocks', (name, cfg, task) => {
  let m: PreTrainedModel;
  beforeAll(() => {
    m = createModel(cfg, { task, dtype: 'f64', seed: 3 });
  });
  afterAll(() => m.dispose());

  test('every parameter gradient equals the plain graph (train mode, dropout on)', () => {
    expect(m.gradientCheckpointing).toBe(false);
    const plain = modelGrads(m, task, false);
    const ck = modelGrads(m, task, true);
    expect(m.gradientCheckpointing).toBe(true);
    expect(plain.every((g) => g.length > 0)).toBe(true);
    expectSameGrads(ck, plain, name);
    m.disableGradientCheckpointing();
  });

  test('eval forwards without gradients and cached decoding are unaffected', async () => {
    m.eval();
    const ref = noGrad(() => tidy(() => f64(m.forward({ inputIds: ids }).logits)));
    m.enableGradientCheckpointing();
    const got = noGrad(() => tidy(() => f64(m.forward({ inputIds: ids }).logits)));
    expect(got).toEqual(ref);
    if (task === 'causal-lm') {
      const out = await generate(m, [5, 7, 9], { maxNewTokens: 3 });
      m.disableGradientCheckpointing();
      expect(out).toEqual(await generate(m, [5, 7, 9], { maxNewTokens: 3 }));
    }
    m.disableGradientCheckpointing();
    m.train();
  });
});

describe('SIFT through checkpointed blocks', () => {
  const cfg: HFConfig = { model_type: 'gpt2', vocab_size: 50, n_positions: 16, n_embd: 16, n_layer: 2, n_head: 2 };
  function runSift(on: boolean) {
    const m = createModel(cfg, { task: 'causal-lm', dtype: 'f64', seed: 5 });
    const calls = new Map<string, number>();
    for (const [k, p] of m.namedParameters()) p.registerGradHook(() => void calls.set(k, (calls.get(k) ?? 0) + 1));
    // The dense weight gradient, so that the targets' hooks see every backward (test/sift/sparse-gradient.test.ts checks the SDDMM through checkpointed blocks).
    const sift = new Sift(m, { sparseRate: 0.1, targetModules: ['c_attn', 'c_proj', 'c_fc'], sparseGradient: 'dense' });
    m.gradientCheckpointing = on;
    const step = () => {
      manualSeed(31);
      tidy(() => m.forward(inputsFor('causal-lm')).loss!.backward());
    };
    step();
    const afterSelection = new Map(calls);
    sift.select();
    step();
    const idx = sift.targets.map((t) => Array.from(t.idx!.toArray() as Int32Array, Number));
    const grads = sift.targets.map((t) => Array.from(t.grad!.toArray() as Float32Array));
    const sorted = (c: Map<string, number>) => [...c].sort(([a], [b]) => (a < b ? -1 : 1));
    const out = { idx, grads, calls: sorted(calls), afterSelection: sorted(afterSelection) };
    sift.dispose();
    m.dispose();
    return out;
  }

  test('hooks fire once per parameter and backward; same indices and sparse gradients', () => {
    const plain = runSift(false);
    const ck = runSift(true);
    // The 16 target weights and biases of the two blocks get gradients; the rest is frozen.
    expect(ck.afterSelection.length).toBe(16);
    expect(ck.afterSelection).toEqual(plain.afterSelection);
    expect(ck.afterSelection.every(([, c]) => c === 1)).toBe(true);
    expect(ck.calls.every(([, c]) => c === 2)).toBe(true);
    expect(ck.calls).toEqual(plain.calls);
    expect(ck.idx).toEqual(plain.idx);
    ck.grads.forEach((g, i) => expectClose(g, plain.grads[i], { atol: 1e-6, rtol: 1e-6, label: `target ${i}` }));
  });
});

describe('memory', () => {
  test('peak live bytes of a forward+backward of a deeper model go down', () => {
    const cfg: HFConfig = {
      model_type: 'gpt2',
      vocab_size: 64,
      n_positions: 64,
      n_embd: 32,
      n_layer: 8,
      n_head: 4,
      attn_pdrop: 0,
      resid_pdrop: 0,
      embd_pdrop: 0,
    };
    const m = createModel(cfg, { task: 'causal-lm', seed: 1 });
    const rows = Array.from({ length: 4 }, (_, b) => Array.from({ length: 64 }, (_, t) => (b * 7 + t * 3) % 64));
    const peak = (on: boolean) => {
      m.gradientCheckpointing = on;
      for (const p of m.parameters()) p.zeroGrad();
      resetPeakMemory();
      const base = liveTensors().cpu.bytes;
      tidy(() => m.forward({ inputIds: rows, labels: rows }).loss!.backward());
      return liveTensors().cpu.peakBytes - base;
    };
    const plain = peak(false);
    const ck = peak(true);
    // eslint-disable-next-line no-console
    console.log(
      `peak bytes above the weights, forward+backward (gpt2 8 layers, D 32, B 4, T 64): plain ${plain}, checkpointed ${ck} (${(ck / plain).toFixed(2)}x)`,
    );
    expect(ck).toBeLessThan(0.5 * plain);
    m.dispose();
  });
});

describe('Trainer option activationCheckpointing', () => {
  test('turns the model flag on and trains to the same losses (SIFT)', async () => {
    const { Trainer } = await import('../../lib/train/trainer');
    const cfg: HFConfig = {
      model_type: 'gpt2',
      vocab_size: 12,
      n_positions: 16,
      n_embd: 16,
      n_layer: 2,
      n_head: 2,
      num_labels: 2,
      pad_token_id: 0,
    };
    const rows = Array.from({ length: 16 }, (_, i) => ({ input_ids: [4 + (i % 5), 5 + (i % 3), i % 2 ? 3 : 2], label: i % 2 }));
    const losses = async (on: boolean) => {
      const m = createModel(cfg, { task: 'sequence-classification', seed: 7 });
      const t = new Trainer(m, null, {
        task: 'classify',
        method: 'sift',
        sift: { sparseRate: 0.2 },
        steps: 4,
        batchSize: 4,
        lr: 1e-2,
        seed: 3,
        activationCheckpointing: on,
      });
      expect(m.gradientCheckpointing).toBe(on);
      const out: number[] = [];
      for await (const e of t.fit(rows)) if (e.type === 'step') out.push(e.loss);
      m.dispose();
      return out;
    };
    const plain = await losses(false);
    const ck = await losses(true);
    expect(ck.length).toBe(4);
    expectClose(ck, plain, { atol: 1e-6, rtol: 1e-5 });
  });
});
