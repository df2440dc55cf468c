/**
 * `sift-ft plan`: the peak memory a training run will need and its parts, predicted from the
 * model's config before anything is allocated, and whether it fits the device.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { SiftError } from '../engine/errors';
import { backends } from '../engine/runtime';
import { loadConfig } from '../io/hf';
import type { HFConfig } from '../models/common';
import { planMemory, MemoryPlan, PlanOptions, QuantizeMode } from '../plan/plan';
import type { MethodName, TaskName } from '../train/types';
import type { FlagSpec, Parsed } from './args';
import { activationCheckpointingFlag, fmtBytes, fmtInt, mixedPrecisionFlag, requireFlag, writeJson } from './common';

export const planFlags: Record<string, FlagSpec> = {
  model: { type: 'string', help: 'model folder or its config.json' },
  method: { type: 'string', help: 'training method', choices: ['sift', 'full', 'lora'], default: 'sift' },
  task: {
    type: 'string',
    help: 'causal-lm, instruct, chat, classify or regress',
    choices: ['causal-lm', 'instruct', 'chat', 'classify', 'regress'],
    default: 'causal-lm',
  },
  'sparse-rate': { type: 'number', help: 'SIFT: share of each target weight that is trained', default: 0.01 },
  'lora-rank': { type: 'number', help: 'LoRA rank', default: 8 },
  'batch-size': { type: 'number', help: 'micro-batch size', default: 8 },
  'max-length': { type: 'number', help: "tokens per example (default: the model's positions, at most 1024 for causal-lm, 512 otherwise)" },
  quantize: { type: 'string', help: 'frozen weights stored quantized', choices: ['int8', 'nf4'] },
  'activation-checkpointing': activationCheckpointingFlag,
  'mixed-precision': mixedPrecisionFlag,
  device: { type: 'string', help: 'the device to plan for', choices: ['cpu', 'cuda'], default: 'cpu' },
  json: { type: 'boolean', help: 'print the plan as JSON' },
};

export const planHelp = 'Predicts the peak memory of a training run and its parts, and whether it fits the device.';

/** What the device offers; null bytes where it cannot be checked (no usable GPU). */
export interface DeviceCapacity {
  device: 'cpu' | 'cuda';
  name: string;
  totalBytes: number | null;
  freeBytes: number | null;
}

export function deviceCapacity(device: 'cpu' | 'cuda'): DeviceCapacity {
  if (device === 'cpu') return { device, name: `${os.cpus().length} CPU threads, RAM`, totalBytes: os.totalmem(), freeBytes: os.freemem() };
  const b = backends();
  const d = b.cuda.usable ? b.cuda.devices[0] : undefined;
  if (!d)
    return { device, name: `CUDA (${b.cuda.compiled ? b.cuda.status : 'not compiled in this build'})`, totalBytes: null, freeBytes: null };
  return { device, name: `cuda:0 ${d.name}`, totalBytes: d.totalMemory, freeBytes: d.freeMemory };
}

/** true / false, or null when the device's memory cannot be read. A run fits when the peak is within the device's free memory. */
export function fits(plan: MemoryPlan, cap: DeviceCapacity): boolean | null {
  if (cap.freeBytes === null) return null;
  return plan.peakBytes <= cap.freeBytes;
}

/** config.json of a model folder, or a config.json file itself. */
export function readPlanConfig(p: string): HFConfig {
  if (!fs.existsSync(p)) throw new SiftError('E_IO', `--model: ${p} does not exist`);
  if (fs.statSync(p).isFile()) {
    let cfg: unknown;
    try {
      cfg = JSON.parse(fs.readFileSync(p, 'utf8'));
    } catch (e) {
      throw new SiftError('E_FORMAT', `${p}: not JSON (${(e as Error).message})`);
    }
    if (!cfg || typeof cfg !== 'object' || Array.isArray(cfg)) throw new SiftError('E_FORMAT', `${p}: expected a JSON object`);
    return cfg as HFConfig;
  }
  return loadConfig(path.resolve(p)) as HFConfig;
}

