/**
 * Tokenizers of the model families in the formats of their public checkpoints
 * (test/fixtures/tokenizers/<family>, written by make.js: the real normalizer, pre-tokenizer,
 * post-processor, decoder, added tokens and chat template, with a small vocabulary), and their chat
 * templates rendered as transformers' apply_chat_template renders them.
 */
import * as fs from 'fs';
import * as path from 'path';
import { HfTokenizer, SiftError } from '../../lib';

const DIR = path.join(__dirname, '..', 'fixtures', 'tokenizers');
const load = (family: string): HfTokenizer => HfTokenizer.fromFolder(path.join(DIR, family));
const TEMPLATES = JSON.parse(fs.readFileSync(path.join(DIR, 'templates.json'), 'utf8')) as Record<string, string>;
const tokens = (t: HfTokenizer, text: string, addSpecialTokens = true): string[] =>
  t.encode(text, null, { addSpecialTokens }).inputIds.map((i) => t.idToToken(i)!);

function errorOf(fn: () => unknown): SiftError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SiftError);
    return e as SiftError;
  }
  throw new Error('expected a SiftError');
}

const TEXT = 'Hello world! The answer is 12345.';
const CONVERSATION = [
  { role: 'user', content: 'Hi!' },
  { role: 'assistant', content: 'Hello there.' },
  { role: 'user', content: 'Bye now' },
];

describe('Qwen2.5 and Qwen3 (byte-level BPE, NFC, Qwen regex)', () => {
  test.each(['qwen2.5', 'qwen3'])('%s: pre-tokenization splits digits one by one; no BOS; special tokens', (family) => {
    const t = load(family);
    expect(tokens(t, TEXT)).toEqual(['Hello', 'Ġworld', '!', 'ĠThe', 'Ġanswer', 'Ġis', 'Ġ', '1', '2', '3', '4', '5', '.']);
    expect(t.bosTokenId).toBeUndefined();
    expect(t.eosTokenId).toBe(t.tokenToId('<|im_end|>'));
    expect(t.padTokenId).toBe(t.tokenToId('<|endoftext|>'));
    // Added tokens are never split, special or not.
    expect(tokens(t, '<|im_start|>user\nHi!<|im_end|>')).toEqual(['<|im_start|>', 'u', 's', 'er', 'Ċ', 'Hi', '!', '<|im_end|>']);
    expect(tokens(t, 'a<tool_call>b')).toEqual(['a', '<tool_call>', 'b']);
    // NFC: a decomposed é encodes as the composed one.
    expect(t.encode('cafe\u0301').inputIds).toEqual(t.encode('caf\u00e9').inputIds);
    const ids = t.encode('<|im_start|>Hello world<|im_end|>').inputIds;
    expect(t.decode(ids)).toBe('<|im_start|>Hello world<|im_end|>');
    expect(t.decode(ids, { skipSpecialTokens: true })).toBe('Hello world');
    // A non-special added token survives skipSpecialTokens.
    expect(t.decode(t.encode('<tool_call>x').inputIds, { skipSpecialTokens: true })).toBe('<tool_call>x');
    expect(t.decode(t.encode('caf\u00e9 \u{1F600}').inputIds)).toBe('caf\u00e9 \u{1F600}');
  });

  test('Qwen2.5 template: default system prompt, a given system message, generation prompt', () => {
    const t = load('qwen2.5');
    expect(t.applyChatTemplate(CONVERSATION, { addGenerationPrompt: true })).toBe(
      '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' +
        '<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello there.<|im_end|>\n<|im_start|>user\nBye now<|im_end|>\n<|im_start|>assistant\n',
    );
    expect(
      t.applyChatTemplate([
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Hi!' },
      ]),
    ).toBe('<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n');
  });

  test('Qwen3 template: no default system prompt, empty think block on the last answer, enable_thinking', () => {
    const t = load('qwen3');
    expect(t.applyChatTemplate(CONVERSATION.slice(0, 2))).toBe(
      '<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHello there.<|im_end|>\n',
    );
    // Earlier answers are written without it.
    expect(t.applyChatTemplate(CONVERSATION, { addGenerationPrompt: true })).toBe(
      '<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello there.<|im_end|>\n<|im_start|>user\nBye now<|im_end|>\n<|im_start|>assistant\n',
    );
    expect(t.applyChatTemplate([{ role: 'user', content: 'Hi!' }], { addGenerationPrompt: true, extra: { enable_thinking: false } })).toBe(
      '<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n',
    );
    expect(
      t.applyChatTemplate([
        { role: 'system', content: 'S' },
        { role: 'user', content: 'Hi!' },
      ]),
    ).toBe('<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n');
  });
});

