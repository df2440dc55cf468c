/**
 * `sift-ft select`: runs only SIFT's selection (the first batches' gradients), saves the chosen
 * indices as `<name>.sift_idx` tensors in a safetensors file, and prints the quasi-sparsity
 * report: per target, the share of a later batch's squared gradient norm that falls on the chosen
 * entries (1% of the entries carrying far more than 1% of the gradient is what SIFT relies on).
 */
import * as path from 'path';
import { SiftError } from '../engine/errors';
import { Tensor } from '../engine/tensor';
import { tidy } from '../engine/scope';
import { native } from '../engine/native';
import { saveSafetensors } from '../io/safetensors';
import { Sift } from '../sift/sift';
import { planTargets } from '../sift/targets';
import { QuasiSparsity, fractionLabel, measureQuasiSparsity } from '../sift/quasi';
import { writeFileAtomic } from '../io/atomic';
import { renderReport } from './report';
import { loadRows } from '../train/data';
import { createTask } from '../train/tasks';
import type { FlagSpec, Parsed } from './args';
import {
  quantizeFlag,
  quantizeModel,
  deviceFlag,
  fmtInt,
  labelColumnOf,
  labelsOf,
  loadModelForTask,
  requireFile,
  requireFlag,
  requireTask,
  resolveDevice,
  table,
  writeJson,
  columnFlags,
  columnsOf,
  TASKS,
} from './common';
import { parseSelector } from './finetune';

export const selectFlags: Record<string, FlagSpec> = {
  model: { type: 'string', help: 'model folder or .onnx graph (tokenizer files beside it)' },
  data: { type: 'string', help: 'data file whose first batches choose the indices' },
  task: { type: 'string', help: 'classify, regress, causal-lm, instruct or chat', choices: TASKS },
  out: { type: 'string', help: 'output safetensors file for the indices', default: 'sift_indices.safetensors' },
  'sparse-rate': { type: 'number', help: 'share of each target weight to select', default: 0.01 },
  'target-modules': {
    type: 'string',
    help: "'a,b', 're:<regex>' or 'all-linear' (default: every linear layer but the output and task heads)",
  },
  'dense-modules': { type: 'string', help: "modules that would be trained in full: 'a,b' or 're:<regex>'" },
  'selection-batches': { type: 'number', help: 'batches whose gradients choose the indices', default: 1, integer: true, min: 1 },
  'selection-score': { type: 'string', help: 'how entries are scored', choices: ['abs', 'fisher', 'random', 'magnitude'], default: 'abs' },
  'selection-scope': {
    type: 'string',
    help: 'one budget per tensor or one global budget',
    choices: ['tensor', 'global'],
    default: 'tensor',
  },
  'batch-size': { type: 'number', help: 'batch size', default: 8, integer: true, min: 1 },
  'max-length': { type: 'number', help: "max tokens per example (default: the model's positions, at most 512; 1024 for causal-lm)" },
  ...columnFlags,
  seed: { type: 'number', help: 'seed (random score, head initialisation)', default: 42 },
  device: deviceFlag,
  quantize: quantizeFlag,
  json: { type: 'boolean', help: 'print the report as JSON' },
  report: {
    type: 'boolean',
    help: "also measure the gradient's quasi-sparsity (share of the squared norm on the top 0.1%, 1%, 5% of entries, per layer and overall) and write it, as a picture, to quasi-sparsity.html beside --out",
  },
};

export const selectHelp =
  'Chooses the SIFT indices from the first batches, saves them (<name>.sift_idx) and prints the quasi-sparsity report.';

