/** Model graphs in the Hugging Face layout: architectures, registry, weights, generation. */
export * from './common';
export { Conv1D, LMHead, ModuleList } from './layers';
export { GPT2BaseModel, GPT2LMHeadModel, GPT2ForSequenceClassification, GPT2Model } from './gpt2';
export { BertBaseModel, BertForSequenceClassification, RobertaForSequenceClassification, BertBody, robertaPositions } from './bert';
export { LlamaBaseModel, LlamaForCausalLM, LlamaForSequenceClassification, LlamaModel, llamaInvFreq } from './llama';
export {
  DecoderBaseModel,
  DecoderForCausalLM,
  DecoderForSequenceClassification,
  DecoderModel,
  GemmaRMSNorm,
  decoderParams,
  DECODER_FAMILIES,
} from './decoder';
export type { DecoderParams, DecoderFamily } from './decoder';
export { ropeSpec, ropeInvFreq } from './rope';
export type { RopeSpec, RopeType } from './rope';
export { createModel, resolveModelClass, registerModelType, supportedModelTypes } from './registry';
export type { CreateModelOptions, ModelConstructor } from './registry';
export { loadStateDictInto, stateDict, assignInto, resolveKey } from './weights';
export type { WeightLoadReport, WeightLoadOptions } from './weights';
export { generate, generateStream, sampleToken, argmaxOf, SeededRandom } from './generate';
export type { GenerateOptions } from './generate';
