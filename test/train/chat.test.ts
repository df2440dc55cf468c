/**
 * The chat task: conversations through each family's chat template (test/fixtures/tokenizers) or
 * the default ChatML template, labels on the assistant's turns only (content and end-of-turn
 * token), truncation, padding, bad rows.
 */
import * as fs from 'fs';
import * as path from 'path';
import { HfTokenizer, SiftError, createByteTokenizer, createModel, tidy } from '../../lib';
import { createTask } from '../../lib/train/tasks';
import { DEFAULT_CHAT_TEMPLATE, renderChat } from '../../lib/train/chat';
import type { Example } from '../../lib/train/types';

const DIR = path.join(__dirname, '..', 'fixtures', 'tokenizers');
const load = (family: string): HfTokenizer => HfTokenizer.fromFolder(path.join(DIR, family));
const config = { model_type: 'llama', max_position_embeddings: 512 };

const SYSTEM = { role: 'system', content: 'Be brief.' };
const TURNS = [
  { role: 'user', content: 'Hi!' },
  { role: 'assistant', content: 'Hello there.' },
  { role: 'user', content: 'Bye now' },
  { role: 'assistant', content: 'See you later.' },
];

/** The text of the labelled tokens, turn by turn (consecutive labelled tokens joined). */
function labelled(t: HfTokenizer, e: Example): string[] {
  const out: string[] = [];
  let run: number[] = [];
  e.labels!.forEach((v, i) => {
    if (v !== -100) {
      expect(v).toBe(e.inputIds[i]);
      run.push(v);
    } else if (run.length) {
      out.push(t.decode(run));
      run = [];
    }
  });
  if (run.length) out.push(t.decode(run));
  return out;
}

function errorOf(fn: () => unknown): SiftError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SiftError);
    return e as SiftError;
  }
  throw new Error('expected a SiftError');
}

