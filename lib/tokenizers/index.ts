/** Tokenizers: Hugging Face tokenizer.json files and byte-level BPE for models trained from scratch. */
import type { DType } from '../engine/dtype';
import type { Tensor } from '../engine/tensor';
import { tensor } from '../autograd/creation';
import type { BatchEncoding } from './types';
import { SiftError } from '../engine/errors';

export { HfTokenizer, loadTokenizer, truncate, SPECIAL_TOKEN_NAMES } from './tokenizer';
export type { TokenizerFiles, ChatMessage, SpecialTokenName, ChatTemplateOptions } from './tokenizer';
export { renderChatTemplate, hasGenerationBlocks } from './tokenizer';
export { trainByteBpe, createByteTokenizer, byteLevelTokenizerFiles, byteLevelWords, BYTE_TO_CHAR } from './bytelevel';
export type { ByteTokenizerOptions, TrainByteBpeOptions } from './bytelevel';
export { learnBpeMerges } from './train';
export type { LearnBpeOptions } from './train';
export type {
  TextTokenizer,
  Encoding,
  BatchEncoding,
  EncodeOptions,
  BatchEncodeOptions,
  DecodeOptions,
  TextInput,
  TruncationStrategy,
} from './types';

/** A padded batch as [batch, seq] integer tensors (i64 by default, as transformers feeds them). */
export function batchToTensors(
  batch: BatchEncoding,
  opts: { dtype?: DType; device?: string } = {},
): { inputIds: Tensor; attentionMask: Tensor; tokenTypeIds: Tensor } {
  const dtype = opts.dtype ?? 'i64';
  const b = batch.inputIds.length;
  const n = b === 0 ? 0 : batch.inputIds[0].length;
  const mk = (rows: number[][]): Tensor => {
    const flat = new Array<number>(b * n);
    rows.forEach((r, i) => {
      if (r.length !== n) throw new SiftError('E_SHAPE', 'batchToTensors: rows of different lengths (pad the batch first)');
      for (let j = 0; j < n; j++) flat[i * n + j] = r[j];
    });
    return tensor(flat, [b, n], { dtype, device: opts.device });
  };
  return { inputIds: mk(batch.inputIds), attentionMask: mk(batch.attentionMask), tokenTypeIds: mk(batch.tokenTypeIds) };
}
export { SentencePieceTokenizer, loadSentencePiece, PieceType, SPIECE_UNDERLINE } from './sentencepiece';
