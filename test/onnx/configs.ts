/** Tiny random configurations of every architecture sift-ft exports, and a batch for each. */
import type { HFConfig, ModelTask } from '../../lib/models';

export interface ArchCase {
  name: string;
  config: HFConfig;
  task: ModelTask;
  tokenTypes: boolean;
}

const gpt2: HFConfig = { model_type: 'gpt2', vocab_size: 61, n_positions: 32, n_embd: 16, n_layer: 2, n_head: 2, initializer_range: 0.2 };
const bert: HFConfig = {
  model_type: 'bert',
  vocab_size: 53,
  hidden_size: 16,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  intermediate_size: 24,
  max_position_embeddings: 32,
  type_vocab_size: 2,
  initializer_range: 0.2,
  num_labels: 3,
};
const roberta: HFConfig = { ...bert, model_type: 'roberta', type_vocab_size: 1, pad_token_id: 1, max_position_embeddings: 40 };
const llama: HFConfig = {
  model_type: 'llama',
  vocab_size: 59,
  hidden_size: 16,
  intermediate_size: 20,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 32,
  rope_theta: 5000,
  initializer_range: 0.2,
  tie_word_embeddings: false,
};

export const CASES: ArchCase[] = [
  { name: 'gpt2-lm', config: gpt2, task: 'causal-lm', tokenTypes: false },
  { name: 'gpt2-cls', config: { ...gpt2, num_labels: 3, pad_token_id: 0 }, task: 'sequence-classification', tokenTypes: false },
  { name: 'bert-cls', config: bert, task: 'sequence-classification', tokenTypes: true },
  { name: 'roberta-cls', config: roberta, task: 'sequence-classification', tokenTypes: false },
  { name: 'llama-lm', config: llama, task: 'causal-lm', tokenTypes: false },
  { name: 'llama-lm-tied', config: { ...llama, tie_word_embeddings: true, num_key_value_heads: 4 }, task: 'causal-lm', tokenTypes: false },
  { name: 'llama-cls', config: { ...llama, num_labels: 2, pad_token_id: 0 }, task: 'sequence-classification', tokenTypes: false },
];

/** Two rows, the second right-padded (pad id 0, or RoBERTa's 1), ids avoiding the pad id elsewhere. */
export function batchFor(c: ArchCase): { ids: number[][]; mask: number[][]; types: number[][] } {
  const pad = c.config.model_type === 'roberta' ? 1 : 0;
  const T = 7;
  const ids = [
    [5, 9, 12, 3, 17, 22, 8],
    [7, 4, 30, 11, pad, pad, pad],
  ];
  const mask = ids.map((r, b) => r.map((_, t) => (b === 1 && t >= 4 ? 0 : 1)));
  const types = ids.map((r) => r.map((_, t) => (c.tokenTypes && t >= 3 ? 1 : 0)));
  void T;
  return { ids, mask, types };
}