describe('chat task with the families templates', () => {
  const cases: [string, boolean, string[]][] = [
    ['qwen2.5', true, ['Hello there.<|im_end|>', 'See you later.<|im_end|>']],
    ['qwen3', true, ['Hello there.<|im_end|>', 'See you later.<|im_end|>']],
    ['llama3', true, ['Hello there.<|eot_id|>', 'See you later.<|eot_id|>']],
    ['gemma', false, ['Hello there.<end_of_turn>', 'See you later.<end_of_turn>']],
    ['mistral', true, ['Hello there.</s>', 'See you later.</s>']],
    ['phi3', true, ['Hello there.<|end|>', 'See you later.<|end|>']],
  ];
  test.each(cases)('%s: the loss is on every assistant turn and its end-of-turn token only', (family, system, expected) => {
    const t = load(family);
    const notices: string[] = [];
    const task = createTask('chat', { tokenizer: t, config, onNotice: (m) => notices.push(m) });
    const messages = system ? [SYSTEM, ...TURNS] : TURNS;
    const [e] = task.prepare([{ messages }]);
    // The ids are those of the rendered conversation, tokenized whole.
    expect(e.inputIds).toEqual(t.encode(t.applyChatTemplate(messages), null, { addSpecialTokens: false }).inputIds);
    expect(labelled(t, e)).toEqual(expected);
    // Phi-3: the dummy-prefix piece before an answer (after <|assistant|> stripped the newline) is the answer's.
    if (family === 'phi3')
      expect(
        e
          .labels!.map((v) => (v === -100 ? '' : t.idToToken(v)))
          .filter(Boolean)
          .slice(5, 7),
      ).toEqual(['▁', '<0x53>']);
    expect(task.lossWeight(e)).toBe(e.labels!.filter((v) => v !== -100).length);
    expect(notices).toEqual([]);
  });

  test('Llama 3.2 template (system block, date): the answers and <|eot_id|> only', () => {
    const t = load('llama3');
    const files = t.toFiles();
    const cfg = {
      ...JSON.parse(files['tokenizer_config.json']),
      chat_template: JSON.parse(fs.readFileSync(path.join(DIR, 'templates.json'), 'utf8'))['llama3.2'],
    };
    const t32 = HfTokenizer.fromFiles({ tokenizer: JSON.parse(files['tokenizer.json']), config: cfg });
    const task = createTask('chat', { tokenizer: t32, config, chatTemplateVars: { date_string: '26 Jul 2024' } });
    const [e] = task.prepare([{ messages: [SYSTEM, ...TURNS] }]);
    expect(t32.decode(e.inputIds)).toContain('Today Date: 26 Jul 2024\n\nBe brief.<|eot_id|>');
    expect(labelled(t32, e)).toEqual(['Hello there.<|eot_id|>', 'See you later.<|eot_id|>']);
  });

  test('Qwen3 reasoning: the last answer keeps its think block (labelled), earlier answers lose theirs', () => {
    const t = load('qwen3');
    const task = createTask('chat', { tokenizer: t, config });
    const inline = [
      { role: 'user', content: 'Hi!' },
      { role: 'assistant', content: '<think>\nGreet.\n</think>\n\nHello there.' },
      { role: 'user', content: 'Bye now' },
      { role: 'assistant', content: '<think>\nBye.\n</think>\n\nSee you later.' },
    ];
    const separate = [TURNS[0], { ...TURNS[1], reasoning_content: 'Greet.' }, TURNS[2], { ...TURNS[3], reasoning_content: 'Bye.' }];
    for (const messages of [inline, separate]) {
      const [e] = task.prepare([{ messages }]);
      expect(t.decode(e.inputIds)).toBe(
        '<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello there.<|im_end|>\n<|im_start|>user\nBye now<|im_end|>\n' +
          '<|im_start|>assistant\n<think>\nBye.\n</think>\n\nSee you later.<|im_end|>\n',
      );
      const want =
        messages === inline ? '<think>\nBye.\n</think>\n\nSee you later.<|im_end|>' : 'Bye.\n</think>\n\nSee you later.<|im_end|>';
      expect(labelled(t, e)).toEqual(['Hello there.<|im_end|>', want]);
    }
  });

  test('a template that trims the content: spaces around an answer are not its tokens, the end token is', () => {
    const t = load('llama3');
    const task = createTask('chat', { tokenizer: t, config });
    const [e] = task.prepare([
      {
        messages: [
          { role: 'user', content: 'Hi!' },
          { role: 'assistant', content: '  Hello there. \n' },
        ],
      },
    ]);
    expect(labelled(t, e)).toEqual(['Hello there.<|eot_id|>']);
  });

  test('a template that keeps the content as given: its spaces are labelled', () => {
    const t = load('qwen2.5');
    const task = createTask('chat', { tokenizer: t, config });
    const [e] = task.prepare([
      {
        messages: [
          { role: 'user', content: 'Hi!' },
          { role: 'assistant', content: ' Hello there. ' },
        ],
      },
    ]);
    expect(labelled(t, e)).toEqual([' Hello there. <|im_end|>']);
  });

  test('the template rejecting a conversation is E_FORMAT', () => {
    const task = createTask('chat', { tokenizer: load('gemma'), config });
    expect(errorOf(() => task.prepare([{ messages: [SYSTEM, ...TURNS] }])).message).toMatch(/System role not supported/);
  });

  test('instruct rows on a tokenizer with a template are formatted as the chat task does', () => {
    const t = load('qwen2.5');
    const [a] = createTask('instruct', { tokenizer: t, config }).prepare([{ instruction: 'Hi!', output: 'Hello there.' }]);
    const [b] = createTask('chat', { tokenizer: t, config }).prepare([{ messages: TURNS.slice(0, 2) }]);
    expect(a).toEqual(b);
  });
});

