/**
 * End-to-end training benchmark: steps/s, tokens/s and peak memory of one optimizer step
 * (forward, backward, update) for GPT-2 124M (transformers' default GPT2Config) and a LLaMA-style
 * 220M model (hidden 1024, intermediate 2816, 12 layers, 16 heads, vocabulary 32000), random
 * weights and tokens, batch 8 x 512, for SIFT (1% of the attention and MLP weights; peak memory
 * also at 0.1% and 5%), full fine-tuning (native fused AdamW, f32 masters) and LoRA (r = 8 on the
 * same modules). On CUDA the weights and activations are bf16 with f32 optimizer state (the
 * mixed precision of TrainerOptions); on the CPU the models shrink to a small config and stay f32.
 *
 * Timing: a selection step (SIFT), warm-up steps, then timed steps between two device
 * synchronisations (a training loop does not wait inside a step, so neither does this; on the CPU
 * each step is waited for, see benchOne). Peak
 * memory: the allocator's peak over the timed steps, weights and optimizer state included (as
 * torch.cuda.max_memory_allocated in the PyTorch peers). Prints one JSON object per run, then a table.
 *
 * Flags: --cpu-only, --cuda-only, --quick, --small (small config on CUDA too), --full-size (the full
 * configs on the CPU too: slow, but it measures the CUDA run's memory ahead of it), --models=gpt2,llama,
 * --methods=sift,full,lora, --rates=0.001,0.01,0.05 (SIFT rates; 0.01 is the headline one),
 * --batch=B --seq=T, --warmup=N, --steps=N (timed steps; default from a time budget),
 * --budget-ms=MS (timed time per run), --dtype=bf16|f32.
 */
import { tidy, keep, synchronize, backends, liveTensors, emptyCache, resetPeakMemory, Tensor, CudaGraphStep, SiftError } from '../lib';
import { tensor } from '../lib/autograd/creation';
import { native } from '../lib/engine/native';
import { createModel } from '../lib/models/registry';
import type { HFConfig, PreTrainedModel } from '../lib/models/common';
import { Sift } from '../lib/sift/sift';
import { SparseAdamW, DenseSlots } from '../lib/sift/optimizer';

export const description = 'end-to-end training step (GPT-2 124M, LLaMA-style 220M; sift, full, lora): tokens/s and peak memory';

export type ModelKey = 'gpt2' | 'llama';
export type BenchMethod = 'sift' | 'full' | 'lora';

export interface ModelSpec {
  key: ModelKey;
  /** Name in the output: gpt2-124m, llama-220m, or gpt2-small / llama-small. */
  name: string;
  config: HFConfig;
  /** Modules that SIFT and LoRA target. */
  targets: string[];
}

/** Full-size configs, as the PyTorch peers build them (bench/peers/torch_train.py). */
export function modelSpec(key: ModelKey, small: boolean): ModelSpec {
  if (key === 'gpt2') {
    const config: HFConfig = small
      ? { model_type: 'gpt2', vocab_size: 2048, n_positions: 256, n_embd: 128, n_layer: 2, n_head: 4 }
      : // transformers' GPT2Config() defaults, written out.
        {
          model_type: 'gpt2',
          vocab_size: 50257,
          n_positions: 1024,
          n_embd: 768,
          n_layer: 12,
          n_head: 12,
          activation_function: 'gelu_new',
          resid_pdrop: 0.1,
          embd_pdrop: 0.1,
          attn_pdrop: 0.1,
          layer_norm_epsilon: 1e-5,
          initializer_range: 0.02,
        };
    return { key, name: small ? 'gpt2-small' : 'gpt2-124m', config, targets: ['c_attn', 'c_proj', 'c_fc'] };
  }
  const config: HFConfig = small
    ? {
        model_type: 'llama',
        vocab_size: 2048,
        hidden_size: 128,
        intermediate_size: 352,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 4,
        max_position_embeddings: 256,
      }
    : {
        model_type: 'llama',
        vocab_size: 32000,
        hidden_size: 1024,
        intermediate_size: 2816,
        num_hidden_layers: 12,
        num_attention_heads: 16,
        num_key_value_heads: 16,
        max_position_embeddings: 2048,
        rms_norm_eps: 1e-6,
        rope_theta: 10000,
        hidden_act: 'silu',
        tie_word_embeddings: false,
      };
  return {
    key,
    name: small ? 'llama-small' : 'llama-220m',
    config,
    targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
  };
}

