import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createModel, tidy, PreTrainedModel } from '../../lib';
import { exportOnnx } from '../../lib/onnx';
import { CASES, batchFor, ArchCase } from './configs';
import { ortAvailable, ortMissing, runOrt } from './ort';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-onnx-export-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const d = ortAvailable ? describe : describe.skip;
if (!ortAvailable) console.warn(`onnxruntime-node cannot load here (${ortMissing}): ONNX Runtime parity tests skipped`);

function ortLogits(file: string, c: ArchCase): number[] {
  const { ids, mask, types } = batchFor(c);
  const r = runOrt(file, { input_ids: ids, attention_mask: mask, token_type_ids: types });
  expect(r.inputs.includes('token_type_ids')).toBe(c.tokenTypes);
  return r.outputs.logits.data;
}

function nativeLogits(m: PreTrainedModel, c: ArchCase): Float32Array {
  const { ids, mask, types } = batchFor(c);
  return tidy(() =>
    m.forward({ inputIds: ids, attentionMask: mask, tokenTypeIds: c.tokenTypes ? types : undefined }).logits.toArray(),
  ) as Float32Array;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let e = 0;
  for (let i = 0; i < a.length; i++) e = Math.max(e, Math.abs(a[i] - b[i]));
  return e;
}

d('ONNX export runs in onnxruntime-node with sift-ft logits', () => {
  for (const c of CASES) {
    test(c.name, () => {
      const m = createModel(c.config, { task: c.task, seed: 11 }).eval();
      try {
        const file = path.join(dir, `${c.name}.onnx`);
        const r = exportOnnx(m, file);
        expect(r.dataPath).toBeNull();
        expect(r.inputs).toEqual(c.tokenTypes ? ['input_ids', 'attention_mask', 'token_type_ids'] : ['input_ids', 'attention_mask']);
        expect(maxDiff(ortLogits(file, c), nativeLogits(m, c))).toBeLessThan(1e-4);
      } finally {
        m.dispose();
      }
    });
  }

  test('external data and opset 18', () => {
    const c = CASES[4];
    const m = createModel(c.config, { task: c.task, seed: 5 }).eval();
    try {
      const file = path.join(dir, 'ext', 'model.onnx');
      fs.mkdirSync(path.dirname(file), { recursive: true });
      const r = exportOnnx(m, file, { externalData: true, opset: 18 });
      expect(r.dataPath).toBe(path.join(path.dirname(file), 'model.onnx.data'));
      expect(fs.statSync(file).size).toBeLessThan(20000);
      expect(maxDiff(ortLogits(file, c), nativeLogits(m, c))).toBeLessThan(1e-4);
    } finally {
      m.dispose();
    }
  });
});

test('bad opsets are E_ARG', () => {
  const m = createModel(CASES[0].config, { task: 'causal-lm', seed: 1 });
  try {
    expect(() => exportOnnx(m, path.join(dir, 'x.onnx'), { opset: 12 })).toThrow(expect.objectContaining({ code: 'E_ARG' }));
  } finally {
    m.dispose();
  }
});
