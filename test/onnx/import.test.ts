import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createModel, tidy, Tensor, PreTrainedModel, Sift, SparseAdamW, SiftError } from '../../lib';
import { exportOnnx, loadOnnxModel, OnnxModel } from '../../lib/onnx';
import { CASES, batchFor, ArchCase } from './configs';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-onnx-import-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function labelsFor(c: ArchCase, ids: number[][]): number[] | number[][] {
  return c.task === 'causal-lm' ? ids.map((r, b) => r.map((v, t) => (b === 1 && t >= 4 ? -100 : v))) : [1, 0];
}

function run(m: PreTrainedModel | OnnxModel, c: ArchCase): { logits: number[]; loss: number; grads: Map<string, number[]> } {
  const { ids, mask, types } = batchFor(c);
  for (const [, p] of m.namedParameters()) p.grad = null;
  const r = tidy(() => {
    const out = m.forward({
      inputIds: ids,
      attentionMask: mask,
      tokenTypeIds: c.tokenTypes ? types : undefined,
      labels: labelsFor(c, ids),
    });
    out.loss!.backward();
    return { logits: Array.from(out.logits.toArray() as Float32Array), loss: out.loss!.item() };
  });
  const grads = new Map<string, number[]>();
  for (const [n, p] of m.namedParameters()) if (p.grad) grads.set(n, Array.from(p.grad.toArray() as Float32Array));
  return { ...r, grads };
}

function relErr(a: number[], b: number[]): number {
  let num = 0;
  // Gradients that are zero in exact arithmetic (a key bias under softmax) are rounding noise: floor the scale.
  let den = 1e-4;
  for (let i = 0; i < b.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / den;
}

describe('ONNX import: logits, loss and gradients equal the native model', () => {
  for (const c of CASES) {
    test(c.name, () => {
      const m = createModel(c.config, { task: c.task, seed: 21 }).eval();
      const file = path.join(dir, `${c.name}.onnx`);
      exportOnnx(m, file);
      const g = loadOnnxModel(file);
      try {
        expect(g.task).toBe(c.task);
        expect(
          g
            .namedParameters()
            .map(([n]) => n)
            .sort(),
        ).toEqual(
          m
            .namedParameters()
            .map(([n]) => n)
            .sort(),
        );
        const a = run(m, c);
        const b = run(g, c);
        expect(b.logits.length).toBe(a.logits.length);
        expect(relErr(b.logits, a.logits)).toBeLessThan(1e-4);
        expect(Math.abs(b.loss - a.loss)).toBeLessThan(1e-4 * Math.max(1, Math.abs(a.loss)));
        expect([...b.grads.keys()].sort()).toEqual([...a.grads.keys()].sort());
        for (const [n, ga] of a.grads) {
          const e = relErr(b.grads.get(n)!, ga);
          if (e > 1e-3) throw new Error(`${c.name}: gradient of ${n} differs (relative ${e})`);
        }
        // Linear layers keep their kind, so "all-linear" picks the same modules as on the native model.
        const linear = (x: { namedModules(): [string, { kind: string; ownParameters(): unknown[] }][] }) =>
          x
            .namedModules()
            .filter(([, mm]) => (mm.kind === 'Linear' || mm.kind === 'Conv1D') && mm.ownParameters().length > 0)
            .map(([p]) => p)
            .sort();
        expect(linear(g)).toEqual(linear(m));
      } finally {
        g.dispose();
        m.dispose();
      }
    });
  }
});

test('SIFT trains an imported graph (loss goes down)', () => {
  const c = CASES[0];
  const m = createModel(c.config, { task: c.task, seed: 4 });
  const file = path.join(dir, 'train.onnx');
  exportOnnx(m, file);
  m.dispose();
  const g = loadOnnxModel(file);
  try {
    const { ids, mask } = batchFor(c);
    const batch = { inputIds: ids, attentionMask: mask, labels: labelsFor(c, ids) };
    const sift = new Sift(g, { sparseRate: 0.2, targetModules: ['c_attn', 'c_fc', 'c_proj'], seed: 1 });
    tidy(() => g.forward(batch).loss!.backward());
    sift.select();
    expect(sift.summary().targets ?? sift.summary()).toBeTruthy();
    const opt = new SparseAdamW(sift, { lr: 2e-2 });
    const losses: number[] = [];
    for (let i = 0; i < 8; i++) {
      losses.push(
        tidy(() => {
          const out = g.forward(batch);
          out.loss!.backward();
          return out.loss!.item();
        }),
      );
      opt.step();
    }
    expect(losses[losses.length - 1]).toBeLessThan(losses[0] * 0.9);
    sift.dispose?.();
  } finally {
    g.dispose();
  }
});

test('parameters: initializer paths become modules', () => {
  const c = CASES[0];
  const m = createModel(c.config, { task: c.task, seed: 4 });
  const file = path.join(dir, 'names.onnx');
  exportOnnx(m, file);
  m.dispose();
  const g = loadOnnxModel(file);
  try {
    const mods = new Map(g.namedModules());
    expect(mods.get('transformer.h.0.attn.c_attn')!.kind).toBe('Linear');
    expect(mods.get('transformer.wte')!.kind).toBe('Embedding');
    expect(mods.get('transformer.h.1.ln_2')!.kind).toBe('LayerNorm');
    expect(g.initializerOf.get('transformer.h.0.attn.c_attn.weight')).toBe('transformer.h.0.attn.c_attn.weight');
  } finally {
    g.dispose();
  }
  expect(SiftError).toBeDefined();
  expect(Tensor).toBeDefined();
});
