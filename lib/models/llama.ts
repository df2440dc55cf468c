/** LLaMA's names for the shared decoder of decoder.ts (LlamaForCausalLM is DecoderForCausalLM built from a llama config). */
export {
  DecoderForCausalLM as LlamaForCausalLM,
  DecoderForSequenceClassification as LlamaForSequenceClassification,
  DecoderBaseModel as LlamaBaseModel,
  DecoderModel as LlamaModel,
  llamaParams,
  llamaInvFreq,
} from './decoder';
export type { DecoderParams as LlamaParams } from './decoder';