export interface TrainRow {
  bench: 'train';
  status: 'ok' | 'error' | 'skipped';
  error?: string;
  device: string;
  deviceName: string;
  model: string;
  params: number;
  method: BenchMethod;
  /** SIFT rate; null for full and lora. */
  rate: number | null;
  dtype: string;
  batch: number;
  seq: number;
  trainable: number;
  warmup: number;
  steps: number;
  msPerStep: number;
  stepsPerSec: number;
  tokensPerSec: number;
  /** Peak allocated bytes over the timed steps (weights and optimizer state included). */
  peakBytes: number;
  /** Allocated bytes before the timed steps (weights, optimizer state). */
  steadyBytes: number;
  loss: number;
}

type ApplyLora = (model: PreTrainedModel, opts: { rank?: number; alpha?: number; dropout?: number; targetModules?: string[] }) => unknown;

/** lib/train/lora.ts's applyLora when it exists (it is being written alongside this bench). */
export function loadApplyLora(): ApplyLora | null {
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const m = require('../lib/train/lora') as { applyLora?: ApplyLora };
    return typeof m.applyLora === 'function' ? m.applyLora : null;
  } catch {
    return null;
  }
}

/** Deterministic token ids in [0, vocab), as JS rows (labels: the causal-LM loss reads them on the host). */
export function randomTokens(B: number, T: number, vocab: number, seed: number): number[][] {
  let s = seed >>> 0 || 1;
  const rows: number[][] = [];
  for (let b = 0; b < B; b++) {
    const r: number[] = [];
    for (let t = 0; t < T; t++) {
      s ^= s << 13;
      s >>>= 0;
      s ^= s >>> 17;
      s ^= s << 5;
      s >>>= 0;
      r.push(s % vocab);
    }
    rows.push(r);
  }
  return rows;
}

export interface RunSetup {
  model: PreTrainedModel;
  trainable: number;
  /** One optimizer step; returns the loss tensor (kept) only when asked, else null. */
  step(keepLoss?: boolean): Tensor | null;
  dispose(): void;
}

export interface SetupOptions {
  device: string;
  dtype: 'bf16' | 'f32';
  batch: number;
  seq: number;
  rate: number;
  seed?: number;
  lr?: number;
  /**
   * Replay the forward and backward as a CUDA graph (captured at the first step; SIFT only: its
   * gradients accumulate into persistent buffers, which the eager optimizer step then reads).
   */
  graphs?: boolean;
  /** Dropout off (implied by graphs: a captured step would replay the first step's dropout masks). */
  noDropout?: boolean;
}

/** The config with every dropout probability at 0. */
function withoutDropout(config: HFConfig): HFConfig {
  const out: HFConfig = { ...config };
  for (const [k, v] of Object.entries(out)) if (/drop/.test(k) && typeof v === 'number') out[k] = 0;
  return out;
}

/**
 * Builds a model and the method's optimizer, runs the SIFT selection step, and returns a step
 * function (bench/profile.ts times the same step per op).
 */
