/**
 * report.html: one self-contained file (no scripts, no external assets) with inline SVG charts of
 * the loss, the eval metrics and SIFT's per-layer gradient proportion, and the run's config and
 * summary. Several runs (the demo's methods) share the charts, one colour each.
 */
import type { Metrics, TrainerEvent } from '../train/types';
import { QuasiSparsity, fractionLabel } from '../sift/quasi';

export interface RunData {
  name: string;
  config: Record<string, unknown>;
  summary: Record<string, unknown>;
  steps: { step: number; loss: number; lr?: number }[];
  evals: { step: number; metrics: Metrics }[];
  /** Per target tensor: share of the gradient's squared norm on the selected entries. */
  gradProportion?: Record<string, number>;
  /** The gradient's quasi-sparsity before training (TrainerOptions.quasiSparsity). */
  quasiSparsity?: QuasiSparsity;
}

export interface ReportData {
  title: string;
  subtitle?: string;
  runs: RunData[];
  notes?: string[];
  /** A pre-training run, charted on its own (its loss scale would flatten the fine-tuning curves). */
  pretrain?: RunData;
  /** Gradient quasi-sparsity measurements (e.g. a pre-trained model against a random one), one series each. */
  quasiSparsity?: { name: string; qs: QuasiSparsity }[];
}

/**
 * One bar chart per fraction: the share of the gradient's squared norm on the top entries, per
 * layer and overall, one series per measurement.
 */
export function quasiSparsityCharts(list: { name: string; qs: QuasiSparsity }[]): string[] {
  if (!list.length) return [];
  const names = [...new Set(list.flatMap((m) => m.qs.layers.map((l) => l.name)))];
  return list[0].qs.fractions.map((f, i) =>
    barChart(
      `Share of the gradient's squared norm on its top ${fractionLabel(f)} of entries (per layer and overall; an even gradient gives ${fractionLabel(f)})`,
      ['overall', ...shortNames(names)],
      list.map((m, j) => ({
        name: m.name,
        color: COLORS[j % COLORS.length],
        values: [m.qs.overall.shares[i], ...names.map((n) => m.qs.layers.find((l) => l.name === n)?.shares[i])],
      })),
    ),
  );
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];

function esc(s: unknown): string {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

function niceTicks(lo: number, hi: number, n = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-12; v += step) out.push(+v.toPrecision(12));
  return out;
}

function fmtTick(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(1);
  return String(+v.toPrecision(4));
}

interface Series {
  name: string;
  color: string;
  points: [number, number][];
}

