import { createModel, createByteTokenizer, SiftError, tidy, HFConfig } from '../../lib';
import { createTask, alpacaPrompt } from '../../lib/train/tasks';

const gpt2: HFConfig = { model_type: 'gpt2', vocab_size: 260, n_positions: 64, n_embd: 16, n_layer: 1, n_head: 2, pad_token_id: 257 };
const bert: HFConfig = {
  model_type: 'bert',
  vocab_size: 260,
  max_position_embeddings: 64,
  hidden_size: 16,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  intermediate_size: 32,
  type_vocab_size: 2,
  pad_token_id: 257,
};
// Byte tokenizer: ids 0..255 are bytes, 256 <|endoftext|>, 257 <pad>.
const tok = createByteTokenizer();

function logSoftmaxRow(v: ArrayLike<number>, off: number, n: number): number[] {
  let m = -Infinity;
  for (let i = 0; i < n; i++) m = Math.max(m, v[off + i]);
  let s = 0;
  for (let i = 0; i < n; i++) s += Math.exp(v[off + i] - m);
  const lse = m + Math.log(s);
  return Array.from({ length: n }, (_, i) => v[off + i] - lse);
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SiftError);
    return (e as SiftError).code;
  }
  return undefined;
}

describe('classify', () => {
  test('labels learned from the data, padding, loss = mean cross-entropy of the logits', () => {
    const model = createModel({ ...gpt2, num_labels: 3 }, { task: 'sequence-classification', seed: 1 });
    const task = createTask('classify', { tokenizer: tok, config: model.config });
    const ex = task.prepare([
      { text: 'ab', label: 'neg' },
      { text: 'hello', label: 'pos' },
      { text: 'x', label: 'mid' },
    ]);
    expect(task.labels).toEqual(['mid', 'neg', 'pos']);
    expect(ex.map((e) => e.label)).toEqual([1, 2, 0]);
    expect(ex[0].inputIds).toEqual([97, 98]);
    tidy(() => {
      const b = task.collate(ex, 'cpu');
      expect(b.inputIds.shape).toEqual([3, 5]);
      expect(b.numTokens).toBe(8);
      expect(b.inputIds.tolist()).toEqual([
        [97, 98, 257, 257, 257],
        [104, 101, 108, 108, 111],
        [120, 257, 257, 257, 257],
      ]);
      expect(b.attentionMask.tolist()).toEqual([
        [1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1],
        [1, 0, 0, 0, 0],
      ]);
      expect(b.labels!.tolist()).toEqual([1, 2, 0]);
      const out = task.forward(model, b);
      const logits = out.logits.toArray() as Float32Array;
      const ref = -[1, 2, 0].reduce((a, y, i) => a + logSoftmaxRow(logits, i * 3, 3)[y], 0) / 3;
      expect(out.loss!.item()).toBeCloseTo(ref, 5);
      const pred = task.predict(out);
      expect(pred.length).toBe(3);
      const m = task.metrics(pred, task.targets(ex), 0.5);
      expect(m.loss).toBe(0.5);
      expect(m.accuracy).toBeGreaterThanOrEqual(0);
      expect(m).toHaveProperty('f1');
      expect(m).toHaveProperty('mcc');
      b.dispose();
    });
    // The mapping learned on the training split applies to the next split.
    expect(task.prepare([{ text: 'q', label: 'pos' }])[0].label).toBe(2);
    expect(codeOf(() => task.prepare([{ text: 'q', label: 'other' }]))).toBe('E_FORMAT');
    model.dispose();
  });

  test('numeric labels keep their ids; config.label2id maps names; too many classes is E_ARG', () => {
    const task = createTask('classify', { tokenizer: tok, config: gpt2 });
    expect(
      task
        .prepare([
          { sentence: 'a', label: '1' },
          { sentence: 'b', label: '0' },
        ])
        .map((e) => e.label),
    ).toEqual([1, 0]);
    expect(task.labels).toEqual(['0', '1']);
    const named = createTask('classify', { tokenizer: tok, config: { ...gpt2, label2id: { negative: 0, positive: 1 } } });
    expect(
      named
        .prepare([
          { text: 'a', label: 'positive' },
          { text: 'b', label: 0 },
        ])
        .map((e) => e.label),
    ).toEqual([1, 0]);
    const three = createTask('classify', { tokenizer: tok, config: gpt2 });
    expect(
      codeOf(() =>
        three.prepare([
          { text: 'a', label: 'x' },
          { text: 'b', label: 'y' },
          { text: 'c', label: 'z' },
        ]),
      ),
    ).toBe('E_ARG');
    expect(codeOf(() => three.prepare([{ words: 'a', label: 'x' }]))).toBe('E_FORMAT');
  });

  test('sentence pairs through textPairColumn give token types (BERT)', () => {
    const btok = createByteTokenizer([], { specialTokens: ['[CLS]', '[SEP]', '<pad>'], bos: null, eos: null, pad: '<pad>' });
    const task = createTask('classify', { tokenizer: btok, config: bert, columns: { textColumn: 'q', textPairColumn: 'a' } });
    const ex = task.prepare([{ q: 'ab', a: 'c', label: 1 }]);
    expect(ex[0].inputIds.slice(0, 2)).toEqual([97, 98]);
    expect(ex[0].inputIds).toContain(99);
    const model = createModel({ ...bert, num_labels: 2 }, { task: 'sequence-classification', seed: 2 });
    tidy(() => {
      const b = task.collate(ex, 'cpu');
      expect(b.tokenTypeIds).toBeDefined();
      expect(task.forward(model, b).loss!.item()).toBeGreaterThan(0);
    });
    model.dispose();
  });

  test('pre-tokenized rows need no tokenizer', () => {
    const task = createTask('classify', { tokenizer: null, config: gpt2 });
    const ex = task.prepare([
      { input_ids: [5, 6, 7], label: 1 },
      { input_ids: [8], attention_mask: [1], label: 0 },
    ]);
    expect(ex[0]).toEqual({ inputIds: [5, 6, 7], label: 1 });
    expect(codeOf(() => task.prepare([{ text: 'needs a tokenizer', label: 0 }]))).toBe('E_ARG');
    expect(codeOf(() => task.prepare([{ input_ids: [1, 'x'], label: 0 }]))).toBe('E_FORMAT');
    expect(codeOf(() => task.prepare([{ input_ids: [1, 2], attention_mask: [1], label: 0 }]))).toBe('E_FORMAT');
  });
});