export function setupRun(spec: ModelSpec, method: BenchMethod, o: SetupOptions): RunSetup {
  const vocab = Number(spec.config.vocab_size);
  const rows = randomTokens(o.batch, o.seq, vocab, o.seed ?? 1234);
  const flat = new Int32Array(o.batch * o.seq);
  rows.forEach((r, b) => flat.set(r, b * o.seq));
  const config = o.graphs || o.noDropout ? withoutDropout(spec.config) : spec.config;
  const model = createModel(config, { task: 'causal-lm', device: o.device, dtype: o.dtype, seed: o.seed ?? 0 });
  model.train();
  const ids = keep(tensor(flat, [o.batch, o.seq], { dtype: 'i32', device: o.device }));
  const lr = o.lr ?? 1e-5;
  const forwardBackward = (keepLoss: boolean): Tensor | null =>
    tidy(() => {
      const out = model.forward({ inputIds: ids, labels: rows });
      out.loss!.backward();
      return keepLoss ? out.loss!.detach() : null;
    });
  const disposers: (() => void)[] = [() => ids.dispose(), () => model.dispose()];
  const hp = (step: number) => ({ lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step });

  /** Native fused AdamW over the given params (f32 masters for low-precision weights), no clipping. */
  const denseAdam = (params: Tensor[]) => {
    const slots = new DenseSlots(params.map((p, i) => [p.name ?? `param${i}`, p] as [string, Tensor]));
    disposers.push(() => slots.dispose());
    let count = 0;
    return () => {
      slots.update(hp(++count), null);
      slots.zeroGrad();
    };
  };

  let update: () => void;
  let trainable: number;
  if (method === 'sift') {
    const sift = new Sift(model, { sparseRate: o.rate, targetModules: spec.targets });
    forwardBackward(false); // selection batch: scores only, no update
    sift.select();
    const opt = new SparseAdamW(sift, { lr, weightDecay: 0 });
    disposers.unshift(
      () => opt.dispose(),
      () => sift.dispose(),
    );
    const summary = sift.summary();
    trainable = summary.trainable;
    if (o.graphs && summary.rows.some((r) => r.kind === 'dense')) {
      for (const d of disposers) d();
      throw new SiftError(
        'E_UNSUPPORTED',
        'graphs: modules trained densely get fresh gradient tensors each step; the captured step needs persistent ones',
      );
    }
    update = () => opt.step();
  } else if (method === 'full') {
    const params = model.parameters().filter((p) => ['f32', 'bf16', 'f16', 'f64'].includes(p.dtype));
    for (const p of params) p.requiresGrad = true;
    trainable = params.reduce((a, p) => a + p.size, 0);
    update = denseAdam(params);
  } else {
    const applyLora = loadApplyLora();
    if (!applyLora) {
      for (const d of disposers) d();
      throw Object.assign(new Error('lib/train/lora.ts (applyLora) is not available yet'), { skipped: true });
    }
    const adapters = applyLora(model, { rank: 8, alpha: 16, dropout: 0, targetModules: spec.targets }) as
      | { parameters?: () => Tensor[]; dispose?: () => void }
      | undefined;
    // Adapters are the trainable tensors; the base is frozen, as PEFT does.
    const params = adapters?.parameters
      ? adapters.parameters()
      : model
          .namedParameters()
          .filter(([n]) => /lora_/.test(n))
          .map(([, p]) => p);
    const set = new Set(params);
    for (const p of model.parameters()) if (!set.has(p)) p.requiresGrad = false;
    for (const p of params) p.requiresGrad = true;
    if (adapters?.dispose) disposers.unshift(() => adapters.dispose!());
    trainable = params.reduce((a, p) => a + p.size, 0);
    update = denseAdam(params);
  }
  let graph: CudaGraphStep<Tensor | null> | null = null;
  if (o.graphs) {
    if (method !== 'sift') {
      for (const d of disposers) d();
      throw new SiftError('E_UNSUPPORTED', `graphs: the ${method} step disposes its gradients at each update; only sift is captured`);
    }
    const g = new CudaGraphStep<Tensor | null>(o.device);
    graph = g;
    disposers.unshift(() => g.dispose());
  }
  return {
    model,
    trainable,
    step(keepLoss = false) {
      if (!graph) {
        const loss = forwardBackward(keepLoss);
        update();
        return loss;
      }
      // Every replay rewrites the loss captured at the first step: the caller gets a copy.
      const captured = graph.run(`${o.batch}x${o.seq}`, () => forwardBackward(true));
      const loss = keepLoss && captured ? captured.clone() : null;
      update();
      return loss;
    },
    dispose() {
      for (const d of disposers) d();
    },
  };
}

