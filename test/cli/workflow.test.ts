/**
 * The workflow a user runs, through the CLI: a classification (and regression) run from a
 * language model's checkpoint, then eval/generate/merge/export-onnx of its increment (and of a LoRA
 * adapter) on the same base; `.onnx` models; parseArgs flags, --config files and Hugging Face
 * aliases; E_NUMERIC; and, spawning the built CLI, Ctrl-C -> checkpoint -> exit 130 -> --resume
 * ending where an uninterrupted run ends.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawn, spawnSync } from 'child_process';
import { createModel, stateDict } from '../../lib/models';
import { saveModelFolder } from '../../lib/io/hf';
import { createByteTokenizer } from '../../lib/tokenizers';
import { SafetensorsReader } from '../../lib/io/safetensors';
import { tinyGpt2Config } from '../helpers/tiny-configs';
import { cliJson, evalMetrics, finetuneRun, Flags, flagArgs, runCli, saveRandomModel, writeJsonl } from '../helpers/cli';

const cli = runCli;

interface Run {
  code: number;
  out: string;
  err: string;
}

const ROOT = path.join(__dirname, '..', '..');
const BIN = path.join(ROOT, 'dist', 'lib', 'cli', 'main.js');

/** Rebuilds dist/ when a source the spawned CLI runs is newer than its output. */
function ensureDist(): void {
  const stale = (dir: string): boolean =>
    fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true }).some((d) => {
      const rel = path.join(dir, d.name);
      if (d.isDirectory()) return stale(rel);
      if (!d.name.endsWith('.ts')) return false;
      const js = path.join(ROOT, 'dist', rel.replace(/\.ts$/, '.js'));
      return !fs.existsSync(js) || fs.statSync(js).mtimeMs < fs.statSync(path.join(ROOT, rel)).mtimeMs;
    });
  if (stale('lib')) {
    const r = spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', path.join(ROOT, 'tsconfig.json')], {
      cwd: ROOT,
      stdio: 'inherit',
    });
    if (r.status !== 0) throw new Error('tsc failed');
  }
}

let tmp: string;
const bases: Record<string, string> = {};
let clsCsv: string;
let regCsv: string;
let lmJsonl: string;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-cli-workflow-'));
  const tok = createByteTokenizer();
  const special = { eos_token_id: tok.eosTokenId, bos_token_id: tok.bosTokenId, pad_token_id: tok.padTokenId };
  const configs: Record<string, Record<string, unknown>> = {
    gpt2: tinyGpt2Config(tok),
    llama: {
      model_type: 'llama',
      vocab_size: tok.vocabSize,
      hidden_size: 16,
      intermediate_size: 32,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      num_key_value_heads: 1,
      max_position_embeddings: 64,
      ...special,
    },
  };
  for (const [name, config] of Object.entries(configs)) bases[name] = saveRandomModel(path.join(tmp, name), config, tok.toFiles());
  // A BERT encoder without its pooler (as masked-LM checkpoints come): pooler and classifier are fresh.
  const bert = createModel(
    {
      model_type: 'bert',
      vocab_size: tok.vocabSize,
      hidden_size: 16,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      intermediate_size: 32,
      max_position_embeddings: 64,
      type_vocab_size: 2,
      hidden_dropout_prob: 0,
      attention_probs_dropout_prob: 0,
      pad_token_id: tok.padTokenId,
    },
    { task: 'base', seed: 3 },
  );
  const sd = stateDict(bert);
  for (const k of [...sd.keys()]) if (k.startsWith('pooler.')) sd.delete(k);
  bases.bert = path.join(tmp, 'bert');
  saveModelFolder(bases.bert, { config: bert.config, stateDict: sd, tokenizerFiles: tok.toFiles() });
  bert.dispose();
  const texts = ['good film', 'great movie', 'bad film', 'awful movie', 'lovely story', 'boring plot', 'nice acting', 'poor script'];
  clsCsv = path.join(tmp, 'cls.csv');
  fs.writeFileSync(
    clsCsv,
    'sentence,label\n' + texts.map((t, i) => `${t},${Math.floor(i / 2) % 2 === 0 ? 'pos' : 'neg'}`).join('\n') + '\n',
  );
  regCsv = path.join(tmp, 'reg.csv');
  fs.writeFileSync(regCsv, 'sentence,label\n' + texts.map((t, i) => `${t},${(i / 4).toFixed(2)}`).join('\n') + '\n');
  lmJsonl = writeJsonl(
    path.join(tmp, 'lm.jsonl'),
    texts.map((t) => ({ text: `the ${t} was seen` })),
  );
});

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function tensors(file: string): Map<string, number[]> {
  const r = SafetensorsReader.open(file);
  try {
    return new Map(
      r.names().map((n) => {
        const t = r.tensor(n);
        const v = Array.from(t.toArray() as ArrayLike<number>, Number);
        t.dispose();
        return [n, v];
      }),
    );
  } finally {
    r.close();
  }
}