describe('regress', () => {
  test('one score per row, MSE loss, pearson/spearman', () => {
    const model = createModel({ ...gpt2, num_labels: 1 }, { task: 'sequence-classification', seed: 3 });
    const task = createTask('regress', { tokenizer: tok, config: model.config });
    const ex = task.prepare([
      { sentence1: 'a', sentence2: 'b', score: '3.5' },
      { sentence1: 'cc', sentence2: 'd', score: 1 },
    ]);
    expect(ex.map((e) => e.label)).toEqual([3.5, 1]);
    tidy(() => {
      const b = task.collate(ex, 'cpu');
      const out = task.forward(model, b);
      const p = task.predict(out);
      const ref = ((p[0] - 3.5) ** 2 + (p[1] - 1) ** 2) / 2;
      expect(out.loss!.item()).toBeCloseTo(ref, 4);
    });
    const m = task.metrics([1, 2, 3], [2, 4, 7], 0.1);
    expect(m.pearson).toBeGreaterThan(0.9);
    expect(m.spearman).toBeCloseTo(1, 10);
    expect(codeOf(() => task.prepare([{ text: 'a', label: 'high' }]))).toBe('E_FORMAT');
    model.dispose();
  });
});

describe('causal-lm', () => {
  test('packs documents (EOS-separated) into blocks of maxLength; remainder dropped', () => {
    const task = createTask('causal-lm', { tokenizer: tok, config: gpt2, maxLength: 4 });
    const ex = task.prepare([{ text: 'abc' }, { text: 'defgh' }]);
    // a b c EOS d e f g h EOS -> [a b c EOS] [d e f g], remainder [h EOS] dropped.
    expect(ex.map((e) => e.inputIds)).toEqual([
      [97, 98, 99, 256],
      [100, 101, 102, 103],
    ]);
    const docs = createTask('causal-lm', { tokenizer: tok, config: gpt2, maxLength: 4, packing: false });
    expect(docs.prepare([{ text: 'abc' }, { text: 'defgh' }]).map((e) => e.inputIds)).toEqual([
      [97, 98, 99, 256],
      [100, 101, 102, 103],
    ]);
    expect(docs.prepare([{ text: 'ab' }]).map((e) => e.inputIds)).toEqual([[97, 98, 256]]);
  });

  test('loss predicts t+1 from <= t, mean over labels != -100, padding ignored', () => {
    const model = createModel(gpt2, { task: 'causal-lm', seed: 4 });
    const task = createTask('causal-lm', { tokenizer: null, config: gpt2 });
    const ex = task.prepare([{ input_ids: [1, 2, 3, 4] }, { input_ids: [5, 6], labels: [5, -100] }, { input_ids: [7, 8, 9] }]);
    expect(task.lossWeight(ex[0])).toBe(3);
    expect(task.lossWeight(ex[1])).toBe(0);
    expect(task.lossWeight(ex[2])).toBe(2);
    tidy(() => {
      const b = task.collate(ex, 'cpu');
      expect(b.labels!.tolist()).toEqual([
        [1, 2, 3, 4],
        [5, -100, -100, -100],
        [7, 8, 9, -100],
      ]);
      const out = task.forward(model, b);
      const V = gpt2.vocab_size as number;
      const T = 4;
      const lg = out.logits.toArray() as Float32Array;
      const lab = [
        [1, 2, 3, 4],
        [5, -100, -100, -100],
        [7, 8, 9, -100],
      ];
      let s = 0;
      let n = 0;
      for (let bb = 0; bb < 3; bb++)
        for (let t = 0; t + 1 < T; t++) {
          const y = lab[bb][t + 1];
          if (y === -100) continue;
          s -= logSoftmaxRow(lg, (bb * T + t) * V, V)[y];
          n++;
        }
      expect(n).toBe(5);
      expect(out.loss!.item()).toBeCloseTo(s / n, 5);
      expect(task.predict(out)).toEqual([]);
    });
    const m = task.metrics([], [], Math.log(3));
    expect(m.perplexity).toBeCloseTo(3, 10);
    model.dispose();
  });
});