describe('chat task without a template', () => {
  test('default ChatML template, said once; BOS the tokenizer adds goes first', () => {
    const t = load('mistral');
    const files = t.toFiles();
    const cfg = JSON.parse(files['tokenizer_config.json']);
    delete cfg.chat_template;
    const bare = HfTokenizer.fromFiles({ tokenizer: JSON.parse(files['tokenizer.json']), config: cfg });
    const notices: string[] = [];
    const task = createTask('chat', { tokenizer: bare, config, onNotice: (m) => notices.push(m) });
    const ex = task.prepare([{ messages: [SYSTEM, ...TURNS] }, { messages: TURNS.slice(0, 2) }]);
    expect(notices).toHaveLength(1);
    expect(notices[0]).toMatch(/default ChatML template/);
    const text =
      '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello there.<|im_end|>\n';
    expect(bare.applyChatTemplate([SYSTEM, ...TURNS.slice(0, 2)], { template: DEFAULT_CHAT_TEMPLATE })).toBe(text);
    expect(ex[0].inputIds[0]).toBe(bare.bosTokenId);
    expect(ex[0].labels![0]).toBe(-100);
    expect(labelled(bare, ex[0])).toEqual(['Hello there.<|im_end|>', 'See you later.<|im_end|>']);
  });

  test('a byte-level tokenizer without the ChatML tokens learns the markers as text', () => {
    const tok = createByteTokenizer();
    const task = createTask('chat', { tokenizer: tok, config: { model_type: 'gpt2', n_positions: 256 }, onNotice: () => undefined });
    const [e] = task.prepare([{ messages: TURNS.slice(0, 2) }]);
    const text = '<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello there.<|im_end|>\n';
    expect(e.inputIds).toEqual([...Buffer.from(text)]);
    const start = text.indexOf('Hello');
    const end = text.lastIndexOf('<|im_end|>') + '<|im_end|>'.length;
    expect(e.labels).toEqual(e.inputIds.map((v, i) => (i >= start && i < end ? v : -100)));
  });
});

describe('chat masks for any template', () => {
  const tok = load('qwen2.5');
  const vars = { bos_token: '', eos_token: '<|im_end|>' };
  test('{% generation %} blocks mark the assistant text', () => {
    const tpl =
      "{% for m in messages %}{% if m.role == 'assistant' %}A: {% generation %}{{ m.content }}<|im_end|>{% endgeneration %}\n{% else %}U: {{ m.content }}\n{% endif %}{% endfor %}";
    const r = renderChat(tpl, TURNS, vars, tok.specialTokenStrings);
    // trim_blocks, as transformers renders: the newline after a block tag goes.
    expect(r.text).toBe('U: Hi!\nA: Hello there.<|im_end|>U: Bye now\nA: See you later.<|im_end|>');
    expect(r.spans.map(([s, e]) => r.text.slice(s, e))).toEqual(['Hello there.<|im_end|>', 'See you later.<|im_end|>']);
    expect(tok.applyChatTemplate(TURNS, { template: tpl })).toBe(r.text);
  });

  test('a template that rewrites the content: turns found from the conversation prefixes', () => {
    const tpl =
      '{% for m in messages %}[{{ m.role }}] {{ m.content | length }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}';
    const r = renderChat(tpl, TURNS, vars, tok.specialTokenStrings);
    expect(r.spans.map(([s, e]) => r.text.slice(s, e))).toEqual(['12<|im_end|>', '14<|im_end|>']);
  });
});

