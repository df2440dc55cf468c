/**
 * Turns the outputs of bench/gpu-check.sh into results.json and summary.md: our rows (bench.jsonl:
 * train, select, adamw, gemm, attention, profile), the PyTorch peers' rows (peers.jsonl), the test summary
 * (tests.txt) and the environment (env.txt), with our/peer ratios next to the end-to-end goals:
 *
 *   sift (1%) tokens/s >= PyTorch full fine-tuning's, per model
 *   sift (1%) peak memory < PyTorch LoRA's, per model
 *   memory that grows with the sparse rate (peaks at 0.1%, 1%, 5% and full)
 *   selection >= 5x faster than torch.topk on the same scores
 *   sparse AdamW step within 2x of the bytes-moved floor
 *
 * Rows are compared only on the same kind of device (CUDA with CUDA, CPU with CPU).
 * Usage: node dist/bench/summary.js OUTDIR  (reads and writes files in OUTDIR; prints the summary table).
 */
import * as fs from 'fs';
import * as path from 'path';
import { markdownTable } from './measure';

export type Row = Record<string, unknown> & { bench: string };

export interface Goal {
  goal: string;
  subject: string;
  ours: string;
  peer: string;
  ratio: number | null;
  target: string;
  met: boolean | null;
}

export interface Summary {
  goals: Goal[];
  tests: { passed: number; failed: number; skipped: number } | null;
  train: Record<string, unknown>[];
  select: Record<string, unknown>[];
  adamw: Record<string, unknown>[];
  gemm: Record<string, unknown>[];
  attention: Record<string, unknown>[];
  /** export-peft adapters loaded with Hugging Face PEFT (bench/peers/peft_check.py). */
  peft: Row[];
  profile: Row[];
  stages: Row[];
  errors: Row[];
}

/** JSON objects from a JSONL file (other lines, e.g. tables, are skipped). */
export function readJsonl(file: string): Row[] {
  if (!fs.existsSync(file)) return [];
  const out: Row[] = [];
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const t = line.trim();
    if (!t.startsWith('{')) continue;
    try {
      const o = JSON.parse(t);
      if (o && typeof o === 'object' && typeof o.bench === 'string') out.push(o as Row);
    } catch {
      /* a line cut short by a timeout */
    }
  }
  return out;
}

/** The last closing "N passed, N failed, N skipped" line of test/helpers/summary-reporter.js (or jest's own). */
export function parseTests(text: string): Summary['tests'] {
  // The last run's line: tests.txt holds the attention check, the CUDA suites, then (time
  // permitting) the whole suite.
  const all = [...text.matchAll(/(\d+) passed, (\d+) failed, (\d+) skipped/g)];
  const m = all[all.length - 1];
  if (m) return { passed: +m[1], failed: +m[2], skipped: +m[3] };
  const j = /Tests:\s+(.*)/.exec(text);
  if (!j) return null;
  const n = (w: string) => Number(new RegExp(`(\\d+) ${w}`).exec(j[1])?.[1] ?? 0);
  return { passed: n('passed'), failed: n('failed'), skipped: n('skipped') + n('todo') };
}

const kind = (r: Row) => (String(r.device ?? '').startsWith('cuda') ? 'cuda' : 'cpu');
const ok = (r: Row) => (r.status ?? 'ok') === 'ok';
const num = (x: unknown) => (typeof x === 'number' && Number.isFinite(x) ? x : null);
const ratio = (a: number | null, b: number | null) => (a !== null && b !== null && b > 0 ? Number((a / b).toFixed(3)) : null);
/** GiB, or MiB below 1 GiB (the CPU runs are small). */
const gib = (b: number | null) =>
  b === null ? 'n/a' : b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : `${(b / 2 ** 20).toFixed(1)} MiB`;
const fmt = (x: number | null, d = 0) => (x === null ? 'n/a' : x.toFixed(d));

function sameRate(a: unknown, b: unknown): boolean {
  if (a === null || a === undefined) return b === null || b === undefined;
  return typeof b === 'number' && Math.abs((a as number) - b) < 1e-9;
}

