/** Checkpoint configs small enough for a test to train in a second, with the tokenizer's special ids. */
import type { HFConfig } from '../../lib/models';

interface SpecialIds {
  vocabSize: number;
  eosTokenId: number | undefined;
  bosTokenId: number | undefined;
  padTokenId: number | undefined;
}

/** GPT-2: 1 layer, width 16, 2 heads, 32 positions, no dropout. */
export function tinyGpt2Config(tok: SpecialIds): HFConfig {
  return {
    model_type: 'gpt2',
    vocab_size: tok.vocabSize,
    n_embd: 16,
    n_layer: 1,
    n_head: 2,
    n_positions: 32,
    n_inner: 32,
    resid_pdrop: 0,
    embd_pdrop: 0,
    attn_pdrop: 0,
    eos_token_id: tok.eosTokenId,
    bos_token_id: tok.bosTokenId,
    pad_token_id: tok.padTokenId,
  };
}

/** GPT-2 sequence classification over a 12-token vocabulary: 1 layer, width 16, 2 heads, 2 labels, no dropout. */
export const tinyGpt2Classifier: HFConfig = {
  model_type: 'gpt2',
  vocab_size: 12,
  n_positions: 16,
  n_embd: 16,
  n_layer: 1,
  n_head: 2,
  num_labels: 2,
  pad_token_id: 0,
  initializer_range: 0.2,
  embd_pdrop: 0,
  attn_pdrop: 0,
  resid_pdrop: 0,
};

/** Llama over a 48-token vocabulary: 2 layers, width 32, 4 query and 2 key/value heads, pad id 0. */
export const tinyLlama: HFConfig = {
  model_type: 'llama',
  vocab_size: 48,
  hidden_size: 32,
  intermediate_size: 48,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 32,
  pad_token_id: 0,
};

/** Llama for the byte tokenizer: 1 layer, width 64, 4 query and 2 key/value heads, 64 positions, untied embeddings. */
export function tinyByteLlamaConfig(tok: SpecialIds): HFConfig {
  return {
    model_type: 'llama',
    vocab_size: tok.vocabSize,
    hidden_size: 64,
    intermediate_size: 128,
    num_hidden_layers: 1,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    max_position_embeddings: 64,
    eos_token_id: tok.eosTokenId,
    bos_token_id: tok.bosTokenId,
    pad_token_id: tok.padTokenId,
    tie_word_embeddings: false,
  };
}