describe('truncation, batches, bad rows', () => {
  const t = load('qwen3');

  test('--max-length cuts ids and labels; a row left without assistant tokens is skipped, said once', () => {
    const notices: string[] = [];
    const task = createTask('chat', { tokenizer: t, config, maxLength: 20, onNotice: (m) => notices.push(m) });
    const long = {
      messages: [
        { role: 'user', content: 'Tell me a joke about the weather, the quick brown fox and the lazy dog.' },
        { role: 'assistant', content: 'No.' },
      ],
    };
    const ex = task.prepare([{ messages: TURNS.slice(0, 2) }, long]);
    expect(ex).toHaveLength(1);
    expect(ex[0].inputIds.length).toBeLessThanOrEqual(20);
    expect(ex[0].labels!.length).toBe(ex[0].inputIds.length);
    expect(notices).toEqual([
      '1 of 2 rows have no assistant token within the first 20 tokens and are skipped (raise --max-length to keep them)',
    ]);
  });

  test('collate pads ids with the pad token and labels with -100', () => {
    const task = createTask('chat', { tokenizer: t, config });
    const ex = task.prepare([{ messages: TURNS }, { messages: TURNS.slice(0, 2) }]);
    const [n0, n1] = [ex[0].inputIds.length, ex[1].inputIds.length];
    expect(n1).toBeLessThan(n0);
    tidy(() => {
      const b = task.collate(ex, 'cpu');
      expect(b.inputIds.shape).toEqual([2, n0]);
      const ids = b.inputIds.tolist() as number[][];
      const labels = b.labels!.tolist() as number[][];
      const mask = b.attentionMask.tolist() as number[][];
      expect(ids[1].slice(n1)).toEqual(new Array(n0 - n1).fill(t.padTokenId));
      expect(mask[1]).toEqual([...new Array(n1).fill(1), ...new Array(n0 - n1).fill(0)]);
      expect(labels[1]).toEqual([...ex[1].labels!, ...new Array(n0 - n1).fill(-100)]);
      expect(labels[0]).toEqual(ex[0].labels);
    });
  });

  test('the loss of a batch is the mean over assistant tokens (a tiny LLaMA)', () => {
    const model = createModel(
      {
        model_type: 'llama',
        vocab_size: t.vocabSize,
        hidden_size: 16,
        intermediate_size: 32,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        max_position_embeddings: 128,
      },
      { task: 'causal-lm', seed: 3 },
    );
    const task = createTask('chat', { tokenizer: t, config: model.config });
    const ex = task.prepare([{ messages: TURNS }, { messages: TURNS.slice(0, 2) }]);
    tidy(() => {
      const b = task.collate(ex, 'cpu');
      const out = task.forward(model, b);
      const loss = (out.loss!.toArray() as Float32Array)[0];
      // Reference: cross-entropy of the shifted logits over the labelled positions.
      const logits = out.logits.toArray() as Float32Array;
      const [B, T, V] = out.logits.shape;
      let sum = 0;
      let n = 0;
      ex.forEach((e, bi) => {
        for (let p = 1; p < e.labels!.length; p++) {
          if (e.labels![p] === -100) continue;
          const off = (bi * T + p - 1) * V;
          let m = -Infinity;
          for (let v = 0; v < V; v++) m = Math.max(m, logits[off + v]);
          let s = 0;
          for (let v = 0; v < V; v++) s += Math.exp(logits[off + v] - m);
          sum += m + Math.log(s) - logits[off + e.labels![p]];
          n++;
        }
      });
      expect(n).toBe(ex.reduce((a, e) => a + task.lossWeight(e), 0));
      expect(loss).toBeCloseTo(sum / n, 4);
      expect(B).toBe(2);
    });
    model.dispose();
  });

  test('bad rows are E_FORMAT naming the row', () => {
    const task = createTask('chat', { tokenizer: t, config });
    const cases: [unknown, RegExp][] = [
      [{ text: 'x' }, /^row 2: chat rows need a 'messages' column/],
      [{ messages: [] }, /^row 2: chat rows need 'messages', a non-empty list/],
      [{ messages: [{ role: 'robot', content: 'x' }] }, /^row 2: message 1 has role "robot" \(expected system, user, assistant, tool\)/],
      [
        {
          messages: [
            { role: 'user', content: 'x' },
            { role: 'assistant', content: 3 },
          ],
        },
        /^row 2: message 2 \(assistant\) has content of type number; expected text/,
      ],
      [
        {
          messages: [
            { role: 'user', content: [{ type: 'text', text: 'x' }] },
            { role: 'assistant', content: 'y' },
          ],
        },
        /^row 2: message 1 \(user\) has content of type array/,
      ],
      [{ messages: ['hi'] }, /^row 2: message 1 is not an object/],
      [{ messages: [{ role: 'user', content: 'x' }] }, /^row 2: no assistant message/],
    ];
    for (const [row, re] of cases) {
      const e = errorOf(() => task.prepare([{ messages: TURNS }, row as Record<string, unknown>]));
      expect(e.code).toBe('E_FORMAT');
      expect(e.message).toMatch(re);
    }
  });

  test('pre-tokenized rows pass through', () => {
    const task = createTask('chat', { tokenizer: t, config });
    expect(task.prepare([{ input_ids: [1, 2, 3], labels: [-100, 2, 3] }])).toEqual([{ inputIds: [1, 2, 3], labels: [-100, 2, 3] }]);
  });
});
