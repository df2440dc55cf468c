/**
 * Training progress on the terminal: a redrawn bar (step, loss, tokens/s, ETA) when the stream is a
 * TTY, one plain line every few steps otherwise (logs, pipes, CI).
 */
import type { TrainerEvent } from '../train/types';
import { fmtDuration } from './common';
import { env } from '../engine/env';

type StepEvent = Extract<TrainerEvent, { type: 'step' }>;

export class Progress {
  private readonly tty: boolean;
  private lastPlain = 0;
  private drawn = false;

  constructor(
    private readonly stream: NodeJS.WriteStream = process.stderr,
    private readonly label = 'train',
    private readonly plainEverySec = 5,
  ) {
    this.tty = !!stream.isTTY && !env('CI');
  }

  step(e: StepEvent): void {
    const text = `step ${e.step}/${e.totalSteps}  loss ${e.loss.toFixed(4)}  lr ${e.lr.toExponential(2)}  ${Math.round(e.tokensPerSec)} tok/s  ETA ${fmtDuration(e.etaSec)}`;
    if (this.tty) {
      const cols = Math.max(40, (this.stream.columns ?? 100) - text.length - 12);
      const width = Math.min(30, cols);
      const done = Math.round((width * e.step) / Math.max(1, e.totalSteps));
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