export function summarize(ours: Row[], peers: Row[], testsText: string): Summary {
  const goals: Goal[] = [];
  const train: Record<string, unknown>[] = [];
  const trainOurs = ours.filter((r) => r.bench === 'train');
  // Peers at the billion-parameter shapes (--config: bf16 weights) are judged with the shapes rows.
  const trainPeers = peers.filter((r) => r.bench === 'peer-train' && r.weights !== 'bf16');
  const findPeer = (r: Row, method: string, rate: number | null) =>
    trainPeers.find((p) => ok(p) && kind(p) === kind(r) && p.model === r.model && p.method === method && sameRate(p.rate, rate)) ?? null;

  for (const r of trainOurs) {
    const p =
      trainPeers.find((q) => kind(q) === kind(r) && q.model === r.model && q.method === r.method && sameRate(q.rate, r.rate)) ?? null;
    train.push({
      device: r.deviceName ?? r.device,
      model: r.model,
      method: r.method,
      rate: r.rate,
      status: r.status,
      oursTokensPerSec: ok(r) ? num(r.tokensPerSec) : null,
      peerTokensPerSec: p && ok(p) ? num(p.tokensPerSec) : null,
      tokensRatio: ok(r) && p && ok(p) ? ratio(num(r.tokensPerSec), num(p.tokensPerSec)) : null,
      oursPeakBytes: ok(r) ? num(r.peakBytes) : null,
      peerPeakBytes: p && ok(p) ? num(p.peakBytes) : null,
      peakRatio: ok(r) && p && ok(p) ? ratio(num(r.peakBytes), num(p.peakBytes)) : null,
      error: r.error ?? (p && !ok(p) ? `peer: ${p.error}` : p && p.impl && p.impl !== 'transformers' ? `peer: ${p.impl}` : undefined),
    });
  }
  // Peer rows with no row of ours (e.g. our run timed out) still show.
  for (const p of trainPeers) {
    if (!trainOurs.some((r) => kind(r) === kind(p) && r.model === p.model && r.method === p.method && sameRate(r.rate, p.rate))) {
      train.push({
        device: p.deviceName ?? p.device,
        model: p.model,
        method: p.method,
        rate: p.rate,
        status: 'missing',
        oursTokensPerSec: null,
        peerTokensPerSec: ok(p) ? num(p.tokensPerSec) : null,
        tokensRatio: null,
        oursPeakBytes: null,
        peerPeakBytes: ok(p) ? num(p.peakBytes) : null,
        peakRatio: null,
      });
    }
  }

  const models = [...new Set(trainOurs.map((r) => `${kind(r)}|${r.model}`))];
  for (const key of models) {
    const [dev, model] = key.split('|');
    const sift = trainOurs.find((r) => kind(r) === dev && r.model === model && r.method === 'sift' && sameRate(r.rate, 0.01) && ok(r));
    const anyRow = trainOurs.find((r) => kind(r) === dev && r.model === model)!;
    const full = findPeer(anyRow, 'full', null);
    const lora = findPeer(anyRow, 'lora', null);
    const st = sift ? num(sift.tokensPerSec) : null;
    const ft = full ? num(full.tokensPerSec) : null;
    const tr = ratio(st, ft);
    goals.push({
      goal: 'sift 1% tokens/s >= torch full',
      subject: `${model} (${dev})`,
      ours: fmt(st),
      peer: fmt(ft),
      ratio: tr,
      target: '>= 1',
      met: tr === null ? null : tr >= 1,
    });
    const sp = sift ? num(sift.peakBytes) : null;
    const lp = lora ? num(lora.peakBytes) : null;
    const mr = ratio(sp, lp);
    goals.push({
      goal: 'sift 1% peak memory < torch LoRA',
      subject: `${model} (${dev})`,
      ours: gib(sp),
      peer: gib(lp),
      ratio: mr,
      target: '< 1',
      met: mr === null ? null : mr < 1,
    });
    // Memory against the rate: it should grow with the rate and stay far below full's.
    const peakAt = (method: string, rate: number | null) => {
      const r = trainOurs.find((x) => kind(x) === dev && x.model === model && x.method === method && sameRate(x.rate, rate) && ok(x));
      return r ? num(r.peakBytes) : null;
    };
    const series = [0.001, 0.01, 0.05].map((x) => peakAt('sift', x));
    const fullPeak = peakAt('full', null);
    const known = series.filter((x): x is number => x !== null);
    const monotone = known.length >= 2 && known.every((x, i) => i === 0 || x >= known[i - 1]);
    goals.push({
      goal: 'peak memory by sparse rate (0.1%, 1%, 5% | full)',
      subject: `${model} (${dev})`,
      ours: `${series.map(gib).join(', ')} | ${gib(fullPeak)}`,
      peer: '',
      ratio: ratio(series[1], fullPeak),
      target: 'grows with rate, < full',
      met: known.length < 2 || fullPeak === null ? null : monotone && known[known.length - 1] < fullPeak,
    });
  }

  // Billion-parameter shapes on CUDA: plan against measured peak, SIFT 1% on the 8B shape against
  // PyTorch LoRA at the same shape and batch, and the 70B shape's NF4 step on one card.
  for (const r of ours.filter((x) => x.bench === 'shapes' && kind(x) === 'cuda' && x.status !== undefined)) {
    const label = String(r.label);
    const measured = ok(r) ? num(r.measuredPeakBytes) : null;
    const planned = num(r.plannedPeakBytes);
    const pr = ratio(planned, measured);
    goals.push({
      goal: 'plan within 15% of measured peak',
      subject: `${label} (cuda, ${r.batch} x ${r.seq})`,
      ours: `plan ${gib(planned)}, measured ${gib(measured)}`,
      peer: '',
      ratio: pr,
      target: '0.85 .. 1.15',
      met: pr === null ? null : pr >= 0.85 && pr <= 1.15,
    });
    if (/^llama-3-70b/.test(label)) {
      goals.push({
        goal: 'trains with --quantize nf4 on one card',
        subject: `${label} (cuda)`,
        ours: ok(r) ? `peak ${gib(measured)}` : `error: ${String(r.error ?? '')}`,
        peer: '',
        ratio: null,
        target: 'one step',
        met: ok(r),
      });
    }
    if (/^llama-3-8b/.test(label) && ok(r)) {
      const p = peers.find(
        (q) =>
          q.bench === 'peer-train' && ok(q) && q.model === 'llama-3-8b' && q.method === 'lora' && q.batch === r.batch && q.seq === r.seq,
      );
      const tr = p ? ratio(num(r.tokensPerSec), num(p.tokensPerSec)) : null;
      const less = p ? measured !== null && num(p.peakBytes) !== null && measured < (num(p.peakBytes) as number) : false;
      goals.push({
        goal: 'sift 1% tokens/s >= torch LoRA, with less memory',
        subject: `${label} (cuda, ${r.batch} x ${r.seq})`,
        ours: `${fmt(num(r.tokensPerSec))} tok/s, ${gib(measured)}`,
        peer: p
          ? `${fmt(num(p.tokensPerSec))} tok/s, ${gib(num(p.peakBytes))}${p.impl && p.impl !== 'transformers' ? ` (${p.impl})` : ''}`
          : 'n/a',
        ratio: tr,
        target: '>= 1, less memory',
        met: tr === null ? null : tr >= 1 && less,
      });
    }
  }

  // Selection: our topk on |g| scores vs torch.topk on the same scores.
  const select: Record<string, unknown>[] = [];
  for (const r of ours.filter((x) => x.bench === 'select')) {
    const p = peers.find(
      (q) =>
        q.bench === 'peer-topk' &&
        q.op === 'topk' &&
        kind(q) === kind(r) &&
        q.dtype === r.dtype &&
        q.shape === r.shape &&
        sameRate(q.rate, r.rate),
    );
    const pa = peers.find(
      (q) =>
        q.bench === 'peer-topk' &&
        q.op === 'topk_abs' &&
        kind(q) === kind(r) &&
        q.dtype === r.dtype &&
        q.shape === r.shape &&
        sameRate(q.rate, r.rate),
    );
    select.push({
      device: r.device,
      kernel: r.kernel ?? null,
      dtype: r.dtype,
      shape: r.shape,
      rate: r.rate,
      k: r.k,
      oursMs: num(r.ms),
      torchTopkMs: p ? num(p.ms) : null,
      torchAbsTopkMs: pa ? num(pa.ms) : null,
      speedup: p ? ratio(num(p.ms), num(r.ms)) : null,
      oursFloorRatio: num(r.ratio),
    });
  }
  // One goal row per device and kernel (the CUDA select has two: radix, bracket).
  const kernelsOf = (rows: Record<string, unknown>[]) => [...new Set(rows.map((x) => x.kernel ?? null))];
  for (const dev of ['cuda', 'cpu']) {
    for (const kern of kernelsOf(select)) {
      const rows = select.filter((s) => String(s.device).startsWith(dev) && s.speedup !== null && (s.kernel ?? null) === kern);
      if (!rows.length) continue;
      const worst = rows.reduce((a, b) => ((b.speedup as number) < (a.speedup as number) ? b : a));
      const tag = kern && kern !== 'cpu' ? `, ${kern}` : '';
      goals.push({
        goal: 'selection >= 5x faster than torch.topk (worst case)',
        subject: `${worst.shape} ${worst.dtype} ${(worst.rate as number) * 100}% (${dev}${tag})`,
        ours: `${fmt(worst.oursMs as number, 3)} ms`,
        peer: `${fmt(worst.torchTopkMs as number, 3)} ms`,
        ratio: worst.speedup as number,
        target: '>= 5',
        met: (worst.speedup as number) >= 5,
      });
    }
  }

  // Sparse AdamW: time / floor, and against the same step written in PyTorch.
  const adamw: Record<string, unknown>[] = [];
  for (const r of ours.filter((x) => x.bench === 'adamw')) {
    const p = peers.find(
      (q) =>
        q.bench === 'peer-adamw' &&
        kind(q) === kind(r) &&
        sameRate(q.rate, r.rate) &&
        q.layers === r.layers &&
        q.weightDtype === r.weightDtype,
    );
    adamw.push({
      device: r.device,
      kernel: r.kernel ?? null,
      weightDtype: r.weightDtype,
      layers: r.layers,
      rate: r.rate,
      k: r.k,
      oursMs: num(r.ms),
      floorMs: num(r.floorMs),
      floorRatio: num(r.ratio),
      torchMs: p ? num(p.ms) : null,
      speedup: p ? ratio(num(p.ms), num(r.ms)) : null,
    });
    if (kind(r) === 'cuda') {
      goals.push({
        goal: 'sparse AdamW step within 2x of the floor',
        subject: `${r.layers} layers ${r.weightDtype} ${(r.rate as number) * 100}% (cuda${r.kernel ? `, ${r.kernel}` : ''})`,
        ours: `${fmt(num(r.ms), 3)} ms`,
        peer: p ? `torch ${fmt(num(p.ms), 3)} ms` : '',
        ratio: num(r.ratio),
        target: '<= 2 (ms/floor)',
        met: num(r.ratio) === null ? null : (r.ratio as number) <= 2,
      });
    }
  }
  const gemm: Record<string, unknown>[] = [];
  for (const r of ours.filter((x) => x.bench === 'gemm')) {
    const p = peers.find(
      (q) =>
        q.bench === 'peer-gemm' &&
        kind(q) === kind(r) &&
        q.dtype === r.dtype &&
        q.M === r.M &&
        q.N === r.N &&
        q.K === r.K &&
        (q.layout ?? 'NT') === (r.layout ?? 'NT'),
    );
    gemm.push({
      device: r.device,
      impl: r.impl,
      dtype: r.dtype,
      shape: r.shape,
      oursGflops: num(r.gflops),
      torchGflops: p ? num(p.gflops) : null,
      ratio: p ? ratio(num(r.gflops), num(p.gflops)) : null,
    });
  }
  // Fused attention: our kernels (tensor cores / CUDA cores) vs torch's scaled_dot_product_attention.
  const attention: Record<string, unknown>[] = [];
  for (const r of ours.filter((x) => x.bench === 'attention')) {
    const p = peers.find((q) => q.bench === 'peer-attention' && ok(q) && kind(q) === kind(r) && q.shape === r.shape);
    attention.push({
      device: r.deviceName ?? r.device,
      shape: r.shape,
      mode: r.mode,
      dtype: r.dtype,
      oursFwdMs: num(r.fwdMs),
      oursBwdMs: num(r.bwdMs),
      torchFwdMs: p ? num(p.fwdMs) : null,
      torchBwdMs: p ? num(p.bwdMs) : null,
      fwdRatio: p ? ratio(num(p.fwdMs), num(r.fwdMs)) : null,
      bwdRatio: p ? ratio(num(p.bwdMs), num(r.bwdMs)) : null,
      oursFwdTflops: num(r.fwdTflops),
      oursBwdTflops: num(r.bwdTflops),
    });
  }
  const tests = parseTests(testsText);
  if (tests)
    goals.push({
      goal: 'test suite',
      subject: 'jest (CUDA suites included)',
      ours: `${tests.passed} passed, ${tests.failed} failed, ${tests.skipped} skipped`,
      peer: '',
      ratio: null,
      target: '0 failed',
      met: tests.failed === 0,
    });
  const errors = [...ours, ...peers].filter((r) => r.status === 'error' && r.bench !== 'stage');
  const peft = peers.filter((r) => r.bench === 'peft');
  if (peft.length) {
    const compared = peft.filter(
      (r) => r.status === 'ok' || String(r.status).startsWith('mismatch') || String(r.status).startsWith('error'),
    );
    goals.push({
      goal: 'PEFT loads export-peft adapters',
      subject: peft.map((r) => r.case).join(', '),
      ours: peft.map((r) => `${r.case}: ${r.status}`).join('; '),
      peer: `peft ${peft[0].peft ?? '?'}`,
      ratio: null,
      target: 'logits equal',
      met: compared.length ? compared.every(ok) : null,
    });
  }
  return {
    goals,
    tests,
    train,
    select,
    adamw,
    gemm,
    attention,
    peft,
    profile: ours.filter((r) => r.bench === 'profile'),
    stages: ours.filter((r) => r.bench === 'stage'),
    errors,
  };
}