/** An SVG line chart; a series with one point is drawn as a dot. */
export function lineChart(
  title: string,
  series: Series[],
  opts: { xLabel?: string; yLabel?: string; width?: number; height?: number; smooth?: boolean } = {},
): string {
  const W = opts.width ?? 560;
  const H = opts.height ?? 300;
  const m = { l: 56, r: 16, t: 30, b: 40 };
  const all = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  if (all.length === 0) return `<figure class="chart"><figcaption>${esc(title)}</figcaption><p class="empty">no data</p></figure>`;
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) {
    y0 -= Math.abs(y0) * 0.1 || 0.5;
    y1 += Math.abs(y1) * 0.1 || 0.5;
  }
  const pad = (y1 - y0) * 0.05;
  y0 -= pad;
  y1 += pad;
  const X = (x: number) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
  const Y = (y: number) => H - m.b - ((y - y0) / (y1 - y0)) * (H - m.t - m.b);
  const parts: string[] = [];
  for (const t of niceTicks(y0, y1)) {
    parts.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${Y(t).toFixed(1)}" y2="${Y(t).toFixed(1)}" class="grid"/>`);
    parts.push(`<text x="${m.l - 6}" y="${(Y(t) + 4).toFixed(1)}" text-anchor="end">${fmtTick(t)}</text>`);
  }
  for (const t of niceTicks(x0, x1, 6)) {
    parts.push(`<text x="${X(t).toFixed(1)}" y="${H - m.b + 16}" text-anchor="middle">${fmtTick(t)}</text>`);
  }
  parts.push(
    `<line x1="${m.l}" x2="${W - m.r}" y1="${H - m.b}" y2="${H - m.b}" class="axis"/><line x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${H - m.b}" class="axis"/>`,
  );
  if (opts.xLabel)
    parts.push(`<text x="${(m.l + W - m.r) / 2}" y="${H - 6}" text-anchor="middle" class="label">${esc(opts.xLabel)}</text>`);
  if (opts.yLabel)
    parts.push(
      `<text x="12" y="${(m.t + H - m.b) / 2}" text-anchor="middle" class="label" transform="rotate(-90 12 ${(m.t + H - m.b) / 2})">${esc(opts.yLabel)}</text>`,
    );
  series.forEach((s, i) => {
    const pts = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    if (pts.length === 0) return;
    if (opts.smooth && pts.length > 20) {
      // Raw values faint, an exponential moving average on top: noisy per-step losses stay readable.
      parts.push(
        `<polyline fill="none" stroke="${s.color}" stroke-opacity="0.25" stroke-width="1" points="${pts.map(([x, y]) => `${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join(' ')}"/>`,
      );
      const a = Math.min(0.5, 10 / pts.length);
      let ema = pts[0][1];
      const sm = pts.map(([x, y]) => {
        ema = a * y + (1 - a) * ema;
        return [x, ema] as [number, number];
      });
      parts.push(
        `<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${sm.map(([x, y]) => `${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join(' ')}"/>`,
      );
    } else {
      parts.push(
        `<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${pts.map(([x, y]) => `${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join(' ')}"/>`,
      );
      if (pts.length <= 30)
        for (const [x, y] of pts) parts.push(`<circle cx="${X(x).toFixed(1)}" cy="${Y(y).toFixed(1)}" r="3" fill="${s.color}"/>`);
    }
    const ly = m.t + 4 + i * 16;
    parts.push(
      `<rect x="${W - m.r - 150}" y="${ly - 9}" width="12" height="3" fill="${s.color}"/><text x="${W - m.r - 132}" y="${ly - 4}">${esc(s.name)}</text>`,
    );
  });
  return `<figure class="chart"><figcaption>${esc(title)}</figcaption><svg viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(title)}">${parts.join('')}</svg></figure>`;
}

/** Horizontal bars in [0, 1], one group per label with one bar per series. */
export function barChart(
  title: string,
  labels: string[],
  series: { name: string; color: string; values: (number | undefined)[] }[],
  opts: { width?: number } = {},
): string {
  if (labels.length === 0) return '';
  const W = opts.width ?? 760;
  const bar = 12;
  const group = bar * series.length + 8;
  const labelW = Math.min(300, 8 + 6.5 * Math.max(...labels.map((l) => l.length)));
  const m = { l: labelW, r: 60, t: 28 + 16 * (series.length > 1 ? series.length : 0), b: 28 };
  const H = m.t + m.b + group * labels.length;
  const X = (v: number) => m.l + v * (W - m.l - m.r);
  const parts: string[] = [];
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    parts.push(
      `<line x1="${X(t)}" x2="${X(t)}" y1="${m.t - 4}" y2="${H - m.b}" class="grid"/><text x="${X(t)}" y="${H - m.b + 16}" text-anchor="middle">${t * 100}%</text>`,
    );
  }
  labels.forEach((l, i) => {
    const gy = m.t + i * group;
    parts.push(`<text x="${m.l - 6}" y="${gy + (bar * series.length) / 2 + 4}" text-anchor="end">${esc(l)}</text>`);
    series.forEach((s, j) => {
      const v = s.values[i];
      if (v === undefined || !Number.isFinite(v)) return;
      const y = gy + j * bar;
      parts.push(
        `<rect x="${m.l}" y="${y}" width="${(X(Math.max(0, Math.min(1, v))) - m.l).toFixed(1)}" height="${bar - 2}" fill="${s.color}"/>`,
      );
      parts.push(`<text x="${(X(Math.max(0, Math.min(1, v))) + 4).toFixed(1)}" y="${y + bar - 3}">${(v * 100).toFixed(1)}%</text>`);
    });
  });
  if (series.length > 1) {
    series.forEach((s, j) =>
      parts.push(
        `<rect x="${m.l + j * 150}" y="${8}" width="12" height="10" fill="${s.color}"/><text x="${m.l + j * 150 + 16}" y="${17}">${esc(s.name)}</text>`,
      ),
    );
  }
  return `<figure class="chart wide"><figcaption>${esc(title)}</figcaption><svg viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(title)}">${parts.join('')}</svg></figure>`;
}

