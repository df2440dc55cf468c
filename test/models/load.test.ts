import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createModel, loadModel, saveModelFolder, stateDict, exportOnnx, tidy, noGrad, tensor } from '../../lib';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-load-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const config = {
  model_type: 'gpt2',
  vocab_size: 50,
  n_positions: 32,
  n_embd: 16,
  n_layer: 2,
  n_head: 2,
  resid_pdrop: 0,
  embd_pdrop: 0,
  attn_pdrop: 0,
  layer_norm_epsilon: 1e-5,
};

function logits(m: { forward(x: unknown): { logits: { toArray(): unknown } } }): number[] {
  return tidy(() =>
    noGrad(() => Array.from(m.forward({ inputIds: tensor([[1, 2, 3, 4]], undefined, { dtype: 'i64' }) }).logits.toArray() as Float32Array)),
  );
}

describe('loadModel', () => {
  test('loads a model folder and an ONNX graph with the same logits', () => {
    const model = createModel(config, { seed: 3 });
    model.eval();
    const folder = path.join(dir, 'gpt2');
    saveModelFolder(folder, { config: model.config, stateDict: stateDict(model) });
    const a = loadModel(folder);
    (a as { eval(): void }).eval();
    expect(logits(a as never)).toEqual(logits(model as never));
    const onnx = path.join(dir, 'gpt2.onnx');
    exportOnnx(model, onnx);
    const b = loadModel(onnx);
    const lb = logits(b as never);
    const la = logits(model as never);
    expect(lb.length).toBe(la.length);
    for (let i = 0; i < la.length; i++) expect(Math.abs(lb[i] - la[i])).toBeLessThan(1e-4);
    for (const m of [model, a, b]) (m as { dispose(): void }).dispose();
  });
});

describe('causal-LM loss', () => {
  test('labels as a tensor (shifted on the device) give the same loss as host rows', () => {
    const model = createModel(config, { seed: 5 });
    model.eval();
    const ids = [
      [1, 2, 3, 4, 5],
      [6, 7, 8, -100, -100],
    ];
    const a = tidy(() =>
      noGrad(() =>
        model
          .forward({
            inputIds: [
              [1, 2, 3, 4, 5],
              [6, 7, 8, 0, 0],
            ],
            labels: ids,
          })
          .loss!.item(),
      ),
    );
    const b = tidy(() =>
      noGrad(() =>
        model
          .forward({
            inputIds: [
              [1, 2, 3, 4, 5],
              [6, 7, 8, 0, 0],
            ],
            labels: tensor(ids, undefined, { dtype: 'i32' }),
          })
          .loss!.item(),
      ),
    );
    expect(b).toBe(a);
    model.dispose();
  });
});
