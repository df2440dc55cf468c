/**
 * loadModelForTask: a checkpoint that lacks weights of the body, or the head of its own kind (an
 * untied lm_head), is E_FORMAT; only a new task head (a classifier on an LM checkpoint) starts fresh.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createModel, stateDict } from '../../lib/models';
import { saveModelFolder } from '../../lib/io/hf';
import { loadModelForTask } from '../../lib/cli/common';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-load-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const cfg = {
  model_type: 'qwen2',
  architectures: ['Qwen2ForCausalLM'],
  vocab_size: 48,
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 1,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 64,
  tie_word_embeddings: false,
  pad_token_id: 0,
};

function folder(name: string, drop: (k: string) => boolean): string {
  const m = createModel(cfg, { task: 'causal-lm', seed: 1 });
  const sd = stateDict(m);
  const kept = new Map([...sd].filter(([k]) => !drop(k)));
  const dir = path.join(tmp, name);
  saveModelFolder(dir, { config: m.config, stateDict: kept });
  m.dispose();
  return dir;
}

test('a missing body weight or untied lm_head is E_FORMAT, named; a new classifier head starts fresh', () => {
  const noHead = folder('no-head', (k) => k === 'lm_head.weight');
  expect(() => loadModelForTask(noHead, { task: 'causal-lm', device: 'cpu' })).toThrow(
    expect.objectContaining({ code: 'E_FORMAT', message: expect.stringContaining('lm_head.weight') }),
  );
  const noBias = folder('no-bias', (k) => k.endsWith('q_proj.bias'));
  expect(() => loadModelForTask(noBias, { task: 'causal-lm', device: 'cpu' })).toThrow(
    expect.objectContaining({ code: 'E_FORMAT', message: expect.stringContaining('model.layers.0.self_attn.q_proj.bias') }),
  );
  expect(() => loadModelForTask(noBias, { task: 'classify', device: 'cpu', labels: ['a', 'b'] })).toThrow(
    expect.objectContaining({ code: 'E_FORMAT' }),
  );
  const full = folder('full', () => false);
  const cls = loadModelForTask(full, { task: 'classify', device: 'cpu', labels: ['a', 'b'] });
  try {
    expect(cls.initialized).toEqual(['score.weight']);
  } finally {
    cls.model.dispose();
  }
  // The classifier head of a classifier checkpoint loaded as a causal LM: lm_head starts fresh.
  const lm = loadModelForTask(noHead, { task: 'classify', device: 'cpu', labels: ['a', 'b'] });
  lm.model.dispose();
});