const metricsOf = (r: Run) => JSON.parse(r.out).metrics as Record<string, number>;

describe('increments of every task work on the base they were trained from', () => {
  test.each([
    ['llama', 'classify', 'sift', 'LlamaForSequenceClassification'],
    ['gpt2', 'classify', 'sift', 'GPT2ForSequenceClassification'],
    ['bert', 'classify', 'sift', 'BertForSequenceClassification'],
    ['llama', 'regress', 'sift', 'LlamaForSequenceClassification'],
    ['llama', 'classify', 'lora', 'LlamaForSequenceClassification'],
  ])('%s %s (%s): eval --delta, generate refuses, merge, export-onnx', async (arch, task, method, headArch) => {
    const base = bases[arch];
    const data = task === 'classify' ? clsCsv : regCsv;
    const out = path.join(tmp, `run-${arch}-${task}-${method}`);
    const { result, delta } = await finetuneRun({
      model: base,
      data,
      'eval-data': data,
      task,
      method,
      out,
      steps: 4,
      'batch-size': 4,
      lr: '1e-2',
    });
    const trained = result.metrics;
    if (method === 'sift') {
      const meta = SafetensorsReader.open(delta);
      const head = JSON.parse(meta.metadata.sift_head);
      meta.close();
      expect(head).toMatchObject({ task, architecture: headArch, num_labels: task === 'classify' ? 2 : 1 });
      if (task === 'classify') expect(head.id2label).toEqual({ 0: 'neg', 1: 'pos' });
      else expect(head.problem_type).toBe('regression');
    } else {
      expect(JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8')).sift_ft_head).toMatchObject({
        task,
        architecture: headArch,
      });
    }

    // eval --delta without --task: the delta records it; the metrics are the run's own final ones.
    const ev = await cliJson<{ metrics: Record<string, number> }>('eval', { model: base, delta, data });
    expect(ev.run.err).toBe('');
    const evm = ev.json.metrics;
    expect(evm.loss).toBeCloseTo(trained.loss, 5);
    const wrong = await cli('eval', '--model', base, '--delta', delta, '--data', data, '--task', 'causal-lm');
    expect(wrong.code).toBe(1);
    expect(wrong.err).toMatch(/trained for task .*E_MISMATCH/);

    const gen = await cli('generate', '--model', base, '--delta', delta, '--prompt', 'hi');
    expect(gen.code).toBe(1);
    expect(gen.err).toMatch(/generate needs a causal-lm or instruct increment.*E_UNSUPPORTED/);

    const merged = path.join(tmp, `merged-${arch}-${task}-${method}`);
    const mg = await cli('merge', '--model', base, '--delta', delta, '--out', merged);
    expect(mg.err).toBe('');
    expect(mg.code).toBe(0);
    const cfg = JSON.parse(fs.readFileSync(path.join(merged, 'config.json'), 'utf8'));
    expect(cfg.architectures).toEqual([headArch]);
    if (task === 'classify') expect(cfg).toMatchObject({ num_labels: 2, id2label: { 0: 'neg', 1: 'pos' }, label2id: { neg: 0, pos: 1 } });
    else expect(cfg).toMatchObject({ num_labels: 1, problem_type: 'regression' });
    const em = metricsOf(await cli('eval', '--model', merged, '--data', data, '--task', task, '--json'));
    expect(em.loss).toBeCloseTo(evm.loss, 5);

    const onnxDir = path.join(tmp, `onnx-${arch}-${task}-${method}`);
    fs.mkdirSync(onnxDir);
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(base, f), path.join(onnxDir, f));
    const onnx = path.join(onnxDir, 'model.onnx');
    const ex = await cli('export-onnx', '--model', base, '--delta', delta, '--out', onnx);
    expect(ex.err).toBe('');
    expect(ex.out).toContain(headArch);
    const om = metricsOf(await cli('eval', '--model', onnx, '--data', data, '--task', task, '--json'));
    expect(om.loss).toBeCloseTo(evm.loss, 4);
  });

  test('causal-lm: generate --delta takes an increment or a LoRA adapter folder', async () => {
    for (const method of ['sift', 'lora']) {
      const out = path.join(tmp, `lm-${method}`);
      const ft = await cli(
        'finetune',
        ...flagArgs({ model: bases.llama, data: lmJsonl, task: 'causal-lm', method, out, steps: 3, quiet: true }),
      );
      expect(ft.code).toBe(0);
      const g = await cli('generate', '--model', bases.llama, '--delta', out, '--prompt', 'the', '--max-new-tokens', '4', '--json');
      expect(g.err).toBe('');
      expect(JSON.parse(g.out).tokens.length).toBeGreaterThan(0);
    }
    const bad = await cli('eval', '--model', bases.llama, '--delta', clsCsv, '--data', lmJsonl);
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/E_FORMAT|E_IO/);
  });

  test('--model accepts an .onnx graph in finetune, eval and select', async () => {
    const dir = path.join(tmp, 'onnx-base');
    fs.mkdirSync(dir);
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(bases.llama, f), path.join(dir, f));
    const onnx = path.join(dir, 'model.onnx');
    expect((await cli('export-onnx', '--model', bases.llama, '--out', onnx)).code).toBe(0);
    const out = path.join(tmp, 'from-onnx');
    const { result } = await finetuneRun({ model: onnx, data: lmJsonl, 'eval-data': lmJsonl, task: 'causal-lm', out, steps: 2 });
    expect((await evalMetrics({ model: onnx, delta: out, data: lmJsonl })).loss).toBeCloseTo(result.metrics.loss, 5);
    const sel = await cli(
      'select',
      '--model',
      onnx,
      '--data',
      lmJsonl,
      '--task',
      'causal-lm',
      '--out',
      path.join(tmp, 'onnx-idx.safetensors'),
      '--json',
    );
    expect(sel.code).toBe(0);
    // The graph's head is fixed: a classifier cannot be made from an LM graph.
    const cls = await cli(
      'finetune',
      '--model',
      onnx,
      '--data',
      clsCsv,
      '--task',
      'classify',
      '--out',
      path.join(tmp, 'onnx-cls'),
      '--steps',
      '1',
    );
    expect(cls.code).toBe(1);
    expect(cls.err).toContain('E_UNSUPPORTED');
  });
});

