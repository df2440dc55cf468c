/** The uniform tokenizer interface the models, data pipelines and CLI use, whatever the tokenizer type. */

export type TruncationStrategy = 'longest_first' | 'only_first' | 'only_second';

export interface EncodeOptions {
  /** Add the special tokens the model expects ([CLS] a [SEP], <s> a </s>, ...); default true. */
  addSpecialTokens?: boolean;
  /** Length limit in tokens, special tokens included (used by truncation and by 'max_length' padding). */
  maxLength?: number;
  /**
   * true (= 'longest_first') or a strategy; default: on when maxLength is given. longest_first
   * shortens the longer sequence of a pair first, as the Rust tokenizers do.
   */
  truncation?: boolean | TruncationStrategy;
  /** Which end to cut; default from tokenizer_config.json (truncation_side) or 'right'. */
  truncationSide?: 'right' | 'left';
}

export interface BatchEncodeOptions extends EncodeOptions {
  /** 'longest' (default): pad to the longest in the batch; 'max_length': to maxLength; false: no padding. */
  padding?: boolean | 'longest' | 'max_length';
  /** Default from tokenizer_config.json (padding_side) or 'right'; decoder-only generation wants 'left'. */
  paddingSide?: 'right' | 'left';
  /** Round padded lengths up to a multiple of this. */
  padToMultipleOf?: number;
}

export interface Encoding {
  inputIds: number[];
  attentionMask: number[];
  /** Segment ids: 0 for the first text, 1 for the second of a pair (all 0 for models without segments, e.g. RoBERTa). */
  tokenTypeIds: number[];
}

export interface BatchEncoding {
  inputIds: number[][];
  attentionMask: number[][];
  tokenTypeIds: number[][];
}

export interface DecodeOptions {
  skipSpecialTokens?: boolean;
  /** Remove spaces before punctuation (" ." -> "."); default from tokenizer_config.json, else false. */
  cleanUpTokenizationSpaces?: boolean;
}

/** A text or a sentence pair. */
export type TextInput = string | [string, string];

export interface TextTokenizer {
  encode(text: string, pair?: string | null, opts?: EncodeOptions): Encoding;
  encodeBatch(texts: TextInput[], opts?: BatchEncodeOptions): BatchEncoding;
  decode(ids: ArrayLike<number | bigint>, opts?: DecodeOptions): string;
  readonly vocabSize: number;
  readonly padTokenId: number | undefined;
  readonly bosTokenId: number | undefined;
  readonly eosTokenId: number | undefined;
}
