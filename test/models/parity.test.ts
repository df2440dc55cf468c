/**
 * Parity with transformers: each fixture's model is built from its config.json, loaded with its
 * weights, and run on its padded batch; logits and loss must match the reference to 1e-5 and
 * every parameter's gradient to 1e-4 (relative to the tensor's largest magnitude), on the CPU and,
 * where a GPU is usable, on CUDA. The fixtures say in their metadata whether transformers itself or
 * the PyTorch reimplementation in make_fixtures.py produced them.
 */
import { tidy } from '../../lib';
import { createModel, loadStateDictInto, PreTrainedModel, ModelInputs } from '../../lib/models';
import { describeCuda } from '../helpers/gradcheck';
import { FIXTURE_NAMES, loadFixture, missingFixtures, relError, Fixture } from './fixtures';

const missing = missingFixtures();

function f32(t: { toArray(): ArrayLike<number | bigint> }): number[] {
  return Array.from(t.toArray() as ArrayLike<number>, Number);
}

function inputsOf(fx: Fixture): ModelInputs {
  return {
    inputIds: fx.inputs.get('input_ids')!,
    attentionMask: fx.inputs.get('attention_mask') ?? null,
    tokenTypeIds: fx.inputs.get('token_type_ids') ?? null,
    labels: fx.inputs.get('labels') ?? null,
  };
}

function checkParity(name: string, device: string): void {
  const fx = loadFixture(name);
  let model: PreTrainedModel | null = null;
  try {
    model = createModel(fx.config, { device, seed: 3 });
    expect(model.architecture).toBe(fx.metadata.architecture);
    // Parameter names are exactly the reference's state-dict keys.
    expect(
      model
        .namedParameters()
        .map(([k]) => k)
        .sort(),
    ).toEqual([...fx.params.keys()].sort());
    loadStateDictInto(model, fx.params);
    model.eval();
    const m = model;
    tidy(() => {
      const out = m.forward(inputsOf(fx));
      const logitsErr = relError(f32(out.logits), f32(fx.outputs.get('logits')!));
      expect(out.logits.shape).toEqual(fx.outputs.get('logits')!.shape);
      const lossErr = relError([out.loss!.item()], [fx.outputs.get('loss')!.item()]);
      if (logitsErr > 1e-5 || lossErr > 1e-5)
        throw new Error(`${name} on ${device}: logits error ${logitsErr.toExponential(2)}, loss error ${lossErr.toExponential(2)}`);
      out.loss!.backward();
    });
    const bad: string[] = [];
    // Some true gradients vanish (attention key biases: softmax is shift-invariant), leaving only
    // rounding noise on both sides; such tensors are measured against 1e-3 of the largest gradient.
    const floor = 1e-3 * Math.max(...[...fx.grads.values()].map((g) => Math.max(...f32(g).map(Math.abs))));
    for (const [k, p] of model.namedParameters()) {
      const ref = fx.grads.get(k)!;
      if (!p.grad) {
        bad.push(`${k}: no gradient`);
        continue;
      }
      const err = relError(f32(p.grad), f32(ref), floor);
      if (!(err <= 1e-4)) bad.push(`${k}: ${err.toExponential(2)}`);
    }
    if (bad.length) throw new Error(`${name} on ${device}: gradients differ: ${bad.join('; ')}`);
  } finally {
    model?.dispose();
    fx.dispose();
  }
}

if (missing.length) {
  describe.skip(`model parity [skipped: fixture files missing in test/fixtures: ${missing.join(', ')}; run python3 test/fixtures/make_fixtures.py]`, () => {
    test('fixtures', () => undefined);
  });
} else {
  describe('model parity with transformers (CPU)', () => {
    test.each(FIXTURE_NAMES)('%s: logits, loss and gradients', (name) => checkParity(name, 'cpu'));
  });

  describeCuda('model parity with transformers', () => {
    test.each(FIXTURE_NAMES)('%s: logits, loss and gradients', (name) => checkParity(name, 'cuda'));
  });
}