describe('Llama 3 (byte-level BPE, its regex, BOS by the post-processor)', () => {
  test('digits in groups of three, <|begin_of_text|> first, eos <|eot_id|>, no pad', () => {
    const t = load('llama3');
    expect(tokens(t, TEXT)).toEqual(['<|begin_of_text|>', 'Hello', 'Ġworld', '!', 'ĠThe', 'Ġanswer', 'Ġis', 'Ġ', '123', '45', '.']);
    expect(tokens(t, TEXT, false)[0]).toBe('Hello');
    expect(t.bosTokenId).toBe(t.tokenToId('<|begin_of_text|>'));
    expect(t.eosTokenId).toBe(t.tokenToId('<|eot_id|>'));
    expect(t.padTokenId).toBeUndefined();
    expect(t.numSpecialTokensToAdd()).toBe(1);
    const ids = t.encode('Hello world').inputIds;
    expect(t.decode(ids)).toBe('<|begin_of_text|>Hello world');
    expect(t.decode(ids, { skipSpecialTokens: true })).toBe('Hello world');
  });

  test('Llama 3.2 template: the dated system block always, tools absent', () => {
    const t = load('llama3');
    const template = TEMPLATES['llama3.2'];
    const extra = { date_string: '26 Jul 2024' };
    expect(t.applyChatTemplate([{ role: 'user', content: 'Hi!' }], { template, extra, addGenerationPrompt: true })).toBe(
      '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>' +
        '<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n',
    );
    expect(t.applyChatTemplate([{ role: 'system', content: ' Be brief. ' }, ...CONVERSATION.slice(0, 2)], { template, extra })).toBe(
      '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nBe brief.<|eot_id|>' +
        '<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello there.<|eot_id|>',
    );
    // Without date_string the template takes today's date through strftime_now, as transformers does.
    const today = new Date();
    const day = `${String(today.getDate()).padStart(2, '0')} ${today.toLocaleString('en-US', { month: 'short' })} ${today.getFullYear()}`;
    expect(t.applyChatTemplate([{ role: 'user', content: 'Hi!' }], { template })).toContain(`Today Date: ${day}\n\n`);
  });

  test('template: header tokens, trimmed content, BOS once', () => {
    const t = load('llama3');
    expect(
      t.applyChatTemplate([{ role: 'system', content: 'Be brief.' }, ...CONVERSATION.slice(0, 2)], { addGenerationPrompt: false }),
    ).toBe(
      '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>' +
        '<|start_header_id|>assistant<|end_header_id|>\n\nHello there.<|eot_id|>',
    );
    expect(t.applyChatTemplate([{ role: 'user', content: '  Hi!\n' }], { addGenerationPrompt: true })).toBe(
      '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n',
    );
  });
});