describe('flags like the tools users know', () => {
  const common = () => ['--model', bases.gpt2, '--data', clsCsv, '--task', 'classify', '--steps', '2', '--batch-size', '4', '--quiet'];

  test('booleans take true/false, =false and --no-; stray words and bad numbers are errors', async () => {
    for (const form of [['--merge', 'false'], ['--merge=false'], ['--no-merge']]) {
      const out = path.join(tmp, `merge-${form.join('')}`);
      const r = await cli('finetune', ...common(), '--out', out, ...form);
      expect(r.code).toBe(0);
      expect(fs.existsSync(path.join(out, 'model'))).toBe(false);
      expect(JSON.parse(fs.readFileSync(path.join(out, 'run_config.json'), 'utf8')).merge).toBe(false);
    }
    const yes = path.join(tmp, 'merge-true');
    expect((await cli('finetune', ...common(), '--out', yes, '--merge', 'true')).code).toBe(0);
    expect(fs.existsSync(path.join(yes, 'model', 'config.json'))).toBe(true);

    const stray = await cli('finetune', ...common(), '--out', path.join(tmp, 'stray'), 'oops', 'again');
    expect(stray.code).toBe(2);
    expect(stray.err).toContain("unexpected arguments 'oops', 'again'");
    const nan = await cli('finetune', ...common(), '--out', path.join(tmp, 'nan'), '--lr', 'fast');
    expect(nan.err).toContain("flag --lr expects a number, got 'fast'");
    const frac = await cli('finetune', ...common(), '--out', path.join(tmp, 'frac'), '--grad-accum', '1.5');
    expect(frac.err).toContain('flag --grad-accum expects an integer');
    const typo = await cli('finetune', ...common(), '--out', path.join(tmp, 'typo'), '--learning-rat', '1');
    expect(typo.code).toBe(2);
    expect(typo.err).toContain('did you mean --learning-rate?');
    const bool = await cli('finetune', ...common(), '--out', path.join(tmp, 'bool'), '--shuffle=maybe');
    expect(bool.err).toContain("flag --shuffle expects true or false, got 'maybe'");
    const missing = await cli('finetune', ...common(), '--out', '--merge');
    expect(missing.err).toContain('flag --out needs a value');
  });

  test('Hugging Face names on the command line, both spellings', async () => {
    const out = path.join(tmp, 'hf-flags');
    const r = await cli(
      'finetune',
      '--model',
      bases.llama,
      '--data',
      clsCsv,
      '--task',
      'classify',
      '--quiet',
      '--output_dir',
      out,
      '--learning_rate',
      '3e-3',
      '--per-device-train-batch-size',
      '4',
      '--gradient_accumulation_steps',
      '2',
      '--max_steps',
      '3',
      '--warmup-ratio',
      '0.5',
      '--weight_decay',
      '0.01',
      '--lr_scheduler_type',
      'cosine',
      '--max_grad_norm',
      '0.5',
      '--seed',
      '5',
      '--target_modules',
      'q_proj,v_proj',
      '--method',
      'lora',
      '--lora_r',
      '2',
      '--lora-alpha',
      '4',
      '--lora_dropout',
      '0.1',
      '--gradient_checkpointing',
      '--bf16',
      'false',
    );
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const rc = JSON.parse(fs.readFileSync(path.join(out, 'run_config.json'), 'utf8'));
    expect(rc).toMatchObject({
      lr: 3e-3,
      'batch-size': 4,
      'grad-accum': 2,
      steps: 3,
      'warmup-ratio': 0.5,
      'weight-decay': 0.01,
      'lr-schedule': 'cosine',
      'max-grad-norm': 0.5,
      seed: 5,
      'target-modules': 'q_proj,v_proj',
      'lora-rank': 2,
      'lora-alpha': 4,
      'lora-dropout': 0.1,
      'activation-checkpointing': true,
      'mixed-precision': 'none',
    });
    const ad = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'));
    expect(ad).toMatchObject({ r: 2, lora_alpha: 4 });
    expect(ad.target_modules.sort()).toEqual(['q_proj', 'v_proj']);
    // warmup_ratio 0.5 of 3 steps: 2 warmup steps (lr 0, then half), then the cosine decay.
    const lrs = fs
      .readFileSync(path.join(out, 'log.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
      .filter((e) => e.type === 'step')
      .map((e) => e.lr);
    expect(lrs[0]).toBe(0);
    expect(lrs[1]).toBeCloseTo(1.5e-3, 12);
    expect(lrs[2]).toBeCloseTo(3e-3, 12);
    const both = await cli('finetune', ...common(), '--out', path.join(tmp, 'both'), '--lr', '1', '--learning_rate', '2');
    expect(both.err).toContain('given twice');
  });

  test('--config FILE.yaml|json: kebab or snake keys and aliases; flags override; unknown keys are errors', async () => {
    const yamlFile = path.join(tmp, 'run.yaml');
    fs.writeFileSync(
      yamlFile,
      [
        `model: ${bases.gpt2}`,
        `data: ${clsCsv}`,
        'task: classify',
        'learning_rate: 2.0e-3',
        'num_train_epochs: 1',
        'per_device_train_batch_size: 4',
        'sparse_rate: 0.05',
        'target_modules: [c_attn, c_fc]',
        'shuffle: false',
        'merge: true',
        'quiet: true',
        '',
      ].join('\n'),
    );
    const out = path.join(tmp, 'from-yaml');
    const r = await cli('finetune', '--config', yamlFile, '--out', out, '--learning-rate', '5e-3', '--merge', 'false');
    expect(r.err).toBe('');
    const rc = JSON.parse(fs.readFileSync(path.join(out, 'run_config.json'), 'utf8'));
    expect(rc).toMatchObject({
      lr: 5e-3,
      epochs: 1,
      'batch-size': 4,
      'sparse-rate': 0.05,
      'target-modules': 'c_attn,c_fc',
      shuffle: false,
      merge: false,
      model: bases.gpt2,
      out,
    });
    expect(fs.existsSync(path.join(out, 'model'))).toBe(false);
    // The resolved configuration is itself a valid --config file.
    const again = path.join(tmp, 'from-json');
    const rj = await cli('finetune', '--config', path.join(out, 'run_config.json'), '--out', again);
    expect(rj.err).toBe('');
    expect(tensors(path.join(again, 'delta.safetensors'))).toEqual(tensors(path.join(out, 'delta.safetensors')));

    const bad = path.join(tmp, 'bad.json');
    fs.writeFileSync(bad, JSON.stringify({ model: bases.gpt2, learning_rte: 1, warmup: 3, lr: 'x' }));
    const b = await cli('finetune', '--config', bad, '--out', path.join(tmp, 'bad'));
    expect(b.code).toBe(2);
    expect(b.err).toContain("unknown keys 'learning_rte' (did you mean learning_rate?), 'warmup'");
    fs.writeFileSync(bad, JSON.stringify({ lr: 'x' }));
    expect((await cli('finetune', '--config', bad, '--out', path.join(tmp, 'bad'))).err).toContain("'lr' in");
    const notThere = await cli('finetune', '--config', path.join(tmp, 'nope.yaml'));
    expect(notThere.err).toContain('E_IO');
  });
});

describe('runs that survive', () => {
  beforeAll(ensureDist);
  /** argv of `sift-ft finetune` of the GPT-2 base on the classification rows, with these flags. */
  const finetuneCls = (flags: Flags) => ['finetune', ...flagArgs({ model: bases.gpt2, data: clsCsv, task: 'classify', ...flags })];

  test('--lr 1e30: E_NUMERIC naming the step, the last good checkpoint kept, no increment', async () => {
    const out = path.join(tmp, 'diverge');
    const r = await cli(...finetuneCls({ out, steps: 10, 'batch-size': 4, lr: '1e30', 'checkpoint-every': 1, quiet: true }));
    expect(r.code).toBe(1);
    const m = /non-finite .* at step (\d+) of 10.*last good checkpoint is (\S+);.*\[E_NUMERIC\]/.exec(r.err);
    expect(m).not.toBeNull();
    const step = Number(m![1]);
    expect(m![2]).toBe(path.join(out, `checkpoint-${step - 1}`));
    expect(fs.existsSync(path.join(out, `checkpoint-${step - 1}`, 'state.safetensors'))).toBe(true);
    expect(fs.existsSync(path.join(out, `checkpoint-${step}`))).toBe(false);
    expect(fs.existsSync(path.join(out, 'delta.safetensors'))).toBe(false);
  });

  test('SIGINT writes a checkpoint and exits 130; --resume ends where an uninterrupted run ends', async () => {
    const args = (out: string) => finetuneCls({ out, steps: 1500, 'batch-size': 4, lr: '1e-3', seed: 9, quiet: true });
    const env = { ...process.env };
    const whole = path.join(tmp, 'whole');
    const w = spawnSync(process.execPath, [BIN, ...args(whole)], { env, encoding: 'utf8' });
    expect(w.status).toBe(0);

    const cut = path.join(tmp, 'cut');
    const child = spawn(process.execPath, [BIN, ...args(cut)], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += String(d)));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const log = path.join(cut, 'log.jsonl');
    const t0 = Date.now();
    let sent = 0;
    while (Date.now() - t0 < 60000) {
      const text = fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : '';
      if ((text.match(/"type":"step"/g) ?? []).length >= 20) {
        child.kill('SIGINT');
        sent = Date.now();
        break;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(sent).toBeGreaterThan(0);
    const code = await exited;
    expect(code).toBe(130);
    expect(Date.now() - sent).toBeLessThan(5000);
    expect(stderr).toMatch(/interrupted at step (\d+); checkpoint .*checkpoint-\d+; no increment written/);
    const step = Number(/interrupted at step (\d+)/.exec(stderr)![1]);
    expect(step).toBeLessThan(1500);
    expect(fs.existsSync(path.join(cut, `checkpoint-${step}`, 'trainer.json'))).toBe(true);
    expect(fs.existsSync(path.join(cut, 'delta.safetensors'))).toBe(false);

    const res = spawnSync(process.execPath, [BIN, ...args(cut), '--resume'], { env, encoding: 'utf8' });
    expect(res.stderr).toBe('');
    expect(res.status).toBe(0);
    const a = tensors(path.join(whole, 'delta.safetensors'));
    const b = tensors(path.join(cut, 'delta.safetensors'));
    expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
    for (const [k, v] of a) expect(b.get(k)).toEqual(v);
  });

  test('a second SIGINT exits at once with 130', async () => {
    const out = path.join(tmp, 'twice');
    const child = spawn(process.execPath, [BIN, ...finetuneCls({ out, steps: 100000, 'batch-size': 4, quiet: true })], { stdio: 'ignore' });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const log = path.join(out, 'log.jsonl');
    const t0 = Date.now();
    while (Date.now() - t0 < 60000 && !(fs.existsSync(log) && fs.readFileSync(log, 'utf8').includes('"type":"step"')))
      await new Promise((r) => setTimeout(r, 20));
    child.kill('SIGINT');
    child.kill('SIGINT');
    expect(await exited).toBe(130);
  });

  test('--resume without a checkpoint is an error', async () => {
    const r = await cli(...finetuneCls({ out: path.join(tmp, 'no-ckpt'), steps: 2, resume: true }));
    expect(r.code).toBe(1);
    expect(r.err).toContain('--resume: no checkpoint');
  });

  test('--metric-for-best, --save-total-limit and --early-stopping-patience through the CLI', async () => {
    const out = path.join(tmp, 'best-run');
    const r = await cli(
      ...finetuneCls({
        'eval-data': clsCsv,
        out,
        steps: 12,
        'batch-size': 4,
        lr: '1e-9',
        'eval-every': 2,
        'checkpoint-every': 2,
        'save-total-limit': 1,
        'metric-for-best': 'accuracy',
        'early-stopping-patience': 2,
        quiet: true,
      }),
    );
    expect(r.err).toContain('early stopping at step 6');
    expect(r.code).toBe(0);
    expect(r.out).toContain(`best: accuracy`);
    expect(r.out).toContain(path.join(out, 'best'));
    expect(fs.existsSync(path.join(out, 'best', 'delta.safetensors'))).toBe(true);
    expect(fs.existsSync(path.join(out, 'delta.safetensors'))).toBe(true);
    const state = JSON.parse(fs.readFileSync(path.join(out, 'trainer_state.json'), 'utf8'));
    expect(state).toMatchObject({ latest: 'checkpoint-6', best: { metric: 'accuracy', step: 2, checkpoint: 'checkpoint-2' } });
    expect(state.checkpoints.sort()).toEqual(['checkpoint-2', 'checkpoint-6']);
    const noEval = await cli(...finetuneCls({ out: path.join(tmp, 'x'), 'metric-for-best': 'f1' }));
    expect(noEval.err).toContain('--metric-for-best needs --eval-data');
  });
});