export async function runSelect(f: Parsed): Promise<number> {
  const modelDir = requireFile(f.model, 'model', 'the model folder');
  const dataFile = requireFile(f.data, 'data', 'the data file');
  const task = requireTask(f.task);
  const out = requireFlag(f.out as string | undefined, 'out', 'the output file');
  const device = resolveDevice(f.device);
  const rate = f['sparse-rate'] as number;
  if (!(rate > 0 && rate <= 1)) throw new SiftError('E_ARG', `flag --sparse-rate must be in (0, 1], got ${rate}`);
  const bs = f['batch-size'] as number;
  const nSel = f['selection-batches'] as number;
  if (!Number.isInteger(bs) || bs < 1) throw new SiftError('E_ARG', `flag --batch-size must be a positive integer, got ${bs}`);
  if (!Number.isInteger(nSel) || nSel < 1) throw new SiftError('E_ARG', `flag --selection-batches must be a positive integer, got ${nSel}`);
  const rows = await loadRows(dataFile);
  if (rows.length === 0) throw new SiftError('E_FORMAT', `${dataFile}: no rows`);
  const columns = columnsOf(f);
  let labels: string[] | undefined;
  if (task === 'classify') {
    const col = labelColumnOf(rows, columns.labelColumn);
    if (col) labels = labelsOf(rows, col);
  }
  const loaded = loadModelForTask(modelDir, { task, device, labels, seed: f.seed as number });
  const { model } = loaded;
  let sift: Sift | null = null;
  try {
    const t = createTask(task, {
      tokenizer: loaded.tokenizer,
      config: model.config,
      columns,
      maxLength: f['max-length'] as number,
      labels: loaded.labels,
    });
    const examples = t.prepare(rows);
    if (examples.length === 0) throw new SiftError('E_FORMAT', `${dataFile}: no examples after tokenization`);
    // The trainer's defaults: linear layers minus the heads as targets, a classifier head trained densely.
    const heads = model
      .children()
      .map(([n]) => n)
      .filter((n) => n === 'score' || n === 'classifier');
    const underHead = (p: string) => heads.some((h) => p === h || p.startsWith(`${h}.`));
    const targetModules =
      parseSelector(f['target-modules'], 'target-modules') ??
      model
        .namedModules()
        .filter(([p, m]) => p && (m.kind === 'Linear' || m.kind === 'Conv1D') && !p.endsWith('lm_head') && !underHead(p))
        .map(([p]) => p);
    const denseModules =
      parseSelector(f['dense-modules'], 'dense-modules') ?? (f['target-modules'] === undefined && heads.length ? heads : undefined);
    // Batches wrap around a small file so that selection and measurement always have data.
    const batchAt = (i: number) => {
      const ex = Array.from({ length: Math.min(bs, examples.length) }, (_, j) => examples[(i * bs + j) % examples.length]);
      return t.collate(ex, device);
    };
    const backwardOn = (i: number) => {
      const b = batchAt(i);
      try {
        tidy(() => {
          const o = t.forward(model, b);
          if (!o.loss) throw new SiftError('E_ARG', 'the task produced no loss (labels missing?)');
          o.loss.backward();
        });
      } finally {
        b.dispose();
      }
    };
    let qs: QuasiSparsity | null = null;
    if (f.report) {
      // The selection batches' accumulated gradient, before SIFT's hooks take the gradients over.
      const params = planTargets(model, targetModules, denseModules).sparse;
      qs = await measureQuasiSparsity(params, () => {
        for (let i = 0; i < nSel; i++) backwardOn(i);
      });
      for (const [, p] of model.namedParameters()) p.zeroGrad();
    }
    sift = new Sift(model, {
      sparseRate: rate,
      targetModules,
      denseModules,
      selection: { batches: nSel, score: f['selection-score'] as 'abs', scope: f['selection-scope'] as 'tensor' },
      seed: f.seed as number,
      trackGradProportion: true,
    });
    // Frozen layers (not targets, not dense modules) are stored quantized; targets stay dense.
    quantizeModel(model, f.quantize, true);
    const batches = sift.needsGradients ? sift.selectionBatches : 0;
    for (let i = 0; i < batches; i++) backwardOn(i);
    if (!sift.selected) sift.select();
    // Quasi-sparsity on the next batch (not one of those that chose): how much gradient the chosen entries carry.
    backwardOn(batches);
    const props = await sift.gradProportions();
    sift.zeroGrad();
    const N = native();
    const entries: [string, Tensor][] = [];
    const owned: Tensor[] = [];
    for (const tg of sift.targets) {
      const cpu = new Tensor(N.to(tg.idx!.handle, 'cpu'));
      const idx = tg.numel < 2 ** 31 ? new Tensor(N.cast(cpu.handle, 'i32')) : cpu;
      if (idx !== cpu) owned.push(cpu);
      owned.push(idx);
      entries.push([`${tg.name}.sift_idx`, idx]);
    }
    const summary = sift.summary();
    saveSafetensors(out, entries, {
      format: 'sift-indices',
      format_version: '1',
      sift_config: JSON.stringify({
        sparseRate: rate,
        targetModules: f['target-modules'],
        denseModules: f['dense-modules'] ?? null,
        selection: sift.selectionOptions,
        seed: f.seed,
      }),
      shapes: JSON.stringify(Object.fromEntries(sift.targets.map((tg) => [tg.name, tg.param.shape]))),
    });
    for (const o of owned) o.dispose();
    const layers = sift.targets.map((tg) => ({
      name: tg.name,
      shape: tg.param.shape,
      selected: tg.k,
      total: tg.numel,
      gradProportion: props.get(tg.name) ?? 0,
    }));
    const mean = layers.length ? layers.reduce((a, l) => a + l.gradProportion, 0) / layers.length : 0;
    let reportFile: string | undefined;
    if (qs) {
      reportFile = path.join(path.dirname(path.resolve(out)), 'quasi-sparsity.html');
      writeFileAtomic(reportFile, [
        renderReport({
          title: `Gradient quasi-sparsity of ${path.basename(path.resolve(modelDir))}`,
          subtitle: `accumulated gradient of ${nSel} selection batch(es) of ${bs} from ${path.basename(dataFile)}, task ${task}; ${qs.layers.length} target tensors, ${fmtInt(qs.overall.numel)} entries`,
          runs: [],
          quasiSparsity: [{ name: path.basename(path.resolve(modelDir)), qs }],
          notes: [quasiSentence(qs)],
        }),
      ]);
    }
    if (f.json) {
      writeJson({
        out: path.resolve(out),
        sparseRate: rate,
        trainable: summary.trainable,
        total: summary.total,
        meanGradProportion: mean,
        layers,
        ...(qs ? { quasiSparsity: qs, report: reportFile } : {}),
      });
    } else {
      if (qs) process.stdout.write(`${quasiTable(qs)}\n\n${quasiSentence(qs)}\nreport: ${reportFile}\n\n`);
      process.stdout.write(
        `${table(
          ['target', 'shape', 'selected', 'share', 'gradient proportion'],
          layers.map((l) => [
            l.name,
            l.shape.join('x'),
            fmtInt(l.selected),
            `${((100 * l.selected) / l.total).toFixed(2)}%`,
            `${(100 * l.gradProportion).toFixed(1)}%`,
          ]),
        )}\n\n`,
      );
      process.stdout.write(
        `${fmtInt(summary.trainable)} of ${fmtInt(summary.total)} parameters selected (${((100 * summary.trainable) / summary.total).toPrecision(3)}%, dense modules included); ` +
          `the selected entries carry ${(100 * mean).toFixed(1)}% of a held-out batch's squared gradient norm on average (a random choice would carry about ${(100 * rate).toFixed(1)}%).\n`,
      );
      process.stdout.write(`indices: ${path.resolve(out)}\n`);
    }
    return 0;
  } finally {
    sift?.dispose();
    model.dispose();
  }
}

/** The quasi-sparsity table: per layer and overall, the share of the squared norm on the top entries. */
export function quasiTable(qs: QuasiSparsity): string {
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  return table(
    ['tensor', 'entries', ...qs.fractions.map((f) => `top ${fractionLabel(f)}`)],
    [
      ...qs.layers.map((l) => [l.name, fmtInt(l.numel), ...l.shares.map(pct)]),
      ['overall', fmtInt(qs.overall.numel), ...qs.overall.shares.map(pct)],
    ],
  );
}

/** One sentence: what the overall shares say. */
export function quasiSentence(qs: QuasiSparsity): string {
  const parts = qs.fractions.map((f, i) => `the top ${fractionLabel(f)} of entries carry ${(100 * qs.overall.shares[i]).toFixed(1)}%`);
  return `Of the gradient's squared norm over all targets, ${parts.join(', ')} (an even gradient: the same percentages as the entries).`;
}