describe('Gemma (SentencePiece-derived BPE, byte fallback, <bos>)', () => {
  test('no dummy prefix, byte fallback for unknown characters, <bos> from add_bos_token', () => {
    const t = load('gemma');
    expect(tokens(t, TEXT)).toEqual(['<bos>', 'Hello', '▁world!', '▁The', '▁answer', '▁is', '▁12345', '.']);
    expect(tokens(t, 'caf\u00e9 \u{1F600}')).toEqual([
      '<bos>',
      'c',
      'a',
      'f',
      '<0xC3>',
      '<0xA9>',
      '▁',
      '<0xF0>',
      '<0x9F>',
      '<0x98>',
      '<0x80>',
    ]);
    expect(t.decode(t.encode('caf\u00e9 \u{1F600}').inputIds, { skipSpecialTokens: true })).toBe('caf\u00e9 \u{1F600}');
    expect([t.bosTokenId, t.eosTokenId, t.padTokenId]).toEqual([2, 1, 0]);
    expect(tokens(t, '<start_of_turn>user\nHi!<end_of_turn>', false)).toEqual([
      '<start_of_turn>',
      'u',
      's',
      'er',
      '<0x0A>',
      'Hi!',
      '<end_of_turn>',
    ]);
  });

  test('add_bos_token false in tokenizer_config.json rebuilds the post-processor without <bos>', () => {
    const t = load('gemma');
    const files = t.toFiles();
    const config = { ...JSON.parse(files['tokenizer_config.json']), add_bos_token: false, add_eos_token: true };
    const t2 = HfTokenizer.fromFiles({ tokenizer: JSON.parse(files['tokenizer.json']), config });
    expect(tokens(t2, 'Hello')).toEqual(['Hello', '<eos>']);
  });

  test('template: <start_of_turn>, assistant as model, system and non-alternating roles raise', () => {
    const t = load('gemma');
    expect(t.applyChatTemplate(CONVERSATION, { addGenerationPrompt: true })).toBe(
      '<bos><start_of_turn>user\nHi!<end_of_turn>\n<start_of_turn>model\nHello there.<end_of_turn>\n<start_of_turn>user\nBye now<end_of_turn>\n<start_of_turn>model\n',
    );
    const e = errorOf(() =>
      t.applyChatTemplate([
        { role: 'system', content: 'S' },
        { role: 'user', content: 'Hi' },
      ]),
    );
    expect(e.code).toBe('E_FORMAT');
    expect(e.message).toBe('the chat template rejects these messages: System role not supported');
    expect(
      errorOf(() =>
        t.applyChatTemplate([
          { role: 'user', content: 'a' },
          { role: 'user', content: 'b' },
        ]),
      ).message,
    ).toMatch(/roles must alternate/);
  });
});

describe('Mistral v0.3 (Metaspace first, byte fallback, control tokens)', () => {
  test('<s> first, [INST] tokens whole, no prefix after a control token', () => {
    const t = load('mistral');
    expect(tokens(t, TEXT)).toEqual(['<s>', '▁Hello', '▁world!', '▁The', '▁answer', '▁is', '▁12345', '.']);
    expect(tokens(t, '[INST] Hi! [/INST]Hello there.</s>', false)).toEqual([
      '[INST]',
      '▁Hi!',
      '▁',
      '[/INST]',
      'Hello',
      '▁the',
      're',
      '.',
      '</s>',
    ]);
    expect([t.bosTokenId, t.eosTokenId, t.unkTokenId, t.padTokenId]).toEqual([1, 2, 0, undefined]);
    const ids = t.encode('Hello world').inputIds;
    expect(t.decode(ids)).toBe('<s> Hello world');
    expect(t.decode(ids, { skipSpecialTokens: true })).toBe('Hello world');
  });

  test('v0.3 template: [INST] ... [/INST], the system message in the first turn, eos after answers', () => {
    const t = load('mistral');
    expect(t.applyChatTemplate(CONVERSATION)).toBe('<s>[INST] Hi![/INST] Hello there.</s>[INST] Bye now[/INST]');
    expect(t.applyChatTemplate([{ role: 'system', content: 'Be brief.' }, ...CONVERSATION])).toBe(
      '<s>[INST] Be brief.\n\nHi![/INST] Hello there.</s>[INST] Bye now[/INST]',
    );
    const e = errorOf(() =>
      t.applyChatTemplate([
        { role: 'user', content: 'a' },
        { role: 'user', content: 'b' },
      ]),
    );
    expect(e.message).toBe(
      'the chat template rejects these messages: After the optional system message, conversation roles must alternate user/assistant/user/assistant/...',
    );
    expect(
      errorOf(() =>
        t.applyChatTemplate([
          { role: 'user', content: 'a' },
          { role: 'robot', content: 'b' },
        ]),
      ).message,
    ).toMatch(/Only user and assistant roles are supported/);
  });

  test('v0.1 / v0.2 template: a space inside [INST] ... [/INST], no system message', () => {
    const t = load('mistral');
    const template = TEMPLATES['mistral-v0.1'];
    expect(t.applyChatTemplate(CONVERSATION, { template })).toBe('<s>[INST] Hi! [/INST]Hello there.</s>[INST] Bye now [/INST]');
    expect(
      errorOf(() =>
        t.applyChatTemplate(
          [
            { role: 'system', content: 'S' },
            { role: 'user', content: 'Hi' },
          ],
          { template },
        ),
      ).message,
    ).toMatch(/^the chat template rejects these messages: Conversation roles must alternate/);
  });
});