export function goalsTable(s: Summary): string {
  return markdownTable(
    ['goal', 'subject', 'ours', 'peer', 'ratio', 'target', 'met'],
    s.goals.map((g) => [
      g.goal,
      g.subject,
      g.ours,
      g.peer,
      g.ratio === null ? 'n/a' : g.ratio,
      g.target,
      g.met === null ? 'n/a' : g.met ? 'yes' : 'NO',
    ]),
  );
}

export function stagesTable(s: Summary): string {
  return markdownTable(
    ['stage', 'status', 'seconds', 'rc'],
    s.stages.map((x) => [x.stage as string, x.status as string, x.seconds as number, x.rc as number | null]),
  );
}

export function markdown(s: Summary, env: string): string {
  const pct = (r: unknown) => (typeof r === 'number' ? `${+(r * 100).toFixed(3)}%` : '');
  const parts = [
    '# sift-ft GPU check',
    '',
    '```',
    env.trim() || '(no env.txt)',
    '```',
    '',
    '## Goals (end to end)',
    '',
    goalsTable(s),
    '',
    '## Stages',
    '',
    stagesTable(s),
    '',
    '## End-to-end training (ours vs PyTorch, same shapes)',
    '',
    markdownTable(
      ['device', 'model', 'method', 'rate', 'ours tok/s', 'torch tok/s', 'ratio', 'ours peak', 'torch peak', 'ratio', 'note'],
      s.train.map((t) => [
        t.device as string,
        t.model as string,
        t.method as string,
        pct(t.rate),
        fmt(t.oursTokensPerSec as number | null),
        fmt(t.peerTokensPerSec as number | null),
        t.tokensRatio as number | null,
        gib(t.oursPeakBytes as number | null),
        gib(t.peerPeakBytes as number | null),
        t.peakRatio as number | null,
        (t.error as string | undefined) ?? (t.status !== 'ok' ? String(t.status) : ''),
      ]),
    ),
    '',
    '## Selection (top-k) vs torch.topk',
    '',
    markdownTable(
      ['device', 'kernel', 'dtype', 'shape', 'rate', 'ours ms', 'torch.topk ms', 'torch abs+topk ms', 'speedup', 'ours ms/floor'],
      s.select.map((x) => [
        x.device as string,
        (x.kernel as string | null) ?? '',
        x.dtype as string,
        x.shape as string,
        pct(x.rate),
        x.oursMs as number,
        x.torchTopkMs as number,
        x.torchAbsTopkMs as number,
        x.speedup as number,
        x.oursFloorRatio as number,
      ]),
    ),
    '',
    '## Sparse AdamW step',
    '',
    'Floor: bytes that must move / bandwidth; per trained entry 32 B streamed (g, m, v, master, idx read; m, v, master written) plus the scattered weight write, a 32-byte sector read and written back on CUDA (a 64-byte line on the CPU), at most twice the weight bytes per tensor.',
    '',
    markdownTable(
      ['device', 'kernel', 'weights', 'layers', 'rate', 'k', 'ours ms', 'floor ms', 'ms/floor', 'torch ms', 'speedup'],
      s.adamw.map((x) => [
        x.device as string,
        (x.kernel as string | null) ?? '',
        x.weightDtype as string,
        x.layers as number,
        pct(x.rate),
        x.k as number,
        x.oursMs as number,
        x.floorMs as number,
        x.floorRatio as number,
        x.torchMs as number,
        x.speedup as number,
      ]),
    ),
    '',
  ];
  if (s.peft.length) {
    parts.push(
      '## PEFT (export-peft adapters loaded with Hugging Face PEFT)',
      '',
      markdownTable(
        ['adapter', 'peft_type', 'status', 'max |PEFT - ours|', 'after merge_and_unload', 'max |change| by the adapter'],
        s.peft.map((x) => [
          x.case as string,
          x.peft_type as string,
          x.status as string,
          x.max_abs_diff as number,
          x.max_abs_diff_merged as number,
          x.max_abs_change as number,
        ]),
      ),
      '',
    );
  }
  if (s.gemm.length) {
    parts.push(
      '## GEMM',
      '',
      markdownTable(
        ['device', 'impl', 'dtype', 'shape', 'ours GFLOP/s', 'torch GFLOP/s', 'ratio'],
        s.gemm.map((x) => [
          x.device as string,
          x.impl as string,
          x.dtype as string,
          x.shape as string,
          x.oursGflops as number,
          x.torchGflops as number,
          x.ratio as number,
        ]),
      ),
      '',
    );
  }
  if (s.attention.length) {
    parts.push(
      '## Fused attention vs torch scaled_dot_product_attention (speed ratio: torch ms / ours ms)',
      '',
      markdownTable(
        [
          'device',
          'shape',
          'kernels',
          'dtype',
          'ours fwd ms',
          'torch fwd ms',
          'fwd ratio',
          'ours bwd ms',
          'torch bwd ms',
          'bwd ratio',
          'ours TFLOP/s fwd/bwd',
        ],
        s.attention.map((x) => [
          x.device as string,
          x.shape as string,
          x.mode as string,
          x.dtype as string,
          x.oursFwdMs as number,
          x.torchFwdMs as number,
          x.fwdRatio as number,
          x.oursBwdMs as number,
          x.torchBwdMs as number,
          x.bwdRatio as number,
          `${x.oursFwdTflops} / ${x.oursBwdTflops}`,
        ]),
      ),
      '',
    );
  }
  for (const p of s.profile) {
    parts.push(
      `## Profile: ${p.model} ${p.method}${p.rate ? ` ${pct(p.rate)}` : ''} on ${p.device}${p.syncEach ? ' (synchronised per op)' : ''}${p.graphs ? ' (CUDA graphs)' : ''}`,
      '',
      `step ${p.stepMs} ms = native calls ${p.nativeHostMs} ms + JavaScript ${p.jsMs} ms + waiting for the device ${p.deviceWaitMs} ms; ${p.launchesPerStep} launches per step` +
        (typeof p.deviceBusyMs === 'number' ? `; device busy ${p.deviceBusyMs} ms per step (CUDA events)` : '') +
        (typeof p.busyShare === 'number'
          ? `; uninstrumented step ${p.plainStepMs} ms, device busy ${pct(p.busyShare)} of it (goal >= 95% for GPT-2 124M)`
          : ''),
      '',
      markdownTable(
        ['op', 'calls/step', 'host ms/step', 'device ms/step', 'share'],
        ((p.top as { op: string; callsPerStep: number; msPerStep: number; deviceMsPerStep?: number | null; share: number }[]) ?? []).map(
          (t) => [t.op, t.callsPerStep, t.msPerStep, t.deviceMsPerStep ?? '', `${(t.share * 100).toFixed(1)}%`],
        ),
      ),
      '',
    );
  }
  if (s.errors.length) {
    parts.push(
      '## Errors',
      '',
      ...s.errors.map(
        (e) => `- ${e.bench} ${[e.model, e.method, e.rate].filter((x) => x !== undefined && x !== null).join(' ')}: ${e.error}`,
      ),
      '',
    );
  }
  return parts.join('\n');
}

export function main(dir: string): Summary {
  const read = (f: string) => (fs.existsSync(path.join(dir, f)) ? fs.readFileSync(path.join(dir, f), 'utf8') : '');
  const ours = readJsonl(path.join(dir, 'bench.jsonl'));
  const peers = readJsonl(path.join(dir, 'peers.jsonl'));
  const s = summarize(ours, peers, read('tests.txt'));
  fs.writeFileSync(path.join(dir, 'results.json'), JSON.stringify({ summary: s, ours, peers }, null, 1));
  fs.writeFileSync(path.join(dir, 'summary.md'), markdown(s, read('env.txt')));
  return s;
}

if (require.main === module) {
  const dir = process.argv[2] ?? process.env.OUT ?? 'gpu-check-out';
  const s = main(dir);
  console.log(`${goalsTable(s)}\n\n${stagesTable(s)}`);
}
