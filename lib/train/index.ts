/** The training layer: data readers, tasks, batching, metrics, LoRA and the Trainer. */
export * from './types';
export { readRows, readLines, loadRows, formatOf, DelimitedParser } from './data';
export type { DataFormat, ReadOptions } from './data';
export { TokenBlockStream, readDocuments, sampleText, expandDataPaths } from './stream';
export type { TokenBlockOptions, TextStreamOptions } from './stream';
export { createTask, modelTaskFor, alpacaPrompt } from './tasks';
export type { Task, TaskOptions } from './tasks';
export { BatchSampler, SeededRng, shuffleInPlace, deriveSeed, padSequences, padTo } from './batching';
export type { SamplerOptions } from './batching';
export { accuracy, f1, mcc, pearson, spearman, ranks, perplexity } from './metrics';
export { applyLora, LoraAdapters, defaultLoraTargets } from './lora';
export type { LoraOptions, LoraLayer } from './lora';
export { Trainer, listCheckpoints, latestCheckpoint, metricName } from './trainer';
export type { BestState, TrainerState } from './trainer';
export { DenseAdamW } from './optim';