function kvTable(obj: Record<string, unknown>): string {
  const rows = Object.entries(obj)
    .filter(([, v]) => v !== undefined)
    .map(
      ([k, v]) =>
        `<tr><th>${esc(k)}</th><td>${esc(typeof v === 'number' ? (Number.isInteger(v) ? v.toLocaleString('en-US') : +v.toPrecision(5)) : typeof v === 'object' ? JSON.stringify(v) : v)}</td></tr>`,
    );
  return `<table class="kv">${rows.join('')}</table>`;
}

/** Shortens parameter names for the bar labels (the common prefix and '.weight' go). */
function shortNames(names: string[]): string[] {
  return names.map((n) => n.replace(/^(transformer|model|bert|roberta)\./, '').replace(/\.weight$/, ''));
}

export function renderReport(data: ReportData): string {
  const runs = data.runs.map((r, i) => ({ ...r, color: COLORS[i % COLORS.length] }));
  const charts: string[] = [];
  charts.push(
    lineChart(
      'Training loss',
      runs.map((r) => ({ name: r.name, color: r.color, points: r.steps.map((s) => [s.step, s.loss] as [number, number]) })),
      { xLabel: 'optimizer step', yLabel: 'loss', smooth: true },
    ),
  );
  if (data.pretrain) {
    charts.push(
      lineChart(
        'Pre-training loss',
        [{ name: data.pretrain.name, color: '#555', points: data.pretrain.steps.map((s) => [s.step, s.loss] as [number, number]) }],
        { xLabel: 'optimizer step', yLabel: 'loss', smooth: true },
      ),
    );
  }
  const metricNames = [...new Set(runs.flatMap((r) => r.evals.flatMap((e) => Object.keys(e.metrics).filter((k) => k !== 'examples'))))];
  const curves = runs.some((r) => r.evals.length > 1);
  if (!curves && metricNames.length) {
    // One evaluation per run: a table says more than single dots on an axis.
    const head = metricNames.map((m) => `<th>${esc(m)}</th>`).join('');
    const body = runs
      .map((r) => {
        const m = (r.evals[r.evals.length - 1]?.metrics ?? {}) as Record<string, number>;
        return `<tr><th><span class="swatch" style="background:${r.color}"></span>${esc(r.name)}</th>${metricNames.map((k) => `<td>${typeof m[k] === 'number' ? m[k].toFixed(4) : '-'}</td>`).join('')}</tr>`;
      })
      .join('');
    charts.push(
      `<figure class="chart"><figcaption>Final evaluation</figcaption><table class="metrics"><tr><th></th>${head}</tr>${body}</table></figure>`,
    );
  }
  for (const name of curves ? metricNames : []) {
    charts.push(
      lineChart(
        `Eval ${name}`,
        runs.map((r) => ({
          name: r.name,
          color: r.color,
          points: r.evals
            .filter((e) => typeof (e.metrics as Record<string, number>)[name] === 'number')
            .map((e) => [e.step, (e.metrics as Record<string, number>)[name]] as [number, number]),
        })),
        { xLabel: 'optimizer step', yLabel: name },
      ),
    );
  }
  const withProp = runs.filter((r) => r.gradProportion && Object.keys(r.gradProportion).length > 0);
  let propChart = '';
  if (withProp.length > 0) {
    const names = [...new Set(withProp.flatMap((r) => Object.keys(r.gradProportion!)))];
    propChart = barChart(
      'Gradient proportion on the selected entries per layer, at the last step that measured it (share of the squared gradient norm; the sparse rate is the share of entries)',
      shortNames(names),
      withProp.map((r) => ({ name: r.name, color: r.color, values: names.map((n) => r.gradProportion![n]) })),
    );
  }
  const measured = [
    ...(data.quasiSparsity ?? []),
    ...runs.filter((r) => r.quasiSparsity).map((r) => ({ name: r.name, qs: r.quasiSparsity! })),
  ];
  if (measured.length) propChart += quasiSparsityCharts(measured).join('\n');
  const sectionRuns = data.pretrain ? [...runs, { ...data.pretrain, color: '#555' }] : runs;
  const runSections = sectionRuns
    .map(
      (r) => `<section class="run"><h3><span class="swatch" style="background:${r.color}"></span>${esc(r.name)}</h3>
<div class="cols"><div><h4>Summary</h4>${kvTable(r.summary)}</div><div><h4>Configuration</h4>${kvTable(r.config)}</div></div></section>`,
    )
    .join('\n');
  const notes = (data.notes ?? []).map((n) => `<p class="note">${esc(n)}</p>`).join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(data.title)}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}h4{font-size:13px;margin:8px 0 4px;color:#555}
.sub{color:#666;margin:0 0 12px}.note{background:#f6f8fa;border-left:3px solid #1f77b4;padding:6px 10px;margin:6px 0}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{margin:0;border:1px solid #e3e3e3;border-radius:6px;padding:8px;background:#fff}
.chart figcaption{font-weight:600;margin-bottom:4px;font-size:13px}.chart.wide{flex-basis:100%}
svg text{font-size:11px;fill:#444}svg .label{font-size:12px;fill:#222}svg .grid{stroke:#eee}svg .axis{stroke:#999}
table.kv{border-collapse:collapse;font-size:12.5px}table.kv th{text-align:left;font-weight:500;color:#555;padding:2px 12px 2px 0;vertical-align:top}
table.kv td{padding:2px 0;font-family:ui-monospace,Menlo,monospace;word-break:break-all}
.cols{display:flex;gap:40px;flex-wrap:wrap}.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:6px;vertical-align:-1px}
.empty{color:#999}table.metrics{border-collapse:collapse;font-size:13px;margin:8px}table.metrics td,table.metrics th{padding:4px 10px;text-align:right}table.metrics th:first-child{text-align:left}
</style></head><body>
<h1>${esc(data.title)}</h1>${data.subtitle ? `<p class="sub">${esc(data.subtitle)}</p>` : ''}${notes}
${runs.length || data.pretrain ? `<h2>Curves</h2><div class="charts">${charts.join('\n')}</div>` : ''}
${propChart ? `<h2>Quasi-sparsity</h2><div class="charts">${propChart}</div>` : ''}
<h2>Runs</h2>${runSections}
<p class="sub">Written by sift-ft on ${esc(new Date().toISOString())}.</p>
</body></html>
`;
}

/** Collects a run's curves from trainer events (or the same objects read back from log.jsonl). */
export class RunRecorder {
  readonly steps: RunData['steps'] = [];
  readonly evals: RunData['evals'] = [];
  gradProportion?: Record<string, number>;
  quasiSparsity?: QuasiSparsity;
  done?: Extract<TrainerEvent, { type: 'done' }>;

  add(e: TrainerEvent): void {
    if (e.type === 'step') this.steps.push({ step: e.step, loss: e.loss, lr: e.lr });
    else if (e.type === 'eval') this.evals.push({ step: e.step, metrics: e.metrics });
    else if (e.type === 'quasi-sparsity') {
      this.quasiSparsity = {
        fractions: e.fractions,
        layers: e.layers.map((l) => ({ ...l, sqNorm: NaN })),
        overall: { name: 'overall', numel: e.layers.reduce((a, l) => a + l.numel, 0), shares: e.overall, sqNorm: NaN },
      };
    } else if (e.type === 'done') {
      this.done = e;
      if (e.gradProportion) this.gradProportion = e.gradProportion;
    }
  }

  run(name: string, config: Record<string, unknown>, summary: Record<string, unknown>): RunData {
    return {
      name,
      config,
      summary,
      steps: this.steps,
      evals: this.evals,
      gradProportion: this.gradProportion,
      quasiSparsity: this.quasiSparsity,
    };
  }
}
