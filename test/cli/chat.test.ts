/**
 * `sift-ft finetune --task chat` and `eval --task chat` on a tiny LLaMA folder with Qwen2.5's
 * tokenizer format and chat template (test/fixtures/tokenizers/qwen2.5), and without a template.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createModel, stateDict } from '../../lib/models';
import { saveModelFolder } from '../../lib/io/hf';
import { HfTokenizer } from '../../lib/tokenizers';
import { evalMetrics, finetuneRun, runCli, writeJsonl } from '../helpers/cli';

const cli = runCli;

let tmp: string;
let base: string;
let bare: string;
let data: string;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-chat-cli-'));
  const tok = HfTokenizer.fromFolder(path.join(__dirname, '..', 'fixtures', 'tokenizers', 'qwen2.5'));
  const config = {
    model_type: 'llama',
    architectures: ['LlamaForCausalLM'],
    vocab_size: tok.vocabSize,
    hidden_size: 32,
    intermediate_size: 64,
    num_hidden_layers: 1,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    max_position_embeddings: 256,
    eos_token_id: tok.eosTokenId,
    pad_token_id: tok.padTokenId,
  };
  const model = createModel(config, { task: 'causal-lm', seed: 5 });
  base = path.join(tmp, 'base');
  saveModelFolder(base, { config: model.config, stateDict: stateDict(model), tokenizerFiles: tok.toFiles() });
  const files = tok.toFiles();
  const cfg = JSON.parse(files['tokenizer_config.json']);
  delete cfg.chat_template;
  bare = path.join(tmp, 'bare');
  saveModelFolder(bare, {
    config: model.config,
    stateDict: stateDict(model),
    tokenizerFiles: { ...files, 'tokenizer_config.json': JSON.stringify(cfg) },
  });
  model.dispose();
  const rows = ['Hi!', 'Hello there.', 'How are you today?', 'Tell me a joke about the weather.'].map((q, i) => ({
    messages: [
      ...(i % 2 ? [{ role: 'system', content: 'You are a helpful assistant. Be brief.' }] : []),
      { role: 'user', content: q },
      { role: 'assistant', content: 'It is sunny and warm.' },
      { role: 'user', content: 'Bye now' },
      { role: 'assistant', content: 'See you later.' },
    ],
  }));
  data = writeJsonl(path.join(tmp, 'chat.jsonl'), rows);
});

afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('finetune --task chat -> eval --task chat: the loss on assistant tokens goes down', async () => {
  const chat = { data, task: 'chat', device: 'cpu' };
  const { result, delta } = await finetuneRun({
    ...chat,
    model: base,
    out: path.join(tmp, 'ft'),
    steps: 4,
    'batch-size': 2,
    lr: 1e-2,
    'sparse-rate': 0.2,
  });
  expect(result.steps).toBe(4);
  const before = await evalMetrics({ ...chat, model: base });
  const after = await evalMetrics({ ...chat, model: base, delta });
  expect(after.perplexity).toBeCloseTo(Math.exp(after.loss), 3);
  expect(after.loss).toBeLessThan(before.loss);
});

test('without a chat template: the default ChatML template, said once', async () => {
  const r = await cli('eval', '--model', bare, '--data', data, '--task', 'chat', '--device', 'cpu', '--json');
  expect(r.code).toBe(0);
  expect(r.err.trim().split('\n')).toEqual([
    expect.stringMatching(/no chat template: conversations are formatted with the default ChatML template/),
  ]);
  expect(Number.isFinite(JSON.parse(r.out).metrics.loss)).toBe(true);
});

test('a bad row stops with E_FORMAT naming it', async () => {
  const bad = path.join(tmp, 'bad.jsonl');
  fs.writeFileSync(bad, fs.readFileSync(data, 'utf8') + JSON.stringify({ messages: [{ role: 'robot', content: 'x' }] }) + '\n');
  const r = await cli('eval', '--model', base, '--data', bad, '--task', 'chat', '--device', 'cpu');
  expect(r.code).not.toBe(0);
  expect(r.err).toMatch(/E_FORMAT/);
  expect(r.err).toMatch(/row 5: message 1 has role "robot"/);
});