function memoryNow(device: string): { allocated: number; peak: number } {
  if (device.startsWith('cuda')) {
    const m = native().cudaMemory(Number(device.split(':')[1] ?? 0));
    return { allocated: m.allocated, peak: m.peakAllocated };
  }
  const l = liveTensors().cpu;
  return { allocated: l.bytes, peak: l.peakBytes };
}

export interface TrainArgs {
  devices: string[];
  models: ModelKey[];
  methods: BenchMethod[];
  rates: number[];
  small: boolean | 'auto';
  batch?: number;
  seq?: number;
  warmup?: number;
  steps?: number;
  budgetMs?: number;
  dtype?: 'bf16' | 'f32';
  quick?: boolean;
}

/** One timed run (model x method x rate on a device). Never throws: failures become rows. */
export function benchOne(
  device: string,
  spec: ModelSpec,
  method: BenchMethod,
  rate: number | null,
  a: Required<Omit<TrainArgs, 'devices' | 'models' | 'methods' | 'rates' | 'small' | 'steps'>> & { steps?: number },
): TrainRow {
  const cuda = device.startsWith('cuda');
  const b = backends();
  const row: TrainRow = {
    bench: 'train',
    status: 'ok',
    device,
    deviceName: cuda ? (b.cuda.devices[Number(device.split(':')[1] ?? 0)]?.name ?? 'cuda') : `cpu x${b.cpu.threads}`,
    model: spec.name,
    params: 0,
    method,
    rate,
    dtype: a.dtype,
    batch: a.batch,
    seq: a.seq,
    trainable: 0,
    warmup: a.warmup,
    steps: 0,
    msPerStep: 0,
    stepsPerSec: 0,
    tokensPerSec: 0,
    peakBytes: 0,
    steadyBytes: 0,
    loss: NaN,
  };
  let run: RunSetup | null = null;
  try {
    run = setupRun(spec, method, { device, dtype: a.dtype, batch: a.batch, seq: a.seq, rate: rate ?? 0.01 });
    row.params = run.model.numParameters();
    row.trainable = run.trainable;
    let first = 0;
    for (let i = 0; i < a.warmup; i++) {
      synchronize(device);
      const t0 = process.hrtime.bigint();
      run.step();
      synchronize(device);
      first = Number(process.hrtime.bigint() - t0) / 1e6;
    }
    const steps = a.steps ?? Math.max(3, Math.min(a.quick ? 5 : 50, Math.floor(a.budgetMs / Math.max(first, 1))));
    synchronize(device);
    row.steadyBytes = memoryNow(device).allocated;
    resetPeakMemory();
    const t0 = process.hrtime.bigint();
    let loss: Tensor | null = null;
    for (let i = 0; i < steps; i++) {
      loss?.dispose();
      loss = run.step(i === steps - 1);
      // The CPU executor has no back-pressure: JavaScript can queue many steps ahead, each holding
      // its activations until the queue reaches it. A trainer reads its loss every step or few, so
      // the CPU run waits per step (on CUDA the caching allocator reuses memory in stream order).
      if (!cuda) synchronize(device);
    }
    synchronize(device);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    row.peakBytes = memoryNow(device).peak;
    row.loss = loss ? Number(loss.item().toFixed(4)) : NaN;
    loss?.dispose();
    row.steps = steps;
    row.msPerStep = Number((ms / steps).toFixed(3));
    row.stepsPerSec = Number((1000 / row.msPerStep).toFixed(3));
    row.tokensPerSec = Math.round((a.batch * a.seq * 1000) / row.msPerStep);
  } catch (e) {
    const err = e as Error & { skipped?: boolean; code?: string };
    row.status = err.skipped ? 'skipped' : 'error';
    row.error = `${err.code ? `${err.code}: ` : ''}${err.message}`.slice(0, 300);
  } finally {
    try {
      run?.dispose();
    } catch {
      /* a failed run may have freed its tensors already */
    }
    if (cuda) {
      try {
        synchronize(device);
        emptyCache();
      } catch {
        /* keep going to the next run */
      }
    }
  }
  return row;
}

const mib = (b: number) => (b / 2 ** 20).toFixed(1);

