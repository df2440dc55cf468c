/**
 * Our tokenization of the family tokenizer fixtures (test/fixtures/tokenizers/<family>), as JSON
 * on stdout, for bench/peers/compare_tokenizers.py to compare with transformers' AutoTokenizer on
 * the same files: ids with and without special tokens, decodes, chat templates and the
 * assistant-token masks of the chat task.
 *
 *   node dist/bench/tokenizers.js > ours.json
 */
import * as path from 'path';
import { HfTokenizer } from '../lib/tokenizers';
import { createTask } from '../lib/train/tasks';

const ROOT = path.resolve(__dirname, '..', '..');
const DIR = path.join(ROOT, 'test', 'fixtures', 'tokenizers');
export const FAMILIES = ['qwen2.5', 'qwen3', 'llama3', 'gemma', 'mistral', 'phi3'];
export const TEXTS = [
  'Hello world! The answer is 12345.',
  'caf\u00e9 cafe\u0301 \u{1F600}  two  spaces\n\nnew lines\ttab',
  "I'm fine, thanks. What's the weather like?",
  ' leading space and trailing ',
  '<|im_start|>user\nHi!<|im_end|>\n',
  '<start_of_turn>user\nHi!<end_of_turn>\n<bos>x',
  '[INST] Hi! [/INST]Hello there.</s>',
  '<|user|>\nHi!<|end|>\n<|assistant|>\nHello',
  '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>',
];
const SYSTEM = { role: 'system', content: 'Be brief.' };
const TURNS = [
  { role: 'user', content: 'Hi!' },
  { role: 'assistant', content: 'Hello there.' },
  { role: 'user', content: 'Bye now' },
  { role: 'assistant', content: ' See you later. ' },
];

const out: Record<string, unknown> = {};
for (const family of FAMILIES) {
  const tok = HfTokenizer.fromFolder(path.join(DIR, family));
  const noSystem = family === 'gemma';
  const conversation = noSystem ? TURNS : [SYSTEM, ...TURNS];
  const chat = createTask('chat', { tokenizer: tok, config: { max_position_embeddings: 4096 }, maxLength: 4096 }).prepare([
    { messages: conversation },
  ])[0];
  out[family] = {
    dir: path.relative(ROOT, path.join(DIR, family)),
    encode: TEXTS.map((t) => tok.encode(t).inputIds),
    encode_plain: TEXTS.map((t) => tok.encode(t, null, { addSpecialTokens: false }).inputIds),
    decode: TEXTS.map((t) => tok.decode(tok.encode(t).inputIds)),
    decode_skip: TEXTS.map((t) => tok.decode(tok.encode(t).inputIds, { skipSpecialTokens: true })),
    specials: { bos: tok.bosTokenId ?? null, eos: tok.eosTokenId ?? null, pad: tok.padTokenId ?? null, unk: tok.unkTokenId ?? null },
    conversation,
    template: tok.applyChatTemplate(conversation),
    template_prompt: tok.applyChatTemplate(conversation.slice(0, -1), { addGenerationPrompt: true }),
    chat_ids: chat.inputIds,
    chat_labels: chat.labels,
  };
}
process.stdout.write(JSON.stringify({ texts: TEXTS, families: out }) + '\n');
