/**
 * Which class builds a model: a registry keyed by config.model_type and task, and by transformers'
 * architecture names (config.architectures[0]). createModel() picks the class, randomly
 * initialises it with transformers' scheme from a seed, and returns it in train mode.
 */
import { SiftError } from '../engine/errors';
import type { HFConfig, ModelOptions, ModelTask, PreTrainedModel } from './common';
import { GPT2BaseModel, GPT2LMHeadModel, GPT2ForSequenceClassification } from './gpt2';
import { BertBaseModel, BertForSequenceClassification, RobertaForSequenceClassification } from './bert';
import { DecoderBaseModel, DecoderForCausalLM, DecoderForSequenceClassification, DECODER_FAMILIES } from './decoder';

export type ModelConstructor = new (config: HFConfig, opts?: ModelOptions) => PreTrainedModel;

interface Entry {
  /** Task when the config names no supported architecture. */
  defaultTask: ModelTask;
  tasks: Partial<Record<ModelTask, { architecture: string; ctor: ModelConstructor }>>;
}

const registry = new Map<string, Entry>();

/** Adds (or replaces) a model type's classes. */
export function registerModelType(modelType: string, entry: Entry): void {
  registry.set(modelType, entry);
}

registerModelType('gpt2', {
  defaultTask: 'causal-lm',
  tasks: {
    'causal-lm': { architecture: 'GPT2LMHeadModel', ctor: GPT2LMHeadModel },
    'sequence-classification': { architecture: 'GPT2ForSequenceClassification', ctor: GPT2ForSequenceClassification },
    base: { architecture: 'GPT2Model', ctor: GPT2BaseModel },
  },
});
registerModelType('bert', {
  defaultTask: 'base',
  tasks: {
    'sequence-classification': { architecture: 'BertForSequenceClassification', ctor: BertForSequenceClassification },
    base: { architecture: 'BertModel', ctor: BertBaseModel },
  },
});
registerModelType('roberta', {
  defaultTask: 'base',
  tasks: {
    'sequence-classification': { architecture: 'RobertaForSequenceClassification', ctor: RobertaForSequenceClassification },
    base: { architecture: 'RobertaModel', ctor: BertBaseModel },
  },
});
// The LLaMA-lineage decoders share one implementation (decoder.ts) with transformers' class names per family.
for (const [modelType, prefix] of Object.entries(DECODER_FAMILIES)) {
  registerModelType(modelType, {
    defaultTask: 'causal-lm',
    tasks: {
      'causal-lm': { architecture: `${prefix}ForCausalLM`, ctor: DecoderForCausalLM },
      'sequence-classification': { architecture: `${prefix}ForSequenceClassification`, ctor: DecoderForSequenceClassification },
      base: { architecture: `${prefix}Model`, ctor: DecoderBaseModel },
    },
  });
}

/** Model types with a registered implementation. */
export function supportedModelTypes(): string[] {
  return [...registry.keys()];
}

/** model_type from the config, or from its architecture name when model_type is absent. */
function modelTypeOf(config: HFConfig): string {
  if (typeof config.model_type === 'string') return config.model_type;
  const arch = Array.isArray(config.architectures) ? config.architectures[0] : undefined;
  if (arch) {
    for (const [type, e] of registry) {
      if (Object.values(e.tasks).some((t) => t!.architecture === arch)) return type;
    }
  }
  throw new SiftError('E_UNSUPPORTED', `config.json has no model_type${arch ? ` and architecture '${arch}' is unknown` : ''}`);
}

/** The task a config's first architecture stands for, or null if it is not one of ours. */
function taskOfArchitecture(entry: Entry, arch: string | undefined): ModelTask | null {
  if (!arch) return null;
  for (const [task, t] of Object.entries(entry.tasks)) if (t!.architecture === arch) return task as ModelTask;
  return null;
}

/** Resolves the class a config and task build (without building it). */
export function resolveModelClass(
  config: HFConfig,
  task?: ModelTask,
): { modelType: string; task: ModelTask; architecture: string; ctor: ModelConstructor } {
  if (config === null || typeof config !== 'object') throw new SiftError('E_ARG', 'createModel: config must be a config.json object');
  const modelType = modelTypeOf(config);
  const entry = registry.get(modelType);
  if (!entry)
    throw new SiftError('E_UNSUPPORTED', `model_type '${modelType}' is not supported (supported: ${supportedModelTypes().join(', ')})`);
  const arch = Array.isArray(config.architectures) ? config.architectures[0] : undefined;
  const t = task ?? taskOfArchitecture(entry, arch) ?? entry.defaultTask;
  const impl = entry.tasks[t];
  if (!impl)
    throw new SiftError(
      'E_UNSUPPORTED',
      `model_type '${modelType}' has no '${t}' head (available: ${Object.keys(entry.tasks).join(', ')})`,
    );
  return { modelType, task: t, architecture: impl.architecture, ctor: impl.ctor };
}

export interface CreateModelOptions extends ModelOptions {
  task?: ModelTask;
}

/**
 * Builds a model from a Hugging Face config object, randomly initialised (transformers' scheme,
 * seeded). `model.config` is a copy of the config with model_type and architectures filled in.
 */
export function createModel(config: HFConfig, opts: CreateModelOptions = {}): PreTrainedModel {
  const r = resolveModelClass(config, opts.task);
  const cfg: HFConfig = { ...config, model_type: r.modelType, architectures: [r.architecture] };
  const model = new r.ctor(cfg, opts);
  if (opts.quantize) model.quantize(opts.quantize);
  return model;
}
