/**
 * Learning-rate schedules: constant, linear with warmup, cosine with warmup, with the same
 * multipliers as transformers' get_*_schedule_with_warmup (so step 0 of a warmup has lr 0).
 */
import { SiftError } from '../engine/errors';

export interface ScheduleOptions {
  type?: 'constant' | 'linear' | 'cosine';
  warmupSteps?: number;
  /** Total optimizer steps (needed by linear and cosine). */
  totalSteps?: number;
  /** Floor of the decay as a fraction of the peak (default 0). */
  minRatio?: number;
}

/** The learning-rate multiplier at a 0-based step (the step about to be taken). */
export function lrMultiplier(step: number, s: ScheduleOptions = {}): number {
  const type = s.type ?? 'constant';
  const warm = s.warmupSteps ?? 0;
  const floor = s.minRatio ?? 0;
  if (warm > 0 && step < warm) return step / warm;
  if (type === 'constant') return 1;
  const total = s.totalSteps;
  if (!total || total <= warm) {
    throw new SiftError('E_ARG', `lr schedule '${type}' needs totalSteps greater than warmupSteps (${warm})`);
  }
  const progress = Math.min(1, Math.max(0, (step - warm) / (total - warm)));
  if (type === 'linear') return floor + (1 - floor) * (1 - progress);
  if (type === 'cosine') return floor + (1 - floor) * 0.5 * (1 + Math.cos(Math.PI * progress));
  throw new SiftError('E_ARG', `unknown lr schedule '${type}' (expected constant, linear or cosine)`);
}