describe('instruct', () => {
  test('Alpaca prompt masked out of the labels; response and EOS kept', () => {
    const task = createTask('instruct', { tokenizer: tok, config: gpt2, maxLength: 1024 });
    const [e] = task.prepare([{ instruction: 'Say hi', input: '', output: 'hi' }]);
    const prompt = alpacaPrompt('Say hi');
    expect(prompt).toContain('### Instruction:\nSay hi');
    expect(prompt).not.toContain('### Input:');
    expect(alpacaPrompt('a', 'b')).toContain('### Input:\nb');
    const p = Buffer.from(prompt, 'utf8').length;
    expect(e.inputIds.length).toBe(p + 3);
    expect(e.labels!.slice(0, p).every((v) => v === -100)).toBe(true);
    expect(e.labels!.slice(p)).toEqual([104, 105, 256]);
    expect(task.lossWeight(e)).toBe(3);
    expect(tok.decode(e.inputIds.slice(0, p))).toBe(prompt);
  });

  test('chat template when the tokenizer has one', () => {
    const files = (tok as unknown as { toFiles(): Record<string, string> }).toFiles();
    const HfTok = tok.constructor as unknown as { fromFiles(f: unknown): typeof tok };
    const withTpl = HfTok.fromFiles({
      tokenizer: JSON.parse(files['tokenizer.json']),
      config: JSON.parse(files['tokenizer_config.json']),
      chatTemplate:
        '{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}',
    });
    const task = createTask('instruct', { tokenizer: withTpl, config: gpt2 });
    const [e] = task.prepare([{ instruction: 'Q', output: 'A' }]);
    const prompt = '<user>Q\n<assistant>';
    // As the chat task: the assistant's content (this template closes turns with no special token).
    expect(e.labels!.filter((v) => v !== -100)).toEqual([65]);
    expect(e.labels!.slice(0, prompt.length).every((v) => v === -100)).toBe(true);
  });

  test('rows without instruction/output are E_FORMAT', () => {
    const task = createTask('instruct', { tokenizer: tok, config: gpt2 });
    expect(codeOf(() => task.prepare([{ text: 'x' }]))).toBe('E_FORMAT');
    expect(codeOf(() => createTask('nope' as never, { tokenizer: tok, config: gpt2 }))).toBe('E_ARG');
  });
});