export function trainTable(rows: TrainRow[]): string {
  const header = [
    'device',
    'model',
    'method',
    'rate',
    'dtype',
    'B x T',
    'trainable',
    'ms/step',
    'steps/s',
    'tokens/s',
    'peak MiB',
    'steady MiB',
    'status',
  ];
  const lines = [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`];
  for (const r of rows) {
    lines.push(
      `| ${[
        r.deviceName,
        r.model,
        r.method,
        r.rate === null ? '' : `${+(r.rate * 100).toFixed(3)}%`,
        r.dtype,
        `${r.batch} x ${r.seq}`,
        r.trainable,
        r.status === 'ok' ? r.msPerStep.toFixed(1) : '',
        r.status === 'ok' ? r.stepsPerSec.toFixed(2) : '',
        r.status === 'ok' ? r.tokensPerSec : '',
        r.status === 'ok' ? mib(r.peakBytes) : '',
        r.status === 'ok' ? mib(r.steadyBytes) : '',
        r.status === 'ok' ? 'ok' : `${r.status}: ${r.error ?? ''}`,
      ].join(' | ')} |`,
    );
  }
  return lines.join('\n');
}

export function parseArgs(args: string[]): TrainArgs {
  const opt = (name: string) => args.find((x) => x.startsWith(`--${name}=`))?.slice(name.length + 3);
  const num = (name: string) => (opt(name) === undefined ? undefined : Number(opt(name)));
  const b = backends();
  const devices: string[] = [];
  if (!args.includes('--cuda-only')) devices.push('cpu');
  if (!args.includes('--cpu-only') && b.cuda.usable) devices.push('cuda:0');
  // With a GPU, the CPU run is only wanted when asked for.
  if (devices.length === 2 && !args.includes('--with-cpu')) devices.shift();
  const dt = opt('dtype');
  return {
    devices,
    models: (opt('models')?.split(',') ?? ['gpt2', 'llama']) as ModelKey[],
    methods: (opt('methods')?.split(',') ?? ['sift', 'full', 'lora']) as BenchMethod[],
    rates: opt('rates')?.split(',').map(Number) ?? [0.001, 0.01, 0.05],
    small: args.includes('--small') ? true : args.includes('--full-size') ? false : 'auto',
    batch: num('batch'),
    seq: num('seq'),
    warmup: num('warmup'),
    steps: num('steps'),
    budgetMs: num('budget-ms'),
    dtype: dt === 'bf16' || dt === 'f32' ? dt : undefined,
    quick: args.includes('--quick'),
  };
}

export async function run(args: string[]): Promise<TrainRow[]> {
  const a = parseArgs(args);
  const b = backends();
  console.error(
    `# train bench: cpu ${b.cpu.threads} threads, cuda ${b.cuda.usable ? b.cuda.devices.map((d) => d.name).join(', ') : `not usable (${b.cuda.status})`}`,
  );
  const rows: TrainRow[] = [];
  for (const device of a.devices) {
    const cuda = device.startsWith('cuda');
    const small = a.small === 'auto' ? !cuda : a.small;
    const common = {
      batch: a.batch ?? (small ? 4 : 8),
      seq: a.seq ?? (small ? 64 : 512),
      warmup: a.warmup ?? (a.quick ? 1 : 2),
      budgetMs: a.budgetMs ?? (a.quick ? 300 : cuda ? 4000 : 1500),
      dtype: a.dtype ?? (cuda ? 'bf16' : 'f32'),
      quick: a.quick ?? false,
      steps: a.steps,
    } as const;
    for (const key of a.models) {
      const spec = modelSpec(key, small);
      for (const method of a.methods) {
        const rates = method === 'sift' ? a.rates : [null];
        for (const rate of rates) {
          const row = benchOne(device, spec, method, rate, common);
          console.log(JSON.stringify(row));
          rows.push(row);
          const live = liveTensors();
          if (live.cuda.count > 0 || live.cpu.count > 4)
            console.error(`# note: live tensors after ${spec.name}/${method}: cpu ${live.cpu.count}, cuda ${live.cuda.count}`);
        }
      }
    }
  }
  console.log('\n' + trainTable(rows));
  return rows;
}