describe('Phi-3 (LLaMA-2-style tokenizer.json, added chat tokens with rstrip)', () => {
  test('dummy prefix on every piece, no BOS (add_bos_token false), rstrip after <|user|> / <|end|>', () => {
    const t = load('phi3');
    expect(tokens(t, TEXT)).toEqual(['▁Hello', '▁world!', '▁The', '▁answer', '▁is', '▁12345', '.']);
    expect(tokens(t, '<|user|>\nHi!<|end|>\n<|assistant|>\nHello')).toEqual(['<|user|>', '▁Hi!', '<|end|>', '<|assistant|>', '▁Hello']);
    expect(t.eosTokenId).toBe(t.tokenToId('<|endoftext|>'));
    expect(t.padTokenId).toBe(t.tokenToId('<|endoftext|>'));
    expect(t.paddingSide).toBe('left');
    expect(t.decode(t.encode('Hello world').inputIds)).toBe('Hello world');
  });

  test('template: <|user|> / <|end|> / <|assistant|>, eos without a generation prompt', () => {
    const t = load('phi3');
    expect(t.applyChatTemplate(CONVERSATION, { addGenerationPrompt: true })).toBe(
      '<|user|>\nHi!<|end|>\n<|assistant|>\nHello there.<|end|>\n<|user|>\nBye now<|end|>\n<|assistant|>\n',
    );
    expect(t.applyChatTemplate(CONVERSATION.slice(0, 2))).toBe('<|user|>\nHi!<|end|>\n<|assistant|>\nHello there.<|end|>\n<|endoftext|>');
    expect(
      t.applyChatTemplate(
        [
          { role: 'system', content: 'S' },
          { role: 'user', content: 'Hi!' },
        ],
        { addGenerationPrompt: true },
      ),
    ).toBe('<|system|>\nS<|end|>\n<|user|>\nHi!<|end|>\n<|assistant|>\n');
  });
});

describe('generation_config.json', () => {
  test('its eos_token_id list ends generation with the tokenizer EOS', () => {
    const q = load('qwen2.5');
    expect(q.eosTokenIds.sort()).toEqual([q.tokenToId('<|im_end|>')!, q.tokenToId('<|endoftext|>')!].sort());
    const l = load('llama3');
    expect(l.eosTokenIds.sort()).toEqual([l.tokenToId('<|end_of_text|>')!, l.tokenToId('<|eot_id|>')!].sort());
    const p = load('phi3');
    expect(p.eosTokenIds.sort()).toEqual(['<|endoftext|>', '<|assistant|>', '<|end|>'].map((t) => p.tokenToId(t)!).sort());
    const g = load('gemma');
    expect(g.eosTokenIds).toEqual([g.tokenToId('<eos>'), g.tokenToId('<end_of_turn>')]);
    // A folder without one: the tokenizer's EOS.
    expect(load('mistral').eosTokenIds).toEqual([2]);
  });
});

describe('offsets', () => {
  test.each(['qwen2.5', 'qwen3', 'llama3', 'gemma', 'mistral', 'phi3'])(
    '%s: every token of a rendered conversation spells its span of the text',
    (family) => {
      const t = load(family);
      const text = t.applyChatTemplate(CONVERSATION, { addGenerationPrompt: true }) + ' caf\u00e9 \u{1F600}';
      const r = t.encodeWithOffsets(text)!;
      expect(r).not.toBeNull();
      expect(r.inputIds).toEqual(t.encode(text, null, { addSpecialTokens: false }).inputIds);
      let last = 0;
      r.offsets.forEach(([s, e]) => {
        expect(s).toBeGreaterThanOrEqual(last);
        expect(e).toBeGreaterThanOrEqual(s);
        last = e;
      });
      // Spans cover the text but for whitespace the tokens drop (rstrip) or hold as a dummy prefix.
      const covered = r.offsets.map(([s, e]) => text.slice(s, e)).join('');
      expect(covered.replace(/\s/g, '')).toBe(text.replace(/\s/g, ''));
      const hello = r.offsets.findIndex(([s, e]) => text.slice(s, e).trim() === 'Hello');
      expect(t.decode([r.inputIds[hello]]).trim()).toBe('Hello');
    },
  );

  test('special tokens the post-processor adds cover nothing', () => {
    const r = load('llama3').encodeWithOffsets('Hello world', { addSpecialTokens: true })!;
    expect(r.offsets).toEqual([
      [0, 0],
      [0, 5],
      [5, 11],
    ]);
  });
});
