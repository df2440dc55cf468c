/**
 * Training progress on the terminal: a redrawn bar (step, loss, tokens/s, ETA) when the stream is a
 * TTY, one plain line every few steps otherwise (logs, pipes, CI).
 */
import type { TrainerEvent } from '../train/types';
import { fmtDuration } from './common';
import { env } from '../engine/env';

type StepEvent = Extract<TrainerEvent, { type: 'step' }>;

/**
 * What ends the run, when it is not (only) the step count: a token budget (`sift-ft pretrain
 * --tokens`) and a clock (`--minutes`). Progress and ETA follow the bound in force; an open-ended
 * run (the clock alone) has no step count to show.
 */
export interface ProgressBound {
  /** Train on this many tokens, `perStep` a step: progress counts tokens. */
  tokens?: { total: number; perStep: number };
  /** Stop at this time (Date.now() milliseconds), `seconds` after the clock started. */
  deadline?: { at: number; seconds: number };
  /** The steps are a cap only the clock reaches: no step total, no step ETA. */
  openEnded?: boolean;
}

const compact = (n: number) =>
  n >= 1e9
    ? `${(n / 1e9).toFixed(2)}G`
    : n >= 1e6
      ? `${(n / 1e6).toFixed(1)}M`
      : n >= 1e4
        ? `${(n / 1e3).toFixed(0)}k`
        : String(Math.round(n));

/** The progress line of one step event and the share of the run done (0..1), against `bound`. */
export function progressLine(e: StepEvent, bound: ProgressBound = {}, now = Date.now()): { text: string; fraction: number } {
  let fraction = e.step / Math.max(1, e.totalSteps);
  let eta = e.etaSec;
  let where = bound.openEnded ? `step ${e.step}` : `step ${e.step}/${e.totalSteps}`;
  if (bound.tokens) {
    const done = Math.min(bound.tokens.total, e.step * bound.tokens.perStep);
    where += `  tokens ${compact(done)}/${compact(bound.tokens.total)}`;
    fraction = done / bound.tokens.total;
  }
  let clock = '';
  if (bound.deadline) {
    const left = Math.max(0, (bound.deadline.at - now) / 1000);
    const timeShare = 1 - left / bound.deadline.seconds;
    if (bound.openEnded || left < eta) {
      eta = left;
      fraction = Math.max(bound.openEnded ? 0 : fraction, timeShare);
      clock = ' (time limit)';
    }
  }
  const text = `${where}  loss ${e.loss.toFixed(4)}  lr ${e.lr.toExponential(2)}  ${Math.round(e.tokensPerSec)} tok/s  ETA ${fmtDuration(eta)}${clock}`;
  return { text, fraction: Math.min(1, Math.max(0, fraction)) };
}

export class Progress {
  private readonly tty: boolean;
  private lastPlain = 0;
  private drawn = false;

  constructor(
    private readonly stream: NodeJS.WriteStream = process.stderr,
    private readonly label = 'train',
    private readonly plainEverySec = 5,
    private readonly bound: ProgressBound = {},
  ) {
    this.tty = !!stream.isTTY && !env('CI');
  }

  step(e: StepEvent): void {
    const { text, fraction } = progressLine(e, this.bound);
    if (this.tty) {
      const cols = Math.max(40, (this.stream.columns ?? 100) - text.length - 12);
      const width = Math.min(30, cols);
      const done = Math.round(width * fraction);
      this.stream.write(`\r\x1b[2K${this.label} [${'#'.repeat(done)}${'.'.repeat(width - done)}] ${text}`);
      this.drawn = true;
      return;
    }
    const now = Date.now();
    if (e.step === 1 || e.step === e.totalSteps || now - this.lastPlain >= this.plainEverySec * 1000) {
      this.lastPlain = now;
      this.stream.write(`${this.label}: ${text}\n`);
    }
  }

  /** A line that must not be overwritten by the bar (eval results, checkpoints). */
  note(text: string): void {
    if (this.tty && this.drawn) this.stream.write('\r\x1b[2K');
    this.stream.write(`${this.label}: ${text}\n`);
    this.drawn = false;
  }

  end(): void {
    if (this.tty && this.drawn) this.stream.write('\n');
    this.drawn = false;
  }
}

export function fmtMetrics(m: Record<string, number | undefined>): string {
  return Object.entries(m)
    .filter(([, v]) => typeof v === 'number')
    .map(([k, v]) => `${k} ${k === 'examples' ? v : (v as number).toFixed(4)}`)
    .join('  ');
}