function positive(v: unknown, flag: string): number | undefined {
  if (v === undefined) return undefined;
  if (!Number.isInteger(v) || (v as number) < 1) throw new SiftError('E_ARG', `flag --${flag} must be a positive integer, got ${v}`);
  return v as number;
}

export function planOptionsFrom(f: Parsed): PlanOptions {
  const rate = f['sparse-rate'] as number;
  if (!(rate > 0 && rate <= 1)) throw new SiftError('E_ARG', `flag --sparse-rate must be in (0, 1], got ${rate}`);
  return {
    task: f.task as TaskName,
    method: f.method as MethodName,
    sparseRate: rate,
    loraRank: positive(f['lora-rank'], 'lora-rank'),
    batchSize: positive(f['batch-size'], 'batch-size'),
    maxLength: positive(f['max-length'], 'max-length'),
    quantize: f.quantize as QuantizeMode | undefined,
    activationCheckpointing: !!f['activation-checkpointing'],
    mixedPrecision: f['mixed-precision'] as 'bf16' | 'none' | undefined,
    device: f.device as 'cpu' | 'cuda',
  };
}

export function runPlan(f: Parsed): number {
  const modelPath = requireFlag(f.model as string | undefined, 'model', 'the model folder or its config.json');
  const config = readPlanConfig(modelPath);
  const opts = planOptionsFrom(f);
  const plan = planMemory(config, opts);
  const cap = deviceCapacity(plan.device);
  const ok = fits(plan, cap);
  if (f.json) {
    writeJson({ ...plan, deviceMemory: { name: cap.name, totalBytes: cap.totalBytes, freeBytes: cap.freeBytes }, fits: ok });
    return 0;
  }
  const p = plan.parts;
  const row = (k: string, v: number, note = '') => `  ${k.padEnd(20)} ${fmtBytes(v).padStart(11)}${note ? `  ${note}` : ''}`;
  const lines = [
    `${plan.model}, ${fmtInt(plan.parameters)} parameters; ${plan.method}${plan.method === 'sift' ? ` ${opts.sparseRate}` : ''}: ${fmtInt(plan.trainable)} trained; batch ${plan.batchSize} x ${plan.maxLength} tokens, ${plan.weightDType}${plan.quantize ? `, frozen weights ${plan.quantize}` : ''}${plan.activationCheckpointing ? ', activation checkpointing' : ''}`,
    row('weights', p.weights),
    row('quantized weights', p.quantizedWeights),
    row(
      'trainable state',
      p.trainableState,
      `masters ${fmtBytes(p.masters)}, moments ${fmtBytes(p.moments)}, indices ${fmtBytes(p.indices)}`,
    ),
    row('gradients', p.gradients),
    row(
      'activations',
      p.activations,
      `${plan.activationDetail.blocks} blocks x ${fmtBytes(plan.activationDetail.perBlock)}${plan.activationCheckpointing ? ' (one block recomputed at a time)' : ''}`,
    ),
    row('workspace', p.workspace),
    row('peak', plan.peakBytes),
  ];
  if (ok === null) lines.push(`${cap.name}: cannot check the device's memory here`);
  else lines.push(`${cap.name}: ${fmtBytes(cap.freeBytes!)} free of ${fmtBytes(cap.totalBytes!)}: ${ok ? 'fits' : 'does NOT fit'}`);
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}

/** One line for finetune: null when the run fits (or cannot be planned or checked). */
export function planWarning(config: HFConfig, opts: PlanOptions): string | null {
  let plan: MemoryPlan;
  try {
    plan = planMemory(config, opts);
  } catch {
    return null;
  }
  const cap = deviceCapacity(plan.device);
  if (fits(plan, cap) !== false) return null;
  return `warning: plan predicts a peak of ${fmtBytes(plan.peakBytes)} for this run, more than the ${fmtBytes(cap.freeBytes!)} free on ${cap.name} (sift-ft plan shows the parts)`;
}
